//! The system accounts Postern runs as: `mail_owner` (default `postern`) and the `postdrop`
//! group, looked up in the password and group databases, and created when missing.
//!
//! When master starts as root, its unprivileged children run as `mail_owner` and the queue
//! belongs to it ([`crate::queue_dirs`]). If that account does not exist, `postern start`
//! creates it the way a package install does ([`ensure_mail_owner`]): a locked system
//! account with its own group, no home directory and no login shell. Started by a normal
//! user, nothing here changes anything: everything runs as that user.
//!
//! Security stance: account tools are run by absolute path (never through `PATH`), with
//! the name checked first so that it cannot be taken as an option, and only when running as
//! root. The new account is looked up again afterwards: success is what the database says,
//! not what the tool's exit status says.

use nix::unistd::{Gid, Group, Uid, User};
use std::path::Path;
use std::process::Command;

/// The group that may write `maildrop/` and reach `public/`, when it exists; otherwise
/// `mail_owner`'s own group is used.
pub const SETGID_GROUP: &str = "postdrop";

/// Why an account could not be looked up or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The password or group database could not be read.
    #[error("cannot look up {what} {name}: {source}")]
    Lookup {
        /// `user` or `group`.
        what: &'static str,
        /// The name.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// Running as root, and `mail_owner` names no account.
    #[error("mail_owner {0} does not exist (postern start creates it; or: useradd --system --user-group {0})")]
    NoSuchUser(String),
    /// The name is not one an account tool accepts safely.
    #[error("{0:?} is not a valid account name")]
    InvalidName(String),
    /// Neither useradd nor adduser is installed.
    #[error("cannot create account {0}: neither useradd nor adduser is installed")]
    NoTool(String),
    /// The tool failed, or the account is still missing afterwards.
    #[error("cannot create account {name}: {reason}")]
    Create {
        /// The account.
        name: String,
        /// The tool's complaint.
        reason: String,
    },
}

/// Whether this process runs with effective uid 0.
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The uid and primary gid of account `name`, or `None` when it does not exist.
pub fn mail_owner_ids(name: &str) -> Result<Option<(Uid, Gid)>, AccountError> {
    User::from_name(name)
        .map(|u| u.map(|u| (u.uid, u.gid)))
        .map_err(|source| AccountError::Lookup {
            what: "user",
            name: name.into(),
            source,
        })
}

/// The group of `maildrop/` and `public/`: [`SETGID_GROUP`] if it exists, else `fallback`
/// (mail_owner's primary group).
pub fn setgid_group(fallback: Gid) -> Result<Gid, AccountError> {
    Group::from_name(SETGID_GROUP)
        .map(|g| g.map_or(fallback, |g| g.gid))
        .map_err(|source| AccountError::Lookup {
            what: "group",
            name: SETGID_GROUP.into(),
            source,
        })
}

/// Creates `name` as a locked system account with its own group when it is missing and this
/// process is root. Returns whether it created it. Not root: does nothing, returns false.
pub fn ensure_mail_owner(name: &str) -> Result<bool, AccountError> {
    if !running_as_root() || mail_owner_ids(name)?.is_some() {
        return Ok(false);
    }
    let valid = name.len() <= 32
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(AccountError::InvalidName(name.into()));
    }
    let shell = ["/usr/sbin/nologin", "/sbin/nologin"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/bin/false");
    let useradd = ["/usr/sbin/useradd", "/sbin/useradd"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let adduser = ["/usr/sbin/adduser", "/sbin/adduser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let mut cmd = match (useradd, adduser) {
        (Some(tool), _) => {
            let mut c = Command::new(tool);
            c.args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                shell,
                "--",
                name,
            ]);
            c
        }
        (None, Some(tool)) => {
            let mut c = Command::new(tool);
            c.args([
                "--system",
                "--group",
                "--no-create-home",
                "--home",
                "/nonexistent",
                "--shell",
                shell,
                "--disabled-password",
                name,
            ]);
            c
        }
        (None, None) => return Err(AccountError::NoTool(name.into())),
    };
    let create_err = |reason: String| AccountError::Create {
        name: name.into(),
        reason,
    };
    // Several `postern start`s (or tests) may race to create the account: useradd then
    // fails with "already exists" or "cannot lock /etc/passwd". Whoever finds the account
    // there afterwards is content; a lock conflict is retried a few times.
    let mut out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| create_err(e.to_string()))?;
    for _ in 0..20 {
        if out.status.success() {
            break;
        }
        if mail_owner_ids(name)?.is_some() {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| create_err(e.to_string()))?;
    }
    if !out.status.success() && mail_owner_ids(name)?.is_some() {
        return Ok(false);
    }
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg = msg
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        return Err(create_err(format!(
            "{} exited with {}: {msg}",
            cmd.get_program().to_string_lossy(),
            out.status
        )));
    }
    match mail_owner_ids(name)? {
        Some(_) => Ok(true),
        None => Err(create_err(
            "the account tool succeeded but the account is still missing".into(),
        )),
    }
}

/// Who owns the queue: `None` when not running as root (everything belongs to the invoking
/// user); otherwise mail_owner's ids and the setgid group. Root and a missing mail_owner is
/// [`AccountError::NoSuchUser`].
pub fn queue_owner(mail_owner: &str) -> Result<Option<crate::queue_dirs::QueueOwner>, AccountError> {
    if !running_as_root() {
        return Ok(None);
    }
    let (uid, gid) = mail_owner_ids(mail_owner)?.ok_or_else(|| AccountError::NoSuchUser(mail_owner.into()))?;
    let setgid_gid = setgid_group(gid)?;
    Ok(Some(crate::queue_dirs::QueueOwner { uid, gid, setgid_gid }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(
            mail_owner_ids("root").unwrap(),
            Some((Uid::from_raw(0), Gid::from_raw(0)))
        );
        assert_eq!(mail_owner_ids("no-such-user-postern-test").unwrap(), None);
        assert!(setgid_group(Gid::from_raw(4242)).is_ok());
    }

    #[test]
    fn existing_account_is_not_created() {
        assert!(!ensure_mail_owner("root").unwrap());
    }

    #[test]
    fn queue_owner_follows_euid() {
        match queue_owner("root") {
            Ok(None) => assert!(!running_as_root()),
            Ok(Some(o)) => assert!(running_as_root() && o.uid.is_root()),
            Err(e) => panic!("{e}"),
        }
        if running_as_root() {
            assert!(matches!(
                queue_owner("no-such-user-postern-test"),
                Err(AccountError::NoSuchUser(_))
            ));
        }
    }
}
