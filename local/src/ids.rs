//! Whose rights a delivery runs with: accounts from the password database, and the
//! switch of local's effective uid and gid around a delivery when local runs as root.
//!
//! Postfix's local keeps real uid root and changes only its effective ids (`set_eugid`)
//! for each delivery; this does the same with `setresgid`/`setresuid` on the effective
//! ids alone (glibc applies them to every thread). Between deliveries local rests with
//! mail_owner's effective ids ([`rest_as`]: queue files, sockets and virtual mailboxes are
//! mail_owner's, and the shared agent job insists on owning the queue file); a delivery
//! for an account takes that account's uid and gid, with its primary group as the only
//! supplementary group ([`as_account`]); root's own rights are taken only to create a
//! mailbox in a root-owned spool or to start a command that sets its own ids
//! ([`as_root`]). A failure to switch back is fatal (the process exits: master starts a
//! fresh one), so no later delivery can run with a stranger's rights. Not root: nothing
//! is switched and the work runs with local's own rights — the caller decides whether
//! that is acceptable (it is not for system accounts: see `system.rs`).

use std::path::PathBuf;
use std::sync::OnceLock;

use nix::unistd::{Gid, Uid, User};

/// An account whose rights a delivery uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
}

impl Identity {
    fn from_user(u: User) -> Identity {
        Identity {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell.to_string_lossy().into_owned(),
        }
    }

    /// The account called `name`; `Ok(None)` when there is none.
    pub fn by_name(name: &str) -> Result<Option<Identity>, String> {
        if name.is_empty() || name.contains(['/', '\0']) || name.len() > 256 {
            return Ok(None);
        }
        User::from_name(name)
            .map(|u| u.map(Identity::from_user))
            .map_err(|e| format!("passwd lookup of {name}: {e}"))
    }

    /// The account with user ID `uid`.
    pub fn by_uid(uid: u32) -> Result<Option<Identity>, String> {
        User::from_uid(Uid::from_raw(uid))
            .map(|u| u.map(Identity::from_user))
            .map_err(|e| format!("passwd lookup of uid {uid}: {e}"))
    }

    /// The rights local itself has (effective ids).
    pub fn current() -> Identity {
        let uid = nix::unistd::geteuid().as_raw();
        Identity::by_uid(uid).ok().flatten().unwrap_or_else(|| Identity {
            name: uid.to_string(),
            uid,
            gid: nix::unistd::getegid().as_raw(),
            home: PathBuf::from("/"),
            shell: String::new(),
        })
    }
}

/// The effective (uid, gid) local rests with between deliveries when it runs as root.
static REST: OnceLock<(u32, u32)> = OnceLock::new();

/// Whether local runs as root (real uid 0), so it can take on other accounts' rights.
pub fn can_switch() -> bool {
    nix::unistd::getuid().is_root()
}

/// As root: from now on rest with mail_owner's effective ids (`owner`), as every
/// unprivileged daemon runs — queue files, sockets and virtual mailboxes are mail_owner's
/// — with no supplementary groups. Not root: nothing to do.
pub fn rest_as(owner: &Identity) -> Result<(), String> {
    if !can_switch() {
        return Ok(());
    }
    if owner.uid == 0 {
        return Err("mail_owner must not be root".into());
    }
    let _ = REST.set((owner.uid, owner.gid));
    back_to_rest();
    Ok(())
}

fn keep_u() -> Uid {
    Uid::from_raw(u32::MAX)
}

fn keep_g() -> Gid {
    Gid::from_raw(u32::MAX)
}

/// Effective root (real and saved uid are root all along).
fn to_root() -> bool {
    nix::unistd::setresuid(keep_u(), Uid::from_raw(0), keep_u()).is_ok()
        && nix::unistd::setresgid(keep_g(), Gid::from_raw(0), keep_g()).is_ok()
}

/// From effective root to effective `uid`/`gid` with `groups`.
fn set_effective(uid: u32, gid: u32, groups: &[Gid]) -> Result<(), String> {
    nix::unistd::setgroups(groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(keep_g(), Gid::from_raw(gid), keep_g()).map_err(|e| format!("setresgid {gid}: {e}"))?;
    nix::unistd::setresuid(keep_u(), Uid::from_raw(uid), keep_u()).map_err(|e| format!("setresuid {uid}: {e}"))
}

/// Back to the resting ids; exits when that fails (master starts a fresh local).
fn back_to_rest() {
    let ok = to_root()
        && match REST.get() {
            Some(&(uid, gid)) => set_effective(uid, gid, &[]).is_ok() && nix::unistd::geteuid().as_raw() == uid,
            None => nix::unistd::setgroups(&[]).is_ok(),
        };
    if !ok {
        tracing::error!("fatal: cannot switch back to local's own rights after a delivery");
        std::process::exit(1);
    }
}

/// Runs `work` with the effective uid and gid of `id` (when root; else as local itself).
/// Root's rights are never used for the work: an `id` of uid 0 is refused.
pub fn as_account<T>(id: &Identity, work: impl FnOnce() -> T) -> Result<T, String> {
    if !can_switch() {
        return Ok(work());
    }
    if id.uid == 0 {
        return Err(format!("refusing to deliver with root's rights ({})", id.name));
    }
    if !to_root() {
        back_to_rest();
        return Err("cannot regain root to switch accounts".into());
    }
    if let Err(e) = set_effective(id.uid, id.gid, &[Gid::from_raw(id.gid)]) {
        back_to_rest();
        return Err(e);
    }
    let out = work();
    back_to_rest();
    Ok(out)
}

/// Runs `work` as root (when local runs as root; else as itself): creating a mailbox in a
/// spool only root may write, starting a command that sets its own ids.
pub fn as_root<T>(work: impl FnOnce() -> T) -> T {
    if !can_switch() || !to_root() || nix::unistd::setgroups(&[]).is_err() {
        let out = work();
        if can_switch() {
            back_to_rest();
        }
        return out;
    }
    let out = work();
    back_to_rest();
    out
}
