//! imapd's program: its settings and one call into the event skeleton; the server is the
//! `imapd` library ([`imapd`]).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
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
        Ok(imapd::server::Imapd::new(
            ctx,
            resolve(&m.virtual_mailbox_base),
            tls,
            implicit_tls,
        ))
    })
}
