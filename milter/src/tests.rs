use super::wire::{self, cmd, reply};
use super::*;
use std::os::unix::net::UnixListener;

#[test]
fn endpoints() {
    assert_eq!(
        Endpoint::parse("unix:/run/x.sock").unwrap(),
        Endpoint::Unix("/run/x.sock".into())
    );
    assert_eq!(
        Endpoint::parse("inet:127.0.0.1:8891").unwrap(),
        Endpoint::Inet("127.0.0.1".into(), 8891)
    );
    assert_eq!(
        Endpoint::parse("inet:8891@localhost").unwrap(),
        Endpoint::Inet("localhost".into(), 8891)
    );
    assert_eq!(
        Endpoint::parse("inet6:[::1]:25").unwrap(),
        Endpoint::Inet("::1".into(), 25)
    );
    for bad in ["", "tcp:1.2.3.4:5", "inet:host", "inet:host:0", "unix:"] {
        assert!(Endpoint::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn reply_codes() {
    assert_eq!(
        session::test_parse_replycode("554 5.7.1 Virus found").unwrap(),
        Verdict::Reject {
            code: 554,
            dsn: "5.7.1".into(),
            text: "Virus found".into()
        }
    );
    assert_eq!(
        session::test_parse_replycode("451 try later").unwrap(),
        Verdict::TempFail {
            code: 451,
            dsn: "4.7.1".into(),
            text: "try later".into()
        }
    );
    assert!(session::test_parse_replycode("250 ok").is_err());
    assert!(session::test_parse_replycode("xx").is_err());
}

fn message() -> Message {
    let (header, at) = postern_lib::headers::parse(b"From: a@x\nSubject: hi\n\nline\n", Default::default());
    let _ = at;
    Message {
        sender: "a@x".into(),
        recipients: vec!["b@y".into()],
        header,
        body: b"line\n".to_vec(),
        quarantine: None,
    }
}

#[test]
fn apply_all_or_nothing() {
    let mut m = message();
    let mods = vec![
        Modification::InsertHeader {
            index: 0,
            name: "X-First".into(),
            value: "1".into(),
        },
        Modification::ChangeHeader {
            index: 1,
            name: "Subject".into(),
            value: String::new(),
        },
        Modification::AddRecipient("c@z".into()),
        Modification::DeleteRecipient("B@y".into()),
        Modification::ReplaceBody(b"new\r\n".to_vec()),
        Modification::ReplaceBody(b"body\r\n".to_vec()),
        Modification::Quarantine("held".into()),
    ];
    m.apply(&mods, 100).unwrap();
    let mut h = Vec::new();
    m.header.write_to(&mut h);
    assert_eq!(h, b"X-First: 1\nFrom: a@x\n");
    assert_eq!(m.recipients, vec!["c@z".to_string()]);
    assert_eq!(m.body, b"new\nbody\n");
    assert_eq!(m.quarantine.as_deref(), Some("held"));
    let before = message();
    let mut m = before.clone();
    let bad = vec![
        Modification::AddRecipient("d@z".into()),
        Modification::AddHeader {
            name: "Bad Name".into(),
            value: "x".into(),
        },
    ];
    assert!(m.apply(&bad, 100).is_err());
    assert_eq!(m, before);
}

/// A scripted milter: answers negotiation, records what it is sent, and at end of message
/// asks for an inserted header and a new body.
#[test]
fn conversation_with_a_scripted_milter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sock");
    let l = UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut seen = Vec::new();
        loop {
            let (c, d) = wire::recv(&mut s).unwrap();
            seen.push((c, d.clone()));
            match c {
                cmd::OPTNEG => {
                    let mut r = Vec::new();
                    r.extend_from_slice(&6u32.to_be_bytes());
                    r.extend_from_slice(&0x1FFu32.to_be_bytes());
                    r.extend_from_slice(&wire::proto::NR_HDR.to_be_bytes());
                    wire::send(&mut s, cmd::OPTNEG, &r).unwrap();
                }
                cmd::MACRO | cmd::HEADER => {}
                cmd::BODYEOB => {
                    wire::send(&mut s, reply::PROGRESS, &[]).unwrap();
                    let mut ins = 0u32.to_be_bytes().to_vec();
                    wire::put_str(&mut ins, b"X-Scanned");
                    wire::put_str(&mut ins, b"yes");
                    wire::send(&mut s, reply::INSHEADER, &ins).unwrap();
                    wire::send(&mut s, reply::REPLBODY, b"replaced\r\n").unwrap();
                    wire::send(&mut s, reply::CONTINUE, &[]).unwrap();
                }
                cmd::QUIT => return seen,
                _ => wire::send(&mut s, reply::CONTINUE, &[]).unwrap(),
            }
        }
    });
    let tx = Transaction {
        client_name: "client.test".into(),
        client_addr: Some("192.0.2.1".parse().unwrap()),
        client_port: 4000,
        helo: "client.test".into(),
        mail_args: vec![],
        macros: vec![("i".into(), "QID".into())],
    };
    let t_o = Duration::from_secs(10);
    let timeouts = Timeouts {
        connect: t_o,
        command: t_o,
        content: t_o,
    };
    let msg = message();
    let out = run(&Endpoint::Unix(path), timeouts, &tx, &msg).unwrap();
    assert_eq!(out.verdict, Verdict::Continue);
    assert_eq!(out.modifications.len(), 2);
    let seen = t.join().unwrap();
    let kinds: Vec<u8> = seen.iter().map(|(c, _)| *c).collect();
    assert_eq!(kinds, b"ODCHDMDRTLLNBEQ".to_vec());
    let body = seen.iter().find(|(c, _)| *c == cmd::BODY).unwrap();
    assert_eq!(body.1, b"line\r\n");
    let hdr = seen.iter().find(|(c, _)| *c == cmd::HEADER).unwrap();
    assert_eq!(hdr.1, b"From\0a@x\0");
    let conn = seen.iter().find(|(c, _)| *c == cmd::CONNECT).unwrap();
    assert_eq!(conn.1, b"client.test\x004\x0f\xa0192.0.2.1\0");
    let mut m = msg;
    m.apply(&out.modifications, 1000).unwrap();
    assert_eq!(m.header.fields()[0].text(), "X-Scanned: yes");
    assert_eq!(m.body, b"replaced\n");
}

#[test]
fn silent_milter_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sock");
    let l = UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_millis(800));
        drop(s);
    });
    let t_o = Duration::from_millis(200);
    let timeouts = Timeouts {
        connect: t_o,
        command: t_o,
        content: t_o,
    };
    let err = run(&Endpoint::Unix(path), timeouts, &Transaction::default(), &message()).unwrap_err();
    assert!(matches!(err, MilterError::Timeout), "{err:?}");
    t.join().unwrap();
}
