//! SORT and THREAD with the process's cached sort/thread keys warm (imapd's
//! `sort_cache`): after another session appended, expunged and changed flags, and a
//! message was delivered from outside, the next SORT/THREAD answers exactly what a cold
//! one would (new messages parsed, expunged ones gone, flags not part of the keys).

use postern_tests::imap_raw::ImapRaw;
use postern_tests::{deliver_maildir, imap_instance};

fn msg(n: u32, from: &str, subject: &str, refs: &str) -> String {
    format!(
        "From: {from}\r\nDate: Mon, 01 Jan 2024 {n:02}:00:00 +0000\r\nSubject: {subject}\r\nMessage-ID: <m{n}@t>\r\n{refs}\r\nbody {n}\r\n"
    )
}

/// The one untagged line of a command that must succeed.
fn one(c: &mut ImapRaw, command: &str) -> String {
    let r = c.cmd("t", command);
    let lines: Vec<&str> = r
        .lines()
        .filter(|l| l.starts_with("* SORT") || l.starts_with("* THREAD") || l.starts_with("t "))
        .collect();
    assert_eq!(lines.len(), 2, "{command}: {r}");
    assert!(lines[1].starts_with("t OK"), "{command}: {r}");
    lines[0].to_string()
}

#[test]
fn warm_sort_and_thread_follow_other_sessions_changes() {
    let (mut inst, port) = imap_instance("alice", "Alice-Cache-Pw1");
    let first = [
        msg(1, "d@x.test", "delta", ""),
        msg(2, "b@x.test", "Re: alpha", "References: <m4@t>\r\n"),
        msg(3, "c@x.test", "charlie", ""),
        msg(4, "a@x.test", "alpha", ""),
    ];
    for (i, m) in first.iter().enumerate() {
        deliver_maildir(&inst, "alice", &format!("170000000{i}.M{i}P1.test"), m.as_bytes());
    }
    inst.start();
    let mut a = ImapRaw::login(port, "alice", "Alice-Cache-Pw1");
    assert!(a.cmd("s", "SELECT INBOX").contains("* 4 EXISTS"));
    // cold, then warm: the same answers (2's and 4's base subjects are equal: mailbox
    // order)
    for _ in 0..2 {
        assert_eq!(one(&mut a, "UID SORT (SUBJECT) UTF-8 ALL"), "* SORT 2 4 3 1");
        assert_eq!(one(&mut a, "UID SORT (FROM) UTF-8 ALL"), "* SORT 4 2 3 1");
        assert_eq!(one(&mut a, "UID SORT (REVERSE DATE) UTF-8 ALL"), "* SORT 4 3 2 1");
        assert_eq!(one(&mut a, "UID THREAD REFERENCES UTF-8 ALL"), "* THREAD (1)(3)(4 2)");
    }
    // another session: appends 5 (subject bravo, from e, replying to 3), expunges 1
    // (delta), flags 3
    let mut b = ImapRaw::login(port, "alice", "Alice-Cache-Pw1");
    assert!(b.cmd("s", "SELECT INBOX").contains("s OK"));
    let r = b.append(
        "ap",
        "INBOX",
        msg(5, "e@x.test", "bravo", "In-Reply-To: <m3@t>\r\n").as_bytes(),
        false,
    );
    assert!(r.contains("ap OK"), "{r}");
    let r = b.cmd("st", "UID STORE 3 +FLAGS (\\Flagged)");
    assert!(r.contains("st OK"), "{r}");
    let r = b.cmd("ex", "UID STORE 1 +FLAGS (\\Deleted)");
    assert!(r.contains("ex OK"), "{r}");
    let r = b.cmd("ex2", "EXPUNGE");
    assert!(r.contains("ex2 OK"), "{r}");
    // and a delivery from outside: 6, subject "aardvark", from f
    deliver_maildir(
        &inst,
        "alice",
        "1700000009.M9P1.test",
        msg(6, "f@x.test", "aardvark", "").as_bytes(),
    );
    // the delivery is seen within a few NOOPs (inotify)
    let mut seen = String::new();
    for _ in 0..50 {
        seen.push_str(&a.cmd("n", "NOOP"));
        if a.cmd("u", "UID SEARCH ALL").contains("* SEARCH 2 3 4 5 6") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(seen.contains("* 1 EXPUNGE"), "{seen}");
    assert_eq!(one(&mut a, "UID SORT (SUBJECT) UTF-8 ALL"), "* SORT 6 2 4 5 3");
    assert_eq!(one(&mut a, "UID SORT (FROM) UTF-8 ALL"), "* SORT 4 2 3 5 6");
    assert_eq!(one(&mut a, "UID SORT (REVERSE DATE) UTF-8 ALL"), "* SORT 6 5 4 3 2");
    assert_eq!(one(&mut a, "UID SORT (SUBJECT) UTF-8 FLAGGED"), "* SORT 3");
    assert_eq!(one(&mut a, "UID THREAD REFERENCES UTF-8 ALL"), "* THREAD (3 5)(4 2)(6)");
    assert_eq!(one(&mut a, "SORT (SUBJECT) UTF-8 ALL"), "* SORT 5 1 3 4 2");
    // the other session, on the same (warm) folder, agrees once it has seen 6
    for _ in 0..50 {
        b.cmd("n", "NOOP");
        if b.cmd("u", "UID SEARCH ALL").contains("* SEARCH 2 3 4 5 6") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(one(&mut b, "UID SORT (SUBJECT) UTF-8 ALL"), "* SORT 6 2 4 5 3");
}
