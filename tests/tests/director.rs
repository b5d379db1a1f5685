//! The director (issue 16): one IMAP proxy in front of several pairs of mailbox servers,
//! each user sent to the user's pair by consistent hashing, and `postern user
//! pin|rebalance|move` moving mailboxes between pairs with the replicators.
//!
//! Each "pair" here is ONE Postern instance on loopback (auth, imapd, the replicator's
//! inet and unix services), which is quick to set up: this file keeps what the real pairs
//! of tests/director_pairs.rs (two replicated nodes each, in network namespaces: 300
//! users, a fourth pair, a move under a reader, POP3, the hub) do not repeat — a table
//! entry naming an unknown pair refuses the login, and a move back onto an emptied old
//! copy is refused until that copy is removed. The director is a fifth instance: auth and the IMAP
//! proxy with `director_pairs`, `director_user_map` and the replica secret, and the
//! replicator's unix service (which does the steps of `postern user move`). Users log in
//! to the proxy with their own password; the proxy logs in to
//! the pair's imapd as `USER*proxy`.

use postern_lib::director::Ring;
use postern_tests::{
    Instance, auth_service, daemon_service, director_replicator_service, free_port, owned_mail_base, python_args,
};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PW: &str = "Director-User-Pw1";
const MASTER_PW: &str = "Director-Master-Pw2";
const SECRET: &str = "the-fleet-wide-replica-secret-of-this-test\n";

/// One pair: an instance with auth, imapd and the replicator.
struct Pair {
    name: String,
    inst: Instance,
    imap: u16,
    repl: u16,
}

impl Pair {
    fn entry(&self) -> String {
        format!(
            "{} imap=127.0.0.1:{} replicator=127.0.0.1:{}",
            self.name, self.imap, self.repl
        )
    }

    fn mailbox(&self, user: &str) -> PathBuf {
        self.inst.root.path().join("var/mail").join(user)
    }
}

fn write_private(path: PathBuf, text: &str) {
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// One sha512-crypt hash shared by every user: with the fewest rounds (cheap to check in
/// a debug build: 600 logins here) where Python still has `crypt` (removed in 3.13),
/// else openssl's (5,000 rounds).
fn hash(pw: &str) -> String {
    let script = "import crypt,sys; print(crypt.crypt(sys.argv[1], '$6$rounds=1000$directortest'))";
    let py = std::process::Command::new("python3")
        .args(["-W", "ignore", "-c", script, pw])
        .output();
    if let Ok(out) = py
        && out.status.success()
    {
        return String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    let out = std::process::Command::new("openssl")
        .args(["passwd", "-6", "-salt", "directortest", pw])
        .output()
        .expect("openssl passwd");
    assert!(out.status.success(), "openssl passwd -6");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `etc/users` with `users`, `etc/master-users` with `proxy`, the master password and the
/// replica secret.
fn accounts(inst: &Instance, users: &[String]) {
    let h = hash(PW);
    let text: String = users.iter().map(|u| format!("{u}:{h}\n")).collect();
    write_private(inst.etc().join("users"), &text);
    write_private(inst.etc().join("master-users"), &format!("proxy:{}\n", hash(MASTER_PW)));
    write_private(inst.etc().join("proxy-password"), &format!("{MASTER_PW}\n"));
    write_private(inst.etc().join("replica-secret"), SECRET);
}

fn pair(name: &str, users: &[String]) -> Pair {
    let (imap, repl) = (free_port(), free_port());
    let mut services = auth_service();
    services.push_str(&daemon_service(
        "imap",
        "inet",
        &format!("127.0.0.1:{imap}"),
        "imapd",
        "",
    ));
    services.push_str(&daemon_service(
        "replicator",
        "inet",
        &format!("127.0.0.1:{repl}"),
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
    let node = format!("replica_name={name}");
    let inst = Instance::new(
        &services,
        &[
            "auth_failure_delay=0s",
            "auth_master_users_file=master-users",
            &node,
            "replica_secret_file=replica-secret",
            "replica_timeout=10s",
            "replica_sync_interval=1h",
        ],
    );
    accounts(&inst, users);
    owned_mail_base(&inst);
    Pair {
        name: name.into(),
        inst,
        imap,
        repl,
    }
}

fn pairs_setting(pairs: &[&Pair]) -> String {
    let list: Vec<String> = pairs.iter().map(|p| format!("\"{}\"", p.entry())).collect();
    format!("director_pairs=[{}]", list.join(","))
}

/// The director: auth and the IMAP proxy over `pairs`.
fn director(pairs: &[&Pair], users: &[String]) -> (Instance, u16) {
    let port = free_port();
    let mut services = auth_service();
    services.push_str(&daemon_service(
        "imap-proxy",
        "inet",
        &format!("127.0.0.1:{port}"),
        "proxy",
        "args = [\"imap\"]",
    ));
    services.push_str(&director_replicator_service());
    let ps = pairs_setting(pairs);
    let inst = Instance::new(
        &services,
        &[
            "auth_failure_delay=0s",
            "proxy_master_password_file=proxy-password",
            &ps,
            "director_user_map=director-map",
            "replica_secret_file=replica-secret",
            "replica_timeout=10s",
        ],
    );
    accounts(&inst, users);
    (inst, port)
}

/// Puts `n` messages into `user`'s INBOX on `p` (as a delivery would: tmp/ then new/).
fn deliver(p: &Pair, user: &str, n: usize) {
    let md = p.mailbox(user);
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(md.join(d)).expect("mkdir");
    }
    for k in 1..=n {
        let text = format!(
            "From: sender@example.test\r\nSubject: {user} message {k}\r\nMessage-ID: <{user}.{k}@example.test>\r\n\r\nbody {k} of {user}\r\n"
        );
        let name = format!("{}.{user}_{k}.test,S={}", 1_765_000_000 + k, text.len());
        std::fs::write(md.join("tmp").join(&name), &text).expect("write");
        std::fs::rename(md.join("tmp").join(&name), md.join("new").join(&name)).expect("rename");
    }
}

/// Files in a Maildir folder's new/ and cur/ (`folder` "" for INBOX).
fn files(p: &Pair, user: &str, folder: &str) -> usize {
    let d = if folder.is_empty() {
        p.mailbox(user)
    } else {
        p.mailbox(user).join(format!(".{folder}"))
    };
    ["new", "cur"]
        .iter()
        .map(|s| std::fs::read_dir(d.join(s)).map(|r| r.count()).unwrap_or(0))
        .sum()
}

/// Logs every user in through the proxy: INBOX's UIDVALIDITY, (UID, Message-ID, flags)
/// and Archive's message count, one line per user (`first`: also flags message 1 and
/// copies message 2 to a new folder Archive, so the mailbox has state to carry).
const CHECK: &str = r#"
import imaplib, re, sys
port, pw, first = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
for user in sys.argv[4:]:
    M = imaplib.IMAP4("127.0.0.1", port)
    try:
        M.login(user, pw)
    except Exception as e:
        raise SystemExit("login of %s: %r" % (user, e))
    typ, d = M.select("INBOX")
    assert typ == "OK", (user, d)
    uv = M.untagged_responses.get("UIDVALIDITY", [b"0"])[0].decode()
    if first:
        for r in (M.store("1", "+FLAGS", "(\\Flagged)"), M.create("Kept"), M.copy("2", "Kept")):
            assert r[0] == "OK", (user, r)
    typ, d = M.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    msgs = []
    for part in d:
        if isinstance(part, tuple):
            meta = part[0].decode()
            uid = int(re.search(r"UID (\d+)", meta).group(1))
            flags = re.search(r"FLAGS \(([^)]*)\)", meta)
            mid = part[1].decode().split(":", 1)[1].strip()
            fl = " ".join(f for f in (flags.group(1) if flags else "").split() if f != "\\Recent")
            msgs.append("%d=%s=%s" % (uid, mid, fl))
    typ, d = M.status("Kept", "(MESSAGES)")
    arch = int(re.search(rb"MESSAGES (\d+)", d[0]).group(1)) if typ == "OK" else -1
    M.logout()
    print("\t".join([user, uv, str(arch), "|".join(msgs)]))
"#;

/// What a user's login showed.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    uid_validity: String,
    archive: i64,
    /// (UID, Message-ID, flags)
    msgs: Vec<(u32, String, String)>,
}

fn check_all(dir: &Instance, port: u16, users: &[String], first: bool) -> BTreeMap<String, Seen> {
    let port_s = port.to_string();
    // three clients at once, each a third of the users
    let runs: Vec<(bool, String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = users
            .chunks(users.len().div_ceil(3).max(1))
            .map(|chunk| {
                let port_s = &port_s;
                s.spawn(move || {
                    let mut args: Vec<&str> = vec![port_s, PW, if first { "1" } else { "0" }];
                    args.extend(chunk.iter().map(String::as_str));
                    python_args(CHECK, &args)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    let ok = runs.iter().all(|r| r.0);
    let out: String = runs.iter().map(|r| r.1.as_str()).collect();
    let err: String = runs.iter().map(|r| r.2.as_str()).collect();
    if !ok {
        let log = dir.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "IMAP through the director failed:\n{err}\nthe director's log, last lines first:\n{}",
            tail.join("\n")
        );
    }
    let mut m = BTreeMap::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f.len(), 4, "{l}");
        let msgs = f[3]
            .split('|')
            .filter(|x| !x.is_empty())
            .map(|x| {
                let p: Vec<&str> = x.splitn(3, '=').collect();
                (
                    p[0].parse().expect("uid"),
                    p.get(1).unwrap_or(&"").to_string(),
                    p.get(2).unwrap_or(&"").to_string(),
                )
            })
            .collect();
        let seen = Seen {
            uid_validity: f[1].to_string(),
            archive: f[2].parse().expect("archive"),
            msgs,
        };
        m.insert(f[0].to_string(), seen);
    }
    assert_eq!(m.len(), users.len(), "{out}");
    m
}

/// Stops the instances at once (each stop waits for its daemons to exit; one after the
/// other that is most of a test's time).
fn stop_all(insts: &[&Instance]) {
    std::thread::scope(|s| {
        for i in insts {
            s.spawn(|| i.postern(&["stop"]));
        }
    });
}

fn postern_ok(inst: &Instance, args: &[&str]) -> String {
    let out = inst.postern(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "postern {args:?} failed:\n{text}");
    text
}

/// Reads INBOX through the proxy in a loop, reconnecting when the session is closed;
/// each round sets \Seen on the next message (each once) and checks that all messages are there
/// with the same UIDVALIDITY. Stops when the file argv[4] exists, after 3 more rounds.
const READER: &str = r#"
import imaplib, os, re, sys, time
port, user, pw, stop, total = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
uv0 = None; rounds = 0; reconnects = 0; seen_ok = []; after_stop = 0; errors = []
def connect():
    M = imaplib.IMAP4("127.0.0.1", port)
    M.login(user, pw)
    typ, d = M.select("INBOX")
    assert typ == "OK", d
    return M, M.untagged_responses.get("UIDVALIDITY", [b"0"])[0].decode()
M, uv = connect(); uv0 = uv
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
        reconnects += 1
        if reconnects > 20:
            raise
        time.sleep(0.2)
        M, uv = connect()
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
    let users: Vec<String> = (0..20).map(|i| format!("r{i:02}")).collect();
    let mut ps: Vec<Pair> = (1..=2).map(|k| pair(&format!("p{k}"), &users)).collect();
    let ring = Ring::new(&["p1", "p2"], 128);
    let user = users
        .iter()
        .find(|u| ring.locate(u) == Some(0))
        .expect("a user on p1")
        .clone();
    let total = 200;
    deliver(&ps[0], &user, total);
    for p in ps.iter_mut() {
        owned_mail_base(&p.inst);
        p.inst.start();
    }
    let (mut dir, port) = director(&[&ps[0], &ps[1]], &users);
    dir.start();
    let stop = dir.root.path().join("stop-reading");
    let reader = {
        let (port, user, stop) = (port.to_string(), user.clone(), stop.display().to_string());
        std::thread::spawn(move || python_args(READER, &[&port, &user, PW, &stop, &total.to_string()]))
    };
    // let it read a while on p1, then move the user while it goes on
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir.log_count(&format!("proxy: login: user={user}")) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let out = postern_ok(&dir, &["user", "move", &user, "p2"]);
    assert!(out.contains(&format!("{user}: moved from p1 to p2")), "{out}");
    // the reader must reach p2 before it stops
    let p2 = format!("backend=127.0.0.1:{}", ps[1].imap);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir
        .log()
        .lines()
        .any(|l| l.contains(&format!("proxy: login: user={user},")) && l.contains(&p2))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&stop, "").expect("stop");
    let (ok, text, err) = reader.join().expect("reader");
    assert!(ok, "reader failed:\n{text}\n{err}");
    eprintln!("reader: {text}");
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("").to_string();
    assert!(!text.contains("error="), "{text}");
    assert!(field("reconnects=").parse::<u32>().unwrap_or(0) >= 1, "{text}");
    assert!(field("rounds=").parse::<u32>().unwrap_or(0) >= 5, "{text}");
    let log = dir.log();
    assert!(
        log.contains(&format!("proxy: user={user} moved from pair p1 to p2")),
        "{log}"
    );
    // nothing lost: every \Seen the reader was told OK about is on p2, every message is
    // there, the old copy is empty
    let seen: BTreeSet<u32> = field("seen=").split(',').filter_map(|x| x.parse().ok()).collect();
    assert!(!seen.is_empty());
    let state = check_all(&dir, port, std::slice::from_ref(&user), false);
    let msgs = &state[&user].msgs;
    assert_eq!(msgs.len(), total, "{msgs:?}");
    for (uid, _, flags) in msgs {
        // every \Seen answered OK is there, and no other
        assert_eq!(flags.contains("\\Seen"), seen.contains(uid), "UID {uid}: {flags}");
    }
    assert_eq!(files(&ps[1], &user, ""), total);
    assert_eq!(files(&ps[0], &user, ""), 0, "the old copy is emptied");
    // a table entry naming a pair that is not configured: the login is refused as
    // unavailable, never sent to the hashed pair (where the mailbox is not)
    let other = users.iter().find(|u| **u != user).expect("another user");
    let map = dir.etc().join("director-map");
    let mut text = std::fs::read_to_string(&map).unwrap_or_default();
    text.push_str(&format!("{other} p9\n"));
    std::fs::write(&map, text).expect("write map");
    std::thread::sleep(Duration::from_millis(1500));
    let script = format!(
        "import imaplib\nM=imaplib.IMAP4('127.0.0.1',{port})\ntry:\n    M.login('{other}','{PW}')\n    print('LOGGED IN')\nexcept imaplib.IMAP4.error as e:\n    print('REFUSED', e)\n"
    );
    let (_, said, _) = python_args(&script, &[]);
    assert!(said.contains("REFUSED") && said.contains("UNAVAILABLE"), "{said}");
    assert!(dir.log().contains("which is not in director_pairs"), "logged");
    // back to p1, where the emptied old copy is: refused (its expunge log would delete the
    // messages on p2), nothing changed; once that copy is removed, the same UIDs,
    // UIDVALIDITY and flags on p1
    let out = dir.postern(&["user", "move", &user, "p1"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("emptied old copy"), "{said}");
    assert_eq!(files(&ps[1], &user, ""), total, "p2 untouched");
    let out = postern_ok(&dir, &["user", "where", &user]);
    assert!(out.starts_with(&format!("{user} p2 ")), "{out}");
    std::fs::remove_dir_all(ps[0].mailbox(&user)).expect("remove the old copy");
    let out = postern_ok(&dir, &["user", "move", &user, "p1"]);
    assert!(out.contains(&format!("{user}: moved from p2 to p1")), "{out}");
    let back = check_all(&dir, port, std::slice::from_ref(&user), false);
    assert_eq!(back[&user], state[&user], "moved back");
    assert_eq!(files(&ps[0], &user, ""), total);
    assert_eq!(files(&ps[1], &user, ""), 0);
    stop_all(&[&dir, &ps[0].inst, &ps[1].inst]);
}
