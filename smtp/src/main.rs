//! # smtp — the Postern SMTP/LMTP client (delivery agent)
//!
//! Runs under master on `private/smtp` (and `private/lmtp` when the service is named
//! `lmtp`), one delivery job at a time (`single_server`): qmgr sends a deliver request
//! ([`postern_lib::proto::deliver`]) for some recipients of a queued message and one
//! nexthop; smtp resolves the nexthop (MX with preference order and random ties, A/AAAA
//! fallback, null MX, `[host]:port` without MX), connects to each address in turn,
//! speaks ESMTP with opportunistic STARTTLS (or LMTP), and reports per recipient: 2xx sent,
//! 4xx deferred, 5xx bounced, with the remote reply. Delivered and bounced recipients are
//! marked done in the queue file at once ([`postern_lib::agent`]).
//!
//! RFCs: 5321 (SMTP), 3207 (STARTTLS), 1870 (SIZE), 6152 (8BITMIME), 6531 (SMTPUTF8),
//! 2033 (LMTP), 2920 (PIPELINING), 7505 (null MX).
//!
//! Settings read: `smtp_helo_name`, `smtp_connect_timeout`, `smtp_helo_timeout`,
//! `smtp_timeout`, `smtp_tls_security_level`, `smtp_tls_policy_maps`, `smtp_tls_CAfile`,
//! `smtp_dns_servers`, `smtp_connection_cache_time_limit`, `smtp_line_length_limit`,
//! `myhostname`.
//!
//! Security: unprivileged, no listening on the network; replies from servers are bounded;
//! a server that stalls costs this process `smtp_helo_timeout`/`smtp_timeout` and nothing
//! else.
//!
//! PIPELINING (RFC 2920) is used when the server offers it, and each process keeps its
//! last session open for `smtp_connection_cache_time_limit` for the next job to the
//! same nexthop (RSET before reuse; 0 closes it at once). DSN parameters go onward when
//! the server offers DSN ([`dsn`]). The TLS level is per nexthop ([`policy`]).
//!
//! LMTP (service named `lmtp`): LHLO, one reply per accepted recipient after DATA, port 24
//! by default, no MX lookup, and `unix:/path` nexthops for a local mailbox server.
//!
//! Not yet: DANE/MTA-STS, a connection cache shared between processes (the cache is per
//! process), "relayed" success notices for NOTIFY=SUCCESS when the next hop lacks DSN.
#![forbid(unsafe_code)]

mod deliver;
mod dsn;
mod fold;
mod lookup;
mod policy;
mod reply;
mod session;
mod tls;

use postern_lib::skeleton::single::single_server;
use postern_lib::skeleton::{Accepted, Context, Stream};
use std::process::ExitCode;
use std::time::Duration;

struct Agent {
    dns: lookup::Dns,
    params: session::Params,
    policies: policy::PolicyMaps,
    cache: Option<deliver::Cached>,
    cache_limit: Duration,
}

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    single_server("smtp", init, |agent: &mut Agent, _ctx: &Context, conn: Accepted| {
        if let Stream::Unix(s) = conn.stream {
            let Agent {
                dns,
                params,
                policies,
                cache,
                cache_limit,
            } = agent;
            postern_lib::agent::serve(s, Duration::from_secs(3600), |job| {
                let policy = policies.lookup(&job.req.nexthop);
                let cache = deliver::Cache {
                    slot: cache,
                    limit: *cache_limit,
                };
                deliver::deliver(job, dns, params, policy, cache)
            });
        }
    })
}

fn init(ctx: &Context) -> Result<Agent, String> {
    let m = &ctx.main;
    let io_timeout = m.smtp_timeout.duration();
    let dns = lookup::Dns::new(&m.smtp_dns_servers, Duration::from_secs(10))?;
    let dir = &ctx.config.dir;
    let ca_file = (!m.smtp_tls_ca_file.trim().is_empty()).then(|| dir.join(m.smtp_tls_ca_file.trim()));
    let lmtp = ctx.service.starts_with("lmtp/");
    let params = session::Params {
        helo_name: m.smtp_helo_name.clone(),
        connect_timeout: m.smtp_connect_timeout.duration(),
        io_timeout,
        helo_timeout: m.smtp_helo_timeout.duration(),
        tls: tls::Configs::new(ca_file.as_deref())?,
        lmtp,
        line_limit: m.smtp_line_length_limit as usize,
    };
    let tables: Vec<_> = m
        .smtp_tls_policy_maps
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| dir.join(n.trim()))
        .collect();
    let default_port = if lmtp { lookup::LMTP_PORT } else { lookup::SMTP_PORT };
    let policies = policy::PolicyMaps::new(&tables, tls::Level::from(m.smtp_tls_security_level), default_port)?;
    Ok(Agent {
        dns,
        params,
        policies,
        cache: None,
        cache_limit: m.smtp_connection_cache_time_limit.duration(),
    })
}
