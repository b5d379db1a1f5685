//! Network address patterns for `mynetworks` and client access rules: `127.0.0.0/8`,
//! `[::1]/128`, `::1/128`, `192.0.2.7` (a single host).
//!
//! IPv4-mapped IPv6 clients (`::ffff:192.0.2.7`) match IPv4 patterns, so a dual-stack
//! listener cannot be used to slip past an IPv4 rule.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// One address block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix`, `[v6]/prefix` or a bare address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || format!("bad network {text:?}: expected ADDRESS/PREFIX, e.g. 127.0.0.0/8 or [::1]/128");
        let (addr_part, prefix_part) = match text.rsplit_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr_part = addr_part
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr_part);
        let addr: IpAddr = addr_part.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_part {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` lies inside this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}/{}", self.prefix),
            IpAddr::V6(a) => write!(f, "[{a}]/{}", self.prefix),
        }
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Cidr::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_v4_v6_and_mapped() {
        let n = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(n.contains(ip("127.1.2.3")));
        assert!(!n.contains(ip("128.0.0.1")));
        assert!(n.contains(ip("::ffff:127.0.0.9")));
        let h = Cidr::parse("[::1]/128").unwrap();
        assert!(h.contains(ip("::1")));
        assert!(!h.contains(ip("::2")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert_eq!(Cidr::parse("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example").is_err());
    }
}
