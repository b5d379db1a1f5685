//! Issue 15, the hub side on loopback (no network namespaces): a mail hub with
//! `replica_domains` and two `replica_relays` copies each message for `example.test` to
//! two other Postern instances, the mailbox servers A and B, each copy its own delivery
//! with its own done mark; both file it under the same Maildir name
//! (`<hub secs>.G<guid>.replica`) with the same `X-Postern-GUID`, exactly once.
//!
//! The hub connects from 127.0.0.1, which A and B trust (`replica_hub_networks`); an
//! "outside" client sends from 127.0.0.9, whose `X-Postern-GUID` is removed.

use postern_tests::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How long a delivery may take before a test gives up (a limit, not a measurement).
const LIMIT: Duration = Duration::from_secs(60);

/// A Postern instance and its SMTP port.
struct Node {
    inst: Instance,
    port: u16,
}

impl Node {
    /// A mailbox server for example.test with users alice (and `more`), trusting the hub
    /// on 127.0.0.1.
    fn mailbox_server(more: &[&str]) -> Node {
        let port = free_port();
        let mut inst = Instance::new(
            &pipeline_services(port),
            &[
                "replica_hub_networks=[\"127.0.0.1/32\"]",
                "mynetworks=[\"127.0.0.0/8\"]",
            ],
        );
        add_user(&inst, "alice", "alice-pw");
        for u in more {
            add_user(&inst, u, "pw-of-someone");
        }
        inst.start();
        Node { inst, port }
    }

    /// A hub relaying example.test, copied to `a` and `b`.
    fn hub(a: &Node, b: &Node) -> Node {
        let port = free_port();
        let relays = format!(
            "replica_relays=[\"smtp:[127.0.0.1]:{}\", \"smtp:[127.0.0.1]:{}\"]",
            a.port, b.port
        );
        let mut inst = Instance::new(
            &pipeline_services(port),
            &[
                "myhostname=mh1.example.test",
                "mydestination=[\"localhost\"]",
                "relay_domains=[\"example.test\"]",
                "mynetworks=[\"127.0.0.0/8\"]",
                "replica_domains=[\"example.test\"]",
                &relays,
                "minimal_backoff_time=1s",
                "maximal_backoff_time=2s",
                "queue_run_delay=1s",
            ],
        );
        inst.start();
        Node { inst, port }
    }

    fn maildir(&self, user: &str) -> PathBuf {
        self.inst.root.path().join("var/mail").join(user)
    }

    /// The file names in `user`'s new/ and cur/.
    fn names(&self, user: &str) -> Vec<String> {
        let mut v: Vec<String> = ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.maildir(user).join(d)).ok())
            .flat_map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        v.sort();
        v
    }

    /// Base names (before `,S=` and `:2,`).
    fn bases(&self, user: &str) -> BTreeSet<String> {
        self.names(user)
            .iter()
            .map(|n| n.split([',', ':']).next().unwrap_or("").to_string())
            .collect()
    }

    /// Each message file's text.
    fn texts(&self, user: &str) -> Vec<String> {
        maildir_messages(&self.maildir(user))
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    fn flush(&self) {
        let out = Command::new(bin("postqueue"))
            .arg("-c")
            .arg(self.inst.etc())
            .arg("-f")
            .output()
            .expect("postqueue -f");
        assert!(
            out.status.success(),
            "postqueue -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn status(&self) -> String {
        String::from_utf8_lossy(&self.inst.postern(&["status"]).stdout).into_owned()
    }

    /// The copies `postern status` says relay `port` is owed.
    fn owed(&self, port: u16) -> Option<usize> {
        let key = format!("smtp:[127.0.0.1]:{port}");
        self.status()
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key.as_str()))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    }
}

/// Sends `n` messages to `rcpt` through 127.0.0.1:`port` from source address `from`,
/// each with Message-ID `<tag-i@test>` and the extra header lines `extra`.
fn send(port: u16, from: &str, rcpt: &str, tag: &str, n: usize, extra: &str) {
    python(&format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=30, source_address=({from:?}, 0))\n\
         for i in range({n}):\n\
         \x20   m = 'From: s@example.org\\r\\nTo: {rcpt}\\r\\nSubject: {tag} ' + str(i) + '\\r\\nMessage-ID: <{tag}-' + str(i) + '@test>\\r\\n{extra}\\r\\nbody ' + str(i) + '\\r\\n'\n\
         \x20   s.sendmail('s@example.org', [{rcpt:?}], m)\n\
         s.quit()\n"
    ));
}

/// Waits until `node`'s `user` has `n` messages; the names it has then.
fn wait_messages(node: &Node, user: &str, n: usize) -> Vec<String> {
    let ok = wait_for(LIMIT, || node.names(user).len() >= n);
    let names = node.names(user);
    assert!(
        ok,
        "{user} has {} of {n} messages: {names:?}\n{}",
        names.len(),
        node.inst.log()
    );
    names
}

/// The GUID of a replica base name.
fn guid_in(base: &str) -> String {
    base.split(".G")
        .nth(1)
        .and_then(|r| r.strip_suffix(".replica"))
        .unwrap_or("")
        .to_string()
}

/// Every message of `node`'s alice: a replica name, and its one X-Postern-GUID header
/// is the GUID of its name.
fn assert_replica_files(node: &Node) {
    for (name, text) in node.names("alice").iter().zip(node.texts("alice")) {
        let base = name.split([',', ':']).next().unwrap_or("");
        let g = guid_in(base);
        assert_eq!(g.len(), 32, "not a replica name: {name}");
        assert_eq!(header_values(&text, "X-Postern-GUID"), vec![g], "{name}");
    }
}

fn wait_queue_empty(node: &Node) {
    let empty = wait_for(LIMIT, || {
        ["incoming", "active", "deferred"]
            .iter()
            .all(|q| files_below(&node.inst.queue().join(q)).is_empty())
    });
    assert!(empty, "hub queue not empty:\n{}", node.inst.log());
}

#[test]
fn twenty_messages_reach_both_replicas_once_under_the_same_names() {
    let a = Node::mailbox_server(&[]);
    let b = Node::mailbox_server(&[]);
    let hub = Node::hub(&a, &b);
    send(hub.port, "127.0.0.1", "alice@example.test", "twenty", 20, "");
    wait_messages(&a, "alice", 20);
    wait_messages(&b, "alice", 20);
    wait_queue_empty(&hub);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.names("alice").len(), 20);
    assert_eq!(a.names("alice"), b.names("alice"), "same file names on A and B");
    assert_eq!(a.bases("alice").len(), 20, "20 different messages");
    assert_replica_files(&a);
    assert_replica_files(&b);
    let log = hub.inst.log();
    for node in [&a, &b] {
        let relay = format!("relay=127.0.0.1[127.0.0.1]:{}", node.port);
        let sent = log
            .lines()
            .filter(|l| l.contains(&relay) && l.contains("status=sent"))
            .count();
        assert_eq!(sent, 20, "20 copies logged as sent to {relay}:\n{log}");
    }
    assert_eq!(hub.owed(a.port), Some(0), "{}", hub.status());
    assert_eq!(hub.owed(b.port), Some(0), "{}", hub.status());
}

#[test]
fn a_stopped_replica_gets_exactly_its_missing_copies_later() {
    let a = Node::mailbox_server(&[]);
    let mut b = Node::mailbox_server(&[]);
    let hub = Node::hub(&a, &b);
    send(hub.port, "127.0.0.1", "alice@example.test", "before", 3, "");
    wait_messages(&b, "alice", 3);
    wait_messages(&a, "alice", 3);
    assert!(b.inst.stop().status.success());
    send(hub.port, "127.0.0.1", "alice@example.test", "while-down", 5, "");
    wait_messages(&a, "alice", 8);
    let owed = wait_for(LIMIT, || hub.owed(b.port) == Some(5));
    assert!(owed, "B should be owed 5 copies:\n{}", hub.status());
    assert_eq!(hub.owed(a.port), Some(0), "{}", hub.status());
    let status = hub.status();
    assert!(status.contains(&format!("127.0.0.1]:{}", b.port)), "{status}");
    b.inst.start();
    hub.flush();
    wait_messages(&b, "alice", 8);
    wait_queue_empty(&hub);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        a.names("alice"),
        b.names("alice"),
        "B caught up with exactly A's messages"
    );
    assert_eq!(b.bases("alice").len(), 8);
    assert_replica_files(&b);
    assert_eq!(hub.owed(b.port), Some(0), "{}", hub.status());
}

#[test]
fn a_requeued_message_keeps_its_guid_and_duplicates_nothing() {
    // postsuper -r resubmits the pending copy (B's) through cleanup: the copies are made
    // again for both relays, but under the same GUID, so A files nothing new.
    let a = Node::mailbox_server(&[]);
    let mut b = Node::mailbox_server(&[]);
    let hub = Node::hub(&a, &b);
    assert!(b.inst.stop().status.success());
    send(hub.port, "127.0.0.1", "alice@example.test", "requeued", 2, "");
    wait_messages(&a, "alice", 2);
    assert!(wait_for(LIMIT, || hub.owed(b.port) == Some(2)), "{}", hub.status());
    let out = Command::new(bin("postsuper"))
        .arg("-c")
        .arg(hub.inst.etc())
        .args(["-r", "ALL"])
        .output()
        .expect("postsuper -r");
    assert!(
        out.status.success(),
        "postsuper -r: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.inst.start();
    hub.flush();
    wait_messages(&b, "alice", 2);
    wait_queue_empty(&hub);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.names("alice").len(), 2, "{:?}", a.names("alice"));
    assert_eq!(a.names("alice"), b.names("alice"));
}

#[test]
fn kill_9_of_the_hubs_qmgr_and_smtp_duplicates_nothing() {
    let a = Node::mailbox_server(&[]);
    let b = Node::mailbox_server(&[]);
    let hub = Node::hub(&a, &b);
    let port = hub.port;
    let sender = std::thread::spawn(move || send(port, "127.0.0.1", "alice@example.test", "chaos", 20, ""));
    let master = hub.inst.master_pid();
    let mut killed = 0;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(150));
        for pid in children_of(master) {
            if matches!(comm(pid).as_deref(), Some("qmgr") | Some("smtp")) && kill9(pid) {
                killed += 1;
            }
        }
    }
    sender.join().expect("sender");
    assert!(killed > 0, "no qmgr or smtp process was killed");
    hub.flush();
    wait_messages(&a, "alice", 20);
    wait_messages(&b, "alice", 20);
    wait_queue_empty(&hub);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(a.names("alice").len(), 20, "exactly once on A: {:?}", a.names("alice"));
    assert_eq!(b.names("alice").len(), 20, "exactly once on B: {:?}", b.names("alice"));
    assert_eq!(a.names("alice"), b.names("alice"));
    println!("killed {killed} hub processes");
}

#[test]
fn a_copy_delivered_twice_is_filed_once() {
    // The window no SMTP client can close: the replica filed the copy, its 250 was lost,
    // the hub sends it again. Two queue files with the same trusted GUID on A.
    let a = Node::mailbox_server(&[]);
    let guid = "6a0c2f4e0123456789abcdef01234567";
    let msg = format!("X-Postern-GUID: {guid}\nSubject: twice\nMessage-ID: <twice@test>\n\nsame body\n");
    let rcpt = [("alice@example.test", postern_lib::queue_file::Notify::UNSPECIFIED)];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for _ in 0..2 {
        write_queue_file_arrived(&a.inst, "incoming", "s@example.org", &rcpt, &[], msg.as_bytes(), now);
    }
    a.flush();
    let done = wait_for(LIMIT, || a.inst.log_count("status=sent") >= 2);
    assert!(done, "{}", a.inst.log());
    let secs = u32::from_str_radix(&guid[..8], 16).unwrap();
    assert_eq!(a.bases("alice"), BTreeSet::from([format!("{secs}.G{guid}.replica")]));
    assert_eq!(a.names("alice").len(), 1);
    // Both copies are reported sent; when the two land in one delivery batch the second is
    // found at the link into new/, after its log text was made, so "(already there)" is
    // logged only when the copies come in separate batches.
    assert!(a.inst.log_count("already there") <= 1, "{}", a.inst.log());
}

#[test]
fn an_outside_clients_guid_is_removed() {
    let a = Node::mailbox_server(&[]);
    let b = Node::mailbox_server(&[]);
    let hub = Node::hub(&a, &b);
    let forged = "X-Postern-GUID: 00000000000000000000000000000001";
    // Straight to A from an untrusted address: an ordinary message, no GUID.
    send(
        a.port,
        "127.0.0.9",
        "alice@example.test",
        "direct",
        1,
        &format!("{forged}\\r\\n"),
    );
    let names = wait_messages(&a, "alice", 1);
    assert!(!names[0].contains(".replica"), "{names:?}");
    assert!(header_values(&a.texts("alice")[0], "X-Postern-GUID").is_empty());
    assert_eq!(a.inst.log_count("not in replica_hub_networks"), 1, "{}", a.inst.log());
    // Through the hub: the hub's own GUID replaces it.
    send(
        hub.port,
        "127.0.0.9",
        "alice@example.test",
        "via-hub",
        1,
        &format!("{forged}\\r\\n"),
    );
    wait_messages(&a, "alice", 2);
    wait_messages(&b, "alice", 1);
    let text = b.texts("alice").remove(0);
    let guids = header_values(&text, "X-Postern-GUID");
    assert_eq!(guids.len(), 1, "{text}");
    assert_ne!(guids[0], "00000000000000000000000000000001");
    assert_replica_files(&b);
}

#[test]
fn a_replica_refusing_with_5xx_keeps_its_copy_queued_until_fixed() {
    // carol exists on A only: B refuses her copy permanently. The copy is not bounced
    // but kept (loudly); once carol exists on B, the retry delivers it.
    let a = Node::mailbox_server(&["carol"]);
    let b = Node::mailbox_server(&[]);
    let hub = Node::hub(&a, &b);
    send(hub.port, "127.0.0.1", "carol@example.test", "refused", 1, "");
    wait_messages(&a, "carol", 1);
    let warned = wait_for(LIMIT, || hub.inst.log_count("replica copy refused permanently") >= 1);
    assert!(warned, "{}", hub.inst.log());
    assert!(wait_for(LIMIT, || hub.owed(b.port) == Some(1)), "{}", hub.status());
    assert!(hub.status().contains("refused"), "{}", hub.status());
    assert_eq!(
        hub.inst.log_count("notification:"),
        0,
        "no notice to the sender:\n{}",
        hub.inst.log()
    );
    // The smtp client's line for the refusal says deferred: the copy is not finished.
    assert_eq!(hub.inst.log_count("status=bounced"), 0, "{}", hub.inst.log());
    add_user(&b.inst, "carol", "pw-of-someone");
    hub.flush();
    wait_messages(&b, "carol", 1);
    wait_queue_empty(&hub);
    assert_eq!(a.names("carol"), b.names("carol"));
}

#[test]
fn an_address_every_replica_refuses_bounces_at_once() {
    // dave exists nowhere: both copies refused, the replicas agree, the sender is told.
    let a = Node::mailbox_server(&[]);
    let b = Node::mailbox_server(&[]);
    let hub = Node::hub(&a, &b);
    send(hub.port, "127.0.0.1", "dave@example.test", "nobody", 1, "");
    let told = wait_for(LIMIT, || hub.inst.log_count("sender non-delivery notification") == 1);
    assert!(told, "{}", hub.inst.log());
    assert_eq!(
        hub.inst.log_count("every replica refused this address"),
        2,
        "{}",
        hub.inst.log()
    );
    let bounced = format!("to=<dave@example.test>, relay=smtp:[127.0.0.1]:{}", b.port);
    let log = hub.inst.log();
    let line = log
        .lines()
        .find(|l| l.contains(&bounced) && l.contains("status="))
        .unwrap_or_default();
    assert!(line.contains("status=bounced"), "{log}");
    assert_eq!(hub.owed(a.port), Some(0), "{}", hub.status());
    assert_eq!(hub.owed(b.port), Some(0), "{}", hub.status());
}

#[test]
fn a_queue_file_from_before_routes_still_delivers() {
    let a = Node::mailbox_server(&[]);
    let rcpt = [("alice@example.test", postern_lib::queue_file::Notify::UNSPECIFIED)];
    let msg = b"Subject: old\nMessage-ID: <old@test>\n\nwritten before routes\n";
    write_queue_file(&a.inst, "incoming", "s@example.org", &rcpt, &[], msg);
    a.flush();
    let names = wait_messages(&a, "alice", 1);
    assert!(!names[0].contains(".replica"), "{names:?}");
    let texts = a.texts("alice");
    assert!(
        texts.iter().any(|t| t.contains("written before routes")),
        "{texts:?} {names:?}"
    );
}
