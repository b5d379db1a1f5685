//! Recipient look-ups on the hot path, through the whole pipeline (smtpd → cleanup → qmgr
//! → local, with auth): smtpd remembers for a few seconds only the mailboxes auth said
//! exist, and local keeps one auth connection per process with the same short memory.
//! These tests check that the memory never changes an answer that matters: many
//! messages to the same users all arrive, one copy each; an unknown user is refused and,
//! once added, is accepted by the same smtpd (a refusal is never remembered); and
//! deliveries go on after auth is killed under local's kept connection.

use postern_tests::*;
use std::path::PathBuf;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn instance(smtp_port: u16) -> Instance {
    let settings = [
        "minimal_backoff_time=1s",
        "maximal_backoff_time=2s",
        "queue_run_delay=1s",
    ];
    let inst = Instance::new(&pipeline_services(smtp_port), &settings);
    add_user(&inst, "alice", "alice-pw");
    add_user(&inst, "carol", "carol-pw");
    inst
}

fn maildir(inst: &Instance, user: &str) -> PathBuf {
    inst.root.path().join("var/mail").join(user)
}

/// Sends `n` messages to `rcpt`, one per SMTP connection (as the benchmark does), numbered
/// in their Subject; prints the number accepted.
fn send_many(port: u16, rcpt: &str, n: usize, tag: &str) -> String {
    python(&format!(
        "import smtplib\nok = 0\nfor i in range({n}):\n    s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n    \
         r = s.sendmail('bob@example.test', [{rcpt:?}], ('Subject: {tag} %d\\r\\n\\r\\nbody %d\\r\\n' % (i, i)).encode())\n    \
         s.quit()\n    ok += 0 if r else 1\nprint(ok)\n"
    ))
}

/// The RCPT TO reply code for `rcpt`, on a fresh connection.
fn rcpt_code(port: u16, rcpt: &str) -> String {
    python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\ns.ehlo('client.test')\n\
         s.mail('bob@example.test')\nprint(s.rcpt({rcpt:?})[0])\ns.quit()\n"
    ))
    .trim()
    .to_string()
}

/// The numbers in the `Subject: TAG N` headers of a Maildir's messages, sorted.
fn subjects(inst: &Instance, user: &str, tag: &str) -> Vec<usize> {
    let prefix = format!("Subject: {tag} ");
    let mut v: Vec<usize> = maildir_messages(&maildir(inst, user))
        .iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(m);
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix).and_then(|n| n.trim().parse().ok()))
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn repeated_recipients_all_arrive_and_a_refusal_is_not_remembered() {
    let port = free_port();
    let mut inst = instance(port);
    inst.start();

    assert_eq!(send_many(port, "alice@example.test", 30, "burst").trim(), "30");
    assert!(
        wait_for(LONG, || subjects(&inst, "alice", "burst").len() == 30),
        "{}",
        inst.log()
    );
    assert_eq!(
        subjects(&inst, "alice", "burst"),
        (0..30).collect::<Vec<_>>(),
        "each once"
    );

    // dave does not exist: refused at RCPT. Added, the same smtpd accepts him (auth sees
    // the new users file within its re-check interval; smtpd must not remember the 550).
    assert_eq!(rcpt_code(port, "dave@example.test"), "550");
    add_user(&inst, "dave", "dave-pw");
    assert!(
        wait_for(LONG, || rcpt_code(port, "dave@example.test") == "250"),
        "{}",
        inst.log()
    );
    assert_eq!(send_many(port, "dave@example.test", 3, "late").trim(), "3");
    assert!(
        wait_for(LONG, || subjects(&inst, "dave", "late").len() == 3),
        "{}",
        inst.log()
    );
    inst.stop();
}

#[test]
fn deliveries_go_on_after_auth_is_killed() {
    let port = free_port();
    let mut inst = instance(port);
    inst.start();

    assert_eq!(send_many(port, "alice@example.test", 10, "before").trim(), "10");
    assert!(
        wait_for(LONG, || subjects(&inst, "alice", "before").len() == 10),
        "{}",
        inst.log()
    );
    // Kill auth under the local processes' kept connections; master starts a new one on
    // the next connection to private/auth.
    let master = inst.master_pid();
    let auth: Vec<u32> = children_of(master)
        .into_iter()
        .filter(|p| proc_status(*p, "Name").as_deref() == Some("auth"))
        .collect();
    assert!(!auth.is_empty(), "auth is running");
    for p in &auth {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p as i32), nix::sys::signal::Signal::SIGKILL)
            .expect("kill auth");
    }
    assert!(wait_for(LONG, || auth.iter().all(|p| !alive(*p))));

    // carol was never looked up before, so every process has to ask the new auth.
    assert_eq!(send_many(port, "carol@example.test", 10, "after").trim(), "10");
    assert_eq!(send_many(port, "alice@example.test", 5, "after").trim(), "5");
    assert!(
        wait_for(LONG, || subjects(&inst, "carol", "after").len() == 10
            && subjects(&inst, "alice", "after").len() == 5),
        "{}",
        inst.log()
    );
    assert_eq!(subjects(&inst, "carol", "after"), (0..10).collect::<Vec<_>>());
    assert_eq!(subjects(&inst, "alice", "before"), (0..10).collect::<Vec<_>>());
    inst.stop();
}
