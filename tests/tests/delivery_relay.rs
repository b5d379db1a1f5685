//! The whole pipeline for mail to other hosts: SMTP in → cleanup → qmgr → the smtp client
//! → a real SMTP server on loopback (tests/scripts/smtp_sink.py) as the relayhost; a 4xx
//! from it defers and the message is delivered on a later retry; a 5xx comes back to the
//! sender's Maildir as a non-delivery report that a real MIME parser reads as a
//! multipart/report with the right status.

use mail_parser::{MessageParser, MimeHeaders};
use postern_tests::*;
use std::path::Path;

use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn eml_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                .count()
        })
        .unwrap_or(0)
}

fn instance(smtp_port: u16, relay_port: u16) -> Instance {
    let inst = Instance::new(
        &pipeline_services(smtp_port),
        &[
            &format!("relayhost=[127.0.0.1]:{relay_port}"),
            "minimal_backoff_time=1s",
            "maximal_backoff_time=2s",
            "queue_run_delay=1s",
        ],
    );
    add_user(&inst, "alice", "alice-pw");
    inst
}

#[test]
fn relayed_to_the_relayhost_and_4xx_is_retried_until_delivered() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = instance(smtp_port, relay_port);
    let msgs = inst.root.path().join("sink");
    inst.start();
    let busy = sink(&msgs, relay_port, 450);
    let msg = "From: alice@example.test\r\nTo: carol@remote.test\r\nSubject: relay\r\nMessage-ID: <relay.1@example.test>\r\n\r\nhello there\r\n";
    smtplib_send(smtp_port, "alice@example.test", &["carol@remote.test"], msg);
    assert!(
        wait_for(LONG, || inst.log_count("status=deferred") >= 1),
        "{}",
        inst.log()
    );
    assert_eq!(eml_count(&msgs), 0);
    drop(busy);
    let _ok = sink(&msgs, relay_port, 250);
    assert!(
        wait_for(LONG, || eml_count(&msgs) == 1),
        "not delivered after retry:\n{}",
        inst.log()
    );
    let got = std::fs::read_to_string(
        std::fs::read_dir(&msgs)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".eml"))
            .unwrap()
            .path(),
    )
    .unwrap();
    assert!(
        got.starts_with("X-Sink-From: <alice@example.test>\r\nX-Sink-To: <carol@remote.test>\r\n"),
        "{got}"
    );
    assert!(
        got.contains("Subject: relay\r\n") && got.ends_with("\r\nhello there\r\n"),
        "{got}"
    );
    assert!(
        got.contains("Received: from "),
        "smtpd's Received header travels along: {got}"
    );
    assert!(wait_for(LONG, || inst
        .log()
        .contains(&format!("relay=127.0.0.1[127.0.0.1]:{relay_port}"))));
    assert!(wait_for(LONG, || inst.log_count(": removed") >= 1));
}

#[test]
fn a_5xx_comes_back_as_a_report_in_the_senders_maildir() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = instance(smtp_port, relay_port);
    let msgs = inst.root.path().join("sink");
    inst.start();
    let _nouser = sink(&msgs, relay_port, 550);
    let msg = "From: alice@example.test\r\nTo: nobody@remote.test\r\nSubject: doomed\r\nMessage-ID: <doomed.1@example.test>\r\n\r\nthis will bounce\r\n";
    smtplib_send(smtp_port, "alice@example.test", &["nobody@remote.test"], msg);
    let alice = inst.root.path().join("var/mail/alice");
    assert!(
        wait_for(LONG, || !maildir_messages(&alice).is_empty()),
        "no report:\n{}",
        inst.log()
    );
    let reports = maildir_messages(&alice);
    assert_eq!(reports.len(), 1);
    let m = MessageParser::default()
        .parse(&reports[0])
        .expect("mail-parser reads the report");
    let ct = m.content_type().expect("content type");
    assert_eq!(
        (ct.ctype(), ct.subtype(), ct.attribute("report-type")),
        ("multipart", Some("report"), Some("delivery-status"))
    );
    let status = String::from_utf8_lossy(m.parts[2].contents()).into_owned();
    assert!(
        status.contains("Final-Recipient: rfc822; nobody@remote.test"),
        "{status}"
    );
    assert!(
        status.contains("Action: failed") && status.contains("Status: 5.1.1"),
        "{status}"
    );
    assert!(
        status.contains("Remote-MTA: dns; 127.0.0.1\nDiagnostic-Code: smtp; 550 5.1.1 No such user here"),
        "{status}"
    );
    assert_eq!(m.parts[3].message().and_then(|o| o.subject()), Some("doomed"));
    // The report came from the null sender, and the bounced message is gone.
    let raw = String::from_utf8_lossy(&reports[0]);
    assert!(raw.starts_with("Return-Path: <>"), "{raw}");
    assert!(wait_for(LONG, || inst.log_count(": removed") == 2), "{}", inst.log());
    assert!(
        std::fs::read_dir(inst.queue().join("bounce")).unwrap().next().is_none(),
        "bounce log left behind"
    );
}
