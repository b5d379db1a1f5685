//! imapd's program: its settings and one call into the event skeleton; the server is the
//! `imapd` library ([`imapd`]).
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    let implicit_tls = std::env::args().nth(1).is_some_and(|a| a == "tls");
    postern_lib::skeleton::event::event_server("imapd", |ctx| {
        // Paths are absolute: the loader resolved them (postern_lib::config::paths).
        let m = &ctx.main;
        imapd::transcript::configure(&m.imapd_transcript_users, m.imapd_transcript_directory.path());
        let tls = if m.imapd_tls_cert_file.is_empty() {
            None
        } else {
            let cfg = postern_lib::tls::server_config(m.imapd_tls_cert_file.path(), m.imapd_tls_key_file.path())
                .map_err(|e| e.to_string())?;
            Some(cfg)
        };
        if implicit_tls && tls.is_none() {
            return Err("imaps (implicit TLS) needs imapd_tls_cert_file and imapd_tls_key_file".into());
        }
        Ok(imapd::server::Imapd::new(
            ctx,
            m.virtual_mailbox_base.path().to_path_buf(),
            tls,
            implicit_tls,
        ))
    })
}
