//! The event-loop side: client connections on `private/rewrite`, each a sans-I/O
//! [`Decoder`]/[`Encoder`] pair driven by mio readiness.

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use postern_lib::ipc::codec::{Decoder, Encoder};
use postern_lib::proto::resolve::{PROTOCOL, ResolveReply, ResolveRequest, VERSION};
use postern_lib::skeleton::event::{EventLoop, EventService};
use postern_lib::skeleton::{Accepted, Context, Stream};

use crate::resolver::Resolver;

/// A client idle this long is closed (qmgr reconnects when it needs us).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most bytes of replies queued for one client before it must read them.
const MAX_OUT: usize = 4 << 20;

struct Conn {
    sock: mio::net::UnixStream,
    dec: Decoder,
    out: Vec<u8>,
    greeted: bool,
    last: Instant,
    closing: bool,
}

/// All clients and the resolver.
pub struct Service {
    resolver: Resolver,
    conns: HashMap<usize, Conn>,
    next: usize,
}

impl Service {
    /// A service with no clients yet.
    pub fn new(resolver: Resolver) -> Self {
        Service {
            resolver,
            conns: HashMap::new(),
            next: 0,
        }
    }

    fn answer(&mut self, req: ResolveRequest) -> ResolveReply {
        self.resolver.refresh();
        match req {
            ResolveRequest::Rewrite { address } => match self.resolver.rewrite(&address) {
                Some(a) => ResolveReply::Rewritten { address: a },
                None => ResolveReply::Rewritten { address },
            },
            ResolveRequest::Resolve { address } => self.resolver.resolve(&address),
        }
    }

    /// Reads what is there, answers complete requests, writes what it can. Returns false
    /// when the connection is finished.
    fn drive(&mut self, id: usize) -> bool {
        let Some(mut c) = self.conns.remove(&id) else {
            return false;
        };
        let alive = self.drive_conn(&mut c);
        if alive {
            self.conns.insert(id, c);
        }
        alive
    }

    fn drive_conn(&mut self, c: &mut Conn) -> bool {
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
                    c.last = Instant::now();
                    c.dec.push(slice.get(..n).unwrap_or_default());
                    if !self.frames(c) {
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

    /// Handles complete frames; false on a protocol error.
    fn frames(&mut self, c: &mut Conn) -> bool {
        loop {
            let frame = match c.dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return true,
                Err(e) => {
                    tracing::warn!("rewrite client: {e}");
                    return false;
                }
            };
            if !c.greeted {
                if let Err(e) = frame.expect_hello(PROTOCOL, VERSION) {
                    tracing::warn!("rewrite client: {e}");
                    return false;
                }
                c.greeted = true;
                continue;
            }
            let req: ResolveRequest = match frame.message() {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("rewrite client: {e}");
                    return false;
                }
            };
            let reply = self.answer(req);
            if let Err(e) = Encoder::message(&reply, &mut c.out) {
                tracing::warn!("rewrite reply: {e}");
                return false;
            }
        }
    }
}

impl EventService for Service {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        let Stream::Unix(s) = conn.stream else { return };
        if s.set_nonblocking(true).is_err() {
            return;
        }
        let mut sock = mio::net::UnixStream::from_std(s);
        let id = self.next;
        self.next = (self.next + 1) % (postern_lib::skeleton::event::RESERVED_TOKENS - 1);
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
        self.conns.insert(
            id,
            Conn {
                sock,
                dec: Decoder::new(),
                out,
                greeted: false,
                last: Instant::now(),
                closing: false,
            },
        );
        if !self.drive(id) {
            self.close(lp, id);
        }
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        let id = event.token().0;
        if !self.drive(id) {
            self.close(lp, id);
        }
    }

    fn tick(&mut self, lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.last) > IDLE_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.close(lp, id);
        }
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

impl Service {
    fn close(&mut self, lp: &EventLoop<'_>, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = lp.registry().deregister(&mut c.sock);
        }
    }
}
