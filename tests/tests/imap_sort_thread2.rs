//! THREAD=REFERENCES over References chains that are broken, looped and duplicated, step
//! by step as RFC 5256 §3 runs them, and SORT SUBJECT over the base-subject rules of
//! §2.1 (`Re[2]:`, `Fw:`, `re :`, `[tag]` blobs, a subject that is only a blob, `[Fwd: ...]`,
//! `(fwd)`, RFC 2047 words in B and Q encodings), under the real master, with exact
//! answers worked out by hand (the comments say how), and the bad-input replies.
//!
//! Messages 1 to 11 (the thread set), sent dates one hour apart in sequence order:
//! ```text
//!  1 <a@t>                         chain
//!  2 <c@t>   References <a@t> <b@t>     Re: chain        (b is missing: broken)
//!  3 <d@t>   References <a@t> <b@t> <c@t>   Re: Re: chain
//!  4 <e@t>   References <d@t> <e@t> <d@t>   [list] Re: chain (itself, and d twice)
//!  5 <f@t>   References <g@t>         loop
//!  6 <g@t>   References <f@t>         Re: loop       (5 and 6 name each other)
//!  7 <a@t>                         dup of chain  (1's Message-ID again)
//!  8 <i@t>   References <a@t>         chain (fwd)
//!  9 <h@t>   References <h@t>         self           (names only itself)
//! 10 <j@t>   In-Reply-To <gone@t>     Re: self       (a missing parent)
//! 11 <k@t>   References <no-at> <k@t   =?UTF-8?Q?chain?=  (no valid id)
//! ```
//! Messages 12 to 18 (the subject set) have no threading fields.

use postern_tests::imap_raw::ImapRaw;
use postern_tests::{deliver_maildir, imap_instance};

const THREAD_SET: [(&str, &str, &str); 11] = [
    ("<a@t>", "", "chain"),
    ("<c@t>", "References: <a@t> <b@t>", "Re: chain"),
    ("<d@t>", "References: <a@t> <b@t> <c@t>", "Re: Re: chain"),
    ("<e@t>", "References: <d@t> <e@t> <d@t>", "[list] Re: chain"),
    ("<f@t>", "References: <g@t>", "loop"),
    ("<g@t>", "References: <f@t>", "Re: loop"),
    ("<a@t>", "", "dup of chain"),
    ("<i@t>", "References: <a@t>", "chain (fwd)"),
    ("<h@t>", "References: <h@t>", "self"),
    ("<j@t>", "In-Reply-To: <gone@t>", "Re: self"),
    ("<k@t>", "References: <no-at> <k@t", "=?UTF-8?Q?chain?="),
];

const SUBJECT_SET: [&str; 7] = [
    "Re[2]: Fw: Zeta",
    "[tag]",
    "=?UTF-8?B?UmU6IGFscGhh?=",
    "Fwd: [tag] Re: Beta (fwd)",
    "  re :   gamma  ",
    "[Fwd: delta]",
    "=?ISO-8859-1?Q?=E9t=E9?=",
];

fn session() -> (postern_tests::Instance, ImapRaw) {
    let (mut inst, port) = imap_instance("alice", "Alice-Sort-Pw2");
    let mut n = 0;
    let mut put = |fields: String, subject: &str| {
        n += 1;
        let msg = format!(
            "From: a@x.test\r\nDate: Mon, 01 Jan 2024 {:02}:00:00 +0000\r\nSubject: {subject}\r\n{fields}\r\nbody {n}\r\n",
            n
        );
        deliver_maildir(&inst, "alice", &format!("17000000{n:02}.M{n}P1.test"), msg.as_bytes());
    };
    for (id, refs, subject) in THREAD_SET {
        let refs = if refs.is_empty() {
            String::new()
        } else {
            format!("{refs}\r\n")
        };
        put(format!("Message-ID: {id}\r\n{refs}"), subject);
    }
    for subject in SUBJECT_SET {
        put(String::new(), subject);
    }
    inst.start();
    let mut c = ImapRaw::login(port, "alice", "Alice-Sort-Pw2");
    let r = c.cmd("s", "SELECT INBOX");
    assert!(r.contains("* 18 EXISTS") && r.contains("s OK"), "{r}");
    (inst, c)
}

/// The one untagged line of a command that must succeed.
fn one(c: &mut ImapRaw, command: &str) -> String {
    let r = c.cmd("t", command);
    let lines: Vec<&str> = r.lines().collect();
    assert_eq!(lines.len(), 2, "{command}: {r}");
    assert!(lines[1].starts_with("t OK"), "{command}: {r}");
    lines[0].to_string()
}

#[test]
fn thread_references_over_broken_looped_and_duplicated_chains() {
    let (_inst, mut c) = session();
    // Step 1: 2's chain a -> b(dummy) -> c; 3 adds d under c; 4 names itself between two
    // d's: 1A links e under d, the second d already has a parent, 1B makes d its parent
    // again; 5 gets dummy g as parent, then 6 takes g's node and would loop (f is its
    // child), so 6 stays a root with 5 under it; 7's Message-ID is 1's: a node of its own;
    // 8 answers a, which is 1; 9's only reference is itself: no parent; 10's parent is a
    // dummy; 11 has no valid id. Step 3: dummy b (one child, not at the top) gives its
    // place to 2, dummy gone@t (one child, at the top) to 10. Step 4 sorts the roots by
    // date: 1 6 7 9 10 11. Step 5: 10 (Re: self) joins 9's thread as a child; 11 (chain,
    // not a reply) and 1 (chain, not a reply) get a new dummy holding both. Step 6 sorts
    // siblings: 1's children 2 then 8, the dummy by its first child (1).
    assert_eq!(
        one(&mut c, "THREAD REFERENCES UTF-8 1:11"),
        "* THREAD ((1 (2 3 4)(8))(11))(6 5)(7)(9 10)"
    );
    // ORDEREDSUBJECT: CHAIN 1 2 3 4 8 11, LOOP 5 6, DUP OF CHAIN 7, SELF 9 10, the groups
    // by their first message's date
    assert_eq!(
        one(&mut c, "THREAD ORDEREDSUBJECT UTF-8 1:11"),
        "* THREAD (1 (2)(3)(4)(8)(11))(5 6)(7)(9 10)"
    );
    // by UID, the same numbers here; a subset that leaves 1 out: 2's parent chain is all
    // dummies (a, b), pruned to 2 at the top; 8's parent a is a dummy too, so 2 and 8
    // share one dummy at the top; 11 merges with it by subject (the dummy's first child's
    // subject, chain), as a child of the dummy
    assert_eq!(
        one(&mut c, "UID THREAD REFERENCES UTF-8 2:4,8,11"),
        "* THREAD ((2 3 4)(8)(11))"
    );
}

#[test]
fn sort_subject_by_base_subject_and_bad_input() {
    let (inst, mut c) = session();
    // base subjects: 12 ZETA, 13 [TAG] (only a blob: kept), 14 ALPHA (B-encoded "Re:
    // alpha"), 15 BETA, 16 GAMMA, 17 DELTA, 18 the decoded "été" (i;unicode-casemap as
    // Dovecot computes it: E, a combining acute, T, ...: after DELTA, before GAMMA)
    assert_eq!(one(&mut c, "SORT (SUBJECT) UTF-8 12:*"), "* SORT 14 15 17 18 16 12 13");
    assert_eq!(
        one(&mut c, "SORT (REVERSE SUBJECT) UTF-8 12:*"),
        "* SORT 13 12 16 18 17 15 14"
    );
    // the thread set's subjects: CHAIN 1 2 3 4 8 11, DUP OF CHAIN 7, LOOP 5 6, SELF 9 10;
    // ties by sequence number
    assert_eq!(
        one(&mut c, "SORT (SUBJECT) US-ASCII 1:11"),
        "* SORT 1 2 3 4 8 11 7 5 6 9 10"
    );
    // SUBJECT then REVERSE DATE inside each base subject
    assert_eq!(
        one(&mut c, "SORT (SUBJECT REVERSE DATE) UTF-8 1:11"),
        "* SORT 11 8 4 3 2 1 7 6 5 10 9"
    );
    for (command, want) in [
        ("SORT (SUBJECT) X-UNKNOWN ALL", "t NO [BADCHARSET (UTF-8 US-ASCII)]"),
        ("SORT (SUBJECT REVERSE) UTF-8 ALL", "t BAD"),
        ("SORT (SUBJECT UTF-8 ALL", "t BAD"),
        ("SORT (SIZE ARRIVAL BOGUS) UTF-8 ALL", "t BAD"),
        ("SORT (SUBJECT) UTF-8 SUBJECT", "t BAD"),
        ("THREAD REFS UTF-8 ALL", "t BAD"),
        ("THREAD REFERENCES X-UNKNOWN ALL", "t NO [BADCHARSET (UTF-8 US-ASCII)]"),
        ("THREAD REFERENCES", "t BAD"),
    ] {
        let r = c.cmd("t", command);
        assert!(r.starts_with(want), "{command}: {r}");
        // a clear text after the code
        let text = r.trim_end().rsplit(']').next().unwrap_or("").trim();
        assert!(text.len() > 5, "{command}: {r}");
    }
    // the session still works
    assert_eq!(one(&mut c, "SORT (ARRIVAL) UTF-8 17:18"), "* SORT 17 18");
    drop(inst);
}
