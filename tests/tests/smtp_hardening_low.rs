//! Issue 10's "low" SMTP findings, each attacked from outside through the real master and
//! the whole pipeline (smtpd → cleanup → qmgr → local or the smtp client → a real SMTP
//! server on loopback, tests/scripts/smtp_sink.py, as the relayhost):
//!
//! - `RCPT TO:<postmaster>` without a domain reaches the local postmaster's alias although
//!   `myhostname` is not in `mydestination` (it used to be qualified with `myhostname` and
//!   relayed away);
//! - a header of 10,000 small fields (under `header_size_limit`) is accepted whole, with
//!   the `Date:` and `Message-ID:` cleanup adds (it used to get `451 4.3.0` for ever);
//! - lines over `smtp_line_length_limit` are broken with CRLF SPACE when relayed, as
//!   Postfix does, and nothing else changes;
//! - ENVID/ORCPT whose xtext decodes to CR, LF or NUL get `501 5.5.4` (they used to be
//!   accepted and dropped), and well-formed ones still work;
//! - HELO and envelope addresses cannot put a header line into `Received:`.

use postern_tests::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// The whole pipeline with the relayhost at a sink on `relay_port`, alice a mailbox user,
/// and the shipped identity: myhostname mail.example.test, mydestination example.test
/// and localhost (so myhostname is not ours).
fn instance(smtp_port: u16, relay_port: u16, extra: &[&str]) -> Instance {
    let mut settings = vec![
        format!("relayhost=[127.0.0.1]:{relay_port}"),
        "myhostname=mail.example.test".to_string(),
        "mydestination=[\"example.test\", \"localhost\"]".to_string(),
        "minimal_backoff_time=1s".to_string(),
        "maximal_backoff_time=2s".to_string(),
        "queue_run_delay=1s".to_string(),
    ];
    settings.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = settings.iter().map(String::as_str).collect();
    let inst = Instance::new(&pipeline_services(smtp_port), &refs);
    add_user(&inst, "alice", "alice-pw");
    std::fs::write(inst.etc().join("aliases"), "postmaster: alice\n").expect("aliases");
    inst
}

/// Runs an SMTP dialog with Python's smtplib: `steps` are Python statements using `s`
/// (connected, after EHLO) and `out(code, text)`; returns what they printed.
fn dialog(port: u16, steps: &str) -> String {
    python(&format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n\
         s.ehlo('client.test')\n\
         def out(r):\n    print(r[0], r[1].decode().replace('\\n', ' '))\n\
         {steps}\n\
         s.quit()\n"
    ))
}

#[test]
fn bare_postmaster_is_delivered_to_the_local_postmaster_alias() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = instance(smtp_port, relay_port, &[]);
    let sink_dir = inst.root.path().join("sink");
    std::fs::create_dir_all(&sink_dir).unwrap();
    let _sink = sink(&sink_dir, relay_port, 250);
    inst.start();
    let got = dialog(
        smtp_port,
        "out(s.mail('someone@remote.test'))\n\
         out(s.rcpt('<postmaster>'))\n\
         out(s.rcpt('<PostMaster>'))\n\
         out(s.data(b'From: someone@remote.test\\r\\nSubject: to postmaster\\r\\nMessage-ID: <pm.1@remote.test>\\r\\n\\r\\nhello postmaster\\r\\n'))",
    );
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.get(1).copied(), Some("250 2.1.5 Ok"), "{got}");
    assert_eq!(lines.get(2).copied(), Some("250 2.1.5 Ok"), "{got}");
    assert!(lines.get(3).is_some_and(|l| l.starts_with("250 2.0.0")), "{got}");
    let alice = inst.root.path().join("var/mail/alice");
    assert!(
        wait_for(LONG, || maildir_messages(&alice).len() == 2),
        "not delivered to the alias target:\n{}",
        inst.log()
    );
    for m in maildir_messages(&alice) {
        let text = String::from_utf8_lossy(&m).into_owned();
        assert!(text.contains("hello postmaster"), "{text}");
        assert_eq!(
            header_values(&text, "delivered-to"),
            vec!["postmaster@example.test"],
            "{text}"
        );
    }
    assert_eq!(inst.log_count("mail.example.test>"), 0, "{}", inst.log());
    assert!(sink_messages(&sink_dir).is_empty(), "relayed away");
}

#[test]
fn ten_thousand_header_fields_are_accepted_whole() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = instance(smtp_port, relay_port, &[]);
    inst.start();
    // 10,000 fields of 9 bytes: 90 KB, under header_size_limit (102,400). No Date: and
    // no Message-ID:, so cleanup must add both to the full header.
    let got = dialog(
        smtp_port,
        "hdr = ''.join('X%04d:1\\r\\n' % i for i in range(10000))\n\
         msg = ('From: bob@remote.test\\r\\nTo: alice@example.test\\r\\nSubject: many\\r\\n' + hdr + '\\r\\nthe body\\r\\n').encode()\n\
         out(s.mail('bob@remote.test'))\n\
         out(s.rcpt('alice@example.test'))\n\
         out(s.data(msg))",
    );
    let last = got.lines().nth(2).unwrap_or_default();
    assert!(last.starts_with("250 2.0.0 Ok: queued as "), "{got}\n{}", inst.log());
    let alice = inst.root.path().join("var/mail/alice");
    assert!(
        wait_for(LONG, || maildir_messages(&alice).len() == 1),
        "not delivered:\n{}",
        inst.log()
    );
    let m = String::from_utf8(maildir_messages(&alice).remove(0)).expect("utf-8");
    let (header, body) = m
        .split_once("\n\n")
        .or_else(|| m.split_once("\r\n\r\n"))
        .expect("header end");
    let fields: Vec<&str> = header.lines().map(|l| l.trim_end_matches('\r')).collect();
    let x: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|l| l.starts_with('X') && l.ends_with(":1"))
        .collect();
    assert_eq!(x.len(), 10_000, "every field stays in the header");
    assert_eq!((x[0], x[9_999]), ("X0000:1", "X9999:1"));
    assert_eq!(header_values(&m, "date").len(), 1, "cleanup added Date:");
    assert_eq!(header_values(&m, "message-id").len(), 1, "cleanup added Message-ID:");
    assert_eq!(body.trim_end(), "the body");
    assert_eq!(inst.log_count("header too large"), 0, "{}", inst.log());
}

#[test]
fn a_local_header_past_the_field_limit_keeps_every_byte_and_is_logged() {
    // Local submission (sendmail → postdrop → pickup → cleanup) is bounded by
    // message_size_limit only: 40,000 fields pass header_size_limit's 34,134-field
    // bound. Cleanup keeps that many as header and the rest as body, logs it, and still
    // adds Date: and Message-ID: — accepted, nothing lost, memory bounded.
    let (smtp_port, relay_port) = (free_port(), free_port());
    let services = format!(
        "{}[[service]]\nname = \"pickup\"\ntype = \"unix\"\nlisten = \"public/pickup\"\ncommand = \"{}\"\nmaxproc = 1\nwakeup = \"60s\"\n",
        pipeline_services(smtp_port),
        bin("pickup").display()
    );
    let mut inst = Instance::new(
        &services,
        &[&format!("relayhost=[127.0.0.1]:{relay_port}"), "queue_run_delay=1s"],
    );
    add_user(&inst, "alice", "alice-pw");
    inst.start();
    let fields: String = (0..40_000).map(|i| format!("Y{i:05}:1\n")).collect();
    let msg = format!("From: root\nTo: alice@example.test\nSubject: local\n{fields}\nlocal body\n");
    let mut child = std::process::Command::new(bin("sendmail"))
        .arg("-C")
        .arg(inst.etc())
        .arg("alice@example.test")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sendmail");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), msg.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("sendmail");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alice = inst.root.path().join("var/mail/alice");
    assert!(
        wait_for(LONG, || maildir_messages(&alice).len() == 1),
        "not delivered:\n{}",
        inst.log()
    );
    assert_eq!(inst.log_count("header reached 34134 fields"), 1, "{}", inst.log());
    let m = String::from_utf8(maildir_messages(&alice).remove(0)).expect("utf-8");
    let all: Vec<&str> = m.lines().filter(|l| l.starts_with('Y') && l.ends_with(":1")).collect();
    assert_eq!(all.len(), 40_000, "every field is still there");
    assert_eq!(header_values(&m, "date").len(), 1, "cleanup added Date:");
    assert_eq!(header_values(&m, "message-id").len(), 1, "cleanup added Message-ID:");
    assert!(m.trim_end().ends_with("local body"), "{}", &m[m.len() - 200..]);
}

#[test]
fn long_lines_are_broken_with_crlf_space_when_relayed() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = instance(smtp_port, relay_port, &[]);
    let sink_dir = inst.root.path().join("sink");
    std::fs::create_dir_all(&sink_dir).unwrap();
    let _sink = sink(&sink_dir, relay_port, 250);
    inst.start();
    // A 5,000-byte line, one of exactly 998 bytes (left alone), one of 999, a long one
    // that starts with a dot (stuffed once, at its start only) and a long header line.
    let pattern = |n: usize, seed: u8| -> String {
        (0..n)
            .map(|i| (b'a' + ((i + seed as usize) % 26) as u8) as char)
            .collect()
    };
    let (l5000, l998, l999) = (pattern(5000, 0), pattern(998, 1), pattern(999, 2));
    let dotted = format!(".{}", pattern(2500, 3));
    let long_subject = pattern(1500, 4);
    let body = format!("{l5000}\r\n{l998}\r\n{l999}\r\n{dotted}\r\nshort line\r\n");
    let msg = format!(
        "From: alice@example.test\r\nTo: carol@remote.test\r\nSubject: {long_subject}\r\nMessage-ID: <long.1@example.test>\r\n\r\n{body}"
    );
    smtplib_send(smtp_port, "alice@example.test", &["carol@remote.test"], &msg);
    assert!(
        wait_for(LONG, || sink_messages(&sink_dir).len() == 1),
        "not relayed:\n{}",
        inst.log()
    );
    let got = sink_messages(&sink_dir).remove(0);
    // Every line the relay received fits: 998 bytes before CRLF.
    for line in got.split("\r\n") {
        assert!(line.len() <= 998, "a line of {} bytes was sent", line.len());
    }
    let (header, got_body) = got.split_once("\r\n\r\n").expect("header end");
    // The body is the original once each inserted CRLF SPACE is taken out; the 998-byte
    // line went unbroken, the 999-byte one as 998 bytes and " " + 1 byte.
    assert_eq!(got_body.replace("\r\n ", ""), body);
    assert!(got_body.contains(&format!("\r\n{l998}\r\n")));
    assert!(got_body.contains(&format!("\r\n{}\r\n {}\r\n", &l999[..998], &l999[998..])));
    assert!(got_body.starts_with(&format!("{}\r\n {}\r\n", &l5000[..998], &l5000[998..1995])));
    let subject = header
        .split("\r\n")
        .skip_while(|l| !l.starts_with("Subject: "))
        .take_while(|l| l.starts_with("Subject: ") || l.starts_with(' '))
        .collect::<Vec<_>>()
        .join("\r\n");
    assert_eq!(subject.replace("\r\n ", ""), format!("Subject: {long_subject}"));
    assert!(subject.contains("\r\n "), "the long header line was broken too");
}

#[test]
fn envid_and_orcpt_with_control_characters_get_501() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = instance(smtp_port, relay_port, &[]);
    inst.start();
    let got = dialog(
        smtp_port,
        "out(s.docmd('MAIL', 'FROM:<a@b.test> ENVID=x+0D+0Ay'))\n\
         out(s.docmd('MAIL', 'FROM:<a@b.test> ENVID=x+00y'))\n\
         out(s.docmd('MAIL', 'FROM:<a@b.test> ENVID=x+0Ay'))\n\
         out(s.docmd('MAIL', 'FROM:<a@b.test> ENVID=x+zz'))\n\
         out(s.docmd('MAIL', 'FROM:<a@b.test> ENVID=ok+2B1 ENVID=again'))\n\
         out(s.docmd('MAIL', 'FROM:<a@b.test> ENVID=ok+2B1'))\n\
         out(s.docmd('RCPT', 'TO:<alice@example.test> ORCPT=rfc822;a+00b@c.test'))\n\
         out(s.docmd('RCPT', 'TO:<alice@example.test> ORCPT=rfc822;a+0D+0AX-Injected:+20yes'))\n\
         out(s.docmd('RCPT', 'TO:<alice@example.test> ORCPT=rfc822;a+7Fb@c.test'))\n\
         out(s.docmd('RCPT', 'TO:<alice@example.test> ORCPT=;a@c.test'))\n\
         out(s.docmd('RCPT', 'TO:<alice@example.test> ORCPT=rfc822;Alice+40example.test'))\n\
         out(s.data(b'Subject: dsn\\r\\nMessage-ID: <dsn.1@b.test>\\r\\n\\r\\nstill works\\r\\n'))",
    );
    let lines: Vec<&str> = got.lines().collect();
    let envid = "501 5.5.4 Bad ENVID parameter syntax";
    let orcpt = "501 5.5.4 Error: Bad ORCPT parameter syntax";
    assert_eq!(&lines[..5], &[envid; 5], "{got}");
    assert_eq!(lines[5], "250 2.1.0 Ok", "{got}");
    assert_eq!(&lines[6..10], &[orcpt; 4], "{got}");
    assert_eq!(lines[10], "250 2.1.5 Ok", "{got}");
    assert!(lines[11].starts_with("250 2.0.0"), "{got}");
    let alice = inst.root.path().join("var/mail/alice");
    assert!(
        wait_for(LONG, || maildir_messages(&alice).len() == 1),
        "the good transaction was not delivered:\n{}",
        inst.log()
    );
    let m = String::from_utf8_lossy(&maildir_messages(&alice)[0]).into_owned();
    assert!(m.contains("still works") && !m.contains("X-Injected"), "{m}");
}

#[test]
fn helo_and_envelope_cannot_inject_header_lines_into_received() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = instance(smtp_port, relay_port, &[]);
    inst.start();
    // A CR inside the HELO name or an address; a bare LF ends the command line, so what
    // follows it is a command of its own (and not a valid one).
    let got = python(&format!(
        "import socket\n\
         c = socket.create_connection(('127.0.0.1', {smtp_port}), timeout=30)\n\
         f = c.makefile('rb')\n\
         def reply():\n    while True:\n        l = f.readline().decode().rstrip()\n        if l[3:4] != '-': return l\n\
         def cmd(b):\n    c.sendall(b)\n    return reply()\n\
         reply()\n\
         print(cmd(b'EHLO evil\\rX-Injected: helo\\r\\n'))\n\
         print(cmd(b'EHLO evil(\\r\\n'))\n\
         print(cmd(b'MAIL FROM:<\"a\\rX-Injected: from\"@b.test>\\r\\n'))\n\
         print(cmd(b'MAIL FROM:<a@b.test>\\r\\n'))\n\
         print(cmd(b'RCPT TO:<\"alice\\rX-Injected: rcpt\"@example.test>\\r\\n'))\n\
         print(cmd(b'RCPT TO:<alice@example.test>\\r\\n'))\n\
         print(cmd(b'DATA\\r\\n'))\n\
         print(cmd(b'Subject: received\\r\\nMessage-ID: <rcvd.1@b.test>\\r\\n\\r\\nbody\\r\\n.\\r\\n'))\n\
         print(cmd(b'QUIT\\r\\n'))\n"
    ));
    let lines: Vec<&str> = got.lines().collect();
    assert!(lines[0].starts_with("501 "), "{got}");
    assert!(lines[1].starts_with("250"), "{got}");
    assert!(lines[2].starts_with('5'), "{got}");
    assert!(lines[3].starts_with("250"), "{got}");
    assert!(lines[4].starts_with('5'), "{got}");
    assert!(lines[5].starts_with("250"), "{got}");
    assert!(lines[7].starts_with("250 2.0.0"), "{got}");
    let alice = inst.root.path().join("var/mail/alice");
    assert!(
        wait_for(LONG, || maildir_messages(&alice).len() == 1),
        "not delivered:\n{}",
        inst.log()
    );
    let m = String::from_utf8_lossy(&maildir_messages(&alice)[0]).into_owned();
    assert!(!m.contains("X-Injected"), "{m}");
    let received = header_values(&m, "received");
    assert!(received.iter().any(|r| r.starts_with("from evil? (")), "{m}");
    // Every header line is a field or a continuation of one.
    for l in m
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .take_while(|l| !l.is_empty())
    {
        assert!(l.starts_with([' ', '\t']) || l.contains(':'), "stray header line {l:?}");
    }
}
