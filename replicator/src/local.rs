//! The local service on `private/replicator`: the [`postern_lib::proto::replica`] protocol
//! (`Sync`, `Status`) for the proxy, `postern status` and tools, `Move` for `postern user
//! move|rebalance` on a director ([`crate::user_move`]), and master's wakeup byte, which
//! starts the background sweep in this process if it is not running yet.

use crate::node::Node;
use crate::user_move::Mover;
use crate::wire::Conn;
use postern_lib::proto::replica::{self, ReplicaReply, ReplicaRequest};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

/// Serves one local connection to its end.
pub fn serve_local(node: &Arc<Node>, mover: &Mover, mut s: UnixStream, start_sweep: impl FnOnce()) {
    let timeout = node.config().timeout;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout * 4));
    let mut first = [0u8; 1];
    match s.read(&mut first) {
        Ok(1) => {}
        _ => return,
    }
    start_sweep();
    if first[0] == postern_lib::proto::trigger::WAKEUP {
        return;
    }
    let mut conn = Conn::with_limit(s, timeout, "local client".into(), replica::MAX_REQUEST);
    conn.push(&first);
    if let Err(e) = conn.hello_as(replica::PROTOCOL, replica::VERSION) {
        tracing::warn!("{e}");
        return;
    }
    loop {
        let req = match conn.frame() {
            Ok(f) => match f.message::<ReplicaRequest>() {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("local client: bad request: {e}");
                    return;
                }
            },
            Err(_) => return,
        };
        let bad_user = || ReplicaReply::Failed {
            reason: "bad user name".into(),
        };
        let reply = match req {
            ReplicaRequest::Sync { user } if valid_user(&user) => node.sync(&user),
            ReplicaRequest::Move { user, from, to, step } if valid_user(&user) => {
                mover.request(&user, &from, &to, step)
            }
            ReplicaRequest::Sync { .. } | ReplicaRequest::Move { .. } => bad_user(),
            ReplicaRequest::Status => node.status(),
        };
        if conn.send(&reply).is_err() {
            return;
        }
    }
}

/// Whether `user` can name a mailbox below `virtual_mailbox_base`.
fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= 64 && !user.starts_with('.') && !user.contains('/')
}

/// Runs [`Node::sweep`] every `interval`, forever (a thread of the local service).
pub fn sweep_loop(node: Arc<Node>, interval: Duration) {
    loop {
        node.sweep();
        std::thread::sleep(interval);
    }
}
