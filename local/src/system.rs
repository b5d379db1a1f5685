//! Delivery to a system account (`local_system_users = true`): a recipient that is
//! neither a virtual user nor an alias but an /etc/passwd account, as Postfix's local
//! delivers to it.
//!
//! * The account's forward file (`forward_path`, first that exists; `~/` is the home,
//!   and Postfix's `$home` and `$user` are expanded — written `$$home` in main.toml, where
//!   `$` refers to settings; read with the account's rights, owned by it or root, not group or world
//!   writable, a regular file with one link, opened `O_NOFOLLOW | O_NONBLOCK` and checked
//!   on the open descriptor) replaces the mailbox: its targets are returned for the caller
//!   to deliver (commands and files in it run as the account, its `:include:` files are
//!   opened with the account's rights). A forward file that breaks these rules (a symlink,
//!   a FIFO, a hard link, another owner, too large) is ignored with a warning, and mail
//!   goes to the mailbox, as Postfix does.
//! * The mailbox: `home_mailbox` ending in `/` is a Maildir below the home directory
//!   (`Maildir/` → `~/Maildir/`), other text an mbox file there, written with the
//!   account's rights; empty, the mbox `mail_spool_directory/USER` — as Postfix does it:
//!   with the account's rights when the spool is world-writable, with its uid and the
//!   spool's group when it is group-writable (Debian's `/var/mail`, root:mail 2775), else
//!   created by root owned by the account and appended to under root's dot-lock.
//! * root's mail, as Postfix does it: root's mailbox is written with root's rights (no
//!   one else's code runs for that); the commands and files of root's `.forward` (like
//!   those of a root-owned alias or include file) run with `default_privs` instead.
//!
//! All of this needs local to run as root (master.toml `unprivileged = false`). An
//! unprivileged local defers such mail with a reason saying so rather than write it with
//! the wrong owner.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::delivery::Outcome;
use crate::ids::{self, Identity};
use crate::settings::Settings;
use postern_lib::dsn::Dsn;

/// What a system account's delivery came to.
pub enum Delivery {
    /// Finished (or failed) here.
    Done(Outcome),
    /// The account forwards: these targets (as written in the file) replace its mailbox;
    /// its commands and files get the rights of the uid given (the account's).
    Forward(Vec<String>, u32),
}

/// The rights commands and files for `id` use: its own, or `default_privs` for root.
pub fn rights(s: &Settings, id: &Identity) -> Result<Identity, Outcome> {
    if id.uid != 0 {
        return Ok(id.clone());
    }
    match Identity::by_name(&s.default_privs) {
        // Neither root nor mail_owner (whose rights reach the queue), as Postfix demands.
        Ok(Some(d)) if d.uid != 0 && s.mail_owner.as_ref().is_none_or(|o| o.uid != d.uid) => Ok(d),
        Ok(_) => Err(Outcome::temp(
            Dsn::MISCONFIGURED,
            format!(
                "default_privs {:?} must be an unprivileged account other than mail_owner",
                s.default_privs
            ),
        )),
        Err(e) => Err(Outcome::temp(Dsn::MAIL_SYSTEM, e)),
    }
}

/// Runs a mailbox write for `id`: with its rights, or root's for root's own mailbox (as
/// Postfix writes it: no code of anyone else runs, and root's home is root's).
fn with_rights<T>(id: &Identity, work: impl FnOnce() -> T) -> Result<T, String> {
    if id.uid == 0 {
        Ok(ids::as_root(work))
    } else {
        ids::as_account(id, work)
    }
}

/// Why system accounts cannot be delivered to now, if they cannot.
pub fn refuse_unprivileged() -> Option<Outcome> {
    (!ids::can_switch()).then(|| {
        Outcome::temp(
            Dsn::MAIL_SYSTEM,
            "delivery to system accounts needs local to run as root (master.toml: unprivileged = false for local)"
                .into(),
        )
    })
}

/// The forward file of `id`, if it has a usable one.
fn forward_file(s: &Settings, id: &Identity) -> Option<(Vec<String>, u32)> {
    let home = id.home.to_string_lossy();
    for pattern in &s.forward_path {
        let pattern = match pattern.trim().strip_prefix("~/") {
            Some(rest) => format!("{home}/{rest}"),
            None => pattern.clone(),
        };
        let path = pattern
            .replace("${home}", &home)
            .replace("$home", &home)
            .replace("${user}", &id.name)
            .replace("$user", &id.name);
        let path = path.trim();
        if path.is_empty() {
            continue;
        }
        // Opened without following a symlink or blocking on a FIFO, checked on the open
        // descriptor (aliases::read_list); read with the account's rights, root's (which
        // no delivery uses) only for root's.
        let read = || crate::aliases::read_list(path, Some(id.uid));
        let found = if id.uid == 0 {
            Ok(ids::as_root(read))
        } else {
            ids::as_account(id, read)
        };
        match found {
            Ok(Ok(None)) => continue,
            Ok(Ok(Some(list))) => return Some(list),
            Ok(Err(why)) | Err(why) => {
                tracing::warn!("ignoring forward file of {}: {why}; delivering to the mailbox", id.name);
                return None;
            }
        }
    }
    None
}

/// Delivers to the system account `account` (already looked up); `no_forward`: skip its
/// forward file. `prefix` goes before the message.
pub fn deliver(
    s: &Settings,
    account: &Identity,
    no_forward: bool,
    sender: &str,
    once: &str,
    prefix: &[u8],
    message: &mut dyn Read,
) -> Delivery {
    if let Some(o) = refuse_unprivileged() {
        return Delivery::Done(o);
    }
    // Its commands and files run as the account, whoever of it and root owns the file.
    if !no_forward
        && let Some((list, _owner)) = forward_file(s, account)
        && !list.is_empty()
    {
        return Delivery::Forward(list, account.uid);
    }
    Delivery::Done(mailbox(s, account, sender, once, prefix, message))
}

/// The mailbox of `account`, written with its rights.
fn mailbox(
    s: &Settings,
    account: &Identity,
    sender: &str,
    once: &str,
    prefix: &[u8],
    message: &mut dyn Read,
) -> Outcome {
    let id = account;
    let hm = s.home_mailbox.as_str();
    if let Some(dir) = hm.strip_suffix('/') {
        let dir = dir.trim_matches('/');
        if dir.is_empty() || dir.contains('/') {
            return Outcome::temp(
                Dsn::MISCONFIGURED,
                format!("home_mailbox {hm:?}: one directory name expected"),
            );
        }
        let r = with_rights(id, || {
            postern_mailbox::maildir_deliver::deliver_once(&account.home, dir, Some(once), prefix, message)
        });
        return match r {
            Err(e) => Outcome::temp(Dsn::MAIL_SYSTEM, e),
            Ok(Ok(d)) if d.already => Outcome::sent("delivered to maildir (already there)"),
            Ok(Ok(_)) => Outcome::sent("delivered to maildir"),
            Ok(Err(e)) => Outcome::temp(Dsn::MAILBOX_STATUS, format!("maildir delivery failed: {e}")),
        };
    }
    if !hm.is_empty() {
        let path = account.home.join(hm.trim_start_matches('/'));
        let path = path.to_string_lossy().into_owned();
        return with_rights(id, || crate::mbox::append(&path, sender, prefix, message))
            .unwrap_or_else(|e| Outcome::temp(Dsn::MAIL_SYSTEM, e));
    }
    let spool = s.spool_dir();
    let name = account.name.as_str();
    if postern_lib::users::check_name(name).is_err() {
        return Outcome::perm(
            Dsn::BAD_ADDRESS_SYNTAX,
            format!("account name {name:?} cannot be a mailbox file name"),
        );
    }
    let mode = std::fs::metadata(&spool).map(|m| (m.mode(), m.gid()));
    let as_user = |who: &Identity, message: &mut dyn Read| {
        with_rights(who, || {
            crate::mbox::deliver_user(&spool, name, sender, None, 0, prefix, message, s.lock_stale)
        })
        .unwrap_or_else(|e| Outcome::temp(Dsn::MAIL_SYSTEM, e))
    };
    if let Ok((m, _)) = mode
        && m & 0o002 != 0
    {
        // World-writable spool: all as the account.
        as_user(id, message)
    } else if let Ok((m, gid)) = mode
        && m & 0o020 != 0
    {
        // Group-writable (Debian's /var/mail, root:mail 2775): the account's uid with the
        // spool's group, as Postfix does.
        as_user(&Identity { gid, ..id.clone() }, message)
    } else if mode.is_ok() && Path::new(&spool).is_dir() {
        ids::as_root(|| {
            crate::mbox::deliver_spool_as_root(&spool, name, (id.uid, id.gid), sender, prefix, message, s.lock_stale)
        })
    } else {
        Outcome::temp(
            Dsn::MAIL_SYSTEM,
            format!("mail_spool_directory {} is missing", spool.display()),
        )
    }
}
