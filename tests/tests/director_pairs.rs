//! The director (issue 16) over real pairs: each pair is two replicated mailbox servers
//! (imapd, pop3d, the proxies, the replicator) in their own network namespaces, the
//! director a fifth kind of host with the IMAP and POP3 proxies and `director_pairs`, the
//! client another; all on one bridge, addresses from 198.18.1.0/24 only inside the
//! namespaces (tests/director_fleet/mod.rs builds it). A login goes client → director →
//! the user's pair's proxy (which syncs the two nodes before the login and before every
//! OK to a change) → that node's imapd/pop3d.
//!
//! - `three_pairs_300_users_and_a_fourth_pair_takes_a_quarter`: 300 users on three
//!   pairs (three messages each, one flagged, a folder; every tenth user also changes its
//!   mailbox through the director); every IMAP login through the director, and POP3
//!   logins of ten users per pair, reach the user's pair (the user's messages, the
//!   director's log); both nodes of the pair hold the same mailbox (UIDVALIDITY, UIDs,
//!   Message-IDs, flags, folders, read on each node's own imapd) and no other pair holds
//!   it. A fourth pair added (`postern user pin`, the pair, reload, `postern user
//!   rebalance`): between 20 and 30 % of the users move, all to the new pair; both of its
//!   nodes hold each moved mailbox as it was, the old pair's two copies are emptied, and
//!   through the director every user sees what it saw before, POP3 UIDLs included.
//! - `user_move_under_an_imap_session_that_keeps_reading`: with a hub whose copies follow
//!   the director (`smtp=` in `director_pairs`), `postern user move` while a client reads
//!   and sets \Seen through the director; the client is cut once, reconnects to the new
//!   pair and never sees a message missing or a new UIDVALIDITY; every \Seen it was told
//!   OK about is on both new nodes, and POP3 UIDLs are the same as before. Mail the hub
//!   takes before the move is on both old nodes and moves with the mailbox; mail it takes
//!   after lands on both new nodes only.
//!
//! Needs root, iproute2 and python3 (skipped with the reason recorded otherwise, failed
//! under CI=true).

mod director_fleet;

use director_fleet::*;
use postern_lib::director::Ring;
use postern_tests::{require_root, require_tool};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn can_run() -> bool {
    require_root("network namespaces") && require_tool("ip", "iproute2") && require_tool("python3", "python3")
}

/// Fails with the user's facts on every node when two views differ.
fn assert_same(what: &str, user: &str, a: Option<&Vec<String>>, b: Option<&Vec<String>>) {
    assert!(
        a.is_some_and(|v| !v.is_empty()),
        "{what}: {user}: nothing in the first view"
    );
    assert_eq!(a, b, "{what}: {user}");
}

#[test]
fn three_pairs_300_users_and_a_fourth_pair_takes_a_quarter() {
    if !can_run() {
        return;
    }
    let t0 = Instant::now();
    let users: Vec<String> = (0..300).map(|i| format!("u{i:03}")).collect();
    let ring3 = Ring::new(&["p1", "p2", "p3"], 128);
    let ring4 = Ring::new(&["p1", "p2", "p3", "p4"], 128);
    let home3: BTreeMap<&str, usize> = users
        .iter()
        .map(|u| (u.as_str(), ring3.locate(u).expect("pair")))
        .collect();
    // three messages per user on node a of the user's pair, one flagged, a folder Kept
    // with a copy; node b gets them from the replicators
    let fleet = Fleet::new("pst-dp-", 4, 3, &users, false, |pair, u| {
        if ring3.locate(u) == Some(pair) { 3 } else { 0 }
    });
    let t = Instant::now();
    assert!(
        fleet.wait_replicated(Duration::from_secs(90)),
        "node b of every pair holds what node a holds"
    );
    eprintln!(
        "fleet up in {:.1} s, replicated to the b nodes in {:.1} s",
        t.duration_since(t0).as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    let users_on = |pair: usize, ring: &Ring| -> Vec<String> {
        users.iter().filter(|u| ring.locate(u) == Some(pair)).cloned().collect()
    };
    let per_pair: Vec<usize> = (0..3).map(|i| users_on(i, &ring3).len()).collect();
    eprintln!("users per pair: {per_pair:?}");

    // every IMAP login reaches the user's pair: its messages, and the director's log
    // names node a of that pair (the pair's proxy, first in the pair's list); every tenth
    // user also changes the mailbox through the director (a flag, a copy: each synced to
    // node b before the OK)
    let changers: Vec<String> = users.iter().step_by(10).cloned().collect();
    let readers: Vec<String> = users.iter().filter(|u| !changers.contains(u)).cloned().collect();
    let t = Instant::now();
    let mut before = fleet.imap_through_director(&changers, true);
    before.extend(fleet.imap_through_director(&readers, false));
    eprintln!(
        "300 IMAP logins ({} with a flag and a copy) took {:.1} s",
        changers.len(),
        t.elapsed().as_secs_f64()
    );
    // POP3 through the director: ten users of each pair, among them users the fourth pair
    // will take
    let moving_later = |u: &String| ring4.locate(u) != ring3.locate(u);
    let mut pop_users: Vec<String> = Vec::new();
    for i in 0..3 {
        let on = users_on(i, &ring3);
        pop_users.extend(on.iter().filter(|u| moving_later(u)).take(5).cloned());
        pop_users.extend(on.iter().filter(|u| !moving_later(u)).take(5).cloned());
    }
    let t = Instant::now();
    let pop_before = fleet.pop3_through_director(&pop_users);
    eprintln!(
        "{} POP3 logins took {:.1} s",
        pop_users.len(),
        t.elapsed().as_secs_f64()
    );
    let log = fleet.director.log();
    let (imap_log, pop_log) = (backends(&log, 1143), backends(&log, 1100));
    for u in &users {
        let home = &fleet.pairs[home3[u.as_str()]];
        let v = &before[u];
        for k in 1..=3 {
            let id = format!(" {u}.{k}@example.test ");
            assert!(
                v.iter().any(|f| f.starts_with("M INBOX ") && f.contains(&id)),
                "{u}: {v:?}"
            );
        }
        let kept = v.iter().filter(|f| f.starts_with("M Kept ")).count();
        let changed = v
            .iter()
            .any(|f| f.starts_with("M INBOX 3 ") && f.ends_with("\\Answered"));
        assert_eq!(
            (kept, changed),
            if changers.contains(u) { (2, true) } else { (1, false) },
            "{u}: {v:?}"
        );
        assert!(
            v.iter()
                .any(|f| f.starts_with("M INBOX 1 ") && f.ends_with("\\Flagged")),
            "{u}: {v:?}"
        );
        let want = vec![format!("{}:1143", home.nodes[0].addr)];
        assert_eq!(imap_log.get(u), Some(&want), "{u}: IMAP backends");
    }
    for u in &pop_users {
        let home = &fleet.pairs[home3[u.as_str()]];
        let want = vec![format!("{}:1100", home.nodes[0].addr)];
        assert_eq!(pop_log.get(u), Some(&want), "{u}: POP3 backends");
        let p = &pop_before[u];
        assert_eq!(p.len(), 3, "{u}: {p:?}");
        for k in 1..=3 {
            assert!(
                p.iter().any(|l| l.ends_with(&format!(" {u}.{k}@example.test"))),
                "{u}: {p:?}"
            );
        }
    }

    // both nodes of each pair hold the same mailbox: node a's is the one the director's
    // clients saw (the pair's proxies prefer node a, the director's log says they went
    // there), node b's is read on its own imapd; no other pair holds it
    let t = Instant::now();
    let nodes = fleet.imap_on_nodes(|i, j| {
        if i < 3 && j == 1 {
            users_on(i, &ring3)
        } else {
            Vec::new()
        }
    });
    for u in &users {
        let h = home3[u.as_str()];
        assert_same(
            "node a (through the director) vs node b",
            u,
            before.get(u),
            nodes[h][1].get(u),
        );
        for (i, p) in fleet.pairs.iter().enumerate() {
            for n in &p.nodes {
                assert_eq!(n.mailbox(u).exists(), i == h, "{u} on {}", n.host);
            }
        }
    }
    eprintln!("both nodes of each pair compared in {:.1} s", t.elapsed().as_secs_f64());

    // adding p4: pin everyone where they are, add the pair, reload, rebalance
    let out = fleet.postern_ok(&["user", "pin"]);
    assert!(out.contains("300 users pinned"), "{out}");
    let all: Vec<&Pair> = fleet.pairs.iter().collect();
    fleet.postern_ok(&["config", "set", &pairs_setting(&all)]);
    fleet.postern_ok(&["reload"]);
    std::thread::sleep(Duration::from_secs(2));
    let moving: BTreeSet<&str> = users
        .iter()
        .filter(|u| ring4.locate(u) != ring3.locate(u))
        .map(String::as_str)
        .collect();
    assert!(
        moving.iter().all(|u| ring4.locate(u) == Some(3)),
        "only to the new pair"
    );
    let share = moving.len() as f64 / users.len() as f64;
    eprintln!(
        "adding p4 moves {} of {} users ({:.1} %)",
        moving.len(),
        users.len(),
        share * 100.0
    );
    assert!((0.20..=0.30).contains(&share), "{share}");
    let t = Instant::now();
    let out = fleet.postern_ok(&["user", "rebalance"]);
    eprintln!("rebalance took {:.1} s", t.elapsed().as_secs_f64());
    assert!(
        out.contains(&format!("{} of {} users moved", moving.len(), moving.len())),
        "{out}"
    );
    assert!(out.contains(&format!("{} users unpinned", 300 - moving.len())), "{out}");
    let map = std::fs::read_to_string(fleet.director.etc().join("director-map")).expect("map");
    assert!(
        map.lines().all(|l| l.trim().is_empty() || l.starts_with('#')),
        "every user back on the ring: {map}"
    );

    // through the director every moved user, and every fifth of the others, sees what it
    // saw before (UIDVALIDITY, UIDs, Message-IDs, flags, Kept), over IMAP and POP3 (the
    // same UIDLs), moved users served by p4
    let again: Vec<String> = users
        .iter()
        .enumerate()
        .filter(|(i, u)| moving.contains(u.as_str()) || i % 5 == 0)
        .map(|(_, u)| u.clone())
        .collect();
    let t = Instant::now();
    let after = fleet.imap_through_director(&again, false);
    let pop_after = fleet.pop3_through_director(&pop_users);
    eprintln!(
        "{} IMAP and {} POP3 logins after the rebalance took {:.1} s",
        again.len(),
        pop_users.len(),
        t.elapsed().as_secs_f64()
    );
    let log = fleet.director.log();
    let (imap_log, pop_log) = (backends(&log, 1143), backends(&log, 1100));
    let last = |m: &BTreeMap<String, Vec<String>>, u: &String| m.get(u).and_then(|v| v.last()).cloned();
    for u in &again {
        assert_same("through the director, before and after", u, before.get(u), after.get(u));
        let home = &fleet.pairs[ring4.locate(u).expect("pair")];
        assert_eq!(last(&imap_log, u), Some(format!("{}:1143", home.nodes[0].addr)), "{u}");
    }
    for u in &pop_users {
        assert_same(
            "POP3 through the director, before and after",
            u,
            pop_before.get(u),
            pop_after.get(u),
        );
        let home = &fleet.pairs[ring4.locate(u).expect("pair")];
        assert_eq!(last(&pop_log, u), Some(format!("{}:1100", home.nodes[0].addr)), "{u}");
    }
    assert!(
        pop_users.iter().any(|u| moving.contains(u.as_str())),
        "POP3 users among the moved"
    );

    // on disk and on each node's own imapd: both p4 nodes hold each moved mailbox as it
    // was (p4a served the director's clients above, p4b is read directly), the old pair's
    // two copies are empty; the others are not on p4
    let moved: Vec<String> = moving.iter().map(|u| u.to_string()).collect();
    let nodes = fleet.imap_on_nodes(|i, j| if i == 3 && j == 1 { moved.clone() } else { Vec::new() });
    for u in &users {
        let old = &fleet.pairs[home3[u.as_str()]];
        if moving.contains(u.as_str()) {
            assert_same("before vs p4b", u, before.get(u), nodes[3][1].get(u));
            for n in &old.nodes {
                assert_eq!(n.files(u, ""), 0, "{u}: old copy on {}", n.host);
                assert!(!n.mailbox(u).join(".Kept").exists(), "{u}: old Kept on {}", n.host);
            }
            let kept = if changers.contains(u) { 2 } else { 1 };
            for n in &fleet.pairs[3].nodes {
                assert_eq!((n.files(u, ""), n.files(u, "Kept")), (3, kept), "{u} on {}", n.host);
            }
        } else {
            for n in &fleet.pairs[3].nodes {
                assert!(!n.mailbox(u).exists(), "{u} must not be on {}", n.host);
            }
        }
    }
    // the POP3 view of a moved user on each new node's own pop3d is the one the director showed
    let sample: Vec<String> = pop_users
        .iter()
        .filter(|u| moving.contains(u.as_str()))
        .cloned()
        .collect();
    for n in &fleet.pairs[3].nodes {
        let on = fleet.pop3_on_node(n, &sample);
        for u in &sample {
            assert_same("POP3 before vs on the new node", u, pop_before.get(u), on.get(u));
        }
    }
    eprintln!("whole test {:.1} s", t0.elapsed().as_secs_f64());
    let t = Instant::now();
    drop(fleet);
    eprintln!("teardown {:.1} s", t.elapsed().as_secs_f64());
}

/// Reads INBOX through the director in a loop, reconnecting when the session is closed;
/// each round sets \Seen on the next message (each once) and checks that all messages are
/// there with the same UIDVALIDITY. Stops when the file argv[5] exists, after 3 more
/// rounds.
const READER: &str = r#"
import imaplib, os, sys, time
host, port, user, pw, stop, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
rounds = 0; reconnects = 0; seen_ok = []; after_stop = 0; errors = []
def connect():
    M = imaplib.IMAP4(host, port, timeout=60)
    M.login(user, pw)
    typ, d = M.select("INBOX")
    assert typ == "OK", d
    return M, M.untagged_responses.get("UIDVALIDITY", [b"0"])[0].decode()
M, uv0 = connect()
k = 0
while after_stop < 3:
    try:
        typ, d = M.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK", d
        ids = [p[1].decode().split(":", 1)[1].strip() for p in d if isinstance(p, tuple)]
        if len(set(ids)) != total:
            errors.append("round %d: %d messages" % (rounds, len(set(ids))))
        if k < total:
            k += 1
            typ, d = M.uid("STORE", str(k), "+FLAGS", "(\\Seen)")
            if typ == "OK":
                seen_ok.append(k)
        rounds += 1
        if os.path.exists(stop):
            after_stop += 1
        time.sleep(0.05)
    except (imaplib.IMAP4.abort, OSError, EOFError) as e:
        print("cut: %r" % e, flush=True)
        reconnects += 1
        if reconnects > 20:
            raise
        for attempt in range(50):
            time.sleep(0.2)
            try:
                M, uv = connect()
                break
            except Exception as e:
                print("reconnect failed: %r" % e, flush=True)
        else:
            raise SystemExit("no reconnect")
        if uv != uv0:
            errors.append("UIDVALIDITY %s -> %s" % (uv0, uv))
try:
    M.logout()
except Exception:
    pass
print("rounds=%d" % rounds)
print("reconnects=%d" % reconnects)
print("seen=" + ",".join(str(x) for x in sorted(set(seen_ok))))
for e in errors:
    print("error=" + e)
"#;

#[test]
fn user_move_under_an_imap_session_that_keeps_reading() {
    if !can_run() {
        return;
    }
    let t0 = Instant::now();
    let users: Vec<String> = (0..20).map(|i| format!("r{i:02}")).collect();
    let ring = Ring::new(&["p1", "p2"], 128);
    let user = users
        .iter()
        .find(|u| ring.locate(u) == Some(0))
        .expect("a user on p1")
        .clone();
    let seeded = 200;
    let fleet = Fleet::new("pst-dm-", 2, 2, &users, true, |pair, u| {
        if pair == 0 && u == user { seeded } else { 0 }
    });
    assert!(
        fleet.wait_replicated(Duration::from_secs(60)),
        "p1b holds {user}'s mailbox"
    );
    // mail through the hub before the move: one copy on each node of the user's pair
    fleet.send_through_hub("before", 2, &user);
    let total = seeded + 2;
    let on_nodes = |pair: usize, n: usize| {
        postern_tests::wait_for(Duration::from_secs(60), || {
            fleet.pairs[pair].nodes.iter().all(|node| node.files(&user, "") == n)
        })
    };
    assert!(on_nodes(0, total), "the hub's copies on both p1 nodes");
    let one = std::slice::from_ref(&user);
    let pop_before = fleet.pop3_through_director(one);
    assert_eq!(pop_before[&user].len(), total);

    let stop = fleet.director.root.path().join("stop-reading");
    let reader = {
        let (user, stop) = (user.clone(), stop.display().to_string());
        let cmd = fleet
            .lan
            .command("c", "python3")
            .arg("-c")
            .arg(READER)
            .args([DIRECTOR, "143", &user, PW, &stop, &total.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        std::thread::spawn(move || cmd.wait_with_output().expect("reader"))
    };
    // let it read a while on p1, then move the user while it goes on
    let p1 = format!("backend={}:1143", fleet.pairs[0].nodes[0].addr);
    let on = |needle: &str| {
        fleet
            .director
            .log()
            .lines()
            .any(|l| l.contains(&format!("proxy: login: user={user},")) && l.contains(needle))
    };
    assert!(
        postern_tests::wait_for(Duration::from_secs(30), || on(&p1)),
        "the reader logs in on p1"
    );
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    let out = fleet.postern_ok(&["user", "move", &user, "p2"]);
    eprintln!("user move took {:.1} s", t.elapsed().as_secs_f64());
    assert!(out.contains(&format!("{user}: moved from p1 to p2")), "{out}");
    // the reader must reach p2 before it stops
    let p2 = format!("backend={}:1143", fleet.pairs[1].nodes[0].addr);
    let reached = postern_tests::wait_for(Duration::from_secs(30), || on(&p2));
    std::fs::write(&stop, "").expect("stop");
    let out = reader.join().expect("reader thread");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        reached,
        "the reader reconnects to p2; it said:\n{text}\n{}\nthe director's log of {user}:\n{}\np1a's:\n{}",
        String::from_utf8_lossy(&out.stderr),
        fleet
            .director
            .log()
            .lines()
            .filter(|l| l.contains(&format!("{user},")) || l.contains(&format!("{user} ")))
            .collect::<Vec<_>>()
            .join("\n"),
        fleet.pairs[0].nodes[0]
            .inst
            .log()
            .lines()
            .filter(|l| l.contains("proxy") && l.contains(user.as_str()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.status.success(),
        "reader failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("reader: {text}");
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("").to_string();
    assert!(!text.contains("error="), "{text}");
    assert!(field("reconnects=").parse::<u32>().unwrap_or(0) >= 1, "{text}");
    assert!(field("rounds=").parse::<u32>().unwrap_or(0) >= 5, "{text}");
    assert!(
        fleet
            .director
            .log()
            .contains(&format!("proxy: user={user} moved from pair p1 to p2")),
        "the director closed the old session"
    );

    // nothing lost: every message on both p2 nodes, the same there, with exactly the
    // \Seen flags the reader was told OK about; p1's two copies empty; POP3 UIDLs kept
    let seen: BTreeSet<String> = field("seen=")
        .split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect();
    assert!(!seen.is_empty());
    let through = fleet.imap_through_director(one, false);
    let [a, b] = [0, 1].map(|j| fleet.imap_on_node(&fleet.pairs[1].nodes[j], one));
    assert_same("through the director vs p2a", &user, through.get(&user), a.get(&user));
    assert_same("p2a vs p2b", &user, a.get(&user), b.get(&user));
    let msgs: Vec<&String> = a[&user].iter().filter(|f| f.starts_with("M INBOX ")).collect();
    assert_eq!(msgs.len(), total, "{msgs:?}");
    for m in msgs {
        let uid = m.split(' ').nth(2).unwrap_or_default().to_string();
        assert_eq!(m.contains("\\Seen"), seen.contains(&uid), "UID {uid}: {m}");
    }
    for n in &fleet.pairs[1].nodes {
        assert_eq!(n.files(&user, ""), total, "{user} on {}", n.host);
    }
    for n in &fleet.pairs[0].nodes {
        assert_eq!(n.files(&user, ""), 0, "the old copy on {} is emptied", n.host);
    }
    let pop_after = fleet.pop3_through_director(one);
    assert_same(
        "POP3 UIDLs before and after the move",
        &user,
        pop_before.get(&user),
        pop_after.get(&user),
    );
    let p2pop = format!("backend={}:1100", fleet.pairs[1].nodes[0].addr);
    assert!(on(&p2pop), "POP3 after the move reached p2");

    // the hub follows the director: mail after the move lands on both p2 nodes, none on
    // p1, and is read through the director with the rest
    fleet.send_through_hub("after", 2, &user);
    assert!(
        on_nodes(1, total + 2),
        "the hub's copies after the move on both p2 nodes"
    );
    for n in &fleet.pairs[0].nodes {
        assert_eq!(n.files(&user, ""), 0, "nothing new on {}", n.host);
    }
    let hub_log = fleet.hub.as_ref().expect("hub").log();
    let routed = format!(
        "director: {user}@example.test is on pair p2: copies to smtp:[{}]:25",
        fleet.pairs[1].nodes[0].addr
    );
    assert!(hub_log.contains(&routed), "the hub logged the director's pair");
    let pop_last = fleet.pop3_through_director(one);
    let lines = &pop_last[&user];
    assert_eq!(lines.len(), total + 2, "{lines:?}");
    assert!(
        pop_after[&user].iter().all(|l| lines.contains(l)),
        "the UIDLs from before stay"
    );
    for i in 0..2 {
        assert!(
            lines.iter().any(|l| l.ends_with(&format!(" after-{i}@hub.test"))),
            "{lines:?}"
        );
    }
    let [a, b] = [0, 1].map(|j| fleet.imap_on_node(&fleet.pairs[1].nodes[j], one));
    assert_same("p2a vs p2b after the hub's mail", &user, a.get(&user), b.get(&user));
    eprintln!("whole test {:.1} s", t0.elapsed().as_secs_f64());
    let t = Instant::now();
    drop(fleet);
    eprintln!("teardown {:.1} s", t.elapsed().as_secs_f64());
}
