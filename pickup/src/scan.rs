//! One wake-up: read the trigger, walk `maildrop/`, and for each file decide: hand it to
//! cleanup, leave it for later, or move it to `corrupt/`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_lib::maildrop::Reader;
use postern_lib::queue_id::QueueId;
use postern_lib::safe_open::{self, Expect, SafeOpenError};
use postern_lib::skeleton::{Accepted, Context};

use crate::submit::{Outcome, hand_over};

/// Most files handled per wake-up (the next wake-up continues).
const MAX_PER_SCAN: usize = 10_000;

const MAILDROP: &str = "maildrop";
const CORRUPT: &str = "corrupt";

/// Serves one trigger connection: reads its byte(s), then scans the maildrop.
pub fn on_trigger(ctx: &Context, mut conn: Accepted) {
    // The bytes do not matter (W from postdrop or master): any wakes us.
    let _ = conn.stream.set_timeouts(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 64];
    let _ = conn.stream.read(&mut buf);
    drop(conn);
    scan(ctx.main.message_size_limit);
}

/// What became of one file.
enum Next {
    /// Go on with the next file.
    Continue,
    /// Cleanup cannot take mail now: stop this scan.
    Stop,
}

fn scan(limit: u64) {
    let mut names = match std::fs::read_dir(MAILDROP) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .take(MAX_PER_SCAN)
            .collect::<Vec<_>>(),
        Err(e) => {
            tracing::error!("scan {MAILDROP}: {e}");
            return;
        }
    };
    names.sort();
    for name in names {
        if let Next::Stop = one(&name, limit) {
            break;
        }
    }
}

fn one(name: &str, limit: u64) -> Next {
    let path = Path::new(MAILDROP).join(name);
    if QueueId::parse(name).is_err() {
        to_corrupt(&path, name, "file name is not a queue ID");
        return Next::Continue;
    }
    let file = match safe_open::open_read(&path, &Expect::any()) {
        Ok(f) => f,
        Err(SafeOpenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Next::Continue;
        }
        Err(
            e @ (SafeOpenError::Symlink { .. } | SafeOpenError::NotRegular { .. } | SafeOpenError::HardLinked { .. }),
        ) => {
            to_corrupt(&path, name, &e.to_string());
            return Next::Continue;
        }
        Err(e) => {
            tracing::warn!("{}: {e}; will retry", path.display());
            return Next::Continue;
        }
    };
    // Only one pickup runs (maxproc 1), but an old one may still be finishing after a
    // reload: whoever holds the lock owns the file; the other skips it.
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Next::Continue;
    }
    let uid = match file.metadata() {
        // Handed over and removed by the one that held the lock before us.
        Ok(m) if m.nlink() == 0 => return Next::Continue,
        Ok(m) => m.uid(),
        Err(e) => {
            tracing::warn!("{}: fstat: {e}; will retry", path.display());
            return Next::Continue;
        }
    };
    if let Err(e) = Reader::new(&file, limit).and_then(|r| r.verify()) {
        to_corrupt(&path, name, &e.to_string());
        return Next::Continue;
    }
    let reader = match rewind(&file).and_then(|()| Reader::new(&file, limit).map_err(|e| e.to_string())) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("{}: {e}; will retry", path.display());
            return Next::Continue;
        }
    };
    match hand_over(reader, uid) {
        Outcome::Done => {
            if let Err(e) = std::fs::remove_file(&path).and_then(|()| {
                safe_open::fsync_dir(Path::new(MAILDROP)).map_err(|e| std::io::Error::other(e.to_string()))
            }) {
                tracing::error!("remove {}: {e}", path.display());
            }
            Next::Continue
        }
        Outcome::Rejected(reply) => {
            to_corrupt(
                &path,
                name,
                &format!("rejected by cleanup: {reply} (no bounce service yet)"),
            );
            Next::Continue
        }
        Outcome::TempFail(why) => {
            tracing::warn!("{}: cleanup: {why}; will retry", path.display());
            Next::Continue
        }
        Outcome::Unavailable(why) => {
            tracing::warn!("cleanup unavailable: {why}; maildrop files wait for the next wakeup");
            Next::Stop
        }
    }
}

fn rewind(mut f: &File) -> Result<(), String> {
    f.seek(SeekFrom::Start(0)).map(|_| ()).map_err(|e| e.to_string())
}

/// Moves a bad maildrop file to `corrupt/`, with a log line saying why.
fn to_corrupt(path: &Path, name: &str, why: &str) {
    let dest: PathBuf = Path::new(CORRUPT).join(name);
    let shown = postern_lib::strbuf::printable_bounded(path.as_os_str().as_encoded_bytes(), 300);
    match safe_open::rename_durable(path, &dest) {
        Ok(()) => tracing::warn!("{shown}: {why}; moved to {CORRUPT}/"),
        Err(e) => tracing::error!("{shown}: {why}; cannot move it to {CORRUPT}/: {e}"),
    }
}
