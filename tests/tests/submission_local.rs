//! Local submission under the real master: `sendmail` → `postdrop` → `maildrop/` →
//! `pickup` → a cleanup. Pickup is tested against `postern-test-pickup-cleanup`, a
//! stand-in that records what it was handed and answers as told (queue, tempfail, reject,
//! or dying before it answers), so every pickup decision can be observed; one test runs
//! the real cleanup and reads the queue file it writes.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use postern_lib::proto::trigger;
use postern_tests::{Instance, bin, wait_for};

const WAIT: Duration = Duration::from_secs(20);

fn pickup_service() -> String {
    format!(
        "[[service]]\nname = \"pickup\"\ntype = \"unix\"\nlisten = \"public/pickup\"\ncommand = \"{}\"\nmaxproc = 1\nwakeup = \"60s\"\n",
        bin("pickup").display()
    )
}

fn test_cleanup_service(mode: &str, record: &Path) -> String {
    format!(
        "[[service]]\nname = \"cleanup\"\ntype = \"unix\"\ncommand = \"{}\"\nargs = [\"{mode}\", \"{}\"]\n",
        bin("postern-test-pickup-cleanup").display(),
        record.display()
    )
}

/// A started instance with pickup and (unless `mode` is None) the test cleanup; returns it
/// with the directory where the test cleanup records submissions.
fn instance(mode: Option<&str>, settings: &[&str]) -> (Instance, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("postern-rec")
        .tempdir()
        .expect("tempdir");
    // The test cleanup runs as mail_owner when the tests run as root.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut services = pickup_service();
    if let Some(m) = mode {
        services.push_str(&test_cleanup_service(m, dir.path()));
    }
    let mut inst = Instance::new(&services, settings);
    inst.start();
    (inst, dir)
}

fn sendmail(inst: &Instance, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(bin("sendmail"))
        .arg("-C")
        .arg(inst.etc())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sendmail");
    // sendmail may stop reading early (a lone dot, an error): ignore a broken pipe.
    let _ = child.stdin.take().expect("stdin").write_all(input);
    child.wait_with_output().expect("sendmail output")
}

/// Names in a queue subdirectory (temporary files included).
fn names(inst: &Instance, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(inst.queue().join(dir))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The (envelope, content) pairs the test cleanup recorded.
fn records(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut envs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("record dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        // `.N.env` is the test cleanup's temporary name, not yet a record.
        .filter(|p| p.extension().is_some_and(|x| x == "env"))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    envs.sort();
    envs.iter()
        .map(|p| {
            (
                std::fs::read_to_string(p).expect("env"),
                std::fs::read(p.with_extension("eml")).expect("eml"),
            )
        })
        .collect()
}

fn wait_records(dir: &Path, n: usize) -> Vec<(String, Vec<u8>)> {
    assert!(
        wait_for(WAIT, || records(dir).len() >= n),
        "cleanup never got {n} messages"
    );
    records(dir)
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

#[test]
fn sendmail_with_recipients_sender_and_full_name_reaches_cleanup() {
    let (inst, rec) = instance(Some("queue"), &[]);
    let out = sendmail(
        &inst,
        &[
            "-f",
            "alice@example.test",
            "-F",
            "Alice Example",
            "bob@example.test,carol",
            "<dan@x.test>",
        ],
        b"Subject: hello\r\nTo: bob@example.test\r\n\r\nline one\r\n..leading dot\r\n.\r\nnot part of it\r\n",
    );
    assert!(
        out.status.success(),
        "sendmail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = wait_records(rec.path(), 1);
    let (env, content) = &got[0];
    let login = login_line();
    let login = if login.is_empty() { login } else { format!("{login}\n") };
    assert_eq!(
        env,
        &format!(
            "sender=alice@example.test\norigin=Local\nextract=false\nrcpt=bob@example.test\nrcpt=carol\nrcpt=dan@x.test\n\
             attr.full_name=Alice Example\n{login}attr.uid={}\n",
            uid()
        )
    );
    assert_eq!(
        content,
        b"Subject: hello\nTo: bob@example.test\n\nline one\n..leading dot\n"
    );
    // Removed from the maildrop only after cleanup said Queued.
    assert!(
        wait_for(WAIT, || names(&inst, "maildrop").is_empty()),
        "maildrop not emptied"
    );
    assert!(wait_for(WAIT, || inst
        .log_count(&format!("uid={} from=<alice@example.test>", uid()))
        == 1));
}

/// `attr.login=NAME` of the user running the tests, as pickup looks it up.
fn login_line() -> String {
    match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(Some(u)) => format!("attr.login={}", u.name),
        _ => String::new(),
    }
}

#[test]
fn dash_t_and_dash_i() {
    let (inst, rec) = instance(Some("queue"), &[]);
    let msg = b"To: x@example.test\nCc: y@example.test\nBcc: z@example.test\nSubject: t\n\nbefore\n.\nafter\n";
    let out = sendmail(&inst, &["-t", "-i"], msg);
    assert!(
        out.status.success(),
        "sendmail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = wait_records(rec.path(), 1);
    assert!(got[0].0.contains("extract=true\n"), "{}", got[0].0);
    assert!(
        !got[0].0.contains("rcpt="),
        "no envelope recipients with -t alone: {}",
        got[0].0
    );
    // Without -f the sender is the login name; with -i the lone dot is content.
    let login = login_line().replace("attr.login=", "");
    if !login.is_empty() {
        assert!(got[0].0.starts_with(&format!("sender={login}\n")), "{}", got[0].0);
    }
    assert_eq!(got[0].1, msg.to_vec());
    // -oi is the same; without either, the dot ends the message.
    let out = sendmail(&inst, &["-oi", "a@example.test"], b"Subject: oi\n\n.\nafter\n");
    assert!(out.status.success());
    let out = sendmail(&inst, &["a@example.test"], b"Subject: dot\n\n.\nafter\n");
    assert!(out.status.success());
    let got = wait_records(rec.path(), 3);
    let bodies: Vec<&[u8]> = got.iter().map(|(_, c)| c.as_slice()).collect();
    assert!(bodies.contains(&&b"Subject: oi\n\n.\nafter\n"[..]), "{bodies:?}");
    assert!(bodies.contains(&&b"Subject: dot\n\n"[..]), "{bodies:?}");
}

#[test]
fn bad_usage_is_refused_and_queues_nothing() {
    let (inst, rec) = instance(Some("queue"), &[]);
    let out = sendmail(&inst, &["-k", "a@example.test"], b"Subject: x\n\nx\n");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid option -- 'k'"));
    let out = sendmail(&inst, &[], b"Subject: x\n\nx\n");
    assert_eq!(out.status.code(), Some(64), "no recipients");
    // -bs speaks SMTP on stdin/stdout (tests/tests/submission_bs.rs covers it).
    let out = sendmail(&inst, &["-bs"], b"QUIT\r\n");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("221 2.0.0 Bye\r\n"));
    // Ignored flags are accepted.
    let out = sendmail(
        &inst,
        &[
            "-oem",
            "-odi",
            "-odb",
            "-oQ/tmp",
            "-v",
            "-n",
            "-L",
            "label",
            "a@example.test",
        ],
        b"Subject: ok\n\nx\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = wait_records(rec.path(), 1);
    assert_eq!(got.len(), 1);
}

#[test]
fn oversize_message_is_refused_and_leaves_nothing() {
    let (inst, rec) = instance(Some("queue"), &["message_size_limit=2048"]);
    let big = format!("Subject: big\n\n{}\n", "x".repeat(5000));
    let out = sendmail(&inst, &["a@example.test"], big.as_bytes());
    assert_eq!(out.status.code(), Some(65), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too big"));
    assert!(
        names(&inst, "maildrop").is_empty(),
        "left behind: {:?}",
        names(&inst, "maildrop")
    );
    // A message under the limit still goes through.
    let out = sendmail(&inst, &["a@example.test"], b"Subject: small\n\nx\n");
    assert!(out.status.success());
    assert_eq!(wait_records(rec.path(), 1).len(), 1);
}

#[test]
fn malformed_maildrop_files_go_to_corrupt_with_a_log_line() {
    let (inst, rec) = instance(Some("queue"), &[]);
    let md = inst.queue().join("maildrop");
    let garbage = postern_lib::queue_id::QueueId::new().to_string();
    std::fs::write(md.join(&garbage), b"this is not a maildrop file").expect("write garbage");
    std::fs::write(md.join("not-a-queue-id"), b"whatever").expect("write badly named");
    let link = postern_lib::queue_id::QueueId::new().to_string();
    std::os::unix::fs::symlink("/etc/passwd", md.join(&link)).expect("symlink");
    assert!(trigger::send(
        &inst.queue().join(trigger::PICKUP_SOCKET),
        trigger::WAKEUP
    ));
    assert!(
        wait_for(WAIT, || names(&inst, "maildrop").is_empty()),
        "left: {:?}",
        names(&inst, "maildrop")
    );
    let mut want = vec![garbage.clone(), link.clone(), "not-a-queue-id".to_string()];
    want.sort();
    assert_eq!(names(&inst, "corrupt"), want);
    assert!(
        wait_for(WAIT, || inst.log_count("moved to corrupt/") == 3),
        "{}",
        inst.log()
    );
    assert!(
        inst.log_count(&format!("maildrop/{garbage}: not a maildrop file")) == 1,
        "{}",
        inst.log()
    );
    assert!(inst.log_count("is a symbolic link") == 1, "{}", inst.log());
    assert!(records(rec.path()).is_empty(), "cleanup saw a malformed file");
}

#[test]
fn maildrop_file_stays_until_cleanup_queues_it() {
    // No cleanup at all: the file waits.
    let (mut inst, rec) = instance(None, &[]);
    let out = sendmail(&inst, &["a@example.test"], b"Subject: wait\n\nx\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        wait_for(WAIT, || inst.log_count("cleanup unavailable") >= 1),
        "{}",
        inst.log()
    );
    assert_eq!(names(&inst, "maildrop").len(), 1);

    // A cleanup killed before it answers: the file still waits.
    let etc = inst.etc();
    let master = |mode: &str| format!("{}{}", pickup_service(), test_cleanup_service(mode, rec.path()));
    std::fs::write(etc.join("master.toml"), master("die")).expect("master.toml");
    assert!(inst.postern(&["reload"]).status.success());
    assert!(wait_for(WAIT, || {
        trigger::send(&inst.queue().join(trigger::PICKUP_SOCKET), trigger::WAKEUP);
        !records(rec.path()).is_empty()
    }));
    assert!(
        wait_for(WAIT, || inst.log_count("cleanup: reply:") >= 1),
        "{}",
        inst.log()
    );
    assert_eq!(names(&inst, "maildrop").len(), 1);

    // A cleanup that answers TempFail: the file still waits.
    std::fs::write(etc.join("master.toml"), master("tempfail")).expect("master.toml");
    assert!(inst.postern(&["reload"]).status.success());
    assert!(wait_for(WAIT, || {
        trigger::send(&inst.queue().join(trigger::PICKUP_SOCKET), trigger::WAKEUP);
        inst.log_count("451 4.3.0 test cleanup says try again") >= 1
    }));
    assert_eq!(names(&inst, "maildrop").len(), 1);

    // Cleanup comes back: the file is handed over and only then removed.
    std::fs::write(etc.join("master.toml"), master("queue")).expect("master.toml");
    assert!(inst.postern(&["reload"]).status.success());
    assert!(wait_for(WAIT, || {
        trigger::send(&inst.queue().join(trigger::PICKUP_SOCKET), trigger::WAKEUP);
        names(&inst, "maildrop").is_empty()
    }));
    let got = records(rec.path());
    // The crashed and tempfail attempts were recorded too; the last one is the one queued.
    assert!(got.len() >= 3);
    assert!(got.iter().all(|(_, c)| c == b"Subject: wait\n\nx\n"));
    inst.stop();
}

#[test]
fn permanent_rejection_is_logged_and_kept_in_corrupt() {
    let (inst, _rec) = instance(Some("reject"), &[]);
    let out = sendmail(&inst, &["a@example.test"], b"Subject: no\n\nx\n");
    assert!(out.status.success());
    assert!(wait_for(WAIT, || names(&inst, "corrupt").len() == 1));
    assert!(names(&inst, "maildrop").is_empty());
    assert!(
        wait_for(WAIT, || inst
            .log_count("rejected by cleanup: 550 5.7.1 test cleanup refuses")
            == 1),
        "{}",
        inst.log()
    );
}

#[test]
fn real_cleanup_writes_the_queue_file() {
    assert!(bin("cleanup").exists(), "build the workspace first: cleanup is missing");
    let services = format!(
        "{}[[service]]\nname = \"cleanup\"\ntype = \"unix\"\ncommand = \"{}\"\n",
        pickup_service(),
        bin("cleanup").display()
    );
    let mut inst = Instance::new(&services, &[]);
    inst.start();
    let out = sendmail(
        &inst,
        &["-t", "-f", "alice", "-F", "Alice Example", "extra@example.test"],
        b"To: Bob <bob@example.test>\nCc: carol@elsewhere.test\nBcc: secret@example.test\nSubject: via cleanup\n\nbody\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queued = || postern_lib::queue_scan::queue_files(&inst.queue(), "incoming").unwrap_or_default();
    assert!(wait_for(WAIT, || queued().len() == 1), "{}", inst.log());
    assert!(wait_for(WAIT, || names(&inst, "maildrop").is_empty()));
    let f = std::fs::File::open(&queued()[0].path).expect("open queue file");
    let (qf, content) = postern_lib::queue_file::QueueFile::read_all(f, &Default::default()).expect("read queue file");
    assert_eq!(qf.envelope.sender, "alice@example.test");
    let mut rcpts: Vec<String> = qf.recipients.iter().map(|r| r.spec.address.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec![
            "bob@example.test",
            "carol@elsewhere.test",
            "extra@example.test",
            "secret@example.test"
        ]
    );
    let text = String::from_utf8_lossy(&content);
    assert!(text.contains("Subject: via cleanup\n"), "{text}");
    assert!(!text.contains("Bcc:"), "Bcc kept: {text}");
    assert!(text.contains("From: "), "no From: added for a local submission: {text}");
    assert!(text.contains("\nbody\n"), "{text}");
    assert_eq!(
        qf.envelope.attributes.get("uid").map(String::as_str),
        Some(uid().to_string().as_str())
    );
    inst.stop();
}
