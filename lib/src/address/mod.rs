//! Mail addresses as SMTP carries them (RFC 5321 section 4.1.2): parsing a path
//! (`<local@domain>`, the null path `<>`, an optional source route), normalising the
//! domain, and deciding whether an address is really ours — in a way the open-relay tricks
//! cannot fool.
//!
//! - [`parse_path`] reads `<...>` at the start of a `MAIL FROM:`/`RCPT TO:` argument and
//!   returns the [`Path`] and the rest (the ESMTP parameters).
//! - [`Address`] holds a local part (as written, quotes removed and the content kept
//!   exactly) and a normalised domain (lower-case, no trailing dot). Its `Display` form
//!   re-quotes the local part when needed.
//! - [`Destinations::classify`] says whether a recipient is for one of our domains,
//!   for a domain we relay to, or for somebody else.
//!
//! # Security stance
//!
//! The attacks that shaped this module are the classic ways to make a relay-checking MTA
//! treat a foreign address as local and then route it onwards:
//!
//! | trick | what a naive check sees | what we decide |
//! | --- | --- | --- |
//! | `user%foreign@local` | domain `local` | [`Class::Routed`]: `%` in the local part is a routing operator |
//! | `foreign!user@local` | domain `local` | [`Class::Routed`]: UUCP bang path |
//! | `"user@foreign"@local` | domain `local` | [`Class::Routed`]: `@` inside a quoted local part |
//! | `@local:user@foreign` | first domain `local` | the source route is stripped (RFC 5321 section 4.1.1.3, appendix C); the destination is `foreign` |
//! | `user@LOCAL.` / `user@Local` | not equal to `local` | the domain is lower-cased and its trailing dot removed before comparison |
//!
//! A [`Class::Routed`] address is never "ours" for relay purposes. Internationalised
//! domains (SMTPUTF8) are compared as lower-cased U-labels; no IDNA (punycode) mapping is
//! done, so `xn--...` and its Unicode form are different domains here. Input is bounded
//! (local part 64 octets, domain 255, path 256 — RFC 5321 section 4.5.3.1) and
//! nothing here panics on any input; a property test feeds it arbitrary bytes.

mod canonical;
#[cfg(test)]
mod tests;

pub use canonical::{canonical, storable};
use std::fmt;
use thiserror::Error;

/// Longest local part (RFC 5321 section 4.5.3.1.1).
pub const MAX_LOCAL: usize = 64;
/// Longest domain (RFC 5321 section 4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest path, brackets included (RFC 5321 section 4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// Why a path could not be parsed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    /// No `<` where the path should start, or no closing `>`.
    #[error("path must be enclosed in <>")]
    NoBrackets,
    /// The local part is not a dot-string or quoted-string.
    #[error("bad local part")]
    BadLocal,
    /// The domain is not a host name or address literal.
    #[error("bad domain")]
    BadDomain,
    /// The source route is malformed.
    #[error("bad source route")]
    BadRoute,
    /// An address without `@domain`.
    #[error("address has no domain")]
    NoDomain,
    /// A part is longer than its RFC 5321 limit.
    #[error("address too long")]
    TooLong,
    /// Non-ASCII characters without SMTPUTF8, or bytes that are not UTF-8.
    #[error("non-ASCII address without SMTPUTF8")]
    NonAscii,
}

/// An address: local part and normalised domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// The local part, unquoted (the content of a quoted string, escapes removed).
    pub local: String,
    /// The domain: lower-case, no trailing dot; `[...]` for an address literal.
    pub domain: String,
}

/// A reverse-path or forward-path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Path {
    /// `<>`: the null sender (bounces).
    Null,
    /// A real address.
    Addr(Address),
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Null => Ok(()),
            Path::Addr(a) => a.fmt(f),
        }
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

impl Address {
    /// Whether the local part must be quoted to be written back (not a dot-atom).
    pub fn local_needs_quotes(&self) -> bool {
        let l = &self.local;
        l.is_empty()
            || l.starts_with('.')
            || l.ends_with('.')
            || l.contains("..")
            || !l.chars().all(|c| c == '.' || is_atext(c))
    }

    /// Whether the local part uses a routing operator (`%`, `!`, `@`): such an address is
    /// never delivered here and never relayed for a client that may not relay.
    pub fn is_routed(&self) -> bool {
        self.local.contains(['%', '!', '@'])
    }

    /// Whether any part is non-ASCII (needs SMTPUTF8).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }

    /// Whether the domain is a fully-qualified host name (at least two labels) or an
    /// address literal (`reject_non_fqdn_*`).
    pub fn is_fqdn(&self) -> bool {
        self.domain.starts_with('[') || self.domain.contains('.')
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.local_needs_quotes() {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        } else {
            f.write_str(&self.local)?;
        }
        write!(f, "@{}", self.domain)
    }
}

/// Parses the path at the start of `input` (`<...>` — leading spaces are not allowed,
/// RFC 5321 has none) and returns it with the rest of the input after `>`. `utf8`
/// allows non-ASCII local parts and domains (SMTPUTF8, RFC 6531). `null_ok` allows `<>`
/// (a reverse-path). `<postmaster>` without a domain is left to the caller (RFC 5321
/// requires RCPT to accept it): it is [`AddressError::NoDomain`] here.
pub fn parse_path(input: &[u8], utf8: bool, null_ok: bool) -> Result<(Path, &[u8]), AddressError> {
    let rest = input.strip_prefix(b"<").ok_or(AddressError::NoBrackets)?;
    let end = find_close(rest).ok_or(AddressError::NoBrackets)?;
    if end + 2 > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    let inner = rest.get(..end).ok_or(AddressError::NoBrackets)?;
    let after = rest.get(end + 1..).unwrap_or_default();
    if inner.is_empty() {
        return if null_ok {
            Ok((Path::Null, after))
        } else {
            Err(AddressError::NoDomain)
        };
    }
    let text = std::str::from_utf8(inner).map_err(|_| AddressError::NonAscii)?;
    if !utf8 && !text.is_ascii() {
        return Err(AddressError::NonAscii);
    }
    let mailbox = strip_route(text, utf8)?;
    let addr = parse_mailbox(mailbox, utf8)?;
    Ok((Path::Addr(addr), after))
}

/// Index of the `>` closing the path, skipping quoted strings.
fn find_close(s: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in s.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == b'>' && !quoted {
            return Some(i);
        }
    }
    None
}

/// Removes an `@a,@b:` source route (RFC 5321: "MUST BE accepted, SHOULD NOT be
/// generated", and the route is to be ignored), checking that its domains are well formed.
fn strip_route(text: &str, utf8: bool) -> Result<&str, AddressError> {
    if !text.starts_with('@') {
        return Ok(text);
    }
    let (route, mailbox) = text.split_once(':').ok_or(AddressError::BadRoute)?;
    for hop in route.split(',') {
        let d = hop.strip_prefix('@').ok_or(AddressError::BadRoute)?;
        normalise_domain(d, utf8).map_err(|_| AddressError::BadRoute)?;
    }
    Ok(mailbox)
}

/// Parses `local@domain` (local part a dot-string or a quoted string).
pub fn parse_mailbox(text: &str, utf8: bool) -> Result<Address, AddressError> {
    if !utf8 && !text.is_ascii() {
        return Err(AddressError::NonAscii);
    }
    let (local, rest) = if let Some(q) = text.strip_prefix('"') {
        let mut local = String::new();
        let mut chars = q.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) if (' '..='~').contains(&e) || (!e.is_ascii() && utf8) => local.push(e),
                    _ => return Err(AddressError::BadLocal),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c if (' '..='~').contains(&c) || (!c.is_ascii() && utf8) => local.push(c),
                _ => return Err(AddressError::BadLocal),
            }
        }
        let end = end.ok_or(AddressError::BadLocal)?;
        let rest = q.get(end + 1..).ok_or(AddressError::BadLocal)?;
        (local, rest)
    } else {
        let at = text.rfind('@').ok_or(AddressError::NoDomain)?;
        let (l, rest) = text.split_at(at);
        if l.is_empty() || l.starts_with('.') || l.ends_with('.') || l.contains("..") {
            return Err(AddressError::BadLocal);
        }
        if !l.chars().all(|c| c == '.' || is_atext(c)) {
            return Err(AddressError::BadLocal);
        }
        (l.to_string(), rest)
    };
    if local.len() > MAX_LOCAL {
        return Err(AddressError::TooLong);
    }
    let domain = rest.strip_prefix('@').ok_or(AddressError::NoDomain)?;
    let domain = normalise_domain(domain, utf8)?;
    Ok(Address { local, domain })
}

/// Checks and normalises a domain: lower-case, one trailing dot removed; an address
/// literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is checked and kept.
pub fn normalise_domain(d: &str, utf8: bool) -> Result<String, AddressError> {
    if d.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    if let Some(lit) = d.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        let ok = if let Some(v6) = lit
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("IPv6:"))
            .and(lit.get(5..))
        {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            lit.parse::<std::net::Ipv4Addr>().is_ok()
        };
        return if ok {
            Ok(format!("[{}]", lit.to_ascii_lowercase().replace("ipv6:", "IPv6:")))
        } else {
            Err(AddressError::BadDomain)
        };
    }
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() {
        return Err(AddressError::BadDomain);
    }
    for label in d.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || (utf8 && !c.is_ascii() && c.is_alphanumeric()));
        if !ok {
            return Err(AddressError::BadDomain);
        }
    }
    if !utf8 && !d.is_ascii() {
        return Err(AddressError::NonAscii);
    }
    Ok(d.to_lowercase())
}

/// Where a recipient goes, as far as relay control is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A domain in `mydestination`: delivered here.
    Local,
    /// A domain in `relay_domains`: we accept it for onward delivery.
    RelayDomain,
    /// Somebody else's domain.
    Foreign,
    /// Our domain, but the local part holds a routing operator (`%`, `!`, `@`): treated as
    /// foreign, never as ours.
    Routed,
}

/// Our domains: `mydestination` and `relay_domains`, normalised once.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    local: Vec<String>,
    relay: Vec<String>,
}

impl Destinations {
    /// Builds the lists (each entry normalised; entries that are not domains are ignored).
    pub fn new(mydestination: &[String], relay_domains: &[String]) -> Self {
        let norm =
            |v: &[String]| -> Vec<String> { v.iter().filter_map(|d| normalise_domain(d.trim(), true).ok()).collect() };
        Self {
            local: norm(mydestination),
            relay: norm(relay_domains),
        }
    }

    /// Whether `domain` (already normalised) is one we deliver locally.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local.iter().any(|d| d == domain)
    }

    /// The domain that a bare `postmaster` (RFC 5321 section 4.5.1: the postmaster of
    /// this host, which a server must accept without a domain) is qualified with so that
    /// it stays here: `hostname` when it is one of our local domains, else the first
    /// `mydestination` domain; `hostname` when there is no local domain at all (a host
    /// that delivers nothing itself has no postmaster of its own).
    pub fn postmaster_domain(&self, hostname: &str) -> String {
        let own = normalise_domain(hostname.trim(), true).unwrap_or_else(|_| hostname.to_lowercase());
        if self.is_local_domain(&own) {
            return own;
        }
        self.local.first().cloned().unwrap_or(own)
    }

    /// Classifies a recipient.
    pub fn classify(&self, addr: &Address) -> Class {
        let ours = if self.is_local_domain(&addr.domain) {
            Class::Local
        } else if self.relay.iter().any(|d| d == &addr.domain) {
            Class::RelayDomain
        } else {
            return Class::Foreign;
        };
        if addr.is_routed() { Class::Routed } else { ours }
    }
}
