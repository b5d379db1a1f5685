//! The proxy process: the event skeleton's [`EventService`] over a [`Pool`] of
//! [`ProxyConn`]s — the per-address gate before a session starts (as pop3d and imapd:
//! `login_client_connection_count_limit` connections not yet logged in per address,
//! counted by anvil), the events of each connection's side sockets (auth, backend,
//! replicator: the driver's auxiliary tokens), and what a closed connection gives back.

use crate::conn::ProxyConn;
use crate::dialect::Dialect;
use crate::imap::Imap;
use crate::pop3::Pop3;
use crate::settings::{Kind, Settings};
use mio::Token;
use postern_lib::anvil::gate::{Decision, Gate, Ticket, refuse_login_client};
use postern_lib::anvil::local::Refusal;
use postern_lib::skeleton::conn::{Deadlines, Pool};
use postern_lib::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use postern_lib::skeleton::{Accepted, Context, Peer, Stream};
use std::sync::Arc;
use std::time::Instant;

/// The connection to anvil (client tokens stay below it).
const ANVIL: Token = Token(RESERVED_TOKENS - 1);
/// The process's waker: connections that used up their turn go on after the others.
const WAKER: Token = Token(RESERVED_TOKENS - 2);

/// All connections of one proxy process.
pub struct Proxy {
    cfg: Arc<Settings>,
    pool: Pool<ProxyConn>,
    gate: Gate<Accepted>,
}

impl Proxy {
    /// A new service.
    pub fn new(cfg: Settings) -> Proxy {
        let gate = Gate::new(&cfg.service, ANVIL, cfg.login_limit, 0);
        Proxy {
            cfg: Arc::new(cfg),
            pool: Pool::new(WAKER),
            gate,
        }
    }

    fn decide(&mut self, lp: &EventLoop<'_>, decisions: Vec<Decision<Accepted>>) {
        for d in decisions {
            match d {
                Decision::Admit(conn, ticket) => self.start(lp, conn, Some(ticket)),
                Decision::Refuse(conn, ip, why) => self.refuse(conn, ip, why),
            }
        }
    }

    fn refuse(&self, conn: Accepted, ip: std::net::IpAddr, why: Refusal) {
        let reply = match self.cfg.kind {
            Kind::Pop3 => format!("-ERR [SYS/TEMP] Too many connections from {ip} not logged in, try again later"),
            Kind::Imap => format!("* BYE [UNAVAILABLE] Too many connections from {ip} not logged in, try again later"),
        };
        refuse_login_client(conn, ip, why, self.cfg.login_limit, &reply);
    }

    fn start(&mut self, lp: &EventLoop<'_>, conn: Accepted, ticket: Option<Ticket>) {
        let peer = match conn.peer {
            Peer::Inet(a) => Some(a),
            Peer::Unix => None,
        };
        let dialect: Box<dyn Dialect> = match self.cfg.kind {
            Kind::Pop3 => Box::new(Pop3::new()),
            Kind::Imap => Box::new(Imap::new(self.cfg.max_line, self.cfg.max_literal)),
        };
        if let Some(p) = peer {
            tracing::info!("proxy: connect from {}", p.ip());
        }
        let proto = ProxyConn::new(self.cfg.clone(), dialect, peer, ticket);
        let deadlines = Deadlines {
            idle: self.cfg.idle,
            login: Some(self.cfg.login_timeout),
            session: None,
        };
        let closed = match conn.stream {
            Stream::Tcp(sock) => self.pool.add(lp.registry(), sock, proto, None, deadlines),
            _ => vec![proto],
        };
        self.closed(lp, closed);
    }

    /// Gives back what closed connections held.
    fn closed(&mut self, lp: &EventLoop<'_>, closed: Vec<ProxyConn>) {
        for mut c in closed {
            if let Some(t) = c.ticket.take() {
                self.gate.release(lp.registry(), t, Instant::now());
            }
        }
    }

    /// A logged-in connection no longer counts against its address's limit.
    fn release_if_logged_in(&mut self, lp: &EventLoop<'_>, id: usize) {
        let ticket = self
            .pool
            .get(id)
            .filter(|c| c.proto.logged_in())
            .and_then(|c| c.proto.ticket.take());
        if let Some(t) = ticket {
            self.gate.release(lp.registry(), t, Instant::now());
        }
    }
}

impl EventService for Proxy {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        match conn.peer {
            Peer::Inet(a) => {
                let decisions = self.gate.arrive(lp.registry(), conn, a.ip(), Instant::now());
                self.decide(lp, decisions);
            }
            Peer::Unix => self.start(lp, conn, None),
        }
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        if self.gate.owns(event.token()) {
            let decisions = self.gate.ready(lp.registry(), event, Instant::now());
            return self.decide(lp, decisions);
        }
        if let Some((id, slot)) = self.pool.aux_slot(event.token()) {
            if let Some(c) = self.pool.get(id) {
                let (proto, mut io) = c.parts(lp.registry());
                proto.side_event(&mut io, slot, event);
            }
            self.release_if_logged_in(lp, id);
            let closed = self.pool.drive(lp.registry(), id);
            return self.closed(lp, closed);
        }
        let closed = self.pool.event(lp.registry(), event);
        self.closed(lp, closed);
    }

    fn tick(&mut self, lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        let decisions = self.gate.tick(lp.registry(), now);
        self.decide(lp, decisions);
        let closed = self.pool.tick(lp.registry(), now);
        self.closed(lp, closed);
    }

    fn connections(&self) -> usize {
        self.pool.len() + self.gate.pending()
    }

    fn stop(&mut self, lp: &EventLoop<'_>, _ctx: &Context) {
        self.gate.clear_pending();
        let closed = self.pool.stop(lp.registry());
        self.closed(lp, closed);
    }
}
