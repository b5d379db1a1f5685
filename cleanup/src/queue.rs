//! Writing the queue file durably.
//!
//! The file is created with `O_EXCL`, mode 0600, as `.cleanup.<QUEUEID>` in the directory
//! it will live in (`incoming/`, or `hold/` for a held message; flat, no hashed
//! subdirectories), written through [`QueueFileWriter`], `fdatasync`ed, renamed to
//! `<QUEUEID>`, and the directory is fsynced; only then is the message queued.
//!
//! **Crash safety**: a crash before the rename leaves only a `.cleanup.*` file, which
//! qmgr never reads (it skips names starting with `.`); a crash after it leaves a complete
//! file (the queue file format also marks an unfinished file as incomplete). A stale
//! temporary is safe to remove when the process that made it is gone: the queue ID in its
//! name carries the creating PID ([`QueueId::pid`]), and a temporary older than an hour
//! can never still be in use (`ipc_timeout`-like bound on one message).
//!
//! **Throughput**: each cleanup process fsyncs its own file; several processes' fsyncs are
//! in flight at once and the file system (ext4's journal) commits them together.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use postern_lib::queue_file::{Envelope, QueueFileWriter, RecipientSpec};
use postern_lib::queue_id::QueueId;

/// Prefix of temporary queue file names.
pub const TEMP_PREFIX: &str = ".cleanup.";

/// Writes and commits the queue file; returns the directory it went to.
pub fn write(
    dir: &str,
    env: &Envelope,
    recipients: &[RecipientSpec],
    header: &[u8],
    body: &[u8],
) -> Result<(), String> {
    let qid: &QueueId = &env.queue_id;
    let tmp = format!("{TEMP_PREFIX}{qid}");
    let dirp = Path::new(dir);
    let file = postern_lib::safe_open::create_excl(dirp, &tmp, 0o600).map_err(|e| e.to_string())?;
    let tmp_path = dirp.join(&tmp);
    let result = fill(file, env, recipients, header, body).and_then(|()| {
        std::fs::rename(&tmp_path, dirp.join(qid.as_str())).map_err(|e| format!("rename {}: {e}", tmp_path.display()))
    });
    if let Err(e) = result {
        // Best effort: the error being returned is what matters.
        let _ = std::fs::remove_file(&tmp_path);
        return Err(e);
    }
    postern_lib::safe_open::fsync_dir(dirp).map_err(|e| e.to_string())
}

fn fill(file: File, env: &Envelope, recipients: &[RecipientSpec], header: &[u8], body: &[u8]) -> Result<(), String> {
    let err = |e: postern_lib::queue_file::QueueFileError| e.to_string();
    let mut w = QueueFileWriter::new(BufWriter::with_capacity(64 * 1024, file), env).map_err(err)?;
    for r in recipients {
        w.add_recipient(r).map_err(err)?;
    }
    w.write_content(header).map_err(err)?;
    w.write_content(b"\n").map_err(err)?;
    w.write_content(body).map_err(err)?;
    let file = w
        .finish()
        .map_err(err)?
        .into_inner()
        .map_err(|e| format!("write: {}", e.error()))?;
    file.sync_data().map_err(|e| format!("fsync: {e}"))
}
