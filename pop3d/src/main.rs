//! pop3d's program: reads its settings and runs [`pop3d::service::Service`] under the event
//! skeleton. What the server does is described in the library's documentation (`src/lib.rs`).
#![forbid(unsafe_code)]

use pop3d::service;
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
        Ok(service::new(service::Settings {
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
