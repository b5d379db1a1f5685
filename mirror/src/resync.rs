//! Catching the peer up after it was unreachable: every message this node has queued
//! (`incoming/`, `active/`, `deferred/`, `hold/`) is copied to it again. That covers the
//! messages accepted `degraded` while it was away (on this node alone until now) and a
//! peer that comes back with an empty disk. A copy the peer has already is replaced by the
//! same bytes (idempotent); a message finished here while its copy was on the way gets a
//! drop notice right after.
//!
//! It runs once per return of the peer (the failing → reachable transition of
//! [`crate::daemon`]), on the thread of the local request that saw the transition, after
//! that request has been answered; one at a time per process. A copy that fails stops it
//! (the peer is failing again; the next return starts it over).

use postern_lib::queue_id::{MAX_HASH_DEPTH, QueueId};
use postern_lib::queue_scan::queue_files;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The queues whose messages the peer should hold copies of.
pub const QUEUES: [&str; 4] = ["incoming", "active", "deferred", "hold"];

/// The prefix of cleanup's temporary name for a queue file it is writing
/// (`incoming/.cleanup.ID` or `hold/.cleanup.ID`, renamed to `ID` when committed;
/// cleanup's `queue::TEMP_PREFIX`): such a message is on its way to its 250 or its 451.
pub const CLEANUP_TEMP_PREFIX: &str = ".cleanup.";

/// Where message `id` is in `queue_dir`: (queue, path), flat or hashed.
pub fn locate(queue_dir: &Path, queues: &[&str], id: &QueueId) -> Option<(String, PathBuf)> {
    queues.iter().find_map(|q| {
        (0..=MAX_HASH_DEPTH).find_map(|depth| {
            let path = queue_dir.join(q).join(id.hash_dir(depth)).join(id.as_str());
            std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.file_type().is_file())
                .then(|| (q.to_string(), path))
        })
    })
}

/// Which of `asked` (queue IDs) are queued in `queue_dir`, or still being written by
/// cleanup (the peer's question before it drops a copy, [`crate::prune`]). Fails when a
/// queue directory is not there (a queue directory removed, a disk gone): nothing must be
/// answered "not queued" then.
///
/// Looked up by name, not by listing: qmgr moves files between the queues (incoming →
/// active → deferred → active) and cleanup renames its temporary into place, each an
/// atomic rename; a message is looked for in the queues in one order and then, if not
/// found, in the reverse order, so it is missed only if it moves against both within the
/// microseconds in between (and the peer drops a copy only when two checks in a row
/// missed it).
pub fn still_queued(queue_dir: &Path, asked: &[String]) -> Result<HashSet<String>, String> {
    for q in QUEUES {
        let p = queue_dir.join(q);
        if !std::fs::metadata(&p).is_ok_and(|m| m.is_dir()) {
            return Err(format!("{}/ is not there", p.display()));
        }
    }
    let mut reverse = QUEUES;
    reverse.reverse();
    let being_written = |id: &str| {
        ["incoming", "hold"]
            .iter()
            .any(|q| std::fs::symlink_metadata(queue_dir.join(q).join(format!("{CLEANUP_TEMP_PREFIX}{id}"))).is_ok())
    };
    Ok(asked
        .iter()
        .filter(|id| {
            let Ok(qid) = QueueId::parse(id) else {
                return false;
            };
            being_written(id)
                || locate(queue_dir, &QUEUES, &qid).is_some()
                || locate(queue_dir, &reverse, &qid).is_some()
                || being_written(id)
        })
        .cloned()
        .collect())
}

/// Is `id` still queued here?
fn queued(id: &str) -> bool {
    QUEUES.iter().any(|q| Path::new(q).join(id).exists())
}

/// Copies every queued message with `put` (queue ID, bytes); drops with `drop` the copies
/// of those finished meanwhile. Returns (copied, dropped) or the first failure.
pub fn run(
    max: usize,
    put: impl Fn(&str, &[u8]) -> Result<(), String>,
    drop: impl Fn(&[String]) -> Result<(), String>,
) -> Result<(usize, usize), String> {
    let mut copied = 0;
    let mut gone = Vec::new();
    for q in QUEUES {
        for f in queue_files(Path::new("."), q).map_err(|e| format!("listing {q}/: {e}"))? {
            let id = f.id.as_str();
            let data = match std::fs::read(&f.path) {
                Ok(d) if d.len() <= max => d,
                // Moved on (to active/, deferred/) or finished: found again there, or gone.
                _ => continue,
            };
            put(id, &data)?;
            copied += 1;
            if !queued(id) {
                gone.push(id.to_string());
            }
        }
    }
    if !gone.is_empty() {
        drop(&gone)?;
    }
    Ok((copied, gone.len()))
}
