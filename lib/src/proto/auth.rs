//! The auth protocol: the one way other daemons learn whether a password is right or a
//! mailbox exists. Only the auth daemon reads `etc/users`.
//!
//! Protocol name `auth`, version 1; requests and replies alternate on one connection,
//! which a client may keep open. Passwords travel only over this local socket
//! (`private/auth`, reachable by mail_owner only) and are never logged.
//!
//! Auth delays failed attempts and counts them per client address and per user (a
//! brute-force throttle); a caller must not add its own delay.

use serde::{Deserialize, Serialize};

/// Protocol name.
pub const PROTOCOL: &str = "auth";
/// Version.
pub const VERSION: u32 = 1;
/// The socket, relative to the queue directory.
pub const SOCKET: &str = "private/auth";

/// The login name to verify for SASL PLAIN's authorization identity `authz` and
/// authentication identity `authc`: `authc` when `authz` is empty or the same, else
/// `authz` NUL `authc` — a master-user login (log in as `authz` with the password of the
/// master user `authc`), which auth accepts only from its master users file.
pub fn plain_login(authz: &str, authc: &str) -> String {
    if authz.is_empty() || authz == authc {
        authc.to_string()
    } else {
        format!("{authz}\0{authc}")
    }
}

/// A question for auth.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthRequest {
    /// Check a password.
    Verify {
        /// The login name as the client gave it.
        user: String,
        /// The password.
        password: String,
        /// `smtp`, `submission`, `pop3` or `imap` (for logs and per-service policy).
        service: String,
        /// The client's address, for the throttle and the log.
        client: Option<String>,
    },
    /// Does this mailbox exist? (recipient validation; no secret is revealed)
    Lookup {
        /// The local part, lower-cased.
        user: String,
    },
    /// Is this a virtual user of `etc/users`? Like `Lookup`, but system accounts (which
    /// `Lookup` counts with `local_system_users`) are not: local asks this to choose
    /// between a virtual mailbox and a system account's.
    LookupVirtual {
        /// The local part, lower-cased.
        user: String,
    },
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthReply {
    /// The password is right; `user` is the canonical account name.
    Ok {
        /// The account.
        user: String,
    },
    /// Wrong name or password, or throttled (the reason is for logs, not for clients).
    Fail {
        /// Why.
        reason: String,
    },
    /// Could not decide now (file unreadable, overload).
    TempFail {
        /// Why.
        reason: String,
    },
    /// Answer to a lookup.
    Exists {
        /// The account.
        user: String,
        /// Its quota in bytes, when it has one.
        quota: Option<u64>,
    },
    /// Answer to a lookup: no such mailbox.
    NoSuchUser,
}
