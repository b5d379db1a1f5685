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

use postern_lib::queue_scan::queue_files;
use std::path::Path;

/// The queues whose messages the peer should hold copies of.
pub const QUEUES: [&str; 4] = ["incoming", "active", "deferred", "hold"];

/// The queue IDs of every message queued in `queue_dir` (the rejoin's "still queued?").
///
/// qmgr moves files between the queues while they are listed: a file renamed from a queue
/// not listed yet into one listed already is missed by one pass. So two passes in
/// opposite orders, united: a file is missed only if it moves against both orders, twice,
/// within the few milliseconds they take (an answer "not queued" drops the peer's copy).
pub fn queued_ids(queue_dir: &Path) -> std::collections::HashSet<String> {
    QUEUES
        .iter()
        .chain(QUEUES.iter().rev())
        .flat_map(|q| queue_files(queue_dir, q).unwrap_or_default())
        .map(|f| f.id.as_str().to_string())
        .collect()
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
