//! Delivery to a virtual user's Maildir: does the user exist (auth's `LookupVirtual`,
//! or the mailbox directory), is there room (quota), then the Maildir write.
//!
//! The connection to auth is kept for the life of the process (one connect and hello per
//! process, not per delivery), and a positive answer (the user exists, with its quota) is
//! believed for [`KNOWN_TTL`], at most [`MAX_KNOWN`] names: a burst of mail to the same
//! users asks auth once. Negative and temporary answers are never remembered.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use postern_lib::ipc::IpcStream;
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use postern_mailbox::maildir_deliver;

use crate::delivery::Outcome;
use postern_lib::dsn::Dsn;

/// How long auth may take to answer a lookup.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a positive answer from auth is believed.
pub const KNOWN_TTL: Duration = Duration::from_secs(5);
/// Most users remembered.
pub const MAX_KNOWN: usize = 1024;

/// What is known of a user.
pub enum Lookup {
    /// The user exists; quota in bytes.
    Exists(Option<u64>),
    /// No such user.
    Unknown,
    /// Could not tell now.
    TempFail(String),
}

/// Asks about users: auth when it listens, else the mailbox directory.
#[derive(Default)]
pub struct Users {
    conn: Option<IpcStream>,
    /// User → (quota, when auth said it exists).
    known: HashMap<String, (Option<u64>, Instant)>,
}

impl Users {
    /// Looks `user` up.
    pub fn lookup(&mut self, base: &Path, user: &str) -> Lookup {
        let now = Instant::now();
        // A fresh answer from auth first: no `stat` of auth's socket per delivery.
        match self.known.get(user) {
            Some((quota, at)) if now.saturating_duration_since(*at) < KNOWN_TTL => return Lookup::Exists(*quota),
            Some(_) => {
                self.known.remove(user);
            }
            None => {}
        }
        if !Path::new(auth::SOCKET).exists() {
            // No auth daemon: a user is one whose mailbox directory exists.
            return match std::fs::symlink_metadata(base.join(user)) {
                Ok(m) if m.is_dir() || m.is_file() => Lookup::Exists(None),
                Ok(_) => Lookup::TempFail(format!("mailbox {user} is not a directory")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lookup::Unknown,
                Err(e) => Lookup::TempFail(format!("mailbox {user}: {e}")),
            };
        }
        let r = self.ask_auth(user);
        if let Lookup::Exists(quota) = r {
            self.remember(user, quota, now);
        }
        r
    }

    fn remember(&mut self, user: &str, quota: Option<u64>, now: Instant) {
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(user) {
            self.known
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < KNOWN_TTL);
            if self.known.len() >= MAX_KNOWN {
                self.known.clear();
            }
        }
        self.known.insert(user.to_string(), (quota, now));
    }

    fn ask_auth(&mut self, user: &str) -> Lookup {
        for _ in 0..2 {
            if self.conn.is_none() {
                let c = UnixStream::connect(auth::SOCKET)
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        IpcStream::client(s, auth::PROTOCOL, auth::VERSION, Some(AUTH_TIMEOUT))
                            .map_err(|e| e.to_string())
                    });
                match c {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => return Lookup::TempFail(format!("auth unavailable: {e}")),
                }
            }
            let Some(c) = self.conn.as_mut() else { continue };
            let req = AuthRequest::LookupVirtual { user: user.to_string() };
            match c.send(&req).and_then(|()| c.recv::<AuthReply>()) {
                Ok(AuthReply::Exists { quota, .. }) => return Lookup::Exists(quota.filter(|q| *q > 0)),
                Ok(AuthReply::NoSuchUser) => return Lookup::Unknown,
                Ok(AuthReply::TempFail { reason }) => return Lookup::TempFail(format!("auth: {reason}")),
                Ok(other) => return Lookup::TempFail(format!("auth: unexpected reply {other:?}")),
                Err(_) => self.conn = None,
            }
        }
        Lookup::TempFail("auth unavailable".into())
    }
}

/// Delivers into `base/user` with `prefix` before the message (`size` bytes), under the
/// deterministic name `once` (see [`maildir_deliver::deliver_once`]); the `fsync` of
/// `new/` is left to `syncs` ([`maildir_deliver::deliver_once_deferred`]).
#[allow(clippy::too_many_arguments)]
pub fn deliver(
    base: &Path,
    user: &str,
    once: &str,
    quota: Option<u64>,
    size: u64,
    prefix: &[u8],
    message: &mut dyn Read,
    syncs: &mut maildir_deliver::DirSyncs,
) -> Outcome {
    if let Some(q) = quota {
        // every folder counts, as for IMAP APPEND and COPY (Dovecot's Maildir++ quota)
        let used = match postern_mailbox::usage(&base.join(user)) {
            Ok(u) => u,
            Err(e) => return Outcome::temp(Dsn::MAIL_SYSTEM, format!("cannot size mailbox: {e}")),
        };
        if used.saturating_add(size).saturating_add(prefix.len() as u64) > q {
            return Outcome::temp(Dsn::MAILBOX_FULL, format!("mailbox full: quota {q} bytes exceeded"));
        }
    }
    match maildir_deliver::deliver_once_deferred(base, user, Some(once), prefix, message, syncs) {
        Ok(d) if d.already => Outcome::sent("delivered to maildir (already there)"),
        Ok(_) => Outcome::sent("delivered to maildir"),
        Err(e) if e.is_no_space() => Outcome::temp(Dsn::MAIL_SYSTEM, format!("cannot write mailbox: {e}")),
        Err(e) => Outcome::temp(Dsn::MAILBOX_STATUS, format!("maildir delivery failed: {e}")),
    }
}
