//! The replicator (issue 15) between two Postern instances on loopback, A and B, each
//! with auth, imapd, pop3d and the replicator (inet on its own port, the other as
//! `replica_peers`, a shared secret). Changes are made through the real imapd and pop3d
//! of either side, hub copies put into both Maildirs under the same name; a `Sync`
//! request through the local socket (`private/replicator`) must leave both Maildirs
//! agreeing: the same folders with the same UIDVALIDITY, the same base names under the
//! same UIDs in `dovecot-uidlist`, the same flags. Then B is stopped, A changed, B
//! started again: after a sync B has caught up and a message expunged meanwhile did not
//! come back. And a peer that answers garbage, or sends it, is a log line and an error,
//! not a crash; a peer that hangs costs one `replica_timeout`, and `postern status` shows
//! either peer unreachable with the reason. A uidlist lock a killed server left written
//! does not keep INBOX from the merge or SELECT (the soak's B without INBOX).

use postern_lib::proto::replica::{self, PeerState, ReplicaReply, ReplicaRequest};
use postern_tests::{Instance, add_user, auth_service, daemon_service, free_port, owned_mail_base, python_args};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PW: &str = "alice-pw";

struct Node {
    inst: Instance,
    imap: u16,
    pop3: u16,
}

fn node(name: &str, own: u16, peer: &str) -> Node {
    node_every(name, own, peer, "1h")
}

fn node_every(name: &str, own: u16, peer: &str, interval: &str) -> Node {
    let (imap, pop3) = (free_port(), free_port());
    let mut services = auth_service();
    services.push_str(&daemon_service(
        "imap",
        "inet",
        &format!("127.0.0.1:{imap}"),
        "imapd",
        "",
    ));
    services.push_str(&daemon_service(
        "pop3",
        "inet",
        &format!("127.0.0.1:{pop3}"),
        "pop3d",
        "",
    ));
    services.push_str(&daemon_service(
        "replicator",
        "inet",
        &format!("127.0.0.1:{own}"),
        "replicator",
        "",
    ));
    services.push_str(&daemon_service(
        "replicator",
        "unix",
        "",
        "replicator",
        "maxproc = 1\nmax_use = 1000000\nmax_idle = \"1d\"",
    ));
    let peers = format!("replica_peers=[\"{peer}\"]");
    let name = format!("replica_name={name}");
    let inst = Instance::new(
        &services,
        &[
            &peers,
            &name,
            "replica_secret_file=replica-secret",
            "replica_timeout=5s",
            &format!("replica_sync_interval={interval}"),
            "auth_failure_delay=0s",
        ],
    );
    let secret = inst.etc().join("replica-secret");
    std::fs::write(&secret, "the-shared-secret-of-this-test\n").expect("secret");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    add_user(&inst, "alice", PW);
    owned_mail_base(&inst);
    Node { inst, imap, pop3 }
}

fn pair() -> (Node, Node) {
    pair_every("1h")
}

fn pair_every(interval: &str) -> (Node, Node) {
    let (pa, pb) = (free_port(), free_port());
    let mut a = node_every("mba", pa, &format!("127.0.0.1:{pb}"), interval);
    let mut b = node_every("mbb", pb, &format!("127.0.0.1:{pa}"), interval);
    a.inst.start();
    b.inst.start();
    (a, b)
}

fn mailbox(n: &Node) -> PathBuf {
    n.inst.root.path().join("var/mail/alice")
}

/// A hub's copy: the same name (and so GUID and UIDL) on both servers.
fn hub_copy(nodes: &[&Node], k: u32) {
    // as local delivery names it: the replica base name and the size field
    let text = format!("Message-ID: <{k}@hub.test>\r\nSubject: message {k}\r\n\r\nbody {k}\r\n");
    let name = format!("{}.G{:032x}.replica,S={}", 1_765_000_000 + k, 0xabc000 + k, text.len());
    for n in nodes {
        let md = mailbox(n);
        for d in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(md.join(d)).expect("mkdir");
        }
        std::fs::write(md.join("tmp").join(&name), &text).expect("write");
        std::fs::rename(md.join("tmp").join(&name), md.join("new").join(&name)).expect("rename");
    }
    for n in nodes {
        owned_mail_base(&n.inst);
    }
}

fn sync(n: &Node) -> ReplicaReply {
    replica::request(
        &n.inst.queue().join(replica::SOCKET),
        &ReplicaRequest::Sync { user: "alice".into() },
        Duration::from_secs(30),
    )
    .expect("ask the replicator")
}

fn synced_with_all(r: &ReplicaReply) {
    match r {
        ReplicaReply::Synced { in_step, unreachable } => {
            assert_eq!(in_step.len(), 1, "{r:?}");
            assert!(unreachable.is_empty(), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// Runs an imaplib script against `port` logged in as alice (`M` is the connection).
fn imap(port: u16, body: &str) -> String {
    let script = format!(
        "import imaplib,sys\nM=imaplib.IMAP4('127.0.0.1',{port})\nM.login('alice','{PW}')\n{body}\nM.logout()\n"
    );
    let (ok, out, err) = python_args(&script, &[]);
    assert!(ok, "imap script failed:\n{script}\n{out}\n{err}");
    out
}

/// Per folder: UIDVALIDITY and (UID, base name, flags) from `dovecot-uidlist` and the
/// file names; the subscriptions.
type State = (BTreeMap<String, (String, Vec<(u32, String, String)>)>, Vec<String>);

fn state(root: &Path) -> State {
    state_of(root, true)
}

/// [`state`]; `strict`: every message file must have a UID (not while mail arrives).
fn state_of(root: &Path, strict: bool) -> State {
    let mut folders = BTreeMap::new();
    if !strict && !root.is_dir() {
        return (folders, Vec::new());
    }
    let mut dirs = vec![("INBOX".to_string(), root.to_path_buf())];
    for e in std::fs::read_dir(root).expect("read mailbox").flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(f) = n.strip_prefix('.')
            && e.path().join("cur").is_dir()
        {
            dirs.push((f.to_string(), e.path()));
        }
    }
    for (name, dir) in dirs {
        let list = std::fs::read_to_string(dir.join("dovecot-uidlist")).unwrap_or_default();
        let validity = list
            .lines()
            .next()
            .and_then(|h| h.split(' ').find(|f| f.starts_with('V')))
            .unwrap_or("")
            .to_string();
        let mut files = BTreeMap::new();
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(dir.join(sub)).into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let (base, fl) = n
                    .split_once(":2,")
                    .map_or((n.clone(), String::new()), |(b, f)| (b.into(), f.into()));
                files.insert(base, fl);
            }
        }
        let mut msgs = Vec::new();
        for l in list.lines().skip(1) {
            let Some((head, base)) = l.split_once(':') else {
                continue;
            };
            let uid: u32 = head.split(' ').next().and_then(|u| u.parse().ok()).unwrap_or(0);
            if let Some(fl) = files.remove(base) {
                msgs.push((uid, base.to_string(), fl));
            }
        }
        assert!(!strict || files.is_empty(), "{name}: files without a UID: {files:?}");
        folders.insert(name, (validity, msgs));
    }
    let mut subs: Vec<String> = std::fs::read_to_string(root.join("subscriptions"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    subs.sort();
    (folders, subs)
}

/// Node `n`'s row for `peer` in `postern status` (the replication table).
fn peer_row(n: &Node, peer: &str) -> String {
    let st = String::from_utf8_lossy(&n.inst.postern(&["status"]).stdout).into_owned();
    st.lines()
        .find(|l| l.split_whitespace().next() == Some(peer))
        .unwrap_or_else(|| panic!("no row for {peer} in postern status:\n{st}"))
        .to_string()
}

fn agree(a: &Node, b: &Node) -> State {
    let (sa, sb) = (state(&mailbox(a)), state(&mailbox(b)));
    assert_eq!(sa, sb, "the two replicas differ");
    sa
}

fn bases(s: &State, folder: &str) -> Vec<String> {
    s.0[folder].1.iter().map(|m| m.1.clone()).collect()
}

#[test]
fn changes_on_either_side_through_imapd_and_pop3d_end_up_on_both() {
    let (a, b) = pair();
    for k in 1..=6 {
        hub_copy(&[&a, &b], k);
    }
    // first contact: each server made its INBOX itself
    synced_with_all(&sync(&a));
    let s = agree(&a, &b);
    assert_eq!(s.0["INBOX"].1.len(), 6);
    // IMAP on A: flags, a keyword, an expunge, a folder with a message, a subscription
    imap(
        a.imap,
        "M.select('INBOX')\nM.uid('STORE','1','+FLAGS','(\\\\Seen)')\nM.uid('STORE','2','+FLAGS','($Work \\\\Flagged)')\n\
         M.uid('STORE','3','+FLAGS','(\\\\Deleted)')\nM.expunge()\nM.create('Work')\nM.subscribe('Work')\n\
         M.append('Work','(\\\\Seen)',None,b'Subject: filed on A\\r\\n\\r\\nhello\\r\\n')",
    );
    // IMAP on B at the same time: another flag, a folder of its own; an APPEND that takes
    // the same UID as one on A
    imap(
        b.imap,
        "M.select('INBOX')\nM.uid('STORE','4','+FLAGS','(\\\\Answered)')\nM.create('Projects')\n\
         M.append('INBOX',None,None,b'Subject: appended on B\\r\\n\\r\\nhi\\r\\n')",
    );
    imap(
        a.imap,
        "M.append('INBOX',None,None,b'Subject: appended on A\\r\\n\\r\\nhi\\r\\n')",
    );
    // POP3 on B: DELE the fifth hub copy
    let pop = format!(
        "import poplib\nP=poplib.POP3('127.0.0.1',{})\nP.user('alice')\nP.pass_('{PW}')\n\
         ids=[l.split()[1].decode() for l in P.uidl()[1]]\nn=[i for i,u in enumerate(ids) if u.startswith('1765000005.')][0]\nP.dele(n+1)\nP.quit()\n",
        b.pop3
    );
    let (ok, out, err) = python_args(&pop, &[]);
    assert!(ok, "{out}{err}");
    synced_with_all(&sync(&b));
    let s = agree(&a, &b);
    let inbox = &s.0["INBOX"].1;
    let hub: Vec<String> = bases(&s, "INBOX")
        .into_iter()
        .filter(|b| b.contains(".replica"))
        .collect();
    assert_eq!(hub.len(), 4, "{inbox:?}");
    assert!(
        !hub.iter()
            .any(|b| b.starts_with("1765000003.") || b.starts_with("1765000005."))
    );
    assert_eq!(inbox.len(), 6, "4 hub copies and the two appends: {inbox:?}");
    let flags_of = |prefix: &str| {
        inbox
            .iter()
            .find(|m| m.1.starts_with(prefix))
            .map(|m| m.2.clone())
            .unwrap()
    };
    assert_eq!(flags_of("1765000001."), "S");
    assert!(flags_of("1765000002.").contains('F'), "{inbox:?}");
    assert_eq!(flags_of("1765000004."), "R");
    // the two appends had the same UID: A's keeps it (A, mba, is the pair's primary: every
    // proxy reads it, so its UIDs win), B's was given a fresh one above
    let appended: Vec<u32> = inbox
        .iter()
        .filter(|m| !m.1.contains(".replica"))
        .map(|m| m.0)
        .collect();
    assert_eq!(appended, vec![7, 8], "{inbox:?}");
    let seventh = "M.select('INBOX')\nprint(M.uid('FETCH','7:8','(BODY.PEEK[HEADER.FIELDS (SUBJECT)])'))";
    let out = imap(b.imap, seventh);
    assert!(out.find("appended on A") < out.find("appended on B"), "{out}");
    assert_eq!(out, imap(a.imap, seventh));
    assert_eq!(s.0["Work"].1.len(), 1);
    assert!(s.0.contains_key("Projects"));
    assert!(s.1.contains(&"Work".to_string()));
    // the keyword is on B too, as IMAP shows it
    let out = imap(
        b.imap,
        "M.select('INBOX')\ntyp,d=M.uid('FETCH','1:*','(FLAGS)')\nprint([x for x in d if b'$Work' in x])",
    );
    assert!(out.contains("$Work"), "{out}");
    // status shows the peer in step
    let st = String::from_utf8_lossy(&a.inst.postern(&["status"]).stdout).into_owned();
    assert!(
        st.lines().any(|l| l.contains("127.0.0.1:") && l.contains("in step")),
        "{st}"
    );
}

#[test]
fn a_replica_that_was_stopped_catches_up_without_expunged_mail_coming_back() {
    let (a, mut b) = pair();
    for k in 1..=10 {
        hub_copy(&[&a, &b], k);
    }
    synced_with_all(&sync(&a));
    agree(&a, &b);
    assert!(b.inst.stop().status.success());
    // while B is down: mail arrives at A (B's copies wait at the hub), A's user reads,
    // flags, deletes and files
    for k in 11..=20 {
        hub_copy(&[&a], k);
    }
    imap(
        a.imap,
        "M.select('INBOX')\nM.uid('STORE','1:5','+FLAGS','(\\\\Seen)')\nM.uid('STORE','6,7,12','+FLAGS','(\\\\Deleted)')\n\
         M.expunge()\nM.create('Archive2')\nM.uid('COPY','8','Archive2')",
    );
    match sync(&a) {
        ReplicaReply::Synced { in_step, unreachable } => {
            assert!(in_step.is_empty());
            assert_eq!(unreachable.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    let st = String::from_utf8_lossy(&a.inst.postern(&["status"]).stdout).into_owned();
    assert!(st.contains("unreachable"), "{st}");
    let status = replica::request(
        &a.inst.queue().join(replica::SOCKET),
        &ReplicaRequest::Status,
        Duration::from_secs(10),
    )
    .expect("status");
    let ReplicaReply::Status { peers } = status else {
        panic!()
    };
    assert_eq!(peers[0].state, PeerState::Unreachable);
    assert_eq!(peers[0].users_pending, 1);
    assert!(peers[0].last_error.is_some());
    // B is back; the hub delivers B's copies, including the one A's user deleted
    b.inst.start();
    for k in 11..=20 {
        hub_copy(&[&b], k);
    }
    synced_with_all(&sync(&b));
    let s = agree(&a, &b);
    let hub: Vec<String> = bases(&s, "INBOX");
    assert_eq!(hub.len(), 17, "{hub:?}");
    assert!(
        !hub.iter()
            .any(|b| b.starts_with("1765000006.") || b.starts_with("1765000007."))
    );
    assert!(
        !hub.iter().any(|b| b.starts_with("1765000012.")),
        "expunged on A, came back: {hub:?}"
    );
    assert_eq!(s.0["INBOX"].1.iter().filter(|m| m.2.contains('S')).count(), 5);
    assert_eq!(s.0["Archive2"].1.len(), 1);
    // a second sync from either side changes nothing
    synced_with_all(&sync(&a));
    assert_eq!(agree(&a, &b), s);
}

#[test]
fn a_peer_that_answers_or_sends_garbage_is_an_error_and_a_log_line() {
    // A's peer is a program that answers an SMTP banner
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake = l.local_addr().expect("addr").to_string();
    let t = std::thread::spawn(move || {
        for s in l.incoming().take(2) {
            let mut s = s.expect("accept");
            let _ = s.write_all(b"220 not a replicator\r\n\x00\x00\x00\x05M{}{}");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
        }
    });
    let port = free_port();
    let mut a = node("mba", port, &fake);
    a.inst.start();
    hub_copy(&[&a], 1);
    for _ in 0..2 {
        match sync(&a) {
            ReplicaReply::Synced { in_step, unreachable } => {
                assert!(in_step.is_empty());
                assert_eq!(unreachable.len(), 1);
                assert!(unreachable[0].0 == fake, "{unreachable:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    t.join().expect("fake peer");
    assert!(a.inst.log_count(&format!("peer={fake}")) >= 2, "{}", a.inst.log());
    // `postern status` says which peer is behind and why
    let row = peer_row(&a, &fake);
    assert!(
        row.contains("unreachable") && row.contains(&format!("{fake}: ")),
        "{row}"
    );
    // garbage sent to A's replicator port: the connection is closed, A still serves
    for garbage in [&b"GET / HTTP/1.0\r\n\r\n"[..], &[0xff, 0xff, 0xff, 0xff, b'M'][..]] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let _ = s.write_all(garbage);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    assert!(
        postern_tests::wait_for(Duration::from_secs(10), || a.inst.log_count("replicator") > 0
            && a.inst.log().lines().any(|l| l.contains("peer 127.0.0.1:"))),
        "{}",
        a.inst.log()
    );
    match sync(&a) {
        ReplicaReply::Synced { unreachable, .. } => assert_eq!(unreachable.len(), 1),
        other => panic!("{other:?}"),
    }
    assert!(!a.inst.log().contains("panicked"), "{}", a.inst.log());
}

/// A peer that takes the connection and never answers (a hung replicator, a frozen
/// host): a `Sync` (what the proxy waits for before its OK) answers within
/// `replica_timeout` with that peer not in step and why, the next one does not wait again
/// (the sweep retries the peer), and `postern status` shows the peer unreachable with the
/// reason.
#[test]
fn a_peer_that_hangs_costs_one_timeout_and_status_says_why() {
    // a listener that never accepts: the connection is made, no answer ever comes
    let hang = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = hang.local_addr().expect("addr").to_string();
    let mut a = node("mba", free_port(), &peer);
    a.inst.start();
    hub_copy(&[&a], 1);
    let not_in_step = |r: ReplicaReply| match r {
        ReplicaReply::Synced { in_step, unreachable } => {
            assert!(in_step.is_empty(), "{in_step:?}");
            assert_eq!(unreachable.len(), 1, "{unreachable:?}");
            assert_eq!(unreachable[0].0, peer);
            unreachable[0].1.clone()
        }
        other => panic!("{other:?}"),
    };
    let t = std::time::Instant::now();
    let why = not_in_step(sync(&a));
    let took = t.elapsed();
    assert!(why.contains("timed out"), "{why}");
    // replica_timeout=5s
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(20),
        "{took:?}"
    );
    let t = std::time::Instant::now();
    let why = not_in_step(sync(&a));
    assert!(why.contains("retried later"), "{why}");
    // Not a second replica_timeout (5 s): the peer is known to be silent.
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let row = peer_row(&a, &peer);
    assert!(row.contains("unreachable") && row.contains("timed out"), "{row}");
    assert!(
        a.inst.log().contains(&format!("user=alice peer={peer}: not in step")),
        "{}",
        a.inst.log()
    );
    drop(hang);
}

#[test]
fn the_background_sweep_carries_changes_without_a_sync_request() {
    let (a, b) = pair_every("1s");
    for k in 1..=3 {
        hub_copy(&[&a], k);
    }
    // the first request to the local service starts the sweep (master's wakeup does in a
    // real installation)
    for n in [&a, &b] {
        let r = replica::request(
            &n.inst.queue().join(replica::SOCKET),
            &ReplicaRequest::Status,
            Duration::from_secs(10),
        )
        .expect("status");
        assert!(matches!(r, ReplicaReply::Status { .. }), "{r:?}");
    }
    let on_b = |k: u32| {
        state_of(&mailbox(&b), false)
            .0
            .get("INBOX")
            .is_some_and(|f| f.1.iter().any(|m| m.1.starts_with(&format!("{}.", 1_765_000_000 + k))))
    };
    assert!(
        postern_tests::wait_for(Duration::from_secs(30), || (1..=3).all(on_b)),
        "B did not get A's messages: {:?}",
        state_of(&mailbox(&b), false)
    );
    // a flag set through B's imapd reaches A by B's sweep
    imap(
        b.imap,
        "M.select('INBOX')\nM.uid('STORE','1:*','+FLAGS','(\\\\Flagged)')",
    );
    assert!(
        postern_tests::wait_for(Duration::from_secs(30), || {
            let s = state_of(&mailbox(&a), false);
            s.0["INBOX"].1.len() == 3 && s.0["INBOX"].1.iter().all(|m| m.2.contains('F'))
        }),
        "A did not get B's flags: {:?}",
        state_of(&mailbox(&a), false)
    );
    postern_tests::wait_for(Duration::from_secs(10), || {
        state_of(&mailbox(&a), false) == state_of(&mailbox(&b), false)
    });
    agree(&a, &b);
}

/// A client failing over from A to B sees the same MAILBOXID (the uidlist's mailbox GUID)
/// and the same special use given at CREATE (RFC 6154 CREATE-SPECIAL-USE): a folder made on
/// A, and INBOX, which each server created on its own at the first delivery.
#[test]
fn mailboxid_and_special_use_are_the_same_on_both() {
    let (a, b) = pair();
    hub_copy(&[&a, &b], 1);
    let create = imap(a.imap, "print(M._simple_command('CREATE','Outbox','(USE (\\\\Sent))'))");
    assert!(create.contains("'OK'"), "{create}");
    synced_with_all(&sync(&a));
    let ask = "for f in ('INBOX','Outbox'):\n  print(M.status(f,'(MAILBOXID)'))\nprint(sorted(M.list()[1]))";
    let (on_a, on_b) = (imap(a.imap, ask), imap(b.imap, ask));
    assert!(on_a.contains("MAILBOXID (F"), "{on_a}");
    assert!(
        on_b.lines().any(|l| l.contains("Sent") && l.contains("Outbox")),
        "{on_b}"
    );
    assert_eq!(on_a, on_b);
}

/// The soak's B without INBOX (issue 15): a mailbox server killed (SIGKILL) between
/// writing the new list into INBOX's `dovecot-uidlist.lock` and renaming it over
/// `dovecot-uidlist` leaves that lock written and held by no process. Mail arriving
/// afterwards needs the lock for its UIDs: every SELECT of INBOX and every merge of it
/// waited out the lock wait and failed until the two-minute stale limit (B's IMAP state
/// had no INBOX). The lock is broken a few seconds after its maker died: B comes back,
/// takes the hub's copies and the merge and SELECT of INBOX succeed.
#[test]
fn a_written_uidlist_lock_left_by_a_killed_server_does_not_hide_inbox() {
    let (a, mut b) = pair();
    for k in 1..=3 {
        hub_copy(&[&a, &b], k);
    }
    synced_with_all(&sync(&a));
    agree(&a, &b);
    assert!(b.inst.stop().status.success());
    // what the kill left: the next list written into the lock, its maker gone 6 s ago
    let lock = mailbox(&b).join("dovecot-uidlist.lock");
    let list = std::fs::read_to_string(mailbox(&b).join("dovecot-uidlist")).expect("uidlist");
    let left = std::fs::File::create(&lock).expect("lock");
    (&left)
        .write_all(format!("{list}9 :1765000099.G00000000000000000000000000000099.replica,S=9\n").as_bytes())
        .expect("write lock");
    left.set_modified(std::time::SystemTime::now() - Duration::from_secs(6))
        .expect("age");
    drop(left);
    for k in 4..=6 {
        hub_copy(&[&a, &b], k);
    }
    b.inst.start();
    synced_with_all(&sync(&b));
    assert!(!lock.exists(), "the dead process's lock is gone");
    let s = agree(&a, &b);
    assert_eq!(bases(&s, "INBOX").len(), 6, "{s:?}");
    let out = imap(b.imap, "print(M.select('INBOX'))");
    assert!(out.contains("'OK', [b'6']"), "{out}");
}
