//! [`Gated`] over real TCP loopback with anvil away (the in-process count decides): a
//! client over its address's limit is refused, a closed connection's count is given
//! back, and one that logs in (an answer on its auxiliary token) no longer counts.

use super::*;
use crate::anvil::gate::Ticket;
use crate::anvil::local::Refusal;
use crate::skeleton::{Accepted, Peer, Stream};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What the server saw, shared with the test.
#[derive(Default)]
struct Seen {
    stop: AtomicBool,
    /// Connections given back to [`Front::closed`].
    closed: AtomicUsize,
}

/// `LOGIN` asks "elsewhere" (a socket pair on the connection's auxiliary token) and logs
/// in when the answer comes; `QUIT` closes; anything else is echoed.
struct Door {
    ticket: Option<Ticket>,
    asked: Option<(mio::net::UnixStream, mio::net::UnixStream)>,
    logged_in: bool,
}

impl Protocol for Door {
    fn greeting(&mut self, io: &mut Io<'_>) {
        io.send(b"+OK hello\r\n");
    }

    fn handle(&mut self, io: &mut Io<'_>) -> bool {
        let line = match io.line(256) {
            Line::Partial => return false,
            Line::TooLong => {
                io.abort();
                return false;
            }
            Line::Line(l) => String::from_utf8_lossy(&l).into_owned(),
        };
        match line.as_str() {
            "LOGIN" => {
                let (mut mine, mut theirs) = mio::net::UnixStream::pair().unwrap();
                let (registry, token) = io.aux();
                registry.register(&mut mine, token, mio::Interest::READABLE).unwrap();
                theirs.write_all(b"ok").unwrap();
                self.asked = Some((mine, theirs));
            }
            "QUIT" => {
                io.send(b"+OK bye\r\n");
                io.close();
            }
            _ => io.send(format!("echo {line}\r\n").as_bytes()),
        }
        true
    }

    fn limits(&self) -> Limits {
        Limits {
            input: 1024,
            output: 8192,
        }
    }

    fn disconnected(&mut self, registry: &mio::Registry) {
        if let Some((mut mine, _)) = self.asked.take() {
            let _ = registry.deregister(&mut mine);
        }
    }
}

/// The test's side of the service.
struct Desk {
    seen: Arc<Seen>,
}

impl Front for Desk {
    type Proto = Door;
    type Item = TcpStream;

    fn arrive(&mut self, conn: Accepted) -> Option<(TcpStream, Option<IpAddr>)> {
        match (conn.stream, conn.peer) {
            (Stream::Tcp(sock), Peer::Inet(a)) => Some((sock, Some(a.ip()))),
            _ => None,
        }
    }

    fn start(&mut self, sock: TcpStream, ticket: Option<Ticket>) -> Result<Start<Door>, Door> {
        let proto = Door {
            ticket,
            asked: None,
            logged_in: false,
        };
        let deadlines = Deadlines {
            idle: Duration::from_secs(30),
            login: None,
            session: None,
        };
        Ok(Start {
            sock,
            peer: None,
            proto,
            tls: None,
            deadlines,
        })
    }

    fn refuse(&mut self, mut sock: TcpStream, _ip: IpAddr, why: Refusal) {
        let _ = write!(sock, "-ERR {why:?}\r\n");
    }

    fn ticket(&mut self, proto: &mut Door) -> Option<Ticket> {
        proto.ticket.take()
    }

    fn logged_in(&self, proto: &Door) -> bool {
        proto.logged_in
    }

    fn aux_event(
        &mut self,
        registry: &mio::Registry,
        proto: &mut Door,
        io: &mut Io<'_>,
        slot: usize,
        _event: &mio::event::Event,
    ) -> bool {
        assert_eq!(slot, 0);
        let Some((mut mine, _theirs)) = proto.asked.take() else {
            return false;
        };
        let mut buf = [0u8; 16];
        assert_eq!(mine.read(&mut buf).unwrap(), 2);
        let _ = registry.deregister(&mut mine);
        proto.logged_in = true;
        io.authenticated();
        io.send(b"+OK in\r\n");
        true
    }

    fn closed(&mut self, _registry: &mio::Registry, _proto: &mut Door) {
        self.seen.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// A gated server on loopback in its own thread, `limit` connections per address, until
/// the test's [`Seen::stop`] (or 60 s).
fn server(limit: u32) -> (std::net::SocketAddr, Arc<Seen>) {
    let (listener, addr) = listen();
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(64);
        let desk = Desk { seen: Arc::clone(&s) };
        // no anvil here: the in-process count decides
        let mut gated = Gated::new(desk, "gated-test/inet", limit, 0);
        let start = Instant::now();
        while !s.stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60) {
            while let Ok((sock, peer)) = listener.accept() {
                let conn = Accepted {
                    stream: Stream::Tcp(sock),
                    peer: Peer::Inet(peer),
                };
                gated.arrive(poll.registry(), conn);
            }
            poll.poll(&mut events, Some(Duration::from_millis(10))).unwrap();
            for e in events.iter() {
                gated.event(poll.registry(), e);
            }
            gated.timers(poll.registry(), Instant::now());
        }
        gated.shut(poll.registry());
    });
    (addr, seen)
}

/// Reads one line (the first read that ends in CRLF, or EOF).
fn read_line(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn read_to_close(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_client_over_the_count_is_refused_and_a_closed_ones_count_is_given_back() {
    let (addr, seen) = server(2);
    let mut one = connect(addr);
    let mut two = connect(addr);
    assert_eq!(read_line(&mut one), "+OK hello\r\n");
    assert_eq!(read_line(&mut two), "+OK hello\r\n");
    let mut three = connect(addr);
    assert_eq!(read_to_close(&mut three), "-ERR Count\r\n");
    one.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_to_close(&mut one), "+OK bye\r\n");
    // the count of the one that quit is free again
    let mut four = connect(addr);
    assert_eq!(read_line(&mut four), "+OK hello\r\n");
    four.write_all(b"NOOP\r\n").unwrap();
    assert_eq!(read_line(&mut four), "echo NOOP\r\n");
    assert_eq!(seen.closed.load(Ordering::SeqCst), 1);
    seen.stop.store(true, Ordering::SeqCst);
}

#[test]
fn a_client_that_logs_in_no_longer_counts() {
    let (addr, seen) = server(1);
    let mut one = connect(addr);
    assert_eq!(read_line(&mut one), "+OK hello\r\n");
    let mut refused = connect(addr);
    assert_eq!(read_to_close(&mut refused), "-ERR Count\r\n");
    // the answer comes on the connection's auxiliary token: logged in, count given back
    one.write_all(b"LOGIN\r\n").unwrap();
    assert_eq!(read_line(&mut one), "+OK in\r\n");
    let mut two = connect(addr);
    assert_eq!(read_line(&mut two), "+OK hello\r\n");
    // the new one counts, the logged-in one does not
    let mut three = connect(addr);
    assert_eq!(read_to_close(&mut three), "-ERR Count\r\n");
    one.write_all(b"NOOP\r\n").unwrap();
    assert_eq!(read_line(&mut one), "echo NOOP\r\n");
    // closing the logged-in one frees nothing more
    one.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_to_close(&mut one), "+OK bye\r\n");
    let mut four = connect(addr);
    assert_eq!(read_to_close(&mut four), "-ERR Count\r\n");
    seen.stop.store(true, Ordering::SeqCst);
}

fn listen() -> (std::net::TcpListener, std::net::SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}
