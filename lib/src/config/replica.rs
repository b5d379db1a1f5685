//! Checks of the replicated-mailbox settings (issue 15): `replica_domains`,
//! `replica_relays` and the rule that ties them (a domain copied to fewer than two
//! mailbox servers is not replicated, so that is refused rather than silently meant).

use crate::queue_file::parse_route;

/// Each entry is a domain: non-empty, no `@`, no spaces or control characters.
pub(super) fn domains(list: &[String]) -> Result<(), String> {
    match list
        .iter()
        .find(|d| d.is_empty() || d.len() > 253 || d.contains('@') || !d.bytes().all(|b| b.is_ascii_graphic()))
    {
        Some(bad) => Err(format!("{bad:?} is not a domain name")),
        None => Ok(()),
    }
}

/// Each entry is `transport:nexthop` (the route a queue file can hold), no entry twice.
pub(super) fn relays(list: &[String]) -> Result<(), String> {
    for (i, r) in list.iter().enumerate() {
        if parse_route(r).is_none() {
            return Err(format!(
                "{r:?} is not transport:nexthop (e.g. \"smtp:[198.18.0.31]:25\")"
            ));
        }
        if list.iter().take(i).any(|o| o.eq_ignore_ascii_case(r)) {
            return Err(format!("{r:?} is listed twice"));
        }
    }
    Ok(())
}

/// With `replica_domains` set, `replica_relays` must name at least two mailbox servers.
pub(super) fn relation(domains: &[String], relays: &[String]) -> Result<(), (&'static str, String)> {
    if !domains.is_empty() && relays.len() < 2 {
        return Err((
            "replica_relays",
            format!(
                "must list at least 2 mailbox servers when replica_domains is set (it lists {})",
                relays.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn domains_and_relays_are_checked() {
        assert!(domains(&v(&["example.test", "Other.Test"])).is_ok());
        assert!(domains(&v(&["a@example.test"])).is_err());
        assert!(domains(&v(&[""])).is_err());
        assert!(domains(&v(&["a b"])).is_err());
        assert!(relays(&v(&["smtp:[198.18.0.31]:25", "lmtp:[198.18.0.32]:24"])).is_ok());
        assert!(relays(&v(&["[198.18.0.31]:25"])).is_err(), "no transport");
        assert!(relays(&v(&["smtp:"])).is_err(), "no nexthop");
        assert!(relays(&v(&["smtp:a b"])).is_err());
        assert!(relays(&v(&["smtp:[h]:25", "SMTP:[H]:25"])).is_err(), "twice");
    }

    #[test]
    fn replica_domains_need_two_relays() {
        let two = v(&["smtp:[198.18.0.31]:25", "smtp:[198.18.0.32]:25"]);
        assert!(relation(&[], &[]).is_ok());
        assert!(relation(&v(&["example.test"]), &two).is_ok());
        assert!(relation(&v(&["example.test"]), &two[..1]).is_err());
        assert!(relation(&v(&["example.test"]), &[]).is_err());
    }

    #[test]
    fn a_main_toml_with_one_relay_is_refused_naming_the_key() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        let master = "[[service]]\nname = \"echo\"\ntype = \"inet\"\nlisten = \"127.0.0.1:0\"\ncommand = \"echod\"\n";
        std::fs::write(d.path().join("etc/master.toml"), master).unwrap();
        let main = "myhostname = \"mh1.example.test\"\nreplica_domains = [\"example.test\"]\n";
        let one = format!("{main}replica_relays = [\"smtp:[198.18.0.31]:25\"]\n");
        std::fs::write(d.path().join("etc/main.toml"), &one).unwrap();
        let e = crate::config::Config::load(&d.path().join("etc"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("replica_relays"), "{e}");
        let bad = format!("{main}replica_relays = [\"smtp:[198.18.0.31]:25\", \"nexthop-only\"]\n");
        std::fs::write(d.path().join("etc/main.toml"), &bad).unwrap();
        let e = crate::config::Config::load(&d.path().join("etc"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nexthop-only"), "{e}");
        let good = format!(
            "{main}replica_relays = [\"smtp:[198.18.0.31]:25\", \"smtp:[198.18.0.32]:25\"]\nreplica_hub_networks = [\"198.18.0.0/24\"]\n"
        );
        std::fs::write(d.path().join("etc/main.toml"), &good).unwrap();
        let c = crate::config::Config::load(&d.path().join("etc")).unwrap();
        assert_eq!(c.main.replica_relays.len(), 2);
        assert_eq!(c.main.replica_hub_networks.len(), 1);
    }
}
