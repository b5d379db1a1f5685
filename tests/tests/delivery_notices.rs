//! Delay warnings (`delay_warning_time`) through the whole pipeline: SMTP in → cleanup →
//! qmgr → the smtp client → a real SMTP server on loopback (tests/scripts/smtp_sink.py)
//! that answers 450. Once the message has been queued longer than delay_warning_time, the
//! (local) sender gets exactly one delay report in her Maildir, which a real MIME parser
//! (mail-parser) reads as a multipart/report with `Action: delayed`; the message stays
//! queued through further retries without a second warning, and is delivered once the
//! remote server accepts it, its `defer/<ID>.warned` marker removed with it.

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

/// The queue ID of qmgr's first log line containing `needle`.
fn queue_id_of(inst: &Instance, needle: &str) -> String {
    let log = inst.log();
    log.lines()
        .filter(|l| l.contains("postern/qmgr[") && l.contains(needle))
        .find_map(|l| l.split("]: ").nth(1)?.split(':').next().map(str::to_string))
        .unwrap_or_else(|| panic!("no qmgr line with {needle:?}:\n{log}"))
}

#[test]
fn one_delay_warning_then_delivery() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = Instance::new(
        &pipeline_services(smtp_port),
        &[
            &format!("relayhost=[127.0.0.1]:{relay_port}"),
            "minimal_backoff_time=1s",
            "maximal_backoff_time=1s",
            "queue_run_delay=1s",
            "delay_warning_time=2s",
        ],
    );
    add_user(&inst, "alice", "alice-pw");
    let msgs = inst.root.path().join("sink");
    inst.start();
    let busy = sink(&msgs, relay_port, 450);
    let msg = "From: alice@example.test\r\nTo: carol@remote.test\r\nSubject: slowpoke\r\nMessage-ID: <slow.1@example.test>\r\n\r\nstill coming\r\n";
    smtplib_send(smtp_port, "alice@example.test", &["carol@remote.test"], msg);

    let alice = inst.root.path().join("var/mail/alice");
    assert!(
        wait_for(LONG, || !maildir_messages(&alice).is_empty()),
        "no delay report:\n{}",
        inst.log()
    );
    // The message is still queued, and its marker says the warning went out.
    let id = queue_id_of(&inst, "from=<alice@example.test>, size=");
    assert!(
        ["deferred", "active"]
            .iter()
            .any(|q| inst.queue().join(q).join(&id).exists()),
        "the delayed message is still queued:\n{}",
        inst.log()
    );
    let marker = inst.queue().join("defer").join(format!("{id}.warned"));
    assert!(marker.exists(), "no marker {}", marker.display());

    // Several more deferrals, and still exactly one warning.
    let deferrals = inst.log_count("status=deferred");
    assert!(
        wait_for(LONG, || inst.log_count("status=deferred") >= deferrals + 3),
        "{}",
        inst.log()
    );
    assert_eq!(eml_count(&msgs), 0);
    let reports = maildir_messages(&alice);
    assert_eq!(reports.len(), 1, "exactly one delay warning");
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
        status.contains("Final-Recipient: rfc822; carol@remote.test"),
        "{status}"
    );
    assert!(status.contains("Action: delayed"), "{status}");
    assert!(status.contains("Status: 4."), "{status}");
    let raw = String::from_utf8_lossy(&reports[0]);
    assert!(raw.starts_with("Return-Path: <>"), "{raw}");

    // The remote side recovers: the message is delivered and its marker goes with it.
    drop(busy);
    let _ok = sink(&msgs, relay_port, 250);
    assert!(
        wait_for(LONG, || eml_count(&msgs) == 1),
        "not delivered after the warning:\n{}",
        inst.log()
    );
    assert!(
        wait_for(LONG, || inst.log().contains(&format!("{id}: removed"))),
        "{}",
        inst.log()
    );
    assert!(!marker.exists(), "marker left behind");
    assert_eq!(maildir_messages(&alice).len(), 1, "no further notice");
    inst.stop();
}

#[test]
fn no_warning_when_delay_warning_time_is_zero() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = Instance::new(
        &pipeline_services(smtp_port),
        &[
            &format!("relayhost=[127.0.0.1]:{relay_port}"),
            "minimal_backoff_time=1s",
            "maximal_backoff_time=1s",
            "queue_run_delay=1s",
        ],
    );
    add_user(&inst, "alice", "alice-pw");
    let msgs = inst.root.path().join("sink");
    inst.start();
    let _busy = sink(&msgs, relay_port, 450);
    let msg = "From: alice@example.test\r\nTo: carol@remote.test\r\nSubject: quiet\r\n\r\nno warning\r\n";
    smtplib_send(smtp_port, "alice@example.test", &["carol@remote.test"], msg);
    // Deferred for well over 2s (five attempts 1s apart): no notice at all.
    assert!(
        wait_for(LONG, || inst.log_count("status=deferred") >= 5),
        "{}",
        inst.log()
    );
    assert!(maildir_messages(&inst.root.path().join("var/mail/alice")).is_empty());
    let markers = std::fs::read_dir(inst.queue().join("defer"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".warned"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(markers, 0);
    inst.stop();
}
