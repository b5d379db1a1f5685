//! smtpd against raw bytes, under the real master, with the real auth daemon: a whole
//! pipelined transaction in one packet, relay tricks, recipient validation, size limits,
//! bad input (NUL, unknown and out-of-order commands, a 10 MB line), BDAT, disconnects
//! during DATA and BDAT, and cleanup failures.

mod smtpd_common;

use postern_tests::wait_for;
use smtpd_common::*;

#[test]
fn pipelined_transaction_in_one_packet() {
    let s = start(&[], "", "");
    let mut c = s.client();
    assert!(
        c.greeting.starts_with("220 mail.example.test ESMTP Postern"),
        "{}",
        c.greeting
    );
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<sender@remote.test>\r\nRCPT TO:<root@example.test>\r\nRCPT TO:<Alice@Example.Test.>\r\nDATA\r\nSubject: pipelined\r\n\r\n..leading dot\r\nline\r\n.\r\nQUIT\r\n",
    );
    let ehlo = c.reply();
    assert!(
        ehlo.contains("250-PIPELINING") && ehlo.contains("250 CHUNKING"),
        "{ehlo}"
    );
    assert_eq!(c.reply(), "250 2.1.0 Ok\r\n");
    assert_eq!(c.reply(), "250 2.1.5 Ok\r\n");
    assert_eq!(c.reply(), "250 2.1.5 Ok\r\n");
    assert_eq!(c.reply(), "354 End data with <CR><LF>.<CR><LF>\r\n");
    let queued = c.reply();
    assert!(
        queued.starts_with("250 2.0.0 Ok: queued as "),
        "{queued} {} {:?}",
        s.inst.log(),
        std::fs::read_to_string(s.inst.queue().join("test-received/errors.log"))
    );
    assert_eq!(c.reply(), "221 2.0.0 Bye\r\n");
    let got = s.received();
    assert_eq!(got.len(), 1, "one queue file in incoming/");
    let (env, msg) = &got[0];
    assert!(
        env.starts_with("sender sender@remote.test\nrcpt root@example.test"),
        "{env}"
    );
    assert!(env.contains("rcpt Alice@example.test"), "domain normalised: {env}");
    assert!(
        env.contains("attr protocol=ESMTP") && env.contains("attr client_addr=127.0.0.1"),
        "{env}"
    );
    let msg = String::from_utf8_lossy(msg);
    // The queue ID cleanup named when the message began, as in Postfix's header.
    let id = queued.trim_end().rsplit(' ').next().unwrap_or_default();
    assert!(
        msg.starts_with(&format!(
            "Received: from client.test (unknown [127.0.0.1])\r\n\tby mail.example.test (Postern) with ESMTP id {id};"
        )),
        "{msg}"
    );
    // Postfix's line, logged when the message began (so before the 250).
    assert_eq!(
        s.inst.log_count(&format!("{id}: client=unknown[127.0.0.1]")),
        1,
        "{}",
        s.inst.log()
    );
    assert!(msg.contains("\r\nSubject: pipelined\r\n"), "{msg}");
    assert!(msg.ends_with("\r\n\r\n.leading dot\r\nline\r\n"), "unstuffed: {msg}");
}

#[test]
fn relay_tricks_are_refused_outside_mynetworks() {
    let s = start(&["mynetworks=[\"127.0.0.2/32\"]"], "", "");
    let mut c = s.client();
    c.cmd("EHLO outside.test");
    assert_eq!(c.cmd("MAIL FROM:<a@outside.test>"), "250 2.1.0 Ok\r\n");
    for rcpt in [
        "victim@remote.test",
        "victim%remote.test@example.test",
        "remote.test!victim@example.test",
        "@example.test:victim@remote.test",
        "@localhost,@example.test:victim@remote.test",
        "\"victim@remote.test\"@example.test",
        "victim%remote.test@EXAMPLE.TEST.",
        "victim@REMOTE.test.",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(
            r.starts_with("554 5.7.1 ") && r.contains("Relay access denied"),
            "{rcpt}: {r}"
        );
    }
    // Our own domain is fine.
    assert_eq!(c.cmd("RCPT TO:<root@EXAMPLE.test.>"), "250 2.1.5 Ok\r\n");
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok\r\n");
    c.cmd("QUIT");
    assert!(s.received().is_empty());
}

#[test]
fn unknown_local_recipient_is_550_5_1_1() {
    let s = start(&[], "", "");
    let mut c = s.client();
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@remote.test>");
    assert_eq!(
        c.cmd("RCPT TO:<nobody@example.test>"),
        "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local recipient table\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test>"),
        "250 2.1.5 Ok\r\n",
        "a user known to auth"
    );
    assert_eq!(c.cmd("RCPT TO:<ROOT@localhost>"), "250 2.1.5 Ok\r\n", "an alias");
    assert_eq!(c.cmd("RCPT TO:<postmaster>"), "250 2.1.5 Ok\r\n");
    c.cmd("QUIT");
}

#[test]
fn size_limits() {
    let s = start(&["message_size_limit=2048"], "", "");
    let mut c = s.client();
    let ehlo = c.cmd("EHLO c.test");
    assert!(ehlo.contains("250-SIZE 2048"), "{ehlo}");
    assert_eq!(
        c.cmd("MAIL FROM:<a@remote.test> SIZE=4096"),
        "552 5.3.4 Message size exceeds fixed limit\r\n"
    );
    c.cmd("MAIL FROM:<a@remote.test> SIZE=1000");
    c.cmd("RCPT TO:<root@example.test>");
    assert!(c.cmd("DATA").starts_with("354"));
    let mut big = Vec::new();
    for _ in 0..100 {
        big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    big.extend_from_slice(b".\r\n");
    c.send(&big);
    assert_eq!(c.reply(), "552 5.3.4 Error: message file too big\r\n");
    // The session goes on, and a small message passes.
    c.cmd("MAIL FROM:<a@remote.test>");
    c.cmd("RCPT TO:<root@example.test>");
    c.cmd("DATA");
    assert!(c.cmd("small\r\n.").starts_with("250 2.0.0 Ok: queued as"));
    let got = s.received();
    assert_eq!(got.len(), 1, "only the small message was queued");
    assert!(got[0].1.ends_with(b"small\r\n"));
}

#[test]
fn bad_input_gets_clear_replies() {
    let s = start(&[], "", "");
    let mut c = s.client();
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.test>"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    c.cmd("EHLO c.test");
    assert_eq!(
        c.cmd("RCPT TO:<root@example.test>"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(c.cmd("XYZZY"), "502 5.5.2 Error: command not recognized\r\n");
    assert_eq!(c.cmd("MAIL FROM:<a b@c.test>").get(..9), Some("501 5.1.3"));
    assert_eq!(c.cmd("MAIL FROM a@b.test"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    c.send(b"NO\0OP\r\n");
    assert_eq!(c.reply(), "500 5.5.2 Error: NUL character in command\r\n");
    // 10 MB without a newline, then the end of that line: one "line too long", no more.
    let chunk = vec![b'A'; 1 << 20];
    for _ in 0..10 {
        c.send(&chunk);
    }
    c.send(b"\r\nNOOP\r\n");
    assert_eq!(c.reply(), "500 5.5.2 Error: line too long\r\n");
    assert_eq!(c.reply(), "250 2.0.0 Ok\r\n");
    // Bare LF ends a command line (normalize mode).
    c.send(b"NOOP\n");
    assert_eq!(c.reply(), "250 2.0.0 Ok\r\n");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert!(s.received().is_empty());
}

#[test]
fn too_many_errors_end_the_session() {
    let s = start(&["smtpd_hard_error_limit=3"], "", "");
    let mut c = s.client();
    c.cmd("BAD1");
    c.cmd("BAD2");
    assert_eq!(c.cmd("BAD3"), "502 5.5.2 Error: command not recognized\r\n");
    assert_eq!(c.reply(), "421 4.7.0 mail.example.test Error: too many errors\r\n");
    assert!(c.closed());
}

#[test]
fn bdat_chunks_and_smuggling_attempt() {
    let s = start(&[], "", "");
    let mut c = s.client();
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@remote.test>");
    c.cmd("RCPT TO:<root@example.test>");
    c.send(b"BDAT 20\r\nSubject: chunked\r\n\r\n");
    assert_eq!(c.reply(), "250 2.0.0 Ok: chunk received\r\n");
    c.send(b"BDAT 7 LAST\r\n.\r\nQUIT");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    // DATA with the smuggling sequences: <LF>.<LF> and <LF>.<CR><LF> are not the end.
    c.cmd("MAIL FROM:<a@remote.test>");
    c.cmd("RCPT TO:<root@example.test>");
    c.cmd("DATA");
    c.send(b"Subject: smuggle\r\n\r\nx\n.\nMAIL FROM:<evil@x.test>\n.\r\nRCPT TO:<y@z.test>\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let got = s.received();
    assert_eq!(got.len(), 2);
    let all: Vec<String> = got
        .iter()
        .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
        .collect();
    let chunked = all.iter().find(|m| m.contains("chunked")).unwrap();
    assert!(chunked.contains("\r\nSubject: chunked\r\n"), "{chunked}");
    assert!(chunked.ends_with("\r\n\r\n.\r\nQUIT"), "BDAT content is raw: {chunked}");
    let smuggle = all.iter().find(|m| m.contains("smuggle")).unwrap();
    assert!(
        smuggle.ends_with("x\r\n.\r\nMAIL FROM:<evil@x.test>\r\n.\r\nRCPT TO:<y@z.test>\r\n"),
        "one message, bare LFs normalised: {smuggle:?}"
    );
}

#[test]
fn disconnect_during_data_or_bdat_queues_nothing() {
    let s = start(&[], "", "");
    {
        let mut c = s.client();
        c.cmd("EHLO c.test");
        c.cmd("MAIL FROM:<a@remote.test>");
        c.cmd("RCPT TO:<root@example.test>");
        c.cmd("DATA");
        c.send(b"Subject: cut\r\n\r\nhalf a message\r\n");
    }
    {
        let mut c = s.client();
        c.cmd("EHLO c.test");
        c.cmd("MAIL FROM:<a@remote.test>");
        c.cmd("RCPT TO:<root@example.test>");
        c.send(b"BDAT 1000 LAST\r\nonly some of the thousand bytes");
    }
    // The same process (or another) still serves, and only this message is queued.
    let mut c = s.client();
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@remote.test>");
    c.cmd("RCPT TO:<root@example.test>");
    c.cmd("DATA");
    assert!(c.cmd("Subject: whole\r\n\r\nok\r\n.").starts_with("250 2.0.0"));
    c.cmd("QUIT");
    let got = s.received();
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].1).contains("Subject: whole"));
    assert!(wait_for(LONG, || s
        .inst
        .log_count("disconnect from unknown[127.0.0.1]")
        >= 3));
}

fn one_message(s: &Smtpd) -> String {
    let mut c = s.client();
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@remote.test>");
    c.cmd("RCPT TO:<root@example.test>");
    c.cmd("DATA");
    let r = c.cmd("hello\r\n.");
    c.cmd("QUIT");
    r
}

#[test]
fn cleanup_refusals_and_absence() {
    let s = start(&[], "", "reject");
    assert_eq!(one_message(&s), "550 5.7.1 message content rejected\r\n");
    assert!(s.test_received().is_empty());
    drop(s);
    let s = start(&[], "", "tempfail");
    assert_eq!(one_message(&s), "451 4.3.0 try again later\r\n");
    drop(s);
    let s = start(&[], "", "none");
    assert_eq!(one_message(&s), "451 4.3.0 Error: queue file write error\r\n");
    assert!(s.received().is_empty());
}

#[test]
fn restriction_rules_and_tables() {
    let s = start_full(
        &[
            "smtpd_client_restrictions=[\"check_client_access client_access\"]",
            "smtpd_sender_restrictions=[\"reject_non_fqdn_sender\"]",
            "smtpd_recipient_restrictions=[\"reject_non_fqdn_recipient\"]",
        ],
        "",
        "",
        true,
        &|i| {
            std::fs::write(
                i.etc().join("client_access"),
                "# test table\n127.0.0.9 OK\n127.0.0.0/8 REJECT no mail from here today\n",
            )
            .unwrap();
        },
    );
    let mut c = s.client();
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@remote.test>");
    assert_eq!(
        c.cmd("RCPT TO:<root@example.test>"),
        "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: no mail from here today\r\n"
    );
    drop(c);
    drop(s);
    let s = start(
        &[
            "smtpd_sender_restrictions=[\"reject_non_fqdn_sender\"]",
            "smtpd_recipient_restrictions=[\"reject_non_fqdn_recipient\"]",
            "mydestination=[\"example.test\", \"localhost\", \"loc\"]",
        ],
        "",
        "",
    );
    let mut c = s.client();
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@nodots>");
    assert_eq!(
        c.cmd("RCPT TO:<root@example.test>"),
        "504 5.5.2 <a@nodots>: Sender address rejected: need fully-qualified address\r\n"
    );
    c.cmd("RSET");
    c.cmd("MAIL FROM:<a@remote.test>");
    assert_eq!(
        c.cmd("RCPT TO:<root@loc>"),
        "504 5.5.2 <root@loc>: Recipient address rejected: need fully-qualified address\r\n"
    );
    assert_eq!(c.cmd("RCPT TO:<root@example.test>"), "250 2.1.5 Ok\r\n");
}

#[test]
fn header_size_limit_refuses_a_huge_header() {
    let s = start(&["header_size_limit=1000"], "", "");
    let mut c = s.client();
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@remote.test>");
    c.cmd("RCPT TO:<root@example.test>");
    c.cmd("DATA");
    let mut msg = Vec::new();
    for i in 0..40 {
        msg.extend_from_slice(format!("X-Filler-{i}: 0123456789012345678901234567890123456789\r\n").as_bytes());
    }
    msg.extend_from_slice(b"\r\nbody\r\n.\r\n");
    c.send(&msg);
    assert_eq!(c.reply(), "552 5.3.4 Error: message header size exceeds limit\r\n");
    assert!(s.received().is_empty());
}

#[test]
fn large_message_and_many_sessions_at_once() {
    let s = start(&[], "maxproc = 2", "");
    let port = s.port;
    // A 5 MB message streams through (cleanup takes it as it arrives).
    let mut c = s.client();
    c.cmd("EHLO big.test");
    c.cmd("MAIL FROM:<a@remote.test> SIZE=6000000");
    c.cmd("RCPT TO:<root@example.test>");
    c.cmd("DATA");
    let line = b"0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n";
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..(5_000_000 / line.len()) {
        body.extend_from_slice(line);
    }
    body.extend_from_slice(b".\r\n");
    c.send(&body);
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    c.cmd("QUIT");
    // Twenty clients at once, each with one message.
    let threads: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                c.cmd("EHLO many.test");
                c.cmd(&format!("MAIL FROM:<sender{i}@remote.test>"));
                c.cmd("RCPT TO:<root@example.test>");
                c.cmd("DATA");
                let r = c.cmd(&format!("Subject: {i}\r\n\r\nmessage {i}\r\n."));
                c.cmd("QUIT");
                r
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    }
    let got = s.received();
    assert_eq!(got.len(), 21);
    let big = got
        .iter()
        .find(|(_, m)| m.windows(12).any(|w| w == b"Subject: big"))
        .unwrap();
    let lines = big.1.windows(line.len()).filter(|w| *w == &line[..]).count();
    assert_eq!(lines, 5_000_000 / line.len(), "every line of the big message arrived");
    for i in 0..20 {
        let from = format!("sender sender{i}@remote.test\n");
        assert!(got.iter().any(|(e, _)| e.starts_with(&from)), "{from}");
    }
}
