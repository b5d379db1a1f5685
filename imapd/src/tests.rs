//! Session tests, sans-I/O: bytes in, bytes out, with a real Maildir in a temporary
//! directory and the auth daemon's answer given by hand.

use crate::session::{Need, Session, Settings};

fn settings(dir: &std::path::Path) -> Settings {
    Settings {
        mail_base: dir.to_path_buf(),
        max_literal: 1000,
        max_line: 200,
        hostname: "mail.example.test".into(),
        starttls: false,
    }
}

fn text(s: &mut Session) -> String {
    String::from_utf8_lossy(&s.take_output()).into_owned()
}

fn logged_in(dir: &std::path::Path) -> Session {
    let mut s = Session::new(settings(dir), true, false);
    text(&mut s);
    let need = s.input(b"a LOGIN alice secret\r\n");
    assert_eq!(
        need,
        Some(Need::Verify {
            user: "alice".into(),
            password: "secret".into()
        })
    );
    assert_eq!(s.auth_done(Ok("alice".into())), None);
    assert!(text(&mut s).starts_with("a OK [CAPABILITY"));
    s
}

#[test]
fn cleartext_login_is_disabled_off_loopback_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(settings(dir.path()), false, false);
    let greeting = text(&mut s);
    assert!(
        greeting.contains("LOGINDISABLED") && !greeting.contains("AUTH=PLAIN"),
        "{greeting}"
    );
    assert_eq!(s.input(b"a LOGIN alice secret\r\n"), None);
    assert_eq!(text(&mut s), "a NO [PRIVACYREQUIRED] LOGIN is disabled without TLS\r\n");
    assert_eq!(s.input(b"b AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n"), None);
    assert!(text(&mut s).starts_with("b NO [PRIVACYREQUIRED]"));
}

#[test]
fn authenticate_plain_with_continuation() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(settings(dir.path()), true, false);
    text(&mut s);
    assert_eq!(s.input(b"a AUTHENTICATE PLAIN\r\n"), None);
    assert_eq!(text(&mut s), "+ \r\n");
    let need = s.input(b"AGFsaWNlAHNlY3JldA==\r\n");
    assert_eq!(
        need,
        Some(Need::Verify {
            user: "alice".into(),
            password: "secret".into()
        })
    );
    s.auth_done(Err(crate::session::LoginFailure::Refused("wrong".into())));
    assert_eq!(text(&mut s), "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n");
}

#[test]
fn literals_continuations_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = logged_in(dir.path());
    // synchronising literal: "+" first
    s.input(b"a APPEND INBOX (\\Seen) {14}\r\n");
    assert_eq!(text(&mut s), "+ Ready for literal data\r\n");
    s.input(b"Subject: x\r\n\r\n\r\n");
    let out = text(&mut s);
    assert!(out.starts_with("a OK [APPENDUID "), "{out}");
    assert!(out.ends_with(" 1] Append completed\r\n"), "{out}");
    // LITERAL+: no continuation
    s.input(b"b APPEND INBOX {3+}\r\nx\r\n\r\n");
    let out = text(&mut s);
    assert!(out.contains("b OK [APPENDUID") && !out.contains('+'), "{out}");
    // too large: refused before it is read, the session goes on
    s.input(b"c APPEND INBOX {5000}\r\n");
    assert_eq!(text(&mut s), "c NO [TOOBIG] Literal too large\r\n");
    s.input(b"d NOOP\r\n");
    assert_eq!(text(&mut s), "d OK Completed\r\n");
    s.input(b"e FROB\r\n");
    assert_eq!(text(&mut s), "e BAD Unknown command\r\n");
    // a command line over the limit ends the session
    s.input(&[b'x'; 300]);
    assert!(text(&mut s).starts_with("* BYE"));
    assert!(s.closed());
}

#[test]
fn select_fetch_store_search_expunge() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = logged_in(dir.path());
    s.input(b"a APPEND INBOX {39+}\r\nFrom: a@example.test\r\nSubject: one\r\n\r\n\r\n");
    s.input(b"b APPEND INBOX {39+}\r\nFrom: b@example.test\r\nSubject: two\r\n\r\n\r\n");
    text(&mut s);
    s.input(b"c SELECT INBOX\r\n");
    let out = text(&mut s);
    assert!(
        out.contains("* 2 EXISTS\r\n") && out.contains("c OK [READ-WRITE]"),
        "{out}"
    );
    s.input(b"d FETCH 2 (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n");
    assert_eq!(
        text(&mut s),
        "* 2 FETCH (UID 2 FLAGS (\\Recent) RFC822.SIZE 39 BODY[HEADER.FIELDS (SUBJECT)] {16}\r\nSubject: two\r\n\r\n)\r\nd OK Fetch completed\r\n"
    );
    s.input(b"e STORE 1 +FLAGS (\\Deleted)\r\n");
    assert_eq!(
        text(&mut s),
        "* 1 FETCH (FLAGS (\\Deleted \\Recent))\r\ne OK Store completed\r\n"
    );
    s.input(b"f SEARCH DELETED\r\n");
    assert_eq!(text(&mut s), "* SEARCH 1\r\nf OK Search completed\r\n");
    s.input(b"g UID SEARCH FROM b@example\r\n");
    assert_eq!(text(&mut s), "* SEARCH 2\r\ng OK Search completed\r\n");
    s.input(b"h EXPUNGE\r\n");
    assert_eq!(text(&mut s), "* 1 EXPUNGE\r\nh OK Expunge completed\r\n");
    s.input(b"i UID FETCH 1:* (FLAGS)\r\n");
    assert_eq!(
        text(&mut s),
        "* 1 FETCH (UID 2 FLAGS (\\Recent))\r\ni OK Fetch completed\r\n"
    );
    s.input(b"j FETCH 1 (BODY[])\r\n");
    let out = text(&mut s);
    assert!(out.contains("FLAGS (\\Seen \\Recent)"), "{out}");
    // \Recent belongs to this session alone: RECENT, NEW and OLD see it
    s.input(b"k SEARCH RECENT\r\nl SEARCH NEW\r\nm SEARCH OLD\r\nn STATUS INBOX (RECENT)\r\n");
    assert_eq!(
        text(&mut s),
        "* SEARCH 1\r\nk OK Search completed\r\n* SEARCH\r\nl OK Search completed\r\n\
         * SEARCH\r\nm OK Search completed\r\n* STATUS INBOX (RECENT 1)\r\nn OK STATUS completed\r\n"
    );
    let mut other = logged_in(dir.path());
    other.input(b"o SELECT INBOX\r\n");
    assert!(text(&mut other).contains("* 0 RECENT\r\n"));
    other.input(b"p FETCH 1 (FLAGS)\r\nq STATUS INBOX (RECENT)\r\n");
    assert_eq!(
        text(&mut other),
        "* 1 FETCH (FLAGS (\\Seen))\r\np OK Fetch completed\r\n* STATUS INBOX (RECENT 0)\r\nq OK STATUS completed\r\n"
    );
}

#[test]
fn idle_reports_changes_by_another_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = logged_in(dir.path());
    let mut b = logged_in(dir.path());
    a.input(b"s SELECT INBOX\r\n");
    text(&mut a);
    a.input(b"i IDLE\r\n");
    assert_eq!(text(&mut a), "+ idling\r\n");
    b.input(b"x APPEND INBOX {3+}\r\nx\r\n\r\n");
    text(&mut b);
    a.poll();
    assert_eq!(text(&mut a), "* 1 EXISTS\r\n* 1 RECENT\r\n");
    a.input(b"DONE\r\n");
    assert_eq!(text(&mut a), "i OK Idle completed\r\n");
}

#[test]
fn garbage_never_panics_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = logged_in(dir.path());
    s.input(b"a APPEND INBOX {39+}\r\nFrom: a@example.test\r\nSubject: one\r\n\r\n\r\n");
    s.input(b"b SELECT INBOX\r\n");
    text(&mut s);
    let words: [&[u8]; 24] = [
        b"FETCH", b"STORE", b"SEARCH", b"UID", b"COPY", b"MOVE", b"1:*", b"*", b"(", b")", b"BODY[", b"]", b"<0.5>",
        b"{3}\r\n", b"\"x", b"NOT", b"OR", b"FLAGS", b"+FLAGS", b"\\Seen", b"HEADER", b"LIST", b"STATUS", b" ",
    ];
    let mut x: u32 = 7;
    for round in 0..3000 {
        let mut line = format!("t{round} ").into_bytes();
        for _ in 0..(round % 9) {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            line.extend_from_slice(words[(x >> 16) as usize % words.len()]);
            line.push(b' ');
        }
        line.pop();
        line.extend_from_slice(b"\r\n");
        s.input(&line);
        text(&mut s);
        if s.closed() {
            s = logged_in(dir.path());
            s.input(b"b SELECT INBOX\r\n");
            text(&mut s);
        }
    }
    s.input(b"z NOOP\r\n");
    let out = text(&mut s);
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn a_large_fetch_is_produced_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = logged_in(dir.path());
    let body = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(10_000));
    let store = postern_mailbox::Store::open(dir.path(), "alice").unwrap();
    let mut inbox = store.folder("INBOX").unwrap();
    for _ in 0..120 {
        inbox.append(body.as_bytes(), Default::default(), None).unwrap();
    }
    s.input(b"b SELECT INBOX\r\n");
    text(&mut s);
    s.input(b"c FETCH 1:* (BODY.PEEK[])\r\nd NOOP\r\n");
    let mut total = text(&mut s);
    assert!(s.busy(), "paused after the first chunk");
    assert!(total.len() < 2 * 1024 * 1024);
    let mut rounds = 0;
    while s.busy() {
        s.resume();
        total.push_str(&text(&mut s));
        rounds += 1;
    }
    assert!(rounds >= 1, "{rounds}");
    assert_eq!(total.matches(" FETCH (BODY[] {").count(), 120);
    assert!(
        total.ends_with("c OK Fetch completed\r\nd OK Completed\r\n"),
        "pipelined NOOP runs after"
    );
}

/// A message over [`crate::cmd_fetch::STREAM_ABOVE`] (stored with bare LFs, as local
/// delivery may) is sent from its file a chunk at a time: exact CRLF bytes, twice when
/// asked twice, with the other items around it, and never much of it in memory.
#[test]
fn a_large_message_is_streamed_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = logged_in(dir.path());
    let mut msg = b"Subject: big\n\n".to_vec();
    for i in 0..200_000 {
        msg.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    let store = postern_mailbox::Store::open(dir.path(), "alice").unwrap();
    let mut inbox = store.folder("INBOX").unwrap();
    inbox.append(&msg, Default::default(), None).unwrap();
    s.input(b"b SELECT INBOX\r\n");
    text(&mut s);
    s.input(b"c FETCH 1 (UID BODY.PEEK[] RFC822.SIZE RFC822)\r\n");
    let mut total = s.take_output();
    let mut rounds = 0;
    while s.busy() {
        s.resume();
        let part = s.take_output();
        assert!(part.len() < 2 * 1024 * 1024, "{}", part.len());
        total.extend_from_slice(&part);
        rounds += 1;
    }
    assert!(rounds > 2, "{rounds}");
    let crlf = postern_mailbox::folder::to_crlf(msg);
    let mut want = format!("* 1 FETCH (UID 1 BODY[] {{{}}}\r\n", crlf.len()).into_bytes();
    want.extend_from_slice(&crlf);
    want.extend_from_slice(format!(" RFC822.SIZE {} RFC822 {{{}}}\r\n", crlf.len(), crlf.len()).as_bytes());
    want.extend_from_slice(&crlf);
    want.extend_from_slice(b" FLAGS (\\Seen \\Recent))\r\nc OK Fetch completed\r\n");
    assert!(
        total == want,
        "{}",
        String::from_utf8_lossy(&total[total.len() - 200..])
    );
}

#[test]
fn fuzz_entry_point_survives_garbage() {
    let mut x: u32 = 99;
    for len in [0usize, 1, 7, 64, 500, 5000] {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                let alphabet = b"a1 LOGIN SELECT {5}\r\n()[]\"\\*%~+ AUTHENTICATE PLAIN STARTTLS";
                alphabet[(x >> 16) as usize % alphabet.len()]
            })
            .collect();
        crate::fuzz_input(&data);
    }
}

/// Regression (cargo-fuzz, imap_command target): `~` followed by `}` made the literal
/// parser slice backwards and panic.
#[test]
fn literal8_marker_without_brace_is_refused_not_a_panic() {
    crate::fuzz_input(b"\r\nhI. ~}\x00\r\no\r");
    assert!(crate::parse::command(b"a APPEND INBOX ~}\r\n").is_err());
}

#[test]
fn an_unreachable_auth_daemon_is_unavailable_not_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(settings(dir.path()), true, false);
    text(&mut s);
    assert!(matches!(
        s.input(b"a LOGIN alice secret\r\n"),
        Some(Need::Verify { .. })
    ));
    s.auth_done(Err(crate::session::LoginFailure::Unavailable(
        "IPC peer closed the connection".into(),
    )));
    assert_eq!(
        text(&mut s),
        "a NO [UNAVAILABLE] Temporary authentication failure, try again later\r\n"
    );
}

#[test]
fn a_search_of_more_than_the_key_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(
        Settings {
            max_line: 64 * 1024,
            ..settings(dir.path())
        },
        true,
        false,
    );
    text(&mut s);
    s.input(b"a LOGIN alice secret\r\n");
    s.auth_done(Ok("alice".into()));
    s.input(b"b APPEND INBOX {21+}\r\nSubject: one\r\n\r\nbody\r\n");
    s.input(b"c SELECT INBOX\r\n");
    text(&mut s);
    let many = |n: usize| format!("d SEARCH{}\r\n", " SEEN".repeat(n));
    s.input(many(crate::cmd_search::MAX_SEARCH_KEYS + 1).as_bytes());
    assert_eq!(text(&mut s), "d BAD [LIMIT] More than 1000 search keys\r\n");
    // NOT and OR count as keys too
    s.input(format!("e SEARCH{}\r\n", " NOT SEEN".repeat(501)).as_bytes());
    assert!(text(&mut s).starts_with("e BAD [LIMIT]"));
    s.input(format!("f SEARCH{}\r\n", " OR BODY x TEXT y".repeat(9)).as_bytes());
    assert_eq!(text(&mut s), "f BAD [LIMIT] More than 16 BODY and TEXT keys\r\n");
    s.input(format!("g SEARCH{}\r\n", " OR BODY x TEXT y".repeat(8)).as_bytes());
    assert_eq!(text(&mut s), "* SEARCH 1\r\ng OK Search completed\r\n");
    s.input(
        many(crate::cmd_search::MAX_SEARCH_KEYS - 1)
            .replace(" SEEN", " UNSEEN")
            .as_bytes(),
    );
    assert_eq!(text(&mut s), "* SEARCH 1\r\nd OK Search completed\r\n");
}

fn big_session(dir: &std::path::Path) -> Session {
    let mut s = Session::new(
        Settings {
            max_literal: 10 * 1024 * 1024,
            ..settings(dir)
        },
        true,
        false,
    );
    text(&mut s);
    s.input(b"a LOGIN alice secret\r\n");
    s.auth_done(Ok("alice".into()));
    text(&mut s);
    s
}

fn tmp_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("alice/tmp")).map_or(0, |d| d.count())
}

/// APPEND literals over [`crate::session::SPOOL_ABOVE`] go to tmp/ as they arrive (line
/// ends converted), become messages with the right UIDs (MULTIAPPEND too), and a
/// session that ends mid-literal leaves nothing behind.
#[test]
fn large_append_literals_are_spooled_to_tmp() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = big_session(dir.path());
    let mut msg = b"Subject: big\n\n".to_vec();
    while msg.len() < 300_000 {
        msg.extend_from_slice(b"0123456789 abcdefghij\n");
    }
    s.input(format!("b APPEND INBOX (\\Seen) {{{}}}\r\n", msg.len()).as_bytes());
    assert_eq!(text(&mut s), "+ Ready for literal data\r\n");
    let (first, rest) = msg.split_at(100_000);
    s.input(first);
    assert_eq!(tmp_files(dir.path()), 1, "received into tmp/");
    s.input(rest);
    s.input(format!(" {{{}+}}\r\n", msg.len()).as_bytes());
    s.input(&msg);
    s.input(b"\r\n");
    let out = text(&mut s);
    assert!(
        out.contains("b OK [APPENDUID ") && out.contains(" 1:2] Append completed"),
        "{out}"
    );
    assert_eq!(tmp_files(dir.path()), 0);
    s.input(b"c SELECT INBOX\r\nd FETCH 1:2 (FLAGS BODY.PEEK[])\r\n");
    let out = s.take_output();
    let crlf = postern_mailbox::folder::to_crlf(msg.clone());
    let count = out.windows(crlf.len()).filter(|w| *w == &crlf[..]).count();
    assert_eq!(count, 2);
    assert!(String::from_utf8_lossy(&out).contains("* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[] {"));

    // gone mid-literal: no file, no message
    s.input(format!("e APPEND INBOX {{{}+}}\r\n", msg.len()).as_bytes());
    s.input(&msg[..200_000]);
    assert_eq!(tmp_files(dir.path()), 1);
    drop(s);
    assert_eq!(tmp_files(dir.path()), 0);
    let store = postern_mailbox::Store::open(dir.path(), "alice").unwrap();
    assert_eq!(store.folder("INBOX").unwrap().messages().len(), 2);
}

/// A synchronising literal to a folder that does not exist, or over the quota, is
/// refused before it is read; a LITERAL+ one is read, thrown away and refused.
#[test]
fn large_append_literals_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = big_session(dir.path());
    s.input(b"b APPEND Nowhere {500000}\r\n");
    assert_eq!(text(&mut s), "b NO [TRYCREATE] No such mailbox\r\n");
    s.input(b"c APPEND Nowhere {100000+}\r\n");
    s.input(&vec![b'x'; 100_000]);
    s.input(b"\r\n");
    assert_eq!(text(&mut s), "c NO [TRYCREATE] No such mailbox\r\n");
    s.store.as_mut().unwrap().set_quota(Some(50_000));
    s.input(b"d APPEND INBOX {500000}\r\n");
    assert_eq!(text(&mut s), "d NO [OVERQUOTA] Quota exceeded\r\n");
    s.input(b"e APPEND INBOX {100000+}\r\n");
    s.input(&vec![b'x'; 100_000]);
    s.input(b"\r\nf NOOP\r\n");
    assert_eq!(text(&mut s), "e NO [OVERQUOTA] Quota exceeded\r\nf OK Completed\r\n");
    assert_eq!(tmp_files(dir.path()), 0);
}

/// BODY[] of a large message beside BODYSTRUCTURE and a part: the body is streamed, the
/// other items made from the message as before, the bytes those of the message.
#[test]
fn a_large_message_is_streamed_beside_items_that_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = logged_in(dir.path());
    let mut msg = b"Subject: big\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    while msg.len() < 1_000_000 {
        msg.extend_from_slice(b"0123456789 abcdefghij\r\n");
    }
    let store = postern_mailbox::Store::open(dir.path(), "alice").unwrap();
    store
        .folder("INBOX")
        .unwrap()
        .append(&msg, Default::default(), None)
        .unwrap();
    s.input(b"b SELECT INBOX\r\n");
    text(&mut s);
    s.input(b"c FETCH 1 (BODYSTRUCTURE BODY.PEEK[] BODY.PEEK[1]<0.10>)\r\n");
    let mut total = s.take_output();
    assert!(s.busy(), "streamed, not all at once");
    while s.busy() {
        s.resume();
        total.extend_from_slice(&s.take_output());
    }
    let head = String::from_utf8_lossy(&total[..200]).into_owned();
    assert!(
        head.starts_with("* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\""),
        "{head}"
    );
    let mut want = format!(" BODY[] {{{}}}\r\n", msg.len()).into_bytes();
    want.extend_from_slice(&msg);
    want.extend_from_slice(b" BODY[1]<0> {10}\r\n0123456789)\r\nc OK Fetch completed\r\n");
    assert!(total.ends_with(&want));
}

/// A MULTIAPPEND's messages count together against the quota before each is read: the
/// first fits, the second would not with it, so it is refused unread and nothing stays.
#[test]
fn multiappend_literals_count_together_against_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = big_session(dir.path());
    s.store.as_mut().unwrap().set_quota(Some(150_000));
    s.input(b"b APPEND INBOX {100000}\r\n");
    assert_eq!(text(&mut s), "+ Ready for literal data\r\n");
    s.input(&vec![b'x'; 100_000]);
    s.input(b" {100000}\r\n");
    assert_eq!(text(&mut s), "b NO [OVERQUOTA] Quota exceeded\r\n");
    assert_eq!(tmp_files(dir.path()), 0);
    s.input(b"c APPEND INBOX {100000}\r\n");
    assert_eq!(text(&mut s), "+ Ready for literal data\r\n");
    s.input(&vec![b'y'; 100_000]);
    s.input(b"\r\n");
    assert!(text(&mut s).starts_with("c OK [APPENDUID "));
}

#[test]
fn a_new_keyword_is_announced_to_every_session_before_its_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = logged_in(dir.path());
    let mut b = logged_in(dir.path());
    a.input(b"x APPEND INBOX {3+}\r\nx\r\n\r\n");
    text(&mut a);
    a.input(b"s SELECT INBOX\r\n");
    text(&mut a);
    b.input(b"s SELECT INBOX\r\n");
    text(&mut b);
    a.input(b"t STORE 1 +FLAGS ($Junk)\r\n");
    assert_eq!(
        text(&mut a),
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk \\*)] Flags permitted\r\n\
         * 1 FETCH (FLAGS (\\Recent $Junk))\r\nt OK Store completed\r\n"
    );
    b.input(b"n NOOP\r\n");
    assert_eq!(
        text(&mut b),
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk \\*)] Flags permitted\r\n\
         * 1 FETCH (UID 1 FLAGS ($Junk))\r\nn OK Completed\r\n"
    );
    // known keywords: no more FLAGS
    a.input(b"u STORE 1 -FLAGS ($Junk)\r\n");
    assert_eq!(text(&mut a), "* 1 FETCH (FLAGS (\\Recent))\r\nu OK Store completed\r\n");
}
