//! # auth — the one Postern process that reads password data
//!
//! smtpd, pop3d and imapd ask auth, over the Unix socket `private/auth`, whether a
//! password is right ([`postern_lib::proto::auth`]: `Verify` → `Ok` / `Fail` /
//! `TempFail`) or whether a mailbox exists (`Lookup` → `Exists` / `NoSuchUser`).
//! An event-driven daemon: one mio loop holds many client connections; password hashes
//! (argon2id, sha512/sha256-crypt, yescrypt, bcrypt: [`postern_lib::password`]) are
//! checked on a small bounded pool of threads ([`workers`]) so a slow hash never stalls
//! the others.
//!
//! ## Backends
//! `CONFIG_DIR/users` ([`postern_lib::users`]), re-read when it changes (checked by
//! `stat` at most once a second), and with `auth_system_users = true` the system
//! accounts of `/etc/shadow` (only when master runs as root; virtual users win).
//! Mailbox lookups (`Lookup`, for smtpd's recipient validation) also answer "exists" for
//! /etc/passwd accounts when `local_system_users = true` (local delivers to them);
//! `LookupVirtual` (local's question) answers for `etc/users` only.
//!
//! ## Master users
//! With `auth_master_users_file` (the format of `etc/users`), a login `USER*MASTER`
//! (`auth_master_user_separator`), or SASL PLAIN with authorization identity USER and
//! authentication identity MASTER (pop3d and imapd pass it as `USER` NUL `MASTER`), is
//! checked against MASTER's password in that file and, right and USER existing, logs in
//! as USER — Dovecot's master passdb, used by the POP3/IMAP proxy to reach the backends
//! without the user's password. Failures count in the penalty like any other; without
//! the file the separator means nothing. Logged as `auth ok: user=U, master=M, ...:
//! master user M logged in as U`.
//!
//! ## Security stance
//! * Least privilege: auth runs as `mail_owner` like every unprivileged daemon. The
//!   password files stay readable by root only; a tiny root helper started before the
//!   privilege drop opens them on request and passes the descriptor ([`opener`]).
//! * Brute force: as Dovecot's auth penalty, failures are counted per client address
//!   (IPv6 by /64) in a bounded table; further attempts from that address wait 2 s,
//!   doubling with each failure up to `auth_penalty_max`, before they are checked, and
//!   every failure is answered after `auth_failure_delay`. A success from the address
//!   ends its penalty; a count is forgotten `auth_failure_window` after its last failure.
//!   Nothing is ever locked out: a right password is accepted from every address (at
//!   worst after its own address's penalty), so nobody can lock a user out by guessing
//!   ([`throttle`]). The waits are timers of the event loop, never a sleep.
//! * Passwords never reach a log or argv; request bytes and password strings are zeroed
//!   after use (`zeroize`). (serde_json may copy a password containing JSON escapes
//!   into a scratch buffer that is not zeroed.)
//! * Requests are bounded ([`service::MAX_REQUEST`]), replies left unread are bounded,
//!   the verification queue is bounded (a full queue answers `TempFail`).
//!
//! ## Settings read
//! `auth_system_users`, `local_system_users`, `auth_failure_window`, `auth_failure_delay`,
//! `auth_penalty_max`, `auth_worker_threads`, `auth_master_users_file`,
//! `auth_master_user_separator`, plus the skeleton's (`max_idle`,
//! `max_use`, `mail_owner`, `maillog_file`).
//!
//! ## Diagnostics
//! `auth failure: user=U, client=ADDR, service=S, reason=R` (warning) for every failed
//! attempt; `auth ok: ...` (info); `cannot read password data: ...` (warning; answers
//! `TempFail` until the file is readable, or keeps the last good contents);
//! `reloaded PATH: N users` (info).
//!
//! ## Modules
//! [`backend`], [`opener`], [`throttle`], [`workers`], [`service`] (the handler on lib's
//! framed-IPC server, `postern_lib::ipc::server`). The IPC framing is lib's
//! `postern_lib::ipc::codec`; the non-blocking client for other event daemons is
//! `postern_lib::proto::auth_client`.
#![forbid(unsafe_code)]

pub mod backend;
pub mod opener;
pub mod service;
pub mod throttle;
pub mod workers;
