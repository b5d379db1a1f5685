//! [`Gated`]: the [`EventService`] of a daemon whose new clients pass a per-address
//! [`Gate`] (anvil's count over all its processes; in-process while anvil is away)
//! before their session starts on a [`Pool`]. It routes each event to the gate, to a
//! connection's auxiliary tokens or to the pool, starts or refuses the clients the gate
//! decides on, and gives a connection's count back when it closes (or earlier, once it
//! no longer counts: logged in). The daemon supplies a [`Front`]: how a client starts,
//! how it is refused, where its [`Ticket`] is, what an auxiliary-token event does.

use super::{Deadlines, Io, Pool, Protocol};
use crate::anvil::gate::{Decision, Gate, Ticket};
use crate::anvil::local::Refusal;
use crate::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use crate::skeleton::{Accepted, Context, Peer, Stream};
use mio::{Registry, Token};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// The token of the connection to anvil (client tokens stay below it).
pub const ANVIL: Token = Token(RESERVED_TOKENS - 1);
/// The token of the pool's waker: connections that used up their turn go on after the
/// others.
pub const WAKER: Token = Token(RESERVED_TOKENS - 2);

/// A session to start: what [`Pool::add`] takes.
pub struct Start<P> {
    /// The client's socket.
    pub sock: TcpStream,
    /// The client's address when accept gave it (`None`: asked of the socket).
    pub peer: Option<SocketAddr>,
    /// Its protocol core (holding the ticket, if any).
    pub proto: P,
    /// TLS from the first byte (implicit TLS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Its deadlines.
    pub deadlines: Deadlines,
}

impl<P> Start<P> {
    /// A session on `stream` if it is TCP (the pool's sockets are), else its protocol back.
    pub fn tcp(
        stream: Stream,
        proto: P,
        tls: Option<Arc<rustls::ServerConfig>>,
        deadlines: Deadlines,
    ) -> Result<Start<P>, P> {
        match stream {
            Stream::Tcp(sock) => Ok(Start {
                sock,
                peer: None,
                proto,
                tls,
                deadlines,
            }),
            Stream::Unix(_) => Err(proto),
        }
    }
}

/// A network client's address (`None` for a local one).
pub fn inet(peer: &Peer) -> Option<SocketAddr> {
    match peer {
        Peer::Inet(a) => Some(*a),
        Peer::Unix => None,
    }
}

/// [`Front::arrive`] of a daemon that counts every network client under its address and
/// starts a local one at once, uncounted.
pub fn by_address(conn: Accepted) -> Option<(Accepted, Option<IpAddr>)> {
    let ip = inet(&conn.peer).map(|a| a.ip());
    Some((conn, ip))
}

/// What a daemon tells [`Gated`].
pub trait Front {
    /// The protocol core of a connection.
    type Proto: Protocol;
    /// What waits at the gate for a new client (its socket, say).
    type Item;
    /// A new client: what waits at the gate and the address it is counted under (`None`:
    /// started at once, uncounted), or `None` to drop it.
    fn arrive(&mut self, conn: Accepted) -> Option<(Self::Item, Option<IpAddr>)>;
    /// An admitted client: the session to start, or its protocol when it cannot be
    /// started (given back at once, as a closed connection).
    fn start(&mut self, item: Self::Item, ticket: Option<Ticket>) -> Result<Start<Self::Proto>, Self::Proto>;
    /// A client over a limit: tell it so (the connection closes when `item` is dropped).
    fn refuse(&mut self, item: Self::Item, ip: IpAddr, why: Refusal);
    /// Takes the ticket a connection's protocol holds.
    fn ticket(&mut self, proto: &mut Self::Proto) -> Option<Ticket>;
    /// Whether a connection no longer counts against its address's limit (it logged in):
    /// its ticket is given back after an auxiliary-token event.
    fn logged_in(&self, _proto: &Self::Proto) -> bool {
        false
    }
    /// An event on a connection's auxiliary token `slot` (its protocol's own socket);
    /// returns whether the connection should be driven now.
    fn aux_event(
        &mut self,
        registry: &Registry,
        proto: &mut Self::Proto,
        io: &mut Io<'_>,
        slot: usize,
        event: &mio::event::Event,
    ) -> bool;
    /// A connection has closed (its ticket is given back after): release what else it
    /// holds.
    fn closed(&mut self, _registry: &Registry, _proto: &mut Self::Proto) {}
}

/// A gated pool of connections: the daemon's [`EventService`].
pub struct Gated<F: Front> {
    /// The daemon's part.
    pub front: F,
    /// The connections.
    pub pool: Pool<F::Proto>,
    /// New clients waiting for anvil's count.
    gate: Gate<F::Item>,
}

impl<F: Front> Gated<F> {
    /// A service for `service` (`pop3/inet`: anvil counts per service) with anvil on
    /// [`ANVIL`] and the pool's waker on [`WAKER`]; limits of 0 mean none.
    pub fn new(front: F, service: &str, count_limit: u32, rate_limit: u32) -> Gated<F> {
        Gated {
            front,
            pool: Pool::new(WAKER),
            gate: Gate::new(service, ANVIL, count_limit, rate_limit),
        }
    }

    /// A new client.
    pub fn arrive(&mut self, registry: &Registry, conn: Accepted) {
        match self.front.arrive(conn) {
            None => {}
            Some((item, None)) => self.start(registry, item, None),
            Some((item, Some(ip))) => {
                let decisions = self.gate.arrive(registry, item, ip, Instant::now());
                self.decide(registry, decisions);
            }
        }
    }

    /// A readiness event on one of the service's tokens.
    pub fn event(&mut self, registry: &Registry, event: &mio::event::Event) {
        if self.gate.owns(event.token()) {
            let decisions = self.gate.ready(registry, event, Instant::now());
            return self.decide(registry, decisions);
        }
        if let Some((id, slot)) = self.pool.aux_slot(event.token()) {
            return self.aux_event(registry, id, slot, event);
        }
        let closed = self.pool.event(registry, event);
        self.closed(registry, closed);
    }

    /// Timeouts of the gate and the pool.
    pub fn timers(&mut self, registry: &Registry, now: Instant) {
        let decisions = self.gate.tick(registry, now);
        self.decide(registry, decisions);
        let closed = self.pool.tick(registry, now);
        self.closed(registry, closed);
    }

    /// Something the daemon watches has changed ([`Pool::notify`]).
    pub fn notify(&mut self, registry: &Registry) {
        let closed = self.pool.notify(registry);
        self.closed(registry, closed);
    }

    /// Connections open or waiting at the gate.
    pub fn len(&self) -> usize {
        self.pool.len() + self.gate.pending()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The process stops: clients still waiting for anvil have not been greeted and are
    /// just closed; the pool's connections end as [`Pool::stop`] says.
    pub fn shut(&mut self, registry: &Registry) {
        self.gate.clear_pending();
        let closed = self.pool.stop(registry);
        self.closed(registry, closed);
    }

    /// Starts or refuses the clients the gate has decided on.
    fn decide(&mut self, registry: &Registry, decisions: Vec<Decision<F::Item>>) {
        for d in decisions {
            match d {
                Decision::Admit(item, ticket) => self.start(registry, item, Some(ticket)),
                Decision::Refuse(item, ip, why) => self.front.refuse(item, ip, why),
            }
        }
    }

    /// Starts the session of an admitted client: greeting and all.
    fn start(&mut self, registry: &Registry, item: F::Item, ticket: Option<Ticket>) {
        let closed = match self.front.start(item, ticket) {
            Ok(s) => self
                .pool
                .add_from(registry, s.sock, s.peer, s.proto, s.tls, s.deadlines),
            Err(proto) => vec![proto],
        };
        self.closed(registry, closed);
    }

    fn aux_event(&mut self, registry: &Registry, id: usize, slot: usize, event: &mio::event::Event) {
        let Some(c) = self.pool.get(id) else { return };
        let (proto, mut io) = c.parts(registry);
        if !self.front.aux_event(registry, proto, &mut io, slot, event) {
            return;
        }
        if self.front.logged_in(proto)
            && let Some(t) = self.front.ticket(proto)
        {
            self.gate.release(registry, t, Instant::now());
        }
        let closed = self.pool.drive(registry, id);
        self.closed(registry, closed);
    }

    /// Gives back what closed connections held: their count.
    fn closed(&mut self, registry: &Registry, closed: Vec<F::Proto>) {
        for mut p in closed {
            self.front.closed(registry, &mut p);
            if let Some(t) = self.front.ticket(&mut p) {
                self.gate.release(registry, t, Instant::now());
            }
        }
    }
}

impl<F: Front> EventService for Gated<F> {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        self.arrive(lp.registry(), conn);
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        self.event(lp.registry(), event);
    }

    fn tick(&mut self, lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        self.timers(lp.registry(), now);
    }

    fn connections(&self) -> usize {
        self.len()
    }

    fn stop(&mut self, lp: &EventLoop<'_>, _ctx: &Context) {
        self.shut(lp.registry());
    }
}
