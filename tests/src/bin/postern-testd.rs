//! postern-testd — a daemon for testing master and the skeleton, never shipped in
//! `etc/master.toml`.
//!
//! `postern-testd single|event|crash|trigger`:
//! * `single`: the one-connection skeleton; greets each client with `pid PID served N`,
//!   then echoes lines until `quit` or end-of-file.
//! * `event`: the same protocol on the event skeleton, many connections per process.
//! * `crash`: exits with status 2 at start-up, before serving (a broken install).
//! * `trigger`: appends every byte it receives to `trace/testd-triggers.log` in the queue directory
//!   (to observe master's wakeups).
#![forbid(unsafe_code)]

use mio::net::TcpStream as MioTcp;
use mio::{Interest, Token};
use postern_lib::skeleton::event::{EventLoop, EventService, event_server};
use postern_lib::skeleton::single::single_server;
use postern_lib::skeleton::{Accepted, Context, Stream};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("single") => single_server("testd", |_| Ok(0u64), serve_single),
        Some("trigger") => single_server(
            "testd",
            |_| Ok(()),
            |_, _, mut conn| {
                let mut buf = Vec::new();
                let _ = conn.stream.read_to_end(&mut buf);
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open("trace/testd-triggers.log")
                {
                    let _ = f.write_all(&buf);
                }
            },
        ),
        Some("event") => event_server("testd", |_| Ok(Echo::default())),
        Some("crash") => ExitCode::from(2),
        _ => {
            eprintln!("usage: postern-testd single|event|crash|trigger");
            ExitCode::FAILURE
        }
    }
}

fn serve_single(served: &mut u64, _ctx: &Context, conn: Accepted) {
    *served += 1;
    let Stream::Tcp(s) = conn.stream else { return };
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    if writeln!(w, "pid {} served {}", std::process::id(), served).is_err() {
        return;
    }
    for line in BufReader::new(s).take(1 << 20).lines() {
        let Ok(line) = line else { return };
        if line == "quit" || writeln!(w, "{line}").is_err() {
            return;
        }
    }
}

#[derive(Default)]
struct Echo {
    next: usize,
    conns: HashMap<Token, (MioTcp, Vec<u8>)>,
    served: u64,
}

impl EventService for Echo {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        let Stream::Tcp(s) = conn.stream else { return };
        if s.set_nonblocking(true).is_err() {
            return;
        }
        self.served += 1;
        let mut s = MioTcp::from_std(s);
        let _ = s.write_all(format!("pid {} served {}\n", std::process::id(), self.served).as_bytes());
        self.next += 1;
        let t = Token(self.next);
        if lp.registry().register(&mut s, t, Interest::READABLE).is_ok() {
            self.conns.insert(t, (s, Vec::new()));
        }
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        let t = event.token();
        let Some((s, pending)) = self.conns.get_mut(&t) else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut close = false;
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    close = true;
                    break;
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    close = true;
                    break;
                }
            }
        }
        while let Some(at) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            if line.starts_with(b"quit") {
                close = true;
                break;
            }
            let _ = s.write_all(&line);
        }
        if (close || pending.len() > 1 << 16)
            && let Some((mut s, _)) = self.conns.remove(&t)
        {
            let _ = lp.registry().deregister(&mut s);
        }
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }

    fn stop(&mut self, _lp: &EventLoop<'_>, _ctx: &Context) {}
}
