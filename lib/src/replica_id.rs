//! The identity of a replicated message (issue 15): the `X-Postern-GUID` header a mail hub
//! stamps, and the Maildir base name every mailbox server files the message under.
//!
//! A hub whose cleanup sees a recipient in `replica_domains` removes any `X-Postern-GUID`
//! the message carried and adds one made by [`new_guid`]: 32 lower-case hex digits, the
//! first 8 the hub's arrival time (Unix seconds, 32 bits), the other 24 a hash of the hub's
//! host name, the queue ID, the arrival microseconds, the process and per-process random
//! keys — unique across hubs and restarts. Both replica copies come from one queue file, so
//! they carry the same GUID.
//!
//! A mailbox server keeps the header only from a client in `replica_hub_networks` (cleanup
//! removes it from anyone else), and local delivery then files the message under the base
//! name [`base_name`]: `<arrival secs>.G<guid>.replica` — made from the message alone, so
//! mailbox servers A and B give it the same name (and so the same POP3 UIDL), and a second
//! delivery of it (a lost `250`, a hub retry) finds it in `new/` or `cur/` and adds
//! nothing. [`guid_of_base`] reads the GUID back from such a name
//! (`postern_mailbox::index::guid_of` uses it).

use std::hash::{BuildHasher, Hasher};

/// The header field.
pub const GUID_HEADER: &str = "X-Postern-GUID";

/// The suffix (host part) of a replica base name.
const SUFFIX: &str = ".replica";

/// A new GUID for a message that arrived at `arrival_secs`/`micros` on `host` as
/// `queue_id` (see the module doc).
pub fn new_guid(arrival_secs: u64, micros: u32, host: &str, queue_id: &str) -> String {
    // Random per-process keys (std's hasher seeds) make two hubs that share a host name
    // and a queue ID still differ.
    let mut a = std::collections::hash_map::RandomState::new().build_hasher();
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    for h in [&mut a, &mut b] {
        h.write(host.as_bytes());
        h.write_u8(0);
        h.write(queue_id.as_bytes());
        h.write_u32(micros);
        h.write_u32(std::process::id());
    }
    let (x, y) = (a.finish(), b.finish());
    // 32 bits of time, 96 of hash.
    format!("{:08x}{:016x}{:08x}", arrival_secs as u32, x, y as u32)
}

/// The GUID in a header value: exactly 32 lower-case hex digits (spaces around allowed).
pub fn parse_guid(value: &str) -> Option<&str> {
    let v = value.trim();
    (v.len() == 32 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(v)
}

/// The Maildir base name of a message with this GUID: `<secs>.G<guid>.replica`, `secs`
/// the hub's arrival time held in the GUID's first 8 digits. `None` if `guid` is not one.
pub fn base_name(guid: &str) -> Option<String> {
    let guid = parse_guid(guid)?;
    let secs = u32::from_str_radix(guid.get(..8)?, 16).ok()?;
    Some(format!("{secs}.G{guid}{SUFFIX}"))
}

/// The GUID of a replica base name (with or without its `,S=<size>` fields; without the
/// `:2,` flags), else `None`.
pub fn guid_of_base(base: &str) -> Option<u128> {
    let base = base.split(',').next().unwrap_or(base);
    let rest = base.strip_suffix(SUFFIX)?;
    let (secs, guid) = rest.split_once(".G")?;
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    u128::from_str_radix(parse_guid(guid)?, 16).ok()
}

/// Whether a base name is a replica base name.
pub fn is_replica_base(base: &str) -> bool {
    guid_of_base(base).is_some()
}

/// Whether `address`'s domain is one of `domains` (case-insensitive, exact match).
pub fn in_domains(domains: &[String], address: &str) -> bool {
    let Some((_, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let domain = domain.trim_end_matches('.');
    domains
        .iter()
        .any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_base_names_and_back() {
        let g = new_guid(1_790_000_000, 5, "mh1.example.test", "0Rk3Xq1Z9a01b2c3");
        assert_eq!(parse_guid(&g), Some(g.as_str()));
        assert_ne!(g, new_guid(1_790_000_000, 5, "mh2.example.test", "0Rk3Xq1Z9a01b2c3"));
        let base = base_name(&g).unwrap();
        assert_eq!(base, format!("1790000000.G{g}.replica"));
        assert_eq!(guid_of_base(&base), Some(u128::from_str_radix(&g, 16).unwrap()));
        assert!(is_replica_base(&base));
        assert!(!is_replica_base("1790000000.M5P1Q2.host"));
        assert_eq!(guid_of_base("x.Gabc.replica"), None);
        assert_eq!(
            parse_guid(" 0123456789abcdef0123456789abcdef "),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(parse_guid("0123456789ABCDEF0123456789ABCDEF"), None);
        assert_eq!(parse_guid("0123456789abcdef0123456789abcde"), None);
        assert_eq!(base_name("zz"), None);
    }

    #[test]
    fn replica_domains_match_exactly() {
        let d = vec!["example.test".to_string()];
        assert!(in_domains(&d, "alice@Example.TEST"));
        assert!(in_domains(&d, "alice@example.test."));
        assert!(!in_domains(&d, "alice@sub.example.test"));
        assert!(!in_domains(&d, "alice"));
    }
}
