//! # imapd — Postern's IMAP server
//!
//! IMAP4rev1 (RFC 3501) on the Maildir store of `postern_lib::mailbox`, with LITERAL+
//! (RFC 7888), SASL-IR, IDLE (RFC 2177), NAMESPACE, ID, ENABLE, UNSELECT, UIDPLUS
//! (RFC 4315), MOVE (RFC 6851), SPECIAL-USE (RFC 6154) and CHILDREN. Event-driven: many
//! sessions per process on the skeleton's mio loop; protocol code is sans-I/O
//! ([`session`]). Several sessions on one mailbox, in one process or many, see each
//! other's changes through the Maildir itself.
//!
//! TLS: STARTTLS when `imapd_tls_cert_file` is set; implicit TLS (the `imaps` service)
//! when started with the argument `tls`.
//!
//! Security: passwords are checked by the auth daemon only; cleartext LOGIN and
//! AUTHENTICATE PLAIN are accepted over TLS or from loopback clients only (others see
//! LOGINDISABLED). Input pipelined after STARTTLS is discarded. Every line, literal and
//! per-user session count is bounded.
//!
//! Settings read: `virtual_mailbox_base`, `myhostname`, `imapd_tls_cert_file`,
//! `imapd_tls_key_file`, `imapd_max_literal`, `imapd_max_line_length`,
//! `imapd_user_connection_limit`, `imapd_timeout`, `imapd_login_timeout`.
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
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let implicit_tls = std::env::args().nth(1).is_some_and(|a| a == "tls");
    postern_lib::skeleton::event::event_server("imapd", |ctx| {
        let m = &ctx.main;
        let base = ctx.config.dir.parent().unwrap_or(Path::new("/")).to_path_buf();
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
        };
        let tls = if m.imapd_tls_cert_file.is_empty() {
            None
        } else {
            let cfg =
                postern_lib::tls::server_config(&resolve(&m.imapd_tls_cert_file), &resolve(&m.imapd_tls_key_file))
                    .map_err(|e| e.to_string())?;
            Some(cfg)
        };
        if implicit_tls && tls.is_none() {
            return Err("imaps (implicit TLS) needs imapd_tls_cert_file and imapd_tls_key_file".into());
        }
        Ok(server::Imapd::new(
            ctx,
            resolve(&m.virtual_mailbox_base),
            tls,
            implicit_tls,
        ))
    })
}
