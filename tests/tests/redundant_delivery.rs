//! Issue 15, delivery: mail a hub accepted reaches both mailbox servers exactly once, while
//! nodes stop and start under it. Built with examples/redundant (tests/src/redundant.rs):
//! the sender in pst-client relays example.test by MX (mh1, mh2 at equal preference,
//! from dnsmasq), each hub copies to A and B (replica_domains / replica_relays).
//!
//! Needs root, iproute2, dnsmasq, openssl, python3 (skipped with the reason recorded
//! when one is missing, failed under CI=true), and a build whose hubs copy
//! (`replica_domains`).

use postern_tests::redundant::{Cluster, HUBS, MAILBOX_SERVERS, addr_of, build_knows};
use postern_tests::*;
use std::collections::HashMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// How many messages the delivery test sends: the 500.
const MESSAGES: usize = 500;

/// Each id of `sent` exactly once in `got`, and nothing else. The one exception is SMTP's
/// own: a hub killed after it made a message durable and before the sender read its 250
/// gets the message again (the sender saw no 250 and sent it anew, to either hub), a new
/// message with its own GUID; `hub_accepts` (Message-ID → queue files the hubs made for
/// it) allows an id that many copies.
fn exactly_once(
    got: &HashMap<String, usize>,
    sent: &[String],
    hub_accepts: &HashMap<String, usize>,
) -> Result<(), String> {
    let missing: Vec<&String> = sent.iter().filter(|id| !got.contains_key(*id)).collect();
    let twice: Vec<(&String, &usize)> = got
        .iter()
        .filter(|(id, n)| **n != 1 && **n > hub_accepts.get(*id).copied().unwrap_or(1))
        .collect();
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

/// What a run measured.
struct Run {
    cluster: Cluster,
    sent: Vec<String>,
    built: Duration,
    submitted: Duration,
    drained: Duration,
    /// The copies owed at each `owed` mark.
    owed: Vec<usize>,
}

/// Builds a cluster with namespace prefix `prefix`, has the sender submit `n` messages to
/// alice at a steady pace and, as its count passes each mark (a fraction of `n`), runs
/// `node.sh HOST CMD`; then waits until every queue is empty and both mailbox servers hold
/// `n` messages, and asserts that each holds every accepted message exactly once.
fn run(prefix: &str, n: usize, marks: &[(f64, &str, &str)]) -> Run {
    let t0 = Instant::now();
    let cluster = Cluster::up(prefix);
    let built = t0.elapsed();
    let mut client = cluster.sender("dl", n, "alice@example.test", 0.02);
    let stdout = client.stdout.take().expect("sender stdout");
    let mut next = 0;
    let mut sent = Vec::new();
    let mut owed = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        sent.push(line.expect("read the sender's output"));
        while next < marks.len() && sent.len() as f64 >= marks[next].0 * n as f64 {
            let (_, host, cmd) = marks[next];
            if cmd == "owed" {
                // `postern status` on each hub: the copies it still owes mailbox server HOST.
                owed.push(HUBS.iter().map(|h| copies_owed(&cluster, h, host)).sum::<usize>());
            } else {
                cluster.node(host, cmd);
            }
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
    assert_eq!(sent.len(), n, "the sender accepted every message");
    assert_eq!(next, marks.len());
    let submitted = t0.elapsed();

    // Everything drains: the sender's queue, both hubs' (copies for a mailbox server that
    // was down waited in them), and both mailbox servers hold every message once.
    let settled = wait_for(Duration::from_secs(120), || {
        ["client", "mh1", "mh2", "mba", "mbb"]
            .iter()
            .all(|h| cluster.queued(h) == 0)
            && MAILBOX_SERVERS
                .iter()
                .all(|h| cluster.message_ids(h, "alice", "INBOX").len() >= n)
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
    let accepts = cluster.hub_accepts();
    let resent = accepts.values().filter(|&&n| n > 1).count();
    if resent > 0 {
        println!(
            "{resent} messages the hubs took twice (a hub died before the sender read its 250), \
             {} of them on A twice",
            a.values().filter(|&&n| n > 1).count()
        );
    }
    for (name, got) in [("A", &a), ("B", &b)] {
        if let Err(e) = exactly_once(got, &sent, &accepts) {
            panic!("mailbox server {name}: {e}\n{}", cluster.status());
        }
    }
    for hub in HUBS {
        assert_eq!(cluster.queued(hub), 0, "{hub}'s queue is empty");
    }
    // mh1 was really down for a while: the sender fell over to mh2 then.
    assert!(
        cluster
            .log("client")
            .contains("connect to mh1.example.test[198.18.0.21:25]"),
        "the sender found mh1 down at least once"
    );
    Run {
        cluster,
        sent,
        built,
        submitted,
        drained,
        owed,
    }
}

/// The copies hub `hub` owes mailbox server `host`, from its `postern status` (the
/// replica relay table: `smtp:[ADDR]:25  COPIES  OLDEST  REASON`).
fn copies_owed(cluster: &Cluster, hub: &str, host: &str) -> usize {
    let out = cluster.postern(hub, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let route = format!("smtp:[{}]:25", addr_of(host));
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(route.as_str()))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("{hub}: no row for {route} in postern status:\n{text}"))
}

/// Deferred deliveries of copies to mailbox server `addr` in both hubs' logs.
fn deferred_copies(cluster: &Cluster, addr: &str) -> usize {
    HUBS.iter()
        .map(|h| {
            cluster
                .log(h)
                .lines()
                .filter(|l| l.contains(addr) && l.contains("status=deferred"))
                .count()
        })
        .sum()
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
    // mh1 is down (a clean stop) for the second fifth of the run, B for the fourth fifth.
    let r = run(
        "pst-yd-",
        MESSAGES,
        &[
            (0.2, "mh1", "stop"),
            (0.4, "mh1", "start"),
            (0.6, "mbb", "stop"),
            (0.8, "mbb", "owed"),
            (0.8, "mbb", "start"),
        ],
    );
    // While B was down the hubs' `postern status` showed the copies they owed it.
    assert!(r.owed[0] > 0, "copies owed to B while it was down: {:?}", r.owed);
    // B's copies waited in the hubs' queues while B was down.
    let deferred = deferred_copies(&r.cluster, "198.18.0.32");
    assert!(deferred > 0, "copies to B were deferred while it was down");
    println!(
        "{} messages: cluster up in {:.1} s, submitted in {:.1} s, on both A and B once \
         and every queue empty {:.1} s after the start ({deferred} deferrals of copies to B, \
         {} copies owed to B by the hubs just before it started)",
        r.sent.len(),
        r.built.as_secs_f64(),
        (r.submitted - r.built).as_secs_f64(),
        r.drained.as_secs_f64(),
        r.owed[0]
    );
}

#[test]
fn every_accepted_message_reaches_both_mailbox_servers_exactly_once_while_nodes_are_killed() {
    if !Cluster::can_run() {
        return;
    }
    if !build_knows("replica_domains") {
        skip("this build's hubs do not copy to both mailbox servers yet (no replica_domains)");
        return;
    }
    // SIGKILL to every process of mh1, later of A, each in the middle of the flow: a hub
    // killed between a mailbox server's 250 and its done mark sends that copy again, and a
    // mailbox server killed mid-delivery gets it again; either way it is stored once (the
    // file is named after the message's X-Postern-GUID).
    let r = run(
        "pst-yk-",
        300,
        &[
            (0.2, "mh1", "kill"),
            (0.4, "mh1", "start"),
            (0.6, "mba", "kill"),
            (0.8, "mba", "start"),
        ],
    );
    let deferred = deferred_copies(&r.cluster, "198.18.0.31");
    assert!(deferred > 0, "copies to A were deferred while it was dead");
    println!(
        "{} messages with kill -9 of mh1 and of A: on both once, every queue empty {:.1} s after the start",
        r.sent.len(),
        r.drained.as_secs_f64()
    );
}
