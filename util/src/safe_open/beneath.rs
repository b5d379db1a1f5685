//! Opening a relative path strictly inside a directory, following no symlink.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{Result, SafeOpenError};

/// Opens `path`, relative to the directory `dirfd`, with `flags` (plus `O_CLOEXEC`,
/// `O_NOCTTY`, `O_NOFOLLOW`) and `mode` for creation.
///
/// `path` must be relative, non-empty and free of `..`; no component may be a symbolic
/// link. Uses `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS`; where the kernel lacks `openat2` (`ENOSYS`), it walks the path
/// one component at a time with `O_NOFOLLOW`. The file type is not checked: combine with
/// `fstat` as the caller needs (e.g. [`super::open_read`]'s rules).
pub fn open_beneath(dirfd: impl AsFd, path: &Path, flags: OFlags, mode: u32) -> Result<OwnedFd> {
    check_relative(path)?;
    let flags = flags | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NOFOLLOW;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rfs::openat2(&dirfd, path, flags, Mode::from_raw_mode(mode), resolve) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOSYS) => walk_beneath(dirfd, path, flags, mode),
        Err(e) => Err(beneath_error(path, e)),
    }
}

/// The fallback: open each directory component with `O_PATH|O_DIRECTORY|O_NOFOLLOW`, then
/// the last component with `O_NOFOLLOW`.
pub(super) fn walk_beneath(dirfd: impl AsFd, path: &Path, flags: OFlags, mode: u32) -> Result<OwnedFd> {
    check_relative(path)?;
    let flags = flags | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NOFOLLOW;
    let names: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let Some((last, dirs)) = names.split_last() else {
        return Err(SafeOpenError::Escapes { path: path.to_owned() });
    };
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut current: Option<OwnedFd> = None;
    for name in dirs {
        let parent = current.as_ref().map_or(dirfd.as_fd(), |fd| fd.as_fd());
        let next =
            rfs::openat(parent, *name, dir_flags, Mode::empty()).map_err(|e| walk_error(parent, name, path, e))?;
        current = Some(next);
    }
    let parent = current.as_ref().map_or(dirfd.as_fd(), |fd| fd.as_fd());
    rfs::openat(parent, *last, flags, Mode::from_raw_mode(mode)).map_err(|e| walk_error(parent, last, path, e))
}

/// `O_PATH|O_DIRECTORY|O_NOFOLLOW` reports a symlinked component as `ENOTDIR`: tell the two
/// cases apart with an `lstat` of the component.
fn walk_error(parent: BorrowedFd<'_>, name: &OsStr, path: &Path, e: Errno) -> SafeOpenError {
    if e == Errno::NOTDIR || e == Errno::LOOP {
        let is_link = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
        if is_link {
            return SafeOpenError::Symlink { path: path.to_owned() };
        }
    }
    beneath_error(path, e)
}

fn check_relative(path: &Path) -> Result<()> {
    let mut normal = 0usize;
    for c in path.components() {
        match c {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(SafeOpenError::Escapes { path: path.to_owned() });
            }
        }
    }
    if normal == 0 {
        return Err(SafeOpenError::Escapes { path: path.to_owned() });
    }
    Ok(())
}

fn beneath_error(path: &Path, e: Errno) -> SafeOpenError {
    match e {
        // A symlink met with RESOLVE_NO_SYMLINKS or O_NOFOLLOW.
        Errno::LOOP => SafeOpenError::Symlink { path: path.to_owned() },
        Errno::XDEV => SafeOpenError::Escapes { path: path.to_owned() },
        _ => SafeOpenError::io("open", path, e),
    }
}
