//! Issue 10 (item 2): the memory one imapd or pop3d process can be made to hold by
//! logged-in clients, through the real master with one process (`maxproc = 1`) on
//! loopback.
//!
//! * literals: every literal held in memory must fit the process's
//!   `imapd_literal_memory_limit` when it is announced; sessions dribbling large SEARCH
//!   strings fill it, the next `{n}` gets `NO
//!   [UNAVAILABLE]` unread and a `{n+}` gets `* BYE [UNAVAILABLE]`; imapd's RSS stays under
//!   its baseline plus the budget plus [`SLACK_KB`]; another user is answered within 1 s;
//!   the budget comes back when a command completes, fails, or its client disconnects;
//! * APPEND: large literals go to the folder's `tmp/` as they arrive, so sessions each
//!   dribbling a 40 MB APPEND keep imapd's RSS under a bound that does not grow with
//!   them; the messages arrive byte-exact with their UIDs, and a client gone mid-literal
//!   leaves no file and no message;
//! * output: a client that pipelines hundreds of `FETCH BODY[]` of a 2 MB message, or
//!   thousands of `SEARCH ALL`, and never reads makes imapd's peak RSS (VmHWM) grow by
//!   less than [`OUTPUT_BOUND_KB`]; another user is answered within 1 s;
//! * pop3d: a client that pipelines hundreds of `RETR` of a 10 MB message and never reads
//!   raises pop3d's peak RSS by less than [`POP3_BOUND_KB`] (the answer is streamed from
//!   the file as the client reads); another user is answered within 1 s.

use postern_tests::{
    Instance, add_user, auth_service, children_of, comm, daemon_service, free_port, owned_mail_base, proc_status,
};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

/// The largest SEARCH literal in these tests, and the process's literal budget (three).
const LITERAL: usize = 8_000_000;
const BUDGET: &str = "imapd_literal_memory_limit=24000000";
/// What imapd may hold beyond its baseline and the literal budget (buffers, the parsed
/// command of the one running, allocator slack; a debug build).
const SLACK_KB: u64 = 16 * 1024;
/// How much a non-reading client may raise imapd's peak RSS by with pipelined commands:
/// the session's output bound (1 MB gathered + one command's answer: a 2 MB message
/// and its read buffer) and the socket layer's 4 MB, with room to spare.
const OUTPUT_BOUND_KB: u64 = 12 * 1024;
/// The same for pop3d: 256 KB of unsent output, a 64 KB read chunk and its converted
/// copy, with room to spare (a whole 10 MB message in memory would exceed it).
const POP3_BOUND_KB: u64 = 4 * 1024;

struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn to(port: u16) -> Client {
        let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut c = Client {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        };
        assert!(c.line().starts_with("* OK"));
        c
    }

    fn login(port: u16, user: &str, password: &str) -> Client {
        let mut c = Client::to(port);
        let r = c.imap("l", &format!("LOGIN {user} {password}"));
        assert!(r.contains("l OK"), "{r}");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(_) => l,
            Err(e) => format!("<error {e}>"),
        }
    }

    fn send(&mut self, data: &[u8]) {
        self.w.write_all(data).expect("send");
    }

    /// Sends a command and reads up to its tagged answer; returns all lines.
    fn imap(&mut self, tag: &str, cmd: &str) -> String {
        self.send(format!("{tag} {cmd}\r\n").as_bytes());
        self.until(tag)
    }

    fn until(&mut self, tag: &str) -> String {
        let mut all = String::new();
        loop {
            let l = self.line();
            all.push_str(&l);
            if l.is_empty() || l.starts_with(&format!("{tag} ")) || l.starts_with("<error") {
                return all;
            }
        }
    }

    /// Whether the server closed the connection within `limit`.
    fn closed_within(&mut self, limit: Duration) -> bool {
        let _ = self.w.set_read_timeout(Some(limit));
        let mut buf = [0u8; 4096];
        loop {
            match self.r.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
        }
    }
}

/// The one imapd process's status field `key` in kB.
fn imapd_kb(inst: &Instance, key: &str) -> u64 {
    status_kb(inst, "imapd", key)
}

/// The one `program` process's status field `key` in kB.
fn status_kb(inst: &Instance, program: &str, key: &str) -> u64 {
    let pids: Vec<u32> = children_of(inst.master_pid())
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some(program))
        .collect();
    assert_eq!(pids.len(), 1, "one {program} process");
    proc_status(pids[0], key)
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .expect("status field")
}

/// A NOOP of a logged-in user answered within 1 s.
fn answered_within_a_second(c: &mut Client, tag: &str) {
    let start = Instant::now();
    let r = c.imap(tag, "NOOP");
    assert!(r.ends_with(&format!("{tag} OK Completed\r\n")), "{r}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "NOOP took {:?}",
        start.elapsed()
    );
}

/// auth and one imapd process; alice and bob with maildirs.
fn instance(settings: &[&str]) -> (Instance, u16) {
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", "maxproc = 1"),
    );
    let inst = Instance::new(&services, settings);
    add_user(&inst, "alice", "Alice-Mem-1");
    add_user(&inst, "bob", "Bob-Mem-1");
    (inst, port)
}

fn maildirs(inst: &Instance) -> std::path::PathBuf {
    let mail = inst.root.path().join("var/mail");
    for u in ["alice", "bob"] {
        for d in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(mail.join(u).join(d)).expect("mkdir");
        }
    }
    mail
}

#[test]
fn literals_beyond_the_process_budget_are_refused_and_the_budget_comes_back() {
    let (mut inst, port) = instance(&["imapd_max_literal=8000000", BUDGET, "imapd_user_connection_limit=50"]);
    maildirs(&inst);
    owned_mail_base(&inst);
    inst.start();
    let mut bob = Client::login(port, "bob", "Bob-Mem-1");
    let mut appenders: Vec<Client> = (0..6)
        .map(|_| {
            let mut c = Client::login(port, "alice", "Alice-Mem-1");
            assert!(c.imap("s", "SELECT INBOX").contains("s OK"));
            c
        })
        .collect();
    let baseline = imapd_kb(&inst, "VmRSS");
    // three SEARCH strings fill the budget (an APPEND's would go to the folder's tmp/); each sends all but the last 1,000 bytes, then waits
    let body = {
        let mut m = b"From: alice@example.test\r\nSubject: big\r\n\r\n".to_vec();
        m.resize(LITERAL - 2, b'x');
        m.extend_from_slice(b"\r\n");
        m
    };
    for (i, c) in appenders.iter_mut().take(3).enumerate() {
        c.send(format!("a{i} SEARCH TEXT {{{LITERAL}}}\r\n").as_bytes());
        assert_eq!(c.line(), "+ Ready for literal data\r\n");
        for piece in body[..LITERAL - 1000].chunks(256 * 1024) {
            c.send(piece);
        }
    }
    answered_within_a_second(&mut bob, "n1");
    // the fourth does not fit: refused unread, the session goes on
    let r = appenders[3].imap("b3", &format!("SEARCH TEXT {{{LITERAL}}}"));
    assert_eq!(r, "b3 NO [UNAVAILABLE] Server busy, try again later\r\n");
    answered_within_a_second(&mut appenders[3], "n3");
    // LITERAL+: the bytes come anyway, so the connection ends
    appenders[4].send(format!("b4 SEARCH TEXT {{{LITERAL}+}}\r\n").as_bytes());
    appenders[4].send(&body[..64 * 1024]);
    assert_eq!(
        appenders[4].line(),
        "* BYE [UNAVAILABLE] Server busy, try again later\r\n"
    );
    assert!(appenders[4].closed_within(Duration::from_secs(5)));
    drop(appenders.remove(4));
    answered_within_a_second(&mut bob, "n2");
    let held = imapd_kb(&inst, "VmRSS");
    eprintln!("imapd VmRSS: {baseline} kB logged in, {held} kB holding three literals");
    let budget_kb = 24_000_000 / 1024;
    assert!(
        held > baseline + budget_kb / 2,
        "the literals are held in memory ({baseline} kB -> {held} kB): the test measures nothing"
    );
    assert!(
        held < baseline + budget_kb + SLACK_KB,
        "imapd RSS {held} kB over its baseline {baseline} kB + budget {budget_kb} kB + {SLACK_KB} kB"
    );
    // the budget comes back: one SEARCH completes, one fails (BAD after its literal),
    // one client disconnects mid-literal
    appenders[0].send(&body[LITERAL - 1000..]);
    appenders[0].send(b"\r\n");
    let r = appenders[0].until("a0");
    assert!(r.contains("a0 OK"), "{r}");
    appenders[1].send(&body[LITERAL - 1000..]);
    appenders[1].send(b" junk\r\n");
    let r = appenders[1].until("a1");
    assert!(r.starts_with("a1 BAD") || r.starts_with("a1 NO"), "{r}");
    drop(appenders.remove(2));
    // all of it: three sessions may each announce a full-size literal again
    std::thread::sleep(Duration::from_millis(300));
    for (i, c) in appenders.iter_mut().skip(1).take(3).enumerate() {
        c.send(format!("c{i} SEARCH TEXT {{{LITERAL}}}\r\n").as_bytes());
        assert_eq!(c.line(), "+ Ready for literal data\r\n", "session {i}");
    }
    appenders[1].send(&body);
    appenders[1].send(b"\r\n");
    let r = appenders[1].until("c0");
    assert!(r.contains("c0 OK"), "{r}");
    drop(appenders);
    let log = inst.log();
    assert!(
        log.contains(&format!(
            "literal of {LITERAL} bytes refused from 127.0.0.1, user=alice"
        )),
        "{log}"
    );
    inst.stop();
}

#[test]
fn a_client_that_pipelines_and_never_reads_holds_no_more_than_the_output_bound() {
    let (mut inst, port) = instance(&[]);
    let mail = maildirs(&inst);
    // one 2 MB message and 10,000 small ones: a SEARCH ALL answers about 60 KB, so one
    // 16 KB read of pipelined SEARCHes would ask for 68 MB of answers
    let mut big = b"From: bob@example.test\r\nSubject: big\r\n\r\n".to_vec();
    while big.len() < 2_000_000 {
        big.extend_from_slice(b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n");
    }
    std::fs::write(mail.join("alice/new/1000000000.big.test"), &big).expect("write");
    for i in 0..10_000 {
        let name = format!("1000000001.m{i}.test");
        std::fs::write(mail.join("alice/new").join(name), b"Subject: small\r\n\r\nhi\r\n").expect("write");
    }
    owned_mail_base(&inst);
    inst.start();
    let mut bob = Client::login(port, "bob", "Bob-Mem-1");
    // two of alice's sessions: one pipelines 400 FETCHes of the 2 MB message (800 MB of
    // answers), the other 20,000 SEARCH ALL (1.2 GB); neither reads
    let floods = [
        (0..400)
            .flat_map(|i| format!("f{i} FETCH 1 BODY.PEEK[]\r\n").into_bytes())
            .collect::<Vec<u8>>(),
        b"s SEARCH ALL\r\n".repeat(20_000),
    ];
    let mut alices = Vec::new();
    for _ in &floods {
        let mut alice = Client::login(port, "alice", "Alice-Mem-1");
        let r = alice.imap("s", "SELECT INBOX");
        assert!(r.contains("* 10001 EXISTS"), "{r}");
        alices.push(alice);
    }
    answered_within_a_second(&mut bob, "n0");
    let baseline = imapd_kb(&inst, "VmHWM");
    let writers: Vec<_> = floods
        .into_iter()
        .zip(&alices)
        .map(|(flood, alice)| {
            let mut w = alice.w.try_clone().expect("clone");
            std::thread::spawn(move || {
                let _ = w.set_write_timeout(Some(Duration::from_secs(8)));
                // stops early when the server stops reading (its socket buffers full)
                for piece in flood.chunks(16 * 1024) {
                    if w.write_all(piece).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    for i in 1..=5 {
        std::thread::sleep(Duration::from_millis(500));
        answered_within_a_second(&mut bob, &format!("n{i}"));
    }
    let peak = imapd_kb(&inst, "VmHWM");
    eprintln!("imapd VmHWM: {baseline} kB before the flood, {peak} kB after");
    assert!(
        peak < baseline + OUTPUT_BOUND_KB,
        "imapd peak RSS {peak} kB over its baseline {baseline} kB + {OUTPUT_BOUND_KB} kB"
    );
    drop(alices);
    for w in writers {
        w.join().expect("writer");
    }
    answered_within_a_second(&mut bob, "n9");
    inst.stop();
}

#[test]
fn a_pop3_client_that_pipelines_retr_and_never_reads_holds_no_more_than_the_output_bound() {
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("pop3", "inet", &format!("127.0.0.1:{port}"), "pop3d", "maxproc = 1"),
    );
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "alice", "Alice-Mem-1");
    add_user(&inst, "bob", "Bob-Mem-1");
    let mail = maildirs(&inst);
    let mut big = b"From: bob@example.test\nSubject: big\n\n".to_vec();
    while big.len() < 10_000_000 {
        big.extend_from_slice(b".0123456789012345678901234567890123456789012345678901234567890123456789\n");
    }
    std::fs::write(mail.join("alice/new/1000000000.big.test"), &big).expect("write");
    std::fs::write(mail.join("bob/new/1000000000.small.test"), b"Subject: hi\n\nhi\n").expect("write");
    owned_mail_base(&inst);
    inst.start();
    let pop = |user: &str, password: &str| {
        let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut c = Client {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        };
        assert!(c.line().starts_with("+OK"));
        c.send(format!("USER {user}\r\nPASS {password}\r\n").as_bytes());
        assert!(c.line().starts_with("+OK"));
        let l = c.line();
        assert!(l.starts_with("+OK Logged in"), "{l}");
        c
    };
    let mut bob = pop("bob", "Bob-Mem-1");
    let mut alice = pop("alice", "Alice-Mem-1");
    let baseline = status_kb(&inst, "pop3d", "VmHWM");
    // one RETR read whole: the streamed answer is the message, CRLF and dot-stuffed
    alice.send(b"RETR 1\r\n");
    assert_eq!(
        alice.line(),
        format!(
            "+OK {} octets\r\n",
            big.len() + big.iter().filter(|&&b| b == b'\n').count()
        )
    );
    let mut body = Vec::new();
    loop {
        let mut l = Vec::new();
        alice.r.read_until(b'\n', &mut l).expect("read");
        if l == b".\r\n" || l.is_empty() {
            break;
        }
        body.extend_from_slice(&l);
    }
    let mut want = Vec::new();
    for line in big.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            want.push(b'.');
        }
        want.extend_from_slice(&line[..line.len() - 1]);
        want.extend_from_slice(b"\r\n");
    }
    assert!(
        body == want,
        "RETR answered {} bytes, {} expected",
        body.len(),
        want.len()
    );
    // 400 RETR of the 10 MB message (4 GB of answers), none of it read
    alice.send(&b"RETR 1\r\n".repeat(400));
    let bob_says = |bob: &mut Client, i: usize| {
        let start = Instant::now();
        bob.send(b"STAT\r\n");
        let l = bob.line();
        assert!(l.starts_with("+OK 1 "), "{l}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "STAT {i} took {:?}",
            start.elapsed()
        );
    };
    for i in 1..=5 {
        std::thread::sleep(Duration::from_millis(400));
        bob_says(&mut bob, i);
    }
    let peak = status_kb(&inst, "pop3d", "VmHWM");
    eprintln!("pop3d VmHWM: {baseline} kB before the RETRs, {peak} kB after");
    assert!(
        peak < baseline + POP3_BOUND_KB,
        "pop3d peak RSS {peak} kB over its baseline {baseline} kB + {POP3_BOUND_KB} kB"
    );
    drop(alice);
    bob_says(&mut bob, 9);
    inst.stop();
}

/// What sessions streaming large APPENDs or whole-message FETCHes may raise imapd's peak
/// RSS by, however many they are: each holds read buffers, a 64 KB spool or file
/// chunk and about 1 MB of output (a debug build, with room to spare). Holding the
/// messages in memory would take K × 40 MB (APPEND) or C × 20 MB and more (FETCH).
const STREAM_BOUND_KB: u64 = 32 * 1024;

/// The `[APPENDUID v uid]` of an APPEND's answer.
fn append_uid(r: &str) -> u32 {
    r.split("[APPENDUID ")
        .nth(1)
        .and_then(|t| t.split([' ', ']']).nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no APPENDUID in {r}"))
}

/// Files in alice's INBOX `sub` directory.
fn files(mail: &std::path::Path, sub: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(mail.join("alice").join(sub))
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect()
}

#[test]
fn sessions_appending_large_messages_slowly_hold_a_bounded_amount() {
    const K: usize = 6;
    const SIZE: usize = 40_000_000;
    let (mut inst, port) = instance(&["imapd_user_connection_limit=50"]);
    let mail = maildirs(&inst);
    owned_mail_base(&inst);
    inst.start();
    let mut bob = Client::login(port, "bob", "Bob-Mem-1");
    let mut clients: Vec<Client> = (0..K).map(|_| Client::login(port, "alice", "Alice-Mem-1")).collect();
    let baseline = imapd_kb(&inst, "VmHWM");
    let message = |i: usize| {
        let mut m = format!("From: alice@example.test\r\nSubject: big {i}\r\n\r\n").into_bytes();
        let mut n = 0u64;
        while m.len() < SIZE - 100 {
            m.extend_from_slice(format!("line {n} of message {i}, some text to fill it up\r\n").as_bytes());
            n += 1;
        }
        m.resize(SIZE - 2, b'.');
        m.extend_from_slice(b"\r\n");
        m
    };
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("a{i} APPEND INBOX (\\Seen) {{{SIZE}}}\r\n").as_bytes());
        assert_eq!(c.line(), "+ Ready for literal data\r\n");
    }
    // each sends all but the last bytes in pieces with pauses, at once
    let senders: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut w = c.w.try_clone().expect("clone");
            let body = message(i);
            std::thread::spawn(move || {
                for piece in body[..SIZE - 1000].chunks(1024 * 1024) {
                    w.write_all(piece).expect("send");
                    std::thread::sleep(Duration::from_millis(20));
                }
                body
            })
        })
        .collect();
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        answered_within_a_second(&mut bob, &format!("n{i}"));
    }
    let bodies: Vec<Vec<u8>> = senders.into_iter().map(|t| t.join().expect("sender")).collect();
    answered_within_a_second(&mut bob, "n8");
    assert_eq!(files(&mail, "tmp").len(), K, "the literals are in tmp/");
    let peak = imapd_kb(&inst, "VmHWM");
    eprintln!("imapd VmHWM: {baseline} kB logged in, {peak} kB with {K} × 40 MB APPENDs received");
    assert!(
        peak < baseline + STREAM_BOUND_KB,
        "imapd peak RSS {peak} kB over its baseline {baseline} kB + {STREAM_BOUND_KB} kB"
    );
    // the last bytes: each message arrives whole, with its UID
    let mut uids = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&bodies[i][SIZE - 1000..]);
        c.send(b"\r\n");
        let r = c.until(&format!("a{i}"));
        assert!(r.contains(&format!("a{i} OK [APPENDUID ")), "{r}");
        uids.push(append_uid(&r));
    }
    let mut sorted = uids.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=K as u32).collect::<Vec<_>>());
    assert!(files(&mail, "tmp").is_empty());
    let stored = files(&mail, "cur");
    assert_eq!(stored.len(), K);
    for (i, body) in bodies.iter().enumerate() {
        let subject = format!("Subject: big {i}\r\n");
        let file = stored
            .iter()
            .find(|p| {
                let mut head = vec![0u8; 100];
                std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut head)).is_ok()
                    && head.windows(subject.len()).any(|w| w == subject.as_bytes())
            })
            .unwrap_or_else(|| panic!("message {i} not stored"));
        assert!(
            std::fs::read(file).expect("read") == *body,
            "message {i} not byte-exact"
        );
    }
    // and as IMAP gives them: message of session 2 by its UID
    let c = &mut clients[0];
    assert!(c.imap("s", "SELECT INBOX").contains("s OK"));
    c.send(format!("f UID FETCH {} BODY.PEEK[]\r\n", uids[2]).as_bytes());
    assert_eq!(fetched_literal(c, "f"), bodies[2]);
    // a client gone mid-literal leaves no file and no message
    let mut gone = Client::login(port, "alice", "Alice-Mem-1");
    gone.send(format!("g APPEND INBOX {{{SIZE}+}}\r\n").as_bytes());
    gone.send(&bodies[0][..5_000_000]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(files(&mail, "tmp").len(), 1);
    drop(gone);
    answered_within_a_second(&mut bob, "n9");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !files(&mail, "tmp").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(files(&mail, "tmp").is_empty(), "a spool left in tmp/");
    assert_eq!(files(&mail, "cur").len(), K);
    inst.stop();
}

/// Reads a FETCH answer with one literal up to its tagged OK; returns the literal.
fn fetched_literal(c: &mut Client, tag: &str) -> Vec<u8> {
    let first = c.line();
    let n: usize = first
        .rsplit_once('{')
        .and_then(|(_, t)| t.trim_end().strip_suffix('}'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no literal in {first}"));
    let mut body = vec![0u8; n];
    c.r.read_exact(&mut body).expect("literal");
    let rest = c.until(tag);
    assert!(
        rest.starts_with(")\r\n") && rest.contains(&format!("{tag} OK")),
        "{rest}"
    );
    body
}

#[test]
fn sessions_fetching_a_large_message_without_reading_hold_a_bounded_amount() {
    const C: usize = 8;
    let (mut inst, port) = instance(&["imapd_user_connection_limit=50"]);
    let mail = maildirs(&inst);
    // 20 MB stored with bare LFs (as a delivery agent may): sent as CRLF
    let mut stored = b"From: bob@example.test\nSubject: large\n\n".to_vec();
    let mut n = 0;
    while stored.len() < 20_000_000 {
        stored.extend_from_slice(format!("line {n}: 0123456789abcdefghijklmnopqrstuvwxyz\n").as_bytes());
        n += 1;
    }
    stored.extend_from_slice(b"no newline at the end\r");
    let mut want = Vec::new();
    let mut prev = 0u8;
    for &b in &stored {
        if b == b'\n' && prev != b'\r' {
            want.push(b'\r');
        }
        want.push(b);
        prev = b;
    }
    // named with its sizes, as delivery names it, so that SELECT need not read it (its
    // peak would hide the FETCHes')
    let name = format!("1000000000.large.test,S={},W={}", stored.len(), want.len());
    std::fs::write(mail.join("alice/new").join(name), &stored).expect("write");
    owned_mail_base(&inst);
    inst.start();
    let mut bob = Client::login(port, "bob", "Bob-Mem-1");
    let mut clients: Vec<Client> = (0..C)
        .map(|_| {
            let mut c = Client::login(port, "alice", "Alice-Mem-1");
            assert!(c.imap("s", "SELECT INBOX").contains("* 1 EXISTS"));
            c
        })
        .collect();
    let baseline = imapd_kb(&inst, "VmHWM");
    for c in &mut clients {
        c.send(b"f FETCH 1 BODY.PEEK[]\r\n");
    }
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        answered_within_a_second(&mut bob, &format!("n{i}"));
    }
    let peak = imapd_kb(&inst, "VmHWM");
    eprintln!("imapd VmHWM: {baseline} kB before, {peak} kB with {C} unread FETCHes of 20 MB");
    assert!(
        peak < baseline + STREAM_BOUND_KB,
        "imapd peak RSS {peak} kB over its baseline {baseline} kB + {STREAM_BOUND_KB} kB"
    );
    // a reading client gets the exact bytes
    let got = fetched_literal(&mut clients[0], "f");
    assert!(
        got == want,
        "FETCH BODY[] not the stored bytes as CRLF ({} vs {} bytes)",
        got.len(),
        want.len()
    );
    drop(clients);
    answered_within_a_second(&mut bob, "n9");
    inst.stop();
}
