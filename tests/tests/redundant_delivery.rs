//! Issue 15, delivery: mail a hub accepted reaches both mailbox servers exactly once, while
//! nodes stop and start under it. Built with examples/redundant (tests/src/redundant.rs):
//! the sender in pst-client relays example.test by MX (mh1, mh2 at equal preference,
//! from dnsmasq), each hub copies to A and B (replica_domains / replica_relays).
//!
//! Needs root, iproute2, dnsmasq, openssl, python3 (skipped with the reason recorded
//! when one is missing, failed under CI=true), and a build whose hubs copy
//! (`replica_domains`).

use postern_tests::redundant::{Cluster, HUBS, MAILBOX_SERVERS, build_knows};
use postern_tests::*;
use std::collections::HashMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// How many messages the delivery test sends: the 500.
const MESSAGES: usize = 500;

/// Each id of `sent` exactly once in `got`, and nothing else.
fn exactly_once(got: &HashMap<String, usize>, sent: &[String]) -> Result<(), String> {
    let missing: Vec<&String> = sent.iter().filter(|id| !got.contains_key(*id)).collect();
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, n)| **n != 1).collect();
    let extra: Vec<&String> = got.keys().filter(|id| !sent.contains(id)).collect();
    if missing.is_empty() && twice.is_empty() && extra.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} missing (first {:?}), {} not exactly once (first {:?}), {} not sent (first {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>()
    ))
}

#[test]
fn every_accepted_message_reaches_both_mailbox_servers_exactly_once_while_nodes_stop() {
    if !Cluster::can_run() {
        return;
    }
    if !build_knows("replica_domains") {
        skip("this build's hubs do not copy to both mailbox servers yet (no replica_domains)");
        return;
    }
    let t0 = Instant::now();
    let cluster = Cluster::up("pst-rd-");
    let built = t0.elapsed();

    // The sender submits at a steady pace; as its count passes each mark, a node stops or
    // starts: mh1 is down for the second fifth of the run, B for the fourth fifth.
    let mut client = cluster.sender("dl", MESSAGES, "alice@example.test", 0.02);
    let stdout = client.stdout.take().expect("sender stdout");
    let marks: [(usize, &str, &str); 4] = [
        (MESSAGES / 5, "mh1", "stop"),
        (2 * MESSAGES / 5, "mh1", "start"),
        (3 * MESSAGES / 5, "mbb", "stop"),
        (4 * MESSAGES / 5, "mbb", "start"),
    ];
    let mut next = 0;
    let mut sent = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        sent.push(line.expect("read the sender's output"));
        while next < marks.len() && sent.len() >= marks[next].0 {
            let (_, host, cmd) = marks[next];
            cluster.node(host, cmd);
            println!("after {} accepted: {cmd} {host}", sent.len());
            next += 1;
        }
    }
    let out = client.wait_with_output().expect("sender");
    assert!(
        out.status.success(),
        "the sending client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sent.len(), MESSAGES, "the sender accepted every message");
    assert_eq!(next, marks.len());
    let submitted = t0.elapsed();

    // Everything drains: the sender's queue, both hubs' (B's copies waited in them while
    // it was down), and both mailbox servers hold every message once.
    let settled = wait_for(Duration::from_secs(120), || {
        ["client", "mh1", "mh2", "mba", "mbb"]
            .iter()
            .all(|h| cluster.queued(h) == 0)
            && MAILBOX_SERVERS
                .iter()
                .all(|h| cluster.message_ids(h, "alice", "INBOX").len() >= MESSAGES)
    });
    let drained = t0.elapsed();
    let a = cluster.message_ids("mba", "alice", "INBOX");
    let b = cluster.message_ids("mbb", "alice", "INBOX");
    assert!(
        settled,
        "not settled within 120 s: A has {}, B has {}\n{}",
        a.len(),
        b.len(),
        cluster.status()
    );
    for (name, got) in [("A", &a), ("B", &b)] {
        if let Err(e) = exactly_once(got, &sent) {
            panic!("mailbox server {name}: {e}\n{}", cluster.status());
        }
    }
    for hub in HUBS {
        assert_eq!(cluster.queued(hub), 0, "{hub}'s queue is empty");
    }
    // mh1 was really down for a while: the sender fell over to mh2 then.
    let client_log = cluster.log("client");
    assert!(
        client_log.contains("connect to mh1.example.test[198.18.0.21:25]"),
        "the sender found mh1 down at least once"
    );
    // B's copies waited in the hubs' queues while B was down.
    let deferred_to_b = HUBS
        .iter()
        .map(|h| {
            cluster
                .log(h)
                .lines()
                .filter(|l| l.contains("198.18.0.32") && l.contains("status=deferred"))
                .count()
        })
        .sum::<usize>();
    assert!(deferred_to_b > 0, "copies to B were deferred while it was down");
    println!(
        "{MESSAGES} messages: cluster up in {:.1} s, submitted in {:.1} s, on both A and B once \
         and every queue empty {:.1} s after the start ({deferred_to_b} deferrals of copies to B)",
        built.as_secs_f64(),
        (submitted - built).as_secs_f64(),
        drained.as_secs_f64()
    );
}
