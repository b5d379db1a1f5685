//! Durable replacement of files: write-fsync-rename-fsync.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self as rfs, AtFlags, OFlags};
use rustix::io::Errno;

use super::{Result, SafeOpenError, check_name, create_excl_at, open_dir};

/// Makes temporary names unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many temporary names to try before giving up.
const MAX_TEMP_TRIES: usize = 16;

/// Writes `dir/final_name` atomically and durably.
///
/// Creates `.tmp.<pid>.<counter>.<final_name>` in `dir` with `O_EXCL` and `mode` (subject
/// to the umask), calls `write` on it, fsyncs it, renames it onto `final_name` (replacing
/// any existing file of that name) and fsyncs `dir`. If anything before the rename fails,
/// the temporary file is removed and the error returned; `final_name` is untouched. If only
/// the final directory fsync fails, the new file is in place but its durability is not
/// guaranteed, and the error says so (`op` is `"fsync directory"`).
pub fn write_atomic(
    dir: &Path,
    final_name: &str,
    mode: u32,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    check_name(final_name)?;
    let dirfd = open_dir(dir)?;
    let (tmp_name, mut file) = create_temp(&dirfd, dir, final_name, mode)?;
    let tmp_path = dir.join(&tmp_name);
    let result = write(&mut file)
        .map_err(|source| SafeOpenError::Io {
            op: "write",
            path: tmp_path.clone(),
            source,
        })
        .and_then(|()| {
            file.sync_all().map_err(|source| SafeOpenError::Io {
                op: "fsync",
                path: tmp_path.clone(),
                source,
            })
        })
        .and_then(|()| {
            rfs::renameat(&dirfd, tmp_name.as_str(), &dirfd, final_name)
                .map_err(|e| SafeOpenError::io("rename", &tmp_path, e))
        });
    if let Err(e) = result {
        drop(file);
        // Best effort: the error that matters is the one being returned.
        let _ = rfs::unlinkat(&dirfd, tmp_name.as_str(), AtFlags::empty());
        return Err(e);
    }
    rfs::fsync(&dirfd).map_err(|e| SafeOpenError::io("fsync directory", dir, e))
}

fn create_temp(dirfd: &std::os::fd::OwnedFd, dir: &Path, final_name: &str, mode: u32) -> Result<(String, File)> {
    let pid = std::process::id();
    for _ in 0..MAX_TEMP_TRIES {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(".tmp.{pid}.{n}.{final_name}");
        match create_excl_at(dirfd, dir, &name, mode) {
            Ok(file) => return Ok((name, file)),
            // Left over from an earlier process with the same pid: try the next number.
            Err(SafeOpenError::Io { ref source, .. }) if source.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {
            }
            Err(e) => return Err(e),
        }
    }
    Err(SafeOpenError::Replaced {
        path: dir.join(final_name),
    })
}

/// Fsyncs a directory, making renames and creations in it durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let fd = rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        rfs::Mode::empty(),
    )
    .map_err(|e| SafeOpenError::io("open directory", dir, e))?;
    rfs::fsync(&fd).map_err(|e| SafeOpenError::io("fsync directory", dir, e))
}

/// Renames `from` to `to`, then fsyncs the directory of `to` and, when it is a different
/// path, the directory of `from`, so the move survives a crash.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    rfs::rename(from, to).map_err(|e| SafeOpenError::io("rename", from, e))?;
    let to_dir = parent(to);
    fsync_dir(to_dir)?;
    let from_dir = parent(from);
    if from_dir != to_dir {
        fsync_dir(from_dir)?;
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
