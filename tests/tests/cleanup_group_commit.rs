//! Group commit in cleanup (issue 14): the connections of a cleanup process share the
//! fsync of `incoming/` after their renames (cleanup/src/dir_sync.rs). This test runs the
//! whole pipeline (`pipeline_services`) under 32 concurrent SMTP sessions, one message
//! per connection (so many cleanup connections wait on the same directory fsync), while
//! every cleanup process master runs is `kill -9`ed again and again at random moments.
//! Each message is sent once, never retried. After recovery:
//!
//! - every message whose end of DATA got `250` is in its recipient's Maildir exactly once;
//! - a message that got anything else (cleanup killed before it answered: `451`, or the
//!   connection lost) is there at most once: cleanup may have renamed it into `incoming/`
//!   before it was killed, and then it is delivered, once;
//! - nothing else is delivered, and `incoming/`, `active/`, `deferred/` are empty.
//!
//! The kill moments come from a seeded generator (the seed is printed, `CRASH_SEED`
//! repeats them); no assertion depends on timing.

use postern_tests::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SESSIONS: usize = 32;
const PER_SESSION: usize = 20;
const USERS: usize = 4;
/// How long delivery of what was accepted may take before the test gives up.
const RECOVERY: Duration = Duration::from_secs(120);

/// One message per connection, `SESSIONS` threads; prints `N CODE` per message (`N drop`
/// when the connection failed before a reply to the end of DATA).
const LOADGEN: &str = r#"
import smtplib, sys, threading
port, sessions, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
lock = threading.Lock()
lines = []
def one(i):
    msg = ("From: a@client.test\r\nTo: u%d@example.test\r\nSubject: gc %d\r\n"
           "Message-ID: <gc.%d@client.test>\r\n\r\n" % (i % 4, i, i)) + ("line %d %s\r\n" % (i, "y" * 60)) * 60
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=60)
        s.ehlo("client.test")
        c1, _ = s.mail("a@client.test")
        c2, _ = s.rcpt("u%d@example.test" % (i % 4)) if c1 == 250 else (0, b"")
        c3, _ = s.docmd("DATA") if c2 == 250 else (0, b"")
        if c3 != 354:
            code = "pre"
        else:
            s.send(msg.encode() + b".\r\n")
            code, _ = s.getreply()
        try:
            s.quit()
        except Exception:
            pass
    except Exception:
        code = "drop"
    with lock:
        lines.append("%d %s" % (i, code))
def session(t):
    for m in range(per):
        one(t * per + m)
threads = [threading.Thread(target=session, args=(t,)) for t in range(sessions)]
for th in threads:
    th.start()
for th in threads:
    th.join()
print("\n".join(lines))
"#;

struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cleanups(master: u32) -> Vec<u32> {
    children_named(master, "cleanup")
}

/// (Message-ID, Delivered-To) → copies, over every user's Maildir.
fn delivered(base: &Path) -> HashMap<(String, String), usize> {
    let mut out = HashMap::new();
    for u in 0..USERS {
        for (key, n) in maildir_index(&base.join(format!("u{u}"))) {
            *out.entry(key).or_insert(0) += n;
        }
    }
    out
}

#[test]
fn kill_9_of_cleanup_under_group_commit_loses_no_250() {
    let smtp_port = free_port();
    let mut inst = Instance::new(
        &pipeline_services(smtp_port),
        &[
            "minimal_backoff_time=1s",
            "maximal_backoff_time=2s",
            "queue_run_delay=1s",
        ],
    );
    for u in 0..USERS {
        add_user(&inst, &format!("u{u}"), "pw");
    }
    inst.start();
    let master = inst.master_pid();
    let (mut rng, seed) = Rng::from_env("CRASH_SEED");
    println!("seed {seed} (CRASH_SEED={seed} repeats the kill moments)");

    let out = inst.root.path().join("load.out");
    let mut load = Reaped(
        Command::new("python3")
            .arg("-c")
            .arg(LOADGEN)
            .arg(smtp_port.to_string())
            .arg(SESSIONS.to_string())
            .arg(PER_SESSION.to_string())
            .stdout(std::fs::File::create(&out).expect("load.out"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 loadgen"),
    );

    // Kill every cleanup process at random moments while the load runs.
    let mut killed = 0;
    let mut rounds = 0;
    let start = Instant::now();
    while load.0.try_wait().expect("loadgen").is_none() && start.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        rounds += 1;
        for pid in cleanups(master) {
            if kill9(pid) {
                killed += 1;
            }
        }
    }
    let status = load.0.wait().expect("loadgen");
    assert!(status.success(), "loadgen failed");
    println!(
        "{rounds} kill rounds in {:?}, {killed} cleanup processes killed",
        start.elapsed()
    );
    assert!(
        killed >= 3,
        "too few cleanup processes killed ({killed}) for the test to mean anything"
    );

    let results = std::fs::read_to_string(&out).expect("loadgen output");
    let mut accepted = Vec::new();
    let mut other = Vec::new();
    for l in results.lines() {
        let Some((n, code)) = l.split_once(' ') else { continue };
        let n: usize = n.parse().expect("message number");
        let key = (format!("<gc.{n}@client.test>"), format!("u{}@example.test", n % USERS));
        if code == "250" {
            accepted.push(key);
        } else {
            other.push((key, code.to_string()));
        }
    }
    assert_eq!(
        accepted.len() + other.len(),
        SESSIONS * PER_SESSION,
        "one line per message"
    );
    println!("{} got 250, {} did not", accepted.len(), other.len());
    assert!(
        accepted.len() >= SESSIONS * PER_SESSION / 4,
        "too few accepted for the test to mean anything"
    );

    let base = inst.root.path().join("var/mail");
    let done = wait_for(RECOVERY, || {
        inst.queue_left().is_empty() && accepted.iter().all(|k| delivered(&base).contains_key(k))
    });
    let got = delivered(&base);
    let missing: Vec<_> = accepted.iter().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        done && missing.is_empty(),
        "accepted but not delivered: {missing:?}; queue left {:?}",
        inst.queue_left()
    );
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let known: std::collections::HashSet<_> = accepted.iter().chain(other.iter().map(|(k, _)| k)).collect();
    let unknown: Vec<_> = got.keys().filter(|k| !known.contains(k)).collect();
    assert!(unknown.is_empty(), "delivered but never sent: {unknown:?}");
    let orphans = other.iter().filter(|(k, _)| got.contains_key(k)).count();
    println!("{orphans} messages without a 250 were delivered once (renamed before the kill)");
}
