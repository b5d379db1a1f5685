//! The crash test of issue 3: cleanup processes are killed with SIGKILL, over and over,
//! while 50 concurrent SMTP sessions (Python threads with smtplib's connection, 10
//! messages each, each message retried after a temporary failure) send through the real
//! smtpd and cleanup. No qmgr runs, so every queue file stays in `incoming/`.
//!
//! Afterwards:
//! - every message that got `250 ... queued as ID` is the complete queue file
//!   `incoming/ID`: it parses, its envelope is the one sent, its content ends as sent and
//!   carries the message's Message-ID;
//! - every other queue file in `incoming/` is a complete copy of a message whose end of
//!   DATA was answered with a temporary failure at least once. That is the one window
//!   durability leaves open (as in Postfix): cleanup renamed the file into `incoming/` and
//!   was killed before it could answer, so smtpd answered `451 4.3.0` and the client,
//!   retrying, may have queued a duplicate (counted and printed); when no retry got a 250,
//!   the copy is the message's only one ("orphan", counted and printed);
//! - no file holds a message that was never sent, and nothing but complete queue files
//!   and cleanup's own `.cleanup.*` temporaries (never read by qmgr; counted) is there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use postern_lib::queue_file::QueueFile;
use postern_tests::{Instance, bin, children_of, daemon_service, free_port, proc_status, python};

const SESSIONS: usize = 50;
const PER_SESSION: usize = 10;
const TRIES: usize = 10;

/// The Python client: prints one line per attempt, `MSGID RESULT [QUEUEID]`, where RESULT
/// is the SMTP code of the end-of-data reply, `pre` (refused before the content was sent),
/// `drop` (the connection failed before the content was sent) or `dropdata` (it failed
/// after the content was sent, before the reply).
fn client_script(port: u16) -> String {
    format!(
        r#"
import smtplib, threading
PORT = {port}
SESSIONS = {SESSIONS}
PER = {PER_SESSION}
TRIES = {TRIES}
lock = threading.Lock()
lines = []
def rec(*a):
    with lock:
        lines.append(" ".join(str(x) for x in a))
def message(t, m):
    mid = "crash-%d-%d@client.test" % (t, m)
    body = "".join("%d-%d-%d %s\r\n" % (t, m, i, "x" * 70) for i in range(50)) + "end %d-%d\r\n" % (t, m)
    head = "From: a@client.test\r\nTo: b@example.test\r\nSubject: crash %d-%d\r\nMessage-ID: <%s>\r\n\r\n" % (t, m, mid)
    return mid, (head + body).encode()
def close(s):
    try:
        s.close()
    except Exception:
        pass
def session(t):
    s = None
    for m in range(PER):
        mid, data = message(t, m)
        for a in range(TRIES):
            try:
                if s is None:
                    s = smtplib.SMTP("127.0.0.1", PORT, timeout=60)
                    s.ehlo("client.test")
                c1, _ = s.mail("a@client.test")
                c2, _ = s.rcpt("b@example.test") if c1 == 250 else (0, b"")
                c3, _ = s.docmd("DATA") if c2 == 250 else (0, b"")
                if c3 != 354:
                    rec(mid, "pre")
                    s.rset()
                    continue
            except Exception:
                rec(mid, "drop")
                close(s)
                s = None
                continue
            try:
                s.send(data + b".\r\n")
                code, text = s.getreply()
            except Exception:
                rec(mid, "dropdata")
                close(s)
                s = None
                continue
            if code == 250:
                rec(mid, 250, text.decode().rsplit(" ", 1)[-1])
                break
            rec(mid, code)
            if code >= 500:
                break
    if s is not None:
        try:
            s.quit()
        except Exception:
            pass
threads = [threading.Thread(target=session, args=(t,)) for t in range(SESSIONS)]
for th in threads:
    th.start()
for th in threads:
    th.join()
print("\n".join(lines))
print("done")
"#
    )
}

/// The content as cleanup stores it ends with the body as sent, in LF lines.
fn expected_tail(mid: &str) -> Option<String> {
    let (t, m) = mid
        .strip_prefix("crash-")?
        .strip_suffix("@client.test")?
        .split_once('-')?;
    let mut s = String::new();
    for i in 0..50 {
        s.push_str(&format!("{t}-{m}-{i} {}\n", "x".repeat(70)));
    }
    s.push_str(&format!("end {t}-{m}\n"));
    Some(s)
}

fn message_id(content: &str) -> Option<String> {
    content
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("message-id")
                .then(|| value.trim().to_string())
        })
        .and_then(|v| v.strip_prefix('<')?.strip_suffix('>').map(str::to_string))
}

/// The cleanup processes master runs now.
fn cleanups(master: u32) -> Vec<u32> {
    children_of(master)
        .into_iter()
        .filter(|&p| proc_status(p, "Name").as_deref() == Some("cleanup"))
        .collect()
}

#[test]
fn killing_cleanup_loses_no_accepted_message() {
    for b in ["smtpd", "cleanup", "trivial-rewrite", "master"] {
        assert!(bin(b).exists(), "build the workspace first: {b} is missing");
    }
    let port = free_port();
    let mut services = daemon_service("smtp", "inet", &format!("127.0.0.1:{port}"), "smtpd", "maxproc = 4");
    services.push_str(&daemon_service("cleanup", "unix", "", "cleanup", "maxproc = 32"));
    services.push_str(&daemon_service(
        "rewrite",
        "unix",
        "",
        "trivial-rewrite",
        "max_use = 100000",
    ));
    let mut inst = Instance::new(
        &services,
        &[
            "smtpd_reject_unlisted_recipient=false",
            "smtpd_client_connection_count_limit=1000",
        ],
    );
    inst.start();
    let master = inst.master_pid();

    let script = client_script(port);
    let client = std::thread::spawn(move || python(&script));
    // Kill whatever cleanup processes exist, again and again, until the clients are done
    // (bounded: the clients' own timeouts end them; this loop also gives up after 10 min).
    let started = Instant::now();
    let mut kills = 0usize;
    let mut round = 0u64;
    while !client.is_finished() && started.elapsed() < Duration::from_secs(600) {
        round += 1;
        // Alternate between killing one and killing all, at varying intervals.
        let pids = cleanups(master);
        let victims: Vec<u32> = if round.is_multiple_of(3) {
            pids
        } else {
            pids.into_iter().skip((round % 5) as usize).take(1).collect()
        };
        for p in victims {
            if let Ok(pid) = i32::try_from(p)
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).is_ok()
            {
                kills += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10 + (round * 37) % 90));
    }
    let output = client.join().expect("client thread");
    assert!(output.trim_end().ends_with("done"), "{output}");
    inst.stop();

    // What the clients saw.
    let mut accepted: BTreeMap<String, Vec<String>> = BTreeMap::new(); // mid -> queue IDs
    let mut tempfailed_after_data: BTreeSet<String> = BTreeSet::new();
    let mut attempts: BTreeMap<String, usize> = BTreeMap::new();
    let (mut temp, mut dropped_after_data, mut pre) = (0usize, 0usize, 0usize);
    for line in output.lines().filter(|l| *l != "done") {
        let mut w = line.split(' ');
        let (Some(mid), Some(result)) = (w.next(), w.next()) else {
            panic!("bad client line {line:?}");
        };
        *attempts.entry(mid.to_string()).or_default() += 1;
        match result {
            "250" => accepted
                .entry(mid.to_string())
                .or_default()
                .push(w.next().unwrap_or_default().to_string()),
            "dropdata" => {
                dropped_after_data += 1;
                tempfailed_after_data.insert(mid.to_string());
            }
            "pre" | "drop" => pre += 1,
            code if code.starts_with('4') => {
                temp += 1;
                tempfailed_after_data.insert(mid.to_string());
            }
            other => panic!("{mid}: unexpected end-of-data reply {other}"),
        }
    }
    assert_eq!(attempts.len(), SESSIONS * PER_SESSION, "every message was tried");

    // What is on disk.
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new(); // mid -> queue file names
    let mut temporaries = 0usize;
    for ent in std::fs::read_dir(inst.queue().join("incoming")).expect("read incoming") {
        let ent = ent.expect("entry");
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.starts_with(".cleanup.") {
            temporaries += 1;
            continue;
        }
        assert!(
            postern_lib::queue_id::QueueId::parse(&name).is_ok(),
            "stray name in incoming/: {name}"
        );
        let f = std::fs::File::open(ent.path()).expect("open queue file");
        let (qf, content) = QueueFile::read_all(f, &Default::default())
            .unwrap_or_else(|e| panic!("incoming/{name} is not a complete queue file: {e}"));
        let text = String::from_utf8_lossy(&content);
        let mid = message_id(&text).unwrap_or_else(|| panic!("incoming/{name}: no Message-ID: {text}"));
        let tail = expected_tail(&mid).unwrap_or_else(|| panic!("incoming/{name}: a message never sent: {mid}"));
        assert!(text.ends_with(&tail), "incoming/{name}: content not as sent:\n{text}");
        assert_eq!(qf.envelope.sender, "a@client.test", "incoming/{name}");
        let rcpts: Vec<&str> = qf.recipients.iter().map(|r| r.spec.address.as_str()).collect();
        assert_eq!(rcpts, ["b@example.test"], "incoming/{name}");
        files.entry(mid).or_default().push(name);
    }

    // Every 250 is its queue file.
    for (mid, ids) in &accepted {
        for id in ids {
            let names = files.get(mid).cloned().unwrap_or_default();
            assert!(
                names.contains(id),
                "{mid} got 250 queued as {id}, but incoming/ has {names:?}"
            );
        }
    }
    // Every other file is a copy of a message whose end of DATA once failed temporarily.
    let mut duplicates = 0usize;
    let mut orphans = 0usize;
    for (mid, names) in &files {
        let got = accepted.get(mid).map_or(0, Vec::len);
        let extra = names.len().saturating_sub(got);
        if extra > 0 {
            assert!(
                tempfailed_after_data.contains(mid),
                "{mid}: {names:?} in incoming/ but only {got} 250 replies and no failure after DATA"
            );
            if got == 0 {
                orphans += 1;
                duplicates += extra - 1;
            } else {
                duplicates += extra;
            }
        }
    }
    let accepted_count = accepted.len();
    let lost: Vec<&String> = attempts.keys().filter(|m| !accepted.contains_key(*m)).collect();
    eprintln!(
        "crash test: {kills} cleanup kills; {} messages, {accepted_count} accepted with 250, {} never accepted \
         ({lost:?}); end-of-data 4xx replies {temp}, connections lost after DATA {dropped_after_data}, \
         attempts refused or dropped before DATA {pre}; queue files {}, duplicates {duplicates}, orphans {orphans}, \
         .cleanup.* temporaries {temporaries}",
        attempts.len(),
        lost.len(),
        files.values().map(Vec::len).sum::<usize>(),
    );
    assert!(kills > 0, "no cleanup process was killed");
}
