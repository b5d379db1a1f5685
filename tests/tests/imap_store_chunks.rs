//! Issue 11, STORE over many messages (imapd's `cmd_message::STORE_CHUNK` at a time):
//! through the real master with imapd at `maxproc = 1`, so the sessions of a test share
//! one imapd process.
//!
//! - a STORE of 1,300 messages answers one `* n FETCH` per message, in order, exactly,
//!   and every file name in `cur/` carries the flag when the tagged OK comes; a new
//!   keyword is told by `* FLAGS` before anything else; `(UNCHANGEDSINCE m)` names in
//!   `[MODIFIED …]` exactly the messages another session changed, whichever chunk they
//!   fall in, and leaves their files as they were;
//! - while a STORE of 20,000 messages runs, another session's NOOP is answered before
//!   that STORE has renamed every file (one session's long STORE does not hold the
//!   others), and the STORE then answers all 20,000.

use postern_tests::imap_inbox::one_imapd_inbox;
use postern_tests::imap_raw::ImapRaw;
use postern_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A logged-in session as alice, reads waiting up to 120 s (a 20,000-message STORE).
fn session(port: u16) -> ImapRaw {
    let s = ImapRaw::login(port, "alice", "alice-pw");
    s.read_timeout(Duration::from_secs(120));
    s
}

/// Message `i`'s text.
fn body(i: usize) -> String {
    format!("From: bob{i}@remote.test\r\nSubject: message {i}\r\n\r\nbody {i}\r\n")
}

/// An instance with one imapd process and alice's INBOX of `n` messages in `cur/`
/// (flags none), started; its port and INBOX's `cur/`.
fn instance(n: usize) -> (Instance, u16, PathBuf) {
    let (inst, port, md) = one_imapd_inbox(n, body, &["imapd_user_connection_limit=100"]);
    (inst, port, md.join("cur"))
}

/// The flag letters of each file in `dir` (what follows `:2,`), by base name.
fn flags_on_disk(dir: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_dir(dir)
        .expect("read cur/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| {
            let (base, fl) = n.split_once(":2,")?;
            Some((base.to_string(), fl.to_string()))
        })
        .collect()
}

/// The base names of the messages in sequence order (their time stamps ascend with `i`).
fn base_of(i: usize) -> String {
    format!("{}.M{i}P1.host,S=", 1_700_000_000 + i)
}

#[test]
fn a_store_over_many_messages_answers_each_in_order_with_its_flags_on_disk() {
    const N: usize = 1_300;
    let (_inst, port, cur) = instance(N);
    // a first session takes \Recent, so the FLAGS below are exactly the stored ones
    let mut first = session(port);
    first.command("b SELECT INBOX");
    first.command("z LOGOUT");
    let mut s = session(port);
    let sel = s.command("b SELECT INBOX");
    assert!(sel.iter().any(|l| l == &format!("* {N} EXISTS")), "{sel:?}");

    let lines = s.command("c STORE 1:* +FLAGS (\\Flagged)");
    let want: Vec<String> = (1..=N).map(|i| format!("* {i} FETCH (FLAGS (\\Flagged))")).collect();
    assert_eq!(lines.len(), N, "first lines {:?}", &lines[..lines.len().min(3)]);
    assert_eq!(lines, want);
    let disk = flags_on_disk(&cur);
    assert_eq!(disk.len(), N);
    assert!(
        disk.values().all(|f| f == "F"),
        "{:?}",
        disk.values().find(|f| *f != "F")
    );

    // a new keyword: * FLAGS and PERMANENTFLAGS first, then (silent) nothing per message
    let lines = s.command("d UID STORE 1:* +FLAGS.SILENT ($Chunky)");
    assert_eq!(
        lines,
        [
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Chunky)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Chunky \\*)] Flags permitted",
        ]
    );
    let disk = flags_on_disk(&cur);
    assert!(
        disk.values().all(|f| f == "Fa"),
        "{:?}",
        disk.values().find(|f| *f != "Fa")
    );

    // UNCHANGEDSINCE: another session changes messages 10 and 1,000 (chunks 1 and 2)
    s.command("e ENABLE CONDSTORE");
    let status = s.command("f STATUS INBOX (HIGHESTMODSEQ)");
    let high: u64 = status
        .iter()
        .find_map(|l| l.split("HIGHESTMODSEQ ").nth(1)?.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("{status:?}"));
    let mut other = session(port);
    other.command("b SELECT INBOX");
    other.command("c STORE 10,1000 +FLAGS.SILENT (\\Seen)");
    s.send_line(&format!(
        "g STORE 1:* (UNCHANGEDSINCE {high}) -FLAGS.SILENT (\\Flagged)"
    ));
    let (lines, done) = s.answer("g");
    assert_eq!(done, "g OK [MODIFIED 10,1000] Conditional STORE failed");
    // each other message once, in order, with its MODSEQ (above the one before the STORE)
    let mut told = Vec::new();
    for l in &lines {
        let rest = l.strip_prefix("* ").unwrap_or_else(|| panic!("{l}"));
        let (n, rest) = rest.split_once(' ').unwrap_or_else(|| panic!("{l}"));
        let n: usize = n.parse().unwrap_or_else(|_| panic!("{l}"));
        if n == 10 || n == 1000 {
            // the other session's change, told as it ends
            assert!(
                rest.starts_with("FETCH (") && rest.contains("FLAGS (\\Seen \\Flagged $Chunky) MODSEQ ("),
                "{l}"
            );
            continue;
        }
        let m: u64 = rest
            .strip_prefix("FETCH (MODSEQ (")
            .and_then(|r| r.strip_suffix("))"))
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("{l}"));
        assert!(m > high, "{l}: not above {high}");
        told.push(n);
    }
    let want: Vec<usize> = (1..=N).filter(|&n| n != 10 && n != 1000).collect();
    assert_eq!(told, want);
    let disk = flags_on_disk(&cur);
    for i in 0..N {
        let fl = &disk[&format!("{}{}", base_of(i), body_len(i))];
        let expect = if i + 1 == 10 || i + 1 == 1000 { "FSa" } else { "a" };
        assert_eq!(fl, expect, "message {}", i + 1);
    }
    other.command("z LOGOUT");
    s.command("z LOGOUT");
}

/// The size of message `i`'s body as [`instance`] writes it.
fn body_len(i: usize) -> usize {
    body(i).len()
}

#[test]
fn another_session_is_answered_while_a_store_of_many_messages_runs() {
    const N: usize = 20_000;
    let (_inst, port, cur) = instance(N);
    let mut a = session(port);
    let mut b = session(port);
    a.command("b SELECT INBOX");
    b.command("b SELECT INBOX");

    a.send_line("c STORE 1:* +FLAGS (\\Flagged)");
    // A's STORE has begun (its first FETCH lines are here) before B asks
    let first = a.line();
    assert!(first.starts_with("* 1 FETCH (FLAGS ("), "{first}");
    b.command("c NOOP");
    let left = flags_on_disk(&cur).values().filter(|f| !f.contains('F')).count();
    eprintln!("B answered with {left} of {N} messages not yet renamed by A's STORE");
    assert!(left > 0, "B's NOOP waited for all of A's STORE");

    let (lines, done) = a.answer("c");
    assert_eq!(done, "c OK Store completed");
    assert_eq!(lines.len() + 1, N);
    assert!(flags_on_disk(&cur).values().all(|f| f.contains('F')));
    a.command("z LOGOUT");
    b.command("z LOGOUT");
}
