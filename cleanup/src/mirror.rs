//! Two-node durability (issue 16): with `queue_mirror_peer` set, the queue file, written
//! and fdatasynced under its temporary name, goes to the peer node through the local
//! mirror daemon (its descriptor passed over `private/mirror`, [`mirror::local::put`])
//! before it is renamed into place and the client gets its 250. If the peer does not
//! acknowledge a durable copy within `queue_mirror_timeout`, `queue_mirror_unreachable`
//! decides: `"defer"` refuses the message with 451 4.3.0 (the temporary file goes; the
//! client sends it again), `"degraded"` queues it on this node alone and logs `degraded`.

use std::path::Path;
use std::time::Duration;

use postern_lib::config::{MainConfig, MirrorUnreachable};
use postern_lib::dsn::Dsn;

use crate::service::Stop;

/// Copies the prepared queue file at `path` to the peer, or says why the message must wait.
pub fn copy(main: &MainConfig, q: &str, path: &Path) -> Result<(), Stop> {
    let peer = &main.queue_mirror_peer;
    if peer.is_empty() {
        return Ok(());
    }
    // The mirror daemon bounds its own wait for the peer by queue_mirror_timeout; this
    // bounds the wait for the daemon.
    let wait = main.queue_mirror_timeout.duration() + Duration::from_secs(2);
    let result = std::fs::File::open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
        .and_then(|f| mirror::local::put(Path::new("."), q, &f, wait));
    let Err(why) = result else {
        return Ok(());
    };
    if main.queue_mirror_unreachable == MirrorUnreachable::Degraded {
        tracing::warn!("{q}: degraded: accepted by this node alone, no copy on {peer}: {why}");
        Ok(())
    } else {
        tracing::warn!("{q}: defer: no copy on {peer}: {why}");
        Err(Stop::temp(
            Dsn::MAIL_SYSTEM,
            "Error: peer node unavailable, try again later",
        ))
    }
}
