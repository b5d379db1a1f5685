//! `postqueue -i ID` and `postqueue -s DOMAIN`: deferred mail delivered now.
//!
//! As Postfix does for `-i`, the message is moved from `deferred/` to `incoming/` (its
//! defer log removed, as qmgr does at the start of a new attempt) and qmgr is told that
//! new mail arrived, so it is taken at once whatever its retry time. `-s DOMAIN` does the
//! same for every deferred message with a recipient still pending in DOMAIN (the domain
//! part compared without case and without a trailing dot; Postfix's fast-flush service,
//! which keeps per-domain logs, is not needed for that: the deferred queue is read).
//!
//! A message that qmgr moves at the same moment is simply not found by the rename; that
//! is not an error. Both need write access to the queue (root, mail_owner, or the queue's
//! owner in the development layout): postqueue reports a clear error otherwise.
//!
//! [`selected`] does the same for the deferred messages a
//! [`postern_lib::queue_select::Selection`] picks (`postqueue -f --reason ...`), or only
//! lists them for `--dry-run`.

use std::path::Path;

use postern_lib::proto::trigger;
use postern_lib::queue_file::QueueFile;
use postern_lib::queue_id::QueueId;
use postern_lib::queue_scan::{QueuedFile, queue_files, summarise};
use postern_lib::queue_select::{self, Selection, in_domain};
use postern_lib::safe_open::{Expect, open_read, rename_durable};

/// Moves one deferred file to incoming/; false when it is gone already.
fn to_incoming(queue: &Path, f: &QueuedFile) -> Result<bool, String> {
    let to = queue.join("incoming").join(f.id.as_str());
    if std::fs::symlink_metadata(&to).is_ok() {
        return Ok(false);
    }
    match rename_durable(&f.path, &to) {
        Ok(()) => {
            let _ = std::fs::remove_file(queue.join("defer").join(&f.relative));
            let _ = std::fs::remove_file(queue.join("defer").join(f.id.as_str()));
            Ok(true)
        }
        Err(_) if std::fs::symlink_metadata(&f.path).is_err() => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

fn wake(queue: &Path) {
    trigger::send(&queue.join(trigger::QMGR_SOCKET), trigger::ARRIVED);
}

/// `-i ID`. Returns whether the message was found in the deferred queue.
pub fn one(queue: &Path, id: &QueueId) -> Result<bool, String> {
    let files = queue_files(queue, "deferred").map_err(|e| format!("read the deferred queue: {e}"))?;
    let mut found = false;
    for f in files.iter().filter(|f| f.id == *id) {
        found |= to_incoming(queue, f)?;
    }
    if found {
        wake(queue);
    }
    Ok(found)
}

/// `-s DOMAIN`. Returns how many messages were moved.
pub fn domain(queue: &Path, domain: &str) -> Result<usize, String> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let files = queue_files(queue, "deferred").map_err(|e| format!("read the deferred queue: {e}"))?;
    let mut moved = 0;
    for f in &files {
        let Ok(file) = open_read(&f.path, &Expect::any()) else {
            continue;
        };
        let Ok(qf) = QueueFile::read(file) else {
            continue;
        };
        let wanted = qf
            .recipients
            .iter()
            .any(|r| !r.status.is_final() && in_domain(&r.spec.address, &domain));
        if wanted && to_incoming(queue, f)? {
            moved += 1;
        }
    }
    if moved > 0 {
        wake(queue);
    }
    Ok(moved)
}

/// The deferred messages `selection` picks (only message `id` when given): moved to
/// `incoming/`, or with `dry_run` only listed on stdout. Returns how many.
pub fn selected(queue: &Path, selection: &Selection, id: Option<&QueueId>, dry_run: bool) -> Result<usize, String> {
    let now = queue_select::now();
    let mut files = queue_files(queue, "deferred").map_err(|e| format!("read the deferred queue: {e}"))?;
    files.retain(|f| {
        id.is_none_or(|id| f.id == *id)
            && (selection.queues.is_empty() || selection.queues.iter().any(|q| q == "deferred"))
    });
    let mut n = 0;
    for f in files {
        let e = summarise(queue, f);
        if !selection.matches(&e, now) {
            continue;
        }
        if dry_run {
            println!("{}: would be flushed ({})", e.file.id, queue_select::describe(&e));
            n += 1;
        } else if to_incoming(queue, &e.file)? {
            n += 1;
        }
    }
    if n > 0 && !dry_run {
        wake(queue);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::in_domain;

    #[test]
    fn domain_match() {
        assert!(in_domain("bob@Remote.Test", "remote.test"));
        assert!(in_domain("bob@remote.test.", "remote.test"));
        assert!(!in_domain("bob@sub.remote.test", "remote.test"));
        assert!(!in_domain("bob@remote.testx", "remote.test"));
        assert!(!in_domain("bob", "remote.test"));
        assert!(in_domain("\"a@b\"@remote.test", "remote.test"));
    }
}
