//! Two-node durability of the active-standby pair (issue 16): with `queue_mirror_peer` set,
//! a node answers 250 only once the peer's mirror daemon holds a durable copy of the queue
//! file, so mail accepted by a node whose disk then dies is delivered by the survivor after
//! `postern mirror adopt`.
//!
//! The pair tests build their own LAN of network namespaces ([`postern_tests::netns::Lan`])
//! with node 1 at 198.18.1.1 and node 2 at 198.18.1.2 (each a Postern instance with the
//! mirror services on its address, port 1191) and a client at 198.18.1.10 that sends to
//! node 1 directly (the service address and keepalived are tests/active_standby.rs's
//! subject); node 2 takes over by running keepalived's notify hook for MASTER as the
//! pair's template calls it, which runs `postern mirror adopt --if-peer-down`.
//! Node 1's qmgr is stopped (SIGSTOP) before the mail arrives, so none of it is delivered
//! (or dropped from the mirror) before node 1's queue directory is removed (rm -rf) and
//! every process of node 1 killed.
//!
//! The rejoin test kills node 1 without touching its disk: node 2 adopts and delivers its
//! mail, then node 1 starts again and must deliver none of it a second time.
//!
//! The peer-failure tests run one instance on loopback against a peer played by the test:
//! nothing listening, a peer that acknowledges too slowly, a peer that answers garbage, and
//! garbage sent to the instance's own mirror service.
//!
//! The pair tests need root, iproute2 and python3; skipped (with the reason recorded) when
//! one is missing, failed under CI=true (tests/src/skip.rs).

use postern_tests::netns::{Lan, pids_in};
use postern_tests::vip_pair::mirror_services;
use postern_tests::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

/// Messages accepted by node 1 before it dies.
const MESSAGES: usize = 1000;
/// Messages node 1 accepts and delivers first (their copies on node 2 must go).
const WARM_UP: usize = 20;
/// The shared secret of the tests' pairs.
const SECRET: &str = "test-mirror-secret-0123456789abcdef\n";

fn can_run() -> bool {
    require_root("network namespaces") && require_tool("ip", "iproute2") && require_tool("python3", "python3")
}

/// Writes the shared secret into `inst`'s config directory (mode 0600).
fn write_secret(inst: &Instance) {
    use std::os::unix::fs::PermissionsExt;
    let p = inst.etc().join("mirror-secret");
    std::fs::write(&p, SECRET).expect("write secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod secret");
}

/// Message-ID → copies in alice's Maildir of `inst`.
fn delivered(inst: &Instance) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for ((id, _), n) in maildir_index(&inst.root.path().join("var/mail/alice")) {
        *out.entry(id.trim_matches(['<', '>']).to_string()).or_insert(0) += n;
    }
    out
}

/// Files named by a queue ID in `dir` (not temporaries, not mirror/'s own files).
fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| postern_lib::queue_id::QueueId::parse(&e.file_name().to_string_lossy()).is_ok())
                .count()
        })
        .unwrap_or(0)
}

/// Sends `n` messages `<PREFIX-i@as.test>` to alice at `host`:25 over 4 connections, from
/// `ns` (or the test's namespace); returns (accepted, refused with their codes).
fn send_many(lan: Option<(&Lan, &str)>, host: &str, port: u16, prefix: &str, n: usize) -> (usize, Vec<String>) {
    let script = format!(
        "import smtplib, threading\nok = []\nbad = []\n\
         def run(k):\n    s = smtplib.SMTP('{host}', {port}, timeout=60)\n    for i in range(k, {n}, 4):\n        \
         try:\n            s.sendmail('bob@example.test', ['alice@example.test'], \
         'Subject: %d\\r\\nMessage-ID: <{prefix}-%d@as.test>\\r\\n\\r\\nhello %d\\r\\n' % (i, i, i))\n            \
         ok.append(i)\n        except smtplib.SMTPResponseException as e:\n            \
         bad.append('%d %d %s' % (i, e.smtp_code, e.smtp_error))\n            s.rset()\n    s.quit()\n\
         ts = [threading.Thread(target=run, args=(k,)) for k in range(4)]\n\
         [t.start() for t in ts]\n[t.join() for t in ts]\nprint(len(ok))\nfor b in bad: print(b)\n"
    );
    let out: Output = match lan {
        Some((lan, ns)) => lan.exec(ns, "python3", &["-c", &script]),
        None => std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3"),
    };
    assert!(
        out.status.success(),
        "sending: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let ok = lines.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    (ok, lines.map(str::to_string).collect())
}

/// Two nodes on a LAN; node `i` listens on 198.18.1.(i+1) for SMTP and the mirror.
struct Pair {
    lan: Lan,
    nodes: Vec<Instance>,
}

impl Pair {
    fn new(prefix: &str, mirror: bool) -> Pair {
        Pair::with(prefix, mirror, "degraded", [&[], &[]])
    }

    /// With `queue_mirror_unreachable = unreachable` and `extra` settings per node.
    fn with(prefix: &str, mirror: bool, unreachable: &str, extra: [&[&str]; 2]) -> Pair {
        let unreachable = format!("queue_mirror_unreachable={unreachable}");
        let mut lan = Lan::new(prefix);
        lan.add_host("n1", &["198.18.1.1/24"]);
        lan.add_host("n2", &["198.18.1.2/24"]);
        lan.add_host("c", &["198.18.1.10/24"]);
        let mut nodes = Vec::new();
        for i in 0..2 {
            let addr = format!("198.18.1.{}", i + 1);
            let peer = format!("queue_mirror_peer=198.18.1.{}:1191", 2 - i);
            let services = pipeline_services(25).replace(
                "listen = \"127.0.0.1:25\"",
                &format!("listen = [\"{addr}:25\", \"127.0.0.1:25\"]"),
            ) + &mirror_services(&format!("{addr}:1191"));
            let host = format!("myhostname=n{}.example.test", i + 1);
            let mut settings = vec![host.as_str()];
            if mirror {
                settings.extend([peer.as_str(), "queue_mirror_secret_file=mirror-secret", &unreachable]);
                settings.extend_from_slice(extra[i]);
            }
            let mut inst = Instance::new(&services, &settings);
            write_secret(&inst);
            add_user(&inst, "alice", "alice-pw");
            owned_mail_base(&inst);
            inst.set_netns(&lan.ns(["n1", "n2"][i]));
            inst.start();
            nodes.push(inst);
        }
        Pair { lan, nodes }
    }

    /// Stops node `i`'s qmgr (SIGSTOP): what it accepts stays in incoming/. Returns its pid.
    fn hold_delivery(&self, i: usize) -> u32 {
        let ns = self.lan.ns(["n1", "n2"][i]);
        let mut found = None;
        wait_for(Duration::from_secs(10), || {
            found = pids_in(&ns).into_iter().find(|&p| comm(p).as_deref() == Some("qmgr"));
            found.is_some()
        });
        let pid = found.expect("qmgr running in the node");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("SIGSTOP qmgr");
        pid
    }

    /// Node 1's disk dies (its queue directory removed) and then node 1 (SIGKILL to every
    /// process in its namespace).
    fn destroy_node1(&mut self) {
        let q: PathBuf = self.nodes[0].queue();
        let st = std::process::Command::new("rm")
            .arg("-rf")
            .arg(&q)
            .status()
            .expect("rm");
        assert!(st.success());
        let killed = self.lan.kill_all("n1");
        assert!(killed >= 5, "node 1 had its processes: {killed}");
    }
}

/// Runs etc/keepalived/postern-notify in node 2's namespace as keepalived does on
/// becoming MASTER; returns what its adoption printed.
fn notify_master(pair: &Pair) -> String {
    let node2 = &pair.nodes[1];
    let state = node2.root.path().join("vrrp.state");
    let hook = repo_root().join("etc/keepalived/postern-notify");
    let out = pair
        .lan
        .command("n2", "sh")
        .arg(&hook)
        .arg(&state)
        .arg(bin("postern"))
        .arg(node2.etc())
        .args(["INSTANCE", "postern", "MASTER", "100"])
        .output()
        .expect("run the notify hook");
    assert!(
        out.status.success(),
        "notify hook: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let adopt = node2.root.path().join("vrrp.state.adopt");
    let mut text = String::new();
    assert!(
        wait_for(Duration::from_secs(15), || {
            text = std::fs::read_to_string(&adopt).unwrap_or_default();
            text.contains("adopted ") || text.contains("nothing adopted")
        }),
        "the hook's adoption finished: {text:?}"
    );
    text
}

/// The whole scenario; returns (accepted, delivered by node 2 exactly once, held by node 2).
fn run_pair(prefix: &str, mirror: bool) -> (usize, HashMap<String, usize>, usize, String) {
    let t0 = Instant::now();
    let mut pair = Pair::new(prefix, mirror);
    // Normal operation first: what node 1 delivers, node 2 is told to drop.
    let (ok, bad) = send_many(Some((&pair.lan, "c")), "198.18.1.1", 25, "pre", WARM_UP);
    assert_eq!(ok, WARM_UP, "refused: {bad:?}");
    assert!(
        wait_for(Duration::from_secs(30), || delivered(&pair.nodes[0]).len() == WARM_UP),
        "node 1 delivers the first messages"
    );
    assert!(
        wait_for(Duration::from_secs(15), || count_files(
            &pair.nodes[1].queue().join("mirror")
        ) == 0),
        "node 2 dropped the copies of the messages node 1 delivered: {} left",
        count_files(&pair.nodes[1].queue().join("mirror"))
    );
    pair.hold_delivery(0);
    let t_send = Instant::now();
    let (ok, bad) = send_many(Some((&pair.lan, "c")), "198.18.1.1", 25, prefix, MESSAGES);
    let send_time = t_send.elapsed();
    assert_eq!(ok, MESSAGES, "node 1 accepts every message: refused {bad:?}");
    println!(
        "mirror {}: {MESSAGES} messages accepted by node 1 in {:.1} s ({:.0}/s)",
        if mirror { "on" } else { "off" },
        send_time.as_secs_f64(),
        MESSAGES as f64 / send_time.as_secs_f64()
    );
    assert_eq!(count_files(&pair.nodes[0].queue().join("incoming")), MESSAGES);
    let held = count_files(&pair.nodes[1].queue().join("mirror"));
    let status = String::from_utf8_lossy(&pair.nodes[1].postern(&["status"]).stdout).to_string();
    if mirror {
        // Node 2 becoming MASTER while node 1 lives (a fail-over that was not needed, or
        // the fail-back of a pair): node 1 keeps its mail, nothing is adopted.
        let out = notify_master(&pair);
        assert!(
            out.contains("answers; its messages are its own: nothing adopted"),
            "{out}"
        );
        assert_eq!(count_files(&pair.nodes[1].queue().join("mirror")), held);
        let _ = std::fs::remove_file(pair.nodes[1].root.path().join("vrrp.state.adopt"));
    }
    pair.destroy_node1();
    assert!(!pair.nodes[0].queue().exists(), "node 1's queue is gone");
    // Node 2 becomes MASTER: keepalived's notify hook (as the pair's template calls it)
    // runs `postern mirror adopt --if-peer-down` in the background.
    let adopt_out = notify_master(&pair);
    let want = if mirror { MESSAGES } else { 0 };
    let node2 = &pair.nodes[1];
    wait_for(Duration::from_secs(60), || {
        delivered(node2).len() >= want && count_files(&node2.queue().join("incoming")) == 0
    });
    // Anything still on its way shows up now.
    std::thread::sleep(Duration::from_millis(500));
    println!("whole run: {:.1} s", t0.elapsed().as_secs_f64());
    (ok, delivered(node2), held, format!("{status}\n{adopt_out}"))
}

#[test]
fn mirror_on_survivor_delivers_every_accepted_message_once() {
    if !can_run() {
        return;
    }
    let (accepted, got, held, out) = run_pair("pst-md-", true);
    assert_eq!(held, accepted, "node 2 held a copy of each before node 1 died");
    assert!(
        out.contains(&format!("{MESSAGES} copies of the peer's messages held")),
        "postern status on node 2:\n{out}"
    );
    assert!(
        out.contains("reachable"),
        "postern status shows the peer reachable:\n{out}"
    );
    assert!(out.contains("is down"), "adopt saw node 1 down:\n{out}");
    assert!(
        out.contains(&format!("adopted {MESSAGES} message(s)")),
        "adopt output:\n{out}"
    );
    let want: Vec<String> = (0..MESSAGES).map(|i| format!("pst-md--{i}@as.test")).collect();
    let missing: Vec<&String> = want.iter().filter(|id| !got.contains_key(*id)).collect();
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        missing.is_empty(),
        "{} lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    // What node 1 had delivered before it died is not delivered again.
    assert_eq!(
        got.len(),
        MESSAGES,
        "node 2 delivered exactly the messages node 1 had not"
    );
}

#[test]
fn mirror_off_loses_what_the_dead_disk_held() {
    if !can_run() {
        return;
    }
    let (accepted, got, held, out) = run_pair("pst-mo-", false);
    assert_eq!(held, 0, "no copies without the mirror");
    assert!(out.contains("adopted 0 message(s)"), "adopt output:\n{out}");
    let lost = accepted - got.len();
    println!("mirror off: {lost} of {accepted} accepted messages lost with node 1's disk");
    assert_eq!(lost, accepted, "the loss window the mirror closes");
}

/// Messages node 1 accepts before it dies in the rejoin test.
const REJOIN: usize = 200;
/// Messages node 2 accepts (copied to node 1) and delivers while node 1 is down.
const FINISHED_AWAY: usize = 5;

#[test]
fn node_back_with_its_queue_does_not_redeliver_what_the_peer_adopted() {
    if !can_run() {
        return;
    }
    let pair = Pair::new("pst-rj-", true);
    // Node 2 accepts a few with its delivery held: node 1 keeps their copies.
    let qmgr2 = pair.hold_delivery(1);
    let (ok, bad) = send_many(Some((&pair.lan, "c")), "198.18.1.2", 25, "n2", FINISHED_AWAY);
    assert_eq!(ok, FINISHED_AWAY, "{bad:?}");
    assert_eq!(count_files(&pair.nodes[0].queue().join("mirror")), FINISHED_AWAY);
    // Node 1 accepts REJOIN with its delivery held, node 2 holding the copies.
    pair.hold_delivery(0);
    let (ok, bad) = send_many(Some((&pair.lan, "c")), "198.18.1.1", 25, "rj", REJOIN);
    assert_eq!(ok, REJOIN, "{bad:?}");
    assert_eq!(count_files(&pair.nodes[1].queue().join("mirror")), REJOIN);

    // Node 1 dies; its disk survives.
    let killed = pair.lan.kill_all("n1");
    assert!(killed >= 5, "node 1 had its processes: {killed}");
    assert_eq!(count_files(&pair.nodes[0].queue().join("incoming")), REJOIN);
    // Node 2 takes over: adopts node 1's copies, delivers them and its own (whose drop
    // notices cannot reach node 1: its copies there are stale now).
    let adopt = notify_master(&pair);
    assert!(adopt.contains(&format!("adopted {REJOIN} message(s)")), "{adopt}");
    signal(qmgr2, nix::sys::signal::Signal::SIGCONT);
    let node2 = &pair.nodes[1];
    assert!(
        wait_for(Duration::from_secs(60), || delivered(node2).len()
            == REJOIN + FINISHED_AWAY),
        "node 2 delivers the adopted and its own: {}",
        delivered(node2).len()
    );

    // Node 1 comes back with its queue: `postern start` rejoins first.
    let t0 = Instant::now();
    let out = pair.nodes[0].postern(&["start"]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{text}");
    println!("node 1 rejoined and started in {:.2} s", t0.elapsed().as_secs_f64());
    assert!(
        text.contains(&format!(
            "{REJOIN} message(s) it adopted removed here; 0 copies of its messages kept, {FINISHED_AWAY} it finished dropped"
        )),
        "postern start's rejoin report:\n{text}"
    );
    assert_eq!(
        text.matches("while this node was down; removed from incoming/").count(),
        REJOIN
    );
    assert!(
        wait_for(Duration::from_secs(10), || pair.nodes[1].log_count("rejoins: ") >= 1),
        "node 2 logs the rejoin\n{}",
        pair.nodes[1].log()
    );
    // Nothing left to deliver twice, nothing stale kept; node 1 runs and serves.
    for q in ["incoming", "active", "deferred", "mirror"] {
        assert_eq!(count_files(&pair.nodes[0].queue().join(q)), 0, "node 1's {q}/");
    }
    let (ok, bad) = send_many(Some((&pair.lan, "c")), "198.18.1.1", 25, "after", 1);
    assert_eq!(ok, 1, "{bad:?}");
    assert!(wait_for(Duration::from_secs(20), || delivered(&pair.nodes[0]).len() == 1));
    std::thread::sleep(Duration::from_secs(1));
    // Every message delivered exactly once over both nodes.
    let mut all = delivered(&pair.nodes[0]);
    for (id, n) in delivered(&pair.nodes[1]) {
        *all.entry(id).or_insert(0) += n;
    }
    assert_eq!(all.len(), REJOIN + FINISHED_AWAY + 1, "{all:?}");
    let twice: Vec<_> = all.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(
        delivered(&pair.nodes[0]).keys().collect::<Vec<_>>(),
        ["after-0@as.test"]
    );
}

/// The copies of the peer's messages node `i` holds (`mirror/`).
fn copies(pair: &Pair, i: usize) -> usize {
    count_files(&pair.nodes[i].queue().join("mirror"))
}

/// The queue files (not temporaries) below `queue` of node `i`, hashed or flat.
fn queue_ids(pair: &Pair, i: usize, queue: &str) -> Vec<String> {
    files_below(&pair.nodes[i].queue().join(queue))
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| postern_lib::queue_id::QueueId::parse(n).is_ok())
        .collect()
}

/// Message-ID → copies over both nodes' Maildirs.
fn delivered_both(pair: &Pair) -> HashMap<String, usize> {
    let mut all = delivered(&pair.nodes[0]);
    for (id, n) in delivered(&pair.nodes[1]) {
        *all.entry(id).or_insert(0) += n;
    }
    all
}

/// Sends one message `<ID-0@as.test>` from the client to node `i`; its outcome line.
fn send_to(pair: &Pair, i: usize, id: &str) -> String {
    let (ok, bad) = send_many(Some((&pair.lan, "c")), &format!("198.18.1.{}", i + 1), 25, id, 1);
    if ok == 1 { "250".into() } else { bad.join(" ") }
}

/// The pids of the processes named `name` in node `i`'s namespace.
fn named_in(pair: &Pair, i: usize, name: &str) -> Vec<u32> {
    pids_in(&pair.lan.ns(["n1", "n2"][i]))
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some(name))
        .collect()
}

#[test]
fn orphan_copies_are_dropped_while_both_run_and_an_adoption_delivers_once() {
    if !can_run() || !require_tool("bridge", "iproute2") {
        return;
    }
    let t0 = Instant::now();
    // A 451 when node 2 has not acknowledged within 2 s. Node 2 checks its copies every
    // second; node 1 hardly ever (its checks would take the pooled connection to node 2
    // that the late put below must use).
    let pair = Pair::with(
        "pst-or-",
        true,
        "defer",
        [
            &["queue_mirror_timeout=2s", "queue_mirror_check_interval=3600s"],
            &["queue_mirror_timeout=2s", "queue_mirror_check_interval=1s"],
        ],
    );
    let (n1, n2) = (&pair.nodes[0], &pair.nodes[1]);
    // A message that passes opens node 1's connection to node 2's mirror.
    assert_eq!(send_to(&pair, 0, "warm"), "250");
    assert!(
        wait_for(Duration::from_secs(20), || delivered(n1).contains_key("warm-0@as.test")
            && copies(&pair, 1) == 0),
        "warm delivered, its copy dropped: {} copies\n{}",
        copies(&pair, 1),
        n2.log()
    );

    // (1) The acknowledgement comes too late: node 2's mirror does not run (SIGSTOP) while
    // node 1 waits for it; node 1 answers 451, and node 2, running again, reads the put
    // that waited in its socket and writes the copy: an orphan of a refused message.
    // (The drop notice's answer is on its way back to node 1 when the copy goes: node 1's
    // connection returns to its pool only then.)
    std::thread::sleep(Duration::from_secs(1));
    let mirror2 = named_in(&pair, 1, "mirror");
    assert!(!mirror2.is_empty(), "node 2's mirror runs");

    for &p in &mirror2 {
        signal(p, nix::sys::signal::Signal::SIGSTOP);
    }
    let outcome = send_to(&pair, 0, "late");
    for &p in &mirror2 {
        signal(p, nix::sys::signal::Signal::SIGCONT);
    }
    assert!(outcome.contains(" 451 "), "refused while node 2 is silent: {outcome}");

    assert!(
        wait_for(Duration::from_secs(10), || copies(&pair, 1) == 1
            || n2.log_count("mirror copy dropped") >= 1),
        "node 2 wrote the copy of the refused message\n{}\n--- node 1\n{}",
        n2.log(),
        n1.log()
    );
    // Node 2's checks find it queued nowhere at node 1, twice: it goes.
    assert!(
        wait_for(Duration::from_secs(15), || copies(&pair, 1) == 0),
        "the orphan of the 451 is dropped: {} copies\n{}",
        copies(&pair, 1),
        n2.log()
    );
    assert!(
        wait_for(Duration::from_secs(5), || n2
            .log_count(": mirror copy dropped: the peer no longer has it queued")
            >= 1),
        "{}",
        n2.log()
    );
    // The client sends it again: accepted now, delivered, its copy dropped.
    assert_eq!(send_to(&pair, 0, "late"), "250");
    assert!(
        wait_for(Duration::from_secs(20), || delivered(n1).contains_key("late-0@as.test")
            && copies(&pair, 1) == 0),
        "late delivered, its copy dropped: {} copies\n{}",
        copies(&pair, 1),
        n2.log()
    );

    // (2) A drop notice lost: node 1 delivers a message while the link between the nodes
    // is cut (the client reaches both); node 2 keeps the copy until the link heals and
    // its checks find the message gone at node 1.
    let qmgr1 = pair.hold_delivery(0);
    assert_eq!(send_to(&pair, 0, "lost-drop"), "250");
    assert!(
        wait_for(Duration::from_secs(10), || copies(&pair, 1) == 1),
        "{}",
        copies(&pair, 1)
    );
    pair.lan.set_isolated("n1", true);
    pair.lan.set_isolated("n2", true);
    signal(qmgr1, nix::sys::signal::Signal::SIGCONT);
    assert!(
        wait_for(Duration::from_secs(20), || delivered(n1)
            .contains_key("lost-drop-0@as.test")
            && n1.log_count("cannot tell the peer to drop") >= 1),
        "node 1 delivers, its drop notice cannot reach node 2\n{}",
        n1.log()
    );
    assert_eq!(copies(&pair, 1), 1, "node 2 still holds the copy");
    pair.lan.set_isolated("n1", false);
    pair.lan.set_isolated("n2", false);
    assert!(
        wait_for(Duration::from_secs(20), || copies(&pair, 1) == 0),
        "the copy of the message node 1 finished is dropped after the heal: {}\n{}",
        copies(&pair, 1),
        n2.log()
    );

    // (3) Node 1 dies holding one message; node 2 adopts exactly that one.
    pair.hold_delivery(0);
    assert_eq!(send_to(&pair, 0, "final"), "250");
    assert!(
        wait_for(Duration::from_secs(10), || copies(&pair, 1) == 1),
        "{}",
        copies(&pair, 1)
    );
    assert!(pair.lan.kill_all("n1") >= 5);
    let adopt = notify_master(&pair);
    assert!(adopt.contains("adopted 1 message(s)"), "{adopt}");
    assert!(wait_for(Duration::from_secs(20), || delivered(n2)
        .contains_key("final-0@as.test")));
    std::thread::sleep(Duration::from_millis(500));
    let all = delivered_both(&pair);
    let want: HashMap<String, usize> = ["warm", "late", "lost-drop", "final"]
        .iter()
        .map(|id| (format!("{id}-0@as.test"), 1))
        .collect();
    assert_eq!(all, want, "every accepted message once, the refused one only as resent");
    println!("orphan copies test: {:.1} s", t0.elapsed().as_secs_f64());
}

/// Messages node 1 holds deferred when it is frozen.
const FROZEN: usize = 3;

#[test]
fn frozen_node_that_resumes_removes_what_the_peer_adopted() {
    if !can_run() {
        return;
    }
    let t0 = Instant::now();
    let settings: &[&str] = &["queue_mirror_timeout=2s", "queue_mirror_check_interval=1s"];
    let pair = Pair::with("pst-fz-", true, "degraded", [settings, settings]);
    let (n1, n2) = (&pair.nodes[0], &pair.nodes[1]);
    // Node 1 cannot deliver to alice for now (her mailbox path is a file: a temporary
    // failure): the messages wait in its deferred queue, their copies on node 2.
    let mailbox = n1.root.path().join("var/mail/alice");
    std::fs::write(&mailbox, b"not a maildir").expect("block the mailbox");
    let (ok, bad) = send_many(Some((&pair.lan, "c")), "198.18.1.1", 25, "frozen", FROZEN);
    assert_eq!(ok, FROZEN, "{bad:?}");
    assert!(
        wait_for(Duration::from_secs(20), || queue_ids(&pair, 0, "deferred").len()
            == FROZEN),
        "node 1 defers them: {:?}\n{}",
        queue_ids(&pair, 0, "deferred"),
        n1.log()
    );
    assert_eq!(copies(&pair, 1), FROZEN);

    // Node 1 freezes (every process stopped, as a paused VM): node 2 takes over; the
    // notify hook's ping gets no answer within its bound and node 2 adopts.
    let frozen = pids_in(&pair.lan.ns("n1"));
    for &p in &frozen {
        signal(p, nix::sys::signal::Signal::SIGSTOP);
    }
    let t_freeze = Instant::now();
    let t_hook = Instant::now();
    let adopt = notify_master(&pair);
    println!(
        "adoption with node 1 frozen: {:.2} s: {}",
        t_hook.elapsed().as_secs_f64(),
        adopt.trim()
    );
    assert!(adopt.contains("is down") && adopt.contains("timed out"), "{adopt}");
    assert!(adopt.contains(&format!("adopted {FROZEN} message(s)")), "{adopt}");
    assert!(
        wait_for(Duration::from_secs(20), || delivered(n2).len() == FROZEN),
        "node 2 delivers the adopted messages: {:?}",
        delivered(n2)
    );

    // Node 1 resumes, its mailbox usable again: its mirror daemon notices the gap, asks
    // node 2 and removes the messages node 2 adopted from its deferred queue.
    std::fs::remove_file(&mailbox).expect("unblock the mailbox");
    // A pause longer than a take-over (the mirror daemon counts one of more than 3 s).
    std::thread::sleep(Duration::from_secs(6).saturating_sub(t_freeze.elapsed()));
    let t_resume = Instant::now();
    for &p in &frozen {
        signal(p, nix::sys::signal::Signal::SIGCONT);
    }
    assert!(
        wait_for(Duration::from_secs(15), || queue_ids(&pair, 0, "deferred").is_empty()),
        "node 1 removes what node 2 adopted: {:?}\n{}",
        queue_ids(&pair, 0, "deferred"),
        n1.log()
    );
    println!(
        "node 1 removed the adopted messages {:.2} s after it resumed",
        t_resume.elapsed().as_secs_f64()
    );
    assert!(n1.log_count("mirror: this node did not run for") >= 1, "{}", n1.log());
    assert!(
        wait_for(Duration::from_secs(5), || n1
            .log_count("while this node was away; removed from deferred/")
            == FROZEN),
        "{}",
        n1.log()
    );
    // A flush finds nothing of them to deliver again.
    let out = pair
        .lan
        .command("n1", bin("postqueue"))
        .arg("-c")
        .arg(n1.etc())
        .arg("-f")
        .output()
        .expect("postqueue -f");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(send_to(&pair, 0, "after"), "250");
    assert!(wait_for(Duration::from_secs(20), || delivered(n1)
        .contains_key("after-0@as.test")));
    std::thread::sleep(Duration::from_secs(1));
    let all = delivered_both(&pair);
    for i in 0..FROZEN {
        assert_eq!(all.get(&format!("frozen-{i}@as.test")), Some(&1), "{all:?}");
    }
    assert_eq!(
        delivered(n1).len(),
        1,
        "node 1 delivered only the new one: {:?}",
        delivered(n1)
    );
    println!("frozen node test: {:.1} s", t0.elapsed().as_secs_f64());
}

// ---- one node on loopback against a peer played by the test ----

/// One instance whose peer is `peer` (`host:port`), with `settings` more.
fn single(peer: &str, settings: &[&str]) -> (Instance, u16) {
    let port = free_port();
    let services = pipeline_services(port) + &mirror_services("");
    let peer = format!("queue_mirror_peer={peer}");
    let mut all = vec![
        peer.as_str(),
        "queue_mirror_secret_file=mirror-secret",
        "queue_mirror_timeout=1s",
    ];
    all.extend_from_slice(settings);
    let mut inst = Instance::new(&services, &all);
    write_secret(&inst);
    add_user(&inst, "alice", "alice-pw");
    owned_mail_base(&inst);
    inst.start();
    (inst, port)
}

/// The qmgr child of `inst`'s master, waited for (up to 10 s): master starts it after it
/// is up, and a reload retires the running one and starts another. `not` is a qmgr that no
/// longer counts (the one a reload retired): waited for until it has exited.
fn qmgr_of(inst: &Instance, not: Option<u32>) -> u32 {
    let mut found = None;
    wait_for(Duration::from_secs(10), || {
        let qmgrs: Vec<u32> = children_of(inst.master_pid())
            .into_iter()
            .filter(|&p| comm(p).as_deref() == Some("qmgr"))
            .collect();
        found = match qmgrs[..] {
            [p] if Some(p) != not => Some(p),
            _ => None,
        };
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("one qmgr running (not {not:?})\n{}", inst.log()))
}

/// Sends one message; (SMTP outcome line, seconds it took).
fn send_one(port: u16, id: &str) -> (String, f64) {
    let t0 = Instant::now();
    let (ok, bad) = send_many(None, "127.0.0.1", port, id, 1);
    let outcome = if ok == 1 { "250".to_string() } else { bad.join(" ") };
    (outcome, t0.elapsed().as_secs_f64())
}

/// Nothing in the queue: a refused message leaves no file and no temporary behind.
fn queue_empty(inst: &Instance) -> bool {
    ["incoming", "active", "deferred", "hold"].iter().all(|q| {
        std::fs::read_dir(inst.queue().join(q))
            .map(|mut rd| rd.next().is_none())
            .unwrap_or(true)
    })
}

#[test]
fn unreachable_peer_defers_or_degrades_as_configured() {
    let dead = free_port(); // nothing listens there
    let (mut inst, port) = single(&format!("127.0.0.1:{dead}"), &["queue_mirror_unreachable=defer"]);
    let (outcome, secs) = send_one(port, "unreach-defer");
    assert!(outcome.contains(" 451 "), "defer: {outcome}");
    assert!(secs < 5.0, "refused promptly: {secs:.1} s");
    assert!(inst.log_count("defer: no copy on 127.0.0.1") >= 1, "{}", inst.log());
    assert!(queue_empty(&inst), "a refused message leaves nothing queued");
    let status = String::from_utf8_lossy(&inst.postern(&["status"]).stdout).to_string();
    assert!(status.contains("UNREACHABLE (deferring mail) since"), "{status}");

    let before_reload = qmgr_of(&inst, None);
    let out = inst.postern(&["config", "set", "queue_mirror_unreachable=degraded"]);
    assert!(out.status.success());
    let out = inst.postern(&["reload"]);
    assert!(out.status.success());
    // New cleanup processes read the new setting; allow master to replace the old ones.
    let mut outcome = String::new();
    assert!(
        wait_for(Duration::from_secs(10), || {
            outcome = send_one(port, "unreach-degraded").0;
            outcome == "250"
        }),
        "degraded: 250 from this node alone: {outcome}"
    );
    assert!(
        inst.log_count(": degraded: accepted by this node alone") >= 1,
        "{}",
        inst.log()
    );
    let status = String::from_utf8_lossy(&inst.postern(&["status"]).stdout).to_string();
    assert!(status.contains("DEGRADED (accepting alone) since"), "{status}");
    // Delivery held: the next degraded message stays queued here until the peer is back.
    // First the degraded message is finished (its file removed: a delivered message whose
    // file is still in active/ is queued, and the resync would copy it too), and the qmgr
    // the reload retired has exited (else its successor delivers what comes next).
    assert!(
        wait_for(Duration::from_secs(10), || queue_empty(&inst)),
        "the degraded message delivered\n{}",
        inst.log()
    );
    let qmgr = qmgr_of(&inst, Some(before_reload));
    signal(qmgr, nix::sys::signal::Signal::SIGSTOP);
    assert_eq!(send_one(port, "held-degraded").0, "250");

    // The peer comes back (a mirror service on that port): the next message is copied, and
    // so is the one accepted degraded (resync of what is queued here).
    let mut peer = Instance::new(
        &mirror_services(&format!("127.0.0.1:{dead}")),
        &["queue_mirror_secret_file=mirror-secret"],
    );
    write_secret(&peer);
    peer.start();
    let (outcome, _) = send_one(port, "peer-back");
    assert_eq!(outcome, "250");
    assert!(
        wait_for(Duration::from_secs(10), || count_files(&peer.queue().join("mirror"))
            == 2),
        "the peer holds the new message and the degraded one: {}\n{}",
        count_files(&peer.queue().join("mirror")),
        inst.log()
    );
    // (The resync may find the new message committed too: it copies it again, idempotent.)
    assert!(
        wait_for(Duration::from_secs(10), || inst.log_count("mirror: resync: ") == 1),
        "{}",
        inst.log()
    );
    let status = String::from_utf8_lossy(&inst.postern(&["status"]).stdout).to_string();
    assert!(
        status.contains("127.0.0.1:") && status.contains(" reachable;"),
        "{status}"
    );
    // Delivery resumes: both are delivered and the peer drops both copies.
    signal(qmgr, nix::sys::signal::Signal::SIGCONT);
    assert!(wait_for(Duration::from_secs(20), || {
        let d = delivered(&inst);
        d.contains_key("held-degraded-0@as.test") && d.contains_key("peer-back-0@as.test")
    }));
    assert!(
        wait_for(Duration::from_secs(10), || count_files(&peer.queue().join("mirror"))
            == 0),
        "the peer dropped the copies of the delivered messages"
    );
    let _ = inst.stop(); // first: its connection to the peer would hold the peer's stop
    let _ = peer.stop();
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal");
}

/// A peer played by the test: accepts connections on a free port and runs `behave` on each.
fn fake_peer(behave: impl Fn(std::net::TcpStream) + Send + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            behave(s);
        }
    });
    port
}

#[test]
fn slow_acknowledgement_is_a_bounded_wait() {
    let key = mirror::wire::key(&mirror::wire::parse_secret(SECRET.as_bytes()).expect("secret"));
    let port = fake_peer(move |mut s| {
        let key = key.clone();
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            if mirror::wire::server_handshake(&mut s, &key).is_ok() {
                let _ = mirror::wire::read_frame(&mut s, |_| Some(64 << 20));
                // Acknowledges 4 s later: beyond queue_mirror_timeout (1 s).
                std::thread::sleep(Duration::from_secs(4));
                let _ = mirror::wire::write_frame(&mut s, mirror::wire::kind::OK, &[]);
            }
        });
    });
    let (inst, smtp) = single(&format!("127.0.0.1:{port}"), &["queue_mirror_unreachable=defer"]);
    let (outcome, secs) = send_one(smtp, "slow");
    println!("a peer acknowledging after 4 s with queue_mirror_timeout 1 s: {outcome} after {secs:.2} s");
    assert!(outcome.contains(" 451 "), "{outcome}");
    assert!(secs < 3.5, "the wait is bounded by queue_mirror_timeout: {secs:.2} s");
    assert!(inst.log_count("timed out") >= 1, "{}", inst.log());
    assert!(queue_empty(&inst));
}

#[test]
fn rejoin_with_a_silent_peer_is_a_bounded_wait() {
    // A peer that proves the secret, reads the question and never answers.
    let key = mirror::wire::key(&mirror::wire::parse_secret(SECRET.as_bytes()).expect("secret"));
    let port = fake_peer(move |mut s| {
        let key = key.clone();
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            if mirror::wire::server_handshake(&mut s, &key).is_ok() {
                let _ = mirror::wire::read_frame(&mut s, |_| Some(64 << 10));
                std::thread::sleep(Duration::from_secs(30));
            }
        });
    });
    let peer = format!("queue_mirror_peer=127.0.0.1:{port}");
    let mut inst = Instance::new(
        &(pipeline_services(free_port()) + &mirror_services("")),
        &[
            &peer,
            "queue_mirror_secret_file=mirror-secret",
            "queue_mirror_timeout=2s",
        ],
    );
    write_secret(&inst);
    add_user(&inst, "alice", "alice-pw");
    owned_mail_base(&inst);
    // One message queued here (master creates the queue directories: started and stopped
    // once first), so there is something to ask about.
    inst.start();
    let _ = inst.stop();
    write_queue_file(
        &inst,
        "incoming",
        "bob@example.test",
        &[("alice@example.test", postern_lib::queue_file::Notify::default())],
        &[],
        b"Subject: queued\r\nMessage-ID: <queued@as.test>\r\n\r\nx\r\n",
    );
    let t0 = Instant::now();
    let out = inst.postern(&["mirror", "rejoin"]);
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!(
        "rejoin against a silent peer: {:.2} s: {}",
        took.as_secs_f64(),
        text.trim()
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("mirror: rejoin: peer 127.0.0.1:{port} not asked (")) && text.contains("timed out"),
        "{text}"
    );
    assert!(text.contains("would be delivered again"), "{text}");
    assert!(
        took < Duration::from_secs(4),
        "bounded by queue_mirror_timeout: {took:?}"
    );
    // `postern start` runs the same rejoin first and starts anyway, within the bound.
    let t0 = Instant::now();
    inst.start();
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // The message was not removed: it is delivered here.
    assert!(wait_for(Duration::from_secs(10), || delivered(&inst)
        .contains_key("queued@as.test")));
    // With master running, a rejoin is refused (qmgr could be delivering).
    let out = inst.postern(&["mirror", "rejoin"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("master runs"));
    let _ = inst.stop();
}

#[test]
fn garbage_from_or_to_the_peer_is_logged_not_fatal() {
    // A "peer" that is an SMTP server, or anything else not speaking the protocol.
    let port = fake_peer(|mut s| {
        let _ = s.write_all(b"220 smtp.example.test ESMTP not a mirror\r\n\xff\xfe garbage");
        let mut sink = [0u8; 4096];
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.read(&mut sink);
    });
    let port_self = free_port();
    let services_extra = mirror_services(&format!("127.0.0.1:{port_self}"));
    let smtp = free_port();
    let services = pipeline_services(smtp) + &services_extra;
    let peer = format!("queue_mirror_peer=127.0.0.1:{port}");
    let mut inst = Instance::new(
        &services,
        &[
            &peer,
            "queue_mirror_secret_file=mirror-secret",
            "queue_mirror_timeout=2s",
            "queue_mirror_unreachable=defer",
        ],
    );
    write_secret(&inst);
    add_user(&inst, "alice", "alice-pw");
    owned_mail_base(&inst);
    inst.start();

    let (outcome, _) = send_one(smtp, "garbage");
    assert!(outcome.contains(" 451 "), "{outcome}");
    assert!(
        wait_for(Duration::from_secs(5), || inst.log_count("protocol error") >= 1),
        "{}",
        inst.log()
    );

    // Garbage to our own mirror service: a wrong proof, a huge length, random bytes.
    let attempts: [&[u8]; 3] = [
        &[b'A', 0, 0, 0, 64, 1, 2, 3],
        &[b'P', 0xff, 0xff, 0xff, 0xff],
        b"EHLO attacker\r\n\x00\x01\x02",
    ];
    for bytes in attempts {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port_self)).expect("connect to mirror");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut hello = [0u8; 5];
        c.read_exact(&mut hello).expect("the challenge");
        assert_eq!(hello[0], b'H');
        let _ = c.write_all(bytes);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
    assert!(
        wait_for(Duration::from_secs(5), || inst
            .log_count("mirror: authentication of 127.0.0.1")
            >= 3),
        "{}",
        inst.log()
    );
    // Still serving: a fresh connection gets its challenge.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port_self)).expect("connect again");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut hello = [0u8; 37];
    c.read_exact(&mut hello).expect("challenge after the garbage");
    assert_eq!(&hello[..5], &[b'H', 0, 0, 0, 32]);
    assert!(!inst.log().contains("panicked"), "{}", inst.log());
    assert!(queue_empty(&inst));
    let _ = inst.stop();
}

#[test]
fn check_names_a_missing_mirror_service_and_a_weak_secret() {
    use std::os::unix::fs::PermissionsExt;
    let peer = format!("queue_mirror_peer=127.0.0.1:{}", free_port());
    let settings = [peer.as_str(), "queue_mirror_secret_file=mirror-secret"];
    // No mirror service in master.toml, a secret others can read, and too short.
    let inst = Instance::new(&pipeline_services(free_port()), &settings);
    let secret = inst.etc().join("mirror-secret");
    std::fs::write(&secret, "short\n").expect("write secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = inst.postern(&["check"]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("has no mirror unix service on private/mirror"), "{text}");
    assert!(text.contains("at least 16 bytes"), "{text}");
    assert!(text.contains("is readable by others (mode 644)"), "{text}");
    // With the services and a proper secret: nothing about the mirror.
    let inst = Instance::new(&(pipeline_services(free_port()) + &mirror_services("")), &settings);
    write_secret(&inst);
    let text = String::from_utf8_lossy(&inst.postern(&["check"]).stderr).to_string();
    assert!(!text.contains("mirror"), "{text}");
}

#[test]
fn check_warns_when_the_mirror_service_cannot_keep_watch() {
    let peer = format!("queue_mirror_peer=127.0.0.1:{}", free_port());
    let settings = [peer.as_str(), "queue_mirror_secret_file=mirror-secret"];
    // A mirror unix service as a newcomer might write it: no min_procs, no wakeup, two
    // processes, the default max_use and max_idle.
    let services = pipeline_services(free_port()) + &daemon_service("mirror", "unix", "", "mirror", "maxproc = 2");
    let inst = Instance::new(&services, &settings);
    write_secret(&inst);
    let out = inst.postern(&["check"]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "warnings only: {text}");
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("postern: warning: master.toml: service mirror/unix: "))
        .collect();
    assert_eq!(warnings.len(), 4, "{text}");
    for needle in [
        "min_procs = 0: no mirror process runs while no mail flows",
        "no wakeup: the mirror process starts its checks with the peer only at its first connection",
        "maxproc = 2: each mirror process checks with the peer on its own",
        "max_use = 100: the mirror process is replaced every 100 connections",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
    // max_idle no longer than the wakeup.
    let services = pipeline_services(free_port()) + &daemon_service("mirror", "unix", "", "mirror", MIRROR_SHORT_IDLE);
    let inst = Instance::new(&services, &settings);
    write_secret(&inst);
    let text = String::from_utf8_lossy(&inst.postern(&["check"]).stderr).to_string();
    assert!(
        text.contains("service mirror/unix: max_idle (60s) is not longer than wakeup (60s)"),
        "{text}"
    );
    assert_eq!(text.matches("service mirror/unix").count(), 1, "{text}");
}

/// A mirror unix service right but for its max_idle.
const MIRROR_SHORT_IDLE: &str = "maxproc = 1\nmin_procs = 1\nmax_use = 1000000\nmax_idle = \"60s\"\nwakeup = \"60s\"";

#[test]
fn postsuper_delete_drops_the_peers_copies() {
    // The peer: a mirror service on loopback.
    let mport = free_port();
    let mut peer = Instance::new(
        &mirror_services(&format!("127.0.0.1:{mport}")),
        &["queue_mirror_secret_file=mirror-secret"],
    );
    write_secret(&peer);
    peer.start();
    let (mut inst, port) = single(&format!("127.0.0.1:{mport}"), &["queue_mirror_unreachable=defer"]);
    let qmgr = qmgr_of(&inst, None);
    signal(qmgr, nix::sys::signal::Signal::SIGSTOP);
    let (ok, bad) = send_many(None, "127.0.0.1", port, "del", 3);
    assert_eq!(ok, 3, "{bad:?}");
    assert_eq!(count_files(&peer.queue().join("mirror")), 3);
    let out = std::process::Command::new(bin("postsuper"))
        .arg("-c")
        .arg(inst.etc())
        .args(["-d", "ALL"])
        .output()
        .expect("postsuper");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        wait_for(Duration::from_secs(5), || count_files(&peer.queue().join("mirror"))
            == 0),
        "the peer dropped the deleted messages' copies: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    signal(qmgr, nix::sys::signal::Signal::SIGCONT);
    // This node first: its mirror daemon's connection to the peer open would hold the
    // peer's mirror process (and its stop) until that connection's idle limit.
    let _ = inst.stop();
    let _ = peer.stop();
}
