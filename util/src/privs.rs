//! Dropping privileges: from root to the unprivileged `mail_owner`, for good.
//!
//! Order matters and follows what Postfix and OpenSMTPD do: empty the capability bounding
//! set while we still hold CAP_SETPCAP, set no-new-privileges so no later exec can gain
//! any, clear the supplementary groups, set real/effective/saved gid, then uid, then clear
//! every capability set that is left, and finally check from the kernel's view that the
//! drop really happened (a failed drop is fatal, never ignored). Credentials change only
//! through nix, and only while the process is single-threaded.

use caps::CapSet;
use nix::unistd::{Gid, Uid, User};

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivError {
    /// The account does not exist.
    #[error("user {0:?} does not exist")]
    NoSuchUser(String),
    /// The account is root.
    #[error("refusing to run as {0:?}: it is root")]
    IsRoot(String),
    /// A system call failed.
    #[error("cannot drop privileges to {user:?}: {what}: {err}")]
    Sys {
        /// The account.
        user: String,
        /// Which step failed.
        what: &'static str,
        /// The error.
        err: String,
    },
    /// After the drop, the process still holds something it should not.
    #[error("privilege drop to {0:?} did not take effect")]
    Ineffective(String),
}

/// Looks up `name`; returns its uid and gid.
pub fn lookup(name: &str) -> Result<(Uid, Gid), PrivError> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok((u.uid, u.gid)),
        Ok(None) => Err(PrivError::NoSuchUser(name.into())),
        Err(e) => Err(PrivError::Sys {
            user: name.into(),
            what: "getpwnam",
            err: e.to_string(),
        }),
    }
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Drops to `name` irrevocably: no supplementary groups, uid and gid of the account, no
/// capabilities in any set, no-new-privileges.
pub fn drop_to(name: &str) -> Result<(), PrivError> {
    let (uid, gid) = lookup(name)?;
    if uid.is_root() {
        return Err(PrivError::IsRoot(name.into()));
    }
    let sys = |what: &'static str| {
        move |e: String| PrivError::Sys {
            user: name.into(),
            what,
            err: e,
        }
    };
    caps::clear(None, CapSet::Bounding).map_err(|e| sys("clear bounding set")(e.to_string()))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| sys("no_new_privs")(e.to_string()))?;
    nix::unistd::setgroups(&[]).map_err(|e| sys("setgroups")(e.to_string()))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| sys("setresgid")(e.to_string()))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| sys("setresuid")(e.to_string()))?;
    for set in [
        CapSet::Effective,
        CapSet::Permitted,
        CapSet::Inheritable,
        CapSet::Ambient,
    ] {
        caps::clear(None, set).map_err(|e| sys("clear capabilities")(e.to_string()))?;
    }
    verify(uid, gid)
        .then_some(())
        .ok_or_else(|| PrivError::Ineffective(name.into()))
}

fn verify(uid: Uid, gid: Gid) -> bool {
    let ids_ok = nix::unistd::getresuid().is_ok_and(|r| r.real == uid && r.effective == uid && r.saved == uid)
        && nix::unistd::getresgid().is_ok_and(|r| r.real == gid && r.effective == gid && r.saved == gid)
        && nix::unistd::getgroups().is_ok_and(|g| g.is_empty() || g == [gid]);
    let caps_ok = [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable]
        .iter()
        .all(|&s| caps::read(None, s).is_ok_and(|c| c.is_empty()));
    ids_ok && caps_ok && nix::unistd::setuid(Uid::from_raw(0)).is_err()
}
