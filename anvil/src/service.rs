//! The event-loop side: daemon (smtpd, imapd, pop3d) connections on `private/anvil`, each a sans-I/O
//! [`Decoder`]/[`Encoder`] pair driven by mio readiness, each holding the counts it made
//! (given back when it closes).

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::time::Instant;

use mio::{Interest, Token};
use postern_lib::ipc::codec::{Decoder, Encoder};
use postern_lib::proto::anvil::{AnvilReply, AnvilRequest, PROTOCOL, VERSION};
use postern_lib::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use postern_lib::skeleton::{Accepted, Context, Stream};

use crate::table::{Key, MAX_CLIENTS, Table};

/// Longest service name accepted.
const MAX_SERVICE: usize = 128;
/// Most bytes of replies queued for one client before it must read them.
const MAX_OUT: usize = 1 << 20;

struct Conn {
    sock: mio::net::UnixStream,
    dec: Decoder,
    out: Vec<u8>,
    greeted: bool,
    closing: bool,
    /// Connections this client has counted and not yet disconnected.
    held: HashMap<Key, u32>,
}

/// All clients and the table.
pub struct Service {
    table: Table,
    conns: HashMap<usize, Conn>,
    next: usize,
}

impl Service {
    /// A service with no clients yet, counting rates over `window`.
    pub fn new(window: std::time::Duration) -> Self {
        Service {
            table: Table::new(MAX_CLIENTS, window),
            conns: HashMap::new(),
            next: 0,
        }
    }

    /// Reads what is there, answers complete requests, writes what it can. False when the
    /// connection is finished.
    fn drive(&mut self, c: &mut Conn) -> bool {
        let mut buf = [0u8; 16 * 1024];
        while !c.closing && c.out.len() < MAX_OUT {
            let want = c.dec.wants().min(buf.len());
            let Some(slice) = buf.get_mut(..want) else { break };
            match c.sock.read(slice) {
                Ok(0) => {
                    c.closing = true;
                    break;
                }
                Ok(n) => {
                    c.dec.push(slice.get(..n).unwrap_or_default());
                    if let Err(e) = self.frames(c) {
                        tracing::warn!("anvil client: {e}");
                        c.closing = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if postern_lib::ipc::codec::write_pending(&mut c.sock, &mut c.out).is_err() {
            return false;
        }
        !(c.closing && c.out.is_empty())
    }

    /// Handles complete frames.
    fn frames(&mut self, c: &mut Conn) -> Result<(), String> {
        while let Some(frame) = c.dec.next_frame().map_err(|e| e.to_string())? {
            if !c.greeted {
                frame.expect_hello(PROTOCOL, VERSION).map_err(|e| e.to_string())?;
                c.greeted = true;
                continue;
            }
            let req: AnvilRequest = frame.message().map_err(|e| e.to_string())?;
            let reply = self.answer(c, req, Instant::now())?;
            Encoder::message(&reply, &mut c.out).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn answer(&mut self, c: &mut Conn, req: AnvilRequest, now: Instant) -> Result<AnvilReply, String> {
        match req {
            AnvilRequest::Connect { service, client } => {
                let key = key(service, &client)?;
                Ok(match self.table.connect(&key, now) {
                    Some((count, rate)) => {
                        *c.held.entry(key).or_insert(0) += 1;
                        AnvilReply::Counts { count, rate }
                    }
                    None => AnvilReply::Untracked,
                })
            }
            AnvilRequest::Disconnect { service, client } => {
                let key = key(service, &client)?;
                // Only what this connection counted: a client cannot lower another's counts.
                if let Some(n) = c.held.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        c.held.remove(&key);
                    }
                    self.table.disconnect(&key, 1, now);
                }
                Ok(AnvilReply::Ok)
            }
        }
    }

    fn close(&mut self, lp: &EventLoop<'_>, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = lp.registry().deregister(&mut c.sock);
            let now = Instant::now();
            for (key, n) in c.held {
                self.table.disconnect(&key, n, now);
            }
        }
    }
}

/// A request's key, checked.
fn key(service: String, client: &str) -> Result<Key, String> {
    if service.len() > MAX_SERVICE {
        return Err("service name too long".into());
    }
    let ip: IpAddr = client.parse().map_err(|_| {
        format!(
            "bad client address {:?}",
            postern_lib::strbuf::printable_bounded(client.as_bytes(), 64)
        )
    })?;
    Ok((service, ip))
}

impl EventService for Service {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        let Stream::Unix(s) = conn.stream else { return };
        if s.set_nonblocking(true).is_err() {
            return;
        }
        let mut sock = mio::net::UnixStream::from_std(s);
        let id = self.next;
        self.next = (self.next + 1) % (RESERVED_TOKENS - 1);
        if lp
            .registry()
            .register(&mut sock, Token(id), Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            return;
        }
        let mut out = Vec::new();
        if Encoder::hello(PROTOCOL, VERSION, &mut out).is_err() {
            return;
        }
        let mut c = Conn {
            sock,
            dec: Decoder::new(),
            out,
            greeted: false,
            closing: false,
            held: HashMap::new(),
        };
        let alive = self.drive(&mut c);
        self.conns.insert(id, c);
        if !alive {
            self.close(lp, id);
        }
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        let id = event.token().0;
        let Some(mut c) = self.conns.remove(&id) else { return };
        let alive = self.drive(&mut c);
        self.conns.insert(id, c);
        if !alive {
            self.close(lp, id);
        }
    }

    fn tick(&mut self, _lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        self.table.expire(now);
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }

    fn stop(&mut self, lp: &EventLoop<'_>, _ctx: &Context) {
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(lp, id);
        }
    }
}
