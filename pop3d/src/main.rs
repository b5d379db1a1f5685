//! # pop3d — the Postern POP3 server
//!
//! RFC 1939 (USER/PASS, STAT, LIST, RETR, DELE, NOOP, RSET, QUIT, TOP, UIDL), RFC 2449
//! CAPA with RESP-CODES and AUTH-RESP-CODE, RFC 5034 AUTH PLAIN, RFC 2595 STLS, and
//! implicit TLS when started with the argument `tls` (the `pop3s` service). Event-driven:
//! one process holds many sessions on lib's connection driver
//! ([`postern_lib::skeleton::conn`]); the protocol core ([`session`]) is sans-I/O.
//!
//! Security stance: passwords go only to auth (`private/auth`), asked from the event
//! loop without blocking; cleartext passwords are accepted only over TLS, from
//! `pop3d_secure_networks` (loopback by default, as Dovecot treats it) or with
//! `pop3d_allow_plaintext = true` — otherwise `-ERR [AUTH] Plaintext authentication
//! disallowed ...`. Command lines are limited to [`session::MAX_LINE`] (longer: `-ERR`
//! and the connection closes); pipelined commands after STLS are discarded. One session
//! per mailbox ([`maildrop`], `-ERR [IN-USE]`); DELE takes effect only at QUIT.
//!
//! Sessions that have not logged in are closed `pop3d_login_timeout` after they connected,
//! whatever they send meanwhile; others after `pop3d_timeout` idle (`-ERR Autologout`).
//! RETR and TOP are streamed from the message file as the client reads ([`retrieve`]), and
//! commands stop being read while [`conn::OUTPUT_HIGH_WATER`] of output is unsent, so a
//! connection holds about 256 KB of output plus a 64 KB chunk whatever the message sizes
//! (a LIST or UIDL answer, one line per message, comes whole).
//! Before login output held per connection is bounded ([`conn::PRELOGIN_HIGH_WATER`]),
//! and unauthenticated connections per client address are capped
//! (`login_client_connection_count_limit`, counted by anvil).
//!
//! Settings read: `virtual_mailbox_base`, `pop3d_tls_cert_file`, `pop3d_tls_key_file`,
//! `pop3d_allow_plaintext`, `pop3d_secure_networks`, `pop3d_timeout`, and the skeleton's.
//!
//! Diagnostics: `login: user=U, client=ADDR, tls=BOOL`, `logout: user=U, deleted=N`,
//! `authentication failed: user=U, client=ADDR` (auth logs the reason).
#![forbid(unsafe_code)]

mod authorization;
mod conn;
mod maildrop;
mod retrieve;
mod service;
mod session;
mod transaction;

use postern_lib::skeleton::event::event_server;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    let implicit_tls = std::env::args().nth(1).is_some_and(|a| a == "tls");
    event_server("pop3d", |ctx| {
        let m = &ctx.main;
        let base = ctx.config.dir.parent().unwrap_or(Path::new("/")).to_path_buf();
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
        };
        let tls = if m.pop3d_tls_cert_file.is_empty() {
            None
        } else {
            let cfg =
                postern_lib::tls::server_config(&resolve(&m.pop3d_tls_cert_file), &resolve(&m.pop3d_tls_key_file))
                    .map_err(|e| e.to_string())?;
            Some(cfg)
        };
        if implicit_tls && tls.is_none() {
            return Err("pop3s (implicit TLS) needs pop3d_tls_cert_file and pop3d_tls_key_file".into());
        }
        Ok(service::Pop3::new(service::Settings {
            tls,
            implicit_tls,
            allow_plaintext: m.pop3d_allow_plaintext,
            secure_networks: m.pop3d_secure_networks.clone(),
            mailbox_base: resolve(&m.virtual_mailbox_base),
            timeout: m.pop3d_timeout.duration(),
            login_timeout: m.pop3d_login_timeout.duration(),
            login_limit: m.login_client_connection_count_limit,
            service: ctx.service.clone(),
        }))
    })
}
