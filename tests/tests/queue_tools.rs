//! The queue tools against a real master: `postsuper -d/-h/-H/-r`, `postcat -q`,
//! `postqueue -i/-s`.
//!
//! Where files must stay put, the instance runs without qmgr (cleanup only, for `-r`), so
//! every move and removal is checked file by file. Where delivery must follow, the whole
//! pipeline runs: a held message is not delivered until `postsuper -H`, and deferred mail
//! waiting for a retry an hour away is delivered at once after `postqueue -i` / `-s` to a
//! real SMTP server (tests/scripts/smtp_sink.py) as the relayhost.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_lib::queue_file::{Arrival, Envelope, Notify, QueueFile, QueueFileWriter, RecipientSpec, RecipientStatus};
use postern_lib::queue_id::QueueId;
use postern_tests::*;

const LONG: Duration = Duration::from_secs(60);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A queue file as cleanup writes it, arrived now, in `QUEUE/<dir>/<ID>`.
fn queue_file(
    inst: &Instance,
    dir: &str,
    sender: &str,
    rcpts: &[&str],
    attrs: &[(&str, &str)],
    content: &[u8],
) -> QueueId {
    queue_file_due(inst, dir, sender, rcpts, attrs, content, None)
}

/// [`queue_file`] with its modification time (a deferred message's retry time) set before
/// it appears under its name.
fn queue_file_due(
    inst: &Instance,
    dir: &str,
    sender: &str,
    rcpts: &[&str],
    attrs: &[(&str, &str)],
    content: &[u8],
    due: Option<SystemTime>,
) -> QueueId {
    let id = QueueId::new();
    let env = Envelope {
        queue_id: id,
        arrival: Arrival { secs: now(), micros: 0 },
        sender: sender.into(),
        attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let path = inst.queue().join(dir).join(id.as_str());
    let tmp = inst.queue().join(dir).join(format!(".tmp.{id}"));
    let f = File::create_new(&tmp).expect("create queue file");
    let mut w = QueueFileWriter::new(f, &env).expect("writer");
    for r in rcpts {
        w.add_recipient(&RecipientSpec {
            address: r.to_string(),
            orcpt: None,
            notify: Notify::UNSPECIFIED,
        })
        .expect("rcpt");
    }
    w.write_content(content).expect("content");
    let f = w.finish().expect("finish");
    if let Some(t) = due {
        f.set_modified(t).expect("mtime");
    }
    f.sync_all().expect("fsync");
    if is_root() {
        let (u, g) = postern_lib::privs::lookup("postern").expect("mail_owner");
        std::os::unix::fs::chown(&tmp, Some(u.as_raw()), Some(g.as_raw())).expect("chown");
    }
    std::fs::rename(&tmp, &path).expect("rename");
    id
}

fn run(inst: &Instance, program: &str, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin(program))
        .arg("-c")
        .arg(inst.etc())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes()).expect("stdin");
    }
    child.wait_with_output().expect("wait")
}

fn postsuper(inst: &Instance, args: &[&str]) -> (bool, String) {
    let out = run(inst, "postsuper", args, "");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn here(inst: &Instance, queue: &str, id: &QueueId) -> bool {
    inst.queue().join(queue).join(id.as_str()).exists()
}

/// The message files in a queue.
fn ids_in(inst: &Instance, queue: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(inst.queue().join(queue))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| QueueId::parse(n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// An instance with cleanup but no qmgr: files stay where postsuper puts them.
fn quiet_instance() -> Instance {
    let mut inst = Instance::new(&daemon_service("cleanup", "unix", "", "cleanup", "maxproc = 2"), &[]);
    inst.start();
    inst
}

const MSG: &[u8] = b"From: alice@example.test\nTo: bob@example.test\nSubject: queued\nMessage-ID: <q.1@example.test>\nDate: Sun, 22 Nov 2026 18:00:00 +0000\n\nbody line\n";

#[test]
fn hold_release_delete_move_exactly_the_right_files() {
    let mut inst = quiet_instance();
    let inc = queue_file(&inst, "incoming", "alice@example.test", &["bob@example.test"], &[], MSG);
    let act = queue_file(&inst, "active", "alice@example.test", &["bob@example.test"], &[], MSG);
    let def = queue_file(&inst, "deferred", "alice@example.test", &["bob@remote.test"], &[], MSG);
    let other = queue_file(
        &inst,
        "deferred",
        "alice@example.test",
        &["carol@remote.test"],
        &[],
        MSG,
    );
    std::fs::write(
        inst.queue().join("defer").join(def.as_str()),
        "recipient=bob@remote.test\nreason=busy\n\n",
    )
    .unwrap();

    // Hold one from each of incoming, active and deferred.
    for id in [&inc, &act, &def] {
        let (ok, err) = postsuper(&inst, &["-h", id.as_str()]);
        assert!(ok, "{err}");
        assert_eq!(
            err,
            format!("postsuper: {id}: placed on hold\npostsuper: Placed on hold: 1 message\n")
        );
        assert!(here(&inst, "hold", id), "{id} not in hold/");
    }
    assert!(ids_in(&inst, "incoming").is_empty());
    assert!(ids_in(&inst, "active").is_empty());
    assert_eq!(ids_in(&inst, "deferred"), vec![other.to_string()]);
    let mut held = vec![inc.to_string(), act.to_string(), def.to_string()];
    held.sort();
    assert_eq!(ids_in(&inst, "hold"), held);
    let log = inst.log();
    for id in [&inc, &act, &def] {
        assert!(log.contains("postern/postsuper["), "{log}");
        assert!(log.contains(&format!(": {id}: placed on hold\n")), "{log}");
    }

    // Release all: hold → deferred, due now.
    let before = now();
    let (ok, err) = postsuper(&inst, &["-H", "ALL"]);
    assert!(ok, "{err}");
    assert!(err.ends_with("postsuper: Released from hold: 3 messages\n"), "{err}");
    assert_eq!(err.matches("released from hold").count(), 3, "{err}");
    assert!(ids_in(&inst, "hold").is_empty());
    assert_eq!(ids_in(&inst, "deferred").len(), 4);
    for id in [&inc, &act, &def] {
        let m = std::fs::metadata(inst.queue().join("deferred").join(id.as_str())).unwrap();
        assert!(
            m.mtime() as u64 >= before && m.mtime() as u64 <= now(),
            "retry time not now"
        );
        if is_root() {
            assert_eq!(
                m.uid(),
                postern_lib::privs::lookup("postern").unwrap().0.as_raw(),
                "owner kept"
            );
        }
    }

    // Delete one by ID with its queue named: the file and its defer log go, nothing else.
    let (ok, err) = postsuper(&inst, &["-d", def.as_str(), "deferred"]);
    assert!(ok, "{err}");
    assert_eq!(
        err,
        format!("postsuper: {def}: removed\npostsuper: Deleted: 1 message\n")
    );
    assert!(!here(&inst, "deferred", &def));
    assert!(!inst.queue().join("defer").join(def.as_str()).exists());
    assert_eq!(ids_in(&inst, "deferred").len(), 3);
    assert!(inst.log().contains(&format!(": {def}: removed\n")));

    // Naming a queue the message is not in does nothing.
    let (ok, err) = postsuper(&inst, &["-d", inc.as_str(), "hold"]);
    assert!(ok && err.is_empty(), "{err}");
    assert!(here(&inst, "deferred", &inc));

    // IDs from standard input (a bad line is reported and skipped).
    let out = run(&inst, "postsuper", &["-d", "-"], &format!("{inc}\nnot/an/id\n{act}\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("invalid mail queue id: not/an/id"), "{err}");
    assert!(err.contains(&format!("postsuper: {inc}: removed\n")), "{err}");
    assert!(err.ends_with("postsuper: Deleted: 2 messages\n"), "{err}");
    assert_eq!(ids_in(&inst, "deferred"), vec![other.to_string()]);

    // A bad ID on the command line is refused before anything happens.
    let (ok, err) = postsuper(&inst, &["-d", "../../etc"]);
    assert!(!ok && err.contains("invalid mail queue id"), "{err}");

    // ALL.
    let (ok, err) = postsuper(&inst, &["-d", "ALL"]);
    assert!(ok, "{err}");
    assert_eq!(
        err,
        format!("postsuper: {other}: removed\npostsuper: Deleted: 1 message\n")
    );
    assert!(ids_in(&inst, "deferred").is_empty());
    inst.stop();
}

#[test]
fn an_active_message_being_delivered_is_left_alone() {
    let mut inst = quiet_instance();
    let act = queue_file(&inst, "active", "alice@example.test", &["bob@example.test"], &[], MSG);
    let path = inst.queue().join("active").join(act.as_str());
    // A delivery agent holds a shared lock while it works.
    let agent = File::open(&path).unwrap();
    let lock = nix::fcntl::Flock::lock(agent, nix::fcntl::FlockArg::LockSharedNonblock).expect("flock");
    for op in ["-h", "-d", "-r"] {
        let (ok, err) = postsuper(&inst, &[op, act.as_str()]);
        assert!(!ok, "{op}: {err}");
        assert_eq!(
            err,
            format!("postsuper: warning: {act}: is being delivered, try again later\n"),
            "{op}"
        );
        assert!(path.exists(), "{op} moved it");
    }
    drop(lock);
    // Once the agent is done, requeue takes it: a new file in incoming/, and the old one
    // (should an agent still open it) has nothing pending left.
    let kept = File::open(&path).unwrap();
    let (ok, err) = postsuper(&inst, &["-r", act.as_str()]);
    assert!(ok, "{err}");
    assert_eq!(
        err,
        format!("postsuper: {act}: requeued\npostsuper: Requeued: 1 message\n")
    );
    assert!(!path.exists());
    assert!(ids_in(&inst, "hold").is_empty());
    assert_eq!(ids_in(&inst, "incoming").len(), 1);
    let qf = QueueFile::read(&kept).unwrap();
    assert!(qf.recipients.iter().all(|r| r.status == RecipientStatus::Discarded));
    // A held message is requeued from hold/ too.
    let held = queue_file(&inst, "hold", "alice@example.test", &["bob@example.test"], &[], MSG);
    let (ok, err) = postsuper(&inst, &["-r", "ALL", "hold"]);
    assert!(ok, "{err}");
    assert_eq!(
        err,
        format!("postsuper: {held}: requeued\npostsuper: Requeued: 1 message\n")
    );
    assert!(ids_in(&inst, "hold").is_empty());
    assert_eq!(ids_in(&inst, "incoming").len(), 2);
    // Delete of an active message (no agent on it).
    let act2 = queue_file(&inst, "active", "alice@example.test", &["bob@example.test"], &[], MSG);
    let (ok, err) = postsuper(&inst, &["-d", act2.as_str()]);
    assert!(ok, "{err}");
    assert!(!here(&inst, "active", &act2));
    inst.stop();
}

#[test]
fn requeue_writes_a_new_file_with_the_same_content_and_pending_recipients_only() {
    let mut inst = quiet_instance();
    let id = queue_file(
        &inst,
        "deferred",
        "alice@example.test",
        &["bob@remote.test", "carol@remote.test", "dave@remote.test"],
        &[("protocol", "ESMTP"), ("helo", "client.example.test")],
        MSG,
    );
    let old = inst.queue().join("deferred").join(id.as_str());
    {
        let f = File::options().read(true).write(true).open(&old).unwrap();
        let qf = QueueFile::read(&f).unwrap();
        postern_lib::queue_file::mark_done(&f, &qf.recipients[1].handle, RecipientStatus::Delivered).unwrap();
    }
    std::fs::write(
        inst.queue().join("defer").join(id.as_str()),
        "recipient=bob@remote.test\nreason=busy\n\n",
    )
    .unwrap();

    // postcat shows the envelope (done and pending recipients) and the content exactly.
    let out = run(&inst, "postcat", &["-q", id.as_str()], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let size = std::fs::metadata(&old).unwrap().len();
    let qf = QueueFile::read(File::open(&old).unwrap()).unwrap();
    let year = postern_lib::date::civil_from_days((qf.envelope.arrival.secs / 86400) as i64).0;
    let expected = format!(
        "*** ENVELOPE RECORDS deferred/{id} ***\nmessage_size: {}\nqueue_file_size: {size}\n\
         message_arrival_time: {} {year}\nqueue_id: {id}\nsender: alice@example.test\n\
         named_attribute: helo=client.example.test\nnamed_attribute: protocol=ESMTP\n\
         recipient: bob@remote.test\ndone_recipient: carol@remote.test\nrecipient: dave@remote.test\n\
         *** MESSAGE CONTENTS deferred/{id} ***\n{}*** MESSAGE FILE END deferred/{id} ***\n",
        MSG.len(),
        postern_lib::queue_scan::asctime(qf.envelope.arrival.secs),
        String::from_utf8_lossy(MSG),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    let out = run(&inst, "postcat", &["-h", "-q", id.as_str()], "");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "*** HEADER deferred/{id} ***\nFrom: alice@example.test\nTo: bob@example.test\nSubject: queued\n\
             Message-ID: <q.1@example.test>\nDate: Sun, 22 Nov 2026 18:00:00 +0000\n\
             *** MESSAGE FILE END deferred/{id} ***\n"
        )
    );
    let out = run(&inst, "postcat", &["-b", "-q", id.as_str()], "");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("*** BODY deferred/{id} ***\nbody line\n*** MESSAGE FILE END deferred/{id} ***\n")
    );

    let (ok, err) = postsuper(&inst, &["-r", id.as_str()]);
    assert!(ok, "{err}");
    assert_eq!(
        err,
        format!("postsuper: {id}: requeued\npostsuper: Requeued: 1 message\n")
    );
    assert!(!old.exists(), "old file left");
    assert!(ids_in(&inst, "hold").is_empty());
    assert!(!inst.queue().join("defer").join(id.as_str()).exists());
    let new = ids_in(&inst, "incoming");
    assert_eq!(new.len(), 1, "{new:?}");
    assert_ne!(new[0], id.to_string());
    let (qf, content) = QueueFile::read_all(
        File::open(inst.queue().join("incoming").join(&new[0])).unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(content, MSG, "content changed");
    assert_eq!(qf.envelope.sender, "alice@example.test");
    let rcpts: Vec<(&str, RecipientStatus)> = qf
        .recipients
        .iter()
        .map(|r| (r.spec.address.as_str(), r.status))
        .collect();
    assert_eq!(
        rcpts,
        vec![
            ("bob@remote.test", RecipientStatus::Pending),
            ("dave@remote.test", RecipientStatus::Pending)
        ]
    );
    assert_eq!(
        qf.envelope.attributes.get("helo").map(String::as_str),
        Some("client.example.test")
    );
    assert!(inst.log().contains(&format!(": {id}: requeued\n")), "{}", inst.log());

    // Without cleanup the message stays where it was.
    let id2 = queue_file(&inst, "deferred", "alice@example.test", &["bob@remote.test"], &[], MSG);
    inst.stop();
    let (ok, err) = postsuper(&inst, &["-r", id2.as_str()]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!("postsuper: warning: {id2}: cannot connect to private/cleanup")),
        "{err}"
    );
    assert!(here(&inst, "deferred", &id2));
    assert!(ids_in(&inst, "hold").is_empty());
}

#[test]
fn a_held_message_is_delivered_only_after_release() {
    let port = free_port();
    let mut inst = Instance::new(&pipeline_services(port), &["queue_run_delay=1s"]);
    add_user(&inst, "alice", "alice-pw");
    inst.start();
    let held = queue_file(
        &inst,
        "hold",
        "bob@example.test",
        &["alice@example.test"],
        &[],
        b"From: bob@example.test\nTo: alice@example.test\nSubject: held\nMessage-ID: <held@example.test>\n\nheld\n",
    );
    smtplib_send(
        port,
        "bob@example.test",
        &["alice@example.test"],
        "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: free\r\nMessage-ID: <free@example.test>\r\n\r\nfree\r\n",
    );
    let maildir = inst.root.path().join("var/mail/alice");
    assert!(
        wait_for(LONG, || maildir_messages(&maildir).len() == 1),
        "{}",
        inst.log()
    );
    // A flush does not touch hold/.
    let out = run(&inst, "postqueue", &["-f"], "");
    assert!(out.status.success());
    assert!(wait_for(LONG, || inst.log().contains("<free@example.test>")
        && inst.log_count("status=sent") >= 1));
    let msgs = maildir_messages(&maildir);
    assert_eq!(msgs.len(), 1);
    assert!(String::from_utf8_lossy(&msgs[0]).contains("Message-ID: <free@example.test>"));
    assert!(here(&inst, "hold", &held));
    let listing = String::from_utf8_lossy(&run(&inst, "postqueue", &["-p"], "").stdout).into_owned();
    assert!(listing.contains(&format!("{held}!")), "{listing}");

    let (ok, err) = postsuper(&inst, &["-H", held.as_str()]);
    assert!(ok, "{err}");
    assert!(
        wait_for(LONG, || maildir_messages(&maildir).len() == 2),
        "{}",
        inst.log()
    );
    let all: Vec<String> = maildir_messages(&maildir)
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(
        all.iter()
            .filter(|m| m.contains("Message-ID: <held@example.test>"))
            .count(),
        1
    );
    assert!(wait_for(LONG, || ids_in(&inst, "deferred").is_empty()
        && ids_in(&inst, "active").is_empty()));
    inst.stop();
}

struct Sink(Child);
impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sink(dir: &Path, port: u16) -> Sink {
    let port_file = dir.join("sink.port");
    let child = Command::new("python3")
        .arg(repo_root().join("tests/scripts/smtp_sink.py"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--rcpt", "250", "--port-file"])
        .arg(&port_file)
        .arg("--dir")
        .arg(dir)
        .spawn()
        .expect("python3");
    assert!(wait_for(LONG, || port_file.exists()), "sink did not start");
    Sink(child)
}

fn received(dir: &Path) -> Vec<String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .collect()
}

#[test]
fn postqueue_i_and_s_deliver_deferred_mail_now() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = Instance::new(
        &pipeline_services(smtp_port),
        &[
            &format!("relayhost=[127.0.0.1]:{relay_port}"),
            "minimal_backoff_time=1h",
            "maximal_backoff_time=2h",
            "queue_run_delay=1h",
        ],
    );
    let dir = inst.root.path().join("sink");
    std::fs::create_dir(&dir).unwrap();
    let _sink = sink(&dir, relay_port);
    inst.start();
    let later = SystemTime::now() + Duration::from_secs(3600);
    let mut ids = Vec::new();
    for (rcpt, tag) in [
        ("carol@remote.test", "one"),
        ("dave@other.test", "two"),
        ("erin@third.test", "three"),
    ] {
        let body = format!(
            "From: alice@example.test\nTo: {rcpt}\nSubject: {tag}\nMessage-ID: <{tag}@example.test>\n\n{tag}\n"
        );
        let id = queue_file_due(
            &inst,
            "deferred",
            "alice@example.test",
            &[rcpt],
            &[],
            body.as_bytes(),
            Some(later),
        );
        ids.push(id);
    }

    let out = run(&inst, "postqueue", &["-i", ids[0].as_str()], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for(LONG, || received(&dir).len() == 1), "{}", inst.log());
    assert!(received(&dir)[0].contains("<one@example.test>"));
    assert!(wait_for(LONG, || !here(&inst, "active", &ids[0])));

    let out = run(&inst, "postqueue", &["-s", "Other.Test."], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for(LONG, || received(&dir).len() == 2), "{}", inst.log());
    assert!(received(&dir).iter().any(|m| m.contains("<two@example.test>")));
    // The third is still waiting for its retry time.
    assert!(here(&inst, "deferred", &ids[2]));
    assert_eq!(ids_in(&inst, "deferred"), vec![ids[2].to_string()]);

    // An ID that is not deferred.
    let out = run(&inst, "postqueue", &["-i", ids[0].as_str()], "");
    assert_eq!(out.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such message in the deferred queue"));
    inst.stop();
}

#[test]
fn refused_without_the_rights_to_change_the_queue() {
    if !postern_tests::require_root("postsuper is run as nobody") {
        return;
    }
    let mut inst = quiet_instance();
    let id = queue_file(&inst, "deferred", "alice@example.test", &["bob@remote.test"], &[], MSG);
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(bin("postsuper"))
        .arg("-c")
        .arg(inst.etc())
        .args(["-d", "ALL"])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "postsuper: fatal: use of this command is reserved for the superuser and mail_owner (\"postern\")\n"
    );
    assert!(here(&inst, "deferred", &id));
    inst.stop();
}
