//! The soak of issue 6 ("no loss under crashes"): the whole mail system — smtpd, cleanup,
//! trivial-rewrite, qmgr, local, the smtp client, bounce, auth and imapd under the real
//! master — takes `SOAK_MESSAGES` messages (400 here; `bench/soak.sh` runs 5,000) from 32
//! concurrent smtplib sessions (`tests/scripts/soak_load.py`) to eight local users, a
//! relay destination (an SMTP sink on loopback, through `transport_maps`) and a deferring
//! destination (a sink answering every RCPT with `450`), while a chaos loop `kill -9`s a
//! random daemon that master runs every 100–400 ms (for at least 30 s, through the
//! deliveries after the load), and once kills master itself with SIGKILL and starts a new
//! one with `postern start` on the same configuration. An IMAP
//! client polls one mailbox meanwhile, so imapd is there to be killed too, and
//! `delay_warning_time` makes qmgr ask the bounce daemon for delay notices.
//!
//! After the load, chaos stops, `postqueue -f` flushes the queue, and once the queue
//! settles (bounded wait):
//!
//! - every message that got `250` after DATA is in each local recipient's Maildir (counted
//!   by `Message-ID:` and `Delivered-To:`; for `u0` also over IMAP, `soak_imap.py`) and
//!   at the relay sink for each relayed recipient: lost must be 0;
//! - local copies beyond one exist only where the client itself sent the message again
//!   after an ambiguous answer (a `4xx` after DATA or a connection lost before the reply,
//!   which may follow a queued file: two queue files, two deliveries); any other local
//!   duplicate fails the test, since Maildir delivery is exactly-once per queue file.
//!   Relay copies beyond that are counted and printed (RFC 1047's window of an smtp
//!   client killed between the remote `250` and its done mark);
//! - nothing that never got a `250` is delivered, except messages whose answer was
//!   ambiguous (counted as "accepted, reply lost", not an error);
//! - `incoming/` and `active/` are empty, and `deferred/` holds exactly the accepted
//!   messages for the deferring destination (and any whose reply was lost), with only
//!   those recipients pending and the remote `450` as the reason;
//! - every process of the killed master exits, no daemon panicked, no recipient bounced.
//!
//! The pauses and victims are drawn from a seeded generator (`SOAK_SEED` repeats the draws);
//! the summary line prints every count; `SOAK_KEEP=DIR` keeps the maillog and the
//! clients' results there. No assertion depends on timing.
//!
//! The second test is the master kill made deterministic: master dies while its smtpd is
//! in the middle of a message, and a new master must start at once.

use postern_lib::queue_file::{QueueFile, RecipientStatus};
use postern_tests::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The daemons the chaos loop kills (their `/proc/PID/comm`).
const DAEMONS: [&str; 9] = [
    "smtpd",
    "cleanup",
    "qmgr",
    "trivial-rewrite",
    "local",
    "smtp",
    "bounce",
    "auth",
    "imapd",
];
const USERS: usize = 8;
const PASSWORD: &str = "soak-pw";
/// Messages in the CI run (`SOAK_MESSAGES` overrides).
const CI_MESSAGES: usize = 400;
/// The load's own deadline (soak_load.py `--deadline`), seconds.
const LOAD_DEADLINE: u64 = 900;
/// The chaos goes on at least this long, through the deliveries after the load.
const MIN_CHAOS: Duration = Duration::from_secs(30);
/// How long the queue may take to settle after the load (a limit, not a measurement).
const RECOVERY: Duration = Duration::from_secs(300);

fn script(name: &str) -> PathBuf {
    repo_root().join("tests/scripts").join(name)
}

/// What the clients saw for one message.
#[derive(Default, Debug)]
struct Seen {
    /// `250` after DATA.
    ok: usize,
    /// A `4xx` after DATA, or the connection lost before the reply.
    ambiguous: usize,
    /// Refused or failed before the content was sent.
    refused: usize,
    /// `5xx` replies, verbatim.
    perm: Vec<String>,
}

/// What happened when master was killed and started again.
struct Restart {
    /// master's children (pid, program) just before the kill.
    old: Vec<(u32, String)>,
    /// Those still running when the new master was started.
    survivors: Vec<(u32, String)>,
    /// `postern start` attempts until one succeeded, and the refusals.
    attempts: usize,
    refusals: Vec<String>,
}

/// Daemons among master's children: (pid, program).
fn daemons(master: u32) -> Vec<(u32, String)> {
    children_of(master)
        .into_iter()
        .filter_map(|p| comm(p).filter(|c| DAEMONS.contains(&c.as_str())).map(|c| (p, c)))
        .collect()
}

/// Kills one daemon of `master`: a kind drawn among those running, then one of its
/// processes. Returns the kind killed.
fn kill_random_daemon(master: u32, rng: &mut Rng) -> Option<String> {
    let running = daemons(master);
    let kinds: Vec<&str> = running
        .iter()
        .map(|(_, c)| c.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let kind = kinds[rng.below(kinds.len() as u64) as usize];
    let pids: Vec<u32> = running.iter().filter(|(_, c)| c == kind).map(|(p, _)| *p).collect();
    let victim = pids[rng.below(pids.len() as u64) as usize];
    kill9(victim).then(|| kind.to_string())
}

/// Whether `pid` still runs `program` (not a reused pid).
fn still_running(pid: u32, program: &str) -> bool {
    alive(pid) && comm(pid).as_deref() == Some(program)
}

fn kill_and_restart_master(inst: &Instance, master: u32) -> Restart {
    let old = daemons(master);
    assert!(kill9(master), "cannot kill master {master}");
    assert!(
        wait_for(Duration::from_secs(10), || !alive(master)),
        "master survived SIGKILL"
    );
    // Let the clients and the orphans meet the dead master for a moment.
    std::thread::sleep(Duration::from_millis(500));
    let survivors: Vec<(u32, String)> = old.iter().filter(|(p, c)| still_running(*p, c)).cloned().collect();
    let mut refusals = Vec::new();
    for attempt in 1..=40 {
        let out = inst.postern(&["start"]);
        if out.status.success() {
            return Restart {
                old,
                survivors,
                attempts: attempt,
                refusals,
            };
        }
        refusals.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "no new master could start after master was killed: {refusals:?}\n{}",
        inst.log()
    );
}

/// The load's result lines, per message.
fn outcomes(path: &Path) -> (BTreeMap<usize, Seen>, bool) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: BTreeMap<usize, Seen> = BTreeMap::new();
    let mut done = false;
    for line in text.lines() {
        if line == "done" {
            done = true;
            continue;
        }
        let mut w = line.splitn(3, ' ');
        let (Some(kind), Some(Some(i))) = (w.next(), w.next().map(|n| n.parse::<usize>().ok())) else {
            panic!("bad load line {line:?}");
        };
        let seen = out.entry(i).or_default();
        match kind {
            "ok" => seen.ok += 1,
            "lost" | "tempdata" => seen.ambiguous += 1,
            "temp" => seen.refused += 1,
            "perm" => seen.perm.push(line.to_string()),
            other => panic!("bad load line kind {other:?}"),
        }
    }
    (out, done)
}

/// Messages accepted so far, from the complete lines the load has written.
fn accepted_so_far(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && l.starts_with("ok "))
        .count()
}

/// The message number of `<soak.N@example.test>`.
fn soak_number(message_id: &str) -> Option<usize> {
    message_id
        .strip_prefix("<soak.")?
        .strip_suffix("@example.test>")?
        .parse()
        .ok()
}

/// A message in `deferred/`: its number, pending recipients, and the defer reasons.
struct Deferred {
    number: Option<usize>,
    pending: Vec<String>,
    reasons: Vec<String>,
}

/// Files in `incoming/` and `active/`, and what `deferred/` holds.
fn queue_state(inst: &Instance) -> (Vec<PathBuf>, Vec<Deferred>) {
    let moving: Vec<PathBuf> = ["incoming", "active"]
        .iter()
        .flat_map(|d| files_below(&inst.queue().join(d)))
        .collect();
    let mut deferred = Vec::new();
    let _ = postern_lib::queue_scan::scan(&inst.queue(), &["deferred"], |e| {
        let reasons = match &e.summary {
            postern_lib::queue_scan::Summary::Message { recipients, .. } => {
                recipients.iter().filter_map(|r| r.delay_reason.clone()).collect()
            }
            _ => Vec::new(),
        };
        let parsed = std::fs::File::open(&e.file.path)
            .ok()
            .and_then(|f| QueueFile::read_all(f, &Default::default()).ok());
        let (number, pending) = match parsed {
            Some((qf, content)) => {
                let text = String::from_utf8_lossy(&content);
                let number = header_values(&text, "message-id").first().and_then(|m| soak_number(m));
                let pending = qf
                    .recipients
                    .iter()
                    .filter(|r| r.status == RecipientStatus::Pending)
                    .map(|r| r.spec.address.clone())
                    .collect();
                (number, pending)
            }
            None => (None, Vec::new()),
        };
        deferred.push(Deferred {
            number,
            pending,
            reasons,
        });
    });
    (moving, deferred)
}

/// (message number, recipient) → copies over every user's Maildir, plus the number of
/// messages there that the load did not send.
fn local_copies(base: &Path) -> (HashMap<(usize, String), usize>, usize) {
    let mut out = HashMap::new();
    let mut foreign = 0;
    for u in 0..USERS {
        for ((mid, to), n) in maildir_index(&base.join(format!("u{u}"))) {
            match soak_number(&mid) {
                Some(i) => *out.entry((i, to)).or_insert(0) += n,
                None => foreign += n,
            }
        }
    }
    (out, foreign)
}

fn sink_copies(dir: &Path) -> (HashMap<(usize, String), usize>, usize) {
    let mut out = HashMap::new();
    let mut foreign = 0;
    for ((mid, to), n) in sink_index(dir) {
        match soak_number(&mid) {
            Some(i) => *out.entry((i, to)).or_insert(0) += n,
            None => foreign += n,
        }
    }
    (out, foreign)
}

/// Where everything is at one moment.
struct Snapshot {
    /// Files in `incoming/` and `active/`.
    moving: Vec<PathBuf>,
    deferred: Vec<Deferred>,
    /// Local copies, and messages in the Maildirs the load did not send.
    local: HashMap<(usize, String), usize>,
    local_foreign: usize,
    /// Copies at the relay sink, and messages there the load did not send.
    relay: HashMap<(usize, String), usize>,
    relay_foreign: usize,
}

fn snapshot(inst: &Instance, mail_base: &Path, relay_dir: &Path) -> Snapshot {
    let (moving, deferred) = queue_state(inst);
    let (local, local_foreign) = local_copies(mail_base);
    let (relay, relay_foreign) = sink_copies(relay_dir);
    Snapshot {
        moving,
        deferred,
        local,
        local_foreign,
        relay,
        relay_foreign,
    }
}

/// Message-IDs in `user`'s INBOX as imapd lists them (`None`, printed, if the listing
/// failed).
fn imap_message_ids(port: u16, user: &str) -> Option<Vec<String>> {
    let out = Command::new("python3")
        .arg(script("soak_imap.py"))
        .args([&port.to_string(), user, PASSWORD])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        println!("IMAP listing failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(
        text.lines()
            .filter(|l| !l.starts_with("count "))
            .map(String::from)
            .collect(),
    )
}

/// An IMAP client listing u0's mailbox again and again while the chaos runs (so imapd
/// runs and is killed too); counts the listings that worked and failed.
struct ImapPoller {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl ImapPoller {
    fn start(port: u16) -> ImapPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(LOAD_DEADLINE + 60);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                let out = Command::new("python3")
                    .arg(script("soak_imap.py"))
                    .args([&port.to_string(), "u0", PASSWORD])
                    .output();
                match out {
                    Ok(out) if out.status.success() => o.fetch_add(1, Ordering::Relaxed),
                    Ok(out) => {
                        let err = String::from_utf8_lossy(&out.stderr);
                        println!("IMAP poll failed: {}", err.trim().lines().last().unwrap_or(""));
                        f.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => f.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        ImapPoller {
            stop,
            ok,
            failed,
            thread,
        }
    }

    /// Stops polling; (listings that worked, listings that failed).
    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("IMAP poller");
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

#[test]
fn soak_under_kill_9_of_every_daemon_and_master_loses_nothing() {
    for b in [
        "master",
        "smtpd",
        "cleanup",
        "qmgr",
        "local",
        "smtp",
        "bounce",
        "auth",
        "imapd",
        "postqueue",
    ] {
        assert!(bin(b).exists(), "build the workspace first: {b} is missing");
    }
    let messages: usize = std::env::var("SOAK_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_MESSAGES);
    let (smtp_port, imap_port, relay_port, defer_port) = (free_port(), free_port(), free_port(), free_port());
    let mut services = pipeline_services(smtp_port);
    services.push_str(&daemon_service(
        "imap",
        "inet",
        &format!("127.0.0.1:{imap_port}"),
        "imapd",
        "maxproc = 2",
    ));
    let mut inst = Instance::new(
        &services,
        &[
            "transport_maps=[\"transport\"]",
            "minimal_backoff_time=1s",
            "maximal_backoff_time=2s",
            "queue_run_delay=1s",
            // A killed agent's job is retried after the back-off; keep it short.
            "ipc_timeout=60s",
            // Deferrals (the 450 destination, killed agents) make delay notices: bounce runs.
            "delay_warning_time=2s",
            "smtpd_client_connection_count_limit=1000",
        ],
    );
    std::fs::write(
        inst.etc().join("transport"),
        format!("relay.test smtp:[127.0.0.1]:{relay_port}\ndefer.test smtp:[127.0.0.1]:{defer_port}\n"),
    )
    .expect("write transport");
    for u in 0..USERS {
        add_user(&inst, &format!("u{u}"), PASSWORD);
    }
    add_user(&inst, "sender", PASSWORD);
    let relay_dir = inst.root.path().join("relay-sink");
    let defer_dir = inst.root.path().join("defer-sink");
    let _relay = sink(&relay_dir, relay_port, 250);
    let _defer = sink(&defer_dir, defer_port, 450);
    inst.start();
    let mut master = inst.master_pid();

    let (mut rng, seed) = Rng::from_env("SOAK_SEED");
    println!("soak: {messages} messages, seed {seed} (SOAK_SEED={seed} repeats the chaos)");

    // Each message's recipients, from the load script itself.
    let listing = Command::new("python3")
        .arg(script("soak_load.py"))
        .args([
            "--list",
            "--count",
            &messages.to_string(),
            "--users",
            &USERS.to_string(),
        ])
        .output()
        .expect("python3");
    assert!(listing.status.success());
    let rcpts: Vec<Vec<String>> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.split_whitespace().skip(1).map(String::from).collect())
        .collect();
    assert_eq!(rcpts.len(), messages);

    let results = inst.root.path().join("load.out");
    let mut load = Helper(
        Command::new("python3")
            .arg(script("soak_load.py"))
            .args([
                "--port",
                &smtp_port.to_string(),
                "--count",
                &messages.to_string(),
                "--users",
                &USERS.to_string(),
                "--threads",
                "32",
                "--deadline",
                &LOAD_DEADLINE.to_string(),
                "--out",
            ])
            .arg(&results)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 soak_load.py"),
    );

    let poller = ImapPoller::start(imap_port);

    // The chaos loop: until the load is done and at least MIN_CHAOS has passed, every
    // 100-400 ms one random daemon (a kind chosen among those running, then one of its
    // processes); master once, after a third of the messages were accepted.
    let mut kills: BTreeMap<String, usize> = DAEMONS.iter().map(|d| (d.to_string(), 0)).collect();
    let mut restart: Option<Restart> = None;
    let chaos_start = Instant::now();
    let limit = Duration::from_secs(LOAD_DEADLINE + 60);
    let mut load_done = false;
    while chaos_start.elapsed() < limit && !(load_done && chaos_start.elapsed() >= MIN_CHAOS) {
        load_done = load_done || load.0.try_wait().ok().flatten().is_some();
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        if restart.is_none() {
            let accepted = accepted_so_far(&results);
            if accepted >= messages / 3 {
                restart = Some(kill_and_restart_master(&inst, master));
                master = inst.master_pid();
                continue;
            }
        }
        if let Some(kind) = kill_random_daemon(master, &mut rng) {
            *kills.entry(kind).or_insert(0) += 1;
        }
    }
    let chaos_time = chaos_start.elapsed();
    let status = load.0.wait().expect("wait for the load");
    let (imap_ok, imap_failed) = poller.finish();
    assert!(status.success(), "the load script failed");
    let restart = restart.expect("master was never killed: the load ended before a third was accepted");

    let (seen, done) = outcomes(&results);
    assert!(done, "the load did not finish");
    assert_eq!(seen.len(), messages, "every message was tried");
    let perm: Vec<&String> = seen.values().flat_map(|s| &s.perm).collect();
    assert!(perm.is_empty(), "permanent refusals under crashes: {perm:?}");
    let never: Vec<usize> = seen
        .iter()
        .filter(|(_, s)| s.ok == 0 && s.ambiguous == 0)
        .map(|(i, _)| *i)
        .collect();

    // What must arrive, and where.
    let accepted = |i: usize| seen.get(&i).is_some_and(|s| s.ok > 0);
    let mut want_local: Vec<(usize, String)> = Vec::new();
    let mut want_relay: Vec<(usize, String)> = Vec::new();
    let mut want_deferred: BTreeSet<usize> = BTreeSet::new();
    for (i, rs) in rcpts.iter().enumerate().filter(|(i, _)| accepted(*i)) {
        for r in rs {
            if r.ends_with("@example.test") {
                want_local.push((i, r.clone()));
            } else if r.ends_with("@relay.test") {
                want_relay.push((i, r.clone()));
            } else {
                want_deferred.insert(i);
            }
        }
    }

    // Let the queue settle: flush once, then wait (bounded) for everything accepted to be
    // where it belongs and nothing else to be moving.
    let flush = Command::new(bin("postqueue"))
        .arg("-c")
        .arg(inst.etc())
        .arg("-f")
        .output()
        .expect("postqueue -f");
    assert!(
        flush.status.success(),
        "postqueue -f: {}",
        String::from_utf8_lossy(&flush.stderr)
    );
    let base = inst.root.path().join("var/mail");
    // Judged on one snapshot (queue, Maildirs, sink) taken while everything was in place:
    // the deferred messages keep being retried, so a later look may find one in active/.
    let settled = |snap: &Snapshot| {
        snap.moving.is_empty()
            && snap.deferred.iter().all(|d| {
                d.pending.iter().all(|r| r.ends_with("@defer.test")) && d.reasons.iter().any(|r| r.contains("450"))
            })
            && want_deferred
                .iter()
                .all(|i| snap.deferred.iter().any(|d| d.number == Some(*i)))
            && want_local.iter().all(|k| snap.local.contains_key(k))
            && want_relay.iter().all(|k| snap.relay.contains_key(k))
    };
    let recovery_start = Instant::now();
    let mut snap = snapshot(&inst, &base, &relay_dir);
    let mut recovered = settled(&snap);
    while !recovered && recovery_start.elapsed() < RECOVERY {
        std::thread::sleep(Duration::from_secs(1));
        snap = snapshot(&inst, &base, &relay_dir);
        recovered = settled(&snap);
    }
    let Snapshot {
        moving,
        deferred,
        local,
        local_foreign,
        relay,
        relay_foreign,
    } = snap;
    let lost_local: Vec<&(usize, String)> = want_local.iter().filter(|k| !local.contains_key(*k)).collect();
    let lost_relay: Vec<&(usize, String)> = want_relay.iter().filter(|k| !relay.contains_key(*k)).collect();
    let lost_deferred: Vec<&usize> = want_deferred
        .iter()
        .filter(|i| !deferred.iter().any(|d| d.number == Some(**i)))
        .collect();

    // Copies beyond one: those the client caused by sending again after an ambiguous
    // answer, and the rest (local: none allowed; relay: counted).
    let ambiguous = |i: usize| seen.get(&i).map_or(0, |s| s.ambiguous);
    let (mut local_retry_dups, mut local_dups, mut relay_retry_dups, mut relay_dups) = (0, 0, 0, 0);
    let mut local_dup_keys = Vec::new();
    for ((i, r), n) in &local {
        let extra = n - 1;
        let allowed = ambiguous(*i).saturating_sub(usize::from(!accepted(*i)));
        local_retry_dups += extra.min(allowed);
        if extra > allowed {
            local_dups += extra - allowed;
            local_dup_keys.push((*i, r.clone(), *n));
        }
    }
    for ((i, _), n) in &relay {
        let extra = n - 1;
        let allowed = ambiguous(*i).saturating_sub(usize::from(!accepted(*i)));
        relay_retry_dups += extra.min(allowed);
        relay_dups += extra.saturating_sub(allowed);
    }
    // Delivered without a 250: fine after an ambiguous answer, an error otherwise.
    let delivered: BTreeSet<usize> = local
        .keys()
        .chain(relay.keys())
        .map(|(i, _)| *i)
        .chain(deferred.iter().filter_map(|d| d.number))
        .collect();
    let reply_lost: Vec<usize> = delivered.iter().copied().filter(|i| !accepted(*i)).collect();
    let unaccepted: Vec<usize> = reply_lost.iter().copied().filter(|i| ambiguous(*i) == 0).collect();

    // u0 over IMAP: the same Message-IDs as its Maildir, each accepted message there.
    let imap_ids = (1..=3)
        .find_map(|_| imap_message_ids(imap_port, "u0"))
        .expect("u0's mailbox cannot be listed over IMAP");
    let imap_set: BTreeSet<usize> = imap_ids.iter().filter_map(|m| soak_number(m)).collect();
    let u0_local: usize = local
        .iter()
        .filter(|((_, r), _)| r == "u0@example.test")
        .map(|(_, n)| n)
        .sum();
    let imap_missing: Vec<&(usize, String)> = want_local
        .iter()
        .filter(|(i, r)| r == "u0@example.test" && !imap_set.contains(i))
        .collect();

    // The old master's processes all end; nothing panicked or bounced.
    let orphans_left: Vec<(u32, String)> = {
        wait_for(Duration::from_secs(60), || {
            restart.old.iter().all(|(p, c)| !still_running(*p, c))
        });
        restart
            .old
            .iter()
            .filter(|(p, c)| still_running(*p, c))
            .cloned()
            .collect()
    };
    let log = inst.log();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    // Recovered messages keep paths the other daemons accept (qmgr once sent "./active/ID").
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("bad queue file name")).collect();
    let bounced = inst.log_count("status=bounced");
    let total_kills: usize = kills.values().sum();
    let bad_deferred: Vec<(Option<usize>, &Vec<String>, &Vec<String>)> = deferred
        .iter()
        .filter(|d| {
            d.number
                .is_none_or(|i| !want_deferred.contains(&i) && ambiguous(i) == 0)
                || d.pending.iter().any(|r| !r.ends_with("@defer.test"))
                || !d.reasons.iter().any(|r| r.contains("450"))
        })
        .map(|d| (d.number, &d.pending, &d.reasons))
        .collect();

    println!(
        "soak summary: messages {messages}; accepted {}; accepted but reply lost {}; never accepted {}; \
         attempts refused before the content {} and ambiguous after it {}; \
         local recipients {} lost {} duplicates {local_dups} (client-retry copies {local_retry_dups}); \
         relayed recipients {} lost {} duplicates {relay_dups} (client-retry copies {relay_retry_dups}); \
         deferred messages {} lost {}; delivered but never accepted {}; IMAP u0 {} listed / {u0_local} in Maildir, \
         polls {} ok {} failed; kills {total_kills} in {chaos_time:?} {kills:?}; master killed once, \
         children alive at restart {} of {} {:?}, start attempts {} {:?}, orphans named by the new master {:?}; recovered {recovered} in {:?}; \
         status=deferred lines {}",
        seen.values().filter(|s| s.ok > 0).count(),
        reply_lost.len(),
        never.len(),
        seen.values().map(|s| s.refused).sum::<usize>(),
        seen.values().map(|s| s.ambiguous).sum::<usize>(),
        want_local.len(),
        lost_local.len(),
        want_relay.len(),
        lost_relay.len(),
        want_deferred.len(),
        lost_deferred.len(),
        unaccepted.len(),
        imap_ids.len(),
        imap_ok,
        imap_failed,
        restart.survivors.len(),
        restart.old.len(),
        restart.survivors.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>(),
        restart.attempts,
        restart.refusals,
        log.lines()
            .find_map(|l| l.split_once("processes of a previous master").map(|(_, r)| r))
            .unwrap_or("none"),
        recovery_start.elapsed(),
        inst.log_count("status=deferred"),
    );

    if let Some(keep) = std::env::var_os("SOAK_KEEP") {
        // For a look afterwards: the maillog and what the clients saw.
        let keep = PathBuf::from(keep);
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::write(keep.join("maillog"), &log);
        let _ = std::fs::copy(&results, keep.join("load.out"));
    }
    assert!(
        lost_local.is_empty() && lost_relay.is_empty() && lost_deferred.is_empty(),
        "accepted mail lost: local {lost_local:?}, relay {lost_relay:?}, deferred {lost_deferred:?}\n\
         queue: {moving:?}"
    );
    assert!(recovered, "the queue did not settle: moving {moving:?}");
    assert!(local_dup_keys.is_empty(), "local duplicates: {local_dup_keys:?}");
    assert!(unaccepted.is_empty(), "delivered but never accepted: {unaccepted:?}");
    assert_eq!((local_foreign, relay_foreign), (0, 0), "messages the load never sent");
    assert!(imap_missing.is_empty(), "not listed over IMAP: {imap_missing:?}");
    assert_eq!(imap_ids.len(), u0_local, "IMAP and the Maildir disagree");
    assert!(
        bad_deferred.is_empty(),
        "unexpected deferred messages: {bad_deferred:?}"
    );
    assert!(
        orphans_left.is_empty(),
        "processes of the killed master still run: {orphans_left:?}"
    );
    assert!(panics.is_empty(), "daemons panicked:\n{}", panics.join("\n"));
    assert!(refused.is_empty(), "queue file names refused:\n{}", refused.join("\n"));
    assert_eq!(bounced, 0, "nothing may bounce");
    assert!(total_kills > 0, "the chaos loop killed nothing");
    inst.stop();
}

/// Reads one SMTP reply (all its lines); returns the last line.
fn reply(r: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    for _ in 0..50 {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    line.trim_end().to_string()
}

/// The master kill of the soak, made deterministic: master dies while an smtpd it started
/// is in the middle of a message. The orphaned smtpd closes its copy of the listening
/// socket at once (lib/src/skeleton/event.rs `begin_stop`), so `postern start` succeeds
/// at the first attempt and new clients reach the new master's smtpd, while the old one
/// finishes the message it was receiving (`250`), is delivered, and then exits.
#[test]
fn a_new_master_starts_while_an_orphaned_smtpd_finishes_its_message() {
    use std::io::{BufReader, Write};
    let port = free_port();
    let mut inst = Instance::new(&pipeline_services(port), &["queue_run_delay=1s"]);
    add_user(&inst, "u0", PASSWORD);
    inst.start();
    let master = inst.master_pid();

    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut r = BufReader::new(stream.try_clone().expect("clone"));
    let mut w = stream;
    assert!(reply(&mut r).starts_with("220"));
    for (cmd, want) in [
        ("EHLO old.test", "250"),
        ("MAIL FROM:<sender@example.test>", "250"),
        ("RCPT TO:<u0@example.test>", "250"),
        ("DATA", "354"),
    ] {
        write!(w, "{cmd}\r\n").expect("write");
        let got = reply(&mut r);
        assert!(got.starts_with(want), "{cmd}: {got}");
    }
    w.write_all(b"Message-ID: <orphan@example.test>\r\nSubject: orphan\r\n\r\nfirst half\r\n")
        .expect("write");
    let old: Vec<u32> = daemons(master)
        .into_iter()
        .filter(|(_, c)| c == "smtpd")
        .map(|(p, _)| p)
        .collect();
    assert_eq!(old.len(), 1, "one smtpd serves the session");

    assert!(kill9(master));
    assert!(wait_for(Duration::from_secs(10), || !alive(master)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(still_running(old[0], "smtpd"), "the smtpd in mid-message keeps serving");
    let out = inst.postern(&["start"]);
    assert!(
        out.status.success(),
        "a new master must start while the old smtpd finishes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the new master's smtpd");
    fresh.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut fr = BufReader::new(fresh);
    assert!(reply(&mut fr).starts_with("220"), "the new smtpd greets");
    let orphan = format!("smtpd[{}]", old[0]);
    assert!(
        inst.log()
            .lines()
            .any(|l| l.contains(&format!("processes of a previous master (pid {master})")) && l.contains(&orphan)),
        "the new master names the orphaned smtpd:\n{}",
        inst.log()
    );

    w.write_all(b"second half\r\n.\r\n").expect("write");
    let end = reply(&mut r);
    assert!(end.starts_with("250"), "the orphaned smtpd took the message: {end}");
    let _ = w.write_all(b"QUIT\r\n");
    let _ = reply(&mut r);
    assert!(
        wait_for(Duration::from_secs(60), || !still_running(old[0], "smtpd")),
        "the orphaned smtpd exits once its session ends"
    );
    let md = inst.root.path().join("var/mail/u0");
    assert!(
        wait_for(Duration::from_secs(60), || maildir_messages(&md).len() == 1),
        "the message is delivered\n{}",
        inst.log()
    );
    let text = String::from_utf8_lossy(&maildir_messages(&md)[0]).into_owned();
    assert!(text.contains("first half") && text.contains("second half"), "{text}");
    inst.stop();
}
