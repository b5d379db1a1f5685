//! The proxy's program: `proxy pop3` or `proxy imap` (the service's argument) reads its
//! settings and runs [`proxy::service::Proxy`] under the event skeleton. What the proxy
//! does is described in the library's documentation (`src/lib.rs`).
#![forbid(unsafe_code)]

use postern_lib::skeleton::event::event_server;
use proxy::settings::{Kind, Settings};
use std::process::ExitCode;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    let kind = match std::env::args().nth(1).as_deref() {
        Some("pop3") => Kind::Pop3,
        Some("imap") => Kind::Imap,
        other => {
            eprintln!("usage: proxy pop3|imap (got {other:?})");
            return ExitCode::from(2);
        }
    };
    event_server("proxy", |ctx| {
        let cfg = Settings::load(&ctx.main, kind, &ctx.service)?;
        Ok(proxy::service::Proxy::new(cfg))
    })
}
