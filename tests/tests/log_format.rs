//! Postern's maillog read by Postfix's own log analyser: a small load through the whole
//! shipped pipeline (smtpd → cleanup → qmgr → local / smtp → bounce), with local
//! deliveries, one recipient bounced by a remote 550, and one deferred by a remote 450;
//! then `pflogsumm` (Debian's package) summarises the maillog, and its counts of
//! received, delivered, deferred and bounced messages are exactly what the test did, and
//! its sender and byte statistics count the received mail.
//!
//! pflogsumm takes only lines whose program name is `postfix/...` or `<syslog-name>/...`;
//! Postern logs as `postern/<daemon>[pid]`, so it is run with `--syslog-name=postern`
//! (the option Postfix sites with a non-default `syslog_name` use). Skipped, with a
//! message, when pflogsumm is not installed (`.ci/install-packages` installs it).

use postern_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const PFLOGSUMM: &str = "/usr/sbin/pflogsumm";

fn pflogsumm() -> Option<String> {
    if let Ok(p) = std::env::var("PFLOGSUMM") {
        return Some(p);
    }
    if Path::new(PFLOGSUMM).exists() {
        return Some(PFLOGSUMM.into());
    }
    None
}

/// The number in front of `label` in pflogsumm's "Grand Totals" (`      5   received`).
fn total(report: &str, label: &str) -> Option<u64> {
    report.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let n = words.next()?.parse().ok()?;
        (words.next()? == label).then_some(n)
    })
}

fn message(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nbody of {subject}\r\n"
    )
}

#[test]
fn pflogsumm_counts_match_the_load() {
    let Some(pflogsumm) = pflogsumm() else {
        postern_tests::require_tool(PFLOGSUMM, "pflogsumm");
        return;
    };
    let (smtp_port, bounce_port, defer_port) = (free_port(), free_port(), free_port());
    // The shipped pipeline as it is: smtpd logs as `postern/smtpd` (syslog_name/command,
    // as Postfix does), which pflogsumm reads with `--syslog-name=postern`.
    let services = pipeline_services(smtp_port);
    let mut inst = Instance::new(
        &services,
        &[
            "transport_maps=[\"transport\"]",
            // One deferral only: the retry is an hour away.
            "minimal_backoff_time=3600s",
            "maximal_backoff_time=3600s",
        ],
    );
    std::fs::write(
        inst.etc().join("transport"),
        format!("bounce.test smtp:[127.0.0.1]:{bounce_port}\ndefer.test smtp:[127.0.0.1]:{defer_port}\n"),
    )
    .expect("transport");
    for u in ["alice", "bob", "carol"] {
        add_user(&inst, u, &format!("{u}-pw"));
    }
    let sinks = inst.root.path().join("sink");
    inst.start();
    let _reject = sink(&sinks, bounce_port, 550);
    let _busy = sink(&sinks, defer_port, 450);

    // Three messages, four local recipients.
    let local: [(&str, &[&str]); 3] = [
        ("m1", &["bob@example.test"]),
        ("m2", &["bob@example.test", "carol@example.test"]),
        ("m3", &["carol@example.test"]),
    ];
    for (subject, rcpts) in local {
        smtplib_send(
            smtp_port,
            "alice@example.test",
            rcpts,
            &message("alice@example.test", &rcpts.join(", "), subject),
        );
    }
    // One bounced by the remote server (its report goes to alice: one more delivery).
    smtplib_send(
        smtp_port,
        "alice@example.test",
        &["nobody@bounce.test"],
        &message("alice@example.test", "nobody@bounce.test", "m4"),
    );
    // One deferred by the remote server.
    smtplib_send(
        smtp_port,
        "alice@example.test",
        &["later@defer.test"],
        &message("alice@example.test", "later@defer.test", "m5"),
    );

    // m1-m4 and the report are removed; m5 stays deferred.
    assert!(
        wait_for(LONG, || inst.log_count(": removed") == 5
            && inst.log_count("status=deferred") == 1),
        "{}",
        inst.log()
    );
    assert_eq!(maildir_messages(&inst.root.path().join("var/mail/bob")).len(), 2);
    assert_eq!(maildir_messages(&inst.root.path().join("var/mail/carol")).len(), 2);
    assert_eq!(maildir_messages(&inst.root.path().join("var/mail/alice")).len(), 1);
    inst.stop();

    let maillog = inst.root.path().join("var/log/maillog");
    let out = Command::new("perl")
        .arg(&pflogsumm)
        .arg("--syslog-name=postern")
        .arg(&maillog)
        .output()
        .expect("run pflogsumm");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pflogsumm failed: {}\n{report}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    let counts = (
        total(&report, "received"),
        total(&report, "delivered"),
        total(&report, "deferred"),
        total(&report, "bounced"),
    );
    // Received: the five messages smtpd took in (a report made by the bounce daemon is
    // not "received", as in Postfix). Delivered: four local recipients plus the report.
    assert_eq!(
        counts,
        (Some(5), Some(5), Some(1), Some(1)),
        "pflogsumm report:\n{report}\nmaillog:\n{}",
        inst.log()
    );
    // smtpd's `ID: client=` line comes before qmgr's `from=<...>, size=...` line (cleanup
    // names the queue ID when the message begins), so the sender and size statistics count
    // the five received messages: one sender, and their bytes.
    assert_eq!(total(&report, "senders"), Some(1), "{report}");
    let bytes = report
        .lines()
        .find(|l| l.trim_end().ends_with("bytes received"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("0");
    assert_ne!(bytes, "0", "bytes received counted:\n{report}");
    // The details name the right destinations and reasons.
    assert!(report.contains("example.test"), "{report}");
    assert!(
        report.contains("defer.test") || report.contains("127.0.0.1"),
        "{report}"
    );
}
