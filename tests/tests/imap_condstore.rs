//! Issue 11: FETCH of messages another session expunged (RFC 2180 §4.1), CONDSTORE
//! (RFC 7162 §3.1) and QRESYNC (§3.2), each against the real imapd under the real
//! master, over a raw socket, with exact expected responses.

use postern_tests::imap_raw::ImapRaw;
use postern_tests::{Instance, imap_instance};

/// A session of alice's.
fn login(port: u16) -> ImapRaw {
    ImapRaw::login(port, "alice", "alice-pw")
}

fn started() -> (Instance, u16) {
    let (mut inst, port) = imap_instance("alice", "alice-pw");
    inst.start();
    (inst, port)
}

/// Appends `n` small messages `m1`..`mn` to INBOX.
fn fill(c: &mut ImapRaw, n: usize) {
    for i in 1..=n {
        let msg = format!("Subject: m{i}\r\nMessage-ID: <m{i}@x>\r\n\r\nbody of m{i}\r\n");
        let out = c.append(&format!("a{i}"), "INBOX", msg.as_bytes(), false);
        assert!(out.contains(&format!("a{i} OK")), "{out}");
    }
}

/// The tagged line of an answer.
fn tagged(out: &str) -> &str {
    out.trim_end().rsplit("\r\n").next().unwrap_or("")
}

#[test]
fn fetch_of_a_message_expunged_by_another_session_returns_what_is_left() {
    let (_inst, port) = started();
    let mut a = login(port);
    fill(&mut a, 3);
    let out = a.cmd("s", "SELECT INBOX");
    assert!(out.contains("* 3 EXISTS\r\n"), "{out}");
    let mut b = login(port);
    let out = b.cmd("s", "SELECT INBOX");
    assert!(out.contains("* 3 EXISTS\r\n"), "{out}");
    assert_eq!(
        b.cmd("t", "STORE 2 +FLAGS.SILENT (\\Deleted)"),
        "t OK Store completed\r\n"
    );
    assert_eq!(b.cmd("e", "EXPUNGE"), "* 2 EXPUNGE\r\ne OK Expunge completed\r\n");
    // A has not been told: its sequence number 2 is still UID 2, answered from the index
    assert_eq!(
        a.cmd("f", "FETCH 2 (FLAGS UID RFC822.SIZE)"),
        "* 2 FETCH (FLAGS (\\Deleted \\Recent) UID 2 RFC822.SIZE 47)\r\nf OK Fetch completed\r\n"
    );
    assert_eq!(
        a.cmd("g", "FETCH 1:3 (UID)"),
        "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\ng OK Fetch completed\r\n"
    );
    // its file is gone: nothing of the body can be returned
    assert_eq!(
        a.cmd("h", "FETCH 2 BODY.PEEK[TEXT]"),
        "h NO [EXPUNGEISSUED] Some messages were expunged\r\n"
    );
    // the others are answered beside it
    let out = a.cmd("i", "FETCH 2:3 BODY.PEEK[TEXT]");
    assert_eq!(
        out,
        "* 3 FETCH (BODY[TEXT] {12}\r\nbody of m3\r\n)\r\ni NO [EXPUNGEISSUED] Some messages were expunged\r\n"
    );
    // once told, sequence number 2 is message 3
    assert_eq!(a.cmd("n", "NOOP"), "* 2 EXPUNGE\r\nn OK Completed\r\n");
    assert_eq!(
        a.cmd("j", "FETCH 2 (UID)"),
        "* 2 FETCH (UID 3)\r\nj OK Fetch completed\r\n"
    );
    assert_eq!(tagged(&a.cmd("k", "LOGOUT")), "k OK Logout completed");
}
