//! `smtp_tls_policy_maps`: the TLS policy per nexthop, in Postfix's table syntax, read with
//! the table reader the other maps use ([`postern_lib::transport_map::TableSet`]: plain
//! files, reloaded when they change).
//!
//! ```text
//! example.com            encrypt
//! .example.com           may
//! [mx.example.com]:25    verify match=hostname
//! example.net            secure match=nexthop:dot-nexthop
//! ```
//!
//! Keys, in the order tried: for a domain nexthop the domain, then its parent domains
//! with a leading dot (`.example.com` matches the subdomains of example.com, not
//! example.com itself); for `[host]` or `[host]:port` the nexthop as written, and with or
//! without the default port. A value is a level (`none`, `may`, `encrypt`, `verify`,
//! `secure`) and attributes: `match=` names (for verify and secure; see [`crate::tls`]);
//! `protocols=` and `ciphers=` are accepted and ignored (rustls's safe defaults apply).
//! Anything else is a policy error, and mail to that nexthop is deferred, as in Postfix.

use crate::tls::{Level, Policy};
use postern_lib::transport_map::TableSet;
use std::path::PathBuf;

/// The policy tables and the default level.
pub struct PolicyMaps {
    tables: TableSet,
    default: Level,
    default_port: u16,
}

impl PolicyMaps {
    /// Loads the tables now.
    pub fn new(paths: &[PathBuf], default: Level, default_port: u16) -> Result<PolicyMaps, String> {
        let tables = TableSet::load(paths).map_err(|e| format!("smtp_tls_policy_maps: {e}"))?;
        Ok(PolicyMaps {
            tables,
            default,
            default_port,
        })
    }

    /// The policy for `nexthop`; `Err` when its table entry is invalid.
    pub fn lookup(&mut self, nexthop: &str) -> Result<Policy, String> {
        if let Err(e) = self.tables.refresh() {
            tracing::warn!("smtp_tls_policy_maps: {e}; keeping the previous contents");
        }
        if nexthop.starts_with("unix:") {
            // A local socket: nothing to encrypt.
            return Ok(Policy::level(Level::None));
        }
        let found = keys(nexthop, self.default_port)
            .iter()
            .find_map(|k| self.tables.get(k).map(|v| (k.clone(), v.to_string())));
        match found {
            None => Ok(Policy::level(self.default)),
            Some((key, value)) => parse(&value).map_err(|e| format!("invalid TLS policy for {key}: {e}")),
        }
    }
}

/// The lookup keys of a nexthop, in order.
pub fn keys(nexthop: &str, default_port: u16) -> Vec<String> {
    let n = nexthop.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Some(rest) = n.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return vec![n];
        };
        let bare = format!("[{host}]");
        let with_port = format!("[{host}]:{default_port}");
        return match after.strip_prefix(':') {
            Some(p) if p == default_port.to_string() => vec![with_port, bare],
            Some(_) => vec![n.clone()],
            None => vec![bare, with_port],
        };
    }
    if n.contains(':') {
        return vec![n];
    }
    let mut out = vec![n.clone()];
    let mut rest = n.as_str();
    while let Some((_, parent)) = rest.split_once('.') {
        out.push(format!(".{parent}"));
        rest = parent;
    }
    out
}

/// Parses a table value: `level [name=value ...]`.
pub fn parse(value: &str) -> Result<Policy, String> {
    let mut words = value.split_whitespace();
    let level = Level::parse(words.next().unwrap_or(""))?;
    let mut matches = Vec::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("attribute {w:?} is not name=value"))?;
        match k.to_ascii_lowercase().as_str() {
            "match" if level.verified() => {
                matches.extend(v.split(':').filter(|m| !m.is_empty()).map(str::to_ascii_lowercase));
            }
            "match" => return Err(format!("match= is only valid with verify or secure, not {level:?}")),
            "protocols" | "ciphers" => {}
            other => return Err(format!("unknown attribute {other:?}")),
        }
    }
    Ok(Policy { level, matches })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_keys() {
        assert_eq!(
            keys("Sub.Example.com.", 25),
            ["sub.example.com", ".example.com", ".com"]
        );
        assert_eq!(
            keys("[mx.example.com]:25", 25),
            ["[mx.example.com]:25", "[mx.example.com]"]
        );
        assert_eq!(
            keys("[mx.example.com]", 25),
            ["[mx.example.com]", "[mx.example.com]:25"]
        );
        assert_eq!(keys("[127.0.0.1]:2526", 25), ["[127.0.0.1]:2526"]);
        assert_eq!(keys("relay.test:587", 25), ["relay.test:587"]);
    }

    #[test]
    fn values() {
        assert_eq!(parse("encrypt").unwrap(), Policy::level(Level::Encrypt));
        let p = parse("verify match=hostname:mx.example.com protocols=!SSLv2").unwrap();
        assert_eq!(p.level, Level::Verify);
        assert_eq!(p.matches, ["hostname", "mx.example.com"]);
        assert!(parse("dane").is_err());
        assert!(parse("may match=x").is_err());
        assert!(parse("verify tafile=x").is_err());
        assert!(parse("verify junk").is_err());
    }

    #[test]
    fn tables_pick_the_most_specific_entry() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tls_policy");
        std::fs::write(
            &f,
            "example.com encrypt\n.example.com may\n[mx.example.com]:25 verify match=hostname\nbad.test dane\n",
        )
        .unwrap();
        let mut m = PolicyMaps::new(&[f], Level::None, 25).unwrap();
        assert_eq!(m.lookup("example.com").unwrap().level, Level::Encrypt);
        assert_eq!(m.lookup("a.b.example.com").unwrap().level, Level::May);
        assert_eq!(m.lookup("[mx.example.com]").unwrap().level, Level::Verify);
        assert_eq!(m.lookup("other.org").unwrap().level, Level::None);
        assert_eq!(m.lookup("unix:/run/lmtp").unwrap().level, Level::None);
        assert!(m.lookup("bad.test").unwrap_err().contains("bad.test"));
    }
}
