//! The queue listing: `postqueue -p`, `mailq` (argv[0]) and `sendmail -bp` print Postfix's
//! format for a known queue content, `Mail queue is empty` for an empty one, and
//! `postqueue -j` prints one JSON object per message; `postqueue -f` and `sendmail -q`
//! say clearly when qmgr is not running.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use postern_lib::queue_file::{Arrival, Envelope, Notify, QueueFileWriter, RecipientSpec, RecipientStatus, mark_done};
use postern_lib::queue_id::QueueId;
use postern_tests::{Instance, bin};

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program).args(args).output().expect("run program")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes a queue file into `queue/dir/` and returns its size.
fn queue_file(queue: &Path, dir: &str, id: QueueId, secs: u64, sender: &str, rcpts: &[&str], done: &[usize]) -> u64 {
    let d = queue.join(dir);
    std::fs::create_dir_all(&d).expect("mkdir queue");
    let path = d.join(id.as_str());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create queue file");
    let env = Envelope {
        queue_id: id,
        arrival: Arrival { secs, micros: 0 },
        sender: sender.into(),
        attributes: BTreeMap::new(),
    };
    let mut w = QueueFileWriter::new(file, &env).expect("writer");
    for r in rcpts {
        w.add_recipient(&RecipientSpec {
            address: (*r).into(),
            orcpt: None,
            notify: Notify::UNSPECIFIED,
        })
        .expect("recipient");
    }
    w.write_content(b"Subject: test\n\nhello\n").expect("content");
    let file = w.finish().expect("finish");
    if !done.is_empty() {
        let qf = postern_lib::queue_file::QueueFile::read(std::fs::File::open(&path).expect("open")).expect("read");
        for &i in done {
            mark_done(&file, &qf.recipients[i].handle, RecipientStatus::Delivered).expect("mark done");
        }
    }
    std::fs::metadata(&path).expect("stat").len()
}

#[test]
fn empty_queue_listing_everywhere() {
    let inst = Instance::new("", &[]);
    let etc = inst.etc();
    let etc = etc.to_str().expect("utf-8 path");
    let out = run(&bin("postqueue"), &["-c", etc, "-p"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "Mail queue is empty\n");
    let out = run(&bin("sendmail"), &["-C", etc, "-bp"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), "Mail queue is empty\n");
    // mailq is sendmail under another name.
    let link = inst.root.path().join("mailq");
    std::os::unix::fs::symlink(bin("sendmail"), &link).expect("symlink mailq");
    let out = Command::new(&link)
        .env("POSTERN_CONFIG", etc)
        .output()
        .expect("run mailq");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), "Mail queue is empty\n");
    let out = run(&bin("postqueue"), &["-c", etc, "-j"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
}

#[test]
fn listing_of_a_known_queue() {
    let inst = Instance::new("", &[]);
    let etc = inst.etc();
    let etc = etc.to_str().expect("utf-8 path");
    let q = inst.queue();
    // 2026-11-22 18:13:03 UTC, a Sunday; then a minute later, and so on.
    let t0 = 1_795_371_183u64;
    let id = |n: u64| QueueId::from_parts((t0 + n) * 1_000_000, 4242, n as u32);
    let s_in = queue_file(
        &q,
        "incoming",
        id(1),
        t0,
        "alice@example.test",
        &["bob@example.test"],
        &[],
    );
    let s_act = queue_file(
        &q,
        "active",
        id(2),
        t0 + 60,
        "",
        &["done@example.test", "carol@example.test"],
        &[0],
    );
    let s_hold = queue_file(
        &q,
        "hold",
        id(3),
        t0 + 120,
        "dave@example.test",
        &["erin@example.test"],
        &[],
    );
    let s_def = queue_file(
        &q,
        "deferred",
        id(4),
        t0 + 3600,
        "frank@example.test",
        &["gina@remote.test", "hal@remote.test", "ivy@other.test"],
        &[],
    );
    std::fs::create_dir_all(q.join("defer")).expect("mkdir defer");
    std::fs::write(
        q.join("defer").join(id(4).as_str()),
        "recipient=gina@remote.test\nstatus=4.4.1\nreason=connect to remote.test[192.0.2.1]:25: Connection refused\n\n\
         recipient=hal@remote.test\nstatus=4.4.1\nreason=connect to remote.test[192.0.2.1]:25: Connection refused\n\n",
    )
    .expect("write defer log");
    // A maildrop file, made by the real postdrop.
    std::fs::create_dir_all(q.join("maildrop")).expect("mkdir maildrop");
    let mut child = Command::new(bin("sendmail"))
        .args(["-C", etc, "-f", "kim@example.test", "lee@example.test"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("sendmail");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"Subject: drop\n\nbody\n")
        .expect("write");
    assert!(child.wait().expect("wait").success());
    let drops: Vec<_> = std::fs::read_dir(q.join("maildrop"))
        .expect("maildrop")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(drops.len(), 1);
    let dmeta = std::fs::metadata(&drops[0]).expect("stat maildrop file");
    let drop_id = drops[0].file_name().expect("name").to_string_lossy().into_owned();
    // A maildrop file that cannot be parsed is listed by owner only.
    let bad_id = QueueId::new().to_string();
    std::fs::write(q.join("maildrop").join(&bad_id), b"garbage").expect("write garbage");
    let bmeta = std::fs::metadata(q.join("maildrop").join(&bad_id)).expect("stat");
    let asctime = postern_lib::queue_scan::asctime;

    let pad = " ".repeat(47);
    let reason = "(connect to remote.test[192.0.2.1]:25: Connection refused)";
    let expected = format!(
        "-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------\n\
         {drop_id} {:>8} {}  kim@example.test\n\
         {pad}lee@example.test\n\
         \n\
         {bad_id} {:>8} {}  (maildrop queue, sender UID {})\n\
         \n\
         {}!{s_hold:>8} Sun Nov 22 18:15:03  dave@example.test\n\
         {pad}erin@example.test\n\
         \n\
         {} {s_in:>8} Sun Nov 22 18:13:03  alice@example.test\n\
         {pad}bob@example.test\n\
         \n\
         {}*{s_act:>8} Sun Nov 22 18:14:03  MAILER-DAEMON\n\
         {pad}carol@example.test\n\
         \n\
         {} {s_def:>8} Sun Nov 22 19:13:03  frank@example.test\n\
         {}{reason}\n\
         {pad}gina@remote.test\n\
         {pad}hal@remote.test\n\
         {pad}ivy@other.test\n\
         \n\
         -- {} Kbytes in 6 Requests.\n",
        dmeta.len(),
        asctime(u64::try_from(dmeta.mtime()).expect("mtime")),
        bmeta.len(),
        asctime(u64::try_from(bmeta.mtime()).expect("mtime")),
        bmeta.uid(),
        id(3),
        id(1),
        id(2),
        id(4),
        " ".repeat(76 - reason.len()),
        (dmeta.len() + bmeta.len() + s_hold + s_in + s_act + s_def) / 1024,
    );
    let out = run(&bin("postqueue"), &["-c", etc, "-p"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), expected);
    let out = run(&bin("sendmail"), &["-C", etc, "-bp"]);
    assert_eq!(stdout(&out), expected, "sendmail -bp differs from postqueue -p");

    // -j: one JSON object per message, checked by Python's json module.
    let out = run(&bin("postqueue"), &["-c", etc, "-j"]);
    assert!(out.status.success());
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import json,sys\nfor l in sys.stdin:\n o=json.loads(l)\n print(o['queue_name'],o['queue_id'],o['arrival_time'],o['message_size'],o['sender'] or '<>',' '.join(r['address']+('|'+r['delay_reason'] if 'delay_reason' in r else '') for r in o['recipients']))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    py.stdin
        .take()
        .expect("stdin")
        .write_all(&out.stdout)
        .expect("feed python");
    let parsed = py.wait_with_output().expect("python output");
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    let why = "connect to remote.test[192.0.2.1]:25: Connection refused";
    let expected_json = format!(
        "maildrop {drop_id} {} {} kim@example.test lee@example.test\n\
         hold {} {} {s_hold} dave@example.test erin@example.test\n\
         incoming {} {t0} {s_in} alice@example.test bob@example.test\n\
         active {} {} {s_act} <> carol@example.test\n\
         deferred {} {} {s_def} frank@example.test gina@remote.test|{why} hal@remote.test|{why} ivy@other.test\n",
        dmeta.mtime(),
        dmeta.len(),
        id(3),
        t0 + 120,
        id(1),
        id(2),
        t0 + 60,
        id(4),
        t0 + 3600,
    );
    assert_eq!(String::from_utf8_lossy(&parsed.stdout), expected_json);
}

#[test]
fn flush_without_qmgr_says_the_system_is_down() {
    let inst = Instance::new("", &[]);
    let etc = inst.etc();
    let etc = etc.to_str().expect("utf-8 path");
    for (program, args) in [
        (bin("postqueue"), vec!["-c", etc, "-f"]),
        (bin("sendmail"), vec!["-C", etc, "-q"]),
    ] {
        let out = run(&program, &args);
        assert_eq!(out.status.code(), Some(69), "{program:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("mail system is down"));
    }
}
