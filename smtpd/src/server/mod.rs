//! The event loop side of smtpd: a [`Pool`] of [`SmtpConn`]s on lib's connection driver,
//! the per-client connection limits before a session starts, and the events of each
//! connection's side sockets (cleanup, auth: the driver's auxiliary tokens).
//!
//! Connection limits: a new client waits (no greeting yet) while anvil counts it over all
//! smtpd processes; when anvil is unavailable, the in-process counter decides (the shared
//! [`Gate`]). Clients in `smtpd_client_event_limit_exceptions` are not counted.

pub mod conn;
pub mod known;
pub mod peer;

use crate::settings::{Settings, TlsLevel};
use conn::SmtpConn;
use mio::Token;
use postern_lib::anvil::gate::{Decision, Gate, Ticket};
use postern_lib::anvil::local::Refusal;
use postern_lib::skeleton::conn::{Deadlines, Pool};
use postern_lib::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use postern_lib::skeleton::{Accepted, Context, Peer, Stream};
use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// The connection to anvil (client tokens stay below it).
const ANVIL: Token = Token(RESERVED_TOKENS - 1);
/// The process's waker: connections that used up their turn go on after the others.
const WAKER: Token = Token(RESERVED_TOKENS - 2);

/// The smtpd service.
pub struct Server {
    cfg: Arc<Settings>,
    tls: Option<Arc<rustls::ServerConfig>>,
    pool: Pool<SmtpConn>,
    /// New clients waiting for anvil's count.
    gate: Gate<(TcpStream, IpAddr)>,
    known: Rc<RefCell<known::Known>>,
}

impl Server {
    /// `pre_init`: reads the settings, tables and certificate while still privileged.
    pub fn new(ctx: &Context) -> Result<Server, String> {
        let service = ctx.service.split('/').next().unwrap_or("smtp").to_string();
        let mut cfg = Settings::load(&ctx.main, &ctx.config.dir, &service)?;
        let tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
            (Some(c), Some(k)) if cfg.tls_level != TlsLevel::None || cfg.tls_wrapper => {
                Some(postern_lib::tls::server_config(c, k).map_err(|e| format!("smtpd TLS: {e}"))?)
            }
            (Some(_), None) => return Err("smtpd_tls_cert_file is set but smtpd_tls_key_file is not".into()),
            _ => None,
        };
        cfg.tls_available = tls.is_some();
        let gate = Gate::new(&ctx.service, ANVIL, cfg.conn_count_limit, cfg.conn_rate_limit);
        Ok(Server {
            cfg: Arc::new(cfg),
            tls,
            pool: Pool::new(WAKER),
            gate,
            known: Rc::default(),
        })
    }

    /// Starts or refuses the clients the gate has decided on.
    fn decide(&mut self, lp: &EventLoop<'_>, decisions: Vec<Decision<(TcpStream, IpAddr)>>) {
        for d in decisions {
            match d {
                Decision::Admit((sock, ip), ticket) => self.start(lp, sock, ip, Some(ticket)),
                Decision::Refuse((sock, _), ip, why) => self.refuse(sock, ip, why),
            }
        }
    }

    /// Starts the session of an admitted client: greeting and all.
    fn start(&mut self, lp: &EventLoop<'_>, sock: TcpStream, ip: IpAddr, ticket: Option<Ticket>) {
        tracing::info!("connect from unknown[{ip}]");
        let proto = SmtpConn::new(ip, self.cfg.clone(), self.tls.clone(), self.known.clone(), ticket);
        let deadlines = Deadlines {
            idle: self.cfg.timeout,
            login: None,
            session: None,
        };
        let implicit = if self.cfg.tls_wrapper {
            match &self.tls {
                Some(t) => Some(t.clone()),
                None => return self.closed(lp, vec![proto]),
            }
        } else {
            None
        };
        let closed = self.pool.add(lp.registry(), sock, proto, implicit, deadlines);
        self.closed(lp, closed);
    }

    /// Tells a client over a limit so, and closes.
    fn refuse(&self, mut sock: TcpStream, ip: IpAddr, why: Refusal) {
        let what = match why {
            Refusal::Count => "too many connections",
            Refusal::Rate => "too many connections per minute",
        };
        tracing::warn!("{what} from unknown[{ip}]");
        let _ = sock.set_write_timeout(Some(std::time::Duration::from_secs(1)));
        let _ = write!(sock, "421 4.7.0 {} Error: {what} from {ip}\r\n", self.cfg.hostname);
    }

    /// Gives back what closed connections held: their count.
    fn closed(&mut self, lp: &EventLoop<'_>, closed: Vec<SmtpConn>) {
        for mut c in closed {
            if let Some(t) = c.ticket.take() {
                self.gate.release(lp.registry(), t, Instant::now());
            }
        }
    }
}

impl EventService for Server {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        let (Stream::Tcp(sock), Peer::Inet(peer)) = (conn.stream, conn.peer) else {
            tracing::warn!("smtpd accepts TCP connections only");
            return;
        };
        let ip = peer.ip();
        // smtpd_client_event_limit_exceptions (default: mynetworks) are never counted.
        if self.cfg.event_limit_exceptions.iter().any(|c| c.contains(ip)) {
            return self.start(lp, sock, ip, None);
        }
        let decisions = self.gate.arrive(lp.registry(), (sock, ip), ip, Instant::now());
        self.decide(lp, decisions);
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
        // Clients still waiting for anvil have not been greeted: just close them.
        self.gate.clear_pending();
        let closed = self.pool.stop(lp.registry());
        self.closed(lp, closed);
    }
}
