//! cleanup under the real master: the cleanup protocol driven with the lib's IPC client,
//! the queue files it leaves checked with the queue file reader.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use postern_lib::ipc::IpcStream;
use postern_lib::proto::cleanup::{self, CleanupReply, CleanupRequest, Origin, Recipient, Submission};
use postern_lib::queue_file::{Limits, QueueFile};
use postern_tests::{Instance, bin};

fn service() -> String {
    format!(
        "[[service]]\nname = \"cleanup\"\ntype = \"unix\"\ncommand = \"{}\"\nmaxproc = 8\n",
        bin("cleanup").display()
    )
}

fn instance(settings: &[&str]) -> Instance {
    let mut inst = Instance::new(&service(), settings);
    inst.start();
    inst
}

fn submission(sender: &str, rcpts: &[&str], origin: Origin) -> Submission {
    Submission {
        sender: sender.into(),
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: (*r).into(),
                orcpt: None,
                notify: vec![],
            })
            .collect(),
        origin,
        extract_recipients: false,
        hold: false,
        attributes: BTreeMap::new(),
    }
}

fn connect(inst: &Instance) -> IpcStream {
    let sock = UnixStream::connect(inst.queue().join(cleanup::SOCKET)).expect("connect cleanup");
    IpcStream::client(sock, cleanup::PROTOCOL, cleanup::VERSION, Some(Duration::from_secs(60))).expect("handshake")
}

fn submit(inst: &Instance, sub: Submission, content: &[u8]) -> CleanupReply {
    let mut c = connect(inst);
    c.send(&CleanupRequest::Submit(sub)).expect("send");
    c.send_data(content).expect("data");
    c.send_end().expect("end");
    c.recv().expect("reply")
}

fn queued_id(r: &CleanupReply) -> String {
    match r {
        CleanupReply::Queued { queue_id } => queue_id.clone(),
        other => panic!("expected Queued, got {other:?}"),
    }
}

/// Names in a queue subdirectory (dot files included).
fn names(inst: &Instance, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(inst.queue().join(dir))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read(path: &Path) -> (QueueFile, String) {
    let f = std::fs::File::open(path).expect("open queue file");
    let (qf, content) = QueueFile::read_all(f, &Limits::default()).expect("parse queue file");
    (qf, String::from_utf8(content).expect("utf8"))
}

fn header_value<'a>(content: &'a str, name: &str) -> Option<&'a str> {
    let head = content.split("\n\n").next().unwrap_or("");
    head.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(str::trim))
}

#[test]
fn cleanup_queues_a_durable_complete_file() {
    let inst = instance(&[]);
    let content = b"Received: from client.test\r\nFrom: Alice <alice@example.test>\r\nTo: bob@Example.TEST\r\nSubject: hello\r\n\r\nline one\r\n.line two\r\n";
    let mut sub = submission("<alice@Example.Test.>", &["bob", "carol@OTHER.test"], Origin::Smtp);
    sub.attributes.insert("client_addr".into(), "192.0.2.7".into());
    sub.attributes.insert("helo".into(), "client.test".into());
    sub.recipients[1].notify = vec!["SUCCESS".into(), "FAILURE".into()];
    sub.recipients[1].orcpt = Some("rfc822;carol@OTHER.test".into());
    let id = queued_id(&submit(&inst, sub, content));
    assert_eq!(
        names(&inst, "incoming"),
        vec![id.clone()],
        "only the final file, no temporary"
    );
    let (qf, text) = read(&inst.queue().join("incoming").join(&id));
    assert_eq!(qf.envelope.queue_id.as_str(), id);
    assert_eq!(qf.envelope.sender, "alice@example.test");
    let rcpts: Vec<&str> = qf.recipients.iter().map(|r| r.spec.address.as_str()).collect();
    assert_eq!(rcpts, ["bob@example.test", "carol@other.test"]);
    assert!(qf.recipients[1].spec.notify.success() && qf.recipients[1].spec.notify.failure());
    assert_eq!(qf.recipients[1].spec.orcpt.as_deref(), Some("rfc822;carol@OTHER.test"));
    assert_eq!(
        qf.envelope.attributes.get("client_addr").map(String::as_str),
        Some("192.0.2.7")
    );
    assert!(
        text.starts_with(
            "Received: from client.test\nFrom: Alice <alice@example.test>\nTo: bob@Example.TEST\nSubject: hello\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("\n\nline one\n.line two\n"), "{text}");
    assert!(
        header_value(&text, "Date").is_some_and(|d| d.ends_with("+0000")),
        "{text}"
    );
    let mid = header_value(&text, "Message-ID").expect("Message-ID added");
    assert!(mid.contains(&id) && mid.ends_with("@mail.example.test>"), "{mid}");
    assert_eq!(header_value(&text, "From"), Some("Alice <alice@example.test>"));
    // cleanup logs the Message-ID; the `from=` line is qmgr's (not running here).
    let log = inst.log();
    assert!(log.contains(&format!("{id}: message-id={mid}")), "{log}");
    assert!(!log.contains(&format!("{id}: from=")), "{log}");
}

#[test]
fn cleanup_local_submission_extracts_recipients_and_adds_from() {
    let inst = instance(&[]);
    let mut sub = submission("alice", &[], Origin::Local);
    sub.extract_recipients = true;
    sub.attributes.insert("full_name".into(), "Alice Smith".into());
    let content = b"To: Bob <bob@example.test>, \"C\" <carol@example.test>\nCc: dave\nBcc: eve@elsewhere.test\nSubject: t\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <x@y>\n\nbody\n";
    let id = queued_id(&submit(&inst, sub, content));
    let (qf, text) = read(&inst.queue().join("incoming").join(&id));
    let rcpts: Vec<&str> = qf.recipients.iter().map(|r| r.spec.address.as_str()).collect();
    assert_eq!(
        rcpts,
        [
            "bob@example.test",
            "carol@example.test",
            "dave@example.test",
            "eve@elsewhere.test"
        ]
    );
    assert_eq!(qf.envelope.sender, "alice@example.test");
    assert!(!text.contains("Bcc") && !text.contains("eve@"), "{text}");
    assert_eq!(header_value(&text, "From"), Some("Alice Smith <alice@example.test>"));
    assert_eq!(header_value(&text, "Date"), Some("Mon, 1 Jan 2024 00:00:00 +0000"));
    assert_eq!(header_value(&text, "Message-ID"), Some("<x@y>"));

    // No recipient at all: refused, nothing queued.
    let r = submit(&inst, submission("alice", &[], Origin::Local), b"Subject: none\n\nx\n");
    assert!(matches!(r, CleanupReply::Rejected { code: 554, .. }), "{r:?}");
    assert_eq!(names(&inst, "incoming").len(), 1);
}

#[test]
fn cleanup_size_limit_rejects_and_queues_nothing() {
    let inst = instance(&["message_size_limit=2048"]);
    let mut big = b"Subject: big\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 5000));
    let r = submit(
        &inst,
        submission("a@example.test", &["b@example.test"], Origin::Smtp),
        &big,
    );
    assert_eq!(
        r,
        CleanupReply::Rejected {
            code: 552,
            dsn: "5.3.4".parse().unwrap(),
            text: "Error: message file too big".into()
        }
    );
    assert!(names(&inst, "incoming").is_empty());
    // Just under the limit is fine.
    let small = vec![b'y'; 2000];
    queued_id(&submit(
        &inst,
        submission("a@example.test", &["b@example.test"], Origin::Smtp),
        &small,
    ));
}

#[test]
fn cleanup_client_disconnect_mid_data_leaves_nothing() {
    let inst = instance(&[]);
    {
        let mut c = connect(&inst);
        c.send(&CleanupRequest::Submit(submission(
            "a@example.test",
            &["b@example.test"],
            Origin::Smtp,
        )))
        .expect("send");
        c.send_data(b"Subject: cut\n\nhalf a mess").expect("data");
        // dropped without E
    }
    assert!(postern_tests::wait_for(Duration::from_secs(20), || inst
        .log()
        .contains("lost connection while receiving")));
    assert!(names(&inst, "incoming").is_empty(), "{:?}", names(&inst, "incoming"));
    let id = queued_id(&submit(
        &inst,
        submission("a@example.test", &["b@example.test"], Origin::Smtp),
        b"Subject: whole\n\nok\n",
    ));
    assert_eq!(names(&inst, "incoming"), vec![id]);
}

fn write_table(inst: &Instance, name: &str, text: &str) -> PathBuf {
    let p = inst.etc().join(name);
    std::fs::write(&p, text).expect("write table");
    p
}

#[test]
fn cleanup_header_and_body_checks() {
    let mut inst = Instance::new(
        &service(),
        &["header_checks=regexp:header_checks", "body_checks=body_checks"],
    );
    write_table(
        &inst,
        "header_checks",
        "/^Subject: .*(viagra)/ REJECT no $1 please\n/^Subject: drop me/ DISCARD\n/^Subject: hold me/ HOLD held for review\n/^X-Secret:/ IGNORE\n",
    );
    write_table(
        &inst,
        "body_checks",
        "/^EVIL LINE$/ REJECT body refused\n/^strip me$/ IGNORE\n",
    );
    inst.start();
    let sub = || submission("a@example.test", &["b@example.test"], Origin::Smtp);
    let r = submit(&inst, sub(), b"Subject: cheap VIAGRA\n\nhi\n");
    assert_eq!(
        r,
        CleanupReply::Rejected {
            code: 550,
            dsn: "5.7.1".parse().unwrap(),
            text: "no VIAGRA please".into()
        }
    );
    let r = submit(&inst, sub(), b"Subject: fine\n\nline\nevil line\n");
    assert!(
        matches!(&r, CleanupReply::Rejected { text, .. } if text == "body refused"),
        "{r:?}"
    );
    let r = submit(&inst, sub(), b"Subject: drop me\n\nx\n");
    assert!(matches!(r, CleanupReply::Discarded { .. }), "{r:?}");
    assert!(names(&inst, "incoming").is_empty());
    let held = queued_id(&submit(&inst, sub(), b"Subject: hold me\n\nx\n"));
    assert_eq!(names(&inst, "hold"), vec![held.clone()]);
    assert!(names(&inst, "incoming").is_empty());
    let id = queued_id(&submit(
        &inst,
        sub(),
        b"Subject: ok\nX-Secret: 42\n\nkeep\nstrip me\nkeep too\n",
    ));
    let (_, text) = read(&inst.queue().join("incoming").join(&id));
    assert!(!text.contains("X-Secret"), "{text}");
    assert!(text.ends_with("\n\nkeep\nkeep too\n"), "{text}");
    assert!(inst.log().contains("reject: header Subject: cheap VIAGRA"));
    // Internal mail (bounces) is not checked.
    queued_id(&submit(
        &inst,
        submission("", &["b@example.test"], Origin::Internal),
        b"Subject: drop me\n\nx\n",
    ));
    // A broken table: temporary failure, naming file and line in the log.
    write_table(&inst, "header_checks", "/ok/ DUNNO\n/broken REJECT\n");
    let r = submit(&inst, sub(), b"Subject: x\n\ny\n");
    assert!(matches!(r, CleanupReply::TempFail { code: 451, .. }), "{r:?}");
    assert!(
        inst.log().contains("header_checks, line 2: missing closing"),
        "{}",
        inst.log()
    );
}

/// A milter that accepts connections and never answers.
fn hanging_milter(dir: &Path) -> PathBuf {
    let path = dir.join("hang.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    // cleanup may run as mail_owner: let it reach the socket.
    use std::os::unix::fs::PermissionsExt;
    for p in [dir, path.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(if p == dir { 0o755 } else { 0o777 }))
            .expect("chmod");
    }
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    path
}

#[test]
fn cleanup_hanging_milter_gets_default_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = hanging_milter(dir.path());
    let milters = format!("smtpd_milters=[\"unix:{}\"]", sock.display());
    let inst = instance(&[&milters, "milter_command_timeout=1s", "milter_connect_timeout=1s"]);
    let sub = || submission("a@example.test", &["b@example.test"], Origin::Smtp);
    let r = submit(&inst, sub(), b"Subject: x\n\ny\n");
    assert_eq!(
        r,
        CleanupReply::TempFail {
            code: 451,
            dsn: "4.7.1".parse().unwrap(),
            text: "Service unavailable - try again later".into()
        }
    );
    assert!(names(&inst, "incoming").is_empty());
    assert!(
        inst.log()
            .contains("milter timed out; applying milter_default_action=tempfail"),
        "{}",
        inst.log()
    );
    // Local submissions use non_smtpd_milters (none here).
    queued_id(&submit(
        &inst,
        submission("a", &["b@example.test"], Origin::Local),
        b"Subject: x\n\ny\n",
    ));
    drop(inst);
    let inst = instance(&[
        &milters,
        "milter_command_timeout=1s",
        "milter_connect_timeout=1s",
        "milter_default_action=accept",
    ]);
    queued_id(&submit(&inst, sub(), b"Subject: x\n\ny\n"));
    let inst2 = instance(&[
        &milters,
        "milter_command_timeout=1s",
        "milter_connect_timeout=1s",
        "milter_default_action=reject",
    ]);
    let r = submit(&inst2, sub(), b"Subject: x\n\ny\n");
    assert!(matches!(r, CleanupReply::Rejected { code: 550, .. }), "{r:?}");
}

#[test]
fn cleanup_client_hold_goes_to_hold() {
    let inst = instance(&[]);
    let mut sub = submission("a@example.test", &["b@example.test"], Origin::Local);
    sub.hold = true;
    let id = queued_id(&submit(&inst, sub, b"Subject: held\n\nx\n"));
    assert_eq!(names(&inst, "hold"), vec![id.clone()]);
    assert!(names(&inst, "incoming").is_empty());
    assert!(inst.log().contains(&format!("{id}: from=<a@example.test>, size=")));
    assert!(inst.log().contains("(queue hold)"));
}

/// kill -9 of cleanup processes while clients submit: every message that got `Queued` is a
/// complete queue file, every file under a final name is complete, and whatever else is
/// left is a `.cleanup.*` temporary.
#[test]
fn cleanup_kill_9_loses_nothing_acknowledged() {
    let inst = instance(&["service_throttle_time=1s"]);
    let queue = inst.queue();
    let master = inst.master_pid();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Set once the killer has made its rounds: the clients keep submitting until then, so
    // the kills always land amid traffic. (A fixed number of submissions could all be done
    // before the first round on a fast disk, and cleanup, started on demand, would then
    // have exited after its max_use connections: nothing left to kill.)
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let killed = killed.clone();
        std::thread::spawn(move || {
            let mut kills = 0;
            let give_up = Instant::now() + Duration::from_secs(30);
            // A few rounds while the clients are busy, then let the rest go through.
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(100));
                // Wait (briefly) for a cleanup process: between two of them there may be none.
                loop {
                    let mut hit = false;
                    for pid in postern_tests::children_of(master) {
                        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                        if comm.trim() == "cleanup" {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                            kills += 1;
                            hit = true;
                        }
                    }
                    if hit || Instant::now() > give_up {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            killed.store(true, std::sync::atomic::Ordering::Relaxed);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            kills
        })
    };
    let body: Vec<u8> = b"Subject: crash\n\n"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'z', 20_000))
        .collect();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let path = queue.join(cleanup::SOCKET);
            let body = body.clone();
            let killed = killed.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut tries = 0;
                // At least 25 each, and on until the killer is through (bounded).
                while tries < 25 || (!killed.load(std::sync::atomic::Ordering::Relaxed) && tries < 2_000) {
                    tries += 1;
                    let Ok(sock) = UnixStream::connect(&path) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let Ok(mut c) =
                        IpcStream::client(sock, cleanup::PROTOCOL, cleanup::VERSION, Some(Duration::from_secs(10)))
                    else {
                        continue;
                    };
                    let sub = submission("a@example.test", &["b@example.test"], Origin::Smtp);
                    let sent = c.send(&CleanupRequest::Submit(sub)).is_ok()
                        && c.send_data(&body).is_ok()
                        && c.send_end().is_ok();
                    if let (true, Ok(CleanupReply::Queued { queue_id })) = (sent, c.recv::<CleanupReply>()) {
                        acked.push(queue_id);
                    }
                }
                acked
            })
        })
        .collect();
    let acked: Vec<String> = clients.into_iter().flat_map(|c| c.join().expect("client")).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.join().expect("killer");
    assert!(kills > 0, "no cleanup process was killed");
    assert!(!acked.is_empty(), "nothing was acknowledged");
    let files = names(&inst, "incoming");
    for id in &acked {
        assert!(files.contains(id), "acknowledged {id} missing");
    }
    for f in &files {
        if f.starts_with('.') {
            assert!(f.starts_with(".cleanup."), "unexpected {f}");
            continue;
        }
        let (qf, content) = read(&queue.join("incoming").join(f));
        assert_eq!(qf.envelope.queue_id.as_str(), f);
        assert!(content.ends_with(&"z".repeat(20_000)), "{f} incomplete");
    }
    eprintln!("{} acknowledged, {} files, {kills} kills", acked.len(), files.len());
}
