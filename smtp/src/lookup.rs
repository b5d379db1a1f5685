//! Where to send mail for a nexthop: MX lookup with hickory-resolver.
//!
//! * `domain`: MX records in preference order, random order among equal preferences
//!   (RFC 5321 section 5.1), each exchange's A/AAAA addresses; no MX at all → the
//!   domain's own A/AAAA ("implicit MX"); a null MX (`MX 0 .`, RFC 7505) → the domain
//!   accepts no mail: a permanent failure.
//! * `[host]` or `[host]:port`: no MX lookup, the host's addresses (or a literal address).
//! * `host:port`: same as `[host]:port` (used for relayhost and transport nexthops).
//! * `unix:/path`: a Unix-domain socket (LMTP to a local mailbox server).
//!
//! The port when none is given is 25 for SMTP and 24 for LMTP; LMTP never looks up MX
//! records (a plain domain is a host, as in Postfix's lmtp).
//!
//! hickory-resolver is async-only: the lookups run on a current-thread tokio runtime that
//! exists inside this one process only to wait on DNS; nothing else is async. Name servers
//! come from `/etc/resolv.conf`, or from the `smtp_dns_servers` setting (`["127.0.0.1:5353"]`),
//! which the tests use to aim at a DNS server they start on loopback.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The SMTP port.
pub const SMTP_PORT: u16 = 25;
/// The LMTP port (RFC 2033).
pub const LMTP_PORT: u16 = 24;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// TCP.
    Inet(SocketAddr),
    /// A Unix-domain socket.
    Unix(PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Inet(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One address to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host name (MX exchange or nexthop host), for logs and TLS SNI.
    pub host: String,
    /// Where to connect.
    pub addr: Addr,
}

impl Target {
    /// The `relay=` text of the log: `host[ip]:port`, or `host[/path]` for a socket.
    pub fn relay(&self) -> String {
        match &self.addr {
            Addr::Inet(a) => format!("{}[{}]:{}", self.host, a.ip(), a.port()),
            Addr::Unix(p) => format!("{}[{}]", self.host, p.display()),
        }
    }

    /// `host[ip]` or `host[/path]`, as replies are attributed (`host X[1.2.3.4] said:`).
    pub fn name(&self) -> String {
        match &self.addr {
            Addr::Inet(a) => format!("{}[{}]", self.host, a.ip()),
            Addr::Unix(p) => format!("{}[{}]", self.host, p.display()),
        }
    }
}

/// Why there is nowhere to send the mail.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupError {
    /// A temporary DNS failure (timeout, SERVFAIL): defer.
    #[error("Host or domain name not found. Name service error for name={0}: {1}")]
    Temporary(String, String),
    /// The name does not exist or has no addresses: bounce.
    #[error("Host or domain name not found. Name service error for name={0} type={1}: Host not found")]
    NotFound(String, &'static str),
    /// RFC 7505 null MX: the domain accepts no mail.
    #[error("Domain {0} does not accept mail (nullMX)")]
    NullMx(String),
    /// The nexthop is not a valid name, address or port.
    #[error("bad nexthop {0:?}")]
    BadNexthop(String),
}

/// A parsed nexthop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nexthop {
    /// Look up MX records for this domain.
    Domain(String),
    /// Connect to this host (no MX) on this port.
    Host(String, u16),
    /// Connect to this Unix-domain socket.
    Unix(PathBuf),
}

impl Nexthop {
    /// Parses `domain`, `[host]`, `[host]:port`, `host:port` or `unix:/path`, for SMTP or
    /// (`lmtp`) LMTP: default port 24, no MX lookup.
    pub fn parse_for(text: &str, lmtp: bool) -> Result<Nexthop, LookupError> {
        let bad = || LookupError::BadNexthop(text.to_string());
        if let Some(path) = text.trim().strip_prefix("unix:") {
            if !path.starts_with('/') || path.len() > 100 {
                return Err(bad());
            }
            return Ok(Nexthop::Unix(PathBuf::from(path)));
        }
        let default_port = if lmtp { LMTP_PORT } else { SMTP_PORT };
        let t = text.trim().trim_end_matches('.');
        if let Some(rest) = t.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => default_port,
                None => return Err(bad()),
            };
            return Ok(Nexthop::Host(host.to_ascii_lowercase(), port));
        }
        if let Some((host, port)) = t.rsplit_once(':') {
            return Ok(Nexthop::Host(
                host.to_ascii_lowercase(),
                port.parse().map_err(|_| bad())?,
            ));
        }
        if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
            return Err(bad());
        }
        if lmtp {
            return Ok(Nexthop::Host(t.to_ascii_lowercase(), default_port));
        }
        Ok(Nexthop::Domain(t.to_ascii_lowercase()))
    }
}

/// A resolver with its runtime.
pub struct Dns {
    rt: tokio::runtime::Runtime,
    resolver: TokioResolver,
}

impl Dns {
    /// Builds a resolver: from `servers` (`ADDR:PORT` strings) when given, else the
    /// system's configuration.
    pub fn new(servers: &[String], timeout: Duration) -> Result<Dns, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("dns runtime: {e}"))?;
        let provider = TokioRuntimeProvider::default();
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 2;
        let builder = if servers.is_empty() {
            Resolver::builder(provider).map_err(|e| format!("resolver: {e}"))?
        } else {
            let mut ns = Vec::new();
            for s in servers {
                let sa: SocketAddr = s
                    .parse()
                    .map_err(|_| format!("smtp_dns_servers: {s:?} is not ADDR:PORT"))?;
                let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
                tcp.port = sa.port();
                let mut cfg = NameServerConfig::udp_and_tcp(sa.ip());
                cfg.connections = vec![udp, tcp];
                ns.push(cfg);
            }
            Resolver::builder_with_config(ResolverConfig::from_name_servers(ns), provider)
        };
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| format!("resolver: {e}"))?;
        Ok(Dns { rt, resolver })
    }

    /// The addresses to try for `nexthop`, in order.
    pub fn targets(&self, nexthop: &Nexthop) -> Result<Vec<Target>, LookupError> {
        match nexthop {
            Nexthop::Host(host, port) => self.host_targets(host, *port),
            Nexthop::Unix(path) => Ok(vec![Target {
                host: "localhost".into(),
                addr: Addr::Unix(path.clone()),
            }]),
            Nexthop::Domain(domain) => {
                let exchanges = self.mx(domain)?;
                if exchanges.is_empty() {
                    return self.host_targets(domain, SMTP_PORT);
                }
                let mut out = Vec::new();
                let mut last_err = None;
                for host in exchanges {
                    match self.host_targets(&host, SMTP_PORT) {
                        Ok(t) => out.extend(t),
                        Err(e) => last_err = Some(e),
                    }
                }
                match (out.is_empty(), last_err) {
                    (true, Some(e)) => Err(e),
                    _ => Ok(out),
                }
            }
        }
    }

    /// MX exchanges in the order to try; empty when the domain has no MX records.
    fn mx(&self, domain: &str) -> Result<Vec<String>, LookupError> {
        let fqdn = format!("{domain}.");
        let lookup = self.rt.block_on(self.resolver.mx_lookup(fqdn.as_str()));
        let records = match lookup {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
                    )),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                if e.is_nx_domain() {
                    return Err(LookupError::NotFound(domain.to_string(), "MX"));
                }
                Vec::new()
            }
            Err(e) => return Err(LookupError::Temporary(domain.to_string(), e.to_string())),
        };
        if records.iter().any(|(_, host)| host.is_empty()) {
            return Err(LookupError::NullMx(domain.to_string()));
        }
        Ok(order_by_preference(records, seed()))
    }

    fn host_targets(&self, host: &str, port: u16) -> Result<Vec<Target>, LookupError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![Target {
                host: host.to_string(),
                addr: Addr::Inet(SocketAddr::new(ip, port)),
            }]);
        }
        let fqdn = format!("{host}.");
        match self.rt.block_on(self.resolver.lookup_ip(fqdn.as_str())) {
            Ok(l) => {
                let addrs: Vec<Target> = l
                    .iter()
                    .map(|ip| Target {
                        host: host.to_string(),
                        addr: Addr::Inet(SocketAddr::new(ip, port)),
                    })
                    .collect();
                if addrs.is_empty() {
                    Err(LookupError::NotFound(host.to_string(), "A"))
                } else {
                    Ok(addrs)
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Err(LookupError::NotFound(host.to_string(), "A")),
            Err(e) => Err(LookupError::Temporary(host.to_string(), e.to_string())),
        }
    }
}

/// Sorts by preference, shuffling hosts of equal preference (seeded, so testable).
pub fn order_by_preference(mut records: Vec<(u16, String)>, mut seed: u64) -> Vec<String> {
    records.sort_by_key(|(p, _)| *p);
    let mut out = Vec::with_capacity(records.len());
    let mut i = 0;
    while i < records.len() {
        let pref = records[i].0;
        let mut group: Vec<String> = records[i..]
            .iter()
            .take_while(|(p, _)| *p == pref)
            .map(|(_, h)| h.clone())
            .collect();
        i += group.len();
        // Fisher-Yates with a xorshift generator.
        for k in (1..group.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            group.swap(k, (seed % (k as u64 + 1)) as usize);
        }
        for h in group {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (t ^ u64::from(std::process::id()).rotate_left(32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexthops() {
        assert_eq!(
            Nexthop::parse_for("Example.TEST.", false).unwrap(),
            Nexthop::Domain("example.test".into())
        );
        assert_eq!(
            Nexthop::parse_for("[mx.example.test]", false).unwrap(),
            Nexthop::Host("mx.example.test".into(), 25)
        );
        assert_eq!(
            Nexthop::parse_for("[127.0.0.1]:2526", false).unwrap(),
            Nexthop::Host("127.0.0.1".into(), 2526)
        );
        assert_eq!(
            Nexthop::parse_for("relay.test:587", false).unwrap(),
            Nexthop::Host("relay.test".into(), 587)
        );
        assert!(Nexthop::parse_for("[x]y", false).is_err());
        assert!(Nexthop::parse_for("a b", false).is_err());
        assert!(Nexthop::parse_for("[h]:99999", false).is_err());
        assert_eq!(
            Nexthop::parse_for("unix:/run/lmtp.sock", false).unwrap(),
            Nexthop::Unix("/run/lmtp.sock".into())
        );
        assert!(Nexthop::parse_for("unix:relative", false).is_err());
        assert_eq!(
            Nexthop::parse_for("mail.test", true).unwrap(),
            Nexthop::Host("mail.test".into(), 24)
        );
        assert_eq!(
            Nexthop::parse_for("[127.0.0.1]", true).unwrap(),
            Nexthop::Host("127.0.0.1".into(), 24)
        );
    }

    #[test]
    fn preference_order_with_shuffled_ties() {
        let recs = vec![
            (20, "b".to_string()),
            (10, "a1".into()),
            (10, "a2".into()),
            (30, "c".into()),
        ];
        let mut firsts = std::collections::HashSet::new();
        for seed in 1..50 {
            let o = order_by_preference(recs.clone(), seed);
            assert_eq!(o.len(), 4);
            assert!(o[0].starts_with('a') && o[1].starts_with('a'));
            assert_eq!(&o[2..], ["b", "c"]);
            firsts.insert(o[0].clone());
        }
        assert_eq!(firsts.len(), 2, "equal preferences are tried in random order");
    }
}
