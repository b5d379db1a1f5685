//! `smtpd_sender_login_maps`: who may use which envelope sender, for Postfix's
//! `reject_sender_login_mismatch` family of rules ([`super::policy`]).
//!
//! Each table maps an envelope sender to the SASL login names that own it (separated by
//! commas or white space, compared without case). A plain table (`FILE`, the key/value
//! syntax of `transport_maps`) is searched as Postfix searches it: the full address, the
//! address without its `recipient_delimiter` extension, then — for a domain of
//! `mydestination` — the local part alone (with, then without the extension), then
//! `@domain`. A `regexp:FILE` table (Postfix's regexp_table(5), `$1` substitution) is
//! asked with the full address only. The first table with an answer decides.
//!
//! Tables are read when smtpd starts (a new smtpd process reads the new contents). A
//! table file that does not exist owns nothing (a warning is logged): the rules then
//! refuse every logged-in sender, never let one use any address.

use postern_checks::lookup::LookupTable;
use postern_lib::address::{Address, Destinations};
use postern_lib::transport_map::Table;
use std::path::Path;

#[derive(Debug, Clone)]
enum Map {
    Plain(Table),
    Regexp(LookupTable),
}

/// The loaded `smtpd_sender_login_maps`.
#[derive(Debug, Clone, Default)]
pub struct SenderLoginMaps {
    maps: Vec<Map>,
    destinations: Option<Destinations>,
    delimiter: String,
}

impl SenderLoginMaps {
    /// Loads the tables named in `items` (relative names resolve with `resolve`).
    pub fn load(
        items: &[String],
        resolve: &dyn Fn(&str) -> std::path::PathBuf,
        destinations: &Destinations,
        delimiter: &str,
    ) -> Result<SenderLoginMaps, String> {
        let mut maps = Vec::new();
        for item in items {
            let (regexp, file) = match item.strip_prefix("regexp:") {
                Some(f) => (true, f),
                None => (
                    false,
                    item.strip_prefix("hash:")
                        .or_else(|| item.strip_prefix("texthash:"))
                        .unwrap_or(item),
                ),
            };
            let path = resolve(file);
            if matches!(std::fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
                // Deny-safe: an absent table owns nothing, so the rules refuse every
                // logged-in sender rather than let anyone use any address.
                tracing::warn!(
                    "smtpd_sender_login_maps: {} does not exist: no sender is owned",
                    path.display()
                );
                maps.push(Map::Plain(Table::default()));
                continue;
            }
            maps.push(if regexp {
                Map::Regexp(LookupTable::load(&path).map_err(|e| e.to_string())?)
            } else {
                Map::Plain(Table::load(&path).map_err(|e| e.to_string())?)
            });
        }
        Ok(SenderLoginMaps {
            maps,
            destinations: Some(destinations.clone()),
            delimiter: delimiter.to_string(),
        })
    }

    /// Tables from text, for tests: `(plain, regexp)` contents.
    pub fn from_text(plain: &str, regexp: &str, destinations: &Destinations) -> SenderLoginMaps {
        let mut maps = Vec::new();
        if !plain.is_empty() {
            maps.push(Map::Plain(Table::parse(plain).unwrap_or_default()));
        }
        if let Ok(t) = LookupTable::parse(Path::new("test"), regexp)
            && !regexp.is_empty()
        {
            maps.push(Map::Regexp(t));
        }
        SenderLoginMaps {
            maps,
            destinations: Some(destinations.clone()),
            delimiter: "+".into(),
        }
    }

    /// Whether any table is configured (without one the rules do nothing, as in Postfix).
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// The owners of `sender` as the table gives them (`None`: unknown sender).
    pub fn owners(&self, sender: &Address) -> Option<String> {
        let full = sender.to_string().to_lowercase();
        let local = sender.local.to_lowercase();
        let domain = sender.domain.to_lowercase();
        let bare = match self.delimiter.chars().next() {
            Some(d) => local.split_once(d).map(|(base, _)| base.to_string()),
            None => None,
        };
        let is_local = self.destinations.as_ref().is_some_and(|d| d.is_local_domain(&domain));
        let mut keys = vec![full.clone()];
        if let Some(b) = &bare {
            keys.push(format!("{b}@{domain}"));
        }
        if is_local {
            keys.push(local.clone());
            if let Some(b) = &bare {
                keys.push(b.clone());
            }
        }
        keys.push(format!("@{domain}"));
        self.maps.iter().find_map(|m| match m {
            Map::Plain(t) => keys.iter().find_map(|k| t.get(k)).map(str::to_string),
            Map::Regexp(t) => t.lookup(&full),
        })
    }

    /// Whether `login` is among the owners of `sender`; `None` when the sender is unknown.
    pub fn owned_by(&self, sender: &Address, login: &str) -> Option<bool> {
        let owners = self.owners(sender)?;
        Some(
            owners
                .split([',', ' ', '\t'])
                .filter(|w| !w.is_empty())
                .any(|w| w.eq_ignore_ascii_case(login)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::address::parse_mailbox;

    fn addr(s: &str) -> Address {
        parse_mailbox(s, false).expect("address")
    }

    #[test]
    fn plain_table_search_order() {
        let d = Destinations::new(&["example.test".into()], &[]);
        let m = SenderLoginMaps::from_text(
            "alice@example.org alice\nbob bob, robert\n@shared.example carol dave\n",
            "",
            &d,
        );
        assert_eq!(m.owned_by(&addr("alice@example.org"), "alice"), Some(true));
        assert_eq!(m.owned_by(&addr("alice+x@example.org"), "ALICE"), Some(true));
        assert_eq!(m.owned_by(&addr("alice@example.org"), "bob"), Some(false));
        // A bare local part is a key only for our own domains.
        assert_eq!(m.owned_by(&addr("bob@example.test"), "robert"), Some(true));
        assert_eq!(m.owned_by(&addr("bob@example.org"), "bob"), None);
        assert_eq!(m.owned_by(&addr("x@shared.example"), "dave"), Some(true));
        assert_eq!(m.owned_by(&addr("x@other.example"), "dave"), None);
    }

    #[test]
    fn the_rules_as_postfix() {
        use crate::protocol::policy::{Facts, Rule, Stage, Verdict, evaluate};
        use postern_lib::address::Path as EnvPath;
        let d = Destinations::new(&["example.test".into()], &[]);
        let maps = SenderLoginMaps::from_text("alice@example.test alice\n", "", &d);
        let verdict = |rule: Rule, sender: &EnvPath, login: Option<&str>| {
            let f = Facts {
                client: "192.0.2.1".parse().expect("ip"),
                mynetworks: false,
                authenticated: login.is_some(),
                sender: Some(sender),
                recipient: None,
                known: None,
                login,
                login_maps: &maps,
            };
            match evaluate(&[rule], Stage::Sender, &f) {
                Verdict::Permit => "permit".to_string(),
                Verdict::Reject(r) => String::from_utf8_lossy(&r.to_bytes()).trim_end().to_string(),
            }
        };
        let alice = EnvPath::Addr(addr("alice@example.test"));
        let other = EnvPath::Addr(addr("ceo@example.test"));
        let strict = Rule::RejectSenderLoginMismatch;
        assert_eq!(verdict(strict.clone(), &alice, Some("alice")), "permit");
        assert_eq!(
            verdict(strict.clone(), &alice, Some("bob")),
            "553 5.7.1 <alice@example.test>: Sender address rejected: not owned by user bob"
        );
        assert_eq!(
            verdict(strict.clone(), &other, Some("alice")),
            "553 5.7.1 <ceo@example.test>: Sender address rejected: not owned by user alice"
        );
        assert_eq!(
            verdict(strict.clone(), &alice, None),
            "553 5.7.1 <alice@example.test>: Sender address rejected: not logged in"
        );
        assert_eq!(verdict(strict.clone(), &other, None), "permit");
        assert_eq!(
            verdict(strict, &EnvPath::Null, Some("bob")),
            "permit",
            "the null sender"
        );
        assert_eq!(
            verdict(Rule::RejectKnownSenderLoginMismatch, &other, Some("alice")),
            "permit"
        );
        assert_eq!(
            verdict(Rule::RejectAuthenticatedSenderLoginMismatch, &alice, None),
            "permit"
        );
        assert_eq!(
            verdict(Rule::RejectUnauthenticatedSenderLoginMismatch, &other, Some("x")),
            "permit"
        );
    }

    #[test]
    fn regexp_table_with_groups() {
        let d = Destinations::new(&["example.test".into()], &[]);
        let m = SenderLoginMaps::from_text("", "/^([^@+]+)(\\+[^@]*)?@example\\.test$/ ${1}\n", &d);
        assert_eq!(m.owned_by(&addr("alice@example.test"), "alice"), Some(true));
        assert_eq!(m.owned_by(&addr("alice+tag@example.test"), "alice"), Some(true));
        assert_eq!(m.owned_by(&addr("alice@example.test"), "bob"), Some(false));
        assert_eq!(m.owned_by(&addr("alice@example.org"), "alice"), None);
    }
}
