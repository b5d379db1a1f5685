//! Replicated mailboxes (issue 15), cleanup's part: the `X-Postern-GUID` header and the
//! one-copy-per-mailbox-server recipients ([`postern_lib::replica_id`]).
//!
//! - On a hub (`replica_domains` set): a message with a recipient in one of those
//!   domains gets a new GUID header, any it carried removed — unless it came from a
//!   trusted hub (`replica_hub_networks`) with a valid one, which it keeps, so mail passed
//!   from hub to hub is not filed twice. Each such recipient is written once per
//!   `replica_relays` entry, each copy with that relay as its fixed route (the queue file's
//!   `N` record): its own delivery, its own done mark.
//! - Anywhere else the header is kept only from a client in `replica_hub_networks` and
//!   from Postern's own daemons (requeue, forward; see [`header`]); from any other client
//!   and from local submissions it is removed (a client must not choose the Maildir name,
//!   nor make a message look like a duplicate).

use std::collections::BTreeMap;
use std::net::IpAddr;

use postern_lib::config::MainConfig;
use postern_lib::dsn::Dsn;
use postern_lib::headers::{Field, Header};
use postern_lib::queue_file::{RecipientSpec, attr};
use postern_lib::replica_id::{GUID_HEADER, in_domains, new_guid, parse_guid};
use postern_lib::strbuf::printable_bounded;

use crate::service::Stop;

/// Whether the submitting client is one of the trusted hubs.
fn trusted(main: &MainConfig, attributes: &BTreeMap<String, String>) -> bool {
    let Some(ip) = attributes
        .get(attr::CLIENT_ADDR)
        .and_then(|a| a.trim_matches(['[', ']']).parse::<IpAddr>().ok())
    else {
        return false;
    };
    main.replica_hub_networks.iter().any(|n| n.contains(ip))
}

/// Whether any recipient is copied to the replicas here.
pub fn replicated(main: &MainConfig, recipients: &[&str]) -> bool {
    main.replica_relays.len() >= 2 && recipients.iter().any(|a| in_domains(&main.replica_domains, a))
}

/// Applies the header rules to `header`; returns the GUID the message carries now, if
/// any. `arrival` is (secs, micros) of this queue file. `internal`: a submission of
/// Postern's own daemons (a `postsuper -r` requeue, a forward by local, a notice), whose
/// content already passed this filter on its way into the queue, so its GUID is as
/// trustworthy as a hub's — and must be kept: a requeued message filed again under a new
/// GUID would be a second copy on the replica that already had it.
pub fn header(
    header: &mut Header,
    main: &MainConfig,
    attributes: &BTreeMap<String, String>,
    internal: bool,
    replicated: bool,
    arrival: (u64, u32),
    q: &str,
) -> Result<Option<String>, Stop> {
    let from_hub = internal || trusted(main, attributes);
    let carried: Vec<String> = header
        .get_all(GUID_HEADER)
        .map(|f| f.value().trim().to_string())
        .collect();
    let client = match attributes.get(attr::CLIENT_ADDR) {
        Some(a) => a.as_str(),
        None if internal => "internal",
        None => "local",
    };
    if from_hub {
        let valid = carried.first().and_then(|v| parse_guid(v)).map(str::to_string);
        if carried.len() == 1 && valid.is_some() {
            return Ok(valid);
        }
        if !carried.is_empty() {
            tracing::warn!(
                "{q}: removed {} {GUID_HEADER} header(s) from trusted hub {client}: not one valid GUID ({})",
                carried.len(),
                printable_bounded(carried.join(", ").as_bytes(), 200)
            );
            header.remove_all(GUID_HEADER);
        }
    } else if !carried.is_empty() {
        tracing::info!(
            "{q}: removed {} {GUID_HEADER} header(s) from client {} (not in replica_hub_networks)",
            carried.len(),
            printable_bounded(client.as_bytes(), 100)
        );
        header.remove_all(GUID_HEADER);
    }
    // With the queue mirror on (two-node durability, issue 16) every message gets one too:
    // the peer's copy carries the same GUID, so the same message delivered by both nodes
    // (adopted after a lost drop notice, a frozen node resuming, a split brain) is filed
    // under one name and found already there.
    if !replicated && main.queue_mirror_peer.is_empty() {
        return Ok(None);
    }
    let guid = new_guid(arrival.0, arrival.1, &main.myhostname, q);
    let fail = |_| Stop::temp(Dsn::MAIL_SYSTEM, "Error: header too large to add the replica GUID");
    header
        .append(Field::new(GUID_HEADER, &guid).map_err(fail)?)
        .map_err(fail)?;
    Ok(Some(guid))
}

/// The recipients as written to the queue file: a replica-domain recipient once per
/// relay, with that relay as its route; any other recipient once, unrouted. The relays
/// are the `smtp=` addresses of the user's pair when `director_pairs` has them (issue 16:
/// hubs follow the director, [`postern_lib::director::hub_relays`]), else `replica_relays`.
pub fn copies(main: &MainConfig, specs: Vec<RecipientSpec>, replicated: bool) -> Vec<(RecipientSpec, Option<String>)> {
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        if replicated && in_domains(&main.replica_domains, &s.address) {
            let relays =
                postern_lib::director::hub_relays(main, &s.address).unwrap_or_else(|| main.replica_relays.clone());
            for relay in relays {
                out.push((s.clone(), Some(relay)));
            }
        } else {
            out.push((s, None));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::config::Cidr;

    fn hub_config() -> MainConfig {
        MainConfig {
            myhostname: "mh1.example.test".into(),
            replica_domains: vec!["example.test".into()],
            replica_relays: vec!["smtp:[192.0.2.31]:25".into(), "smtp:[192.0.2.32]:25".into()],
            replica_hub_networks: vec![Cidr::parse("192.0.2.21/32").unwrap()],
            ..Default::default()
        }
    }

    fn from(addr: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(attr::CLIENT_ADDR.to_string(), addr.to_string())])
    }

    fn parsed(text: &str) -> Header {
        postern_lib::headers::parse(text.as_bytes(), Default::default()).0
    }

    fn guids(h: &Header) -> Vec<String> {
        h.get_all(GUID_HEADER).map(|f| f.value().trim().to_string()).collect()
    }

    const G: &str = "6a0c2f4e0123456789abcdef01234567";

    #[test]
    fn a_hub_replaces_a_carried_guid_and_a_trusted_one_is_kept() {
        let main = hub_config();
        let mut h = parsed(&format!("Subject: x\nX-Postern-GUID: {G}\n\n"));
        let g = header(
            &mut h,
            &main,
            &from("198.51.100.7"),
            false,
            true,
            (1_790_000_000, 1),
            "Q1",
        )
        .ok()
        .flatten()
        .unwrap();
        assert_ne!(g, G);
        assert!(g.starts_with(&format!("{:08x}", 1_790_000_000u32)));
        assert_eq!(guids(&h), vec![g]);
        // From a trusted hub (or our own requeue), a valid GUID stays.
        for (attrs, internal) in [(from("192.0.2.21"), false), (BTreeMap::new(), true)] {
            let mut h = parsed(&format!("Subject: x\nX-Postern-GUID: {G}\n\n"));
            let g = header(&mut h, &main, &attrs, internal, true, (1, 1), "Q2")
                .ok()
                .flatten();
            assert_eq!(g.as_deref(), Some(G));
            assert_eq!(guids(&h), vec![G.to_string()]);
        }
        // Two GUIDs, even from a trusted hub: replaced by one.
        let mut h = parsed(&format!("X-Postern-GUID: {G}\nX-Postern-GUID: {G}\n\n"));
        header(&mut h, &main, &from("192.0.2.21"), false, true, (1, 1), "Q3").ok();
        assert_eq!(guids(&h).len(), 1);
        assert_ne!(guids(&h)[0], G);
    }

    #[test]
    fn a_mailbox_server_removes_an_untrusted_guid() {
        let mut main = hub_config();
        main.replica_domains.clear();
        main.replica_relays.clear();
        for attrs in [from("198.51.100.7"), BTreeMap::new()] {
            let mut h = parsed(&format!("Subject: x\nX-Postern-GUID: {G}\n\n"));
            let g = header(&mut h, &main, &attrs, false, false, (1, 1), "Q4").ok().flatten();
            assert_eq!(g, None);
            assert!(guids(&h).is_empty());
        }
        let mut h = parsed(&format!("Subject: x\nX-Postern-GUID: {G}\n\n"));
        let g = header(&mut h, &main, &from("192.0.2.21"), false, false, (1, 1), "Q5")
            .ok()
            .flatten();
        assert_eq!(g.as_deref(), Some(G));
    }

    #[test]
    fn a_node_of_a_mirrored_pair_stamps_every_message() {
        let main = MainConfig {
            myhostname: "n1.example.test".into(),
            queue_mirror_peer: "192.0.2.2:1191".into(),
            ..Default::default()
        };
        let mut h = parsed(&format!("Subject: x\nX-Postern-GUID: {G}\n\n"));
        let g = header(&mut h, &main, &from("198.51.100.7"), false, false, (1, 1), "Q6")
            .ok()
            .flatten()
            .unwrap();
        assert_ne!(g, G);
        assert_eq!(guids(&h), vec![g]);
    }

    #[test]
    fn replica_recipients_become_one_routed_copy_per_relay() {
        let main = hub_config();
        let spec = |a: &str| RecipientSpec {
            address: a.into(),
            orcpt: None,
            notify: Default::default(),
        };
        assert!(replicated(&main, &["bob@other.test", "alice@Example.test"]));
        assert!(!replicated(&main, &["bob@other.test"]));
        let out = copies(&main, vec![spec("alice@example.test"), spec("bob@other.test")], true);
        let routes: Vec<(&str, Option<&str>)> = out.iter().map(|(s, r)| (s.address.as_str(), r.as_deref())).collect();
        assert_eq!(
            routes,
            [
                ("alice@example.test", Some("smtp:[192.0.2.31]:25")),
                ("alice@example.test", Some("smtp:[192.0.2.32]:25")),
                ("bob@other.test", None)
            ]
        );
    }
}
