//! Rewrite rules in the style of the Sun ONE (iPlanet) Messaging Server: a domain pattern
//! and a template that rewrites the address and can pick a channel (a transport), so a site
//! can send a slow domain through its own transport with its own concurrency limits.
//!
//! ```text
//! # domain-pattern   template
//! siroe.com          $U%$D@tcp_siroe-daemon     (user@siroe.com via transport tcp_siroe-daemon)
//! .siroe.com         $U%$H.$D@tcp_siroe-daemon  (any host below siroe.com, same channel)
//! old.example        $U@new.example             (rewrite only; routing continues normally)
//! *                  $U%$D@tcp_local            (everything else; `$*` and `.` also match all)
//! ```
//!
//! Matching: the domain itself, then `.parent` patterns from the longest, then the catch-all.
//! Substitutions: `$U` the local part, `$D` the part of the domain the pattern matched
//! (`siroe.com` for `.siroe.com` against `a.b.siroe.com`), `$H` the part before it (`a.b`),
//! `$$` a dollar sign. A result `LOCAL%DOMAIN@CHANNEL` is the address `LOCAL@DOMAIN` routed
//! through the transport `CHANNEL` with `DOMAIN` as nexthop; `LOCAL@DOMAIN` is a rewritten
//! address that is then routed as any other. Rules are applied once (no re-application,
//! hence no rewrite loops).

use postern_lib::transport_map::TableSet;

/// What a rule made of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new local part.
    pub local: String,
    /// The new domain.
    pub domain: String,
    /// The channel (transport) when the template named one.
    pub channel: Option<String>,
}

/// Finds the rule for `domain` and applies it to `local@domain`.
pub fn apply(rules: &TableSet, local: &str, domain: &str) -> Option<Rewritten> {
    let (template, matched, host) = find(rules, domain)?;
    expand(template, local, matched, host)
}

fn find<'a, 'b>(rules: &'a TableSet, domain: &'b str) -> Option<(&'a str, &'b str, &'b str)> {
    if let Some(t) = rules.get(domain) {
        return Some((t, domain, ""));
    }
    let mut start = 0;
    while let Some(dot) = domain.get(start..).and_then(|d| d.find('.')) {
        let at = start + dot;
        let parent = domain.get(at + 1..).unwrap_or("");
        if let Some(t) = rules.get(&format!(".{parent}")) {
            return Some((t, parent, domain.get(..at).unwrap_or("")));
        }
        start = at + 1;
    }
    ["*", "$*", "."]
        .iter()
        .find_map(|k| rules.get(k))
        .map(|t| (t, domain, ""))
}

fn expand(template: &str, local: &str, matched: &str, host: &str) -> Option<Rewritten> {
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'U' => out.push_str(local),
            'D' => out.push_str(matched),
            'H' => out.push_str(host),
            '$' => out.push('$'),
            _ => return None,
        }
    }
    let (left, right) = out.rsplit_once('@')?;
    if let Some((l, d)) = left.rsplit_once('%') {
        if l.is_empty() || d.is_empty() || right.is_empty() {
            return None;
        }
        return Some(Rewritten {
            local: l.to_string(),
            domain: d.trim_start_matches('.').to_lowercase(),
            channel: Some(right.to_lowercase()),
        });
    }
    if left.is_empty() || right.is_empty() {
        return None;
    }
    Some(Rewritten {
        local: left.to_string(),
        domain: right.to_lowercase(),
        channel: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> (tempfile::TempDir, TableSet) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rules");
        std::fs::write(&p, text).unwrap();
        let set = TableSet::load(&[p]).unwrap();
        (dir, set)
    }

    #[test]
    fn sun_one_templates() {
        let (_d, r) = rules(
            "siroe.com $U%$D@tcp_siroe-daemon\n.siroe.com $U%$H.$D@tcp_siroe-daemon\nold.example $U@new.example\n",
        );
        assert_eq!(
            apply(&r, "joe", "siroe.com"),
            Some(Rewritten {
                local: "joe".into(),
                domain: "siroe.com".into(),
                channel: Some("tcp_siroe-daemon".into())
            })
        );
        let sub = apply(&r, "ann", "a.b.siroe.com").unwrap();
        assert_eq!((sub.local.as_str(), sub.domain.as_str()), ("ann", "a.b.siroe.com"));
        assert_eq!(sub.channel.as_deref(), Some("tcp_siroe-daemon"));
        let old = apply(&r, "x", "old.example").unwrap();
        assert_eq!((old.domain.as_str(), old.channel), ("new.example", None));
        assert_eq!(apply(&r, "x", "other.org"), None);
        let (_d, all) = rules("$* $U%$D@tcp_local\n");
        assert_eq!(
            apply(&all, "x", "other.org").unwrap().channel.as_deref(),
            Some("tcp_local")
        );
        let (_d, bad) = rules("a.test $Q@x\nb.test nothing\n");
        assert_eq!(apply(&bad, "x", "a.test"), None);
        assert_eq!(apply(&bad, "x", "b.test"), None);
    }
}
