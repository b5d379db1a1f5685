//! Writing the queue file durably.
//!
//! The file is `.cleanup.<QUEUEID>` in the directory it will live in (`incoming/`, or
//! `hold/` for a held message; flat, no hashed subdirectories): a spare file taken from
//! `spare/` ([`postern_lib::queue_spare`]: a finished message's file, so no inode is
//! allocated; claimed in batches, each made durable by one fsync of `spare/` before any of
//! them gets a queue name) or, when there is none, a new file created with `O_EXCL`, mode
//! 0600. It is
//! written from its start through [`QueueFileWriter`], cut to the new length (a spare may
//! have been longer), `fdatasync`ed, (with `queue_mirror_peer`) copied to the peer node
//! ([`crate::mirror`]), renamed to `<QUEUEID>`, and the directory is fsynced; only then is
//! the message queued.
//!
//! **Disk full**: ENOSPC or EDQUOT at any step (create, write, fsync, rename) removes the
//! temporary file and is reported as [`WriteError::no_space`]; cleanup then answers a
//! temporary failure (`452 4.3.1 Insufficient system storage`) and the client keeps the
//! message. Nothing is left where qmgr reads: a file gets its final name only once all of
//! it is written and fdatasynced.
//!
//! **Crash safety**: a crash before the rename leaves only a `.cleanup.*` file, which
//! qmgr never reads (it skips names starting with `.`); a crash after it leaves a complete
//! file (the queue file format also marks an unfinished file as incomplete). A stale
//! temporary is safe to remove when the process that made it is gone: the queue ID in its
//! name carries the creating PID ([`QueueId::pid`]; a claimed spare's name,
//! `.cleanup.spare.PID.N`, carries it directly), and a temporary older than an hour
//! can never still be in use (`ipc_timeout`-like bound on one message).
//!
//! **Throughput**: each connection fdatasyncs its own file; several connections' syncs are
//! in flight at once and the file system (ext4's journal) commits them together. The
//! directory fsync after the rename is shared by the connections of the process that
//! renamed into the directory meanwhile (group commit, [`crate::dir_sync`]): each still
//! answers only after an fsync of the directory that started after its own rename.

use std::fs::File;
use std::io::{BufWriter, Cursor, ErrorKind, Seek, Write};
use std::path::Path;

use postern_lib::queue_file::{Envelope, QueueFileError, QueueFileWriter, RecipientSpec};
use postern_lib::queue_id::QueueId;

/// Queue files up to this size (header and body) are built in memory and written with one
/// `write`; larger ones are streamed (so a big message is not held twice).
const WRITE_AT_ONCE: usize = 1024 * 1024;

/// Prefix of temporary queue file names.
pub const TEMP_PREFIX: &str = ".cleanup.";

/// Prefix of the temporary names of spares this process claimed (then `PID.N`).
const SPARE_PREFIX: &str = ".cleanup.spare.";

/// Removes from `incoming/` the spares claimed by cleanup processes that are gone (killed
/// before they could release them); returns how many.
pub fn remove_abandoned_spares() -> usize {
    postern_lib::queue_spare::remove_abandoned_claims(Path::new("incoming"), SPARE_PREFIX)
}

/// Why a queue file could not be written.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteError {
    /// What failed, for the log.
    pub text: String,
    /// The file system is full or the quota is used up (ENOSPC, EDQUOT): `452 4.3.1`.
    pub no_space: bool,
}

impl WriteError {
    pub(crate) fn io(what: &str, e: &std::io::Error) -> WriteError {
        WriteError {
            text: format!("{what}: {e}"),
            no_space: matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded),
        }
    }
}

impl From<postern_lib::safe_open::SafeOpenError> for WriteError {
    fn from(e: postern_lib::safe_open::SafeOpenError) -> WriteError {
        match &e {
            postern_lib::safe_open::SafeOpenError::Io { source, .. } => WriteError::io(&e.to_string(), source),
            _ => WriteError {
                text: e.to_string(),
                no_space: false,
            },
        }
    }
}

impl From<QueueFileError> for WriteError {
    fn from(e: QueueFileError) -> WriteError {
        match &e {
            QueueFileError::Io(source) => WriteError::io("write", source),
            _ => WriteError {
                text: e.to_string(),
                no_space: false,
            },
        }
    }
}

/// A queue file written and fdatasynced under its temporary name: complete and durable,
/// but not yet where qmgr reads (so it can be copied to the peer node first, see
/// [`crate::mirror`]). [`Prepared::commit`] renames it into place; dropping it
/// uncommitted removes it.
#[derive(Debug)]
pub struct Prepared {
    dir: &'static str,
    tmp_path: std::path::PathBuf,
    qid: QueueId,
    committed: bool,
}

impl Prepared {
    /// The temporary file.
    pub fn path(&self) -> &Path {
        &self.tmp_path
    }

    /// Renames the file to its queue ID and fsyncs the directory (an fsync shared with
    /// this process's other connections that renamed into it meanwhile, started after
    /// this rename: [`crate::dir_sync`]): now it is queued.
    pub fn commit(mut self) -> Result<(), WriteError> {
        let from = self.tmp_path.file_name().map_or(self.tmp_path.as_path(), Path::new);
        crate::dir_sync::rename_into(self.dir, from, self.qid.as_str())?;
        self.committed = true;
        crate::dir_sync::after_rename(self.dir)
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error being returned is what matters.
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// Writes the queue file in `dir` under its temporary name and makes its content durable;
/// a recipient with a route is a copy for that route (see [`crate::replica`]). On any
/// error, and when the result is dropped uncommitted, the temporary file is removed, so
/// nothing partial is ever left, under its final name or any other.
pub fn prepare(
    dir: &'static str,
    env: &Envelope,
    recipients: &[(RecipientSpec, Option<String>)],
    header: &[u8],
    body: &[u8],
) -> Result<Prepared, WriteError> {
    let qid: &QueueId = &env.queue_id;
    let tmp = format!("{TEMP_PREFIX}{qid}");
    let dirp = Path::new(dir);
    let spare_dir = Path::new(postern_lib::queue_spare::SPARE_DIR);
    // A spare only for incoming/ (held mail is rare): claimed durably, in batches, under
    // a temporary name of its own ([`postern_lib::queue_spare::take_durable`]).
    let spare = (dir == "incoming")
        .then(|| postern_lib::queue_spare::take_durable(spare_dir, dirp, SPARE_PREFIX))
        .flatten();
    let (file, old_len, tmp_path) = match spare {
        Some(spare) => spare,
        None => (
            postern_lib::safe_open::create_excl(dirp, &tmp, 0o600)?,
            0,
            dirp.join(&tmp),
        ),
    };
    let prepared = Prepared {
        dir,
        tmp_path,
        qid: *qid,
        committed: false,
    };
    fill(file, old_len, env, recipients, header, body)?;
    Ok(prepared)
}

fn fill(
    file: File,
    old_len: u64,
    env: &Envelope,
    recipients: &[(RecipientSpec, Option<String>)],
    header: &[u8],
    body: &[u8],
) -> Result<(), WriteError> {
    let size = header.len() + 1 + body.len();
    let (file, end) = if size <= WRITE_AT_ONCE {
        // Built in memory and written with one `write` (the writer seeks back to patch the
        // content length: on a file that was a `write` and two `lseek`s more).
        let mut buf = Cursor::new(Vec::with_capacity(size + 1024));
        records(&mut buf, env, recipients, header, body)?;
        let buf = buf.into_inner();
        let mut file = file;
        file.write_all(&buf).map_err(|e| WriteError::io("write", &e))?;
        (file, buf.len() as u64)
    } else {
        let mut w = records(BufWriter::with_capacity(64 * 1024, file), env, recipients, header, body)?;
        let end = w.stream_position().map_err(|e| WriteError::io("seek", &e))?;
        let file = w.into_inner().map_err(|e| WriteError::io("write", e.error()))?;
        (file, end)
    };
    if old_len > end {
        // A spare: what is left of its old content beyond the new end goes.
        file.set_len(end).map_err(|e| WriteError::io("truncate", &e))?;
    }
    file.sync_data().map_err(|e| WriteError::io("fsync", &e))
}

/// Writes the queue file's records to `w` (at its start); returns it, flushed.
fn records<W: Write + Seek>(
    w: W,
    env: &Envelope,
    recipients: &[(RecipientSpec, Option<String>)],
    header: &[u8],
    body: &[u8],
) -> Result<W, WriteError> {
    let mut w = QueueFileWriter::new(w, env)?;
    for (r, route) in recipients {
        w.add_routed_recipient(r, route.as_deref())?;
    }
    w.write_content(header)?;
    w.write_content(b"\n")?;
    w.write_content(body)?;
    Ok(w.finish()?)
}
