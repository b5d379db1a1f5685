//! [`Connection`]: one client socket driven for a [`Protocol`] — bounded reads, TLS,
//! back-pressure, hand-over, the write loop and deadlines.

use super::outbuf::OutBuf;
use super::{Deadlines, Ending, Io, Link, Protocol, ROUNDS_PER_TURN};
use crate::line::LineBuffer;
use crate::tls::TlsSession;
use mio::net::TcpStream;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// What one turn left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Waiting for the socket.
    Open,
    /// Used up its turn with work left: drive it again after the others.
    More,
    /// Done: remove it.
    Closed,
}

/// One client connection and its protocol. The stream is a mio socket in a daemon; any
/// non-blocking `Read + Write` works (a fuzz target's in-memory client).
pub struct Connection<P, S = TcpStream> {
    pub(crate) sock: S,
    link: Link,
    /// The protocol core.
    pub proto: P,
    born: Instant,
    deadlines: Deadlines,
    /// Whether the socket is registered for writability too ([`Pool`](super::Pool)).
    pub(crate) write_interest: bool,
    /// The socket said it has nothing more (a read would block, or came back short): it
    /// is not read again until a readiness event ([`readable`](Self::readable)) says
    /// something arrived (edge-triggered: whatever arrives after is a new event).
    pub(crate) drained: bool,
    /// The peer has closed its side (or the socket failed): read to the end, since no
    /// further event comes for the end of input.
    hup: bool,
    /// The client has finished sending (a read gave 0: it shut down its write side, or
    /// closed): the socket is not read again; what is buffered is still handled and the
    /// answers sent, then the connection closes ([`at_rest`](Self::at_rest)).
    eof: bool,
    /// Bytes read since the input buffer was made: past [`KEEP`], an empty buffer is made
    /// anew (its capacity given back).
    read_since_fresh: usize,
}

/// Capacity a connection's empty buffer keeps; a larger one is freed.
const KEEP: usize = 64 * 1024;

impl<P: Protocol, S: Read + Write> Connection<P, S> {
    /// A connection on `sock` (non-blocking, registered by the caller) from `peer`, TLS
    /// from the first byte when `tls` is given. `aux` is the first of the [`AUX`](super::AUX)
    /// tokens for the protocol's own sockets.
    pub fn new(
        sock: S,
        peer: Option<SocketAddr>,
        proto: P,
        tls: Option<TlsSession>,
        deadlines: Deadlines,
        aux: mio::Token,
    ) -> Self {
        let now = Instant::now();
        // the driver bounds the input itself (Limits::input), the buffer only frames it
        let input = LineBuffer::new(proto.line_limit(), usize::MAX / 4);
        Connection {
            sock,
            link: Link {
                peer,
                tls,
                secured: false,
                raw: Vec::new(),
                plain: Vec::new(),
                input,
                out: OutBuf::default(),
                source: None,
                closing: false,
                dead: false,
                authenticated: false,
                last: now,
                phase: None,
                aux,
                deflate: None,
            },
            proto,
            born: now,
            deadlines,
            write_interest: false,
            drained: false,
            hup: false,
            eof: false,
            read_since_fresh: 0,
        }
    }

    /// The socket (to register or deregister).
    pub fn socket(&mut self) -> &mut S {
        &mut self.sock
    }

    /// The protocol and its [`Io`], to act from outside a turn (an auth answer came).
    pub fn parts<'a>(&'a mut self, registry: &'a mio::Registry) -> (&'a mut P, Io<'a>) {
        let io = Io {
            link: &mut self.link,
            registry,
            sock: &mut self.sock,
        };
        (&mut self.proto, io)
    }

    /// Queues the greeting.
    pub fn greet(&mut self, registry: &mio::Registry) {
        let (proto, mut io) = self.parts(registry);
        proto.greeting(&mut io);
    }

    /// Output bytes waiting (for tests and metrics).
    pub fn pending_output(&self) -> usize {
        self.link.out.len()
    }

    /// Input bytes received and not yet used by the protocol (plaintext and ciphertext).
    pub fn pending_input(&self) -> usize {
        self.link.input.pending_len() + self.link.raw.len() + self.link.deflate.as_ref().map_or(0, |d| d.pending.len())
    }

    /// With compression: the client's address, the output bytes before and after it.
    pub fn compression(&self) -> Option<(String, u64, u64)> {
        let from = self.link.from();
        self.link.deflate.as_ref().map(|d| (from, d.plain_out, d.wire_out()))
    }

    /// The capacity of the driver's own output, ciphertext and plaintext buffers (for
    /// tests and metrics: what an idle connection keeps).
    pub fn capacity(&self) -> usize {
        self.link.out.capacity() + self.link.raw.capacity() + self.link.plain.capacity()
    }

    /// Whether the socket should be registered for writability: output waits for room.
    pub fn wants_write(&self) -> bool {
        !self.link.out.is_empty()
    }

    /// A readiness event said the socket may have input; `hup` when it said the peer
    /// closed or the socket failed (unknown: say true, it only costs a read).
    pub fn readable(&mut self, hup: bool) {
        self.drained = false;
        self.hup |= hup;
    }

    /// [`readable`](Self::readable) (end unknown), then [`turn`](Self::turn).
    pub fn drive(&mut self, registry: &mio::Registry) -> Turn {
        self.readable(true);
        self.turn(registry)
    }

    /// Reads, streams, handles and writes while that makes progress, at most
    /// [`ROUNDS_PER_TURN`] rounds (edge-triggered readiness: what is in the socket or the
    /// buffers must be used now, no second event will announce it). The socket is read
    /// only when it may have something ([`readable`](Self::readable) since it last said
    /// it had nothing).
    pub fn turn(&mut self, registry: &mio::Registry) -> Turn {
        let mut rounds = 0;
        let turn = loop {
            let progress = self.read() + self.stream() + self.handle(registry) + self.flush();
            if self.link.dead {
                break Turn::Open;
            }
            // work that needs no input: one round, then the others' turn
            if self.yields() {
                break Turn::More;
            }
            if progress == 0 {
                break Turn::Open;
            }
            rounds += 1;
            if rounds == ROUNDS_PER_TURN {
                break Turn::More;
            }
        };
        self.give_back();
        if self.eof && turn == Turn::Open && !self.link.dead && self.at_rest() {
            let unused = self.pending_input();
            if unused > 0 {
                let from = self.link.peer.map(|p| p.ip().to_string()).unwrap_or_default();
                tracing::info!("{from}: input ended inside a command ({unused} bytes unused)");
            }
            // what was sent has been answered: closed as on a disconnect
            self.link.dead = true;
        }
        if self.finished() { Turn::Closed } else { turn }
    }

    /// After the end of input: nothing more can happen without it — the protocol took
    /// what it could (its last call made no progress), waits for nothing from elsewhere,
    /// has no work of its own left, and every answer has been sent.
    fn at_rest(&self) -> bool {
        let l = &self.link;
        !l.closing
            && l.out.is_empty()
            && l.source.is_none()
            && !self.proto.blocked()
            && !self.proto.waiting()
            && !self.proto.more()
    }

    /// Whether the client has finished sending (its buffered input is still handled).
    pub fn input_ended(&self) -> bool {
        self.eof
    }

    /// Whether the protocol has work left that needs no input and may go on now
    /// ([`Protocol::more`]: its output is under the bound, nothing is being handed over).
    fn yields(&self) -> bool {
        let l = &self.link;
        !l.closing
            && l.source.is_none()
            && !self.proto.blocked()
            && self.proto.more()
            && l.out.len() <= self.proto.limits().output
    }

    /// Frees the buffers a burst grew once they are empty: an idle connection holds a few
    /// bytes of its own, whatever it did before (a large APPEND, a long answer).
    fn give_back(&mut self) {
        let l = &mut self.link;
        l.out.give_back(KEEP);
        if l.raw.is_empty() && l.raw.capacity() > KEEP {
            l.raw = Vec::new();
        }
        if l.plain.capacity() > KEEP {
            l.plain = Vec::new();
        }
        // not while an over-long line is being dropped: a fresh buffer would forget it and
        // take the line's tail for a command
        if l.input.pending_len() == 0 && !l.input.is_discarding() && self.read_since_fresh > KEEP {
            l.input = LineBuffer::new(self.proto.line_limit(), usize::MAX / 4);
            self.read_since_fresh = 0;
        }
    }

    /// Something the daemon watches has changed ([`Protocol::notify`]); returns whether
    /// to drive the connection.
    pub fn notify(&mut self, registry: &mio::Registry) -> bool {
        let (proto, mut io) = self.parts(registry);
        proto.notify(&mut io)
    }

    fn finished(&self) -> bool {
        self.link.dead || (self.link.closing && self.link.out.is_empty())
    }

    /// The deadline passed at `now`, if any.
    pub fn expired(&self, now: Instant) -> Option<Ending> {
        let age = now.saturating_duration_since(self.born);
        if !self.link.authenticated && self.deadlines.login.is_some_and(|d| age > d) {
            return Some(Ending::Login);
        }
        if self.deadlines.session.is_some_and(|d| age > d) {
            return Some(Ending::Session);
        }
        if self.proto.waiting() {
            return None;
        }
        if self.link.phase.is_some_and(|p| now >= p) {
            return Some(Ending::Phase);
        }
        if now.saturating_duration_since(self.link.last) > self.deadlines.idle {
            return Some(Ending::Idle);
        }
        None
    }

    /// Ends the connection: the protocol's last words go out if the socket takes them now
    /// (a connection already closing has said its last words: what is queued goes if it can).
    pub fn end(&mut self, why: Ending, registry: &mio::Registry) {
        if !self.link.closing {
            let (proto, mut io) = self.parts(registry);
            proto.ending(why, &mut io);
        }
        self.flush();
    }

    /// The protocol's own timers ([`Protocol::timer`]); returns whether to drive it.
    pub fn timer(&mut self, now: Instant, registry: &mio::Registry) -> bool {
        let (proto, mut io) = self.parts(registry);
        proto.timer(now, &mut io)
    }

    /// Reads what the socket has while the input is under its bound; returns the bytes.
    fn read(&mut self) -> usize {
        if self.proto.blocked() {
            return 0;
        }
        let max = self.proto.limits().input;
        let link = &mut self.link;
        let mut buf = [0u8; 8192];
        let mut total = 0;
        while !link.dead && !self.drained && !self.eof {
            let pending = if link.tls.is_some() {
                link.raw.len()
            } else if let Some(d) = &link.deflate {
                d.pending.len()
            } else {
                link.input.pending_len()
            };
            if pending >= max {
                break;
            }
            match self.sock.read(&mut buf) {
                // the client finished sending: what it sent is still answered
                Ok(0) => self.eof = true,
                Ok(n) => {
                    total += n;
                    self.read_since_fresh += n;
                    // a short read emptied the socket (an end that came with it is only
                    // seen by reading on: hup)
                    if n < buf.len() && !self.hup {
                        self.drained = true;
                    }
                    let got = buf.get(..n).unwrap_or_default();
                    if link.tls.is_some() {
                        link.raw.extend_from_slice(got);
                    } else if let Some(d) = &mut link.deflate {
                        d.pending.extend_from_slice(got);
                    } else {
                        // (never refused: the buffer's own bound is beyond `max`)
                        let _ = link.input.push(got);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.drained = true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => link.dead = true,
            }
        }
        if let Some(tls) = &mut link.tls {
            let room = match &link.deflate {
                Some(d) => max.saturating_sub(d.pending.len()),
                None => max.saturating_sub(link.input.pending_len()),
            };
            match tls.receive(&link.raw, &mut link.plain, room) {
                Ok(used) => {
                    link.raw.drain(..used);
                    match &mut link.deflate {
                        Some(d) => d.pending.extend_from_slice(&link.plain),
                        None => {
                            let _ = link.input.push(&link.plain);
                        }
                    }
                }
                Err(e) => {
                    tracing::info!("TLS error from {:?}: {e}", link.peer);
                    link.closing = true;
                    link.input.take_pending();
                }
            }
            link.plain.clear();
            tls.transmit(link.out.tail());
        }
        // compressed input: inflated only as far as the input bound has room
        if let Some(d) = &mut link.deflate
            && !link.dead
        {
            let room = max.saturating_sub(link.input.pending_len());
            let input = &mut link.input;
            match d.inflate(room, &mut |b| {
                let _ = input.push(b);
            }) {
                Ok(n) => total += n,
                Err(e) => {
                    let from = link.from();
                    tracing::info!("{from}: bad compressed input: {e}");
                    link.dead = true;
                }
            }
        }
        total
    }

    /// Goes on with a hand-over while output is under its bound; returns the bytes added.
    fn stream(&mut self) -> usize {
        let max = self.proto.limits().output;
        let mut added = 0;
        while let Some(source) = self.link.source.as_mut() {
            if self.link.dead || self.link.out.len() > max {
                break;
            }
            let mut part = Vec::new();
            if let Err(e) = source.fill(&mut part) {
                self.proto.source_failed(&e);
                self.link.source = None;
                self.link.dead = true;
                break;
            }
            if source.done() {
                self.link.source = None;
            }
            added += part.len();
            self.link.send(&part);
        }
        added
    }

    /// Calls the protocol while it makes progress and output is under its bound.
    fn handle(&mut self, registry: &mio::Registry) -> usize {
        let mut handled = 0;
        if !self.link.dead && !self.link.secured && self.link.tls.as_ref().is_some_and(|t| !t.is_handshaking()) {
            self.link.secured = true;
            let (proto, mut io) = self.parts(registry);
            proto.secured(&mut io);
            handled += 1;
        }
        loop {
            let l = &self.link;
            if l.dead
                || l.closing
                || l.source.is_some()
                || l.out.len() > self.proto.limits().output
                || self.proto.blocked()
            {
                return handled;
            }
            let (proto, mut io) = self.parts(registry);
            if !proto.handle(&mut io) {
                return handled;
            }
            handled += 1;
        }
    }

    /// Writes what is queued; returns how many bytes went out.
    fn flush(&mut self) -> usize {
        match self.link.out.write_to(&mut self.sock) {
            Ok(n) => n,
            Err(_) => {
                self.link.dead = true;
                0
            }
        }
    }
}
