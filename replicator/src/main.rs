//! The replicator daemon: `replicator` under master, as two services of the same program —
//! type inet (peers, `replica_peers` of the other servers point at it) and type unix
//! (`private/replicator`: local `Sync`/`Status` requests and the background sweep). See
//! the crate documentation (`replicator/src/lib.rs`).
#![forbid(unsafe_code)]

use postern_lib::skeleton::{Peer, Stream};
use replicator::node::{Node, NodeConfig};
use replicator::serve::{ServeConfig, serve_peer};
use replicator::user_move::Mover;
use std::process::ExitCode;
use std::sync::{Arc, Once};
use std::time::Duration;

struct State {
    node: Arc<Node>,
    mover: Mover,
    serve: ServeConfig,
    interval: Duration,
    sweep: Once,
}

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    postern_lib::skeleton::threaded::threaded_server(
        "replicator",
        |ctx| {
            let m = &ctx.main;
            let node = if m.replica_name.is_empty() {
                nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_default()
            } else {
                m.replica_name.clone()
            };
            if !replicator::wire::valid_node(&node) {
                return Err(format!(
                    "replica_name {node:?}: letters, digits, '.', '-', '_', ':' only"
                ));
            }
            // read while still privileged: the file may be root's, mode 0600
            let secret = if m.replica_secret_file.is_empty() {
                Vec::new()
            } else {
                replicator::secret::read(m.replica_secret_file.path())?
            };
            if !m.replica_peers.is_empty() && secret.is_empty() {
                return Err("replica_peers is set but replica_secret_file is not".into());
            }
            let cfg = NodeConfig {
                node: node.clone(),
                peers: m.replica_peers.clone(),
                secret: secret.clone(),
                base: m.virtual_mailbox_base.path().to_path_buf(),
                timeout: Duration::from_secs(m.replica_timeout.0),
                max_message: m.message_size_limit,
            };
            Ok(State {
                mover: Mover::new(m, secret.clone()),
                serve: ServeConfig {
                    node,
                    secret,
                    base: cfg.base.clone(),
                    max_message: cfg.max_message,
                    timeout: cfg.timeout,
                },
                node: Arc::new(Node::new(cfg)),
                interval: Duration::from_secs(m.replica_sync_interval.0.max(1)),
                sweep: Once::new(),
            })
        },
        |st: &State, _ctx, conn| match conn.stream {
            Stream::Tcp(s) => {
                let who = match conn.peer {
                    Peer::Inet(a) => a.to_string(),
                    Peer::Unix => "?".into(),
                };
                if st.serve.secret.is_empty() {
                    tracing::warn!("peer {who}: refused: no replica_secret_file");
                    return;
                }
                let _ = s.set_read_timeout(Some(st.serve.timeout));
                let _ = s.set_write_timeout(Some(st.serve.timeout));
                serve_peer(&st.serve, s, &who);
            }
            Stream::Unix(s) => replicator::local::serve_local(&st.node, &st.mover, s, || {
                st.sweep.call_once(|| {
                    if st.node.config().peers.is_empty() {
                        return;
                    }
                    let (node, every) = (Arc::clone(&st.node), st.interval);
                    let spawned = std::thread::Builder::new()
                        .name("sweep".into())
                        .spawn(move || replicator::local::sweep_loop(node, every));
                    if let Err(e) = spawned {
                        tracing::error!("cannot start the sweep: {e}");
                    }
                });
            }),
        },
    )
}
