//! Opening files that an attacker may have tampered with: Postfix's `safe_open`, in Rust.
//!
//! Mail software writes into directories that other users can influence (mailbox spools,
//! home directories, queue directories shared with `postdrop`) and often does so with more
//! privilege than those users. Every open of such a file goes through this module:
//!
//! - [`open_read`] and [`open_append`] never follow a symbolic link in the final path
//!   component (`O_NOFOLLOW`), and after opening they `fstat` the descriptor and refuse a
//!   file that is not a regular file, that has more than one hard link, or that is owned by
//!   someone other than [`Expect::uid`]. [`open_append`] also compares the `lstat` taken
//!   before the open with the `fstat` taken after (device and inode), refusing a file that
//!   was replaced in between; with a create mode it first tries `O_CREAT|O_EXCL` and falls
//!   back to opening the existing file with all checks, retrying a bounded number of times
//!   if the file comes and goes.
//! - [`create_excl`] creates a new file with `O_CREAT|O_EXCL|O_NOFOLLOW`.
//! - [`write_atomic`] writes a file under a unique temporary name, fsyncs it, renames it
//!   onto its final name and fsyncs the directory: readers see the old file or the complete
//!   new one, and after a crash the rename is durable or never happened.
//! - [`fsync_dir`] and [`rename_durable`] make renames survive power loss.
//! - [`open_beneath`] opens a relative path strictly inside a directory, refusing any
//!   symbolic link and any `..`, with `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)` and a
//!   component-by-component `O_NOFOLLOW` walk on kernels without `openat2`.
//!
//! Files are opened close-on-exec and `O_NOCTTY`, and with `O_NONBLOCK` until the file
//! type has been checked (cleared afterwards), so a FIFO planted in place of a file cannot
//! block the opener forever.
//!
//! # Attacks that shaped this module
//!
//! - *Symlink attacks*: `ln -s /etc/passwd /var/mail/victim` before a privileged append.
//!   Refused by `O_NOFOLLOW` (final component) and by [`open_beneath`] (every component).
//! - *Hard-link attacks*: `ln /etc/shadow /var/mail/victim` makes the mailbox name point at
//!   another user's file with no symlink involved. Refused by the link-count check.
//! - *Swap races (TOCTOU)*: a file checked with `lstat` and then replaced before `open`.
//!   Every check is made on the opened descriptor (`fstat`), and the append path compares
//!   device and inode with the earlier `lstat`.
//! - *Pre-created files*: an attacker creates the file first so that the victim appends to
//!   a file the attacker owns and can read. Refused by the owner check when the caller says
//!   whom it expects ([`Expect::owner`]).
//! - *Device and FIFO files*: opening `/dev/...` or a FIFO can block or have side effects.
//!   Refused by the regular-file check, with `O_NONBLOCK` during the open.
//! - *Torn writes after a crash*: [`write_atomic`] and [`rename_durable`].
//!
//! The directory arguments themselves (`dir` in [`create_excl`], [`write_atomic`]) are
//! opened normally: they come from configuration, and their safety is the installation's
//! (`postern check` verifies ownership and modes of the queue directories).

mod atomic;
mod beneath;

#[cfg(test)]
mod tests;

pub use atomic::{fsync_dir, rename_durable, write_atomic};
pub use beneath::open_beneath;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use thiserror::Error;

/// How many times [`open_append`] retries when the file appears or disappears under it.
const MAX_RACE_RETRIES: usize = 8;

/// What the opened file must look like beyond the fixed rules (regular file, one link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expect {
    /// The owner the file must have; `None` accepts any owner.
    pub uid: Option<u32>,
}

impl Expect {
    /// Any owner is acceptable.
    pub fn any() -> Self {
        Self { uid: None }
    }

    /// The file must be owned by `uid`.
    pub fn owner(uid: u32) -> Self {
        Self { uid: Some(uid) }
    }

    /// The file must be owned by this process's effective user.
    pub fn current_user() -> Self {
        Self::owner(rustix::process::geteuid().as_raw())
    }
}

/// Errors from the safe open functions.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum SafeOpenError {
    /// A system call failed; `op` names it.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation that failed (`"open"`, `"fstat"`, `"rename"`, ...).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The path (or, for [`open_beneath`], a component of it) is a symbolic link.
    #[error("{}: is a symbolic link", path.display())]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// The file is not a regular file (a directory, FIFO, device or socket).
    #[error("{}: not a regular file ({kind})", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file has more than one hard link, so its name may alias someone else's file.
    #[error("{}: file has {nlink} hard links", path.display())]
    HardLinked {
        /// The path.
        path: PathBuf,
        /// Its link count.
        nlink: u64,
    },
    /// The file's owner is not the expected user.
    #[error("{}: owned by uid {found}, expected uid {expected}", path.display())]
    WrongOwner {
        /// The path.
        path: PathBuf,
        /// The uid required by [`Expect`].
        expected: u32,
        /// The file's owner.
        found: u32,
    },
    /// The file was replaced between the `lstat` check and the open (device or inode
    /// differ), or kept appearing and disappearing beyond the retry limit.
    #[error("{}: file changed while being opened", path.display())]
    Replaced {
        /// The path.
        path: PathBuf,
    },
    /// A file name argument is empty, `.`, `..`, too long, or contains `/` or NUL.
    #[error("invalid file name {name:?}")]
    BadName {
        /// The name as given.
        name: String,
    },
    /// An [`open_beneath`] path is absolute, empty or contains `..`, or resolution tried to
    /// leave the directory.
    #[error("{}: path escapes its directory", path.display())]
    Escapes {
        /// The path.
        path: PathBuf,
    },
}

impl SafeOpenError {
    pub(crate) fn io(op: &'static str, path: &Path, errno: Errno) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source: io::Error::from(errno),
        }
    }
}

type Result<T> = std::result::Result<T, SafeOpenError>;

/// Flags every open here carries.
fn base_flags() -> OFlags {
    OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY
}

/// Opens an existing file for reading, with all checks.
pub fn open_read(path: &Path, expect: &Expect) -> Result<File> {
    let fd = rfs::open(path, OFlags::RDONLY | OFlags::NONBLOCK | base_flags(), Mode::empty())
        .map_err(|e| open_error(path, e))?;
    let st = rfs::fstat(&fd).map_err(|e| SafeOpenError::io("fstat", path, e))?;
    check_stat(path, &st, expect)?;
    finish_open(path, fd)
}

/// Opens an existing file for reading and writing in place (not appending), with all
/// checks — what a delivery agent needs to mark recipients done in a queue file.
pub fn open_update(path: &Path, expect: &Expect) -> Result<File> {
    let fd = rfs::open(path, OFlags::RDWR | OFlags::NONBLOCK | base_flags(), Mode::empty())
        .map_err(|e| open_error(path, e))?;
    let st = rfs::fstat(&fd).map_err(|e| SafeOpenError::io("fstat", path, e))?;
    check_stat(path, &st, expect)?;
    finish_open(path, fd)
}

/// Opens a file for appending, with all checks; with `create_mode`, creates it (mode
/// subject to the umask) if it does not exist.
pub fn open_append(path: &Path, expect: &Expect, create_mode: Option<u32>) -> Result<File> {
    let flags = OFlags::WRONLY | OFlags::APPEND | OFlags::NONBLOCK | base_flags();
    for _ in 0..MAX_RACE_RETRIES {
        if let Some(mode) = create_mode {
            match rfs::open(path, flags | OFlags::CREATE | OFlags::EXCL, Mode::from_raw_mode(mode)) {
                Ok(fd) => {
                    let st = rfs::fstat(&fd).map_err(|e| SafeOpenError::io("fstat", path, e))?;
                    check_stat(path, &st, expect)?;
                    return finish_open(path, fd);
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(open_error(path, e)),
            }
        }
        let before = match rfs::lstat(path) {
            Ok(st) => st,
            Err(Errno::NOENT) if create_mode.is_some() => continue,
            Err(e) => return Err(SafeOpenError::io("lstat", path, e)),
        };
        check_stat(path, &before, expect)?;
        let fd = match rfs::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create_mode.is_some() => continue,
            Err(e) => return Err(open_error(path, e)),
        };
        let after = rfs::fstat(&fd).map_err(|e| SafeOpenError::io("fstat", path, e))?;
        check_stat(path, &after, expect)?;
        if dev_ino(&before) != dev_ino(&after) {
            return Err(SafeOpenError::Replaced { path: path.to_owned() });
        }
        return finish_open(path, fd);
    }
    Err(SafeOpenError::Replaced { path: path.to_owned() })
}

/// Creates `name` in `dir` for reading and writing; fails if anything (even a dangling
/// symlink) already has that name. `mode` is subject to the umask.
pub fn create_excl(dir: &Path, name: &str, mode: u32) -> Result<File> {
    let dirfd = open_dir(dir)?;
    create_excl_at(&dirfd, dir, name, mode)
}

/// [`create_excl`] relative to an open directory; `dir` is used in error messages only.
pub fn create_excl_at(dirfd: impl AsFd, dir: &Path, name: &str, mode: u32) -> Result<File> {
    check_name(name)?;
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | base_flags();
    rfs::openat(dirfd, name, flags, Mode::from_raw_mode(mode))
        .map(File::from)
        .map_err(|e| open_error(&dir.join(name), e))
}

/// Opens a directory (following symlinks: directories come from configuration).
fn open_dir(dir: &Path) -> Result<OwnedFd> {
    rfs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| SafeOpenError::io("open directory", dir, e))
}

/// Refuses names that are not a single plain path component.
fn check_name(name: &str) -> Result<()> {
    let bad =
        name.is_empty() || name == "." || name == ".." || name.len() > 255 || name.bytes().any(|b| b == b'/' || b == 0);
    if bad {
        return Err(SafeOpenError::BadName { name: name.to_owned() });
    }
    Ok(())
}

fn open_error(path: &Path, e: Errno) -> SafeOpenError {
    match e {
        Errno::LOOP => SafeOpenError::Symlink { path: path.to_owned() },
        Errno::NXIO => SafeOpenError::NotRegular {
            path: path.to_owned(),
            kind: "fifo or device",
        },
        _ => SafeOpenError::io("open", path, e),
    }
}

/// Clears `O_NONBLOCK` and hands out the file.
fn finish_open(path: &Path, fd: OwnedFd) -> Result<File> {
    let flags = rfs::fcntl_getfl(&fd).map_err(|e| SafeOpenError::io("fcntl", path, e))?;
    rfs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|e| SafeOpenError::io("fcntl", path, e))?;
    Ok(File::from(fd))
}

/// The fixed rules plus [`Expect`].
fn check_stat(path: &Path, st: &Stat, expect: &Expect) -> Result<()> {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => None,
        FileType::Symlink => return Err(SafeOpenError::Symlink { path: path.to_owned() }),
        FileType::Directory => Some("directory"),
        FileType::Fifo => Some("fifo"),
        FileType::Socket => Some("socket"),
        FileType::CharacterDevice => Some("character device"),
        FileType::BlockDevice => Some("block device"),
        FileType::Unknown => Some("unknown type"),
    };
    if let Some(kind) = kind {
        return Err(SafeOpenError::NotRegular {
            path: path.to_owned(),
            kind,
        });
    }
    let nlink = nlink(st);
    if nlink != 1 {
        return Err(SafeOpenError::HardLinked {
            path: path.to_owned(),
            nlink,
        });
    }
    if let Some(expected) = expect.uid
        && st.st_uid != expected
    {
        return Err(SafeOpenError::WrongOwner {
            path: path.to_owned(),
            expected,
            found: st.st_uid,
        });
    }
    Ok(())
}

// The field types of `Stat` differ between architectures.
#[allow(clippy::useless_conversion)]
fn nlink(st: &Stat) -> u64 {
    u64::from(st.st_nlink)
}

#[allow(clippy::useless_conversion)]
fn dev_ino(st: &Stat) -> (u64, u64) {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}
