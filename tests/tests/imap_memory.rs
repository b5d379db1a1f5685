//! Issue 11, memory given back: imapd's memory after every session of a big INBOX closed.
//!
//! 8 sessions select an INBOX of 20,000 messages (one shared folder state of several
//! megabytes in the serving imapd), then all log out. The imapd processes' resident size
//! (VmRSS from /proc, summed over master's imapd children) must fall back to within
//! [`BOUND_KB`] of what it was with one session logged in and nothing selected, within a
//! few seconds of the folder's keep time (`imapd_folder_keep_time`, [`KEEP_SECS`] here):
//! the state is freed then and the allocator's free pages go back to the system
//! (`mailbox::give_back`).

use postern_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

const MESSAGES: usize = 20_000;
const SESSIONS: usize = 8;
/// How far above the one-session size imapd may stay once every session closed.
const BOUND_KB: u64 = 3 * 1024;
/// How long imapd keeps the folder's state after its last session (`imapd_folder_keep_time`).
const KEEP_SECS: u64 = 3;

struct Session {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Session {
    fn open(port: u16) -> Session {
        let w = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        w.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let mut s = Session {
            r: BufReader::new(w.try_clone().expect("clone")),
            w,
        };
        let mut greeting = String::new();
        s.r.read_line(&mut greeting).expect("greeting");
        assert!(greeting.starts_with("* OK"), "{greeting}");
        s.command("a LOGIN alice alice-pw");
        s
    }

    /// Sends `line` (tag first), reads to the tagged answer, asserts OK; the untagged lines.
    fn command(&mut self, line: &str) -> Vec<String> {
        let tag = line.split(' ').next().unwrap_or_default().to_string();
        self.w.write_all(format!("{line}\r\n").as_bytes()).expect("send");
        let mut untagged = Vec::new();
        loop {
            let mut l = String::new();
            let n = self.r.read_line(&mut l).expect("read");
            assert!(n > 0, "closed during {line}");
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                assert!(rest.starts_with("OK"), "{line}: {l}");
                return untagged;
            }
            untagged.push(l);
        }
    }
}

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
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", "maxproc = 1")
    );
    let keep = format!("imapd_folder_keep_time={KEEP_SECS}s");
    let mut inst = Instance::new(&services, &["imapd_user_connection_limit=100", keep.as_str()]);
    add_user(&inst, "alice", "alice-pw");
    let md = inst.root.path().join("var/mail/alice");
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(md.join(d)).expect("mkdir");
    }
    for i in 0..MESSAGES {
        let body = format!(
            "From: bob{i}@remote.test\r\nTo: alice@example.test\r\nSubject: message {i}\r\nMessage-ID: <m{i}@remote.test>\r\n\r\nbody {i}\r\n"
        );
        let name = format!("{}.M{i}P1.host,S={}:2,", 1_700_000_000 + i, body.len());
        std::fs::write(md.join("cur").join(name), body).expect("write message");
    }
    owned_mail_base(&inst);
    inst.start();
    eprintln!("{:?} filled and started", t0.elapsed());

    let mut first = Session::open(port);
    // imapd's size with one session logged in, nothing selected, settled
    std::thread::sleep(Duration::from_millis(500));
    let base = imapd_rss_kb(&inst);
    assert!(base > 0, "no imapd found");

    let mut sessions: Vec<Session> = (0..SESSIONS).map(|_| Session::open(port)).collect();
    eprintln!("{:?} logged in", t0.elapsed());
    for s in &mut sessions {
        let untagged = s.command("b SELECT INBOX");
        assert!(
            untagged.iter().any(|l| l == &format!("* {MESSAGES} EXISTS\r\n")),
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
