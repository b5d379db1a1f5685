//! DSN success notices (RFC 3461 NOTIFY=SUCCESS) through the whole pipeline: SMTP in with
//! Python's smtplib (ENVID, RET, NOTIFY, ORCPT) → cleanup → qmgr → local or the smtp client
//! → a test SMTP server on loopback (tests/scripts/smtp_sink.py). A local delivery gets the
//! (local) sender exactly one multipart/report, read by a real MIME parser (mail-parser),
//! with `Action: delivered`, `Status: 2.0.0`, the ENVID and the ORCPT; mail handed to a
//! server without DSN gets `Action: relayed`; a server that offers DSN sees NOTIFY=SUCCESS
//! on RCPT and no notice comes from us; NOTIFY=NEVER, no NOTIFY and the null sender get
//! none.

use mail_parser::{MessageParser, MimeHeaders};
use postern_tests::*;
use std::path::PathBuf;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
/// The bounce daemon's log line for a success notice it queued.
const NOTICE_LINE: &str = "sender delivery status notification:";

/// An instance of `services` whose other domains go to the relayhost on `relay_port`, with
/// users alice (the recipient) and bob (the sender).
fn instance(services: &str, relay_port: u16) -> Instance {
    let inst = Instance::new(
        services,
        &[
            &format!("relayhost=[127.0.0.1]:{relay_port}"),
            "minimal_backoff_time=1s",
            "maximal_backoff_time=2s",
            "queue_run_delay=1s",
        ],
    );
    add_user(&inst, "alice", "alice-pw");
    add_user(&inst, "bob", "bob-pw");
    inst
}

/// A started instance relaying to a test sink started with `sink_args`: the instance, its
/// SMTP port, the sink's directory and the sink.
fn started(sink_args: &[&str]) -> (Instance, u16, tempfile::TempDir, Helper) {
    let smtp_port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, relay_port) = sink_with_args(dir.path(), sink_args);
    let mut inst = instance(&pipeline_services(smtp_port), relay_port);
    inst.start();
    (inst, smtp_port, dir, sink)
}

fn mailbox(inst: &Instance, user: &str) -> PathBuf {
    inst.root.path().join("var/mail").join(user)
}

/// One SMTP transaction with smtplib: MAIL FROM with `mail_opts`, one RCPT per
/// (address, options), the message; fails the test on any refusal.
fn send(port: u16, sender: &str, mail_opts: &[&str], rcpts: &[(&str, &[&str])], subject: &str) {
    let rcpt_calls: String = rcpts
        .iter()
        .map(|(addr, opts)| format!("c, r = s.rcpt({addr:?}, {opts:?})\nassert c == 250, (c, r)\n"))
        .collect();
    let to: Vec<&str> = rcpts.iter().map(|(a, _)| *a).collect();
    let msg = format!(
        "From: {sender}\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nplease confirm\r\n",
        to.join(", ")
    );
    python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\ns.ehlo('client.test')\n\
         assert s.has_extn('dsn')\nc, r = s.mail({sender:?}, {mail_opts:?})\nassert c == 250, (c, r)\n\
         {rcpt_calls}c, r = s.data({msg:?}.encode())\nassert c == 250, (c, r)\ns.quit()\n"
    ));
}

/// The RCPT commands the test sink in `dir` received, as sent.
fn rcpt_commands(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("commands"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("RCPT "))
        .map(str::to_string)
        .collect()
}

/// Waits until qmgr has removed `n` messages in all (originals and notices), so that
/// whatever notice is coming has been queued and delivered.
fn settle(inst: &Instance, n: usize) {
    assert!(
        wait_for(LONG, || inst.log_count(": removed") >= n),
        "fewer than {n} messages finished:\n{}",
        inst.log()
    );
    for q in ["incoming", "active", "deferred"] {
        assert!(
            files_below(&inst.queue().join(q)).is_empty(),
            "{q}/ is not empty:\n{}",
            inst.log()
        );
    }
    assert!(
        files_below(&inst.queue().join("trace")).is_empty(),
        "trace log left behind"
    );
}

/// The delivery-status part of a report, after checking it is a multipart/report from
/// the null sender with the original's header only.
fn status_of(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    assert!(text.starts_with("Return-Path: <>"), "{text}");
    let m = MessageParser::default()
        .parse(raw)
        .expect("mail-parser reads the report");
    let ct = m.content_type().expect("content type");
    assert_eq!(
        (ct.ctype(), ct.subtype(), ct.attribute("report-type")),
        ("multipart", Some("report"), Some("delivery-status")),
        "{text}"
    );
    assert_eq!(m.subject(), Some("Successful Mail Delivery Report"));
    assert_eq!(m.parts.len(), 4, "the multipart and its three parts:\n{text}");
    let returned = m.parts[3].content_type().expect("returned part");
    assert_eq!(
        (returned.ctype(), returned.subtype()),
        ("text", Some("rfc822-headers")),
        "success notices carry the header only, whatever RET says"
    );
    assert!(!String::from_utf8_lossy(m.parts[3].contents()).contains("please confirm"));
    String::from_utf8_lossy(m.parts[2].contents()).into_owned()
}

#[test]
fn local_delivery_gets_one_delivered_notice_with_envid_and_orcpt() {
    let (mut inst, smtp_port, _dir, _sink) = started(&[]);
    send(
        smtp_port,
        "bob@example.test",
        &["RET=FULL", "ENVID=QQ314159"],
        &[(
            "alice@example.test",
            &["NOTIFY=SUCCESS", "ORCPT=rfc822;alice@example.test"],
        )],
        "local-success",
    );
    settle(&inst, 2);
    let got = maildir_messages(&mailbox(&inst, "alice"));
    assert_eq!(got.len(), 1, "alice gets the message");
    assert!(String::from_utf8_lossy(&got[0]).contains("please confirm"));
    let reports = maildir_messages(&mailbox(&inst, "bob"));
    assert_eq!(reports.len(), 1, "exactly one notice:\n{}", inst.log());
    let status = status_of(&reports[0]);
    for want in [
        "Original-Envelope-Id: QQ314159\n",
        "Final-Recipient: rfc822; alice@example.test\n",
        "Original-Recipient: rfc822; alice@example.test\n",
        "Action: delivered\n",
        "Status: 2.0.0\n",
    ] {
        assert!(status.contains(want), "{want:?} missing in:\n{status}");
    }
    assert_eq!(inst.log_count(NOTICE_LINE), 1);
    assert_eq!(inst.log_count("cannot "), 0, "{}", inst.log());
    inst.stop();
}

#[test]
fn relayed_to_a_server_without_dsn_gets_a_relayed_notice() {
    let (mut inst, smtp_port, dir, _sink) = started(&[]);
    send(
        smtp_port,
        "bob@example.test",
        &["ENVID=relay-7"],
        &[(
            "carol@remote.test",
            &["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Carol@remote.test"],
        )],
        "relay-success",
    );
    settle(&inst, 2);
    assert_eq!(sink_messages(dir.path()).len(), 1, "the sink got the message");
    let rcpt = rcpt_commands(dir.path());
    assert_eq!(
        rcpt,
        ["RCPT TO:<carol@remote.test>"],
        "no DSN parameters to a server without DSN"
    );
    let reports = maildir_messages(&mailbox(&inst, "bob"));
    assert_eq!(reports.len(), 1, "exactly one notice:\n{}", inst.log());
    let status = status_of(&reports[0]);
    for want in [
        "Original-Envelope-Id: relay-7\n",
        "Final-Recipient: rfc822; carol@remote.test\n",
        "Original-Recipient: rfc822; Carol@remote.test\n",
        "Action: relayed\n",
        "Status: 2.0.0\n",
        "Remote-MTA: dns; 127.0.0.1\n",
    ] {
        assert!(status.contains(want), "{want:?} missing in:\n{status}");
    }
    inst.stop();
}

#[test]
fn a_server_with_dsn_gets_notify_onward_and_we_send_nothing() {
    let (mut inst, smtp_port, dir, _sink) = started(&["--dsn"]);
    send(
        smtp_port,
        "bob@example.test",
        &["ENVID=onward-1"],
        &[(
            "carol@remote.test",
            &["NOTIFY=SUCCESS", "ORCPT=rfc822;carol@remote.test"],
        )],
        "dsn-onward",
    );
    settle(&inst, 1);
    assert_eq!(sink_messages(dir.path()).len(), 1, "the sink got the message");
    assert_eq!(
        rcpt_commands(dir.path()),
        ["RCPT TO:<carol@remote.test> NOTIFY=SUCCESS ORCPT=rfc822;carol@remote.test"],
        "NOTIFY and ORCPT passed onward"
    );
    assert_eq!(inst.log_count(NOTICE_LINE), 0, "{}", inst.log());
    assert!(maildir_messages(&mailbox(&inst, "bob")).is_empty());
    inst.stop();
}

#[test]
fn local_and_relayed_recipients_of_one_message_get_both_notices() {
    let (mut inst, smtp_port, dir, _sink) = started(&[]);
    send(
        smtp_port,
        "bob@example.test",
        &[],
        &[
            ("alice@example.test", &["NOTIFY=SUCCESS"]),
            ("carol@remote.test", &["NOTIFY=SUCCESS"]),
        ],
        "mixed-success",
    );
    settle(&inst, 3);
    assert_eq!(maildir_messages(&mailbox(&inst, "alice")).len(), 1);
    assert_eq!(sink_messages(dir.path()).len(), 1);
    let reports = maildir_messages(&mailbox(&inst, "bob"));
    assert_eq!(reports.len(), 2, "one delivered, one relayed:\n{}", inst.log());
    let mut actions: Vec<String> = reports
        .iter()
        .map(|r| {
            let s = status_of(r);
            let action = s.lines().find(|l| l.starts_with("Action: ")).unwrap_or("").to_string();
            let rcpt = s.lines().find(|l| l.starts_with("Final-Recipient: ")).unwrap_or("");
            format!("{action} {rcpt}")
        })
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "Action: delivered Final-Recipient: rfc822; alice@example.test",
            "Action: relayed Final-Recipient: rfc822; carol@remote.test",
        ]
    );
    inst.stop();
}

#[test]
fn never_no_notify_and_the_null_sender_get_no_notice() {
    let (mut inst, smtp_port, _dir, _sink) = started(&[]);
    send(
        smtp_port,
        "bob@example.test",
        &[],
        &[("alice@example.test", &["NOTIFY=NEVER"])],
        "never",
    );
    send(
        smtp_port,
        "bob@example.test",
        &[],
        &[("alice@example.test", &[])],
        "unspecified",
    );
    send(
        smtp_port,
        "",
        &[],
        &[("alice@example.test", &["NOTIFY=SUCCESS"])],
        "null-sender",
    );
    settle(&inst, 3);
    assert_eq!(
        maildir_messages(&mailbox(&inst, "alice")).len(),
        3,
        "all three delivered"
    );
    assert!(maildir_messages(&mailbox(&inst, "bob")).is_empty());
    assert_eq!(inst.log_count(NOTICE_LINE), 0, "{}", inst.log());
    inst.stop();
}

#[test]
fn the_notice_waits_in_the_trace_log_until_the_bounce_service_is_back() {
    let smtp_port = free_port();
    let bounce = daemon_service("bounce", "unix", "", "bounce", "maxproc = 2");
    let all = pipeline_services(smtp_port);
    let without = all.replace(&bounce, "");
    assert_ne!(all, without, "the pipeline has a bounce service to take away");
    let mut inst = instance(&without, free_port());
    inst.start();
    send(
        smtp_port,
        "bob@example.test",
        &[],
        &[("alice@example.test", &["NOTIFY=SUCCESS"])],
        "no-bounce-yet",
    );
    assert!(
        wait_for(LONG, || inst.log_count("cannot send notification") >= 2),
        "{}",
        inst.log()
    );
    // Delivered, but not retired: the message and its owed notice are still on disk.
    assert_eq!(maildir_messages(&mailbox(&inst, "alice")).len(), 1);
    assert_eq!(files_below(&inst.queue().join("trace")).len(), 1, "the trace log");
    assert_eq!(
        ["active", "deferred"]
            .iter()
            .map(|q| files_below(&inst.queue().join(q)).len())
            .sum::<usize>(),
        1,
        "the message waits:\n{}",
        inst.log()
    );
    assert_eq!(inst.log_count(": removed"), 0);

    // The bounce service comes back: the notice goes out once and the message is retired.
    std::fs::write(inst.etc().join("master.toml"), format!("# test services\n{all}")).expect("master.toml");
    let out = inst.postern(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    settle(&inst, 2);
    let reports = maildir_messages(&mailbox(&inst, "bob"));
    assert_eq!(reports.len(), 1, "exactly one notice:\n{}", inst.log());
    assert!(status_of(&reports[0]).contains("Action: delivered\n"));
    assert_eq!(maildir_messages(&mailbox(&inst, "alice")).len(), 1, "delivered once");
    inst.stop();
}
