//! `postern status` on a mailbox server (issue 15): the replication state per peer of
//! `replica_peers`, as the replicator (`private/replicator`) reports it — in step,
//! catching up (users with changes not yet merged into that peer) or unreachable (with
//! the last error), since when, and when the last merge succeeded.

use postern_lib::config::Config;
use postern_lib::proto::replica::{self, ReplicaReply, ReplicaRequest};
use std::path::Path;
use std::time::Duration;

/// Prints the table (nothing when replication is off).
pub fn print(config: &Config) {
    if config.main.replica_peers.is_empty() {
        return;
    }
    println!();
    let socket = Path::new(&config.main.queue_directory).join(replica::SOCKET);
    let reply = replica::request(&socket, &ReplicaRequest::Status, Duration::from_secs(5));
    let peers = match reply {
        Ok(ReplicaReply::Status { peers }) => peers,
        Ok(other) => {
            println!("replication: unexpected answer from the replicator: {other:?}");
            return;
        }
        Err(e) => {
            println!(
                "replication: the replicator does not answer ({}): {e}",
                socket.display()
            );
            return;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let ago = |t: i64| format!("{}s", now.saturating_sub(t).max(0));
    println!(
        "{:<32} {:<12} {:>8} {:>13} {:>13}  last error",
        "replica peer", "state", "since", "users behind", "last success"
    );
    for p in peers {
        println!(
            "{:<32} {:<12} {:>8} {:>13} {:>13}  {}",
            p.peer,
            p.state.text(),
            ago(p.since),
            p.users_pending,
            p.last_success.map_or("-".to_string(), ago),
            p.last_error.unwrap_or_default()
        );
    }
}
