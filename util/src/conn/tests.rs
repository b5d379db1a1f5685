//! Each duty of the driver, tested once against a tiny line protocol over real TCP
//! loopback (and a real rustls client): back-pressure, the deadlines (phase and the
//! protocol's timers too), the TLS upgrade with pipelined plaintext discarded and its
//! version named, hand-over, framing in the line buffer, a blocked protocol, write
//! interest, a declined stop and the disconnect hook, the auxiliary tokens, an end of
//! input that came with the last bytes, work that needs no input going on in turns, a
//! notification reaching the connections, buffers given back after a burst, commands sent
//! before the end of input all answered.

use super::*;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The test protocol's output bound.
const OUT: usize = 8 * 1024;
/// One BIG reply.
const BIG: usize = 4 * 1024;
/// One HUGE reply.
const HUGE: usize = 256 * 1024;

/// What the server saw, shared with the test.
#[derive(Default)]
struct Seen {
    commands: Mutex<Vec<String>>,
    max_output: AtomicUsize,
    max_input: AtomicUsize,
    stop: AtomicBool,
    /// The protocol says it is blocked while set.
    hold: AtomicBool,
    /// Drive every connection once (the daemon's side socket drained).
    kick: AtomicBool,
    /// Stop the pool once (the process is asked to stop).
    stop_pool: AtomicBool,
    /// Connections registered for writability now, and at most.
    writers: AtomicUsize,
    max_writers: AtomicUsize,
    disconnected: AtomicUsize,
    /// The TLS version `secured` saw.
    secured: Mutex<Vec<String>>,
    /// Notify the pool once (what the daemon watches changed).
    notify: AtomicBool,
    /// The largest buffer capacity a connection holds now.
    capacity: AtomicUsize,
}

/// Commands: `STLS`, `LOGIN`, `BIG` (a 4 KB reply), `STREAM n` (n bytes handed over),
/// `FRAMED` (from now on lines come from the line buffer, at most [`FRAMED`] bytes),
/// `RAW n` (n raw bytes from the line buffer), `PHASE ms` (a phase deadline), `LATER ms`
/// (a timer that sends `later`), `BUSY` (declines a stop), `WORK n` (n steps of 2 ms that
/// need no input, a line each), `WATCH` (says `changed` at each notification), `HUGE` (one
/// 256 KB reply), anything else is echoed.
struct Test {
    seen: Arc<Seen>,
    tls: Option<Arc<rustls::ServerConfig>>,
    framed: bool,
    raw: Option<usize>,
    later: Option<Instant>,
    busy: bool,
    steps: usize,
    watching: bool,
}

/// The line limit of the line buffer.
const FRAMED: usize = 64;

/// A hand-over: `left` bytes of `x` in 1 KB parts, then `.\r\n`.
struct Xs {
    left: usize,
    done: bool,
}

impl Source for Xs {
    fn fill(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let n = self.left.min(1024);
        out.extend(std::iter::repeat_n(b'x', n));
        self.left -= n;
        if self.left == 0 {
            out.extend_from_slice(b".\r\n");
            self.done = true;
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.done
    }
}

impl Protocol for Test {
    fn greeting(&mut self, io: &mut Io<'_>) {
        io.send(b"+OK hello\r\n");
    }

    fn handle(&mut self, io: &mut Io<'_>) -> bool {
        if self.steps > 0 {
            std::thread::sleep(Duration::from_millis(2));
            self.steps -= 1;
            io.send(format!("step {}\r\n", self.steps).as_bytes());
            // one step per call, called again through `more`
            return false;
        }
        if let Some(n) = self.raw {
            let Some(bytes) = io.lines().take_exact(n) else {
                return false;
            };
            self.raw = None;
            io.send(format!("raw {}\r\n", String::from_utf8_lossy(&bytes)).as_bytes());
            return true;
        }
        if self.framed {
            let line = match io.lines().next_line() {
                None => return false,
                Some(crate::line::LineEvent::TooLong) => {
                    io.send(b"-ERR framed too long\r\n");
                    return true;
                }
                Some(crate::line::LineEvent::Line { line, .. }) => line,
            };
            return self.command(io, String::from_utf8_lossy(&line).into_owned());
        }
        let line = match io.line(256) {
            Line::Partial => return false,
            Line::TooLong => {
                io.send(b"-ERR too long\r\n");
                io.close();
                return false;
            }
            Line::Line(l) => String::from_utf8_lossy(&l).into_owned(),
        };
        self.command(io, line)
    }

    fn limits(&self) -> Limits {
        Limits {
            input: 1024,
            output: OUT,
        }
    }

    fn ending(&mut self, why: Ending, io: &mut Io<'_>) {
        io.send(format!("-ERR {why:?}\r\n").as_bytes());
    }

    fn line_limit(&self) -> usize {
        FRAMED
    }

    fn blocked(&self) -> bool {
        self.seen.hold.load(Ordering::SeqCst)
    }

    fn secured(&mut self, io: &mut Io<'_>) {
        let version = io.tls().map(|t| t.version()).unwrap_or_default();
        self.seen.secured.lock().unwrap().push(version);
    }

    fn may_stop(&self) -> bool {
        !self.busy
    }

    fn timer(&mut self, now: Instant, io: &mut Io<'_>) -> bool {
        if self.later.is_some_and(|t| now >= t) {
            self.later = None;
            io.send(b"later\r\n");
            return true;
        }
        false
    }

    fn disconnected(&mut self, _registry: &mio::Registry) {
        self.seen.disconnected.fetch_add(1, Ordering::SeqCst);
    }

    fn more(&self) -> bool {
        self.steps > 0
    }

    fn notify(&mut self, io: &mut Io<'_>) -> bool {
        if self.watching {
            io.send(b"changed\r\n");
        }
        self.watching
    }
}

impl Test {
    fn command(&mut self, io: &mut Io<'_>, line: String) -> bool {
        self.seen.commands.lock().unwrap().push(line.clone());
        match line.split_once(' ').unwrap_or((&line, "")) {
            ("STLS", _) => {
                io.send(b"+OK begin TLS\r\n");
                let cfg = self.tls.clone().unwrap();
                assert!(io.start_tls(cfg));
            }
            ("LOGIN", _) => {
                io.authenticated();
                io.send(b"+OK in\r\n");
            }
            ("BIG", _) => io.send(&[b'b'; BIG]),
            ("STREAM", n) => {
                io.send(b"+OK\r\n");
                io.hand_over(Box::new(Xs {
                    left: n.parse().unwrap(),
                    done: false,
                }));
            }
            ("QUIT", _) => {
                io.send(b"+OK bye\r\n");
                io.close();
            }
            ("FRAMED", _) => {
                self.framed = true;
                io.send(b"+OK framed\r\n");
            }
            ("RAW", n) => self.raw = Some(n.parse().unwrap()),
            ("PHASE", ms) => {
                io.phase_deadline(Some(Duration::from_millis(ms.parse().unwrap())));
                io.send(b"+OK phase\r\n");
            }
            ("LATER", ms) => self.later = Some(Instant::now() + Duration::from_millis(ms.parse().unwrap())),
            ("BUSY", _) => {
                self.busy = true;
                io.send(b"+OK busy\r\n");
            }
            ("WORK", n) => self.steps = n.parse().unwrap(),
            ("WATCH", _) => {
                self.watching = true;
                io.send(b"+OK watching\r\n");
            }
            ("HUGE", _) => io.send(&[b'h'; HUGE]),
            _ => io.send(format!("echo {line}\r\n").as_bytes()),
        }
        io.touch();
        let pending = io.pending_output();
        self.seen.max_output.fetch_max(pending, Ordering::SeqCst);
        true
    }
}

/// A server on loopback in its own thread: accepts into a [`Pool`], runs until the
/// test's [`Seen::stop`] (or 60 s).
fn server(deadlines: Deadlines, tls: Option<Arc<rustls::ServerConfig>>) -> (std::net::SocketAddr, Arc<Seen>) {
    let (listener, addr) = listen();
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(64);
        let mut pool: Pool<Test> = Pool::new(mio::Token(super::RESERVED_TOKENS - 2));
        let start = Instant::now();
        while !s.stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60) {
            while let Ok((sock, _)) = listener.accept() {
                let proto = Test {
                    seen: Arc::clone(&s),
                    tls: tls.clone(),
                    framed: false,
                    raw: None,
                    later: None,
                    busy: false,
                    steps: 0,
                    watching: false,
                };
                pool.add(poll.registry(), sock, proto, None, deadlines);
            }
            poll.poll(&mut events, Some(Duration::from_millis(10))).unwrap();
            for e in events.iter() {
                pool.event(poll.registry(), e);
            }
            pool.tick(poll.registry(), Instant::now());
            if s.kick.swap(false, Ordering::SeqCst) {
                for id in pool.ids() {
                    pool.drive(poll.registry(), id);
                }
            }
            if s.stop_pool.swap(false, Ordering::SeqCst) {
                pool.stop(poll.registry());
            }
            if s.notify.swap(false, Ordering::SeqCst) {
                pool.notify(poll.registry());
            }
            s.capacity.store(pool.max_capacity(), Ordering::SeqCst);
            s.max_output.fetch_max(pool.max_pending_output(), Ordering::SeqCst);
            s.max_input.fetch_max(pool.max_pending_input(), Ordering::SeqCst);
            s.writers.store(pool.writers(), Ordering::SeqCst);
            s.max_writers.fetch_max(pool.writers(), Ordering::SeqCst);
        }
    });
    (addr, seen)
}

/// A non-blocking listener on loopback and its address.
pub(super) fn listen() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A server without deadlines that matter and a client it has greeted.
fn greeted() -> (TcpStream, Arc<Seen>) {
    let (addr, seen) = server(deadlines(30_000, None, None), None);
    let mut c = connect(addr);
    read_until(&mut c, b"hello\r\n");
    (c, seen)
}

fn deadlines(idle: u64, login: Option<u64>, session: Option<u64>) -> Deadlines {
    Deadlines {
        idle: Duration::from_millis(idle),
        login: login.map(Duration::from_millis),
        session: session.map(Duration::from_millis),
    }
}

pub(super) fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// Reads until `want` has been seen (or EOF); returns all read.
fn read_until(c: &mut impl Read, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !got.windows(want.len()).any(|w| w == want) {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Reads to EOF; returns what came and when it closed.
fn read_to_close(c: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    (got, Instant::now())
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_output_past_its_bound() {
    let (mut c, seen) = greeted();
    // 2000 BIGs = 8 MB of replies, more than loopback's socket buffers hold.
    let writer = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut w = writer;
        w.write_all(&b"BIG\r\n".repeat(2000)).unwrap();
    });
    std::thread::sleep(Duration::from_millis(1500));
    let executed = seen.commands.lock().unwrap().len();
    assert!(executed < 2000, "all {executed} commands ran though nobody read");
    let held = seen.max_output.load(Ordering::SeqCst);
    assert!(
        held <= OUT + BIG,
        "held {held} bytes of output, bound {OUT} + one reply"
    );
    // Nothing is lost: reading now gets every reply.
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    while got < 2000 * BIG {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert_eq!(got, 2000 * BIG);
    sender.join().unwrap();
    assert!(seen.max_output.load(Ordering::SeqCst) <= OUT + BIG);
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn the_login_deadline_is_not_extended_by_traffic_and_ends_at_login() {
    let (addr, seen) = server(deadlines(30_000, Some(1000), None), None);
    let start = Instant::now();
    let mut busy = connect(addr);
    let mut logged_in = connect(addr);
    logged_in.write_all(b"LOGIN\r\n").unwrap();
    read_until(&mut logged_in, b"+OK in\r\n");
    let mut got = Vec::new();
    while start.elapsed() < Duration::from_secs(4) {
        if busy.write_all(b"NOOP\r\n").is_err() {
            break;
        }
        busy.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 4096];
        match busy.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if got.ends_with(b"-ERR Login\r\n") {
            break;
        }
    }
    let t = start.elapsed();
    assert!(got.ends_with(b"-ERR Login\r\n"), "{}", String::from_utf8_lossy(&got));
    assert!(t >= Duration::from_millis(900) && t < Duration::from_secs(3), "{t:?}");
    // the connection that logged in lives on past the login deadline
    logged_in.write_all(b"NOOP\r\n").unwrap();
    assert!(read_until(&mut logged_in, b"echo NOOP\r\n").ends_with(b"echo NOOP\r\n"));
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn the_idle_deadline_is_extended_by_commands_only() {
    let (addr, seen) = server(deadlines(800, None, None), None);
    let mut c = connect(addr);
    read_until(&mut c, b"hello\r\n");
    let start = Instant::now();
    // commands every 300 ms keep it open past the idle time
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        c.write_all(b"NOOP\r\n").unwrap();
        read_until(&mut c, b"echo NOOP\r\n");
    }
    assert!(start.elapsed() > Duration::from_millis(1400));
    // half a line is no command: it does not count
    let quiet = Instant::now();
    c.write_all(b"NO").unwrap();
    let (got, closed) = read_to_close(&mut c);
    assert_eq!(got, b"-ERR Idle\r\n");
    let t = closed - quiet;
    assert!(
        t >= Duration::from_millis(700) && t < Duration::from_millis(2500),
        "{t:?}"
    );
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn the_whole_session_deadline_ends_even_a_busy_authenticated_client() {
    let (addr, seen) = server(deadlines(30_000, Some(30_000), Some(1200)), None);
    let start = Instant::now();
    let mut c = connect(addr);
    c.write_all(b"LOGIN\r\n").unwrap();
    let t = busy_until(&mut c, b"-ERR Session\r\n", start);
    assert!(t >= Duration::from_millis(1100) && t < Duration::from_secs(3), "{t:?}");
    seen.stop.store(true, Ordering::SeqCst);
}

/// Sends NOOPs (at most 5 s from `start`) until the answers end with `end`; returns when
/// they did, from `start`.
fn busy_until(c: &mut TcpStream, end: &[u8], start: Instant) -> Duration {
    let mut got = Vec::new();
    c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    while start.elapsed() < Duration::from_secs(5) && !got.ends_with(end) {
        let _ = c.write_all(b"NOOP\r\n");
        let mut buf = [0u8; 4096];
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    assert!(got.ends_with(end), "{}", String::from_utf8_lossy(&got));
    start.elapsed()
}

fn tls_pair() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    let server = crate::tls::server_config_from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, Arc::new(client))
}

#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    let (server_cfg, client_cfg) = tls_pair();
    let (addr, seen) = server(deadlines(30_000, None, None), Some(server_cfg));
    let mut c = connect(addr);
    read_until(&mut c, b"hello\r\n");
    // one packet: the injected CAPA must not run, neither in the clear nor inside TLS
    c.write_all(b"STLS\r\nCAPA\r\n").unwrap();
    let got = read_until(&mut c, b"begin TLS\r\n");
    assert_eq!(got, b"+OK begin TLS\r\n");
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(client_cfg, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, c);
    tls.write_all(b"PING\r\n").unwrap();
    let got = read_until(&mut tls, b"\r\n");
    assert_eq!(got, b"echo PING\r\n");
    assert_eq!(*seen.commands.lock().unwrap(), ["STLS", "PING"]);
    // the protocol was told once, with the version in Postfix's wording
    assert_eq!(*seen.secured.lock().unwrap(), ["TLSv1.3"]);
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn a_hand_over_streams_as_the_client_reads_then_the_protocol_goes_on() {
    let (mut c, seen) = greeted();
    let size = 4 * 1024 * 1024;
    // the command after STREAM runs only once the stream is done; 1 MB of commands
    // pipelined behind it wait in the socket, not in the connection's input
    let mut pipelined = format!("STREAM {size}\r\nAFTER\r\n").into_bytes();
    pipelined.extend_from_slice(&b"NOOP\r\n".repeat(1024 * 1024 / 6));
    let writer = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut w = writer;
        w.write_all(&pipelined).unwrap();
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(*seen.commands.lock().unwrap(), ["STREAM 4194304"]);
    assert!(seen.max_output.load(Ordering::SeqCst) <= OUT + 1024 + 3);
    let held = seen.max_input.load(Ordering::SeqCst);
    assert!(
        held < 1024 + 8192,
        "held {held} bytes of input, bound 1024 (read 8 KB at a time)"
    );
    let got = read_until(&mut c, b"echo AFTER\r\n");
    let mut want = b"+OK\r\n".to_vec();
    want.extend(std::iter::repeat_n(b'x', size));
    want.extend_from_slice(b".\r\necho AFTER\r\n");
    // (echoes of the NOOPs may follow in the same read)
    assert!(got.len() >= want.len());
    assert!(got.get(..want.len()) == Some(&want[..]));
    assert!(seen.max_output.load(Ordering::SeqCst) <= OUT + 1024 + 3);
    drop(c);
    let _ = sender.join();
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn a_fast_reader_of_a_long_stream_does_not_hold_up_the_other_connections() {
    let (addr, seen) = server(deadlines(30_000, None, None), None);
    let mut fast = connect(addr);
    read_until(&mut fast, b"hello\r\n");
    let size = 512 * 1024 * 1024;
    fast.write_all(format!("STREAM {size}\r\n").as_bytes()).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        while got < size {
            match fast.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    // while half a gigabyte streams, another client is greeted and answered at once
    let start = Instant::now();
    let mut other = connect(addr);
    other.write_all(b"NOOP\r\n").unwrap();
    let got = read_until(&mut other, b"echo NOOP\r\n");
    let t = start.elapsed();
    assert!(got.ends_with(b"echo NOOP\r\n"));
    assert!(
        !reader.is_finished(),
        "the stream ended before the check: make it longer"
    );
    assert!(t < Duration::from_secs(1), "answered after {t:?}");
    seen.stop.store(true, Ordering::SeqCst);
    let _ = reader.join();
}

#[test]
fn the_line_buffer_frames_lines_drops_a_too_long_one_and_gives_raw_bytes() {
    let (mut c, seen) = greeted();
    let long = "y".repeat(FRAMED * 3);
    c.write_all(format!("FRAMED\r\n{long}\r\nRAW 5\r\nab\ncdNOOP\r\n").as_bytes())
        .unwrap();
    let got = read_until(&mut c, b"echo NOOP\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK framed\r\n-ERR framed too long\r\nraw ab\ncd\r\necho NOOP\r\n"
    );
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn a_blocked_protocol_is_not_read_until_it_is_driven_again() {
    let (mut c, seen) = greeted();
    seen.hold.store(true, Ordering::SeqCst);
    // 1 MB of commands: none runs, and no more than the input bound is taken in
    let writer = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut w = writer;
        let _ = w.write_all(&b"NOOP\r\n".repeat(1024 * 1024 / 6));
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(seen.commands.lock().unwrap().is_empty());
    assert_eq!(seen.max_input.load(Ordering::SeqCst), 0, "read while blocked");
    seen.hold.store(false, Ordering::SeqCst);
    seen.kick.store(true, Ordering::SeqCst);
    read_until(&mut c, b"echo NOOP\r\n");
    assert!(!seen.commands.lock().unwrap().is_empty());
    drop(c);
    let _ = sender.join();
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn the_phase_deadline_ends_a_busy_client_and_the_protocols_timer_fires() {
    let (mut c, seen) = greeted();
    c.write_all(b"LATER 300\r\n").unwrap();
    let start = Instant::now();
    read_until(&mut c, b"later\r\n");
    let t = start.elapsed();
    assert!(t >= Duration::from_millis(250) && t < Duration::from_secs(2), "{t:?}");
    c.write_all(b"PHASE 800\r\n").unwrap();
    read_until(&mut c, b"+OK phase\r\n");
    let t = busy_until(&mut c, b"-ERR Phase\r\n", Instant::now());
    assert!(t >= Duration::from_millis(700) && t < Duration::from_secs(3), "{t:?}");
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn writability_is_asked_for_only_while_output_waits() {
    let (mut c, seen) = greeted();
    for _ in 0..20 {
        c.write_all(b"NOOP\r\n").unwrap();
        read_until(&mut c, b"echo NOOP\r\n");
    }
    assert_eq!(seen.max_writers.load(Ordering::SeqCst), 0);
    // replies the client does not read: the socket fills, writability is asked for
    c.write_all(&b"BIG\r\n".repeat(1000)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(seen.writers.load(Ordering::SeqCst), 1);
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    while got < 1000 * BIG {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert_eq!(got, 1000 * BIG);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.writers.load(Ordering::SeqCst), 0);
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn a_stop_ends_idle_connections_and_leaves_one_that_declines() {
    let (addr, seen) = server(deadlines(30_000, None, None), None);
    let mut idle = connect(addr);
    let mut busy = connect(addr);
    read_until(&mut idle, b"hello\r\n");
    busy.write_all(b"BUSY\r\n").unwrap();
    read_until(&mut busy, b"+OK busy\r\n");
    seen.stop_pool.store(true, Ordering::SeqCst);
    let (got, _) = read_to_close(&mut idle);
    assert_eq!(got, b"-ERR Shutdown\r\n");
    busy.write_all(b"NOOP\r\n").unwrap();
    assert!(read_until(&mut busy, b"echo NOOP\r\n").ends_with(b"echo NOOP\r\n"));
    busy.write_all(b"QUIT\r\n").unwrap();
    let (got, _) = read_to_close(&mut busy);
    assert_eq!(got, b"+OK bye\r\n");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.disconnected.load(Ordering::SeqCst), 2);
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn auxiliary_tokens_map_back_to_their_connection_and_slot() {
    let pool: Pool<Test> = Pool::new(mio::Token(super::RESERVED_TOKENS - 2));
    for id in [0, 1, 7, FIRST_FREE / 4 - 1] {
        assert_eq!(pool.aux_slot(mio::Token(4 * id)), None);
        for k in 0..AUX {
            assert_eq!(pool.aux_slot(mio::Token(4 * id + 1 + k)), Some((id, k)));
            assert_eq!(pool.aux_id(mio::Token(4 * id + 1 + k)), Some(id));
        }
    }
    assert_eq!(pool.aux_slot(mio::Token(FIRST_FREE)), None);
}

#[test]
fn an_end_that_comes_with_the_last_bytes_is_seen() {
    let (mut c, seen) = greeted();
    // bytes and FIN in one go: the read that gets the bytes comes back short, and no
    // further event comes for the end
    c.write_all(b"NOOP\r\n").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let start = Instant::now();
    let (_, closed) = read_to_close(&mut c);
    assert!(
        closed - start < Duration::from_secs(2),
        "closed after {:?}",
        closed - start
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.disconnected.load(Ordering::SeqCst), 1);
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn work_that_needs_no_input_goes_on_in_turns_and_others_are_served_meanwhile() {
    let (addr, seen) = server(deadlines(30_000, None, None), None);
    let mut a = connect(addr);
    read_until(&mut a, b"hello\r\n");
    let mut b = connect(addr);
    read_until(&mut b, b"hello\r\n");
    // 400 steps of 2 ms: about 0.8 s of work, and no input comes to drive it
    a.write_all(b"WORK 400\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    b.write_all(b"PING\r\n").unwrap();
    read_until(&mut b, b"echo PING\r\n");
    let answered = start.elapsed();
    assert!(
        answered < Duration::from_millis(300),
        "the other client waited {answered:?}"
    );
    let got = read_until(&mut a, b"step 0\r\n");
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("step ").count(), 400, "every step, in order");
    assert!(text.ends_with("step 0\r\n"));
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn a_notification_reaches_the_connections_that_want_it_at_once() {
    let (addr, seen) = server(deadlines(30_000, None, None), None);
    let mut watchers: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = connect(addr);
            read_until(&mut c, b"hello\r\n");
            c.write_all(b"WATCH\r\n").unwrap();
            read_until(&mut c, b"+OK watching\r\n");
            c
        })
        .collect();
    let mut other = connect(addr);
    read_until(&mut other, b"hello\r\n");
    let start = Instant::now();
    seen.notify.store(true, Ordering::SeqCst);
    for c in &mut watchers {
        let got = read_until(c, b"changed\r\n");
        assert!(got.ends_with(b"changed\r\n"), "{got:?}");
    }
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    // the connection that did not ask hears nothing: its next line answers its command
    other.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_until(&mut other, b"\r\n"), b"echo PING\r\n");
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn buffers_that_grew_for_a_burst_are_given_back_once_empty() {
    let (mut c, seen) = greeted();
    c.write_all(b"HUGE\r\n").unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    while got < HUGE {
        got += c.read(&mut buf).unwrap();
    }
    c.write_all(b"PING\r\n").unwrap();
    read_until(&mut c, b"echo PING\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let held = seen.capacity.load(Ordering::SeqCst);
    assert!(held < 64 * 1024, "an idle connection holds {held} bytes of buffers");
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn an_over_long_line_past_the_give_back_size_stays_one_too_long_line() {
    // 200 KB without a newline, in writes spread out so the driver reads it in turns and
    // gives its buffers back between them: the line's tail must not become a command
    let (mut c, seen) = greeted();
    c.write_all(b"FRAMED\r\n").unwrap();
    read_until(&mut c, b"+OK framed\r\n");
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..12 {
        c.write_all(&chunk).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(b"tail\r\nNOOP\r\n").unwrap();
    let got = read_until(&mut c, b"echo NOOP\r\n");
    assert_eq!(String::from_utf8_lossy(&got), "-ERR framed too long\r\necho NOOP\r\n");
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn commands_sent_before_the_end_of_input_are_all_answered_then_it_closes() {
    let (mut c, seen) = greeted();
    let addr = c.peer_addr().unwrap();
    // more answers than the output bound (the client reads only after its shutdown), work
    // that needs no input, and a half line the end of input leaves unfinished
    let mut sent = String::new();
    for i in 0..4 {
        sent.push_str(&format!("ONE {i}\r\nBIG\r\nBIG\r\nBIG\r\n"));
    }
    sent.push_str("WORK 3\r\nLAST\r\nhalf a li");
    c.write_all(sent.as_bytes()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (got, _) = read_to_close(&mut c);
    let text = String::from_utf8_lossy(&got);
    for i in 0..4 {
        assert!(text.contains(&format!("echo ONE {i}\r\n")), "ONE {i} unanswered");
    }
    assert_eq!(got.iter().filter(|&&b| b == b'b').count(), 12 * BIG);
    assert!(text.contains("step 0\r\n"));
    assert!(
        text.ends_with("echo LAST\r\n"),
        "{:?}",
        &text[text.len().saturating_sub(40)..]
    );
    assert!(seen.max_output.load(Ordering::SeqCst) <= OUT + BIG + 64);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.disconnected.load(Ordering::SeqCst), 1);
    // a client that quits before its end of input: the QUIT closes, nothing after it
    let mut q = connect(addr);
    read_until(&mut q, b"hello\r\n");
    q.write_all(b"A\r\nQUIT\r\nB\r\n").unwrap();
    q.shutdown(std::net::Shutdown::Write).unwrap();
    let (got, _) = read_to_close(&mut q);
    assert_eq!(String::from_utf8_lossy(&got), "echo A\r\n+OK bye\r\n");
    seen.stop.store(true, Ordering::SeqCst);
}
