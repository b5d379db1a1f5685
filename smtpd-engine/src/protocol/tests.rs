//! Session transcripts: bytes in, actions out, with the loop's outcomes played by hand.

use super::*;
use crate::settings::Settings;
use postern_lib::proto::cleanup::CleanupReply;

struct T {
    s: Session,
    input: LineBuffer,
    actions: Vec<Action>,
}

fn client(ip: &str) -> T {
    client_with(ip, Settings::for_tests())
}

fn client_with(ip: &str, cfg: Settings) -> T {
    let cfg = Arc::new(cfg);
    let mut s = Session::new(
        cfg.clone(),
        ClientInfo {
            addr: ip.parse().unwrap(),
            name: "unknown".into(),
        },
        None,
    );
    let actions = s.start();
    T {
        s,
        input: LineBuffer::new(cfg.line_limit, 65536),
        actions,
    }
}

impl T {
    /// Sends bytes; returns the replies produced (as text), keeping the other actions.
    fn send(&mut self, bytes: &[u8]) -> String {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = rest.len().min(self.input.free_space());
            self.input.push(&rest[..n]).unwrap();
            rest = &rest[n..];
            let a = self.s.process(&mut self.input);
            self.settle(a);
            if self.s.is_waiting() {
                break;
            }
        }
        self.replies()
    }
    fn replies(&mut self) -> String {
        let mut out = String::new();
        self.actions.retain(|a| match a {
            Action::Send(b) => {
                out.push_str(&String::from_utf8_lossy(b));
                false
            }
            _ => true,
        });
        out
    }
    fn feed(&mut self, f: impl FnOnce(&mut Session) -> Vec<Action>) -> String {
        let a = f(&mut self.s);
        self.settle(a);
        let more = self.s.process(&mut self.input);
        self.settle(more);
        self.replies()
    }
    /// Keeps `a`, answering each `Begin` as cleanup does: with the queue ID [`QID`].
    fn settle(&mut self, mut a: Vec<Action>) {
        while a.iter().any(|x| matches!(x, Action::Begin(_))) {
            self.actions.extend(a);
            a = self.s.cleanup_started(Some(QID.into()));
            a.extend(self.s.process(&mut self.input));
        }
        self.actions.extend(a);
    }
    fn content(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for a in &self.actions {
            if let Action::Data(d) = a {
                v.extend_from_slice(d);
            }
        }
        v
    }
    fn has(&self, f: impl Fn(&Action) -> bool) -> bool {
        self.actions.iter().any(f)
    }
}

/// The queue ID the tests' cleanup names.
const QID: &str = "0Vxq3Yk9c0012345";

fn queued() -> Option<CleanupReply> {
    Some(CleanupReply::Queued {
        queue_id: "4Xk9cZ1qfAB".into(),
    })
}

#[test]
fn greeting_and_ehlo() {
    let mut t = client("127.0.0.1");
    assert_eq!(t.replies(), "220 mail.example.test ESMTP Postern\r\n");
    let r = t.send(b"EHLO client.test\r\n");
    assert!(
        r.starts_with("250-mail.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"),
        "{r}"
    );
    for ext in ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "250 CHUNKING"] {
        assert!(r.contains(ext), "{ext} in {r}");
    }
    assert!(!r.contains("STARTTLS"), "no certificate, no STARTTLS");
    assert!(!r.contains("AUTH"), "AUTH disabled by default");
    assert_eq!(t.send(b"HELO x\r\n"), "250 mail.example.test\r\n");
}

#[test]
fn whole_transaction_pipelined() {
    let mut t = client("127.0.0.1");
    t.replies();
    let r = t.send(
        b"EHLO c\r\nMAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=x+2By\r\nRCPT TO:<x@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+40remote.test\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
    );
    assert!(r.contains("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data"), "{r}");
    assert!(!r.contains("221"), "waits for cleanup before reading QUIT");
    let sub = t
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Begin(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(sub.sender, "a@b.test");
    assert_eq!(sub.recipients[0].address, "x@remote.test");
    assert_eq!(sub.recipients[0].notify, ["SUCCESS", "FAILURE"]);
    assert_eq!(sub.recipients[0].orcpt.as_deref(), Some("rfc822;x@remote.test"));
    assert_eq!(sub.attributes["ret"], "HDRS");
    assert_eq!(sub.attributes["envid"], "x+y");
    assert_eq!(sub.attributes["body"], "8BITMIME");
    assert_eq!(sub.attributes["protocol"], "ESMTP");
    let content = String::from_utf8(t.content()).unwrap();
    assert!(content.starts_with("Received: from c (unknown [127.0.0.1])\r\n\tby mail.example.test (Postern) with ESMTP id 0Vxq3Yk9c0012345\r\n\tfor <x@remote.test>; "), "{content}");
    assert!(content.ends_with("Subject: hi\r\n\r\n.dot\r\nbody\r\n"), "{content}");
    assert!(t.has(|a| matches!(a, Action::End)));
    let r = t.feed(|s| s.cleanup_done(queued()));
    assert_eq!(r, "250 2.0.0 Ok: queued as 4Xk9cZ1qfAB\r\n221 2.0.0 Bye\r\n");
    assert!(t.has(|a| matches!(a, Action::Close)));
}

#[test]
fn sequence_and_syntax_errors() {
    let mut t = client("127.0.0.1");
    t.replies();
    assert_eq!(
        t.send(b"MAIL FROM:<a@b.test>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    t.send(b"EHLO c\r\n");
    assert_eq!(
        t.send(b"RCPT TO:<a@example.test>\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(t.send(b"DATA\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
    assert_eq!(
        t.send(b"MAIL FROM:a@b.test\r\n"),
        "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
    );
    assert_eq!(t.send(b"FOO\r\n"), "502 5.5.2 Error: command not recognized\r\n");
    assert_eq!(t.send(b"NO\0OP\r\n"), "500 5.5.2 Error: NUL character in command\r\n");
    assert_eq!(
        t.send(b"MAIL FROM:<a@b.test> FOO=1\r\n"),
        "555 5.5.4 Unsupported option: FOO\r\n"
    );
    assert_eq!(t.send(b"MAIL FROM:<a@b.test>\r\n"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        t.send(b"MAIL FROM:<a@b.test>\r\n"),
        "503 5.5.1 Error: nested MAIL command\r\n"
    );
    assert_eq!(t.send(b"DATA\r\n"), "554 5.5.1 Error: no valid recipients\r\n");
    assert_eq!(
        t.send(b"VRFY bob\r\n"),
        "252 2.0.0 Send some mail, I'll try my best\r\n"
    );
    let long = vec![b'x'; 5000];
    assert_eq!(t.send(&long), "");
    assert_eq!(
        t.send(b"\r\nNOOP\r\n"),
        "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"
    );
}

#[test]
fn too_many_errors_disconnects() {
    let mut cfg = Settings::for_tests();
    cfg.hard_error_limit = 3;
    let mut t = client_with("127.0.0.1", cfg);
    t.replies();
    let r = t.send(b"X\r\nY\r\nZ\r\nNOOP\r\n");
    assert!(
        r.ends_with("421 4.7.0 mail.example.test Error: too many errors\r\n"),
        "{r}"
    );
    assert!(!r.contains("250"));
    assert!(t.s.is_closed());
}

#[test]
fn size_limit_at_mail_and_during_data() {
    let mut cfg = Settings::for_tests();
    cfg.message_size_limit = 1000;
    let mut t = client_with("127.0.0.1", cfg);
    t.replies();
    t.send(b"EHLO c\r\n");
    assert_eq!(
        t.send(b"MAIL FROM:<a@b.test> SIZE=1001\r\n"),
        "552 5.3.4 Message size exceeds fixed limit\r\n"
    );
    t.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n");
    let mut body = Vec::new();
    for _ in 0..50 {
        body.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    body.extend_from_slice(b".\r\n");
    let r = t.send(&body);
    assert_eq!(r, "552 5.3.4 Error: message file too big\r\n");
    assert!(t.has(|a| matches!(a, Action::Abort)));
    assert!(!t.has(|a| matches!(a, Action::End)));
    assert_eq!(t.send(b"NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn relay_tricks_refused_outside_mynetworks() {
    let mut t = client("192.0.2.9");
    t.replies();
    t.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    for rcpt in [
        "x@remote.test",
        "x%remote.test@example.test",
        "remote.test!x@example.test",
        "@example.test:x@remote.test",
        "\"x@remote.test\"@example.test",
        "x%remote.test@EXAMPLE.test.",
    ] {
        let r = t.send(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
        assert!(
            r.starts_with("554 5.7.1 <") && r.contains("Relay access denied"),
            "{rcpt}: {r}"
        );
        assert!(
            !t.has(|a| matches!(a, Action::Lookup(_))),
            "no lookup for a refused client"
        );
    }
    // Local recipients: an alias is known without asking auth; others are looked up.
    assert_eq!(t.send(b"RCPT TO:<Root@Example.Test>\r\n"), "250 2.1.5 Ok\r\n");
    assert_eq!(t.send(b"RCPT TO:<nobody@example.test>\r\n"), "");
    assert!(t.has(|a| matches!(a, Action::Lookup(u) if u == "nobody")));
    let r = t.feed(|s| s.lookup_done(LookupResult::NoSuchUser));
    assert_eq!(
        r,
        "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local recipient table\r\n"
    );
    t.send(b"RCPT TO:<alice@example.test>\r\n");
    assert_eq!(t.feed(|s| s.lookup_done(LookupResult::Exists)), "250 2.1.5 Ok\r\n");
    t.send(b"RCPT TO:<bob@example.test>\r\n");
    assert_eq!(
        t.feed(|s| s.lookup_done(LookupResult::TempFail)),
        "451 4.3.0 <bob@example.test>: Temporary lookup failure\r\n"
    );
    assert_eq!(t.send(b"RCPT TO:<postmaster>\r\n"), "250 2.1.5 Ok\r\n");
}

#[test]
fn defer_unauth_destination_is_a_temporary_refusal() {
    let main = postern_lib::config::MainConfig {
        myhostname: "mail.example.test".into(),
        mydestination: vec!["example.test".into()],
        smtpd_relay_restrictions: vec![
            "permit_mynetworks".into(),
            "permit_sasl_authenticated".into(),
            "defer_unauth_destination".into(),
        ],
        alias_maps: Vec::new(),
        ..Default::default()
    };
    let cfg = Settings::load(&main, std::path::Path::new("/nonexistent"), "smtp").expect("not an open relay");
    let mut t = client_with("192.0.2.9", cfg);
    t.replies();
    let r = t.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x%remote.test@example.test>\r\n");
    assert!(
        r.ends_with("454 4.7.1 <x%remote.test@example.test>: Relay access denied\r\n"),
        "{r}"
    );
}

#[test]
fn mynetworks_may_relay() {
    let mut t = client("127.0.0.1");
    t.replies();
    let r = t.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\n");
    assert!(r.ends_with("250 2.1.5 Ok\r\n"), "{r}");
}

#[test]
fn dot_decoder_and_smuggling() {
    let mut d = data::DotDecoder::new();
    let mut out = Vec::new();
    // <LF>.<LF> and <LF>.<CR><LF> are content, not the end.
    let (n, done) = d.feed(b"a\n.\nb\n.\r\nc\r\n..x\r\n.\r\nAFTER", &mut out);
    assert!(done);
    assert_eq!(&out, b"a\r\n.\r\nb\r\n.\r\nc\r\n.x\r\n");
    assert_eq!(n, 20);
    assert!(d.bare_lf);
    // Byte by byte gives the same.
    let mut d = data::DotDecoder::new();
    let mut out2 = Vec::new();
    for b in b"a\n.\nb\n.\r\nc\r\n..x\r\n.\r\n" {
        d.feed(std::slice::from_ref(b), &mut out2);
    }
    assert_eq!(out, out2);
}

#[test]
fn bare_lf_reject_mode() {
    let mut cfg = Settings::for_tests();
    cfg.reject_bare_newline = true;
    let mut t = client_with("127.0.0.1", cfg);
    t.replies();
    t.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n");
    t.replies();
    assert_eq!(t.send(b"a\nb\r\n.\r\n"), "550 5.5.2 Error: bare <LF> received\r\n");
    assert_eq!(
        t.send(b"NOOP\n"),
        "521 5.5.2 mail.example.test Error: bare <LF> received\r\n"
    );
}

#[test]
fn bdat_chunks() {
    let mut t = client("127.0.0.1");
    t.replies();
    t.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\n");
    t.replies();
    assert_eq!(t.send(b"BDAT 5\r\nab\r\n."), "250 2.0.0 Ok: chunk received\r\n");
    assert_eq!(t.send(b"BDAT 3 LAST\r\nxyz"), "");
    assert!(t.has(|a| matches!(a, Action::End)));
    let content = t.content();
    assert!(content.ends_with(b"ab\r\n.xyz"), "raw, not unstuffed");
    assert_eq!(
        t.feed(|s| s.cleanup_done(queued())),
        "250 2.0.0 Ok: queued as 4Xk9cZ1qfAB\r\n"
    );
    // BDAT without MAIL: the chunk is still consumed, not read as commands.
    assert_eq!(t.send(b"BDAT 6\r\nQUIT\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
    assert!(!t.s.is_closed());
}

#[test]
fn cleanup_failure_is_451() {
    let mut t = client("127.0.0.1");
    t.replies();
    t.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n");
    t.replies();
    let r = t.feed(|s| s.cleanup_done(None));
    assert_eq!(r, "");
    assert_eq!(t.send(b"x\r\n.\r\n"), "451 4.3.0 Error: queue file write error\r\n");
    t.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\nx\r\n.\r\n");
    let r = t.feed(|s| {
        s.cleanup_done(Some(CleanupReply::Rejected {
            code: 550,
            dsn: postern_lib::dsn::Dsn::NOT_AUTHORIZED,
            text: "virus found".into(),
        }))
    });
    assert_eq!(r, "550 5.7.1 virus found\r\n");
}

#[test]
fn auth_plain_and_login() {
    let mut cfg = Settings::for_tests();
    cfg.auth_enabled = true;
    let mut t = client_with("127.0.0.1", cfg.clone());
    t.replies();
    assert!(t.send(b"EHLO c\r\n").contains("AUTH PLAIN LOGIN"));
    // "\0alice\0secret"
    assert_eq!(t.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), "");
    assert!(
        t.has(|a| matches!(a, Action::Verify { user, password } if user == "alice" && password.as_str() == "secret"))
    );
    assert_eq!(
        t.feed(|s| s.verify_done(VerifyResult::Ok("alice".into()))),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        t.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        "503 5.5.1 Error: already authenticated\r\n"
    );
    let mut t = client_with("127.0.0.1", cfg.clone());
    t.replies();
    t.send(b"EHLO c\r\n");
    assert_eq!(t.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(t.send(b"Ym9i\r\n"), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(t.send(b"d3Jvbmc=\r\n"), "");
    assert_eq!(
        t.feed(|s| s.verify_done(VerifyResult::Fail)),
        "535 5.7.8 Error: authentication failed\r\n"
    );
    t.send(b"AUTH PLAIN\r\n");
    assert_eq!(t.send(b"*\r\n"), "501 5.7.0 Authentication aborted\r\n");
    t.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert_eq!(
        t.feed(|s| s.verify_done(VerifyResult::TempFail)),
        "454 4.7.0 Temporary authentication failure\r\n"
    );
    // Not on loopback and no TLS: not offered.
    let mut t = client_with("192.0.2.1", cfg);
    t.replies();
    assert!(!t.send(b"EHLO c\r\n").contains("AUTH"));
    assert_eq!(
        t.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        "503 5.5.1 Error: authentication not enabled\r\n"
    );
}

#[test]
fn submission_requires_auth() {
    let mut cfg = Settings::for_tests();
    cfg.auth_enabled = true;
    cfg.restrictions.client = vec![policy::Rule::PermitSaslAuthenticated, policy::Rule::Reject];
    let mut t = client_with("127.0.0.1", cfg);
    t.replies();
    let r = t.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\n");
    assert!(
        r.ends_with("554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied\r\n"),
        "{r}"
    );
    t.send(b"RSET\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    t.feed(|s| s.verify_done(VerifyResult::Ok("alice".into())));
    let r = t.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\nx\r\n.\r\n");
    assert!(r.contains("250 2.1.5 Ok"), "{r}");
    let content = String::from_utf8(t.content()).unwrap();
    assert!(
        content.contains("(Authenticated sender: alice)\r\n\tby mail.example.test (Postern) with ESMTPA"),
        "{content}"
    );
}

#[test]
fn refuses_to_start_as_an_open_relay() {
    let main = postern_lib::config::MainConfig {
        myhostname: "mail.example.test".into(),
        smtpd_relay_restrictions: vec!["permit_mynetworks".into()],
        alias_maps: Vec::new(),
        ..Default::default()
    };
    let e = Settings::load(&main, std::path::Path::new("/nonexistent"), "smtp").unwrap_err();
    assert!(e.contains("open relay"), "{e}");
    let main = postern_lib::config::MainConfig {
        smtpd_recipient_restrictions: vec!["permit_mynetworks".into(), "reject".into()],
        ..main
    };
    assert!(Settings::load(&main, std::path::Path::new("/nonexistent"), "smtp").is_ok());
    let main = postern_lib::config::MainConfig {
        smtpd_client_restrictions: vec!["no_such_rule".into()],
        ..main
    };
    assert!(
        Settings::load(&main, std::path::Path::new("/nonexistent"), "smtp")
            .unwrap_err()
            .contains("no_such_rule")
    );
}

#[test]
fn recipient_limit() {
    let mut cfg = Settings::for_tests();
    cfg.recipient_limit = 2;
    let mut t = client_with("127.0.0.1", cfg);
    t.replies();
    let r =
        t.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@r.test>\r\nRCPT TO:<y@r.test>\r\nRCPT TO:<z@r.test>\r\n");
    assert!(r.ends_with("452 4.5.3 Error: too many recipients\r\n"), "{r}");
}

#[test]
fn smtputf8() {
    let mut t = client("127.0.0.1");
    t.replies();
    t.send(b"EHLO c\r\n");
    assert_eq!(
        t.send("MAIL FROM:<jörg@bücher.test>\r\n".as_bytes()),
        "553 5.6.7 Error: sender address needs SMTPUTF8\r\n"
    );
    assert_eq!(
        t.send("MAIL FROM:<jörg@bücher.test> SMTPUTF8\r\n".as_bytes()),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(t.send("RCPT TO:<ünï@remote.test>\r\n".as_bytes()), "250 2.1.5 Ok\r\n");
}

#[test]
fn starttls_resets_and_waits() {
    let mut cfg = Settings::for_tests();
    cfg.tls_available = true;
    let mut t = client_with("127.0.0.1", cfg);
    t.replies();
    assert!(t.send(b"EHLO c\r\n").contains("STARTTLS"));
    assert_eq!(
        t.send(b"STARTTLS\r\nMAIL FROM:<a@b.test>\r\n"),
        "220 2.0.0 Ready to start TLS\r\n"
    );
    assert!(t.has(|a| matches!(a, Action::StartTls)));
    assert!(t.s.is_waiting());
    t.input.take_pending();
    t.feed(|s| {
        s.tls_started(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
        })
    });
    assert_eq!(
        t.send(b"MAIL FROM:<a@b.test>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    assert!(!t.send(b"EHLO c\r\n").contains("STARTTLS"));
}

#[test]
fn fuzz_entry_never_panics() {
    for s in [
        &b""[..],
        b"MAIL",
        b"MAIL FROM:<",
        b"RCPT TO:<@:>",
        b"BDAT 99999999999999999999",
        b"AUTH",
        b"\xff\xfe",
    ] {
        command::fuzz_command(s);
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn command_parser_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            command::fuzz_command(&bytes);
        }

        #[test]
        fn fuzz_session_entry(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            fuzz_session(&bytes);
        }

        /// Whole buffers and one byte at a time decode alike: the same content, the same
        /// end, the same bare-LF verdict.
        #[test]
        fn dot_decoder_chunking_is_invisible(
            bytes in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..300)
        ) {
            let mut whole = data::DotDecoder::new();
            let mut out_whole = Vec::new();
            let (n_whole, end_whole) = whole.feed(&bytes, &mut out_whole);
            let mut single = data::DotDecoder::new();
            let mut out_single = Vec::new();
            let (mut n_single, mut end_single) = (0, false);
            for b in &bytes {
                let (n, end) = single.feed(std::slice::from_ref(b), &mut out_single);
                n_single += n;
                if end {
                    end_single = true;
                    break;
                }
            }
            prop_assert_eq!(out_whole, out_single);
            prop_assert_eq!((n_whole, end_whole), (n_single, end_single));
            prop_assert_eq!(whole.bare_lf, single.bare_lf);
        }

        #[test]
        fn session_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20)) {
            let mut t = client("192.0.2.1");
            for c in chunks {
                t.send(&c);
                if t.s.is_waiting() {
                    t.feed(|s| s.lookup_done(LookupResult::NoSuchUser));
                    t.feed(|s| s.cleanup_done(None));
                    t.feed(|s| s.verify_done(VerifyResult::Fail));
                }
            }
        }
    }
}
