//! `postern log`: one message's timeline from the real mail log of a running pipeline.
//!
//! Two messages go through one SMTP session to a local user; `postern log ID` prints the
//! first one's smtpd → cleanup → qmgr → local → qmgr lines in log order and none of the
//! second's; `--message-id` finds the same lines; `--follow` on a finished message ends.
//! Queue-ID reuse cannot be forced on Postern (its IDs are unique across restarts), so
//! the lifetime logic is checked by appending a second, synthetic lifetime of the same ID
//! to the real log (and by the unit tests of postern/src/log_cmd.rs).

use std::io::Write as _;
use std::process::Output;
use std::time::{Duration, Instant};

use postern_tests::*;

const LONG: Duration = Duration::from_secs(60);

fn log_cmd(inst: &Instance, args: &[&str]) -> Output {
    inst.postern(&[&["log"][..], args].concat())
}

/// The queue ID of the message whose Message-ID is `<mid>`, from cleanup's line.
fn queue_id_of(log: &str, mid: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("message-id=<{mid}>")))
        .expect("cleanup line");
    line.split(": ").nth(1).expect("queue id").to_string()
}

#[test]
fn timeline_of_one_message_in_order() {
    let smtp_port = free_port();
    let mut inst = Instance::new(&pipeline_services(smtp_port), &[]);
    add_user(&inst, "bob", "bob-pw");
    inst.start();
    // Two messages in one session, so smtpd's connect line is shared.
    python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {smtp_port}, timeout=30)\n\
         for n in ('t1', 't2'):\n    s.sendmail('alice@example.test', ['bob@example.test'], \
         ('From: alice@example.test\\r\\nSubject: %s\\r\\nMessage-ID: <%s@example.test>\\r\\n\\r\\nbody\\r\\n' % (n, n)).encode())\n\
         s.quit()\n"
    ));
    assert!(
        wait_for(LONG, || inst.log_count(": removed") == 2
            && inst.log_count("disconnect from") == 1),
        "both delivered; log:\n{}",
        inst.log()
    );
    let log = inst.log();
    let (a, b) = (
        queue_id_of(&log, "t1@example.test"),
        queue_id_of(&log, "t2@example.test"),
    );

    let out = log_cmd(&inst, &[&a]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    // In order: smtpd's connect, smtpd client=, cleanup message-id=, qmgr from=, local
    // status=sent, qmgr removed (smtpd's disconnect goes with the session's last message).
    let steps = [
        ("postern/smtpd[", "connect from "),
        ("postern/smtpd[", &format!("{a}: client=")),
        ("postern/cleanup[", &format!("{a}: message-id=<t1@example.test>")),
        ("postern/qmgr[", &format!("{a}: from=<alice@example.test>")),
        ("postern/local[", &format!("{a}: to=<bob@example.test>, relay=local")),
        ("postern/qmgr[", &format!("{a}: removed")),
    ];
    let mut at = 0;
    for (program, needle) in steps {
        let found = lines[at..]
            .iter()
            .position(|l| l.contains(program) && l.contains(needle))
            .unwrap_or_else(|| panic!("{program} {needle:?} after line {at} in:\n{text}"));
        at += found + 1;
    }
    assert!(
        lines.iter().all(|l| !l.contains(&b)),
        "the other message's lines:\n{text}"
    );
    assert!(!text.contains("t2@example.test"), "{text}");
    assert!(text.contains("status=sent"), "{text}");
    // Nothing but the message's lines and its session's connect.
    assert!(
        lines.iter().all(|l| l.contains(&a) || l.contains("connect from")),
        "{text}"
    );

    // The same lines by Message-ID, with or without the brackets.
    for mid in ["t1@example.test", "<t1@example.test>"] {
        let out = log_cmd(&inst, &["--message-id", mid]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), text, "--message-id {mid}");
    }
    // The second message: its own lines, and the session's disconnect.
    let out = String::from_utf8_lossy(&log_cmd(&inst, &[&b]).stdout).into_owned();
    assert!(out.contains(&format!("{b}: removed")) && out.contains("disconnect from") && !out.contains(&a));

    // --follow on a message already removed prints and ends.
    let started = Instant::now();
    let out = log_cmd(&inst, &["--follow", &a]);
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);

    // Unknown IDs and bad arguments: one line, exit 1.
    let out = log_cmd(&inst, &["AAAAAAAAAAAAAAAA"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in"));
    let out = log_cmd(&inst, &["../etc/passwd"]);
    assert_eq!(out.status.code(), Some(1));

    // A reused ID: a second lifetime appended to the log is what is shown by default;
    // --all shows both, each under its heading.
    let log_path = inst.root.path().join("var/log/maillog");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log_path).expect("log");
    writeln!(
        f,
        "Dec  6 23:59:00 vm postern/smtpd[99999]: connect from reuse[192.0.2.9]"
    )
    .unwrap();
    writeln!(
        f,
        "Dec  6 23:59:00 vm postern/smtpd[99999]: {a}: client=reuse[192.0.2.9]"
    )
    .unwrap();
    writeln!(f, "Dec  6 23:59:01 vm postern/qmgr[99998]: {a}: removed").unwrap();
    drop(f);
    let out = log_cmd(&inst, &[&a]);
    let latest = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(latest.lines().count(), 3, "{latest}");
    assert!(latest.contains("reuse[192.0.2.9]") && !latest.contains("t1@example.test"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was used 2 times"));
    let out = log_cmd(&inst, &["--all", &a]);
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(all.starts_with(&format!("-- {a}: lifetime 1 of 2 --\n")), "{all}");
    assert!(all.contains(&format!("-- {a}: lifetime 2 of 2 --\n")), "{all}");
    assert!(all.contains("t1@example.test") && all.contains("reuse[192.0.2.9]"));
    // By Message-ID: the lifetime that carried it, not the later one.
    let out = log_cmd(&inst, &["--message-id", "t1@example.test"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);
}
