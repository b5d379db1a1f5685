//! [`Pool`]: the connections of one event-driven process — tokens, fair turns (a waker
//! requeue), deadlines and shutdown — so a daemon's `EventService` is its listener
//! policy, its protocol core and a few lines.
//!
//! Token `4·id` is a connection's socket, `4·id+1` to `4·id+`[`AUX`] its protocol's own
//! sockets ([`Io::aux`]). A socket is registered for writability only while its output
//! waits for room. Every method that may close connections returns their protocols, for
//! the daemon to release what they hold (an auth request, a per-address count).
//!
//! [`Io::aux`]: super::Io::aux

use super::RESERVED_TOKENS;
use super::{Connection, Deadlines, Ending, Protocol, Turn};
use crate::tls::TlsSession;
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Tokens from here up to [`RESERVED_TOKENS`] are free for the daemon's own sockets (its
/// anvil connection, the pool's waker); those below belong to the pool's connections.
pub const FIRST_FREE: usize = RESERVED_TOKENS - 64;

/// Auxiliary tokens per connection, for the protocol's own sockets.
pub const AUX: usize = 3;

/// Tokens per connection: its socket's and the auxiliary ones.
const PER_CONN: usize = AUX + 1;

/// Readable always; writable too when `write`.
fn interest(write: bool) -> Interest {
    if write {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

/// Registers `source` (already registered on `token`) for writability when `want` and it
/// is not yet, or takes it off when not: `current` is what it is registered for. For a
/// daemon's own non-blocking sockets too (edge-triggered: asking for writability while
/// nothing waits would wake the process on every ACK).
pub fn write_interest(
    registry: &Registry,
    source: &mut impl mio::event::Source,
    token: Token,
    current: &mut bool,
    want: bool,
) {
    if want != *current && registry.reregister(source, token, interest(want)).is_ok() {
        *current = want;
    }
}

/// All client connections of one process.
pub struct Pool<P> {
    conns: HashMap<usize, Connection<P>>,
    next: usize,
    waker_token: Token,
    waker: Option<mio::Waker>,
    /// Connections that used up their turn with work left, driven again on the waker.
    again: Vec<usize>,
}

impl<P: Protocol> Pool<P> {
    /// An empty pool; `waker` is a token of the daemon's from [`FIRST_FREE`] up to below
    /// [`RESERVED_TOKENS`] (connections use the tokens below [`FIRST_FREE`]).
    pub fn new(waker: Token) -> Pool<P> {
        debug_assert!((FIRST_FREE..RESERVED_TOKENS).contains(&waker.0));
        Pool {
            conns: HashMap::new(),
            next: 0,
            waker_token: waker,
            waker: None,
            again: Vec::new(),
        }
    }

    /// Connections open.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The connection whose protocol socket `token` is, if it is one.
    pub fn aux_id(&self, token: Token) -> Option<usize> {
        self.aux_slot(token).map(|(id, _)| id)
    }

    /// The connection and the slot (as in [`Io::aux_nth`](super::Io::aux_nth)) of a
    /// protocol socket's `token`, if it is one.
    pub fn aux_slot(&self, token: Token) -> Option<(usize, usize)> {
        (token.0 < FIRST_FREE && !token.0.is_multiple_of(PER_CONN))
            .then(|| (token.0 / PER_CONN, token.0 % PER_CONN - 1))
    }

    /// The ids of the open connections.
    pub fn ids(&self) -> Vec<usize> {
        self.conns.keys().copied().collect()
    }

    /// How many connections are registered for writability (output waiting for room).
    pub fn writers(&self) -> usize {
        self.conns.values().filter(|c| c.write_interest).count()
    }

    /// The most output bytes any connection holds unsent now.
    pub fn max_pending_output(&self) -> usize {
        self.conns.values().map(Connection::pending_output).max().unwrap_or(0)
    }

    /// The most input bytes any connection holds unused now.
    pub fn max_pending_input(&self) -> usize {
        self.conns.values().map(Connection::pending_input).max().unwrap_or(0)
    }

    /// The most buffer capacity any connection holds now ([`Connection::capacity`]).
    pub fn max_capacity(&self) -> usize {
        self.conns.values().map(Connection::capacity).max().unwrap_or(0)
    }

    /// A connection, to act on from outside its turn.
    pub fn get(&mut self, id: usize) -> Option<&mut Connection<P>> {
        self.conns.get_mut(&id)
    }

    fn id(&mut self) -> usize {
        loop {
            let id = self.next;
            self.next = (self.next + 1) % (FIRST_FREE / PER_CONN);
            if !self.conns.contains_key(&id) {
                return id;
            }
        }
    }

    /// Takes a client: non-blocking, registered, TLS from the start when `tls` is given,
    /// greeted and driven. The protocol comes back at once if it cannot be set up.
    pub fn add(
        &mut self,
        registry: &Registry,
        sock: std::net::TcpStream,
        proto: P,
        tls: Option<Arc<rustls::ServerConfig>>,
        deadlines: Deadlines,
    ) -> Vec<P> {
        self.add_from(registry, sock, None, proto, tls, deadlines)
    }

    /// [`add`](Self::add) for a client whose address is known (accept gave it): not asked
    /// of the kernel again; `None`: asked.
    pub fn add_from(
        &mut self,
        registry: &Registry,
        sock: std::net::TcpStream,
        peer: Option<SocketAddr>,
        proto: P,
        tls: Option<Arc<rustls::ServerConfig>>,
        deadlines: Deadlines,
    ) -> Vec<P> {
        if sock.set_nonblocking(true).is_err() {
            return vec![proto];
        }
        // Replies are written whole, but a reply and the stream handed over after it (POP3's
        // "+OK" then the message) go out in two writes; with Nagle's algorithm the second
        // waited for the client's delayed ACK, about 40 ms per RETR.
        let _ = sock.set_nodelay(true);
        let tls = match tls.map(TlsSession::new) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(_)) => return vec![proto],
        };
        let peer = peer.or_else(|| sock.peer_addr().ok());
        let mut sock = mio::net::TcpStream::from_std(sock);
        let id = self.id();
        if registry
            .register(&mut sock, Token(PER_CONN * id), interest(false))
            .is_err()
        {
            return vec![proto];
        }
        let mut c = Connection::new(sock, peer, proto, tls, deadlines, Token(PER_CONN * id + 1));
        // Not read before an event says there is input: registering reports input that
        // came before it (the kernel checks readiness as it adds a socket, edge-triggered
        // or not), and a client speaks after the greeting (a read here heard EAGAIN).
        c.drained = true;
        c.greet(registry);
        self.conns.insert(id, c);
        self.drive(registry, id)
    }

    /// Gives connection `id` its turn.
    pub fn drive(&mut self, registry: &Registry, id: usize) -> Vec<P> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Vec::new();
        };
        let turn = c.turn(registry);
        if turn != Turn::Closed {
            let want = c.wants_write();
            write_interest(registry, &mut c.sock, Token(PER_CONN * id), &mut c.write_interest, want);
        }
        match turn {
            Turn::Open => Vec::new(),
            Turn::More => {
                self.later(registry, id);
                Vec::new()
            }
            Turn::Closed => self.remove(registry, id).into_iter().collect(),
        }
    }

    /// Readiness for a connection's socket or the waker (a protocol socket's token is the
    /// daemon's: see [`aux_id`](Self::aux_id)); [`event`](Self::event) when the event is
    /// at hand (it saves a read per event).
    pub fn ready(&mut self, registry: &Registry, token: Token) -> Vec<P> {
        self.readiness(registry, token, true, true)
    }

    /// [`ready`](Self::ready) with what the event says: a socket not said readable is not
    /// read, and one whose peer has not closed is read until a read comes back short.
    pub fn event(&mut self, registry: &Registry, event: &mio::event::Event) -> Vec<P> {
        let hup = event.is_read_closed() || event.is_error();
        self.readiness(registry, event.token(), event.is_readable() || hup, hup)
    }

    fn readiness(&mut self, registry: &Registry, token: Token, readable: bool, hup: bool) -> Vec<P> {
        if token == self.waker_token {
            return self.again(registry);
        }
        if token.0 < FIRST_FREE && token.0.is_multiple_of(PER_CONN) {
            let id = token.0 / PER_CONN;
            if let Some(c) = self.conns.get_mut(&id)
                && readable
            {
                c.readable(hup);
            }
            return self.drive(registry, id);
        }
        Vec::new()
    }

    fn again(&mut self, registry: &Registry) -> Vec<P> {
        let mut closed = Vec::new();
        for id in std::mem::take(&mut self.again) {
            closed.extend(self.drive(registry, id));
        }
        closed
    }

    /// Queues a connection with work left for after the events waiting now.
    fn later(&mut self, registry: &Registry, id: usize) {
        if !self.again.contains(&id) {
            self.again.push(id);
        }
        if self.waker.is_none() {
            match mio::Waker::new(registry, self.waker_token) {
                Ok(w) => self.waker = Some(w),
                Err(e) => tracing::warn!("waker: {e}"),
            }
        }
        // without a waker the next tick goes on with it
        if let Some(w) = &self.waker
            && let Err(e) = w.wake()
        {
            tracing::warn!("waker: {e}");
        }
    }

    /// Deadlines, the protocols' own timers, and turns left over should the waker have
    /// failed.
    pub fn tick(&mut self, registry: &Registry, now: Instant) -> Vec<P> {
        let due: Vec<usize> = self
            .conns
            .iter_mut()
            .filter_map(|(id, c)| c.timer(now, registry).then_some(*id))
            .collect();
        let mut closed = Vec::new();
        for id in due {
            closed.extend(self.drive(registry, id));
        }
        let late: Vec<(usize, Ending)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| c.expired(now).map(|why| (*id, why)))
            .collect();
        for (id, why) in late {
            if let Some(c) = self.conns.get_mut(&id) {
                c.end(why, registry);
            }
            closed.extend(self.remove(registry, id));
        }
        closed.extend(self.again(registry));
        closed
    }

    /// Something the daemon watches has changed: every connection's protocol hears of it
    /// ([`Protocol::notify`]) and those that say so are driven.
    pub fn notify(&mut self, registry: &Registry) -> Vec<P> {
        let due: Vec<usize> = self
            .conns
            .iter_mut()
            .filter_map(|(id, c)| c.notify(registry).then_some(*id))
            .collect();
        let mut closed = Vec::new();
        for id in due {
            closed.extend(self.drive(registry, id));
        }
        closed
    }

    /// The process stops: every connection that may stop ([`Protocol::may_stop`]) gets
    /// its last words and is closed; the others go on until they close.
    pub fn stop(&mut self, registry: &Registry) -> Vec<P> {
        let ids: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.proto.may_stop())
            .map(|(id, _)| *id)
            .collect();
        let mut closed = Vec::new();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.end(Ending::Shutdown, registry);
            }
            closed.extend(self.remove(registry, id));
        }
        closed
    }

    /// Removes a connection ([`Protocol::disconnected`] is called); its protocol comes back.
    pub fn remove(&mut self, registry: &Registry, id: usize) -> Option<P> {
        let mut c = self.conns.remove(&id)?;
        // Not deregistered: the socket is closed below (dropped with the connection), and
        // closing its only descriptor takes it out of the epoll set (one system call less
        // per connection).
        self.again.retain(|&a| a != id);
        if let Some((from, plain, wire)) = c.compression() {
            tracing::info!("{from}: compressed output: {plain} bytes sent as {wire}");
        }
        c.proto.disconnected(registry);
        Some(c.proto)
    }
}
