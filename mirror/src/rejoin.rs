//! Rejoining the pair after being down with the disk intact (`postern mirror rejoin`,
//! which `postern start` runs before master when `queue_mirror_peer` is set).
//!
//! While this node was down its peer may have adopted the copies of this node's queued
//! messages (`postern mirror adopt`) and delivered them. This node's queue still holds the
//! originals; delivered again they would reach the mailboxes twice. So before anything is
//! delivered here, two questions go to the peer's mirror service (in batches of
//! [`crate::wire::MAX_ASK`] queue IDs, each answer a subset of what was asked):
//!
//! 1. **which of my queued messages did you adopt?** ([`kind::ADOPTED`]) — the peer
//!    answers from its adopted list ([`crate::store::adopted_of`]); each message named is
//!    removed from this node's queue with its defer, bounce and trace logs (the peer
//!    owns it now);
//! 2. **which of your messages, whose copies I hold, are still queued at you?**
//!    ([`kind::QUEUED`]) — the copies of the others are dropped: the peer finished those
//!    while its drop notices could not reach this node, and keeping them would deliver
//!    them again if this node ever adopted.
//!
//! A peer that does not answer (it is down too, or the network is) leaves everything as
//! it is: the caller logs that a message adopted by the peer may then be delivered twice
//! (with replicated mailboxes its `X-Postern-GUID` makes the second delivery a no-op).
//! A node that was only frozen (SIGSTOP, a paused VM) and resumes never passes through
//! here: its qmgr delivers on; that case is the split brain the documentation describes.

use crate::store::{self, MIRROR_DIR};
use crate::wire::{MAX_ASK, PeerConn, kind};
use postern_lib::queue_scan::{QueuedFile, queue_files};
use std::path::Path;
use std::time::{Duration, Instant};

/// The directories that hold a message's logs beside its queue file.
const LOG_DIRS: [&str; 3] = ["defer", "bounce", "trace"];
/// qmgr's delay-warning marker beside the defer log (`defer/<ID>.warned`).
const WARNED_SUFFIX: &str = ".warned";

/// What a rejoin did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rejoined {
    /// This node's messages the peer had adopted: removed here (queue ID, queue).
    pub removed: Vec<(String, String)>,
    /// Files that could not be removed (queue ID, reason).
    pub failed: Vec<(String, String)>,
    /// Copies of the peer's messages dropped (finished at the peer).
    pub copies_dropped: usize,
    /// Copies kept (still queued at the peer).
    pub copies_kept: usize,
}

/// Runs both questions on `conn`, each batch answered within `budget`.
pub fn run(queue_dir: &Path, conn: &mut PeerConn, budget: Duration) -> Result<Rejoined, String> {
    let mut out = Rejoined::default();
    let mine: Vec<QueuedFile> = crate::resync::QUEUES
        .iter()
        .map(|q| queue_files(queue_dir, q).map_err(|e| format!("listing {q}/: {e}")))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let ids: Vec<String> = mine.iter().map(|f| f.id.as_str().to_string()).collect();
    let mut adopted = std::collections::HashSet::new();
    for batch in ids.chunks(MAX_ASK) {
        adopted.extend(conn.ask(kind::ADOPTED, batch, Instant::now() + budget)?);
    }
    for f in mine.iter().filter(|f| adopted.contains(f.id.as_str())) {
        let id = f.id.as_str().to_string();
        match std::fs::remove_file(&f.path) {
            Ok(()) => {
                remove_logs(queue_dir, f);
                out.removed.push((id, f.queue.clone()));
            }
            Err(e) => out.failed.push((id, e.to_string())),
        }
    }
    if !out.removed.is_empty() {
        for q in crate::resync::QUEUES {
            let _ = postern_lib::safe_open::fsync_dir(&queue_dir.join(q));
        }
    }

    let dir = queue_dir.join(MIRROR_DIR);
    let copies: Vec<String> = store::copies(&dir).iter().map(|id| id.as_str().to_string()).collect();
    for batch in copies.chunks(MAX_ASK) {
        let queued: std::collections::HashSet<String> = conn
            .ask(kind::QUEUED, batch, Instant::now() + budget)?
            .into_iter()
            .collect();
        for id in batch {
            if queued.contains(id) {
                out.copies_kept += 1;
            } else if let Ok(q) = postern_lib::queue_id::QueueId::parse(id)
                && store::drop_copy(&dir, &q)
            {
                out.copies_dropped += 1;
            }
        }
    }
    if out.copies_dropped > 0 {
        let _ = postern_lib::safe_open::fsync_dir(&dir);
    }
    Ok(out)
}

/// Removes the message's defer, bounce and trace logs and its delay-warning marker.
fn remove_logs(queue_dir: &Path, f: &QueuedFile) {
    for d in LOG_DIRS {
        let _ = std::fs::remove_file(queue_dir.join(d).join(&f.relative));
        let _ = std::fs::remove_file(queue_dir.join(d).join(f.id.as_str()));
    }
    let _ = std::fs::remove_file(
        queue_dir
            .join("defer")
            .join(format!("{}{WARNED_SUFFIX}", f.id.as_str())),
    );
}
