//! # imapd — Postern's IMAP server
//!
//! IMAP4rev1 (RFC 3501) on the Maildir store of `postern_lib::mailbox`, with LITERAL+
//! (RFC 7888), SASL-IR, IDLE (RFC 2177), NAMESPACE, ID, ENABLE, UNSELECT, UIDPLUS
//! (RFC 4315), MOVE (RFC 6851), SPECIAL-USE (RFC 6154) and CHILDREN. Event-driven: many
//! sessions per process on the skeleton's mio loop; protocol code is sans-I/O
//! ([`session`]). Several sessions on one mailbox, in one process or many, see each
//! other's changes through the Maildir itself.
//!
//! Security: passwords are checked by the auth daemon only; cleartext LOGIN and
//! AUTHENTICATE PLAIN are accepted from loopback clients only (TLS is not wired yet, so
//! other clients see LOGINDISABLED). Every line, literal and per-user session count is
//! bounded.
//!
//! Settings read: `virtual_mailbox_base`, `myhostname`, `imapd_max_literal`,
//! `imapd_max_line_length`, `imapd_user_connection_limit`, `imapd_timeout`,
//! `imapd_login_timeout`.
//!
//! Diagnostics: `connect from ADDR`, `login: user=NAME`, `login failed: REASON`,
//! warnings for file-system errors in a mailbox.
#![forbid(unsafe_code)]

mod cmd_fetch;
mod cmd_mailbox;
mod cmd_message;
mod cmd_search;
mod mime;
mod parse;
mod reply;
mod server;
mod session;

use std::process::ExitCode;

fn main() -> ExitCode {
    postern_lib::skeleton::event::event_server("imapd", |ctx| Ok(server::Imapd::new(ctx)))
}
