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
    // Bounced recipients owe their sender a notice: bounce writes it, cleanup queues it.
    s.push_str(&daemon_service("cleanup", "unix", "", "cleanup", "maxproc = 4"));
    s.push_str(&daemon_service("bounce", "unix", "", "bounce", "maxproc = 2"));
    if with_auth {
        s.push_str(&auth_service());
    }
    s
}

fn instance(settings: &[&str], with_auth: bool) -> Instance {
    let mut all = vec![
        // The test senders are remote and there is no smtp client here: notices to them
        // bounce at once (and the double bounce to the local postmaster ends the chain).
        "default_transport=error",
        "minimal_backoff_time=1s",
        "maximal_backoff_time=2s",
        "queue_run_delay=1s",
    ];
    all.extend_from_slice(settings);
    Instance::new(&services(with_auth), &all)
}

fn mailbox_base(inst: &Instance) -> PathBuf {
    inst.root.path().join("var/mail")
}

/// Gives `path` to mail_owner when the tests run as root (daemons run as mail_owner then).
fn give_to_mail_owner(path: &Path) {
    if postern_tests::is_root()
        && let Ok(Some(u)) = nix::unistd::User::from_name("postern")
    {
        nix::unistd::chown(path, Some(u.uid), Some(u.gid)).expect("chown");
    }
}

fn make_mailbox(inst: &Instance, user: &str) {
    let base = mailbox_base(inst);
    std::fs::create_dir_all(base.join(user)).expect("mkdir mailbox");
    give_to_mail_owner(&base);
    give_to_mail_owner(&base.join(user));
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
    // Written in a staging directory, given to mail_owner, then renamed into the queue.
    let staging = inst.root.path().join("staging");
    std::fs::create_dir_all(&staging).expect("staging dir");
    write_atomic(&staging, id.as_str(), 0o600, |f| {
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
    give_to_mail_owner(&staging.join(id.as_str()));
    std::fs::rename(staging.join(id.as_str()), dir.join(id.as_str())).expect("rename into queue");
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
        let Ok(rd) = std::fs::read_dir(mailbox_base(inst).join(user).join(sub)) else {
            continue;
        };
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
    let id = queue_message(
        &inst,
        "incoming",
        "sender@example.org",
        &["alice@example.test"],
        &content,
    );
    kick(&inst, trigger::ARRIVED);
    assert!(
        wait(|| maildir(&inst, "alice").len() == 1),
        "not delivered: {}",
        inst.log()
    );
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
    assert!(
        sent.contains(", dsn=2.0.0, status=sent (delivered to maildir)"),
        "{sent}"
    );
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
        assert!(
            text.starts_with("Return-Path: <owner-team@example.test>\nDelivered-To: team@example.test\n"),
            "{text}"
        );
        assert!(text.ends_with("to the team\n"));
    }
    let log = inst.log();
    let bounced = log
        .lines()
        .find(|l| l.contains("to=<nobody@example.test>"))
        .expect("bounce line");
    assert!(bounced.contains("dsn=5.1.1, status=bounced (unknown user"), "{bounced}");
    // The non-delivery notice (and its own bounce, the sender being remote here) passes
    // through the queue too; it drains.
    assert!(wait(|| queue_empty(&inst)), "{}", inst.log());
    inst.stop();
}

#[test]
fn held_messages_wait_and_active_messages_survive_a_restart() {
    let mut inst = instance(&[], false);
    make_mailbox(&inst, "carol");
    // A message left in active/ by a previous run, and one on hold.
    let left = queue_message(
        &inst,
        "active",
        "a@example.org",
        &["carol@example.test"],
        &message("left", "x"),
    );
    let held = queue_message(
        &inst,
        "hold",
        "a@example.org",
        &["carol@example.test"],
        &message("held", "y"),
    );
    inst.start();
    assert!(
        wait(|| inst.log().contains(&format!("{}: removed", left.as_str()))),
        "{}",
        inst.log()
    );
    let fresh = queue_message(
        &inst,
        "incoming",
        "a@example.org",
        &["carol@example.test"],
        &message("fresh", "z"),
    );
    kick(&inst, trigger::FLUSH);
    assert!(wait(|| inst.log().contains(&format!("{}: removed", fresh.as_str()))));
    assert_eq!(maildir(&inst, "carol").len(), 2);
    assert!(inst.queue().join("hold").join(held.as_str()).exists());
    assert!(!inst.log().contains(held.as_str()));
    // Master stopped with a message in active/: the next start delivers it.
    inst.stop();
    let again = queue_message(
        &inst,
        "active",
        "a@example.org",
        &["carol@example.test"],
        &message("again", "w"),
    );
    inst.start();
    assert!(
        wait(|| inst.log().contains(&format!("{}: removed", again.as_str()))),
        "{}",
        inst.log()
    );
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
    let id = queue_message(
        &inst,
        "incoming",
        "s@example.org",
        &["dave@example.test"],
        &message("q", &"z".repeat(200)),
    );
    kick(&inst, trigger::ARRIVED);
    assert!(
        wait(|| inst.log().contains("to=<dave@example.test>") && inst.log().contains("dsn=4.2.2, status=deferred")),
        "{}",
        inst.log()
    );
    assert!(wait(|| inst.queue().join("deferred").join(id.as_str()).exists()
        || inst.queue().join("active").join(id.as_str()).exists()));
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
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
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
        queue_message(
            &inst,
            "incoming",
            "s@example.org",
            &r,
            &message(&format!("k{i}"), "crash test"),
        );
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
    // local names each Maildir file after the queue ID and recipient and links it into
    // new/ only if absent, so a recipient delivered by a killed local before its done mark
    // is not delivered again on the retry.
    eprintln!("kill test: {local_kills} local processes killed, {duplicates} duplicate deliveries");
    assert_eq!(duplicates, 0, "{local_kills} local processes killed");
    inst.stop();
}

#[test]
fn mail_loop_bounces_and_file_alias_appends_mbox() {
    let mut inst = instance(&[], false);
    let spool = inst.root.path().join("spool-files");
    std::fs::create_dir_all(&spool).expect("mkdir");
    give_to_mail_owner(&spool);
    let log_file = spool.join("archive.mbox");
    std::fs::write(inst.etc().join("aliases"), format!("archive: {}\n", log_file.display())).expect("aliases");
    make_mailbox(&inst, "erin");
    inst.start();
    // A message that has already been delivered to erin once: a loop.
    let looped = b"Delivered-To: erin@example.test\nSubject: loop\n\nbody\n";
    let a = queue_message(&inst, "incoming", "s@example.org", &["erin@example.test"], looped);
    let b = queue_message(
        &inst,
        "incoming",
        "s@example.org",
        &["archive@example.test"],
        b"Subject: keep\n\nFrom here on\nline\n",
    );
    kick(&inst, trigger::ARRIVED);
    for id in [a, b] {
        assert!(
            wait(|| inst.log().contains(&format!("{}: removed", id.as_str()))),
            "{}",
            inst.log()
        );
    }
    assert!(maildir(&inst, "erin").is_empty());
    let log = inst.log();
    assert!(
        log.lines().any(|l| l.contains("to=<erin@example.test>")
            && l.contains("dsn=5.4.6, status=bounced (mail forwarding loop for erin@example.test)")),
        "{log}"
    );
    let mbox = std::fs::read_to_string(&log_file).expect("mbox file");
    assert!(mbox.starts_with("From s@example.org  "), "{mbox}");
    assert!(
        mbox.ends_with(
            "\nReturn-Path: <s@example.org>\nDelivered-To: archive@example.test\nSubject: keep\n\n>From here on\nline\n\n"
        ),
        "{mbox}"
    );
    inst.stop();
}

#[test]
fn virtual_aliases_and_transport_maps_route_through_trivial_rewrite() {
    let mut inst = instance(
        &["virtual_alias_maps=[\"virtual\"]", "transport_maps=[\"transport\"]"],
        false,
    );
    std::fs::write(
        inst.etc().join("virtual"),
        "sales@shop.test frank@example.test, grace@example.test\n",
    )
    .expect("virtual");
    std::fs::write(
        inst.etc().join("transport"),
        "blocked.test error:5.7.1 this domain is refused\nslow.test nosuchagent:[10.0.0.1]\n",
    )
    .expect("transport");
    make_mailbox(&inst, "frank");
    make_mailbox(&inst, "grace");
    inst.start();
    let id = queue_message(
        &inst,
        "incoming",
        "s@example.org",
        &["sales@shop.test", "x@blocked.test"],
        &message("v", "virtual"),
    );
    let slow = queue_message(
        &inst,
        "incoming",
        "s@example.org",
        &["y@slow.test"],
        &message("s", "slow"),
    );
    kick(&inst, trigger::ARRIVED);
    assert!(
        wait(|| inst.log().contains(&format!("{}: removed", id.as_str()))),
        "{}",
        inst.log()
    );
    assert_eq!(maildir(&inst, "frank").len(), 1);
    assert_eq!(maildir(&inst, "grace").len(), 1);
    let log = inst.log();
    assert!(
        log.lines()
            .any(|l| l.contains("to=<frank@example.test>, orig_to=<sales@shop.test>, relay=local")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("to=<x@blocked.test>, relay=none")
            && l.contains("dsn=5.7.1, status=bounced (this domain is refused)")),
        "{log}"
    );
    // A transport nobody listens for: deferred with the reason in the defer log.
    assert!(
        wait(|| log_has(&inst, "to=<y@slow.test>") && inst.queue().join("defer").join(slow.as_str()).exists()),
        "{}",
        inst.log()
    );
    let defer = std::fs::read_to_string(inst.queue().join("defer").join(slow.as_str())).expect("defer log");
    assert!(defer.contains("recipient=y@slow.test\n"), "{defer}");
    assert!(
        defer.contains("reason=delivery agent private/nosuchagent unavailable"),
        "{defer}"
    );
    assert!(
        log_has(&inst, "status=deferred (delivery agent private/nosuchagent unavailable"),
        "{}",
        inst.log()
    );
    inst.stop();
}

fn log_has(inst: &Instance, needle: &str) -> bool {
    inst.log().contains(needle)
}

/// SMTP in (Python's smtplib against the real smtpd and cleanup) → Maildir.
#[test]
fn smtp_to_maildir_end_to_end() {
    let port = postern_tests::free_port();
    let mut services = services(true);
    services.push_str(&daemon_service(
        "smtp",
        "inet",
        &format!("127.0.0.1:{port}"),
        "smtpd",
        "maxproc = 2",
    ));
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "henry", "pw-henry");
    inst.start();
    let script = format!(
        "import smtplib\n\
         msg = 'From: sender@example.org\\r\\nTo: henry@example.test\\r\\nSubject: e2e\\r\\nMessage-ID: <e2e-1@example.org>\\r\\n\\r\\nHello over SMTP.\\r\\n'\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n\
         s.sendmail('sender@example.org', ['henry@example.test'], msg)\n\
         s.quit()\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        inst.log()
    );
    assert!(wait(|| maildir(&inst, "henry").len() == 1), "{}", inst.log());
    let text = String::from_utf8(maildir(&inst, "henry").remove(0)).expect("utf-8");
    assert!(
        text.starts_with("Return-Path: <sender@example.org>\nDelivered-To: henry@example.test\n"),
        "{text}"
    );
    assert!(text.contains("\nMessage-ID: <e2e-1@example.org>\n"), "{text}");
    assert!(text.ends_with("\n\nHello over SMTP.\n"), "{text}");
    assert!(wait(|| inst.log().contains(": removed")));
    assert!(queue_empty(&inst));
    inst.stop();
}

#[test]
fn a_message_deferred_past_its_lifetime_is_bounced_and_removed() {
    let mut inst = instance(&["transport_maps=[\"transport\"]", "maximal_queue_lifetime=2s"], false);
    std::fs::write(inst.etc().join("transport"), "gone.test nosuchagent:\n").expect("transport");
    inst.start();
    let id = queue_message(
        &inst,
        "incoming",
        "s@example.org",
        &["z@gone.test"],
        &message("e", "expire"),
    );
    kick(&inst, trigger::ARRIVED);
    let removed = format!("{}: removed", id.as_str());
    assert!(
        wait(|| {
            kick(&inst, trigger::FLUSH);
            std::thread::sleep(Duration::from_millis(300));
            inst.log().contains(&removed)
        }),
        "{}",
        inst.log()
    );
    let log = inst.log();
    assert!(log_has(
        &inst,
        "status=deferred (delivery agent private/nosuchagent unavailable"
    ));
    assert!(
        log.lines().any(|l| l.contains("to=<z@gone.test>, relay=none")
            && l.contains("dsn=4.4.7, status=bounced (message expired after")),
        "{log}"
    );
    assert!(queue_empty(&inst));
    assert!(!inst.queue().join("defer").join(id.as_str()).exists());
    inst.stop();
}

/// A Sun ONE-style rewrite rule sends a domain through a channel of its own: a second
/// `local` service at `private/slowlane`, with its own process limit.
#[test]
fn rewrite_rules_pick_a_channel_of_its_own() {
    let mut services = services(false);
    services.push_str(&daemon_service(
        "slowlane",
        "unix",
        "",
        "local",
        "maxproc = 1\noptions = { syslog_name = \"postern/slowlane\" }",
    ));
    let mut inst = Instance::new(
        &services,
        &[
            "rewrite_rules=[\"rules\"]",
            "minimal_backoff_time=1s",
            "maximal_backoff_time=2s",
        ],
    );
    std::fs::write(inst.etc().join("rules"), "slow.test $U%example.test@slowlane\n").expect("rules");
    make_mailbox(&inst, "ivy");
    inst.start();
    let id = queue_message(
        &inst,
        "incoming",
        "s@example.org",
        &["ivy@slow.test"],
        &message("r", "rules"),
    );
    kick(&inst, trigger::ARRIVED);
    assert!(
        wait(|| inst.log().contains(&format!("{}: removed", id.as_str()))),
        "{}",
        inst.log()
    );
    assert_eq!(maildir(&inst, "ivy").len(), 1);
    let log = inst.log();
    let line = log
        .lines()
        .find(|l| l.contains("to=<ivy@example.test>"))
        .expect("delivery line");
    assert!(line.contains("postern/slowlane/local["), "{line}");
    assert!(line.contains("orig_to=<ivy@slow.test>"), "{line}");
    assert!(line.contains("status=sent (delivered to maildir)"), "{line}");
    inst.stop();
}

/// With room for two messages in memory, a backlog waits on disk and is taken in as
/// messages finish: every message is delivered.
#[test]
fn a_backlog_beyond_the_active_limit_waits_on_disk_and_is_delivered() {
    let mut inst = instance(
        &["qmgr_message_active_limit=2", "qmgr_message_recipient_limit=4"],
        false,
    );
    make_mailbox(&inst, "jack");
    make_mailbox(&inst, "kate");
    let n = 40;
    for i in 0..n {
        queue_message(
            &inst,
            "incoming",
            "s@example.org",
            &["jack@example.test", "kate@example.test"],
            &message(&format!("b{i}"), "backlog"),
        );
    }
    inst.start();
    kick(&inst, trigger::ARRIVED);
    assert!(
        wait(|| maildir(&inst, "jack").len() == n && maildir(&inst, "kate").len() == n),
        "{}",
        inst.log()
    );
    assert!(wait(|| inst.log_count(": removed") == n && queue_empty(&inst)));
    inst.stop();
}
