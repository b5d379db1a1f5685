//! The rewriting and resolving logic, without I/O apart from reading the tables: an
//! address in, a canonical address or a list of routes out.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use postern_lib::address::{Class, Destinations, canonical, parse_mailbox};
use postern_lib::config::MainConfig;
use postern_lib::dsn::Dsn;
use postern_lib::proto::resolve::{AddressClass, ERROR_TRANSPORT, MAX_ROUTES, ResolveReply, Route};
use postern_lib::transport_map::{TableError, TableSet, split_transport, transport_lookup};

/// How deep virtual aliases may nest.
const MAX_ALIAS_DEPTH: usize = 20;

/// What trivial-rewrite knows.
pub struct Resolver {
    myorigin: String,
    myhostname: String,
    relayhost: String,
    delimiter: String,
    local_transport: String,
    relay_transport: String,
    default_transport: String,
    destinations: Destinations,
    virtual_alias: TableSet,
    transport: TableSet,
    rules: TableSet,
}

fn table_paths(dir: &Path, names: &[String]) -> Vec<PathBuf> {
    names
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| dir.join(n.trim()))
        .collect()
}

impl Resolver {
    /// Builds the resolver from the settings; the tables are loaded now.
    pub fn new(main: &MainConfig, config_dir: &Path) -> Result<Resolver, TableError> {
        Ok(Resolver {
            myorigin: main.myorigin.trim().trim_end_matches('.').to_lowercase(),
            myhostname: main.myhostname.clone(),
            relayhost: main.relayhost.trim().to_string(),
            delimiter: main.recipient_delimiter.clone(),
            local_transport: main.local_transport.clone(),
            relay_transport: main.relay_transport.clone(),
            default_transport: main.default_transport.clone(),
            destinations: Destinations::new(&main.mydestination, &main.relay_domains),
            virtual_alias: TableSet::load(&table_paths(config_dir, &main.virtual_alias_maps))?,
            transport: TableSet::load(&table_paths(config_dir, &main.transport_maps))?,
            rules: TableSet::load(&table_paths(config_dir, &main.rewrite_rules))?,
        })
    }

    /// Reloads changed tables; a table that fails to load keeps its old contents.
    pub fn refresh(&mut self) {
        for (name, set) in [
            ("virtual_alias_maps", &mut self.virtual_alias),
            ("transport_maps", &mut self.transport),
            ("rewrite_rules", &mut self.rules),
        ] {
            match set.refresh() {
                Ok(true) => tracing::info!("reloaded {name}"),
                Ok(false) => {}
                Err(e) => tracing::warn!("{name}: {e}; keeping the previous contents"),
            }
        }
    }

    /// The canonical form of `address` (lib's [`canonical`], the form cleanup stores), then
    /// checked as a mailbox. `None` when it is not an address.
    pub fn rewrite(&self, address: &str) -> Option<String> {
        let full = canonical(address, &self.myorigin);
        if full.is_empty() {
            return Some(full);
        }
        let a = parse_mailbox(&full, true).ok()?;
        Some(a.to_string())
    }

    /// The routes of a recipient.
    pub fn resolve(&self, address: &str) -> ResolveReply {
        let Some(canonical) = self.rewrite(address).filter(|a| !a.is_empty()) else {
            return error_route(address, Dsn::BAD_ADDRESS_SYNTAX, "bad address syntax");
        };
        let mut targets = Vec::new();
        let mut seen = HashSet::new();
        if let Err((dsn, why)) = self.expand(&canonical, 0, &mut seen, &mut targets) {
            return error_route(&canonical, dsn, why);
        }
        let routes = targets.iter().map(|t| self.route(t)).collect();
        ResolveReply::Resolved { routes }
    }

    /// Virtual alias expansion: `user@domain`, then (for a delimiter) `user@domain` without
    /// the extension, then `@domain`.
    fn expand(
        &self,
        address: &str,
        depth: usize,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) -> Result<(), (Dsn, &'static str)> {
        if depth > MAX_ALIAS_DEPTH {
            return Err((Dsn::ROUTING_LOOP, "virtual alias nesting too deep"));
        }
        let value = if self.virtual_alias.is_empty() || !seen.insert(address.to_lowercase()) {
            None
        } else {
            self.virtual_lookup(address)
        };
        let Some(value) = value else {
            if out.len() >= MAX_ROUTES {
                return Err((
                    Dsn::MAIL_SYSTEM.permanent(),
                    "virtual alias expands to too many recipients",
                ));
            }
            if !out.iter().any(|o| o.eq_ignore_ascii_case(address)) {
                out.push(address.to_string());
            }
            return Ok(());
        };
        for target in value.split([',', ' ', '\t']).map(str::trim).filter(|t| !t.is_empty()) {
            let Some(t) = self.rewrite(target).filter(|t| !t.is_empty()) else {
                return Err((Dsn::BAD_ADDRESS_SYNTAX, "bad address in virtual alias"));
            };
            if t.eq_ignore_ascii_case(address) {
                // An alias that includes itself delivers to itself.
                if !out.iter().any(|o| o.eq_ignore_ascii_case(&t)) {
                    out.push(t);
                }
                continue;
            }
            self.expand(&t, depth + 1, seen, out)?;
        }
        Ok(())
    }

    fn virtual_lookup(&self, address: &str) -> Option<&str> {
        if let Some(v) = self.virtual_alias.get(address) {
            return Some(v);
        }
        let (local, domain) = address.rsplit_once('@')?;
        if !self.delimiter.is_empty()
            && let Some(base) = self.strip_extension(local)
            && let Some(v) = self.virtual_alias.get(&format!("{base}@{domain}"))
        {
            return Some(v);
        }
        self.virtual_alias.get(&format!("@{domain}"))
    }

    /// The local part without its `recipient_delimiter` extension, when it has one.
    fn strip_extension<'a>(&self, local: &'a str) -> Option<&'a str> {
        self.delimiter
            .chars()
            .filter_map(|d| local.find(d))
            .min()
            .filter(|&at| at > 0)
            .and_then(|at| local.get(..at))
    }

    /// Class, transport_maps, relayhost for one final address.
    fn route(&self, address: &str) -> Route {
        let Ok(a) = parse_mailbox(address, true) else {
            return Route {
                transport: ERROR_TRANSPORT.into(),
                nexthop: error_text(Dsn::BAD_ADDRESS_SYNTAX, "bad address syntax"),
                recipient: address.into(),
                class: AddressClass::Error,
            };
        };
        let mut a = a;
        let mut channel = None;
        let mut address = address.to_string();
        if !self.rules.is_empty()
            && let Some(rw) = crate::rules::apply(&self.rules, &a.local, &a.domain)
        {
            match parse_mailbox(&format!("{}@{}", rw.local, rw.domain), true) {
                Ok(new) => {
                    a = new;
                    address = a.to_string();
                    channel = rw.channel.filter(|c| postern_lib::proto::deliver::valid_transport(c));
                }
                Err(_) => {
                    return Route {
                        transport: ERROR_TRANSPORT.into(),
                        nexthop: error_text(Dsn::BAD_ADDRESS_SYNTAX, "rewrite rule made a bad address"),
                        recipient: address,
                        class: AddressClass::Error,
                    };
                }
            }
        }
        let class = match self.destinations.classify(&a) {
            Class::Local => AddressClass::Local,
            Class::RelayDomain => AddressClass::Relay,
            Class::Foreign => AddressClass::Default,
            // `user%elsewhere@ourdomain`: not routed onwards; local refuses unknown users.
            Class::Routed if self.destinations.is_local_domain(&a.domain) => AddressClass::Local,
            Class::Routed => AddressClass::Relay,
        };
        let (mut transport, mut nexthop) = match class {
            AddressClass::Local => (self.local_transport.clone(), self.myhostname.clone()),
            AddressClass::Relay => (self.relay_transport.clone(), a.domain.clone()),
            _ => (self.default_transport.clone(), a.domain.clone()),
        };
        let mut nexthop_set = false;
        if let Some(c) = channel {
            transport = c;
            nexthop = a.domain.clone();
            nexthop_set = true;
        }
        let key = format!("{}@{}", a.local.to_lowercase(), a.domain);
        if let Some(v) = transport_lookup(|k| self.transport.get(k), &key) {
            let (t, n) = split_transport(v);
            if t == ERROR_TRANSPORT {
                return Route {
                    transport: ERROR_TRANSPORT.into(),
                    nexthop: if n.is_empty() {
                        error_text(Dsn::BAD_MAILBOX, "mail for this address is refused")
                    } else {
                        n.into()
                    },
                    recipient: address,
                    class: AddressClass::Error,
                };
            }
            if !t.is_empty() {
                transport = t.to_string();
            }
            if !n.is_empty() {
                nexthop = n.to_string();
                nexthop_set = true;
            }
        }
        if !nexthop_set && class != AddressClass::Local && !self.relayhost.is_empty() {
            nexthop = self.relayhost.clone();
        }
        Route {
            transport,
            nexthop,
            recipient: address,
            class,
        }
    }
}

/// The next hop of an error route: `5.1.3 text`, as a transport map's `error:5.1.3 text`.
fn error_text(dsn: Dsn, text: &str) -> String {
    format!("{dsn} {text}")
}

fn error_route(address: &str, dsn: Dsn, why: &str) -> ResolveReply {
    ResolveReply::Resolved {
        routes: vec![Route {
            transport: ERROR_TRANSPORT.into(),
            nexthop: error_text(dsn, why),
            recipient: address.into(),
            class: AddressClass::Error,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(va: &str, tr: &str, relayhost: &str) -> (tempfile::TempDir, Resolver) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("virtual"), va).unwrap();
        std::fs::write(dir.path().join("transport"), tr).unwrap();
        std::fs::write(
            dir.path().join("rules"),
            "siroe.com $U%$D@tcp_siroe-daemon\nold.example.test $U@example.test\n",
        )
        .unwrap();
        let main = MainConfig {
            myhostname: "mail.example.test".into(),
            myorigin: "example.test".into(),
            mydestination: vec!["example.test".into(), "localhost".into()],
            relay_domains: vec!["relay.test".into()],
            relayhost: relayhost.into(),
            recipient_delimiter: "+".into(),
            virtual_alias_maps: vec!["virtual".into()],
            transport_maps: vec!["transport".into()],
            rewrite_rules: vec!["rules".into()],
            ..MainConfig::default()
        };
        let r = Resolver::new(&main, dir.path()).unwrap();
        (dir, r)
    }

    fn routes(r: &Resolver, a: &str) -> Vec<(String, String, String, AddressClass)> {
        match r.resolve(a) {
            ResolveReply::Resolved { routes } => routes
                .into_iter()
                .map(|r| (r.transport, r.nexthop, r.recipient, r.class))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rewrite_canonical() {
        let (_d, r) = resolver("", "", "");
        assert_eq!(r.rewrite("alice").as_deref(), Some("alice@example.test"));
        assert_eq!(
            r.rewrite("Bob+Ext@Example.TEST.").as_deref(),
            Some("Bob+Ext@example.test")
        );
        assert_eq!(r.rewrite("<>").as_deref(), Some(""));
        assert_eq!(r.rewrite("a b@c"), None);
    }

    #[test]
    fn classes_and_transport_maps() {
        let (_d, r) = resolver(
            "",
            "slow.example  slow:[10.0.0.1]:25\n.sub.test  :[hub.test]\nrefused.test error:5.7.1 go away\n",
            "[smarthost.test]:587",
        );
        let l = routes(&r, "alice@EXAMPLE.test");
        assert_eq!(
            l,
            vec![(
                "local".into(),
                "mail.example.test".into(),
                "alice@example.test".into(),
                AddressClass::Local
            )]
        );
        assert_eq!(routes(&r, "x@relay.test")[0].0, "smtp");
        assert_eq!(routes(&r, "x@relay.test")[0].1, "[smarthost.test]:587");
        assert_eq!(routes(&r, "x@slow.example")[0].0, "slow");
        assert_eq!(routes(&r, "x@slow.example")[0].1, "[10.0.0.1]:25");
        assert_eq!(routes(&r, "x@a.sub.test")[0].0, "smtp");
        assert_eq!(routes(&r, "x@a.sub.test")[0].1, "[hub.test]");
        assert_eq!(routes(&r, "x@refused.test")[0].0, "error");
        assert_eq!(routes(&r, "x@refused.test")[0].1, "5.7.1 go away");
        assert_eq!(routes(&r, "x@elsewhere.org")[0].3, AddressClass::Default);
        // Sun ONE rewrite rules: a channel of its own, or a rewritten address routed as usual.
        let s = routes(&r, "joe@Siroe.COM");
        assert_eq!(
            s,
            vec![(
                "tcp_siroe-daemon".into(),
                "siroe.com".into(),
                "joe@siroe.com".into(),
                AddressClass::Default
            )]
        );
        let o = routes(&r, "ann@old.example.test");
        assert_eq!(o[0].0, "local");
        assert_eq!(o[0].2, "ann@example.test");
    }

    #[test]
    fn virtual_aliases_expand_with_loops_and_extensions() {
        let (_d, r) = resolver(
            "team@example.test alice, bob@example.test, carol@remote.org\n\
             loop1@example.test loop2@example.test\nloop2@example.test loop1@example.test\n\
             self@example.test self@example.test, alice\n@catch.test catchall@example.test\n",
            "",
            "",
        );
        let t: Vec<_> = routes(&r, "team@example.test")
            .into_iter()
            .map(|r| (r.0, r.2))
            .collect();
        assert_eq!(
            t,
            vec![
                ("local".into(), "alice@example.test".into()),
                ("local".into(), "bob@example.test".into()),
                ("smtp".into(), "carol@remote.org".into())
            ]
        );
        assert_eq!(routes(&r, "team+x@example.test").len(), 3);
        assert_eq!(routes(&r, "loop1@example.test").len(), 1);
        assert_eq!(routes(&r, "self@example.test").len(), 2);
        assert_eq!(routes(&r, "who@catch.test")[0].2, "catchall@example.test");
        assert_eq!(routes(&r, "bad address")[0].0, "error");
    }
}
