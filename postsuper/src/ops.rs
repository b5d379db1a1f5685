//! The four operations on one queued message: delete, hold, release, requeue.
//!
//! qmgr keeps no lock on the messages of `active/`; a delivery agent holds a shared
//! `flock` on the queue file while it delivers. So, as qmgr's own recovery does, a
//! message in `active/` is touched only under a non-blocking exclusive lock: when an
//! agent holds it, the operation is refused for that message ("is being delivered, try
//! again later"). A delete or requeue of an active message also marks every pending
//! recipient `Discarded` in the file while the lock is held, so an agent that opened the
//! file just before and waits for its shared lock finds nothing left to deliver.
//!
//! Messages in `incoming/` and `deferred/` are claimed by one `rename` (into `hold/` for
//! hold and requeue), which fails harmlessly when qmgr moved the file first; `hold/` is
//! never touched by qmgr, so a claimed message stays put while the work is done.

use std::fs::File;
use std::path::{Path, PathBuf};

use postern_lib::queue_file::{QueueFile, RecipientStatus, mark_done};
use postern_lib::queue_id::QueueId;
use postern_lib::queue_scan::QueuedFile;
use postern_lib::safe_open::{Expect, open_read, open_update, rename_durable};
use rustix::fs::FlockOperation;

use crate::requeue;

/// What happened to one message.
pub enum Outcome {
    /// Done: the maillog line (`removed`, `placed on hold`, ...).
    Done(&'static str),
    /// Gone before we got to it (qmgr finished or moved it): not counted, not reported.
    Vanished,
    /// Not done, and why (one line for stderr).
    Refused(String),
}

/// The per-message logs that go with a message.
const LOG_DIRS: &[&str] = &["defer", "bounce", "trace"];

/// Opens an active message read-write and takes the exclusive lock without waiting.
fn lock_active(path: &Path) -> Result<File, Outcome> {
    let file = match open_update(path, &Expect::any()) {
        Ok(f) => f,
        Err(e) => return Err(io_outcome(&e, path)),
    };
    if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(Outcome::Refused("is being delivered, try again later".into()));
    }
    Ok(file)
}

/// A failed step on `path`: the message is gone (qmgr finished or moved it) when the path
/// no longer exists, else a refusal with the error.
fn io_outcome(e: &dyn std::fmt::Display, path: &Path) -> Outcome {
    if std::fs::symlink_metadata(path).is_err() {
        Outcome::Vanished
    } else {
        Outcome::Refused(format!("{}: {e}", path.display()))
    }
}

/// Marks every pending recipient of `file` `Discarded`.
fn discard_pending(mut file: &File) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let qf = QueueFile::read(file).map_err(|e| e.to_string())?;
    for r in qf.recipients.iter().filter(|r| !r.status.is_final()) {
        mark_done(file, &r.handle, RecipientStatus::Discarded).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Removes the message's defer, bounce and trace logs.
fn remove_logs(queue_dir: &Path, f: &QueuedFile) {
    for d in LOG_DIRS {
        let _ = std::fs::remove_file(queue_dir.join(d).join(&f.relative));
        let _ = std::fs::remove_file(queue_dir.join(d).join(f.id.as_str()));
    }
    // qmgr's delay-warning marker lives beside the defer log.
    let _ = std::fs::remove_file(queue_dir.join("defer").join(format!("{}.warned", f.id.as_str())));
}

/// `postsuper -d`.
pub fn delete(queue_dir: &Path, f: &QueuedFile) -> Outcome {
    let _lock = if f.queue == "active" {
        match lock_active(&f.path) {
            Ok(file) => {
                if let Err(e) = discard_pending(&file) {
                    return Outcome::Refused(format!("cannot mark recipients done: {e}"));
                }
                Some(file)
            }
            Err(o) => return o,
        }
    } else {
        None
    };
    match std::fs::remove_file(&f.path) {
        Ok(()) => {
            remove_logs(queue_dir, f);
            Outcome::Done("removed")
        }
        Err(e) => io_outcome(&e, &f.path),
    }
}

fn path_in(queue_dir: &Path, queue: &str, id: &QueueId) -> PathBuf {
    queue_dir.join(queue).join(id.as_str())
}

/// Renames `f` into `queue` (flat), durably.
fn move_to(queue_dir: &Path, f: &QueuedFile, queue: &str) -> Result<PathBuf, Outcome> {
    let to = path_in(queue_dir, queue, &f.id);
    if std::fs::symlink_metadata(&to).is_ok() {
        return Err(Outcome::Refused(format!("{} already exists", to.display())));
    }
    match rename_durable(&f.path, &to) {
        Ok(()) => Ok(to),
        Err(e) => Err(io_outcome(&e, &f.path)),
    }
}

/// `postsuper -h`: into `hold/`.
pub fn hold(queue_dir: &Path, f: &QueuedFile) -> Outcome {
    if f.queue == "hold" {
        return Outcome::Vanished;
    }
    let _lock = if f.queue == "active" {
        match lock_active(&f.path) {
            Ok(file) => Some(file),
            Err(o) => return o,
        }
    } else {
        None
    };
    match move_to(queue_dir, f, "hold") {
        Ok(_) => Outcome::Done("placed on hold"),
        Err(o) => o,
    }
}

/// `postsuper -H`: from `hold/` to `deferred/`, due now.
pub fn release(queue_dir: &Path, f: &QueuedFile) -> Outcome {
    if f.queue != "hold" {
        return Outcome::Vanished;
    }
    match move_to(queue_dir, f, "deferred") {
        Ok(to) => {
            if let Err(e) = set_mtime_now(&to) {
                eprintln!("postsuper: warning: {}: cannot set the retry time: {e}", f.id);
            }
            Outcome::Done("released from hold")
        }
        Err(o) => o,
    }
}

fn set_mtime_now(path: &Path) -> std::io::Result<()> {
    let f = File::options().write(true).open(path)?;
    f.set_modified(std::time::SystemTime::now())
}

/// `postsuper -r`: claim the message (into `hold/`), hand its envelope (pending
/// recipients only) and content to cleanup, and remove it only once cleanup has queued
/// the copy. If cleanup cannot take it, the message goes back where it was (an active
/// one to `deferred/`, due now).
pub fn requeue(queue_dir: &Path, f: &QueuedFile, timeout: std::time::Duration) -> Outcome {
    let lock = if f.queue == "active" {
        match lock_active(&f.path) {
            Ok(file) => Some(file),
            Err(o) => return o,
        }
    } else {
        None
    };
    let claimed = if f.queue == "hold" {
        f.path.clone()
    } else {
        match move_to(queue_dir, f, "hold") {
            Ok(p) => p,
            Err(o) => return o,
        }
    };
    let file = match lock {
        Some(file) => file,
        None => match open_read(&claimed, &Expect::any()) {
            Ok(file) => file,
            Err(e) => return Outcome::Refused(format!("{}: {e}", claimed.display())),
        },
    };
    let back = |why: String| -> Outcome {
        let home = if f.queue == "active" {
            "deferred"
        } else {
            f.queue.as_str()
        };
        if home != "hold" {
            let to = path_in(queue_dir, home, &f.id);
            match rename_durable(&claimed, &to) {
                Ok(()) => {
                    let _ = set_mtime_now(&to);
                }
                Err(e) => eprintln!("postsuper: warning: {}: left in hold/: {e}", f.id),
            }
        }
        Outcome::Refused(why)
    };
    match requeue::submit(&file, queue_dir, timeout) {
        Ok(new_id) => {
            if f.queue == "active"
                && let Err(e) = discard_pending(&file)
            {
                eprintln!("postsuper: warning: {}: cannot mark recipients done: {e}", f.id);
            }
            if let Err(e) = std::fs::remove_file(&claimed) {
                eprintln!(
                    "postsuper: warning: {}: requeued as {new_id} but cannot remove {}: {e}",
                    f.id,
                    claimed.display()
                );
            }
            remove_logs(queue_dir, f);
            Outcome::Done("requeued")
        }
        Err(requeue::Error::NothingPending) => {
            // Every recipient is finished: nothing to requeue; leave it for qmgr.
            back("has no recipients left to deliver".into())
        }
        Err(requeue::Error::Failed(why)) => back(why),
    }
}
