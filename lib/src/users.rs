//! The user database, `CONFIG_DIR/users`: the mailbox accounts that log in over POP3, IMAP
//! and SMTP AUTH.
//!
//! ```text
//! # name:hash[:quota]
//! alice:$argon2id$v=19$m=19456,t=2,p=1$…$…
//! bob:$6$…$…:1073741824
//! ```
//!
//! One user per line, `NAME:HASH` or `NAME:HASH:QUOTA`. `QUOTA` is in bytes; empty or `0`
//! means none. Names are lower-case `[a-z0-9._-]`, 1 to 64 characters, not starting with `.`
//! or `-` (they become directory names under `virtual_mailbox_base`). The hash is any form
//! `postern_password::verify` accepts; `postern user` writes argon2id. Lines starting with
//! `#` and blank lines are comments, and are kept, in place, when the file is rewritten.
//!
//! Security stance: the file holds password hashes, so [`Users::save`] writes it with mode
//! 0600, never readable by group or others, through a temporary file in the same directory
//! that is fsynced and renamed over the old one (then the directory is fsynced), so a crash
//! leaves the old file or the new one, never a mix. The owner of an existing file is kept.
//! [`Users::load`] does not follow a symlink at the file itself, refuses anything but a
//! regular file, and reads at most [`MAX_FILE_SIZE`] bytes. Concurrent editors must
//! serialise themselves (the `postern` command locks the config directory); `save` alone
//! does not.
//!
//! Errors name the file and, for parse errors, the line.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The name of the file inside the config directory.
pub const USERS_FILE: &str = "users";

/// The largest users file [`Users::load`] reads.
pub const MAX_FILE_SIZE: u64 = 64 << 20;

/// The mode [`Users::save`] gives the file.
pub const MODE: u32 = 0o600;

/// The path of the users file of a config directory.
pub fn path(config_dir: &Path) -> PathBuf {
    config_dir.join(USERS_FILE)
}

/// Why the users file or an edit of it was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// The file exists but could not be read (permissions, not a regular file, a symlink,
    /// too large, not UTF-8).
    #[error("{}: cannot read: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A line is malformed.
    #[error("{}:{line}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The new file could not be written; the old one is unchanged.
    #[error("{}: cannot write: {reason}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A user name does not follow the rules.
    #[error("invalid user name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A hash cannot be stored (empty, or holds `:`, white space or control characters).
    #[error("invalid password hash for {name}: {reason}")]
    InvalidHash {
        /// The user.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `add` of a name that is already there.
    #[error("user {0} already exists")]
    Exists(String),
    /// An edit of a name that is not there.
    #[error("no such user {0}")]
    NoSuchUser(String),
}

/// One account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The login name.
    pub name: String,
    /// The password hash.
    pub hash: String,
    /// Mailbox quota in bytes; `None`: unlimited.
    pub quota: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    User(User),
    /// A comment or blank line, kept verbatim.
    Other(String),
}

/// The parsed file: users and comments in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users {
    lines: Vec<Line>,
}

/// Checks a user name against the rules in the module docs.
pub fn check_name(name: &str) -> Result<(), UsersError> {
    let bad = |reason| {
        Err(UsersError::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 64 {
        return bad("longer than 64 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return bad("only a-z, 0-9, '.', '_' and '-' are allowed");
    }
    Ok(())
}

fn check_hash(name: &str, hash: &str) -> Result<(), UsersError> {
    let bad = |reason| {
        Err(UsersError::InvalidHash {
            name: name.to_string(),
            reason,
        })
    };
    if hash.is_empty() {
        return bad("empty");
    }
    if hash.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control()) {
        return bad("contains ':', white space or a control character");
    }
    Ok(())
}

impl Users {
    /// Reads and parses the file. A missing file is an empty database.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let read_err = |reason: String| UsersError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Users::default()),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(read_err("is a symbolic link".into())),
            Err(e) => return Err(read_err(e.to_string())),
        };
        let meta = file.metadata().map_err(|e| read_err(e.to_string()))?;
        if !meta.is_file() {
            return Err(read_err("not a regular file".into()));
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read_err(e.to_string()))?;
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(read_err(format!("larger than {MAX_FILE_SIZE} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| read_err("not UTF-8".into()))?;
        Users::parse(&text).map_err(|(line, reason)| UsersError::Parse {
            path: path.to_path_buf(),
            line,
            reason,
        })
    }

    /// Parses the text of a users file; an error is (1-based line, reason).
    pub fn parse(text: &str) -> Result<Users, (usize, String)> {
        let mut users = Users::default();
        for (n, raw) in text.lines().enumerate() {
            let n = n + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                users.lines.push(Line::Other(raw.to_string()));
                continue;
            }
            let mut fields = raw.split(':');
            let name = fields.next().unwrap_or_default();
            let hash = fields
                .next()
                .ok_or((n, "expected NAME:HASH or NAME:HASH:QUOTA".to_string()))?;
            let quota = fields.next();
            if fields.next().is_some() {
                return Err((n, "too many ':' fields: expected NAME:HASH or NAME:HASH:QUOTA".into()));
            }
            check_name(name).map_err(|e| (n, e.to_string()))?;
            check_hash(name, hash).map_err(|e| (n, e.to_string()))?;
            let quota = match quota {
                None | Some("") | Some("0") => None,
                Some(q) => Some(parse_quota(q).ok_or((n, format!("quota {q:?} is not a number of bytes")))?),
            };
            if users.get(name).is_some() {
                return Err((n, format!("user {name} is listed twice")));
            }
            users.lines.push(Line::User(User {
                name: name.into(),
                hash: hash.into(),
                quota,
            }));
        }
        Ok(users)
    }

    /// The file's text: users and comments in their order, one per line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Other(text) => out.push_str(text),
                Line::User(u) => {
                    out.push_str(&u.name);
                    out.push(':');
                    out.push_str(&u.hash);
                    if let Some(q) = u.quota {
                        out.push(':');
                        out.push_str(&q.to_string());
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// The users in file order.
    pub fn list(&self) -> impl Iterator<Item = &User> {
        self.lines.iter().filter_map(|l| match l {
            Line::User(u) => Some(u),
            Line::Other(_) => None,
        })
    }

    /// The user called `name`.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.list().find(|u| u.name == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut User> {
        self.lines.iter_mut().find_map(|l| match l {
            Line::User(u) if u.name == name => Some(u),
            _ => None,
        })
    }

    /// Adds a user at the end of the file.
    pub fn add(&mut self, name: &str, hash: &str, quota: Option<u64>) -> Result<(), UsersError> {
        check_name(name)?;
        check_hash(name, hash)?;
        if self.get(name).is_some() {
            return Err(UsersError::Exists(name.into()));
        }
        let quota = quota.filter(|&q| q != 0);
        self.lines.push(Line::User(User {
            name: name.into(),
            hash: hash.into(),
            quota,
        }));
        Ok(())
    }

    /// Replaces the password hash of an existing user.
    pub fn set_password(&mut self, name: &str, hash: &str) -> Result<(), UsersError> {
        check_hash(name, hash)?;
        let user = self.get_mut(name).ok_or_else(|| UsersError::NoSuchUser(name.into()))?;
        user.hash = hash.into();
        Ok(())
    }

    /// Sets or clears (`None` or `Some(0)`) the quota of an existing user.
    pub fn set_quota(&mut self, name: &str, quota: Option<u64>) -> Result<(), UsersError> {
        let user = self.get_mut(name).ok_or_else(|| UsersError::NoSuchUser(name.into()))?;
        user.quota = quota.filter(|&q| q != 0);
        Ok(())
    }

    /// Removes a user; comments stay.
    pub fn remove(&mut self, name: &str) -> Result<User, UsersError> {
        let at = self
            .lines
            .iter()
            .position(|l| matches!(l, Line::User(u) if u.name == name))
            .ok_or_else(|| UsersError::NoSuchUser(name.into()))?;
        match self.lines.remove(at) {
            Line::User(u) => Ok(u),
            Line::Other(_) => Err(UsersError::NoSuchUser(name.into())),
        }
    }

    /// Writes the file atomically with mode 0600, keeping the owner of the file it replaces.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        write_atomic(path, self.to_text().as_bytes()).map_err(|reason| UsersError::Write {
            path: path.to_path_buf(),
            reason,
        })
    }
}

/// Parses a quota: a number of bytes.
pub fn parse_quota(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Replaces `path` through [`crate::safe_open::write_atomic`] with mode 0600 and the owner
/// of the file it replaces.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("not a file name in UTF-8")?;
    let old_owner = match std::fs::symlink_metadata(path) {
        Ok(m) => Some((m.uid(), m.gid())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.to_string()),
    };
    crate::safe_open::write_atomic(dir, name, MODE, |file| {
        if let Some((uid, gid)) = old_owner {
            let meta = file.metadata()?;
            if (meta.uid(), meta.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&*file, Some(uid), Some(gid))?;
            }
        }
        // Exactly 0600, whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(MODE))?;
        file.write_all(data)
    })
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
