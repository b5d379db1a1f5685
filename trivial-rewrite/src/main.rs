//! # trivial-rewrite — canonical addresses and recipient routing
//!
//! Serves the [`resolve`](postern_lib::proto::resolve) protocol on `private/rewrite` for
//! qmgr (and any other daemon): `Rewrite` puts an address in canonical form, `Resolve`
//! says which transport and nexthop a recipient goes to. Event-driven: one process holds
//! many clients, each keeping its connection open.
//!
//! Resolution order (Postfix's trivial-rewrite(8)): `virtual_alias_maps` (recursively,
//! with loop and size limits), then for each resulting address the `rewrite_rules` (Sun ONE
//! style, see [`rules`]: a domain pattern and a template that may rewrite the address and
//! pick a channel, i.e. a transport), the address class (`mydestination` →
//! `local_transport`, `relay_domains` → `relay_transport`, else `default_transport`),
//! `transport_maps` (address, domain, `.parent` domains, `*`), then `relayhost` for
//! non-local mail whose nexthop no rule or table set. Tables are plain files reloaded when
//! they change.
//!
//! Not built yet: `canonical_maps`, a `postmap`-like table check command.
//!
//! Settings read: `myorigin`, `mydestination`, `relay_domains`, `relayhost`, `myhostname`,
//! `recipient_delimiter`, `virtual_alias_maps`, `rewrite_rules`, `transport_maps`, `local_transport`,
//! `relay_transport`, `default_transport`.
//!
//! Security stance: runs unprivileged; requests are bounded by the IPC frame limit; the
//! tables are opened with safe_open; every answer is built from validated addresses.
#![forbid(unsafe_code)]

mod resolver;
mod rules;
mod service;

use std::process::ExitCode;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    postern_lib::skeleton::event::event_server("trivial-rewrite", |ctx| {
        let r = resolver::Resolver::new(&ctx.main, &ctx.config.dir).map_err(|e| e.to_string())?;
        Ok(service::server(r))
    })
}
