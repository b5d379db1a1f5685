//! Issue 15, the test network itself: examples/redundant's up.sh builds five namespaces
//! with the fixed addresses, a DNS server publishing the hubs as equal MX and the mailbox
//! servers as round-robin names, and a sender that falls over to the other hub when one
//! is down; node.sh kill leaves no process in the node; down.sh removes everything. And
//! no two tests name the same namespace prefix (they would kill each other's hosts).
//!
//! Needs root, iproute2, dnsmasq, openssl, python3 (skipped with the reason recorded
//! when one is missing, failed under CI=true).

use postern_tests::netns::{Lan, pids_in};
use postern_tests::redundant::{Cluster, HOSTS, addr_of};
use postern_tests::*;
use std::time::Duration;

#[test]
fn up_builds_the_network_the_sender_falls_over_by_mx_and_down_removes_it() {
    if !Cluster::can_run() {
        return;
    }
    let cluster = Cluster::up("pst-rn-");
    // Every host in its namespace with its address; the client also has the DNS address.
    for h in HOSTS {
        let lan_addrs = postern_tests::netns::ip(&["-n", &cluster.ns(h), "-o", "-4", "addr", "show", "dev", "eth0"]);
        let text = String::from_utf8_lossy(&lan_addrs.stdout);
        assert!(text.contains(&format!("inet {}/24", addr_of(h))), "{h}: {text}");
    }
    // The DNS server answers for the cluster (the namespace's resolv.conf names it).
    let out = cluster.python(
        "client",
        "import socket\nfor n in ['pop.example.test', 'imap.example.test', 'mh1.example.test', 'mh2.example.test']:\n    \
         print(n, ' '.join(sorted(socket.gethostbyname_ex(n)[2])))\n",
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", redundant::output_text(&out));
    for want in [
        "pop.example.test 198.18.0.31 198.18.0.32",
        "imap.example.test 198.18.0.31 198.18.0.32",
        "mh1.example.test 198.18.0.21",
        "mh2.example.test 198.18.0.22",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }

    // Both hubs up: the sender picks one at random for each message (MX 10 each; the
    // example turns its connection cache off): 20 all to one hub has p = 2^-19.
    let sent = cluster.send("both", 20, "alice@example.test");
    assert_eq!(sent.len(), 20);
    assert!(
        cluster.wait_queue_empty("client", Duration::from_secs(30)),
        "{}",
        cluster.status()
    );
    let relays = |log: &str, hub: &str| {
        log.lines()
            .filter(|l| l.contains("status=sent") && l.contains(&format!("relay={hub}.example.test")))
            .count()
    };
    let log = cluster.log("client");
    let (n1, n2) = (relays(&log, "mh1"), relays(&log, "mh2"));
    assert_eq!(n1 + n2, 20, "{log}");
    assert!(n1 > 0 && n2 > 0, "both hubs used: mh1 {n1}, mh2 {n2}");

    // mh1 dies (every process of its node, SIGKILL): everything goes to mh2, each message
    // in its first attempt (the refused connection to mh1 is followed by mh2 at once).
    cluster.node("mh1", "kill");
    assert!(pids_in(&cluster.ns("mh1")).is_empty(), "node.sh kill leaves no process");
    let sent = cluster.send("mh1down", 20, "alice@example.test");
    assert_eq!(sent.len(), 20);
    assert!(
        cluster.wait_queue_empty("client", Duration::from_secs(30)),
        "{}",
        cluster.status()
    );
    let log = cluster.log("client");
    assert_eq!(relays(&log, "mh2") - n2, 20, "all 20 through mh2 while mh1 is down");
    assert!(log.contains("connect to mh1.example.test[198.18.0.21:25]: Connection refused"));
    assert_eq!(
        log.lines().filter(|l| l.contains("status=deferred")).count(),
        0,
        "no message waited: the fall-over is within one attempt"
    );
    println!("MX spread with both hubs up: mh1 {n1}, mh2 {n2} of 20; with mh1 killed: mh2 20 of 20");

    // mh1 comes back; the 40 messages all reached mailbox server A.
    cluster.node("mh1", "start");
    assert!(
        wait_for(Duration::from_secs(30), || cluster
            .message_ids("mba", "alice", "INBOX")
            .len()
            == 40),
        "{}",
        cluster.status()
    );
    let status = cluster.status();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["pst-rn-mh1", "running"])),
        "{status}"
    );

    let names: Vec<String> = HOSTS.iter().map(|h| cluster.ns(h)).collect();
    let resolv = std::path::PathBuf::from(format!("/etc/netns/{}/resolv.conf", names[0]));
    assert!(resolv.exists());
    drop(cluster);
    for ns in names.iter().chain(std::iter::once(&"pst-rn-rbr".to_string())) {
        assert!(!Lan::exists(ns), "{ns} removed by down.sh");
    }
    assert!(!resolv.exists(), "down.sh removed {}", resolv.display());
}

/// Every namespace prefix a test names (`"pst-XX-"`) is named once in tests/tests: a
/// [`Lan`] first removes every namespace under its prefix (what a crashed run left), so two
/// tests sharing one kill each other's hosts when nextest runs them together (the soak
/// and active_standby_readers' split-brain test both used `pst-rs-`, redundant_delivery
/// and its take-over test `pst-rk-`).
#[test]
fn no_two_tests_share_a_namespace_prefix() {
    let mut places: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for file in files_below(&repo_root().join("tests/tests")) {
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a test file");
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("\"pst-") {
                let tail = &rest[at + 5..];
                let name: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                if !name.is_empty() && tail[name.len()..].starts_with("-\"") {
                    places
                        .entry(format!("pst-{name}-"))
                        .or_default()
                        .push(format!("{}:{}", file.display(), n + 1));
                }
                rest = &tail[name.len()..];
            }
        }
    }
    assert!(places.len() > 10, "found only {places:?}");
    let shared: Vec<_> = places.iter().filter(|(_, at)| at.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "namespace prefixes named more than once: {shared:#?}"
    );
}
