//! Batches of messages for local (issue 14): qmgr hands local several messages for one
//! recipient in one exchange ([`postern_lib::proto::deliver::DeliverBatch`]); local writes
//! each Maildir file into `tmp/`, and at the end of the batch `fsync`s the files, links
//! them into `new/`, `fsync`s each `new/` once, and only then marks the recipients done
//! and reports them.
//!
//! - [`a_batch_reports_each_recipient_of_each_message`]: one batch sent to `private/local`
//!   as qmgr would, mixing users, mailboxes, an unknown user, a mailbox over quota, a mail
//!   loop, an alias list, a recipient already done and a queue file that is not there: each
//!   recipient's reply, done mark and mailbox are checked.
//! - [`kill_9_of_local_mid_batch_loses_nothing_and_delivers_nothing_twice`]: the real qmgr
//!   and local with a backlog of messages for one user, local `kill -9`ed several times
//!   while batches are being delivered: afterwards every message is in the Maildir exactly
//!   once and the queue is empty. A batch killed before its sync leaves files in `tmp/`
//!   only (nothing in `new/`, nothing marked); one killed between its links into `new/` and
//!   its done marks leaves linked recipients unmarked; either way qmgr defers the whole
//!   batch, and the retry writes the first kind again and finds the second under its
//!   once-only name instead of adding a second copy. These are today's semantics,
//!   unchanged by batching: for Maildir delivery, nothing lost and
//!   nothing twice (unless the user's client moved the first copy out of `new/` between the
//!   kill and the retry); for an mbox, `/file` or `|command` target, which local marks done
//!   at once and never holds for the batch's sync, at most the recipient in flight at the
//!   kill is delivered twice.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_lib::ipc::IpcStream;
use postern_lib::proto::deliver::{
    DeliverBatch, DeliverBatchReply, DeliverRecipient, DeliverRequest, PROTOCOL, VERSION,
};
use postern_lib::proto::trigger;
use postern_lib::queue_file::{Arrival, Envelope, Notify, QueueFile, QueueFileWriter, RecipientSpec, RecipientStatus};
use postern_lib::queue_id::QueueId;
use postern_lib::safe_open::write_atomic;
use postern_tests::{
    Instance, add_user, auth_service, children_of, comm, daemon_service, maildir_index, wait_for, write_queue_file,
};

fn message(id: &str, extra: &str) -> Vec<u8> {
    format!("From: s@example.org\r\nSubject: batch\r\nMessage-ID: <{id}>\r\n{extra}\r\nbody of {id}\r\n").into_bytes()
}

fn statuses(path: &Path) -> Vec<RecipientStatus> {
    QueueFile::read(std::fs::File::open(path).expect("queue file"))
        .expect("read queue file")
        .recipients
        .iter()
        .map(|r| r.status)
        .collect()
}

fn request(id: &QueueId, rcpts: &[&str]) -> DeliverRequest {
    DeliverRequest {
        queue_id: *id,
        queue_file: format!("active/{id}"),
        sender: "s@example.org".into(),
        nexthop: "example.test".into(),
        recipients: rcpts
            .iter()
            .enumerate()
            .map(|(i, r)| DeliverRecipient {
                index: i,
                address: r.to_string(),
                original: r.to_string(),
                mark: true,
            })
            .collect(),
        arrival_micros: 0,
        active_micros: 0,
        dispatch_micros: 0,
    }
}

fn new_files(base: &Path, user: &str) -> usize {
    std::fs::read_dir(base.join(user).join("new"))
        .map(|d| d.flatten().count())
        .unwrap_or(0)
}

/// Gives `path` to mail_owner when the tests run as root (daemons run as mail_owner then).
fn give_to_mail_owner(path: &Path) {
    if postern_tests::is_root()
        && let Ok(Some(u)) = nix::unistd::User::from_name("postern")
    {
        nix::unistd::chown(path, Some(u.uid), Some(u.gid)).expect("chown");
    }
}

#[test]
fn a_batch_reports_each_recipient_of_each_message() {
    let services = format!(
        "{}{}",
        daemon_service("local", "unix", "", "local", "maxproc = 2"),
        auth_service()
    );
    let mut inst = Instance::new(&services, &["alias_maps=[\"aliases\"]", "default_transport=error"]);
    for u in ["ann", "ben", "cat", "dan"] {
        add_user(&inst, u, "pw");
    }
    let out = inst.postern(&["user", "quota", "dan", "100"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(inst.etc().join("aliases"), "crew: ann, cat\n").expect("aliases");
    inst.start();
    let base = inst.root.path().join("var/mail");
    let n = Notify::default;
    // 1: two users in one message; 2: an unknown user and a user over quota (the message is
    // larger than dan's 100 bytes); 3: a mail loop for ann, ben fine; 4: an alias list
    // (two Maildirs: synced at once, not held for the batch); 5: ann's recipient already
    // done in the file; 6: a queue file that is not there; 7: ann again.
    let (m1, p1) = write_queue_file(
        &inst,
        "active",
        "s@example.org",
        &[("ann@example.test", n()), ("ben@example.test", n())],
        &[],
        &message("m1@x", ""),
    );
    let big = format!("X-Pad: {}", "p".repeat(300));
    let (m2, p2) = write_queue_file(
        &inst,
        "active",
        "s@example.org",
        &[("nobody@example.test", n()), ("dan@example.test", n())],
        &[],
        &message("m2@x", &big),
    );
    let (m3, p3) = write_queue_file(
        &inst,
        "active",
        "s@example.org",
        &[("ann@example.test", n()), ("ben@example.test", n())],
        &[],
        &message("m3@x", "Delivered-To: ann@example.test\r\n"),
    );
    let (m4, p4) = write_queue_file(
        &inst,
        "active",
        "s@example.org",
        &[("crew@example.test", n())],
        &[],
        &message("m4@x", ""),
    );
    let (m5, p5) = write_queue_file(
        &inst,
        "active",
        "s@example.org",
        &[("ann@example.test", n())],
        &[],
        &message("m5@x", ""),
    );
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p5)
            .expect("open m5");
        let qf = QueueFile::read(&f).expect("read m5");
        postern_lib::queue_file::mark_done(&f, &qf.recipients[0].handle, RecipientStatus::Delivered).expect("mark m5");
    }
    let m6 = QueueId::new();
    let (m7, p7) = write_queue_file(
        &inst,
        "active",
        "s@example.org",
        &[("ann@example.test", n())],
        &[],
        &message("m7@x", ""),
    );

    let batch = DeliverBatch {
        batch: vec![
            request(&m1, &["ann@example.test", "ben@example.test"]),
            request(&m2, &["nobody@example.test", "dan@example.test"]),
            request(&m3, &["ann@example.test", "ben@example.test"]),
            request(&m4, &["crew@example.test"]),
            request(&m5, &["ann@example.test"]),
            request(&m6, &["ann@example.test"]),
            request(&m7, &["ann@example.test"]),
        ],
    };
    let sock = UnixStream::connect(inst.queue().join("private/local")).expect("connect to local");
    let mut ipc = IpcStream::client(sock, PROTOCOL, VERSION, Some(Duration::from_secs(60))).expect("handshake");
    ipc.send(&batch).expect("send batch");
    let reply: DeliverBatchReply = ipc.recv().expect("batch reply");
    let log = inst.log();
    assert_eq!(reply.replies.len(), 7, "one reply per job: {reply:?}");
    let codes: Vec<Vec<(String, u16, String)>> = reply
        .replies
        .iter()
        .map(|r| {
            r.results
                .iter()
                .map(|x| (x.address.clone(), x.code, x.dsn.to_string()))
                .collect()
        })
        .collect();
    let want = |a: &str, c: u16, d: &str| (a.to_string(), c, d.to_string());
    assert_eq!(
        codes[0],
        vec![
            want("ann@example.test", 250, "2.0.0"),
            want("ben@example.test", 250, "2.0.0")
        ],
        "{log}"
    );
    assert_eq!(
        codes[1],
        vec![
            want("nobody@example.test", 550, "5.1.1"),
            want("dan@example.test", 450, "4.2.2")
        ],
        "{log}"
    );
    assert_eq!(
        codes[2],
        vec![
            want("ann@example.test", 550, "5.4.6"),
            want("ben@example.test", 250, "2.0.0")
        ],
        "{log}"
    );
    assert_eq!(codes[3], vec![want("crew@example.test", 250, "2.0.0")], "{log}");
    assert_eq!(codes[4], vec![want("ann@example.test", 250, "2.0.0")], "{log}");
    assert_eq!(reply.replies[4].results[0].text, "already done");
    assert_eq!(codes[5], vec![want("ann@example.test", 451, "4.3.0")], "{log}");
    assert_eq!(codes[6], vec![want("ann@example.test", 250, "2.0.0")], "{log}");

    // Done marks: delivered and bounced recipients marked, the deferred one not.
    use RecipientStatus::{Bounced, Delivered};
    assert_eq!(statuses(&p1), vec![Delivered, Delivered]);
    let s2 = statuses(&p2);
    assert_eq!(s2[0], Bounced);
    assert!(!s2[1].is_final(), "over quota stays pending: {s2:?}");
    assert_eq!(statuses(&p3), vec![Bounced, Delivered]);
    assert_eq!(statuses(&p4), vec![Delivered]);
    assert_eq!(statuses(&p5), vec![Delivered]);
    assert_eq!(statuses(&p7), vec![Delivered]);

    // Mailboxes: ann has m1, m4 (alias), m7; ben m1, m3; cat m4; dan nothing.
    let ids = |u: &str| {
        let mut v: Vec<String> = maildir_index(&base.join(u)).into_keys().map(|(id, _)| id).collect();
        v.sort();
        v
    };
    let first = postern_tests::maildir_messages(&base.join("ann"));
    let first = String::from_utf8_lossy(first.first().map(Vec::as_slice).unwrap_or_default()).into_owned();
    assert_eq!(ids("ann"), vec!["<m1@x>", "<m4@x>", "<m7@x>"], "{first}");
    assert_eq!(ids("ben"), vec!["<m1@x>", "<m3@x>"]);
    assert_eq!(ids("cat"), vec!["<m4@x>"]);
    assert_eq!(new_files(&base, "dan"), 0);
    assert_eq!(new_files(&base, "ann"), 3, "one file each, nothing twice");
    // The log has one line per recipient, sent ones after the batch's sync.
    assert_eq!(inst.log_count("status=sent"), 7, "{log}");
    assert!(
        log.contains("to=<nobody@example.test>") && log.contains("status=bounced"),
        "{log}"
    );

    // The same batch again: everything already done or already there; nothing added.
    let sock = UnixStream::connect(inst.queue().join("private/local")).expect("connect to local");
    let mut ipc = IpcStream::client(sock, PROTOCOL, VERSION, Some(Duration::from_secs(60))).expect("handshake");
    ipc.send(&batch).expect("send batch");
    let again: DeliverBatchReply = ipc.recv().expect("batch reply");
    assert_eq!(again.replies[0].results[0].text, "already done");
    assert_eq!(new_files(&base, "ann"), 3);
    assert_eq!(new_files(&base, "ben"), 2);
    inst.stop();
}

fn pipeline() -> String {
    let mut s = String::new();
    s.push_str(&daemon_service(
        "rewrite",
        "unix",
        "",
        "trivial-rewrite",
        "max_use = 100000",
    ));
    s.push_str(&daemon_service(
        "qmgr",
        "unix",
        "public/qmgr",
        "qmgr",
        "maxproc = 1\nmin_procs = 1\nwakeup = \"60s\"\nmax_use = 1000000000\nmax_idle = \"1000d\"",
    ));
    s.push_str(&daemon_service("local", "unix", "", "local", "maxproc = 4"));
    s.push_str(&daemon_service("cleanup", "unix", "", "cleanup", "maxproc = 2"));
    s.push_str(&daemon_service("bounce", "unix", "", "bounce", "maxproc = 2"));
    s.push_str(&auth_service());
    s
}

/// Writes a queue file into incoming/ the way cleanup does.
fn queue_incoming(inst: &Instance, rcpt: &str, content: &[u8]) -> QueueId {
    let id = QueueId::new();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let env = Envelope {
        queue_id: id,
        arrival: Arrival {
            secs: now.as_secs(),
            micros: now.subsec_micros(),
        },
        sender: "s@example.org".into(),
        attributes: Default::default(),
    };
    let staging = inst.root.path().join("staging");
    std::fs::create_dir_all(&staging).expect("staging dir");
    write_atomic(&staging, id.as_str(), 0o600, |f| {
        let mut w = QueueFileWriter::new(f, &env).map_err(std::io::Error::other)?;
        w.add_recipient(&RecipientSpec {
            address: rcpt.into(),
            orcpt: None,
            notify: Notify::UNSPECIFIED,
        })
        .map_err(std::io::Error::other)?;
        w.write_content(content).map_err(std::io::Error::other)?;
        w.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
    .expect("write queue file");
    give_to_mail_owner(&staging.join(id.as_str()));
    let incoming = inst.queue().join("incoming");
    std::fs::create_dir_all(&incoming).expect("incoming/");
    std::fs::rename(staging.join(id.as_str()), incoming.join(id.as_str())).expect("rename");
    id
}

fn kick(inst: &Instance, byte: u8) {
    for _ in 0..50 {
        if trigger::send(&inst.queue().join(trigger::QMGR_SOCKET), byte) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_of_local_mid_batch_loses_nothing_and_delivers_nothing_twice() {
    const MESSAGES: usize = 600;
    let mut inst = Instance::new(
        &pipeline(),
        &[
            "default_transport=error",
            "minimal_backoff_time=1s",
            "maximal_backoff_time=2s",
            "queue_run_delay=1s",
        ],
    );
    add_user(&inst, "kim", "pw");
    // A few kilobytes each, so that a batch takes a while to write.
    let pad = format!("X-Pad: {}\r\n", "k".repeat(4000));
    for i in 0..MESSAGES {
        queue_incoming(&inst, "kim@example.test", &message(&format!("kill.{i}@x"), &pad));
    }
    inst.start();
    let master = inst.master_pid();
    let base = inst.root.path().join("var/mail");
    kick(&inst, trigger::ARRIVED);
    // Kill every local process each time another stretch of deliveries has reached new/.
    let mut kills = 0;
    for at in [20, 120, 240, 360] {
        if !wait_for(Duration::from_secs(60), || new_files(&base, "kim") >= at) {
            break;
        }
        for pid in children_of(master) {
            if comm(pid).as_deref() == Some("local")
                && nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .is_ok()
            {
                kills += 1;
            }
        }
    }
    assert!(kills >= 2, "local was killed {kills} times\n{}", inst.log());
    let done = wait_for(Duration::from_secs(120), || {
        kick(&inst, trigger::FLUSH);
        std::thread::sleep(Duration::from_millis(200));
        inst.queue_left().is_empty() && new_files(&base, "kim") >= MESSAGES
    });
    let log = inst.log();
    assert!(
        done,
        "not all delivered: {} of {MESSAGES}, queue {:?}",
        new_files(&base, "kim"),
        inst.queue_left()
    );
    let index = maildir_index(&base.join("kim"));
    let twice: Vec<_> = index.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert_eq!(index.len(), MESSAGES, "each message once");
    assert_eq!(new_files(&base, "kim"), MESSAGES);
    assert_eq!(inst.log_count("status=bounced"), 0, "{log}");
    // The kills hit batches in the middle: their recipients were deferred and retried;
    // those already linked were found on the retry (in a single-message retry the log says
    // so), not delivered again.
    let batches_cut = inst.log_count("relay=none");
    let found = inst.log_count("(already there)");
    println!(
        "local killed {kills} times; recipients deferred by the kills: {batches_cut}; found already there on the retry: {found}"
    );
    assert!(batches_cut > 0, "no batch was cut by a kill");
    inst.stop();
}
