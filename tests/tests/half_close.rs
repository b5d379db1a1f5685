//! A client that sends its commands and then shuts down its write side (`printf ... | nc
//! -q1`, `sock.shutdown(SHUT_WR)`) gets every answer before the server closes: IMAP,
//! POP3 and SMTP (a message sent in full, then QUIT, then the end of input: accepted and
//! queued), the commands sent before the greeting was even read. Commands that wait on
//! the auth daemon (LOGIN, PASS) are answered too; a command cut off by the end of input
//! closes the connection as a disconnect does.

mod smtpd_common;

use postern_tests::{Instance, add_user, auth_service, daemon_service, deliver_maildir, free_port, imap_instance};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Connects, sends `bytes` at once, shuts down the write side and reads until the server
/// closes; returns what came and how long the close took.
fn half_close(port: u16, bytes: &[u8]) -> (String, Duration) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(bytes).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("the server closes after answering");
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

const MSG: &[u8] = b"From: a@example.test\r\nSubject: half\r\n\r\nbody line\r\n";

#[test]
fn imap_answers_every_command_sent_before_the_end_of_input() {
    let (mut inst, port) = imap_instance("alice", "Alice-Half-Pw1");
    deliver_maildir(&inst, "alice", "1700000000.M1P1.test", MSG);
    inst.start();
    let (got, took) = half_close(
        port,
        b"a1 CAPABILITY\r\na2 LOGIN alice Alice-Half-Pw1\r\na3 SELECT INBOX\r\n\
          a4 FETCH 1:* (FLAGS RFC822.SIZE)\r\na5 NOOP\r\na6 LOGOUT\r\n",
    );
    for tag in ["a1", "a2", "a3", "a4", "a5", "a6"] {
        assert!(got.contains(&format!("\r\n{tag} OK")), "{tag} unanswered:\n{got}");
    }
    assert!(got.contains("RFC822.SIZE 50)"), "{got}");
    assert!(got.contains("* BYE"), "{got}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // no LOGOUT: answered, then closed as a disconnect
    let (got, took) = half_close(port, b"b1 CAPABILITY\r\nb2 NOOP\r\n");
    assert!(got.contains("\r\nb1 OK") && got.contains("\r\nb2 OK"), "{got}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // a command cut off by the end of input: what came before it answered, then closed
    let (got, _) = half_close(port, b"c1 NOOP\r\nc2 LOGIN alice {14}\r\nAlice-H");
    assert!(got.contains("\r\nc1 OK"), "{got}");
    assert!(!got.contains("c2 OK"), "{got}");
    assert!(
        postern_tests::wait_for(Duration::from_secs(5), || inst.log_count("disconnect from 127.0.0.1")
            >= 3),
        "{}",
        inst.log()
    );
}

#[test]
fn pop3_answers_every_command_sent_before_the_end_of_input() {
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("pop3", "inet", &format!("127.0.0.1:{port}"), "pop3d", "")
    );
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "alice", "Alice-Half-Pw1");
    deliver_maildir(&inst, "alice", "1700000000.M1P1.test", MSG);
    inst.start();
    let (got, took) = half_close(
        port,
        b"CAPA\r\nUSER alice\r\nPASS Alice-Half-Pw1\r\nSTAT\r\nLIST\r\nRETR 1\r\nQUIT\r\n",
    );
    let oks = got.lines().filter(|l| l.starts_with("+OK")).count();
    // greeting, CAPA, USER, PASS, STAT, LIST, RETR, QUIT
    assert_eq!(oks, 8, "{got}");
    assert!(got.contains("+OK 1 50\r\n"), "STAT: {got}");
    assert!(got.contains("\r\nbody line\r\n.\r\n"), "RETR: {got}");
    assert!(got.ends_with("\r\n"), "{got}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
}

#[test]
fn smtp_accepts_and_queues_a_message_sent_before_the_end_of_input() {
    let s = smtpd_common::start(&[], "", "");
    // the whole session in one go (PIPELINING), before the greeting is read
    let (got, took) = half_close(
        s.port,
        b"EHLO client.test\r\nMAIL FROM:<sender@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n\
          Subject: half one\r\n\r\nline\r\n.\r\nQUIT\r\n",
    );
    let codes: Vec<&str> = got
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect();
    assert_eq!(codes, ["220", "250", "250", "250", "354", "250", "221"], "{got}");
    assert!(got.contains("250 2.0.0 Ok: queued as "), "{got}");
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    // the client waits for 354 as RFC 2920 has it, then sends the message, QUIT and its end
    let mut c = smtpd_common::Client::connect(s.port);
    c.send(b"EHLO client.test\r\nMAIL FROM:<sender@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    assert!(c.reply().contains("250-PIPELINING"));
    assert_eq!(c.reply(), "250 2.1.0 Ok\r\n");
    assert_eq!(c.reply(), "250 2.1.5 Ok\r\n");
    assert!(c.reply().starts_with("354 "));
    c.send(b"Subject: half two\r\n\r\nline\r\n.\r\nQUIT\r\n");
    c.stream.shutdown(Shutdown::Write).unwrap();
    let queued = c.reply();
    assert!(
        queued.starts_with("250 2.0.0 Ok: queued as "),
        "{queued}\n{}",
        s.inst.log()
    );
    assert_eq!(c.reply(), "221 2.0.0 Bye\r\n");
    assert!(c.closed());
    let got = s.received();
    assert_eq!(got.len(), 2, "both messages queued");
    for subject in ["half one", "half two"] {
        assert!(
            got.iter()
                .any(|(_, m)| String::from_utf8_lossy(m).contains(&format!("Subject: {subject}\r\n"))),
            "{subject} not queued"
        );
    }
    // a message cut off by the end of input is not accepted (and nothing is queued)
    let (got, _) = half_close(
        s.port,
        b"EHLO client.test\r\nMAIL FROM:<sender@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: cut\r\n\r\nno end",
    );
    assert!(got.contains("354 ") && !got.contains("queued as"), "{got}");
    assert_eq!(s.received().len(), 2);
}
