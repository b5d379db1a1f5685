//! The layout of `queue_directory`, in one place: which subdirectories exist, who owns them
//! and with which modes. Master creates them at start ([`ensure`]); `postern check` reports
//! deviations ([`check`]) and `postern check --fix` repairs them ([`ensure`] again).
//!
//! | directory | mode | owner | holds |
//! | --- | --- | --- | --- |
//! | `maildrop` | 0730 | mail_owner, group postdrop | locally submitted mail, written only by postdrop |
//! | `incoming active deferred hold corrupt` | 0700 | mail_owner | queue files |
//! | `defer bounce trace` | 0700 | mail_owner | per-message delivery logs |
//! | `spare` | 0700 | mail_owner | finished messages' files kept for reuse ([`crate::queue_spare`]) |
//! | `public` | 0710 | mail_owner, group postdrop | sockets local users may reach (pickup, master) |
//! | `private` | 0700 | mail_owner | sockets between daemons |
//! | `pid` | 0755 | root | master's pid file and lock |
//!
//! The queue directory itself belongs to root when master runs as root (like Postfix's) and
//! must not be writable by group or others, so that mail_owner cannot replace `pid/`.
//! The postdrop group is [`crate::accounts::SETGID_GROUP`] when that group exists, else
//! mail_owner's primary group.
//!
//! When not running as root there is no owner to enforce ([`ensure`] and [`check`] get
//! `None`): every directory belongs to the invoking user and only modes are checked.
//!
//! Security stance: subdirectories are changed through descriptors opened with `O_NOFOLLOW |
//! O_DIRECTORY`, so a symlink planted in place of a directory is reported, never followed
//! or "repaired"; nothing is ever deleted.

use nix::unistd::{Gid, Uid};
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Who a queue subdirectory belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    /// mail_owner and its primary group.
    MailOwner,
    /// mail_owner and the postdrop group.
    MailOwnerSetgid,
    /// root, group root.
    Root,
}

/// Every subdirectory of the queue: name, permission bits, owner.
pub const QUEUE_DIRS: &[(&str, u32, OwnerKind)] = &[
    ("maildrop", 0o730, OwnerKind::MailOwnerSetgid),
    ("incoming", 0o700, OwnerKind::MailOwner),
    ("active", 0o700, OwnerKind::MailOwner),
    ("deferred", 0o700, OwnerKind::MailOwner),
    ("hold", 0o700, OwnerKind::MailOwner),
    ("corrupt", 0o700, OwnerKind::MailOwner),
    ("defer", 0o700, OwnerKind::MailOwner),
    ("bounce", 0o700, OwnerKind::MailOwner),
    ("trace", 0o700, OwnerKind::MailOwner),
    ("spare", 0o700, OwnerKind::MailOwner),
    ("mirror", 0o700, OwnerKind::MailOwner),
    ("public", 0o710, OwnerKind::MailOwnerSetgid),
    ("private", 0o700, OwnerKind::MailOwner),
    ("pid", 0o755, OwnerKind::Root),
];

/// The owners to enforce when running as root (see [`crate::accounts::queue_owner`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueOwner {
    /// mail_owner.
    pub uid: Uid,
    /// mail_owner's primary group.
    pub gid: Gid,
    /// The postdrop group (or `gid` when there is none).
    pub setgid_gid: Gid,
}

impl QueueOwner {
    fn ids(&self, kind: OwnerKind) -> (u32, u32) {
        match kind {
            OwnerKind::MailOwner => (self.uid.as_raw(), self.gid.as_raw()),
            OwnerKind::MailOwnerSetgid => (self.uid.as_raw(), self.setgid_gid.as_raw()),
            OwnerKind::Root => (0, 0),
        }
    }
}

/// A directory could not be created or repaired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueDirError {
    /// mkdir failed.
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The path exists but is not a directory (a symlink, a file).
    #[error("{} is not a directory (a symlink or another file is in its place); move it away", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Opening, chown or chmod failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Fix {
        /// `open`, `chown` or `chmod`.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One deviation from the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The directory.
    pub path: PathBuf,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// What is wrong with a queue directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// It does not exist.
    Missing,
    /// Something else is in its place.
    NotADirectory,
    /// It could not be examined.
    Unreadable(String),
    /// Wrong permission bits.
    Mode {
        /// What it has.
        have: u32,
        /// What it should have (for the queue directory: the bits it must not have).
        want: u32,
    },
    /// Wrong owner or group.
    Owner {
        /// (uid, gid) it has.
        have: (u32, u32),
        /// (uid, gid) it should have.
        want: (u32, u32),
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.kind {
            ProblemKind::Missing => write!(f, "queue directory {p} does not exist"),
            ProblemKind::NotADirectory => {
                write!(f, "{p} is not a directory (a symlink or another file is in its place)")
            }
            ProblemKind::Unreadable(e) => write!(f, "cannot examine {p}: {e}"),
            ProblemKind::Mode { have, want } if self.is_top() => {
                write!(
                    f,
                    "{p} has mode {have:04o}: it must not be writable by group or others (clear {want:04o})"
                )
            }
            ProblemKind::Mode { have, want } => write!(f, "{p} has mode {have:04o}, should be {want:04o}"),
            ProblemKind::Owner { have, want } => {
                write!(f, "{p} is owned by {}, should be {}", ids_name(*have), ids_name(*want))
            }
        }
    }
}

impl Problem {
    fn is_top(&self) -> bool {
        !QUEUE_DIRS
            .iter()
            .any(|(name, _, _)| self.path.file_name().is_some_and(|n| n == *name))
    }
}

/// `uid:gid (user:group)`, names when the databases know them.
fn ids_name((uid, gid): (u32, u32)) -> String {
    let user = nix::unistd::User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    let group = nix::unistd::Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name);
    match (user, group) {
        (Some(u), Some(g)) => format!("{u}:{g} ({uid}:{gid})"),
        _ => format!("{uid}:{gid}"),
    }
}

/// Bits the queue directory itself must not have.
const TOP_FORBIDDEN: u32 = 0o022;

/// Creates what is missing (the queue directory with its parents, then each subdirectory)
/// and repairs modes, and owners when `owner` is given. Stops at the first failure.
pub fn ensure(queue_dir: &Path, owner: Option<QueueOwner>) -> Result<(), QueueDirError> {
    if !queue_dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(queue_dir)
            .map_err(|source| QueueDirError::Create {
                path: queue_dir.into(),
                source,
            })?;
    }
    let top = open_dir(queue_dir, true)?;
    let meta = top.metadata().map_err(|source| fix_err("stat", queue_dir, source))?;
    if owner.is_some() && meta.uid() != 0 {
        std::os::unix::fs::fchown(&top, Some(0), None).map_err(|source| fix_err("chown", queue_dir, source))?;
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & TOP_FORBIDDEN != 0 {
        set_mode(&top, queue_dir, mode & !TOP_FORBIDDEN)?;
    }
    for &(name, mode, kind) in QUEUE_DIRS {
        let path = queue_dir.join(name);
        match DirBuilder::new().mode(mode).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(QueueDirError::Create { path, source }),
        }
        let dir = open_dir(&path, false)?;
        let mut meta = dir.metadata().map_err(|source| fix_err("stat", &path, source))?;
        if let Some(o) = owner {
            let (uid, gid) = o.ids(kind);
            if (meta.uid(), meta.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))
                    .map_err(|source| fix_err("chown", &path, source))?;
                meta = dir.metadata().map_err(|source| fix_err("stat", &path, source))?;
            }
        }
        // mkdir applied the umask; an old directory may have drifted.
        if meta.permissions().mode() & 0o7777 != mode {
            set_mode(&dir, &path, mode)?;
        }
    }
    Ok(())
}

/// Lists every deviation from the layout, one [`Problem`] each; empty when all is well.
pub fn check(queue_dir: &Path, owner: Option<QueueOwner>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut add = |path: &Path, kind| {
        problems.push(Problem {
            path: path.to_path_buf(),
            kind,
        })
    };
    match std::fs::symlink_metadata(queue_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            add(queue_dir, ProblemKind::Missing);
            return problems;
        }
        Err(e) => {
            add(queue_dir, ProblemKind::Unreadable(e.to_string()));
            return problems;
        }
        Ok(m) if !m.is_dir() => {
            // A symlinked queue directory is an administrator's choice; follow it once.
            match std::fs::metadata(queue_dir) {
                Ok(m) if m.is_dir() => check_top(queue_dir, &m, owner, &mut add),
                _ => {
                    add(queue_dir, ProblemKind::NotADirectory);
                    return problems;
                }
            }
        }
        Ok(m) => check_top(queue_dir, &m, owner, &mut add),
    }
    for &(name, mode, kind) in QUEUE_DIRS {
        let path = queue_dir.join(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                add(&path, ProblemKind::Missing);
                continue;
            }
            Err(e) => {
                add(&path, ProblemKind::Unreadable(e.to_string()));
                continue;
            }
        };
        if !meta.is_dir() {
            add(&path, ProblemKind::NotADirectory);
            continue;
        }
        let have = meta.permissions().mode() & 0o7777;
        if have != mode {
            add(&path, ProblemKind::Mode { have, want: mode });
        }
        if let Some(o) = owner {
            let want = o.ids(kind);
            if (meta.uid(), meta.gid()) != want {
                add(
                    &path,
                    ProblemKind::Owner {
                        have: (meta.uid(), meta.gid()),
                        want,
                    },
                );
            }
        }
    }
    problems
}

fn check_top(
    path: &Path,
    meta: &std::fs::Metadata,
    owner: Option<QueueOwner>,
    add: &mut impl FnMut(&Path, ProblemKind),
) {
    let have = meta.permissions().mode() & 0o7777;
    if have & TOP_FORBIDDEN != 0 {
        add(
            path,
            ProblemKind::Mode {
                have,
                want: TOP_FORBIDDEN,
            },
        );
    }
    if owner.is_some() && meta.uid() != 0 {
        add(
            path,
            ProblemKind::Owner {
                have: (meta.uid(), meta.gid()),
                want: (0, meta.gid()),
            },
        );
    }
}

fn fix_err(what: &'static str, path: &Path, source: std::io::Error) -> QueueDirError {
    QueueDirError::Fix {
        what,
        path: path.into(),
        source,
    }
}

/// Opens a directory; without following a symlink at its last component unless `follow`.
fn open_dir(path: &Path, follow: bool) -> Result<File, QueueDirError> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    OpenOptions::new()
        .read(true)
        .custom_flags(nofollow | libc::O_DIRECTORY)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => QueueDirError::NotADirectory { path: path.into() },
            _ => fix_err("open", path, source),
        })
}

fn set_mode(dir: &File, path: &Path, mode: u32) -> Result<(), QueueDirError> {
    dir.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|source| fix_err("chmod", path, source))
}

/// Creates `virtual_mailbox_base` when it is missing: mode 0700, owned by mail_owner when
/// running as root (local delivers there and pop3d/imapd read there, all as mail_owner).
/// Returns whether it created it. An existing path is left alone (a non-directory is an
/// error).
pub fn ensure_mailbox_base(base: &Path, owner: Option<QueueOwner>) -> Result<bool, QueueDirError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::symlink_metadata(base) {
        Ok(m) if m.is_dir() => return Ok(false),
        Ok(_) => {
            return Err(QueueDirError::NotADirectory {
                path: base.to_path_buf(),
            });
        }
        Err(_) => {}
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)
        .map_err(|source| QueueDirError::Create {
            path: base.to_path_buf(),
            source,
        })?;
    if let Some(o) = owner {
        std::os::unix::fs::chown(base, Some(o.uid.as_raw()), Some(o.gid.as_raw())).map_err(|source| {
            QueueDirError::Fix {
                what: "chown",
                path: base.to_path_buf(),
                source,
            }
        })?;
    }
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700)).map_err(|source| QueueDirError::Fix {
        what: "chmod",
        path: base.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// Bytes free to unprivileged writers on the file system that holds `dir` (`statvfs`:
/// `f_bavail × f_frsize`), as Postfix measures its queue for `queue_minfree`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

#[cfg(test)]
mod tests;
