//! Routing and local delivery under the real master: trivial-rewrite, qmgr and local.
//! Messages are put into `incoming/` exactly as cleanup leaves them (written with the lib's
//! queue file writer, fsynced and renamed by safe_open), qmgr is triggered, and the
//! outcome is read back from the Maildirs, the queue directories and the log.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_lib::proto::trigger;
use postern_lib::queue_file::{Arrival, Envelope, Notify, QueueFileWriter, RecipientSpec};
use postern_lib::queue_id::QueueId;
use postern_lib::safe_open::write_atomic;
use postern_tests::{Instance, add_user, auth_service, children_of, daemon_service, wait_for};

fn services(with_auth: bool) -> String {
    let mut s = String::new();
    s.push_str(&daemon_service("rewrite", "unix", "", "trivial-rewrite", "max_use = 100000"));
    s.push_str(&daemon_service(
        "qmgr",
        "unix",
        "public/qmgr",
        "qmgr",
        "maxproc = 1\nwakeup = \"60s\"\nmax_use = 1000000000\nmax_idle = \"1000d\"",
    ));
    s.push_str(&daemon_service("local", "unix", "", "local", "maxproc = 4"));
    if with_auth {
        s.push_str(&auth_service());
    }
    s
}

fn instance(settings: &[&str], with_auth: bool) -> Instance {
    let mut all = vec!["minimal_backoff_time=1s", "maximal_backoff_time=2s", "queue_run_delay=1s"];
    all.extend_from_slice(settings);
    Instance::new(&services(with_auth), &all)
}

fn mailbox_base(inst: &Instance) -> PathBuf {
    inst.root.path().join("var/mail")
}

fn make_mailbox(inst: &Instance, user: &str) {
    std::fs::create_dir_all(mailbox_base(inst).join(user)).expect("mkdir mailbox");
}

/// Writes a queue file into `queue` (e.g. `incoming`) the way cleanup does.
fn queue_message(inst: &Instance, queue: &str, sender: &str, rcpts: &[&str], content: &[u8]) -> QueueId {
    let id = QueueId::new();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let env = Envelope {
        queue_id: id,
        arrival: Arrival {
            secs: now.as_secs(),
            micros: now.subsec_micros(),
        },
        sender: sender.into(),
        attributes: Default::default(),
    };
    let dir = inst.queue().join(queue);
    std::fs::create_dir_all(&dir).expect("queue dir");
    write_atomic(&dir, id.as_str(), 0o600, |f| {
        let mut w = QueueFileWriter::new(f, &env).map_err(std::io::Error::other)?;
        for r in rcpts {
            w.add_recipient(&RecipientSpec {
                address: (*r).into(),
                orcpt: None,
                notify: Notify::UNSPECIFIED,
            })
            .map_err(std::io::Error::other)?;
        }
        w.write_content(content).map_err(std::io::Error::other)?;
        w.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
    .expect("write queue file");
    id
}

fn kick(inst: &Instance, byte: u8) {
    // qmgr may be starting; a missed trigger is only a delay, so retry a few times.
    for _ in 0..50 {
        if trigger::send(&inst.queue().join(trigger::QMGR_SOCKET), byte) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The message files in a Maildir's new/ and cur/.
fn maildir(inst: &Instance, user: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(rd) = std::fs::read_dir(mailbox_base(inst).join(user).join(sub)) else { continue };
        let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            out.push(std::fs::read(p).expect("read message"));
        }
    }
    out
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().count()).unwrap_or(0)
}

fn queue_empty(inst: &Instance) -> bool {
    ["incoming", "active", "deferred"]
        .iter()
        .all(|q| files_in(&inst.queue().join(q)) == 0)
}

fn wait(cond: impl FnMut() -> bool) -> bool {
    wait_for(Duration::from_secs(60), cond)
}

fn message(id: &str, body: &str) -> Vec<u8> {
    format!("From: sender@example.org\nTo: someone@example.test\nSubject: test {id}\nMessage-ID: <{id}@example.org>\n\n{body}\n")
        .into_bytes()
}

#[test]
fn delivers_into_maildir_with_return_path_and_delivered_to() {
    let mut inst = instance(&[], false);
    make_mailbox(&inst, "alice");
    inst.start();
    let content = message("m1", "Hello Alice.\nFrom the start of a line.\n");
    let id = queue_message(&inst, "incoming", "sender@example.org", &["alice@example.test"], &content);
    kick(&inst, trigger::ARRIVED);
    assert!(wait(|| maildir(&inst, "alice").len() == 1), "not delivered: {}", inst.log());
    let mut expected = b"Return-Path: <sender@example.org>\nDelivered-To: alice@example.test\n".to_vec();
    expected.extend_from_slice(&content);
    assert_eq!(maildir(&inst, "alice")[0], expected);
    let removed = format!("{}: removed", id.as_str());
    assert!(wait(|| inst.log().contains(&removed)), "{}", inst.log());
    assert!(queue_empty(&inst));
    let log = inst.log();
    assert!(log.contains(&format!(
        "{}: from=<sender@example.org>, size={}, nrcpt=1 (queue active)",
        id.as_str(),
        content.len()
    )));
    let sent = log
        .lines()
        .find(|l| l.contains("to=<alice@example.test>"))
        .expect("delivery log line");
    assert!(sent.contains("postern/local["), "{sent}");
    assert!(sent.contains(", relay=local, delay="), "{sent}");
    assert!(sent.contains(", delays="), "{sent}");
    assert!(sent.contains(", dsn=2.0.0, status=sent (delivered to maildir)"), "{sent}");
    // The file is a valid Maildir message: unique name with its size, nothing left in tmp/.
    let names: Vec<String> = std::fs::read_dir(mailbox_base(&inst).join("alice/new"))
        .expect("new/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names[0].ends_with(&format!(",S={}", expected.len())), "{names:?}");
    assert_eq!(files_in(&mailbox_base(&inst).join("alice/tmp")), 0);
    inst.stop();
}

#[test]
fn alias_to_two_users_and_unknown_user_bounces() {
    let mut inst = instance(&[], false);
    std::fs::write(inst.etc().join("aliases"), "team: alice, bob\nowner-team: alice\n").expect("aliases");
    make_mailbox(&inst, "alice");
    make_mailbox(&inst, "bob");
    inst.start();
    let content = message("m2", "to the team");
    let id = queue_message(
        &inst,
        "incoming",
        "sender@example.org",
        &["team@example.test", "nobody@example.test"],
        &content,
    );
    kick(&inst, trigger::ARRIVED);
    let removed = format!("{}: removed", id.as_str());
    assert!(wait(|| inst.log().contains(&removed)), "{}", inst.log());
    for user in ["alice", "bob"] {
        let got = maildir(&inst, user);
        assert_eq!(got.len(), 1, "{user}");
        let text = String::from_utf8_lossy(&got[0]).into_owned();
        // The list owner becomes the envelope sender of the expansion.
        assert!(text.starts_with("Return-Path: <owner-team@example.test>\nDelivered-To: team@example.test\n"), "{text}");
        assert!(text.ends_with("to the team\n"));
    }
    let log = inst.log();
    let bounced = log
        .lines()
        .find(|l| l.contains("to=<nobody@example.test>"))
        .expect("bounce line");
    assert!(bounced.contains("dsn=5.1.1, status=bounced (unknown user"), "{bounced}");
    assert!(queue_empty(&inst));
    inst.stop();
}

#[test]
fn held_messages_wait_and_active_messages_survive_a_restart() {
    let mut inst = instance(&[], false);
    make_mailbox(&inst, "carol");
    // A message left in active/ by a previous run, and one on hold.
    let left = queue_message(&inst, "active", "a@example.org", &["carol@example.test"], &message("left", "x"));
    let held = queue_message(&inst, "hold", "a@example.org", &["carol@example.test"], &message("held", "y"));
    inst.start();
    assert!(wait(|| inst.log().contains(&format!("{}: removed", left.as_str()))), "{}", inst.log());
    let fresh = queue_message(&inst, "incoming", "a@example.org", &["carol@example.test"], &message("fresh", "z"));
    kick(&inst, trigger::FLUSH);
    assert!(wait(|| inst.log().contains(&format!("{}: removed", fresh.as_str()))));
    assert_eq!(maildir(&inst, "carol").len(), 2);
    assert!(inst.queue().join("hold").join(held.as_str()).exists());
    assert!(!inst.log().contains(held.as_str()));
    // Master stopped with a message in active/: the next start delivers it.
    inst.stop();
    let again = queue_message(&inst, "active", "a@example.org", &["carol@example.test"], &message("again", "w"));
    inst.start();
    assert!(wait(|| inst.log().contains(&format!("{}: removed", again.as_str()))));
    assert_eq!(maildir(&inst, "carol").len(), 3);
    inst.stop();
}

#[test]
fn over_quota_defers_then_delivers_after_the_quota_is_raised() {
    let mut inst = instance(&[], true);
    add_user(&inst, "dave", "pw-dave");
    let out = inst.postern(&["user", "quota", "dave", "100"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    inst.start();
    let id = queue_message(&inst, "incoming", "s@example.org", &["dave@example.test"], &message("q", &"z".repeat(200)));
    kick(&inst, trigger::ARRIVED);
    assert!(
        wait(|| inst.log().contains("to=<dave@example.test>") && inst.log().contains("dsn=4.2.2, status=deferred")),
        "{}",
        inst.log()
    );
    assert!(wait(|| inst.queue().join("deferred").join(id.as_str()).exists() || inst.queue().join("active").join(id.as_str()).exists()));
    assert!(maildir(&inst, "dave").is_empty());
    let out = inst.postern(&["user", "quota", "dave", "0"]);
    assert!(out.status.success());
    // auth notices the changed users file on its own; flush until it has.
    assert!(
        wait(|| {
            kick(&inst, trigger::FLUSH);
            std::thread::sleep(Duration::from_millis(300));
            maildir(&inst, "dave").len() == 1
        }),
        "{}",
        inst.log()
    );
    assert!(wait(|| inst.log().contains(&format!("{}: removed", id.as_str()))));
    assert!(inst.log().contains("status=sent (delivered to maildir)"));
    inst.stop();
}

fn pids_of(inst: &Instance, comm: &str) -> Vec<u32> {
    children_of(inst.master_pid())
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.trim() == comm)
                .unwrap_or(false)
        })
        .collect()
}

fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn kill_9_of_qmgr_and_local_delivers_each_recipient_once() {
    let mut inst = instance(&["service_throttle_time=1s"], false);
    let users = ["u1", "u2", "u3"];
    for u in users {
        make_mailbox(&inst, u);
    }
    inst.start();
    let n = 150;
    for i in 0..n {
        let rcpts: Vec<String> = users.iter().map(|u| format!("{u}@example.test")).collect();
        let r: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        queue_message(&inst, "incoming", "s@example.org", &r, &message(&format!("k{i}"), "crash test"));
    }
    kick(&inst, trigger::ARRIVED);
    let mut local_kills = 0;
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        let comm = if round % 2 == 0 { "local" } else { "qmgr" };
        for p in pids_of(&inst, comm) {
            kill9(p);
            if comm == "local" {
                local_kills += 1;
            }
        }
        kick(&inst, trigger::FLUSH);
    }
    assert!(
        wait_for(Duration::from_secs(120), || {
            kick(&inst, trigger::FLUSH);
            std::thread::sleep(Duration::from_millis(200));
            queue_empty(&inst)
        }),
        "queue did not empty: {}",
        inst.log()
    );
    let mut duplicates = 0;
    for u in users {
        let mut ids: Vec<String> = maildir(&inst, u)
            .iter()
            .filter_map(|m| {
                String::from_utf8_lossy(m)
                    .lines()
                    .find_map(|l| l.strip_prefix("Message-ID: ").map(String::from))
            })
            .collect();
        ids.sort();
        let total = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "{u}: every message delivered");
        duplicates += total - ids.len();
    }
    // A duplicate needs a kill between the Maildir rename and the done mark of the
    // recipient in flight: at most one per killed local process.
    eprintln!("kill test: {local_kills} local processes killed, {duplicates} duplicate deliveries");
    assert!(duplicates <= local_kills, "{duplicates} duplicates for {local_kills} kills");
    inst.stop();
}
