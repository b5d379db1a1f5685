//! Postern's maillog read by Postfix's own log analyser: a small load through the whole
//! shipped pipeline (smtpd → cleanup → qmgr → local / smtp → bounce), with local
//! deliveries, one recipient bounced by a remote 550, and one deferred by a remote 450;
//! then `pflogsumm` (Debian's package) summarises the maillog, and its counts of
//! received, delivered, deferred and bounced messages are exactly what the test did, and
//! its sender and byte statistics count the received mail.
//!
//! A second test checks the log of refusals: Postfix's `NOQUEUE: reject:` lines read by
//! pflogsumm's reject report and by fail2ban's `postfix` filter (`fail2ban-regex`).
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

/// fail2ban-regex (Debian's fail2ban), when installed.
const FAIL2BAN_REGEX: &str = "/usr/bin/fail2ban-regex";

/// The `Lines: N lines, I ignored, M matched, X missed` figure of fail2ban-regex: M.
fn f2b_matched(out: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.starts_with("Lines: "))?;
    let before = line.split(" matched").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Issue 10: every policy refusal leaves Postfix's `NOQUEUE: reject:` line (a refused
/// recipient, a relay attempt, a submission without login, a sender the login does not
/// own under the shipped submission settings), a failed AUTH Postfix's SASL warning; the
/// lines are exactly Postfix's shape, pflogsumm counts them as rejects with their reasons,
/// and fail2ban's own `postfix` filter (only its daemon name widened to `postern/...`, as
/// a site with another syslog_name does) finds the client address in each.
#[test]
fn rejections_are_logged_for_pflogsumm_and_fail2ban() {
    let (smtp_port, sub_port) = (free_port(), free_port());
    // The submission service exactly as etc/master.toml ships it, on a free port.
    let shipped = std::fs::read_to_string(repo_root().join("etc/master.toml")).expect("master.toml");
    let sub_options = shipped
        .lines()
        .find(|l| l.starts_with("options = { syslog_name = \"postern/submission\""))
        .expect("the shipped submission options");
    let mut services = pipeline_services(smtp_port);
    services.push_str(&daemon_service(
        "submission",
        "inet",
        &format!("127.0.0.1:{sub_port}"),
        "smtpd",
        sub_options,
    ));
    // Loopback is not trusted here, so relaying is refused.
    let mut inst = Instance::new(&services, &["mynetworks=[\"192.0.2.0/24\"]"]);
    std::fs::copy(
        repo_root().join("etc/sender_login_maps"),
        inst.etc().join("sender_login_maps"),
    )
    .expect("copy sender_login_maps");
    for u in ["alice", "bob"] {
        add_user(&inst, u, &format!("{u}-Pw-1"));
    }
    inst.start();

    let script = r#"
import smtplib, sys
smtp, sub = int(sys.argv[1]), int(sys.argv[2])
s = smtplib.SMTP('127.0.0.1', smtp, timeout=30, source_address=('127.0.0.11', 0))
s.ehlo('client.example')
s.mail('alice@example.org')
print('unknown', s.rcpt('nobody@example.test'))
print('relay', s.rcpt('x@elsewhere.example'))
s.quit()
s = smtplib.SMTP('127.0.0.1', sub, timeout=30, source_address=('127.0.0.12', 0))
s.ehlo('laptop.example')
s.mail('alice@example.test')
print('nologin', s.rcpt('bob@example.test'))
s.quit()
s = smtplib.SMTP('127.0.0.1', sub, timeout=30, source_address=('127.0.0.13', 0))
s.ehlo('laptop.example')
s.user, s.password = 'alice', 'wrong'
try:
    s.auth('PLAIN', s.auth_plain)
except smtplib.SMTPAuthenticationError as e:
    print('badpass', e.smtp_code)
s.quit()
s = smtplib.SMTP('127.0.0.1', sub, timeout=30, source_address=('127.0.0.14', 0))
s.ehlo('laptop.example')
s.login('alice', 'alice-Pw-1')
s.mail('ceo@example.test')
print('notowned', s.rcpt('bob@example.test'))
s.rset()
s.mail('alice+lists@example.test')
print('owned', s.rcpt('bob@example.test'))
print('data', s.data(b'Subject: mine\r\n\r\nhello\r\n')[0])
s.quit()
"#;
    let out = Command::new("python3")
        .args(["-c", script, &smtp_port.to_string(), &sub_port.to_string()])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "unknown (550, b'5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local recipient table')",
        "relay (554, b'5.7.1 <x@elsewhere.example>: Relay access denied')",
        "nologin (554, b'5.7.1 <unknown[127.0.0.12]>: Client host rejected: Access denied')",
        "badpass 535",
        "notowned (553, b'5.7.1 <ceo@example.test>: Sender address rejected: not owned by user alice')",
        "owned (250, b'2.1.5 Ok')",
        "data 250",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(wait_for(LONG, || inst.log_count(": removed") == 1), "{}", inst.log());
    inst.stop();
    let log = inst.log();
    // Exactly Postfix's shape, under Postfix's program names.
    for want in [
        "postern/smtpd[",
        "]: NOQUEUE: reject: RCPT from unknown[127.0.0.11]: 550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local recipient table; from=<alice@example.org> to=<nobody@example.test> proto=ESMTP helo=<client.example>\n",
        "]: NOQUEUE: reject: RCPT from unknown[127.0.0.11]: 554 5.7.1 <x@elsewhere.example>: Relay access denied; from=<alice@example.org> to=<x@elsewhere.example> proto=ESMTP helo=<client.example>\n",
        "postern/submission/smtpd[",
        "]: NOQUEUE: reject: RCPT from unknown[127.0.0.12]: 554 5.7.1 <unknown[127.0.0.12]>: Client host rejected: Access denied; from=<alice@example.test> to=<bob@example.test> proto=ESMTP helo=<laptop.example>\n",
        "]: warning: unknown[127.0.0.13]: SASL PLAIN authentication failed: authentication failure\n",
        "]: NOQUEUE: reject: RCPT from unknown[127.0.0.14]: 553 5.7.1 <ceo@example.test>: Sender address rejected: not owned by user alice; from=<ceo@example.test> to=<bob@example.test> proto=ESMTP helo=<laptop.example>\n",
    ] {
        assert!(log.contains(want), "missing {want:?} in the log:\n{log}");
    }
    assert_eq!(log.matches(": reject: ").count(), 4, "{log}");
    let maillog = inst.root.path().join("var/log/maillog");

    match pflogsumm() {
        None => {
            postern_tests::require_tool(PFLOGSUMM, "pflogsumm");
        }
        Some(p) => {
            let out = Command::new("perl")
                .arg(&p)
                .arg("--syslog-name=postern")
                .arg(&maillog)
                .output()
                .expect("run pflogsumm");
            let report = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{report}");
            assert_eq!(total(&report, "rejected"), Some(4), "{report}");
            let detail = report
                .split("message reject detail")
                .nth(1)
                .expect("a reject detail section")
                .split("\n\n\n")
                .next()
                .unwrap_or_default()
                .to_string();
            for reason in [
                "Recipient address rejected: User unknown in local recipient table",
                "Relay access denied",
                "Client host rejected: Access denied",
                "Sender address rejected: not owned by user alice",
            ] {
                assert!(
                    detail.contains(reason),
                    "{reason:?} not in the reject detail:\n{report}"
                );
            }
        }
    }

    if !postern_tests::require_tool(FAIL2BAN_REGEX, "fail2ban") {
        return;
    }
    // fail2ban's own filter files; only the daemon name is widened, in a .local file.
    let conf = inst.root.path().join("fail2ban");
    let filters = conf.join("filter.d");
    std::fs::create_dir_all(&filters).expect("mkdir filter.d");
    for f in ["postfix.conf", "common.conf"] {
        std::fs::copy(Path::new("/etc/fail2ban/filter.d").join(f), filters.join(f)).expect("copy filter");
    }
    std::fs::write(
        filters.join("postfix.local"),
        "[Definition]\n_daemon = postern(-\\w+)?/\\w+(?:/smtp[ds])?\n",
    )
    .expect("postfix.local");
    let run = |mode: &str| {
        let out = Command::new(FAIL2BAN_REGEX)
            .arg("--print-all-matched")
            .arg("-c")
            .arg(&conf)
            .arg(&maillog)
            .arg(format!("postfix[mode={mode}]"))
            .output()
            .expect("run fail2ban-regex");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    // The default mode: the unknown user, the relay attempt, the submission without login
    // (the 553 of a sender mismatch is not among Postfix's patterns either).
    let more = run("more");
    assert_eq!(f2b_matched(&more), Some(3), "{more}");
    for ip in ["127.0.0.11", "127.0.0.12"] {
        assert!(more.contains(&format!("unknown[{ip}]")), "{more}");
    }
    // The SASL failure (postfix-sasl's mode).
    let auth = run("auth");
    assert_eq!(f2b_matched(&auth), Some(1), "{auth}");
    assert!(auth.contains("unknown[127.0.0.13]: SASL PLAIN"), "{auth}");
}
