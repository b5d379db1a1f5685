//! Finding the messages an operation applies to: one queue ID (looked up in each queue,
//! flat or hashed, without listing the directory) or `ALL` (every message of each queue,
//! through [`postern_lib::queue_scan::queue_files`]).

use std::path::{Path, PathBuf};

use postern_lib::queue_id::{MAX_HASH_DEPTH, QueueId};
use postern_lib::queue_scan::{QueuedFile, queue_files};

/// The messages named by `target` in `queues`, in queue order. A queue that cannot be
/// listed is reported on stderr and skipped.
pub fn find(queue_dir: &Path, queues: &[&str], target: Option<&QueueId>) -> Vec<QueuedFile> {
    let mut out = Vec::new();
    for q in queues {
        match target {
            Some(id) => out.extend(lookup(queue_dir, q, id)),
            None => match queue_files(queue_dir, q) {
                Ok(files) => out.extend(files),
                Err(e) => eprintln!("postsuper: warning: cannot list the {q} queue: {e}"),
            },
        }
    }
    out
}

/// Message `id` in `queue`, flat (`queue/ID`) or hashed (`queue/x/4/ID`).
fn lookup(queue_dir: &Path, queue: &str, id: &QueueId) -> Option<QueuedFile> {
    (0..=MAX_HASH_DEPTH).find_map(|depth| {
        let relative = PathBuf::from(id.hash_dir(depth)).join(id.as_str());
        let path = queue_dir.join(queue).join(&relative);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        meta.file_type().is_file().then(|| QueuedFile {
            queue: queue.to_string(),
            id: *id,
            relative,
            path,
        })
    })
}
