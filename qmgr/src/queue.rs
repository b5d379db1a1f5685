//! The queue on disk, as qmgr sees it: listing queues, moving files between them, reading
//! queue files, the defer log, retry times as modification times, removal.
//!
//! Paths are relative to the queue directory (the skeleton's working directory). Files in
//! `active/` and `deferred/` are flat (`active/<ID>`); `incoming/` may be flat or hashed —
//! [`postern_lib::queue_scan::queue_files`] walks both.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use postern_lib::dsn::Dsn;
use postern_lib::queue_file::{QueueFile, RecipientHandle, RecipientStatus, mark_done};
use postern_lib::queue_id::QueueId;
use postern_lib::queue_scan::{QueuedFile, queue_files};
use postern_lib::queue_spare::{Giver, SPARE_DIR};
use postern_lib::safe_open::{Expect, open_append, open_update};
use rustix::fs::{FlockOperation, Timespec, Timestamps};

/// Queue names.
pub const INCOMING: &str = "incoming";
/// Messages being delivered.
pub const ACTIVE: &str = "active";
/// Messages waiting for their next attempt.
pub const DEFERRED: &str = "deferred";
/// Files that could not be parsed.
pub const CORRUPT: &str = "corrupt";
/// Per-message defer logs.
pub const DEFER_LOG: &str = "defer";

/// Now, in microseconds since the epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Now, in seconds since the epoch.
pub fn now_secs() -> u64 {
    now_micros() / 1_000_000
}

/// The message files of a queue, in name (arrival) order, with paths as [`path_in`]
/// makes them (`active/ID`: the form bounce and the agents accept).
pub fn list(queue: &str) -> Vec<QueuedFile> {
    match queue_files(Path::new(""), queue) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("scan {queue}: {e}");
            Vec::new()
        }
    }
}

/// The path of message `id` in a flat queue.
pub fn path_in(queue: &str, id: &QueueId) -> PathBuf {
    Path::new(queue).join(id.as_str())
}

/// Renames a queue file into another (flat) queue. A rename in one file system needs no
/// fsync for safety here: after a crash the file is in one queue or the other.
pub fn move_to(from: &Path, queue: &str, id: &QueueId) -> std::io::Result<PathBuf> {
    let to = path_in(queue, id);
    std::fs::rename(from, &to)?;
    Ok(to)
}

/// Queue files up to this size are read whole (one `read`, one more to see the end) and
/// parsed from memory; larger ones are parsed from the file, their content skipped.
const READ_WHOLE_MAX: u64 = 32 * 1024;

/// Opens a queue file for reading and marking (read-write, no symlink, regular file with
/// one link) and parses its envelope.
pub fn open_and_read(path: &Path) -> Result<(File, QueueFile), ReadError> {
    // One open, checked (no symlink, regular file, one link) on the descriptor itself.
    let mut file = open_update(path, &Expect::any()).map_err(|e| ReadError::Io(e.to_string()))?;
    let parsed = |r: Result<QueueFile, postern_lib::queue_file::QueueFileError>| {
        r.map_err(|e| match e {
            postern_lib::queue_file::QueueFileError::Io(e) => ReadError::Io(e.to_string()),
            other => ReadError::Corrupt(other.to_string()),
        })
    };
    // Most queue files are small: reading one whole costs two reads, where parsing it from
    // the file costs the same reads and three seeks (issue 14: qmgr's system calls per
    // message). Offsets are the same either way (both start at 0).
    let mut buf = Vec::with_capacity(READ_WHOLE_MAX as usize + 1);
    (&file)
        .take(READ_WHOLE_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ReadError::Io(e.to_string()))?;
    if buf.len() as u64 <= READ_WHOLE_MAX {
        let qf = parsed(QueueFile::read(std::io::Cursor::new(buf.as_slice())))?;
        return Ok((file, qf));
    }
    drop(buf);
    file.seek(SeekFrom::Start(0))
        .map_err(|e| ReadError::Io(e.to_string()))?;
    let qf = parsed(QueueFile::read(&mut file))?;
    Ok((file, qf))
}

/// Why a queue file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// I/O: try again later.
    Io(String),
    /// The file is not a valid queue file: move it to corrupt/.
    Corrupt(String),
}

/// Tries to take the exclusive lock on a queue file without waiting: false while a
/// delivery agent (which holds a shared lock) still works on it.
pub fn try_lock_exclusive(file: &File) -> bool {
    rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Releases a lock.
pub fn unlock(file: &File) {
    let _ = rustix::fs::flock(file, FlockOperation::Unlock);
}

/// Records a recipient's final status in the file.
pub fn mark(file: &File, handle: &RecipientHandle, status: RecipientStatus) -> Result<(), String> {
    mark_done(file, handle, status).map_err(|e| e.to_string())
}

/// Moves an unreadable file to corrupt/ and says why in the log.
pub fn to_corrupt(path: &Path, id: &QueueId, why: &str) {
    match move_to(path, CORRUPT, id) {
        Ok(_) => tracing::warn!(queue_id = id.as_str(), "corrupt queue file moved to corrupt/: {why}"),
        Err(e) => tracing::error!(
            queue_id = id.as_str(),
            "corrupt queue file, cannot move it to corrupt/: {e}"
        ),
    }
}

/// Where finished messages' files go for cleanup to reuse ([`postern_lib::queue_spare`]).
static SPARES: std::sync::LazyLock<std::sync::Mutex<Giver>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(Giver::new(SPARE_DIR)));

/// Removes a finished message (its file becomes a spare for cleanup, or is unlinked), its
/// defer log, trace log and delay-warning marker, and (with a queue mirror, issue 16) has
/// the peer node drop its copy — in the background, best effort ([`mirror::drops`]).
pub fn remove(path: &Path, id: &QueueId) -> std::io::Result<()> {
    remove_file_only(path, id)?;
    let _ = std::fs::remove_file(path_in(DEFER_LOG, id));
    crate::notices::remove(id);
    crate::success::remove(id);
    crate::notices::remove_warned(id);
    Ok(())
}

/// [`remove`] for a message that has no defer, trace or bounce log and no delay-warning
/// marker (one taken from incoming/ and finished in its first attempt): the file (as a
/// spare) and the mirror's copy only, without looking for the others.
pub fn remove_file_only(path: &Path, id: &QueueId) -> std::io::Result<()> {
    SPARES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .dispose(path, id.as_str())?;
    mirror::drops::finished(id.as_str());
    Ok(())
}

/// Removes a message's defer log (at the start of a new delivery attempt, as Postfix does).
pub fn clear_defer_log(id: &QueueId) {
    let _ = std::fs::remove_file(path_in(DEFER_LOG, id));
}

/// One line of text for a log file: no control characters, bounded.
fn clean(s: &str) -> String {
    postern_lib::strbuf::printable_bounded(s.as_bytes(), 1000)
}

/// Appends (recipient, dsn, reason) blocks to the message's defer log, in the attribute
/// format `postqueue -p` reads.
pub fn append_defer_log(id: &QueueId, entries: &[(String, Dsn, String)]) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let path = path_in(DEFER_LOG, id);
    let mut f = open_append(&path, &Expect::current_user(), Some(0o600)).map_err(std::io::Error::other)?;
    let mut text = String::new();
    for (rcpt, dsn, reason) in entries {
        text.push_str(&format!(
            "recipient={}\nstatus={}\nreason={}\n\n",
            clean(rcpt),
            dsn,
            clean(reason)
        ));
    }
    f.write_all(text.as_bytes())
}

/// Sets the file's modification time (the next retry time of a deferred message).
pub fn set_mtime(path: &Path, secs: u64) -> std::io::Result<()> {
    let t = Timespec {
        tv_sec: secs as i64,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(std::io::Error::from)
}

/// The file's modification time in seconds, if it can be read.
pub fn mtime(path: &Path) -> Option<u64> {
    let md = std::fs::symlink_metadata(path).ok()?;
    md.modified().ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}
