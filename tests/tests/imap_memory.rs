//! Issue 11, memory given back: imapd's memory after every session of a big INBOX closed.
//!
//! 8 sessions select an INBOX of 20,000 messages (one shared folder state of several
//! megabytes in the serving imapd), then all log out. The imapd processes' resident size
//! (VmRSS from /proc, summed over master's imapd children) must fall back to within
//! [`BOUND_KB`] of what it was with one session logged in and nothing selected, within a
//! few seconds of the folder's keep time (`imapd_folder_keep_time`, [`KEEP_SECS`] here):
//! the state is freed then and the allocator's free pages go back to the system
//! (`mailbox::give_back`).

use postern_tests::imap_inbox::one_imapd_inbox;
use postern_tests::imap_raw::ImapRaw;
use postern_tests::*;
use std::time::Duration;

const MESSAGES: usize = 20_000;
const SESSIONS: usize = 8;
/// How far above the one-session size imapd may stay once every session closed.
const BOUND_KB: u64 = 3 * 1024;
/// How long imapd keeps the folder's state after its last session (`imapd_folder_keep_time`).
const KEEP_SECS: u64 = 3;

/// VmRSS of master's imapd children, KB.
fn imapd_rss_kb(inst: &Instance) -> u64 {
    children_of(inst.master_pid())
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some("imapd"))
        .filter_map(|p| proc_status(p, "VmRSS"))
        .filter_map(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

#[test]
fn imapd_gives_memory_back_when_the_sessions_of_a_big_inbox_close() {
    let t0 = std::time::Instant::now();
    let keep = format!("imapd_folder_keep_time={KEEP_SECS}s");
    let body = |i: usize| {
        format!(
            "From: bob{i}@remote.test\r\nTo: alice@example.test\r\nSubject: message {i}\r\nMessage-ID: <m{i}@remote.test>\r\n\r\nbody {i}\r\n"
        )
    };
    let (inst, port, _) = one_imapd_inbox(MESSAGES, body, &["imapd_user_connection_limit=100", keep.as_str()]);
    eprintln!("{:?} filled and started", t0.elapsed());

    let mut first = ImapRaw::login(port, "alice", "alice-pw");
    // imapd's size with one session logged in, nothing selected, settled
    std::thread::sleep(Duration::from_millis(500));
    let base = imapd_rss_kb(&inst);
    assert!(base > 0, "no imapd found");

    let mut sessions: Vec<ImapRaw> = (0..SESSIONS)
        .map(|_| ImapRaw::login(port, "alice", "alice-pw"))
        .collect();
    eprintln!("{:?} logged in", t0.elapsed());
    for s in &mut sessions {
        let untagged = s.command("b SELECT INBOX");
        assert!(
            untagged.iter().any(|l| l == &format!("* {MESSAGES} EXISTS")),
            "{untagged:?}"
        );
    }
    eprintln!("{:?} selected", t0.elapsed());
    // the messages' envelopes too (the state keeps some in memory)
    sessions[0].command("c FETCH 1:* (FLAGS ENVELOPE)");
    eprintln!("{:?} fetched", t0.elapsed());
    let open = imapd_rss_kb(&inst);
    eprintln!("imapd RSS: {base} KB with one session, {open} KB with {SESSIONS} on {MESSAGES} messages");
    assert!(
        open > base + 2 * BOUND_KB,
        "the folder state should be megabytes ({base} -> {open} KB): the test measures nothing"
    );

    for mut s in sessions {
        s.command("z LOGOUT");
    }
    let mut closed = 0;
    let back = wait_for(Duration::from_secs(10 + KEEP_SECS), || {
        closed = imapd_rss_kb(&inst);
        closed <= base + BOUND_KB
    });
    eprintln!("imapd RSS after they closed: {closed} KB");
    assert!(
        back,
        "imapd kept {closed} KB after every session of INBOX closed (one session: {base} KB, {SESSIONS}: {open} KB; bound {BOUND_KB} KB above one)"
    );
    first.command("z LOGOUT");
    eprintln!("{:?} done", t0.elapsed());
}
