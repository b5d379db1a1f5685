//! A full disk (issue 6, `queue_minfree`): the whole shipped pipeline with its queue on
//! a small tmpfs and the mailboxes on another, each filled on purpose with a filler file.
//!
//! * Mailboxes full: a message is accepted (the queue has room), local's Maildir delivery
//!   fails with ENOSPC and the message is deferred, not bounced.
//! * Queue below 1.5 × `message_size_limit`: MAIL gets `452 4.3.1 Insufficient system
//!   storage`.
//! * Queue full during DATA (space ran out after MAIL): cleanup's write fails, the end of
//!   the data gets `452 4.3.1`, its temporary file is gone, and every file in
//!   `incoming/`, `active/` and `deferred/` reads as a complete queue file.
//! * `sendmail` with the queue full: postdrop says the queue file system is full and the
//!   exit status is 75 (EX_TEMPFAIL).
//! * Fillers removed: a new message is accepted and delivered, and the deferred one is
//!   delivered too, without anyone touching the queue.
//!
//! Needs root (mount); skipped with a message otherwise. The mounts are undone by a drop
//! guard (lazily, should a process still hold them).

use postern_lib::queue_file::QueueFile;
use postern_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
/// `message_size_limit` for the test: MAIL needs 1.5 × this free.
const SIZE_LIMIT: u64 = 64 * 1024;

/// A tmpfs mounted for the test; unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Mount {
        std::fs::create_dir_all(dir).expect("mkdir mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes free on the file system holding `dir`.
fn free(dir: &Path) -> u64 {
    postern_lib::queue_dirs::free_space(dir).expect("statvfs")
}

/// Writes `path` until the file system is full (`limit` None) or `limit` bytes are
/// written; returns the bytes written.
fn fill(path: &Path, limit: Option<u64>) -> u64 {
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![b'x'; 4096];
    let mut written = 0u64;
    // Bounded: at most the size of the test's file systems.
    for _ in 0..16 * 1024 {
        let want = limit.map_or(chunk.len() as u64, |l| (l - written).min(chunk.len() as u64));
        if want == 0 {
            break;
        }
        match f.write(&chunk[..want as usize]) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

/// Opens an SMTP session with smtplib up to DATA's 354; the message body is sent when
/// [`Pending::finish`] is called. Returns the 354 reply line.
struct Pending {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Pending {
    fn open(port: u16, rcpt: &str, body_size: usize) -> (Pending, String) {
        let script = format!(
            "import smtplib, sys\n\
             s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n\
             s.ehlo('client.test')\n\
             print(s.mail('alice@example.test'), flush=True)\n\
             print(s.rcpt({rcpt:?}), flush=True)\n\
             r = s.docmd('DATA')\n\
             print(r, flush=True)\n\
             sys.stdin.readline()\n\
             if r[0] != 354:\n    s.quit()\n    sys.exit(0)\n\
             body = 'Subject: big\\r\\n\\r\\n' + ('y' * 76 + '\\r\\n') * ({body_size} // 78)\n\
             s.send(body.encode() + b'.\\r\\n')\n\
             print(s.getreply(), flush=True)\n\
             s.quit()\n"
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut lines = String::new();
        for _ in 0..3 {
            out.read_line(&mut lines).expect("read smtplib output");
        }
        (Pending { child, out }, lines)
    }

    fn finish(mut self) -> String {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = writeln!(stdin, "go");
        }
        let mut line = String::new();
        let _ = self.out.read_line(&mut line);
        let _ = self.child.wait();
        line
    }
}

/// What `MAIL FROM` gets on a new connection.
fn mail_reply(port: u16) -> String {
    python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\ns.ehlo('client.test')\n\
         print(s.mail('alice@example.test'))\ns.quit()\n"
    ))
}

/// Every queue file in the queue's message directories reads as a complete file; no
/// temporary file of cleanup is left.
fn check_queue_files(queue: &Path) {
    for dir in ["incoming", "active", "deferred", "hold"] {
        for p in files_below(&queue.join(dir)) {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            assert!(!name.starts_with(".cleanup."), "temporary file left: {}", p.display());
            let f = std::fs::File::open(&p).expect("open queue file");
            QueueFile::read(f).unwrap_or_else(|e| panic!("{} is not a complete queue file: {e}", p.display()));
        }
    }
}

#[test]
fn disk_full_refuses_cleanly_and_recovers() {
    if !postern_tests::require_root("it mounts tmpfs file systems") {
        return;
    }
    let port = free_port();
    let mut inst = Instance::new(
        &pipeline_services(port),
        &[
            &format!("message_size_limit={SIZE_LIMIT}"),
            "minimal_backoff_time=1s",
            "maximal_backoff_time=2s",
            "queue_run_delay=1s",
        ],
    );
    let queue = inst.queue();
    let mail = inst.root.path().join("var/mail");
    let (uid, gid) = postern_lib::accounts::mail_owner_ids("postern")
        .expect("look up postern")
        .expect("mail_owner exists");
    let _queue_fs = Mount::tmpfs(&queue, "size=2m,mode=0755");
    let _mail_fs = Mount::tmpfs(&mail, &format!("size=1m,mode=0700,uid={uid},gid={gid}"));
    add_user(&inst, "bob", "bob-pw");
    inst.start();

    // Mailboxes full: the message is queued, its delivery deferred.
    let mail_filler = mail.join("filler");
    fill(&mail_filler, None);
    let sent = smtplib_send(
        port,
        "alice@example.test",
        &["bob@example.test"],
        "Subject: early\r\n\r\naccepted while the mailboxes were full\r\n",
    );
    assert_eq!(sent.trim(), "{}", "accepted");
    assert!(
        wait_for(LONG, || inst.log_count("status=deferred") >= 1),
        "delivery deferred while the mailboxes are full:\n{}",
        inst.log()
    );
    assert!(!inst.log().contains("status=bounced"), "{}", inst.log());

    // Queue below 1.5 × message_size_limit: MAIL is refused (smtpd measures once a second).
    let queue_filler = queue.join("filler");
    let room = free(&queue);
    assert!(room > 2 * SIZE_LIMIT, "test file system too small: {room}");
    fill(&queue_filler, Some(room - SIZE_LIMIT));
    let mut last = String::new();
    assert!(
        wait_for(LONG, || {
            last = mail_reply(port);
            last.contains("452") && last.contains("4.3.1 Insufficient system storage")
        }),
        "MAIL with the queue nearly full: {last}"
    );

    // Room for MAIL, then the queue fills up during DATA: cleanup cannot write.
    std::fs::remove_file(&queue_filler).expect("remove filler");
    let (pending, opened) = wait_open(port);
    assert!(opened.contains("354"), "{opened}");
    fill(&queue_filler, None);
    let reply = pending.finish();
    assert!(
        reply.contains("452") && reply.contains("4.3.1"),
        "end of data with the queue full: {reply}"
    );
    check_queue_files(&queue);

    // sendmail with the queue full: postdrop says so and the status is EX_TEMPFAIL.
    let mut child = Command::new(bin("sendmail"))
        .arg("-C")
        .arg(inst.etc())
        .arg("bob@example.test")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sendmail");
    if let Some(mut stdin) = child.stdin.take() {
        let line = "z".repeat(76);
        let _ = stdin.write_all(b"Subject: local\n\n");
        for _ in 0..200 {
            let _ = writeln!(stdin, "{line}");
        }
    }
    let out = child.wait_with_output().expect("wait sendmail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "sendmail with the queue full: {stderr}");
    assert!(stderr.contains("full"), "{stderr}");
    check_queue_files(&queue);

    // Space returns: new mail is accepted and delivered, and so is the deferred message.
    std::fs::remove_file(&queue_filler).expect("remove filler");
    std::fs::remove_file(&mail_filler).expect("remove filler");
    let mut sent = String::new();
    assert!(
        wait_for(LONG, || {
            sent = mail_reply(port);
            sent.contains("250")
        }),
        "MAIL once space returned: {sent}"
    );
    let sent = smtplib_send(
        port,
        "alice@example.test",
        &["bob@example.test"],
        "Subject: late\r\n\r\naccepted after space returned\r\n",
    );
    assert_eq!(sent.trim(), "{}", "accepted");
    let bob = mail.join("bob");
    assert!(
        wait_for(LONG, || maildir_messages(&bob).len() == 2),
        "both messages delivered:\n{}",
        inst.log()
    );
    let texts: Vec<String> = maildir_messages(&bob)
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    for subject in ["Subject: early", "Subject: late"] {
        assert!(
            texts.iter().any(|t| t.contains(subject)),
            "{subject} delivered: {texts:?}"
        );
    }
    inst.stop();
}

/// Opens a DATA session once MAIL is accepted again (smtpd's measurement is up to a
/// second old).
fn wait_open(port: u16) -> (Pending, String) {
    for _ in 0..30 {
        let (p, lines) = Pending::open(port, "bob@example.test", 32 * 1024);
        if lines.contains("354") {
            return (p, lines);
        }
        let _ = p.finish();
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("MAIL not accepted again after the filler was removed");
}
