//! The bounce daemon under the real master with the real cleanup: a non-delivery report
//! is queued from the null sender to the original sender, and a real MIME parser
//! (mail-parser) reads it as a multipart/report with the right status; NOTIFY=NEVER means
//! no report; a bounce of null-sender mail goes to the postmaster once, and a failed
//! double bounce is dropped.

use mail_parser::{MessageParser, MimeHeaders};
use postern_lib::ipc::IpcStream;
use postern_lib::proto::bounce::{BounceReply, BounceRequest, NoticeKind, NoticeRecipient, PROTOCOL, VERSION};
use postern_lib::queue_file::{Limits, Notify, QueueFile};
use postern_tests::*;
use std::time::Duration;

const ORIGINAL: &[u8] = b"From: alice@example.test\nTo: bob@remote.test\nSubject: lunch\nMessage-ID: <lunch.1@example.test>\n\nsee you at noon\n";

fn services() -> String {
    "[[service]]\nname = \"cleanup\"\ntype = \"unix\"\ncommand = \"cleanup\"\n\
     [[service]]\nname = \"bounce\"\ntype = \"unix\"\ncommand = \"bounce\"\n"
        .to_string()
}

fn ask(inst: &Instance, id: &str, kind: NoticeKind) -> BounceReply {
    let sock = std::os::unix::net::UnixStream::connect(inst.queue().join("private/bounce")).unwrap();
    let mut ipc = IpcStream::client(sock, PROTOCOL, VERSION, Some(Duration::from_secs(30))).unwrap();
    ipc.send(&BounceRequest::Notify {
        queue_id: id.parse().unwrap(),
        queue_file: format!("active/{id}"),
        kind,
        recipients: vec![NoticeRecipient {
            index: 0,
            address: "bob@remote.test".into(),
            dsn: "5.1.1".parse().unwrap(),
            text: "host mx.remote.test[192.0.2.1] said: 550 5.1.1 <bob@remote.test>: Recipient address rejected".into(),
            remote_mta: Some("mx.remote.test".into()),
        }],
    })
    .unwrap();
    ipc.recv().unwrap()
}

fn queued(inst: &Instance, id: &str) -> (QueueFile, Vec<u8>) {
    let f = std::fs::File::open(inst.queue().join("incoming").join(id)).expect("notice in incoming/");
    QueueFile::read_all(f, &Limits::default()).unwrap()
}

#[test]
fn failure_report_is_a_multipart_report_to_the_sender() {
    let mut inst = Instance::new(&services(), &[]);
    inst.start();
    let (id, _) = write_queue_file(
        &inst,
        "active",
        "alice@example.test",
        &[("bob@remote.test", Notify::default())],
        &[("envid", "ENV42")],
        ORIGINAL,
    );
    let BounceReply::Sent { queue_id } = ask(&inst, id.as_str(), NoticeKind::Failure) else {
        panic!("no report sent:\n{}", inst.log())
    };
    let (qf, content) = queued(&inst, &queue_id);
    assert_eq!(qf.envelope.sender, "", "reports come from the null sender");
    assert_eq!(qf.recipients.len(), 1);
    assert_eq!(qf.recipients[0].spec.address, "alice@example.test");
    assert_eq!(qf.envelope.attributes.get("notice").map(String::as_str), Some("bounce"));
    let msg = MessageParser::default()
        .parse(&content)
        .expect("mail-parser reads the report");
    let ct = msg.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype(), ct.attribute("report-type")),
        ("multipart", Some("report"), Some("delivery-status"))
    );
    let status = String::from_utf8_lossy(msg.parts[2].contents()).into_owned();
    assert!(status.contains("Final-Recipient: rfc822; bob@remote.test"), "{status}");
    assert!(
        status.contains("Action: failed") && status.contains("Status: 5.1.1"),
        "{status}"
    );
    assert!(status.contains("Original-Envelope-Id: ENV42"), "{status}");
    assert_eq!(
        msg.parts[3].message().and_then(|m| m.subject()),
        Some("lunch"),
        "original returned whole"
    );
    assert!(wait_for(Duration::from_secs(10), || inst
        .log_count("sender non-delivery notification")
        == 1));
}

#[test]
fn notify_never_means_no_report_and_null_sender_goes_to_postmaster_once() {
    let mut inst = Instance::new(&services(), &[]);
    inst.start();
    let (id, _) = write_queue_file(
        &inst,
        "active",
        "alice@example.test",
        &[("bob@remote.test", Notify::NEVER)],
        &[],
        ORIGINAL,
    );
    assert!(matches!(
        ask(&inst, id.as_str(), NoticeKind::Failure),
        BounceReply::NotNeeded { .. }
    ));

    // A bounce that bounced: to the postmaster, as a double bounce.
    let (id, _) = write_queue_file(
        &inst,
        "active",
        "",
        &[("bob@remote.test", Notify::default())],
        &[("notice", "bounce")],
        ORIGINAL,
    );
    let BounceReply::Sent { queue_id } = ask(&inst, id.as_str(), NoticeKind::Failure) else {
        panic!("{}", inst.log())
    };
    let (qf, _) = queued(&inst, &queue_id);
    assert_eq!(qf.envelope.sender, "");
    assert!(
        qf.recipients[0].spec.address.starts_with("postmaster@"),
        "{:?}",
        qf.recipients
    );
    assert_eq!(qf.envelope.attributes.get("notice").map(String::as_str), Some("double"));

    // A double bounce that bounced: dropped, never a loop.
    let (id, _) = write_queue_file(
        &inst,
        "active",
        "",
        &[("postmaster@x.test", Notify::default())],
        &[("notice", "double")],
        ORIGINAL,
    );
    assert!(matches!(
        ask(&inst, id.as_str(), NoticeKind::Failure),
        BounceReply::NotNeeded { .. }
    ));
    // Delay warnings about null-sender mail are dropped too.
    assert!(matches!(
        ask(&inst, id.as_str(), NoticeKind::Delay),
        BounceReply::NotNeeded { .. }
    ));
}
