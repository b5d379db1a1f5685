//! local's mailbox formats through the whole pipeline (SMTP in → cleanup → qmgr → local):
//! with `mailbox_format = "mbox"` a virtual user's mailbox is one mbox file — in
//! `virtual_mailbox_base/<user>`, or in `mail_spool_directory/<user>` when that is set —
//! with a `From ` line per message, `>From ` escaping of `From ` at a line start (Postfix's
//! mboxo rule: `>From` is left alone), `Return-Path:`/`Delivered-To:` and
//! a blank line after each message, read back by Python's `mailbox.mbox`; the dot-lock is
//! gone afterwards. Maildir stays the default.

use postern_tests::*;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn instance(smtp_port: u16, extra: &[&str]) -> Instance {
    let mut settings = vec![
        "minimal_backoff_time=1s",
        "maximal_backoff_time=2s",
        "queue_run_delay=1s",
    ];
    settings.extend_from_slice(extra);
    let inst = Instance::new(&pipeline_services(smtp_port), &settings);
    add_user(&inst, "alice", "alice-pw");
    add_user(&inst, "bob", "bob-pw");
    inst
}

/// Sends the two test messages to alice (and the second also to bob).
fn send_two(port: u16) {
    let first = "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: one\r\nMessage-ID: <mbox.1@example.test>\r\n\r\nFrom the start of a line\r\n>From already quoted\r\nnot From here\r\n";
    let second = "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: two\r\nMessage-ID: <mbox.2@example.test>\r\n\r\nsecond body\r\n";
    assert_eq!(
        smtplib_send(port, "bob@example.test", &["alice@example.test"], first).trim(),
        "{}"
    );
    assert_eq!(
        smtplib_send(
            port,
            "bob@example.test",
            &["alice@example.test", "bob@example.test"],
            second
        )
        .trim(),
        "{}"
    );
}

/// What Python's mailbox module reads from the mbox at `path`: per message its `From `
/// line, Subject and body, one line each (JSON).
fn python_mbox(path: &Path) -> String {
    python(&format!(
        "import mailbox, json\n\
         for m in mailbox.mbox({:?}, create=False):\n\
         \x20   print(json.dumps([m.get_from().split('  ')[0], m['Subject'], m['Return-Path'], m['Delivered-To'], m.get_payload()]))\n",
        path.display().to_string()
    ))
}

fn check_alice(text: &str, py: &str) {
    let froms = text.lines().filter(|l| l.starts_with("From ")).count();
    assert_eq!(froms, 2, "{text}");
    assert!(text.starts_with("From bob@example.test  "), "{text}");
    assert!(
        text.contains("\n\n>From the start of a line\n>From already quoted\nnot From here\n\nFrom bob@example.test  "),
        "escaped body and the blank line between messages: {text:?}"
    );
    assert!(text.ends_with("\n\nsecond body\n\n"), "{text:?}");
    assert_eq!(
        py.lines().collect::<Vec<_>>(),
        [
            r#"["bob@example.test", "one", "<bob@example.test>", "alice@example.test", ">From the start of a line\n>From already quoted\nnot From here\n"]"#,
            r#"["bob@example.test", "two", "<bob@example.test>", "alice@example.test", "second body\n"]"#,
        ],
        "{py}"
    );
}

#[test]
fn mbox_in_the_mailbox_base() {
    let port = free_port();
    let mut inst = instance(port, &["mailbox_format=mbox"]);
    inst.start();
    send_two(port);
    let base = inst.root.path().join("var/mail");
    let (alice, bob) = (base.join("alice"), base.join("bob"));
    assert!(
        wait_for(LONG, || inst.log_count("status=sent (delivered to mailbox)") == 3),
        "{}",
        inst.log()
    );
    assert!(alice.is_file() && bob.is_file(), "mbox files, not Maildirs");
    let text = std::fs::read_to_string(&alice).expect("alice's mbox");
    check_alice(&text, &python_mbox(&alice));
    let bob_text = std::fs::read_to_string(&bob).expect("bob's mbox");
    assert_eq!(bob_text.lines().filter(|l| l.starts_with("From ")).count(), 1);
    assert!(bob_text.contains("\nDelivered-To: bob@example.test\n"), "{bob_text}");
    assert!(!base.join("alice.lock").exists() && !base.join("bob.lock").exists());
    assert!(wait_for(LONG, || inst.log_count(": removed") == 2), "{}", inst.log());
}

#[test]
fn mbox_in_the_mail_spool_directory_and_a_stale_lock_taken_over() {
    let port = free_port();
    let mut inst = instance(
        port,
        &[
            "mailbox_format=mbox",
            "mail_spool_directory=var/spool/mail",
            "stale_lock_time=1s",
        ],
    );
    let spool = inst.root.path().join("var/spool/mail");
    std::fs::create_dir_all(&spool).expect("mkdir spool");
    // A lock left by a crashed writer long ago: taken over (its age is past stale_lock_time).
    let lock = spool.join("alice.lock");
    std::fs::write(&lock, "12345\n").expect("write lock");
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&lock)
        .and_then(|f| f.set_modified(old))
        .expect("age the lock");
    if is_root() {
        let st = std::process::Command::new("chown")
            .arg("-R")
            .arg("postern:")
            .arg(inst.root.path().join("var/spool"))
            .status()
            .expect("chown");
        assert!(st.success());
    }
    inst.start();
    send_two(port);
    let alice = spool.join("alice");
    assert!(
        wait_for(LONG, || inst.log_count("status=sent (delivered to mailbox)") == 3),
        "{}",
        inst.log()
    );
    let text = std::fs::read_to_string(&alice).expect("alice's mbox");
    check_alice(&text, &python_mbox(&alice));
    assert!(inst.log().contains("removing stale lock file"), "{}", inst.log());
    assert!(!lock.exists());
    assert!(
        !inst.root.path().join("var/mail/alice").exists(),
        "nothing in the Maildir base"
    );
}

#[test]
fn maildir_stays_the_default() {
    let port = free_port();
    let mut inst = instance(port, &[]);
    inst.start();
    send_two(port);
    let alice = inst.root.path().join("var/mail/alice");
    assert!(wait_for(LONG, || maildir_messages(&alice).len() == 2), "{}", inst.log());
    let all = maildir_messages(&alice);
    let first = String::from_utf8_lossy(&all[0]);
    assert!(
        first.contains("\nFrom the start of a line") || first.contains("\nSubject: two"),
        "Maildir files are not escaped: {first}"
    );
}
