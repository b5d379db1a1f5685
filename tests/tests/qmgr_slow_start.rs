//! qmgr's per-destination concurrency, end to end (SMTP in → qmgr → smtp client → SMTP
//! sinks on loopback chosen by `transport_maps`), judged by what the sinks count, never by
//! time:
//!
//! * slow start: a destination starts at `initial_destination_concurrency` and gains one
//!   parallel delivery per success, never above `smtp_destination_concurrency_limit` (the
//!   sink records every session opening with the number open at that moment and every
//!   stored message, in order);
//! * back-off: a destination whose server refuses to talk is throttled "dead" after a
//!   failed cohort, its mail is deferred ("delivery temporarily suspended") without new
//!   connections, while another destination keeps being delivered; a flush tries it
//!   again;
//! * a server that accepts connections and never answers holds one delivery process and
//!   nothing else: other destinations are delivered meanwhile.
//!
//! The connection cache is off (`smtp_connection_cache_time_limit=0s`) so that every
//! open connection at a sink is a delivery in progress.

use postern_tests::*;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

/// Sends one message per recipient over one SMTP session (Python's smtplib).
fn send_many(port: u16, rcpts: &[String]) {
    let list: Vec<String> = rcpts.iter().map(|r| format!("{r:?}")).collect();
    python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=60)\n\
         for i, r in enumerate([{}]):\n\
         \x20   m = 'From: alice@example.test\\r\\nTo: %s\\r\\nSubject: n%d\\r\\n\\r\\nbody %d\\r\\n' % (r, i, i)\n\
         \x20   s.sendmail('alice@example.test', [r], m.encode())\n\
         s.quit()\n",
        list.join(", ")
    ));
}

fn addrs(domain: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("u{i}@{domain}")).collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

fn instance(smtp_port: u16, transport: &str, settings: &[&str]) -> Instance {
    let mut all = vec!["transport_maps=[\"transport\"]", "smtp_connection_cache_time_limit=0s"];
    all.extend_from_slice(settings);
    let inst = Instance::new(&pipeline_services(smtp_port), &all);
    add_user(&inst, "alice", "alice-pw");
    std::fs::write(inst.etc().join("transport"), transport).unwrap();
    inst
}

#[test]
fn slow_start_grows_by_one_per_delivery_and_stays_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let sink_dir = dir.path().join("fast");
    let (_sink, port) = sink_with_args(&sink_dir, &["--data-delay", "0.5"]);
    let smtp_port = free_port();
    let mut inst = instance(
        smtp_port,
        &format!("fast.test smtp:[127.0.0.1]:{port}\n"),
        &[
            "initial_destination_concurrency=1",
            "smtp_destination_concurrency_limit=3",
        ],
    );
    inst.start();
    let n = 30;
    send_many(smtp_port, &addrs("fast.test", 0, n));
    assert!(
        wait_for(LONG, || sink_messages(&sink_dir).len() == n),
        "delivered {} of {n}:\n{}",
        sink_messages(&sink_dir).len(),
        inst.log()
    );
    let events = std::fs::read_to_string(sink_dir.join("events")).unwrap();
    let mut delivered = 0;
    let mut most = 0;
    for e in events.lines() {
        if e == "delivered" {
            delivered += 1;
        } else if let Some(k) = e.strip_prefix("open ") {
            let k: usize = k.parse().unwrap();
            // Window = 1 + successes so far, so k open sessions need k - 1 deliveries first.
            assert!(
                k <= delivered + 1,
                "{k} sessions open after only {delivered} deliveries:\n{events}"
            );
            most = most.max(k);
        }
    }
    assert!(most <= 3, "more than the concurrency limit: {most}");
    assert_eq!(most, 3, "the window never grew to the limit:\n{events}");
    let max: usize = std::fs::read_to_string(sink_dir.join("max-concurrent"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(max, 3);
}

#[test]
fn a_dead_destination_gets_no_new_connections_while_others_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (dead_dir, live_dir) = (dir.path().join("dead"), dir.path().join("live"));
    let (_dead, dead_port) = sink_with_args(&dead_dir, &["--greeting", "421"]);
    let (_live, live_port) = sink_with_args(&live_dir, &[]);
    let smtp_port = free_port();
    let mut inst = instance(
        smtp_port,
        &format!("dead.test smtp:[127.0.0.1]:{dead_port}\nlive.test smtp:[127.0.0.1]:{live_port}\n"),
        &[
            "initial_destination_concurrency=2",
            "smtp_destination_concurrency_limit=4",
            "minimal_backoff_time=3600s",
            "maximal_backoff_time=7200s",
        ],
    );
    inst.start();
    let deferred_dead = |inst: &Instance| {
        inst.log()
            .lines()
            .filter(|l| l.contains("@dead.test>") && l.contains("status=deferred"))
            .count()
    };
    // Interleaved: one for each destination, ten times.
    let mut rcpts = Vec::new();
    for (d, l) in addrs("dead.test", 0, 10).into_iter().zip(addrs("live.test", 0, 10)) {
        rcpts.push(d);
        rcpts.push(l);
    }
    send_many(smtp_port, &rcpts);
    assert!(
        wait_for(LONG, || sink_messages(&live_dir).len() == 10
            && deferred_dead(&inst) == 10),
        "live {} dead-deferred {}:\n{}",
        sink_messages(&live_dir).len(),
        deferred_dead(&inst),
        inst.log()
    );
    // Window 2: the first failure narrows it to 1, the second completes a cohort.
    assert_eq!(lines(&dead_dir.join("connections")), 2, "{}", inst.log());
    let suspended = inst.log_count(
        "dsn=4.4.1, status=deferred (delivery temporarily suspended: \
         host 127.0.0.1[127.0.0.1] refused to talk to me: 421 4.3.2 Not now)",
    );
    assert_eq!(suspended, 8, "{}", inst.log());

    // More mail while it is dead: deferred at once, no connection; the other goes on.
    send_many(
        smtp_port,
        &[addrs("dead.test", 10, 5), addrs("live.test", 10, 5)].concat(),
    );
    assert!(
        wait_for(LONG, || sink_messages(&live_dir).len() == 15
            && deferred_dead(&inst) == 15),
        "{}",
        inst.log()
    );
    assert_eq!(
        lines(&dead_dir.join("connections")),
        2,
        "a dead destination got a new connection"
    );
    assert_eq!(inst.log_count("status=deferred (delivery temporarily suspended: "), 13);
    assert!(
        inst.log().contains("destination throttled (dead) for 3600s"),
        "{}",
        inst.log()
    );

    // A flush (`postqueue -f`) tries dead destinations again, as in Postfix: the deferred
    // mail comes back, two more connections fail, and the destination is dead again.
    let out = std::process::Command::new(bin("postqueue"))
        .arg("-c")
        .arg(inst.etc())
        .arg("-f")
        .output()
        .expect("postqueue");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for(LONG, || deferred_dead(&inst) == 30), "{}", inst.log());
    assert_eq!(lines(&dead_dir.join("connections")), 4, "{}", inst.log());
    assert_eq!(sink_messages(&live_dir).len(), 15);
}

#[test]
fn a_server_that_never_answers_does_not_hold_up_other_destinations() {
    let dir = tempfile::tempdir().unwrap();
    let (hang_dir, live_dir) = (dir.path().join("hang"), dir.path().join("live"));
    let (_hang, hang_port) = sink_with_args(&hang_dir, &["--hang"]);
    let (_live, live_port) = sink_with_args(&live_dir, &[]);
    let smtp_port = free_port();
    // An hour to wait for the greeting: while this test runs, the hanging delivery can
    // only be in progress.
    let mut inst = instance(
        smtp_port,
        &format!("hang.test smtp:[127.0.0.1]:{hang_port}\nlive.test smtp:[127.0.0.1]:{live_port}\n"),
        &["smtp_helo_timeout=3600s"],
    );
    inst.start();
    send_many(smtp_port, &addrs("hang.test", 0, 1));
    assert!(
        wait_for(LONG, || lines(&hang_dir.join("connections")) == 1),
        "{}",
        inst.log()
    );
    send_many(smtp_port, &addrs("live.test", 0, 5));
    assert!(wait_for(LONG, || sink_messages(&live_dir).len() == 5), "{}", inst.log());
    assert!(
        !inst.log().contains("to=<u0@hang.test>"),
        "the hanging delivery cannot have ended: {}",
        inst.log()
    );
}
