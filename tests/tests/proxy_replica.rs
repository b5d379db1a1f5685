//! The proxy's sync hooks (issue 15) with two mailbox servers on loopback: instance A
//! (auth, imapd, pop3d, the proxies, the replicator) and instance B (auth, imapd, the
//! replicator), each the other's replica peer with a shared secret. Messages are
//! delivered to A only.
//!
//! * After the login through A's proxy (its answer waits for the first sync) B already
//!   has every message.
//! * When the OK of a STORE, an EXPUNGE or an APPEND through the proxy arrives, the
//!   change is already in B's Maildir; after POP3 DELE and QUIT's +OK the message is
//!   gone from B.
//! * With B stopped, a STORE through the proxy still gets its OK (the change is on every
//!   reachable replica), and the proxy logs which peer is not in step.
//! * A message expunged on B (through B's own imapd, so A does not know yet) is not in
//!   the maildrop of a POP3 session through A's proxy: the proxy has the user synced
//!   before it logs in to A's pop3d, which fixes its listing at login; every message
//!   listed can be RETRed.

mod proxy_common;

use postern_tests::{
    Instance, add_master_user, add_user, auth_service, daemon_service, deliver_maildir, free_port, owned_mail_base,
};
use proxy_common::{ALICE_PW, Raw, contains, message, text};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// Whether this build has the replicator.
fn have_replicator() -> bool {
    postern_tests::bin("replicator").exists()
}

fn replica(name: &str, own: u16, peer: u16, extra: &str) -> Instance {
    let mut services = auth_service();
    services.push_str(&daemon_service(
        "imap",
        "inet",
        &format!("127.0.0.1:{}", free_port()),
        "imapd",
        "",
    ));
    services.push_str(&daemon_service(
        "replicator",
        "inet",
        &format!("127.0.0.1:{own}"),
        "replicator",
        "",
    ));
    services.push_str(&daemon_service("replicator", "unix", "", "replicator", ""));
    services.push_str(extra);
    let peers = format!("replica_peers=[\"127.0.0.1:{peer}\"]");
    let name = format!("replica_name={name}");
    let inst = Instance::new(
        &services,
        &[
            &peers,
            &name,
            "replica_secret_file=replica-secret",
            "replica_timeout=5s",
            "replica_sync_interval=1h",
            "auth_failure_delay=0s",
            "auth_master_users_file=master-users",
            "proxy_master_password_file=proxy-password",
        ],
    );
    std::fs::write(inst.etc().join("replica-secret"), "0123456789abcdef0123456789abcdef\n").expect("secret");
    std::fs::set_permissions(
        inst.etc().join("replica-secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    add_user(&inst, "alice", ALICE_PW);
    add_master_user(
        &inst,
        "proxy",
        proxy_common::MASTER_PW,
        "master-users",
        "proxy-password",
    );
    inst
}

fn maildir(inst: &Instance, folder: &str) -> PathBuf {
    let base = inst.root.path().join("var/mail/alice");
    if folder == "INBOX" {
        base
    } else {
        base.join(format!(".{folder}"))
    }
}

/// The message files of a Maildir folder: (base name, flags).
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(dir.join(sub)).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let (base, flags) = match n.split_once(":2,") {
                Some((b, f)) => (b.to_string(), f.to_string()),
                None => (n.clone(), String::new()),
            };
            out.push((base, flags));
        }
    }
    out.sort();
    out
}

/// The port of the first `listen = "127.0.0.1:PORT"` in `inst`'s master.toml (its imapd).
fn imap_port(inst: &Instance) -> String {
    std::fs::read_to_string(inst.etc().join("master.toml"))
        .expect("master.toml")
        .lines()
        .find_map(|l| {
            l.strip_prefix("listen = \"127.0.0.1:")
                .map(|p| p.trim_end_matches('"').to_string())
        })
        .expect("imap port")
}

/// A pair of replicas, both started, alice with 3 messages delivered to A only: (A, B,
/// A's IMAP proxy port, A's POP3 proxy port). The POP3 proxy's backends are `pop3_before`
/// and then A's pop3d.
fn pair(pop3_before: &[u16]) -> (Instance, Instance, u16, u16) {
    let (ra, rb, imap_proxy, pop3_proxy, pop3) = (free_port(), free_port(), free_port(), free_port(), free_port());
    let mut b = replica("b.test", rb, ra, "");
    let extra = format!(
        "{}{}{}",
        daemon_service("pop3", "inet", &format!("127.0.0.1:{pop3}"), "pop3d", ""),
        daemon_service(
            "imap-proxy",
            "inet",
            &format!("127.0.0.1:{imap_proxy}"),
            "proxy",
            "args = [\"imap\"]"
        ),
        daemon_service(
            "pop3-proxy",
            "inet",
            &format!("127.0.0.1:{pop3_proxy}"),
            "proxy",
            "args = [\"pop3\"]"
        ),
    );
    let mut a = replica("a.test", ra, rb, &extra);
    // the proxy's backends: A's own imapd and pop3d
    let imap_a = imap_port(&a);
    let out = a.postern(&[
        "config",
        "set",
        &format!("proxy_imap_backends=[\"127.0.0.1:{imap_a}\"]"),
        &format!(
            "proxy_pop3_backends=[{}]",
            pop3_before
                .iter()
                .chain([&pop3])
                .map(|p| format!("\"127.0.0.1:{p}\""))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in 1..=3 {
        deliver_maildir(&a, "alice", &format!("170000000{i}.M{i}.a"), &message(i, 10));
    }
    for inst in [&a, &b] {
        owned_mail_base(inst);
    }
    b.start();
    a.start();
    (a, b, imap_proxy, pop3_proxy)
}

#[test]
fn a_change_through_the_proxy_is_on_the_other_replica_when_ok_arrives() {
    if !have_replicator() {
        eprintln!("skipped: this build has no replicator");
        return;
    }
    let (a, mut b, imap_proxy, pop3_proxy) = pair(&[]);

    // the login's answer waits for the first sync: B has the messages then
    let mut c = Raw::connect(imap_proxy);
    c.take_until(b"\r\n", T);
    c.send(format!("L LOGIN alice {ALICE_PW}\r\n").as_bytes());
    let r = c.take_until(b"L OK", T);
    assert!(contains(&r, b"L OK"), "{}\n{}", text(&r), a.log());
    let on_b = files(&maildir(&b, "INBOX"));
    assert_eq!(
        on_b.len(),
        3,
        "B after the login: {on_b:?}\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
    assert_eq!(
        files(&maildir(&a, "INBOX")).iter().map(|f| &f.0).collect::<Vec<_>>(),
        on_b.iter().map(|f| &f.0).collect::<Vec<_>>(),
        "the same base names (POP3 UIDLs) on both"
    );

    // STORE: the flag is on B when the OK comes
    c.send(b"s SELECT INBOX\r\nt STORE 2 +FLAGS (\\Flagged)\r\n");
    let r = c.take_until(b"t OK", T);
    assert!(contains(&r, b"t OK"), "{}", text(&r));
    let on_b = files(&maildir(&b, "INBOX"));
    assert!(
        on_b.iter().filter(|f| f.1.contains('F')).count() == 1,
        "B after STORE: {on_b:?}\n{}",
        b.log()
    );

    // EXPUNGE
    c.send(b"u STORE 1 +FLAGS (\\Deleted)\r\nv EXPUNGE\r\n");
    let r = c.take_until(b"v OK", T);
    assert!(contains(&r, b"v OK"), "{}", text(&r));
    let on_b = files(&maildir(&b, "INBOX"));
    assert_eq!(on_b.len(), 2, "B after EXPUNGE: {on_b:?}");

    // APPEND
    let body = b"Subject: appended through the proxy\r\n\r\nhello B\r\n";
    c.send(format!("w APPEND INBOX {{{}+}}\r\n", body.len()).as_bytes());
    c.send(body);
    c.send(b"\r\n");
    let r = c.take_until(b"w OK", T);
    assert!(contains(&r, b"w OK"), "{}", text(&r));
    let got = postern_tests::maildir_messages(&maildir(&b, "INBOX"));
    assert!(got.iter().any(|m| m == body), "the APPEND is not on B when its OK came");
    c.send(b"z LOGOUT\r\n");
    c.read_to_close(T);

    // POP3: DELE and QUIT; the +OK to QUIT comes once B lacks the message too
    let mut p = Raw::connect(pop3_proxy);
    p.take_until(b"\r\n", T);
    p.send(format!("USER alice\r\nPASS {ALICE_PW}\r\nDELE 1\r\nQUIT\r\n").as_bytes());
    let r = p.read_to_close(T);
    assert_eq!(text(&r).matches("+OK").count(), 4, "{}", text(&r));
    let on_b = files(&maildir(&b, "INBOX"));
    assert_eq!(on_b.len(), 2, "B after POP3 DELE and QUIT: {on_b:?}\n{}", a.log());
    assert_eq!(files(&maildir(&a, "INBOX")).len(), 2);
    let log = a.log();
    assert!(!log.contains("not in step") && !log.contains("sync of alice"), "{log}");

    // B is down: the change is made on A, the OK still comes, the failure is logged
    b.stop();
    let mut c = Raw::connect(imap_proxy);
    c.take_until(b"\r\n", T);
    c.send(format!("L LOGIN alice {ALICE_PW}\r\ns SELECT INBOX\r\nt STORE 1 +FLAGS (\\Seen)\r\n").as_bytes());
    let r = c.take_until(b"t OK", T);
    assert!(contains(&r, b"t OK"), "{}\n{}", text(&r), a.log());
    assert!(
        a.log().contains("sync of alice after a change: peer 127.0.0.1:"),
        "{}",
        a.log()
    );
}

#[test]
fn pop3_through_the_proxy_lists_only_what_the_replicas_have_after_the_sync() {
    // (the first POP3 backend refuses the master login: after the sync the next one is
    // logged in to, and the sync is not repeated)
    if !have_replicator() {
        eprintln!("skipped: this build has no replicator");
        return;
    }
    let (refusing, seen) = refusing_pop3(2);
    let (a, b, _imap_proxy, pop3_proxy) = pair(&[refusing]);

    // a first session through the proxy brings B in step (3 messages)
    let mut p = Raw::connect(pop3_proxy);
    p.take_until(b"\r\n", T);
    p.send(format!("USER alice\r\nPASS {ALICE_PW}\r\nSTAT\r\nQUIT\r\n").as_bytes());
    let r = p.read_to_close(T);
    assert!(contains(&r, b"+OK 3 "), "{}\n{}", text(&r), a.log());
    assert_eq!(files(&maildir(&b, "INBOX")).len(), 3, "{}", b.log());

    // message 1 is expunged on B through B's own imapd: A does not know yet
    let mut c = Raw::connect(imap_port(&b).parse().expect("port"));
    c.take_until(b"\r\n", T);
    c.send(
        format!("l LOGIN alice {ALICE_PW}\r\ns SELECT INBOX\r\nt STORE 1 +FLAGS (\\Deleted)\r\ne EXPUNGE\r\n")
            .as_bytes(),
    );
    let r = c.take_until(b"e OK", T);
    assert!(contains(&r, b"e OK"), "{}\n{}", text(&r), b.log());
    c.send(b"z LOGOUT\r\n");
    c.read_to_close(T);
    assert_eq!(files(&maildir(&b, "INBOX")).len(), 2);
    assert_eq!(files(&maildir(&a, "INBOX")).len(), 3, "A before the next session");

    // through A's proxy: pop3d on A logs in after the sync, so it lists 2, and both RETR
    let mut p = Raw::connect(pop3_proxy);
    p.take_until(b"\r\n", T);
    p.send(format!("USER alice\r\nPASS {ALICE_PW}\r\nSTAT\r\nRETR 1\r\nRETR 2\r\nQUIT\r\n").as_bytes());
    let r = p.read_to_close(T);
    let t = text(&r);
    assert!(contains(&r, b"+OK 2 "), "STAT through A's proxy: {t}\n{}", a.log());
    assert!(!t.contains("-ERR"), "{t}\n{}", a.log());
    assert_eq!(t.matches("\r\n.\r\n").count(), 2, "two messages RETRed: {t}");
    assert_eq!(files(&maildir(&a, "INBOX")).len(), 2, "A after the sync");
    let log = a.log();
    let synced = log
        .rfind("proxy: synced alice before the login")
        .expect("the sync is logged");
    assert!(
        log[synced..].contains("master user proxy logged in as alice"),
        "the backend login after the sync: {log}"
    );
    let seen = seen.join().expect("fake backend");
    assert_eq!(seen.matches("USER alice*proxy\r\n").count(), 2, "{seen}");
    let refused = format!("backend 127.0.0.1:{refusing}: master login refused");
    assert_eq!(log.matches(&refused).count(), 2, "{log}");
    assert_eq!(log.matches("proxy: synced alice before the login").count(), 2, "{log}");
    assert!(log[synced..].contains(&refused), "the refusal after the sync: {log}");
}

/// A fake POP3 backend on a thread for `sessions` sessions: greets, takes USER, refuses
/// PASS; returns its port and the lines it received (PASS lines without the password).
fn refusing_pop3(sessions: usize) -> (u16, std::thread::JoinHandle<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let t = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let mut got = String::new();
        for _ in 0..sessions {
            let (s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(T)).expect("timeout");
            let mut w = s.try_clone().expect("clone");
            let mut r = std::io::BufReader::new(s);
            w.write_all(b"+OK fake ready\r\n").expect("greet");
            let mut line = String::new();
            r.read_line(&mut line).expect("USER");
            got.push_str(&line);
            w.write_all(b"+OK\r\n").expect("ok");
            line.clear();
            r.read_line(&mut line).expect("PASS");
            got.push_str(if line.starts_with("PASS ") { "PASS\r\n" } else { &line });
            w.write_all(b"-ERR [AUTH] fake refuses\r\n").expect("err");
        }
        got
    });
    (port, t)
}
