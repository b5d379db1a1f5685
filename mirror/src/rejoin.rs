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
//!    ([`kind::QUEUED`], [`crate::prune`] with its queue-token guard) — the copies of the
//!    others are dropped: the peer finished those while its drop notices could not reach
//!    this node, and keeping them would deliver them again if this node ever adopted.
//!
//! A peer that does not answer (it is down too, or the network is) leaves everything as
//! it is: the caller logs that a message adopted by the peer may then be delivered twice
//! (with replicated mailboxes its `X-Postern-GUID` makes the second delivery a no-op).
//!
//! A node that never stopped — frozen (SIGSTOP, a paused VM) and resumed, or cut off from
//! its peer while it ran — does not pass through `postern start`: its mirror daemon asks
//! the first question itself ([`live`], run by [`crate::watch`] when it notices the gap in
//! its own running or the peer answering again) and removes what the peer adopted from
//! the running queue, an active message under the delivery lock as `postsuper -d` does.
//! What qmgr handed to a delivery agent in the moment between the resume and that answer
//! may still be delivered here a second time (logged "being delivered").

use crate::store::MIRROR_DIR;
use crate::wire::{MAX_ASK, PeerConn, kind};
use postern_lib::queue_file::{QueueFile, RecipientStatus, mark_done};
use postern_lib::queue_id::QueueId;
use postern_lib::queue_scan::queue_files;
use postern_lib::safe_open::{Expect, open_update};
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
    /// Copies kept (still queued at the peer, or from a queue the peer no longer has).
    pub copies_kept: usize,
}

/// Runs both questions on `conn`, each batch answered within `budget` (before master
/// starts: `postern mirror rejoin`).
pub fn run(queue_dir: &Path, conn: &mut PeerConn, budget: Duration) -> Result<Rejoined, String> {
    let mut out = Rejoined::default();
    remove_adopted(queue_dir, &mut out, |ids| {
        conn.ask(kind::ADOPTED, ids, Instant::now() + budget)
    })?;
    let p = crate::prune::run(&queue_dir.join(MIRROR_DIR), Duration::ZERO, None, |ids| {
        conn.ask_queued(ids, Instant::now() + budget)
    })?;
    out.copies_dropped = p.dropped;
    out.copies_kept = p.kept + p.old_queue;
    Ok(out)
}

/// The first question alone, while this node runs (the mirror daemon, [`crate::watch`]:
/// after this node was frozen, or when the peer answers again after a silence): `ask`
/// puts one [`kind::ADOPTED`] question to the peer.
pub fn live(queue_dir: &Path, ask: impl FnMut(&[String]) -> Result<Vec<String>, String>) -> Result<Rejoined, String> {
    let mut out = Rejoined::default();
    remove_adopted(queue_dir, &mut out, ask)?;
    Ok(out)
}

/// Asks about every queued message (in batches of [`MAX_ASK`]) and removes those the peer
/// names, wherever they are by then.
fn remove_adopted(
    queue_dir: &Path,
    out: &mut Rejoined,
    mut ask: impl FnMut(&[String]) -> Result<Vec<String>, String>,
) -> Result<(), String> {
    let mut ids = Vec::new();
    for q in crate::resync::QUEUES {
        let files = queue_files(queue_dir, q).map_err(|e| format!("listing {q}/: {e}"))?;
        ids.extend(files.into_iter().map(|f| f.id.as_str().to_string()));
    }
    ids.sort();
    ids.dedup();
    let mut adopted = Vec::new();
    for batch in ids.chunks(MAX_ASK) {
        adopted.extend(ask(batch)?);
    }
    for id in adopted {
        let Ok(qid) = QueueId::parse(&id) else { continue };
        match remove(queue_dir, &qid) {
            Ok(Some(queue)) => out.removed.push((id, queue)),
            // Finished meanwhile (delivered here too, or it never was here).
            Ok(None) => {}
            Err(why) => out.failed.push((id, why)),
        }
    }
    if !out.removed.is_empty() {
        for q in crate::resync::QUEUES {
            let _ = postern_lib::safe_open::fsync_dir(&queue_dir.join(q));
        }
    }
    Ok(())
}

/// Removes message `id` from this node's queue with its logs; the queue it was in, or
/// None when it is not queued here. A message in `active/` is removed only under a
/// non-blocking exclusive lock (a delivery agent holds a shared one while it delivers:
/// then it fails, "being delivered"), after marking its pending recipients done, so an
/// agent that opened it just before finds nothing left to deliver (as `postsuper -d`).
fn remove(queue_dir: &Path, id: &QueueId) -> Result<Option<String>, String> {
    // qmgr may move it between the queues meanwhile: looked up again a few times.
    for _ in 0..3 {
        let Some((queue, path)) = crate::resync::locate(queue_dir, &crate::resync::QUEUES, id) else {
            return Ok(None);
        };
        let _lock = if queue == "active" {
            let file = match open_update(&path, &Expect::any()) {
                Ok(f) => f,
                Err(_) => continue,
            };
            if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
                return Err("being delivered here too at this moment".into());
            }
            discard_pending(&file).map_err(|e| format!("cannot mark its recipients done: {e}"))?;
            Some(file)
        } else {
            None
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {
                remove_logs(queue_dir, &path, id);
                return Ok(Some(queue));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("it kept moving between the queues".into())
}

/// Marks every pending recipient of `file` discarded.
fn discard_pending(mut file: &std::fs::File) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let qf = QueueFile::read(file).map_err(|e| e.to_string())?;
    for r in qf.recipients.iter().filter(|r| !r.status.is_final()) {
        mark_done(file, &r.handle, RecipientStatus::Discarded).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Removes the message's defer, bounce and trace logs and its delay-warning marker.
fn remove_logs(queue_dir: &Path, path: &Path, id: &QueueId) {
    // The queue file's path below its queue (`ID` or `x/4/ID`): the logs mirror it.
    let relative: std::path::PathBuf = path
        .strip_prefix(queue_dir)
        .ok()
        .map(|p| p.components().skip(1).collect())
        .unwrap_or_else(|| id.as_str().into());
    for d in LOG_DIRS {
        let _ = std::fs::remove_file(queue_dir.join(d).join(&relative));
        let _ = std::fs::remove_file(queue_dir.join(d).join(id.as_str()));
    }
    let _ = std::fs::remove_file(queue_dir.join("defer").join(format!("{}{WARNED_SUFFIX}", id.as_str())));
}
