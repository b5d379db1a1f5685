//! The proxy process: the event skeleton's service ([`Gated`]) over a pool of
//! [`ProxyConn`]s — the per-address gate before a session starts (as pop3d and imapd:
//! `login_client_connection_count_limit` connections not yet logged in per address,
//! counted by anvil), the events of each connection's side sockets (auth, backend,
//! replicator: the driver's auxiliary tokens), and what a closed connection gives back.

use crate::conn::ProxyConn;
use crate::dialect::Dialect;
use crate::imap::Imap;
use crate::pop3::Pop3;
use crate::settings::{Kind, Settings};
use postern_lib::anvil::gate::{Ticket, refuse_login_client};
use postern_lib::anvil::local::Refusal;
use postern_lib::skeleton::Accepted;
use postern_lib::skeleton::conn::{Deadlines, Front, Gated, Io, Start, by_address, inet};
use std::net::IpAddr;
use std::sync::Arc;

/// The proxy's side of its service ([`Gated`]: the gate and pool of lib's connection
/// driver): how a session starts or is refused, the side sockets' events.
pub struct Proxy {
    cfg: Arc<Settings>,
}

impl Proxy {
    /// A new service: all connections of one proxy process.
    pub fn new(cfg: Settings) -> Gated<Proxy> {
        let (service, limit) = (cfg.service.clone(), cfg.login_limit);
        Gated::new(Proxy { cfg: Arc::new(cfg) }, &service, limit, 0)
    }
}

impl Front for Proxy {
    type Proto = ProxyConn;
    type Item = Accepted;

    fn arrive(&mut self, conn: Accepted) -> Option<(Accepted, Option<IpAddr>)> {
        by_address(conn)
    }

    fn refuse(&mut self, conn: Accepted, ip: IpAddr, why: Refusal) {
        let reply = match self.cfg.kind {
            Kind::Pop3 => format!("-ERR [SYS/TEMP] Too many connections from {ip} not logged in, try again later"),
            Kind::Imap => format!("* BYE [UNAVAILABLE] Too many connections from {ip} not logged in, try again later"),
        };
        refuse_login_client(conn, ip, why, self.cfg.login_limit, &reply);
    }

    fn start(&mut self, conn: Accepted, ticket: Option<Ticket>) -> Result<Start<ProxyConn>, ProxyConn> {
        let peer = inet(&conn.peer);
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
        Start::tcp(conn.stream, proto, None, deadlines)
    }

    fn ticket(&mut self, c: &mut ProxyConn) -> Option<Ticket> {
        c.ticket.take()
    }

    /// A logged-in connection no longer counts against its address's limit.
    fn logged_in(&self, c: &ProxyConn) -> bool {
        c.logged_in()
    }

    /// The auth, backend and replicator sockets' events.
    fn aux_event(
        &mut self,
        _registry: &mio::Registry,
        c: &mut ProxyConn,
        io: &mut Io<'_>,
        slot: usize,
        event: &mio::event::Event,
    ) -> bool {
        c.side_event(io, slot, event);
        true
    }
}
