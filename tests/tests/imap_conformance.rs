//! IMAP syntax, MIME and reply-text conformance (issue 11, the failures Dovecot's imaptest
//! measured), each against the real imapd under the real master, over a raw socket, with
//! exact expected responses:
//!
//! - atoms with `~` and `[` (`LIST "" ~foo`, `SELECT ~foo`, a mailbox of every ATOM-CHAR)
//!   are OK or NO, never BAD, and `BODY[HEADER.FIELDS (A B)]` still parses;
//! - APPEND of binary content in a literal8 (`~{n}`, RFC 3516) comes back byte for byte
//!   as `BINARY[n]` in a literal8 with the exact size, while `BODY[n]` and `BODY[]` never
//!   carry a NUL (the part is kept base64-encoded, as Dovecot keeps it);
//! - quoted-printable decoding for BINARY (RFC 2045 §6.7): trailing whitespace dropped,
//!   `=` + whitespace + line end a soft break, BINARY.SIZE the decoded length;
//! - ENVELOPE address groups (empty ones too), route addresses, comments, raw names;
//! - `4294967295` is a UID, never `*`;
//! - LSUB `%` lists unsubscribed parents of subscribed children as `\Noselect`
//!   (RFC 3501 §6.3.9); LIST (SUBSCRIBED RECURSIVEMATCH) leaves out a parent whose
//!   subscribed children match themselves (RFC 5258 §3.5);
//! - every `OK [CODE]` has text after the code (`* OK [COPYUID ...] Moved`);
//! - commands pipelined in one write are answered in order, no slower than one by one;
//! - BINARY of TEXT and of a part's sections (as Dovecot has them, imaptest's
//!   fetch-binary-mime): `TEXT` decoded, `n.MIME` as it is;
//! - SENTBEFORE/SENTON/SENTSINCE with `n:*` sets, `n` past the last message (imaptest's
//!   search-date 2a; `8:*` of 5 messages is message 5);
//! - SEARCH skips a message another session expunged that this one was not yet told of.

use postern_tests::imap_raw::ImapRaw;
use postern_tests::{Instance, deliver_maildir, imap_instance};
use std::io::Write;
use std::time::{Duration, Instant};

/// A session of alice's.
fn login(port: u16) -> ImapRaw {
    ImapRaw::login(port, "alice", "alice-pw")
}

/// `* 1 FETCH (ITEM ~{n}\r\n<data>)` and `TAG`'s OK: a FETCH answer in a literal8.
fn literal8_answer(tag: &str, item: &str, data: &[u8]) -> Vec<u8> {
    let mut want = format!("* 1 FETCH ({item} ~{{{}}}\r\n", data.len()).into_bytes();
    want.extend_from_slice(data);
    want.extend_from_slice(format!(")\r\n{tag} OK Fetch completed\r\n").as_bytes());
    want
}

/// A message whose first part is `data` as `Content-Transfer-Encoding: binary`, and whose
/// second (when `text`) is a 7bit `plain text`.
fn binary_message(data: &[u8], text: bool) -> Vec<u8> {
    let mut m = b"From: a@example.test\r\nSubject: bin\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n--xx\r\nContent-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: binary\r\n\r\n"
        .to_vec();
    m.extend_from_slice(data);
    if text {
        m.extend_from_slice(b"\r\n--xx\r\nContent-Type: text/plain\r\n\r\nplain text");
    }
    m.extend_from_slice(b"\r\n--xx--\r\n");
    m
}

fn started() -> (Instance, u16) {
    let (mut inst, port) = imap_instance("alice", "alice-pw");
    inst.start();
    (inst, port)
}

/// The tagged line of an answer.
fn tagged(out: &str) -> &str {
    out.trim_end().rsplit("\r\n").next().unwrap_or("")
}

#[test]
fn atoms_with_tilde_and_brackets_are_ok_or_no_never_bad() {
    let (_inst, port) = started();
    let mut c = login(port);
    assert_eq!(c.cmd("a", "LIST \"\" ~foo"), "a OK LIST completed\r\n");
    assert!(c.cmd("b", "SELECT ~foo").starts_with("b NO "));
    let every = "!#$&'+,-.0123456789:;<=>?@^_`|[}";
    let out = c.cmd("c", &format!("SELECT {every}"));
    assert!(out.starts_with("c NO "), "{out}");
    assert_eq!(c.cmd("d", "LIST \"\" foo]"), "d OK LIST completed\r\n");
    assert!(c.cmd("e", "SELECT foo]").starts_with("e NO "));
    assert!(c.cmd("f", "SELECT a[b").starts_with("f NO "));
    let created = c.cmd("g", "CREATE ~foo");
    assert!(
        created.starts_with("g OK [MAILBOXID (F") && created.ends_with(")] CREATE completed\r\n"),
        "{created}"
    );
    assert_eq!(
        c.cmd("h", "LIST \"\" ~f%"),
        "* LIST (\\HasNoChildren) \".\" ~foo\r\nh OK LIST completed\r\n"
    );
    assert_eq!(
        c.cmd("i", "STATUS ~foo (MESSAGES)"),
        "* STATUS ~foo (MESSAGES 0)\r\ni OK STATUS completed\r\n"
    );
    assert!(c.cmd("j", "SELECT ~foo").contains("\r\nj OK [READ-WRITE]"));
    // a section's spaces and lists still belong to its atom
    c.append("k", "~foo", b"From: a@b\r\nSubject: s\r\n\r\nbody\r\n", false);
    assert_eq!(
        c.cmd("m", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])"),
        "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT FROM)] {25}\r\nFrom: a@b\r\nSubject: s\r\n\r\n)\r\nm OK Fetch completed\r\n"
    );
    // a literal8 where no literal8 belongs is still a literal, and a lone `~` an atom
    assert!(c.cmd("n", "SELECT ~").starts_with("n NO "));
}

#[test]
fn binary_append_keeps_the_bytes_and_a_nul_never_goes_in_a_plain_literal() {
    let (_inst, port) = started();
    let mut c = login(port);
    // NUL, bare LF, bare CR, 0xff
    let content = b"\x00\x01bin\nary\r\x00\xff\r\n\x00end";
    let out = c.append("a", "INBOX", &binary_message(content, true), true);
    assert!(tagged(&out).starts_with("a OK [APPENDUID "), "{out}");
    c.cmd("s", "SELECT INBOX");
    c.send(b"b FETCH 1 (BINARY.PEEK[1])\r\n");
    let got = c.until_bytes("b");
    let want = literal8_answer("b", "BINARY[1]", content);
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    assert_eq!(
        c.cmd("c", "FETCH 1 (BINARY.SIZE[1])"),
        format!(
            "* 1 FETCH (BINARY.SIZE[1] {})\r\nc OK Fetch completed\r\n",
            content.len()
        )
    );
    // the 7bit part as it is, in a plain literal
    assert_eq!(
        c.cmd("d", "FETCH 1 (BINARY.PEEK[2])"),
        "* 1 FETCH (BINARY[2] {10}\r\nplain text)\r\nd OK Fetch completed\r\n"
    );
    // BODY[1]: the encoded form (base64 of the content), no NUL
    assert_eq!(
        c.cmd("e", "FETCH 1 (BODY.PEEK[1])"),
        "* 1 FETCH (BODY[1] {24}\r\nAAFiaW4KYXJ5DQD/DQoAZW5k)\r\ne OK Fetch completed\r\n"
    );
    assert!(
        c.cmd("f", "FETCH 1 (BODY.PEEK[1.MIME])")
            .contains("Content-Transfer-Encoding: base64\r\n"),
    );
    c.send(b"g FETCH 1 (BODY.PEEK[])\r\n");
    let whole = c.until_bytes("g");
    assert!(!whole.contains(&0) && whole.ends_with(b"g OK Fetch completed\r\n"));
    // the size said is the size sent
    let size_line = c.cmd("h", "FETCH 1 (RFC822.SIZE)");
    let size: usize = size_line
        .split("RFC822.SIZE ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let head = String::from_utf8_lossy(&whole[..whole.len().min(40)]).into_owned();
    assert!(
        head.starts_with(&format!("* 1 FETCH (BODY[] {{{size}}}\r\n")),
        "{head} vs {size}"
    );
}

#[test]
fn a_large_binary_append_keeps_its_bytes_too() {
    // over the 64 KB above which APPEND literals are written to tmp/ as they arrive
    let (_inst, port) = started();
    let mut c = login(port);
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    assert!(content.contains(&0) && content.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
    let out = c.append("a", "INBOX", &binary_message(&content, false), true);
    assert!(tagged(&out).starts_with("a OK [APPENDUID "), "{out}");
    c.cmd("s", "SELECT INBOX");
    assert_eq!(
        c.cmd("b", "FETCH 1 (BINARY.SIZE[1])"),
        "* 1 FETCH (BINARY.SIZE[1] 200000)\r\nb OK Fetch completed\r\n"
    );
    c.send(b"c FETCH 1 (BINARY.PEEK[1])\r\n");
    let want = literal8_answer("c", "BINARY[1]", &content);
    assert!(c.until_bytes("c") == want, "BINARY[1] is not the appended bytes");
    c.send(b"d FETCH 1 (BODY.PEEK[])\r\n");
    assert!(!c.until_bytes("d").contains(&0));
}

#[test]
fn a_stored_nul_is_sent_as_0x80_in_body_and_exactly_in_binary() {
    // a message that came with a NUL (another program's delivery): BODY and RFC822 send
    // it as 0x80 (a literal carries no NUL, RFC 3501 CHAR8), as Dovecot does; BINARY in
    // a literal8, exactly
    let (mut inst, port) = imap_instance("alice", "alice-pw");
    deliver_maildir(&inst, "alice", "1.m1.host", b"Subject: nul\n\nab\x00cd\n");
    let mut big = b"Subject: big nul\n\n".to_vec();
    while big.len() < 400_000 {
        big.extend_from_slice(b"x\x00y\n");
    }
    deliver_maildir(&inst, "alice", "2.m2.host", &big);
    inst.start();
    let mut c = login(port);
    c.cmd("s", "SELECT INBOX");
    c.send(b"a FETCH 1 (BODY.PEEK[TEXT] BINARY.PEEK[1] BODY.PEEK[1])\r\n");
    let got = c.until_bytes("a");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(
            b"* 1 FETCH (BODY[TEXT] {7}\r\nab\x80cd\r\n \
BINARY[1] ~{7}\r\nab\x00cd\r\n BODY[1] {7}\r\nab\x80cd\r\n)\r\na OK Fetch completed\r\n"
        )
    );
    assert!(got.contains(&0x80) && got.contains(&0));
    for (tag, items) in [
        ("b", "BODY.PEEK[]"),
        ("c", "(RFC822.SIZE BODY.PEEK[] BODY.PEEK[HEADER])"),
    ] {
        for n in [1, 2] {
            c.send(format!("{tag} FETCH {n} {items}\r\n").as_bytes());
            let got = c.until_bytes(tag);
            assert!(!got.contains(&0), "{tag} {n}: a NUL in a literal");
            assert!(got.ends_with(format!("{tag} OK Fetch completed\r\n").as_bytes()));
        }
    }
    c.send(b"d FETCH 2 BODY.PEEK[]\r\n");
    let got = c.until_bytes("d");
    let crlf_size = big.len() + big.iter().filter(|&&b| b == b'\n').count();
    assert!(got.starts_with(format!("* 2 FETCH (BODY[] {{{crlf_size}}}\r\nSubject: big nul\r\n").as_bytes()));
    assert_eq!(
        got.iter().filter(|&&b| b == 0x80).count(),
        big.iter().filter(|&&b| b == 0).count()
    );
}

#[test]
fn quoted_printable_binary_is_decoded_as_rfc2045_says() {
    let (_inst, port) = started();
    let mut c = login(port);
    let msg =
        b"From: a@example.test\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
hello \t \r\nbar=  \r\nfoo=09bar\t\r\nfoo=\r\n=3D =20\r\nlast=\t\r\n";
    c.append("a", "INBOX", msg, false);
    c.cmd("s", "SELECT INBOX");
    let decoded = "hello\r\nbarfoo\tbar\r\nfoo= \x20\r\nlast";
    assert_eq!(
        c.cmd("b", "FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])"),
        format!(
            "* 1 FETCH (BINARY.SIZE[1] {0} BINARY[1] {{{0}}}\r\n{decoded})\r\nb OK Fetch completed\r\n",
            decoded.len()
        )
    );
    assert_eq!(
        c.cmd("c", "FETCH 1 (BINARY.PEEK[1]<5.10>)"),
        "* 1 FETCH (BINARY[1]<5> {10}\r\n\r\nbarfoo\tb)\r\nc OK Fetch completed\r\n"
    );
}

#[test]
fn envelope_addresses_groups_routes_and_comments() {
    let (_inst, port) = started();
    let mut c = login(port);
    let msgs: [&[u8]; 5] = [
        b"Date: Sat, 01 Feb 2007 01:02:03 +0200\r\nFrom: user@domain (Real Name)\r\n\
To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\nCc: empty:;, x@y\r\n\r\nbody\r\n",
        b"From: <@route:user@domain>\r\nTo: <@a,@b:u@d>\r\n\r\nbody\r\n",
        b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: \"A \\\"B\\\" C\" <a@b>, =?utf-8?q?J=C3=B6rg?= <j@x>\r\n\r\nbody\r\n",
        b"From: Real Name <user@domain>\r\nSender: \r\nReply-To: \r\nTo: undisclosed-recipients:;\r\n\r\nbody\r\n",
        b"From: nodomain, Mary Smith <mary@x.test> (her)\r\nBcc: \r\n\r\nbody\r\n",
    ];
    for (i, m) in msgs.iter().enumerate() {
        let out = c.append(&format!("a{i}"), "INBOX", m, false);
        assert!(tagged(&out).contains(" OK [APPENDUID"), "{out}");
    }
    c.cmd("s", "SELECT INBOX");
    let out = c.cmd("f", "FETCH 1:* ENVELOPE");
    let want = [
        "* 1 FETCH (ENVELOPE (\"Sat, 01 Feb 2007 01:02:03 +0200\" NIL ((\"Real Name\" NIL \"user\" \"domain\")) \
((\"Real Name\" NIL \"user\" \"domain\")) ((\"Real Name\" NIL \"user\" \"domain\")) \
((NIL NIL \"group\" NIL)(NIL NIL \"g1\" \"d1.org\")(NIL NIL \"g2\" \"d2.org\")(NIL NIL NIL NIL)\
(NIL NIL \"group2\" NIL)(NIL NIL \"g3\" \"d3.org\")(NIL NIL NIL NIL)) \
((NIL NIL \"empty\" NIL)(NIL NIL NIL NIL)(NIL NIL \"x\" \"y\")) NIL NIL NIL))",
        "* 2 FETCH (ENVELOPE (NIL NIL ((NIL \"@route\" \"user\" \"domain\")) ((NIL \"@route\" \"user\" \"domain\")) \
((NIL \"@route\" \"user\" \"domain\")) ((NIL \"@a,@b\" \"u\" \"d\")) NIL NIL NIL NIL))",
        "* 3 FETCH (ENVELOPE (NIL NIL ((NIL NIL \"user-from\" \"domain.org\")) ((NIL NIL \"user-from\" \"domain.org\")) \
((NIL NIL \"user-from\" \"domain.org\")) ((\"A \\\"B\\\" C\" NIL \"a\" \"b\")(\"=?utf-8?q?J=C3=B6rg?=\" NIL \"j\" \"x\")) \
NIL NIL NIL NIL))",
        "* 4 FETCH (ENVELOPE (NIL NIL ((\"Real Name\" NIL \"user\" \"domain\")) ((\"Real Name\" NIL \"user\" \"domain\")) \
((\"Real Name\" NIL \"user\" \"domain\")) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL))",
        "* 5 FETCH (ENVELOPE (NIL NIL ((NIL NIL \"nodomain\" \"\")(\"Mary Smith\" NIL \"mary\" \"x.test\")) \
((NIL NIL \"nodomain\" \"\")(\"Mary Smith\" NIL \"mary\" \"x.test\")) \
((NIL NIL \"nodomain\" \"\")(\"Mary Smith\" NIL \"mary\" \"x.test\")) NIL NIL NIL NIL NIL))",
    ];
    assert_eq!(out, format!("{}\r\nf OK Fetch completed\r\n", want.join("\r\n")));
}

#[test]
fn uid_4294967295_is_a_number_never_star() {
    let (_inst, port) = started();
    let mut c = login(port);
    for t in ["a1", "a2"] {
        c.append(t, "INBOX", b"Subject: x\r\n\r\nx\r\n", false);
    }
    c.cmd("s", "SELECT INBOX");
    assert_eq!(c.cmd("b", "UID FETCH 4294967295 UID"), "b OK Fetch completed\r\n");
    assert_eq!(
        c.cmd("c", "UID FETCH 4294967295:* UID"),
        "* 2 FETCH (UID 2)\r\nc OK Fetch completed\r\n"
    );
    assert_eq!(
        c.cmd("d", "UID SEARCH UID 4294967295"),
        "* SEARCH\r\nd OK Search completed\r\n"
    );
    assert_eq!(c.cmd("e", "UID FETCH 4294967296 UID"), "e BAD Invalid sequence set\r\n");
    assert_eq!(
        c.cmd("f", "UID FETCH * UID"),
        "* 2 FETCH (UID 2)\r\nf OK Fetch completed\r\n"
    );
}

#[test]
fn lsub_lists_unsubscribed_parents_and_recursivematch_leaves_out_matching_children() {
    let (_inst, port) = started();
    let mut c = login(port);
    for name in [
        "box",
        "box.test",
        "box.test2",
        "box.test2.test",
        "box.test3.test3",
        "box.t7.t7",
        "box.t8.t8",
        "box.t8.t9",
    ] {
        let created = c.cmd("c", &format!("CREATE {name}"));
        assert!(created.ends_with(")] CREATE completed\r\n"), "{created}");
    }
    for name in [
        "box.test",
        "box.test2.test",
        "box.test3.test3",
        "box.t7.t7",
        "box.t8.t8",
        "box.t8.t9",
    ] {
        assert_eq!(c.cmd("s", &format!("SUBSCRIBE {name}")), "s OK SUBSCRIBE completed\r\n");
    }
    assert_eq!(
        c.cmd("a", "LSUB \"\" box.%"),
        "* LSUB (\\Noselect) \".\" box.t7\r\n* LSUB (\\Noselect) \".\" box.t8\r\n\
* LSUB () \".\" box.test\r\n* LSUB (\\Noselect) \".\" box.test2\r\n* LSUB (\\Noselect) \".\" box.test3\r\n\
a OK LSUB completed\r\n"
    );
    assert_eq!(
        c.cmd("b", "LSUB \"\" *test"),
        "* LSUB () \".\" box.test\r\n* LSUB () \".\" box.test2.test\r\nb OK LSUB completed\r\n"
    );
    assert_eq!(
        c.cmd("d", "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" *t7"),
        "* LIST (\\HasNoChildren \\Subscribed) \".\" box.t7.t7\r\nd OK LIST completed\r\n"
    );
    assert_eq!(
        c.cmd("e", "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" *t8"),
        "* LIST (\\NonExistent \\HasChildren) \".\" box.t8 (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n\
* LIST (\\HasNoChildren \\Subscribed) \".\" box.t8.t8\r\ne OK LIST completed\r\n"
    );
    assert_eq!(
        c.cmd("f", "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (box.test2 box.test2.test)"),
        "* LIST (\\HasNoChildren \\Subscribed) \".\" box.test2.test\r\nf OK LIST completed\r\n"
    );
    assert_eq!(
        c.cmd("g", "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" box.test2"),
        "* LIST (\\HasChildren) \".\" box.test2 (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\ng OK LIST completed\r\n"
    );
}

/// `OK [CODE]` with nothing after the code, tagged or untagged.
fn bare_codes(out: &str) -> Vec<&str> {
    out.split("\r\n")
        .filter(|l| {
            let mut w = l.splitn(3, ' ');
            let (_, status, rest) = (w.next(), w.next(), w.next().unwrap_or(""));
            matches!(status, Some("OK" | "NO" | "BAD" | "PREAUTH" | "BYE"))
                && rest.starts_with('[')
                && rest.find(']').is_some_and(|i| rest[i + 1..].trim().is_empty())
        })
        .collect()
}

#[test]
fn every_response_code_has_text_after_it() {
    let (_inst, port) = started();
    let mut c = login(port);
    let mut all = String::new();
    all += &c.cmd("a", "CREATE Other");
    all += &c.append("b", "INBOX", b"Subject: one\r\n\r\nx\r\n", false);
    all += &c.append("b2", "INBOX", b"Subject: two\r\n\r\nx\r\n", false);
    all += &c.cmd("c", "SELECT INBOX");
    all += &c.cmd("d", "COPY 1 Other");
    let moved = c.cmd("e", "MOVE 1 Other");
    assert!(moved.starts_with("* OK [COPYUID "), "{moved}");
    assert!(
        moved.contains("] Moved\r\n* 1 EXPUNGE\r\ne OK Move completed\r\n"),
        "{moved}"
    );
    all += &moved;
    all += &c.cmd("f", "UID MOVE 2 Other");
    all += &c.cmd("g", "EXAMINE Other");
    all += &c.cmd("h", "STATUS Other (MESSAGES UIDNEXT)");
    all += &c.cmd("i", "SELECT Nonexistent");
    all += &c.cmd("j", "APPEND Nonexistent {1+}\r\nx");
    all += &c.cmd("k", "ENABLE IMAP4rev2");
    all += &c.cmd("m", "SELECT INBOX");
    all += &c.cmd("n", "SELECT Other");
    assert!(all.contains("[COPYUID ") && all.contains("[TRYCREATE]") && all.contains("[CLOSED]"));
    assert_eq!(bare_codes(&all), Vec::<&str>::new(), "{all}");
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let (_inst, port) = started();
    let mut c = login(port);
    // a 20 KB message: each FETCH of it answers 20 KB
    let mut msg = b"Subject: big\r\n\r\n".to_vec();
    while msg.len() < 20_000 {
        msg.extend_from_slice(b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n");
    }
    c.append("a", "INBOX", &msg, false);
    c.cmd("s", "SELECT INBOX");
    const N: usize = 600;
    let command =
        |i: usize| format!("p{i:04} UID FETCH 1 (UID BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (SUBJECT DATE)])\r\n");
    // one by one
    let t = Instant::now();
    for i in 0..N {
        c.send(command(i).as_bytes());
        c.until_bytes(&format!("p{i:04}"));
    }
    let one_by_one = t.elapsed();
    // all in one write (more than one read's worth of input)
    let burst: String = (0..N).map(command).collect();
    assert!(burst.len() > 40_000);
    let t = Instant::now();
    let w = c.w.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = w;
        w.write_all(burst.as_bytes()).unwrap();
    });
    let mut gap = Duration::ZERO;
    let mut last = Instant::now();
    for i in 0..N {
        let out = c.until_bytes(&format!("p{i:04}"));
        gap = gap.max(last.elapsed());
        last = Instant::now();
        // in order: the previous tags' answers never come after this one
        assert!(out.ends_with(format!("p{i:04} OK Fetch completed\r\n").as_bytes()));
        assert!(out.starts_with(b"* 1 FETCH (UID 1 BODY[] {"), "p{i:04}");
    }
    writer.join().unwrap();
    // The times are printed for whoever reads the output; asserting them here would make
    // the test depend on the machine's load (timings belong in bench/).
    let pipelined = t.elapsed();
    eprintln!("pipelined {pipelined:?}, one by one {one_by_one:?}, longest wait {gap:?}");
}

#[test]
fn slow_pipelined_commands_are_all_answered_in_order() {
    // commands of little output but some work each (a SEARCH over 2,000 messages), more
    // than one read's worth, all in one write: the session works them a WORK_SLICE at a
    // stretch and reads the input left in the socket as it goes; every one is answered,
    // in order. The longest wait between two answers is printed (against the event loop's
    // 500 ms tick), not asserted: timings belong in bench/.
    let (mut inst, port) = imap_instance("alice", "alice-pw");
    let new = inst.root.path().join("var/mail/alice/new");
    std::fs::create_dir_all(&new).unwrap();
    for i in 0..1999 {
        std::fs::write(new.join(format!("{i}.m{i}.host")), b"Subject: s\n\nbody\n").unwrap();
    }
    // the last as a delivery agent puts it (which also hands them all to mail_owner)
    deliver_maildir(&inst, "alice", "1999.m1999.host", b"Subject: s\n\nbody\n");
    inst.start();
    let mut c = login(port);
    assert!(c.cmd("s", "EXAMINE INBOX").contains("* 2000 EXISTS"));
    const N: usize = 1500;
    let burst: String = (0..N).map(|i| format!("q{i:04} SEARCH FLAGGED\r\n")).collect();
    assert!(burst.len() > 32_000);
    let w = c.w.try_clone().unwrap();
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut w = w;
        w.write_all(burst.as_bytes()).unwrap();
    });
    let mut gap = Duration::ZERO;
    let mut last = Instant::now();
    for i in 0..N {
        let out = c.until_bytes(&format!("q{i:04}"));
        assert_eq!(out, format!("* SEARCH\r\nq{i:04} OK Search completed\r\n").as_bytes());
        gap = gap.max(last.elapsed());
        last = Instant::now();
    }
    writer.join().unwrap();
    eprintln!("{N} pipelined SEARCHes in {:?}, longest wait {gap:?}", t.elapsed());
}

#[test]
fn binary_of_text_and_of_a_parts_mime_header() {
    let (_inst, port) = started();
    let mut c = login(port);
    let mime1 = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n";
    let text = format!(
        "prologue\r\n--xx\r\n{mime1}h=C3=A9llo\r\n--xx\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--xx--\r\nepilogue\r\n"
    );
    let msg = format!(
        "From: a@example.test\r\nSubject: m\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n{text}"
    );
    c.append("a1", "INBOX", msg.as_bytes(), false);
    // a single part in base64: its TEXT is decoded
    c.append(
        "a2",
        "INBOX",
        b"From: a@example.test\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8=\r\n",
        false,
    );
    c.cmd("s", "SELECT INBOX");
    assert_eq!(
        c.cmd("b", "FETCH 1 (BINARY.SIZE[1.MIME] BINARY.PEEK[1.MIME])"),
        format!(
            "* 1 FETCH (BINARY.SIZE[1.MIME] {0} BINARY[1.MIME] {{{0}}}\r\n{mime1})\r\nb OK Fetch completed\r\n",
            mime1.len()
        )
    );
    assert_eq!(
        c.cmd("c", "FETCH 1 (BINARY.SIZE[TEXT] BINARY.PEEK[TEXT])"),
        format!(
            "* 1 FETCH (BINARY.SIZE[TEXT] {0} BINARY[TEXT] {{{0}}}\r\n{text})\r\nc OK Fetch completed\r\n",
            text.len()
        )
    );
    assert_eq!(
        c.cmd("d", "FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[2.MIME])"),
        "* 1 FETCH (BINARY[1] {6}\r\nh\u{e9}llo BINARY[2.MIME] {28}\r\nContent-Type: text/plain\r\n\r\n)\r\nd OK Fetch completed\r\n"
    );
    assert_eq!(
        c.cmd("e", "FETCH 2 (BINARY.SIZE[TEXT] BINARY.PEEK[TEXT]<1.3>)"),
        "* 2 FETCH (BINARY.SIZE[TEXT] 5 BINARY[TEXT]<1> {3}\r\nell)\r\ne OK Fetch completed\r\n"
    );
    // the message's own header is no BINARY section (RFC 3516: part numbers only)
    assert_eq!(
        tagged(&c.cmd("h", "FETCH 1 (BINARY.PEEK[HEADER.FIELDS (SUBJECT)])")),
        "h BAD Unknown FETCH item BINARY.PEEK[HEADER.FIELDS (SUBJECT)]"
    );
    assert_eq!(
        c.cmd("f", "FETCH 1 (BINARY.PEEK[3.MIME])"),
        "* 1 FETCH (BINARY[3.MIME] NIL)\r\nf OK Fetch completed\r\n"
    );
    assert_eq!(
        tagged(&c.cmd("g", "FETCH 1 (BINARY.PEEK[MIME])")),
        "g BAD Unknown FETCH item BINARY.PEEK[MIME]"
    );
}

#[test]
fn search_n_star_past_the_last_message_is_the_last_and_sent_dates_combine_with_it() {
    let (_inst, port) = started();
    let mut c = login(port);
    // imaptest's search-date 2a asks `8:* SENTBEFORE ...` of its 16-message mailbox; of 5
    // messages, 8:* is 5:8 (RFC 3501 §9 `seq-range`, imaptest's search-sets `6:*`)
    let dates = [
        "Sat, 27 Oct 2007 23:00:00 +0300",
        "Sun, 28 Oct 2007 01:00:00 +0300",
        "Sun, 28 Oct 2007 05:00:00 +0200",
        "Mon, 29 Oct 2007 00:30:00 +0200",
        "Mon, 29 Oct 2007 23:59:59 -1200",
    ];
    for (i, d) in dates.iter().enumerate() {
        c.append(
            &format!("a{i}"),
            "INBOX",
            format!("Date: {d}\r\nSubject: {i}\r\n\r\nx\r\n").as_bytes(),
            false,
        );
    }
    c.cmd("s", "SELECT INBOX");
    let search = |c: &mut ImapRaw, tag: &str, keys: &str| c.cmd(tag, &format!("SEARCH {keys}"));
    assert_eq!(
        search(&mut c, "b", "8:* SENTBEFORE 27-Oct-2007"),
        "* SEARCH\r\nb OK Search completed\r\n"
    );
    assert_eq!(
        search(&mut c, "c", "8:* SENTBEFORE 30-Oct-2007"),
        "* SEARCH 5\r\nc OK Search completed\r\n"
    );
    assert_eq!(
        search(&mut c, "d", "*:9 ALL"),
        "* SEARCH 5\r\nd OK Search completed\r\n"
    );
    assert_eq!(
        search(&mut c, "e", "1:* SENTBEFORE 28-Oct-2007"),
        "* SEARCH 1\r\ne OK Search completed\r\n"
    );
    assert_eq!(
        search(&mut c, "f", "2:* SENTON 28-Oct-2007"),
        "* SEARCH 2 3\r\nf OK Search completed\r\n"
    );
    assert_eq!(
        search(&mut c, "g", "4:* SENTSINCE 29-Oct-2007"),
        "* SEARCH 4 5\r\ng OK Search completed\r\n"
    );
    assert_eq!(
        search(&mut c, "h", "5:* ALL"),
        "* SEARCH 5\r\nh OK Search completed\r\n"
    );
    assert_eq!(
        search(&mut c, "i", "3:9,1"),
        "* SEARCH 1 3 4 5\r\ni OK Search completed\r\n"
    );
    // UIDs keep RFC 3501's n:* (the largest UID when n is past it)
    assert_eq!(
        c.cmd("j", "UID SEARCH UID 9:*"),
        "* SEARCH 5\r\nj OK Search completed\r\n"
    );
}

#[test]
fn search_skips_a_message_expunged_by_another_session_not_yet_told() {
    let (_inst, port) = started();
    let mut a = login(port);
    for i in 1..=4 {
        a.append(
            &format!("a{i}"),
            "INBOX",
            format!("Subject: m{i}\r\n\r\nx\r\n").as_bytes(),
            false,
        );
    }
    a.cmd("s", "SELECT INBOX");
    let mut b = login(port);
    b.cmd("s", "SELECT INBOX");
    assert_eq!(
        b.cmd("d", "STORE 2 +FLAGS.SILENT (\\Deleted)"),
        "d OK Store completed\r\n"
    );
    assert_eq!(b.cmd("e", "EXPUNGE"), "* 2 EXPUNGE\r\ne OK Expunge completed\r\n");
    // a has not been told: its sequence numbers stand, message 2 is not found
    assert_eq!(a.cmd("f", "SEARCH ALL"), "* SEARCH 1 3 4\r\nf OK Search completed\r\n");
    assert_eq!(a.cmd("g", "SEARCH SUBJECT m2"), "* SEARCH\r\ng OK Search completed\r\n");
    // a UID command may tell it (RFC 3501 §7.4.1), after the answer
    assert_eq!(
        a.cmd("h", "UID SEARCH 1:*"),
        "* SEARCH 1 3 4\r\n* 2 EXPUNGE\r\nh OK Search completed\r\n"
    );
    assert_eq!(a.cmd("i", "SEARCH ALL"), "* SEARCH 1 2 3\r\ni OK Search completed\r\n");
}
