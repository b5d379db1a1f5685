//! A retry wave for a dead relay, through the real master (issue 14): N messages deferred
//! for a relay on loopback where nothing listens come due at once, and qmgr must defer
//! them again cheaply — a few probes, the destination found dead, the rest deferred where
//! it lies — with `active/` and its own memory bounded, nothing lost; when the relay comes
//! back, every message is delivered exactly once.
//!
//! The queue files are written as cleanup writes them into a staging directory of the
//! queue file system, given a past retry time (their modification time) and renamed into
//! `deferred/` together (three of them into a hashed subdirectory). N is `RETRY_WAVE_N` (default 2,000, what a debug build does in
//! seconds); `bench/retry_wave.sh` runs the 20,000-message wave on a release build beside
//! Postfix.
//!
//! Bounds asserted: `active/` holds at most twice the destination's initial concurrency
//! window while the relay is dead (the probes), nothing at all while it is known dead,
//! and at most twice its concurrency limit while it takes mail; qmgr's resident memory
//! grows by less than [`RSS_GROWTH_KB`] over the waves.

use postern_lib::queue_file::Notify;
use postern_tests::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

const LONG: Duration = Duration::from_secs(120);
/// The destination's initial concurrency window (`initial_destination_concurrency`).
const INITIAL: usize = 5;
/// Its concurrency limit (`smtp_destination_concurrency_limit`).
const LIMIT: usize = 10;
/// Most growth of qmgr's resident set over the waves.
const RSS_GROWTH_KB: u64 = 6 * 1024;

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn qmgr_pid(inst: &Instance) -> u32 {
    let mut pid = None;
    assert!(
        wait_for(LONG, || {
            pid = children_of(inst.master_pid())
                .into_iter()
                .find(|&p| comm(p).as_deref() == Some("qmgr"));
            pid.is_some()
        }),
        "no qmgr"
    );
    pid.unwrap_or_default()
}

/// Samples the number of files in `active/` and qmgr's RSS until dropped; returns the
/// largest of each.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, u64)>>,
}

impl Sampler {
    fn start(active: &Path, pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, active) = (stop.clone(), active.to_path_buf());
        let thread = std::thread::spawn(move || {
            let (mut most, mut rss) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                most = most.max(count(&active));
                rss = rss.max(rss_kb(pid));
                std::thread::sleep(Duration::from_millis(2));
            }
            (most, rss)
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

/// Sets the retry time of every file in `dir` to a minute ago.
fn make_due(dir: &Path) {
    let past = SystemTime::now() - Duration::from_secs(60);
    for p in files_below(dir) {
        if let Ok(f) = std::fs::File::options().write(true).open(&p) {
            let _ = f.set_modified(past);
        }
    }
}

/// Every file in deferred/ has a retry time in the future and a defer log saying why.
fn all_deferred_with_reasons(queue: &Path, n: usize, reason: &str) -> Result<(), String> {
    let files = files_below(&queue.join("deferred"));
    if files.len() != n {
        return Err(format!("{} of {n} in deferred/", files.len()));
    }
    let now = SystemTime::now();
    for p in &files {
        let name = p.file_name().unwrap_or_default();
        let mtime = std::fs::metadata(p)
            .and_then(|m| m.modified())
            .map_err(|e| e.to_string())?;
        if mtime <= now {
            return Err(format!("{} has no future retry time", p.display()));
        }
        let log = std::fs::read_to_string(queue.join("defer").join(name)).unwrap_or_default();
        if !log.contains("status=4.4.1") || !log.contains(reason) {
            return Err(format!("defer log of {name:?}: {log:?}"));
        }
    }
    Ok(())
}

#[test]
fn a_retry_wave_for_a_dead_relay_stays_small_and_nothing_is_lost() {
    let n: usize = std::env::var("RETRY_WAVE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let relay_port = free_port();
    let smtp_port = free_port();
    let initial = format!("initial_destination_concurrency={INITIAL}");
    let limit = format!("smtp_destination_concurrency_limit={LIMIT}");
    let mut inst = Instance::new(
        &pipeline_services(smtp_port),
        &[
            "transport_maps=[\"transport\"]",
            &initial,
            &limit,
            // Dead for an hour once found dead, and an hour between retries: every retry
            // time below is set by the test.
            "minimal_backoff_time=3600s",
            "maximal_backoff_time=3600s",
            "queue_run_delay=1s",
            // The files say they arrived in 2023.
            "maximal_queue_lifetime=3650d",
        ],
    );
    std::fs::write(
        inst.etc().join("transport"),
        format!("dead.test smtp:[127.0.0.1]:{relay_port}\n"),
    )
    .unwrap();
    inst.start();
    let queue = inst.queue();
    let (active, deferred) = (queue.join("active"), queue.join("deferred"));
    let pid = qmgr_pid(&inst);
    // Idle a moment: the baseline is qmgr after its first queue runs.
    std::thread::sleep(Duration::from_secs(2));
    let base = rss_kb(pid);

    // N messages, one recipient each, as cleanup writes them; all due at once.
    let staging = queue.join("wave-staging");
    std::fs::create_dir(&staging).unwrap();
    for i in 0..n {
        let rcpt = format!("u{i}@dead.test");
        let body = format!(
            "From: alice@example.test\nTo: {rcpt}\nMessage-ID: <wave-{i}@example.test>\nSubject: wave {i}\n\nbody {i}\n"
        );
        write_queue_file(
            &inst,
            "wave-staging",
            "alice@example.test",
            &[(&rcpt, Notify::default())],
            &[],
            body.as_bytes(),
        );
    }
    make_due(&staging);

    // Wave 1: qmgr knows nothing of the relay. A few probes fail, the destination is
    // found dead, the rest is deferred where it lies.
    let sampler = Sampler::start(&active, pid);
    // A few in a hashed subdirectory, as another queue layout would have them.
    std::fs::create_dir(deferred.join("h")).unwrap();
    if is_root() {
        let (u, g) = postern_lib::privs::lookup("postern").expect("mail_owner");
        std::os::unix::fs::chown(deferred.join("h"), Some(u.as_raw()), Some(g.as_raw())).unwrap();
    }
    for (i, p) in files_below(&staging).into_iter().enumerate() {
        let to = if i < 3 { deferred.join("h") } else { deferred.clone() };
        std::fs::rename(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    let refused = format!("connect to 127.0.0.1[127.0.0.1:{relay_port}]: Connection refused");
    let mut state = Err(String::new());
    let done = wait_for(LONG, || {
        state = all_deferred_with_reasons(&queue, n, "refused");
        state.is_ok() && count(&active) == 0
    });
    let (most_active, peak) = sampler.finish();
    assert!(done, "wave 1: {state:?}, {} active", count(&active));
    assert!(
        most_active <= 2 * INITIAL,
        "wave 1: {most_active} messages in active/ at once"
    );
    let suspended = inst.log_count("status=deferred (delivery temporarily suspended: ");
    let probes = inst.log_count(&format!("status=deferred ({refused}"));
    let others: Vec<String> = inst
        .log()
        .lines()
        .filter(|l| l.contains("status=deferred") && !l.contains("suspended") && !l.contains(&refused))
        .map(String::from)
        .collect();
    assert_eq!(suspended + probes, n, "one deferral per message; others: {others:?}");
    assert!(
        (1..=2 * INITIAL).contains(&probes),
        "{probes} delivery attempts to a dead relay"
    );
    assert!(
        inst.log().contains("deferred in place (destination dead)"),
        "{}",
        inst.log()
    );

    // Wave 2: due again while the relay is known dead: not one message into active/, no
    // new attempt.
    let sampler = Sampler::start(&active, pid);
    make_due(&deferred);
    let done = wait_for(LONG, || {
        inst.log_count("status=deferred (delivery temporarily suspended: ") == suspended + n
    });
    std::thread::sleep(Duration::from_millis(200));
    let (most_active, peak2) = sampler.finish();
    assert!(
        done,
        "wave 2: {} suspended lines",
        inst.log_count("delivery temporarily suspended")
    );
    assert_eq!(most_active, 0, "wave 2 activated messages");
    assert_eq!(inst.log_count(&format!("status=deferred ({refused}")), probes);
    all_deferred_with_reasons(&queue, n, "delivery temporarily suspended").unwrap();
    let grown = peak.max(peak2).saturating_sub(base);
    assert!(
        grown < RSS_GROWTH_KB,
        "qmgr grew from {base} kB by {grown} kB during the waves"
    );
    eprintln!(
        "n={n} qmgr rss: base {base} kB, peak {} kB, after {} kB; probes {probes}",
        peak.max(peak2),
        rss_kb(pid)
    );

    // The relay comes back; the operator flushes (which also opens dead destinations).
    let sink_dir = dir.path().join("sink");
    std::fs::create_dir_all(&sink_dir).unwrap();
    let _sink = sink(&sink_dir, relay_port, 250);
    let sampler = Sampler::start(&active, pid);
    let out = std::process::Command::new(bin("postqueue"))
        .arg("-c")
        .arg(inst.etc())
        .arg("-f")
        .output()
        .expect("postqueue");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started = std::time::Instant::now();
    let delivered = wait_for(LONG, || files_below(&deferred).is_empty() && count(&active) == 0);
    let (most_active, _) = sampler.finish();
    let log = inst.log();
    let tail: Vec<&str> = log.lines().filter(|l| l.contains("qmgr")).rev().take(20).collect();
    assert!(
        delivered,
        "{} deferred, {} active, {} at the sink; qmgr's last lines: {tail:#?}",
        files_below(&deferred).len(),
        count(&active),
        sink_messages(&sink_dir).len()
    );
    eprintln!("delivered {n} in {:?}", started.elapsed());
    assert!(
        most_active <= 2 * LIMIT,
        "{most_active} messages in active/ at once while the relay takes mail"
    );
    let index = sink_index(&sink_dir);
    assert_eq!(index.len(), n, "distinct messages at the relay");
    for i in 0..n {
        let key = (format!("<wave-{i}@example.test>"), format!("u{i}@dead.test"));
        assert_eq!(index.get(&key), Some(&1), "message {i} delivered once");
    }
    assert_eq!(inst.log_count("status=sent"), n);
}
