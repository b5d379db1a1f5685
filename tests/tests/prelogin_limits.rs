//! Issue 10 (items 2 and 8): what an unauthenticated client can make imapd, pop3d and
//! master do, through the real master on loopback.
//!
//! * a literal announced before login over 8 KB is refused without being read: `NO
//!   [TOOBIG]` for `{n}` (the session goes on), `* BYE [TOOBIG]` and close for `{n+}`;
//!   imapd's RSS stays small while clients try to push 52 MB literals;
//! * the login deadline is hard: a client that sends a command (IMAP NOOP, POP3 CAPA) or
//!   a byte every half second is still cut `*_login_timeout` after it connected;
//! * `login_client_connection_count_limit` unauthenticated connections per address, over
//!   all processes of a service (anvil): the next gets `* BYE [UNAVAILABLE]` / `-ERR
//!   [SYS/TEMP]`; a login frees its slot, a logged-in user is unaffected; without anvil
//!   each process counts alone;
//! * `maxproc` holds under hundreds of held connections, `max_use` used up or not, and a
//!   retiring child counts while it holds a connection;
//! * the stress test: 200 unauthenticated IMAP and 200 POP3 connections from one address
//!   sending huge literals, endless lines or dribbled bytes, while a logged-in IMAP and a
//!   logged-in POP3 user get every answer within 1 s and imapd's and pop3d's RSS (summed
//!   over their processes) stay under [`RSS_BOUND_KB`].

use postern_tests::{
    EchoClient, Instance, add_user, auth_service, children_of, comm, daemon_service, free_port, owned_mail_base,
    proc_status, python, testd_service, wait_for,
};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The bound the stress test asserts on the sum of VmRSS over all imapd processes, and
/// over all pop3d processes, while under attack (a debug build).
const RSS_BOUND_KB: u64 = 64 * 1024;

/// A TCP connection to `127.0.0.1:port` (from 127.0.0.1; other source addresses are
/// used from Python, see [`greeting_from`]).
fn connect_to(port: u16) -> TcpStream {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s
}

/// The greeting a connection from loopback address `src` gets.
fn greeting_from(src: &str, port: u16) -> String {
    python(&format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), 20, source_address=('{src}', 0))\n\
         print(s.makefile('rb').readline().decode().strip())"
    ))
    .trim()
    .to_string()
}

/// A line-oriented client.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn new(s: TcpStream) -> Client {
        Client {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        }
    }

    fn to(port: u16) -> Client {
        Client::new(connect_to(port))
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(_) => l,
            Err(e) => format!("<error {e}>"),
        }
    }

    fn send(&mut self, text: &str) {
        self.w.write_all(text.as_bytes()).expect("send");
    }

    /// Sends an IMAP command and reads up to its tagged answer; returns all lines.
    fn imap(&mut self, tag: &str, cmd: &str) -> String {
        self.send(&format!("{tag} {cmd}\r\n"));
        let mut all = String::new();
        loop {
            let l = self.line();
            all.push_str(&l);
            if l.is_empty() || l.starts_with(&format!("{tag} ")) || l.starts_with("<error") {
                return all;
            }
        }
    }

    /// Sends a POP3 command and reads its first answer line.
    fn pop(&mut self, cmd: &str) -> String {
        self.send(&format!("{cmd}\r\n"));
        self.line()
    }

    /// Whether the server closed the connection (end of file or reset) within `limit`.
    fn closed_within(&mut self, limit: Duration) -> bool {
        let _ = self.w.set_read_timeout(Some(limit));
        let mut buf = [0u8; 4096];
        let start = Instant::now();
        loop {
            match self.r.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
            if start.elapsed() > limit {
                return false;
            }
        }
    }
}

/// The pids of master's children running `program`.
fn pids_of(inst: &Instance, program: &str) -> Vec<u32> {
    children_of(inst.master_pid())
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some(program))
        .collect()
}

/// Sum of VmRSS (kB) over master's children running `program`.
fn rss_kb(inst: &Instance, program: &str) -> u64 {
    pids_of(inst, program)
        .into_iter()
        .filter_map(|p| proc_status(p, "VmRSS"))
        .filter_map(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// auth, anvil, imap and pop3 with `extra` lines for both mail services.
fn instance(imap: u16, pop3: u16, extra: &str, settings: &[&str]) -> Instance {
    let services = format!(
        "{}{}{}{}",
        auth_service(),
        daemon_service(
            "anvil",
            "unix",
            "",
            "anvil",
            "maxproc = 1\nmax_use = 1000000\nmax_idle = \"1d\""
        ),
        daemon_service("imap", "inet", &format!("127.0.0.1:{imap}"), "imapd", extra),
        daemon_service("pop3", "inet", &format!("127.0.0.1:{pop3}"), "pop3d", extra),
    );
    let inst = Instance::new(&services, settings);
    add_user(&inst, "alice", "Alice-Pre-1");
    add_user(&inst, "bob", "Bob-Pre-1");
    let mail = inst.root.path().join("var/mail");
    for u in ["alice", "bob"] {
        for d in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(mail.join(u).join(d)).expect("mkdir");
        }
    }
    owned_mail_base(&inst);
    inst
}

#[test]
fn a_big_literal_before_login_is_refused_unread() {
    let (imap, pop3) = (free_port(), free_port());
    let mut inst = instance(imap, pop3, "maxproc = 1", &[]);
    inst.start();
    // synchronising: refused, the client sends nothing, the session goes on
    let mut c = Client::to(imap);
    assert!(c.line().starts_with("* OK"));
    assert_eq!(
        c.imap("a", "LOGIN {52000000}"),
        "a NO [TOOBIG] Literal too large before login\r\n"
    );
    assert!(c.imap("b", "CAPABILITY").ends_with("b OK Capability completed\r\n"));
    // a small literal is fine before login
    c.send("c LOGIN {5}\r\n");
    assert_eq!(c.line(), "+ Ready for literal data\r\n");
    c.send("alice Alice-Pre-1\r\n");
    let l = c.line();
    assert!(
        l.starts_with("c OK [CAPABILITY") && l.ends_with("] Logged in\r\n"),
        "{l}"
    );
    drop(c);
    // LITERAL+: the bytes come anyway; BYE at once, none of them read, connection closed.
    // Twelve clients (the issue's attack) each try to push 52 MB.
    let before = rss_kb(&inst, "imapd");
    let mut pushers = Vec::new();
    for _ in 0..12 {
        let mut c = Client::to(imap);
        assert!(c.line().starts_with("* OK"));
        c.send("a LOGIN {52000000+}\r\n");
        assert_eq!(c.line(), "* BYE [TOOBIG] Literal too large before login\r\n");
        pushers.push(std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0usize;
            while sent < 52_000_000 {
                match c.w.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            (sent, c.closed_within(Duration::from_secs(5)))
        }));
    }
    for p in pushers {
        let (sent, closed) = p.join().expect("pusher");
        assert!(sent < 52_000_000, "the server read the whole literal ({sent} bytes)");
        assert!(closed, "the connection was closed");
    }
    let after = rss_kb(&inst, "imapd");
    assert!(
        after < before + 16 * 1024,
        "imapd RSS grew from {before} kB to {after} kB"
    );
    let log = inst.log();
    assert!(
        log.contains("literal of 52000000 bytes refused before login from 127.0.0.1 (limit 8192)"),
        "{log}"
    );
    inst.stop();
}

#[test]
fn the_login_deadline_is_not_extended_by_traffic() {
    let (imap, pop3) = (free_port(), free_port());
    let mut inst = instance(imap, pop3, "", &["imapd_login_timeout=3s", "pop3d_login_timeout=3s"]);
    inst.start();
    // (what it sends every half second, protocol, the last line expected)
    let cases: [(&str, u16, &str); 4] = [
        ("a NOOP\r\n", imap, "* BYE Login timeout: not authenticated in time\r\n"),
        ("x", imap, "* BYE Login timeout: not authenticated in time\r\n"),
        ("CAPA\r\n", pop3, "-ERR Disconnected: no login in time\r\n"),
        ("x", pop3, "-ERR Disconnected: no login in time\r\n"),
    ];
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(what, port, expect)| {
            std::thread::spawn(move || {
                let mut c = Client::to(port);
                let start = Instant::now();
                let greeting = c.line();
                assert!(
                    greeting.starts_with("* OK") || greeting.starts_with("+OK"),
                    "{greeting}"
                );
                let reader = std::thread::spawn({
                    let mut r = BufReader::new(c.w.try_clone().expect("clone"));
                    move || {
                        let mut last = String::new();
                        loop {
                            let mut l = String::new();
                            match r.read_line(&mut l) {
                                Ok(0) | Err(_) => return (last, start.elapsed()),
                                Ok(_) => last = l,
                            }
                        }
                    }
                });
                while start.elapsed() < Duration::from_secs(12) && !reader.is_finished() {
                    if c.w.write_all(what.as_bytes()).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                let (last, took) = reader.join().expect("reader");
                (what, port, expect, last, took)
            })
        })
        .collect();
    for r in runs {
        let (what, port, expect, last, took) = r.join().expect("client");
        assert_eq!(last, expect, "{what:?} to port {port}");
        assert!(
            took >= Duration::from_millis(2900) && took < Duration::from_secs(7),
            "{what:?} to port {port}: cut after {took:?}, the deadline is 3 s"
        );
    }
    let log = inst.log();
    assert_eq!(
        log.matches("login timeout from 127.0.0.1: not logged in within 3s")
            .count(),
        4,
        "{log}"
    );
    inst.stop();
}

#[test]
fn unauthenticated_connections_per_address_are_capped_across_processes() {
    let (imap, pop3) = (free_port(), free_port());
    // Two connections per process at most: three connections need two processes, so
    // the cap can only hold if it is counted over both (by anvil).
    let mut inst = instance(
        imap,
        pop3,
        "maxproc = 4\nmax_conns = 2",
        &["login_client_connection_count_limit=3"],
    );
    inst.start();
    for (port, greeting, refusal) in [
        (
            imap,
            "* OK",
            "* BYE [UNAVAILABLE] Too many connections from 127.0.0.1 not logged in, try again later\r\n",
        ),
        (
            pop3,
            "+OK",
            "-ERR [SYS/TEMP] Too many connections from 127.0.0.1 not logged in, try again later\r\n",
        ),
    ] {
        let mut held: Vec<Client> = (0..3).map(|_| Client::to(port)).collect();
        for c in held.iter_mut() {
            let g = c.line();
            assert!(g.starts_with(greeting), "{g}");
        }
        let mut fourth = Client::to(port);
        assert_eq!(fourth.line(), refusal);
        assert!(fourth.closed_within(Duration::from_secs(5)));
        // Another address is not affected.
        let other = greeting_from("127.0.0.6", port);
        assert!(other.starts_with(greeting), "{other}");
        // A login frees its slot: the next connection from the address is served, and
        // the logged-in session goes on.
        let user_ok = if port == imap {
            let r = held[0].imap("a", "LOGIN alice Alice-Pre-1");
            assert!(r.contains("a OK"), "{r}");
            true
        } else {
            assert!(held[0].pop("USER bob").starts_with("+OK"));
            assert!(held[0].pop("PASS Bob-Pre-1").starts_with("+OK Logged in"));
            true
        };
        assert!(user_ok);
        let mut fifth = None;
        assert!(
            wait_for(Duration::from_secs(5), || {
                let mut c = Client::to(port);
                let g = c.line();
                let ok = g.starts_with(greeting);
                fifth = Some(c);
                ok
            }),
            "a login gives the address's slot back"
        );
        let still = if port == imap {
            held[0].imap("b", "NOOP")
        } else {
            held[0].pop("STAT")
        };
        assert!(still.contains("b OK") || still.starts_with("+OK"), "{still}");
        if port == pop3 {
            held[0].pop("QUIT");
        }
        drop(fifth);
        drop(held);
    }
    let log = inst.log();
    assert!(
        log.contains("too many connections not logged in from 127.0.0.1 (limit 3): connection refused"),
        "{log}"
    );
    assert!(
        pids_of(&inst, "imapd").len() >= 2,
        "the connections were spread over processes"
    );
    inst.stop();
}

#[test]
fn the_cap_is_counted_per_process_while_anvil_is_away() {
    let (imap, pop3) = (free_port(), free_port());
    // No anvil service at all: each process counts alone (one process each here).
    let services = format!(
        "{}{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{imap}"), "imapd", "maxproc = 1"),
        daemon_service("pop3", "inet", &format!("127.0.0.1:{pop3}"), "pop3d", "maxproc = 1"),
    );
    let mut inst = Instance::new(&services, &["login_client_connection_count_limit=2"]);
    inst.start();
    for (port, greeting, refusal) in [(imap, "* OK", "* BYE [UNAVAILABLE]"), (pop3, "+OK", "-ERR [SYS/TEMP]")] {
        let mut held: Vec<Client> = (0..2).map(|_| Client::to(port)).collect();
        for c in held.iter_mut() {
            let g = c.line();
            assert!(g.starts_with(greeting), "{g}");
        }
        let mut third = Client::to(port);
        let l = third.line();
        assert!(l.starts_with(refusal), "{l}");
        drop(held);
        // Closed connections give their count back.
        assert!(
            wait_for(Duration::from_secs(5), || Client::to(port).line().starts_with(greeting)),
            "served again once the others closed"
        );
    }
    let log = inst.log();
    assert!(log.contains("in this process only"), "{log}");
    inst.stop();
}

#[test]
fn maxproc_holds_under_many_connections_even_when_max_use_is_used_up() {
    let (imap, pop3) = (free_port(), free_port());
    // max_use = 3: every child is "used up" after three connections; before the fix each
    // used-up child stopped counting and master started another (issue 10: 31 imapd
    // processes with maxproc = 4).
    let mut inst = instance(
        imap,
        pop3,
        "maxproc = 2\nmax_use = 3\nmax_conns = 100",
        &["login_client_connection_count_limit=0"],
    );
    inst.start();
    let mut held = Vec::new();
    let mut most = 0;
    for i in 0..120u8 {
        let port = if i.is_multiple_of(2) { imap } else { pop3 };
        let s = connect_to(port);
        held.push(s);
        most = most
            .max(pids_of(&inst, "imapd").len())
            .max(pids_of(&inst, "pop3d").len());
    }
    // Give master time to (wrongly) start more.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        most = most
            .max(pids_of(&inst, "imapd").len())
            .max(pids_of(&inst, "pop3d").len());
    }
    assert!(most <= 2, "saw {most} processes of one service, maxproc is 2");
    // Every connection got a greeting (two processes hold them all).
    for s in held.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut b = [0u8; 3];
        s.read_exact(&mut b).expect("greeting");
        assert!(&b == b"* O" || &b == b"+OK", "{b:?}");
    }
    let row = inst.status_row("imap/inet");
    assert!(row.iter().any(|c| c == "2"), "postern status: {row:?}");
    drop(held);
    // Used up and idle, the children exit; the next client gets a fresh one.
    let mut c = Client::to(imap);
    assert!(c.line().starts_with("* OK"));
    inst.stop();
}

/// A single-flavour child on its last use (`max_use = 1`) says it is retiring as it
/// takes its connection; it still counts towards `maxproc` until that connection ends (it
/// used to stop counting at once, and master started another beside it).
#[test]
fn a_retiring_child_that_holds_a_connection_counts_towards_maxproc() {
    let port = free_port();
    let mut inst = Instance::new(&testd_service("echo", "single", port, "maxproc = 1\nmax_use = 1"), &[]);
    inst.start();
    let mut first = EchoClient::connect(port).expect("first client");
    assert_eq!(first.echo("one").expect("echo"), "one");
    // The second client waits in the backlog: no second process.
    let second = std::thread::spawn(move || EchoClient::connect(port).map(|c| c.pid));
    let mut most = 0;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        most = most.max(children_of(inst.master_pid()).len());
    }
    assert_eq!(most, 1, "maxproc = 1 while the retiring child holds its connection");
    assert!(!second.is_finished(), "the second client is not served beside it");
    let old = first.pid;
    first.quit();
    let pid = second.join().expect("second").expect("second client served");
    assert_ne!(pid, old, "served by a fresh child once the old one is done");
    inst.stop();
}

/// The attack of the stress test: `N` IMAP and `N` POP3 connections from one address,
/// each (in turn, reconnecting whenever the server closes it) pushing a 52 MB literal
/// (IMAP `{n+}`, or `{n}` ignoring the refusal), an endless line, or one byte every half
/// second. Prints `ready` once all are open, then `done CONNECTS` after `SECS` seconds.
const ATTACK: &str = r#"
import asyncio, sys, time
imap, pop3, n, secs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
src = '127.0.0.9'
end = time.monotonic() + secs
connects = 0
opened = 0
ready = asyncio.Event()
async def one(port, kind):
    global connects, opened
    first = True
    while time.monotonic() < end:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection('127.0.0.1', port, local_addr=(src, 0)), 30)
            connects += 1
            await asyncio.wait_for(r.readline(), 30)
            if first:
                first = False
                opened += 1
                if opened == 2 * n:
                    ready.set()
            if kind == 0:
                w.write(b'a LOGIN {52000000+}\r\n' if port == imap else b'USER ' + b'x' * 60000)
            elif kind == 1:
                w.write(b'a LOGIN {52000000}\r\n' if port == imap else b'CAPA\r\n')
            chunk = b'y' * 65536
            sent = 0
            while time.monotonic() < end and sent < 52000000:
                if kind == 2 or (kind == 1 and port == pop3):
                    w.write(b'CAPA\r\n' if kind == 1 else b'z')
                    await asyncio.sleep(0.5)
                else:
                    w.write(chunk)
                    sent += len(chunk)
                await asyncio.wait_for(w.drain(), 2)
                if r.at_eof():
                    break
        except Exception:
            await asyncio.sleep(0.05)
        try:
            w.close()
        except Exception:
            pass
async def main():
    tasks = [asyncio.create_task(one(p, i % 3)) for p in (imap, pop3) for i in range(n)]
    await asyncio.wait_for(ready.wait(), 60)
    print('ready', flush=True)
    await asyncio.gather(*tasks)
    print('done', connects, flush=True)
asyncio.run(main())
"#;

/// Per request: how long the answer took.
fn timed(c: &mut Client, imap: bool, i: usize) -> Duration {
    let t = Instant::now();
    let r = if imap {
        c.imap(
            &format!("t{i}"),
            if i.is_multiple_of(2) { "NOOP" } else { "SELECT INBOX" },
        )
    } else {
        c.pop(if i.is_multiple_of(2) { "NOOP" } else { "STAT" })
    };
    assert!(r.contains(&format!("t{i} OK")) || r.starts_with("+OK"), "{r}");
    t.elapsed()
}

#[test]
fn stress_200_unauthenticated_imap_and_pop3_connections_from_one_address() {
    let (imap, pop3) = (free_port(), free_port());
    let n = 200;
    let secs = 25.0;
    // The per-address cap is lifted so that all 200 are admitted and held: what is
    // measured is the per-connection bound (the cap itself is tested above).
    let mut inst = instance(
        imap,
        pop3,
        "maxproc = 2",
        &[
            "login_client_connection_count_limit=0",
            "imapd_login_timeout=8s",
            "pop3d_login_timeout=8s",
        ],
    );
    inst.start();
    let mut alice = Client::to(imap);
    assert!(alice.line().starts_with("* OK"));
    assert!(alice.imap("l", "LOGIN alice Alice-Pre-1").contains("l OK"));
    let mut bob = Client::to(pop3);
    assert!(bob.line().starts_with("+OK"));
    assert!(bob.pop("USER bob").starts_with("+OK"));
    assert!(bob.pop("PASS Bob-Pre-1").starts_with("+OK"));

    let mut attack = Command::new("python3")
        .arg("-c")
        .arg(ATTACK)
        .args([imap.to_string(), pop3.to_string(), n.to_string(), secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 attack");
    let mut out = BufReader::new(attack.stdout.take().expect("stdout"));
    let mut ready = String::new();
    out.read_line(&mut ready).expect("ready line");
    if ready.trim() != "ready" {
        let _ = attack.kill();
        panic!("attack did not get going: {ready:?}");
    }
    let start = Instant::now();
    let (mut worst, mut rss_imap, mut rss_pop3, mut i) = (Duration::ZERO, 0, 0, 0);
    while start.elapsed() < Duration::from_secs_f64(secs - 2.0) {
        worst = worst.max(timed(&mut alice, true, i)).max(timed(&mut bob, false, i));
        rss_imap = rss_imap.max(rss_kb(&inst, "imapd"));
        rss_pop3 = rss_pop3.max(rss_kb(&inst, "pop3d"));
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    // A new login from another address is served meanwhile.
    let mut carol = Client::to(imap);
    assert!(carol.line().starts_with("* OK"));
    assert!(carol.imap("c", "LOGIN alice Alice-Pre-1").contains("c OK"));
    let mut done = String::new();
    out.read_line(&mut done).expect("done line");
    let _ = attack.wait();
    eprintln!(
        "stress: {i} rounds, slowest answer {worst:?}, peak RSS imapd {rss_imap} kB, pop3d {rss_pop3} kB, attack {}",
        done.trim()
    );
    assert!(done.starts_with("done "), "{done:?}");
    assert!(worst < Duration::from_secs(1), "a logged-in user waited {worst:?}");
    assert!(i >= 20, "only {i} rounds");
    assert!(rss_imap < RSS_BOUND_KB, "imapd RSS {rss_imap} kB");
    assert!(rss_pop3 < RSS_BOUND_KB, "pop3d RSS {rss_pop3} kB");
    assert!(pids_of(&inst, "imapd").len() <= 2 && pids_of(&inst, "pop3d").len() <= 2);
    let log = inst.log();
    assert!(log.contains("literal of 52000000 bytes refused before login from 127.0.0.9"));
    for daemon in ["/imapd[", "/pop3d["] {
        for what in [
            "login timeout from 127.0.0.9",
            "command line too long before login from 127.0.0.9",
        ] {
            assert!(
                log.lines().any(|l| l.contains(daemon) && l.contains(what)),
                "{daemon} logs {what:?}"
            );
        }
    }
    inst.stop();
}
