//! `postqueue --shape` (Postfix's qshape) and the selection options of `postsuper` /
//! `postqueue` against a real master whose relay is a dead loopback port.
//!
//! Real mail, sent over SMTP and deferred by the smtp client ("Connection refused"), sits
//! in the deferred queue beside queue files written with lib's writer whose arrival times
//! are set (7 minutes, 30 minutes and 2,000 minutes ago) and whose retry time is an hour
//! away, so qmgr leaves everything alone. Then: the exact qshape table; a `--dry-run` of
//! each selection lists exactly the expected IDs and leaves every file of the queue as it
//! was (same names, inodes, sizes, modification times); the real action then moves or
//! removes exactly the selected messages and nothing else.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_lib::queue_file::Notify;
use postern_lib::queue_id::QueueId;
use postern_tests::*;

const LONG: Duration = Duration::from_secs(60);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn run(inst: &Instance, program: &str, args: &[&str]) -> Output {
    Command::new(bin(program))
        .arg("-c")
        .arg(inst.etc())
        .args(args)
        .output()
        .expect("run tool")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A deferred message that arrived `age_min` minutes ago and is due in an hour: written
/// in hold/ (where qmgr never looks), dated, then renamed into deferred/.
fn old_deferred(inst: &Instance, sender: &str, rcpts: &[&str], age_min: u64) -> QueueId {
    let rcpts: Vec<(&str, Notify)> = rcpts.iter().map(|r| (*r, Notify::UNSPECIFIED)).collect();
    let (id, path) = write_queue_file_arrived(
        inst,
        "hold",
        sender,
        &rcpts,
        &[],
        b"Subject: old\n\nold\n",
        now() - age_min * 60,
    );
    let f = std::fs::File::options().write(true).open(&path).expect("open");
    f.set_modified(SystemTime::now() + Duration::from_secs(3600))
        .expect("mtime");
    std::fs::rename(&path, inst.queue().join("deferred").join(id.as_str())).expect("rename");
    id
}

/// Every file below the queue directory's message and log queues: name → (inode, size,
/// mtime).
fn snapshot(queue: &Path) -> BTreeMap<String, (u64, u64, i64)> {
    let mut out = BTreeMap::new();
    for q in [
        "maildrop", "hold", "incoming", "active", "deferred", "defer", "bounce", "corrupt",
    ] {
        for p in files_below(&queue.join(q)) {
            let m = std::fs::symlink_metadata(&p).expect("stat");
            out.insert(
                p.strip_prefix(queue).unwrap().display().to_string(),
                (m.ino(), m.size(), m.mtime()),
            );
        }
    }
    out
}

fn ids_in(queue: &Path, q: &str) -> Vec<String> {
    let mut v: Vec<String> = files_below(&queue.join(q))
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .filter(|n| QueueId::parse(n).is_ok())
        .collect();
    v.sort();
    v
}

/// The IDs a dry run listed (`ID: would be ...` lines).
fn listed(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| l.contains(": would be "))
        .filter_map(|l| l.split(':').next().map(String::from))
        .collect();
    v.sort();
    v
}

fn sorted(ids: &[&QueueId]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    v.sort();
    v
}

/// An instance whose relay (for every non-local domain) is a loopback port nobody
/// listens on, with two real messages deferred there: one to two recipients at
/// remote.test, one to other.test. Returns the instance and the two queue IDs.
fn deferred_instance() -> (Instance, QueueId, QueueId) {
    let smtp_port = free_port();
    let dead = free_port();
    let mut inst = Instance::new(
        &pipeline_services(smtp_port),
        &[
            &format!("relayhost=[127.0.0.1]:{dead}"),
            "minimal_backoff_time=3600s",
            "maximal_backoff_time=3600s",
        ],
    );
    inst.start();
    let msg =
        |n: &str| format!("From: a@example.test\r\nSubject: {n}\r\nMessage-ID: <{n}@example.test>\r\n\r\n{n}\r\n");
    smtplib_send(
        smtp_port,
        "alice@example.test",
        &["bob@remote.test", "carol@Remote.Test"],
        &msg("r1"),
    );
    smtplib_send(smtp_port, "alice@example.test", &["dave@other.test"], &msg("r2"));
    let q = inst.queue();
    assert!(
        wait_for(LONG, || ids_in(&q, "deferred").len() == 2
            && inst.log_count("status=deferred") == 3),
        "two messages deferred; log:\n{}",
        inst.log()
    );
    let id_of = |mid: &str| -> QueueId {
        let log = inst.log();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("message-id=<{mid}@example.test>")))
            .expect("cleanup line");
        let id = line.split(": ").nth(1).expect("queue id");
        QueueId::parse(id).expect("valid id")
    };
    let (r1, r2) = (id_of("r1"), id_of("r2"));
    (inst, r1, r2)
}

#[test]
fn shape_is_qshape_for_the_deferred_queue() {
    let (inst, _r1, _r2) = deferred_instance();
    old_deferred(&inst, "old@sender.test", &["x@remote.test"], 7);
    old_deferred(&inst, "old@sender.test", &["y@other.test", "z@third.test"], 30);
    old_deferred(&inst, "", &["w@remote.test"], 2000);

    let out = run(&inst, "postqueue", &["--shape", "deferred"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let row = |name: &str, cells: &str| format!("{name:>39}{cells}");
    let want = [
        row("", "  T  5 10 20 40 80 160 320 640 1280 1280+"),
        row("TOTAL", "  7  3  1  0  2  0   0   0   0    0     1"),
        row("remote.test", "  4  2  1  0  0  0   0   0   0    0     1"),
        row("other.test", "  2  1  0  0  1  0   0   0   0    0     0"),
        row("third.test", "  1  0  0  0  1  0   0   0   0    0     0"),
    ]
    .join("\n")
        + "\n";
    assert_eq!(stdout(&out), want);

    // -s: sender domains, one count per message.
    let out = run(&inst, "postqueue", &["--shape", "-s", "deferred"]);
    let want = [
        row("", "  T  5 10 20 40 80 160 320 640 1280 1280+"),
        row("TOTAL", "  5  2  1  0  1  0   0   0   0    0     1"),
        // Equal totals: the shorter name first, as qshape.
        row("sender.test", "  2  0  1  0  1  0   0   0   0    0     0"),
        row("example.test", "  2  2  0  0  0  0   0   0   0    0     0"),
        row("MAILER-DAEMON", "  1  0  0  0  0  0   0   0   0    0     1"),
    ]
    .join("\n")
        + "\n";
    assert_eq!(stdout(&out), want);

    // The default is qshape's: incoming and active, empty here.
    let out = run(&inst, "postqueue", &["--shape"]);
    assert_eq!(
        stdout(&out).lines().nth(1),
        Some(row("TOTAL", "  0  0  0  0  0  0   0   0   0    0     0").as_str())
    );
    // A selection narrows what is counted.
    let out = run(
        &inst,
        "postqueue",
        &["--shape", "deferred", "--reason", "connection refused"],
    );
    assert_eq!(
        stdout(&out).lines().nth(1),
        Some(row("TOTAL", "  3  3  0  0  0  0   0   0   0    0     0").as_str())
    );
}

#[test]
fn dry_run_changes_nothing_and_the_action_does_exactly_the_selection() {
    let (inst, r1, r2) = deferred_instance();
    let o7 = old_deferred(&inst, "old@sender.test", &["x@remote.test"], 7);
    let o30 = old_deferred(&inst, "old@sender.test", &["y@other.test"], 30);
    let o2000 = old_deferred(&inst, "", &["w@remote.test"], 2000);
    let q = inst.queue();
    let before = snapshot(&q);

    // Each dry run lists exactly its selection and touches nothing.
    let cases: [(&str, &[&str], Vec<String>); 6] = [
        (
            "postsuper",
            &[
                "-d",
                "ALL",
                "--reason",
                "Connection refused",
                "--domain",
                "remote.test",
                "--dry-run",
            ],
            sorted(&[&r1]),
        ),
        (
            "postsuper",
            &["-h", "ALL", "--older", "20m", "--dry-run"],
            sorted(&[&o30, &o2000]),
        ),
        (
            "postsuper",
            &["-d", "ALL", "--from", "<>", "--dry-run"],
            sorted(&[&o2000]),
        ),
        (
            "postsuper",
            &["-r", "ALL", "--from", "sender.test", "--younger", "10m", "--dry-run"],
            sorted(&[&o7]),
        ),
        (
            "postqueue",
            &["-f", "--reason", "refused", "--dry-run"],
            sorted(&[&r1, &r2]),
        ),
        ("postqueue", &["-s", "other.test", "--dry-run"], sorted(&[&r2, &o30])),
    ];
    for (program, args, want) in &cases {
        let out = run(&inst, program, args);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(&listed(&stdout(&out)), want, "{program} {args:?}: {}", stdout(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("nothing was changed"),
            "{program} {args:?}"
        );
        assert_eq!(snapshot(&q), before, "{program} {args:?} changed the queue");
    }
    // A listing filtered the same way.
    let out = run(&inst, "postqueue", &["-p", "--to", "carol@remote.test"]);
    let text = stdout(&out);
    assert!(text.contains(r1.as_str()) && !text.contains(r2.as_str()), "{text}");
    assert!(text.contains("-- 0 Kbytes in 1 Request."), "{text}");
    assert!(
        run(&inst, "postsuper", &["-d", "ALL", "--older", "2 days"])
            .status
            .code()
            == Some(1)
    );
    assert_eq!(snapshot(&q), before);

    // The real actions do exactly what the dry runs said.
    let out = run(&inst, "postsuper", &["-h", "ALL", "--older", "20m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ids_in(&q, "hold"), sorted(&[&o30, &o2000]));
    assert_eq!(ids_in(&q, "deferred"), sorted(&[&r1, &r2, &o7]));
    let out = run(
        &inst,
        "postsuper",
        &["-d", "ALL", "--reason", "Connection refused", "--domain", "remote.test"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Deleted: 1 message"));
    assert_eq!(ids_in(&q, "deferred"), sorted(&[&r2, &o7]));
    assert!(
        !files_below(&q.join("defer")).iter().any(|p| p.ends_with(r1.as_str())),
        "defer log removed"
    );
    let out = run(&inst, "postsuper", &["-H", "ALL", "--from", "MAILER-DAEMON"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Released from hold: 1 message"));
    assert_eq!(ids_in(&q, "hold"), sorted(&[&o30]));
    // Files not selected kept their inode: nothing else was rewritten.
    let after = snapshot(&q);
    let key = format!("deferred/{o7}");
    assert_eq!(after.get(&key), before.get(&key));

    // A selective flush retries exactly the selected message now (its retry time was an
    // hour away); the other deferred message is not tried again.
    let out = run(&inst, "postqueue", &["-f", "--from", "old@sender.test"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Flushed: 1 message"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tried = |id: &QueueId| {
        inst.log()
            .lines()
            .filter(|l| l.contains(&format!("{id}: to=<")) && l.contains("status=deferred"))
            .count()
    };
    assert!(wait_for(LONG, || tried(&o7) == 1), "o7 retried; log:\n{}", inst.log());
    assert_eq!(tried(&r2), 1, "r2 was tried once, when it arrived");
}
