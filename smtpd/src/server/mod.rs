//! The event loop side of smtpd: a [`Gated`] pool of [`SmtpConn`]s on lib's connection driver,
//! the per-client connection limits before a session starts, and the events of each
//! connection's side sockets (cleanup, auth: the driver's auxiliary tokens).
//!
//! Connection limits: a new client waits (no greeting yet) while anvil counts it over all
//! smtpd processes; when anvil is unavailable, the in-process counter decides (the shared
//! [`Gate`](postern_lib::anvil::gate::Gate)). Clients in
//! `smtpd_client_event_limit_exceptions` are not counted.

pub mod conn;
pub mod known;
pub mod peer;

use crate::settings::{Settings, TlsLevel};
use conn::SmtpConn;
use postern_lib::anvil::gate::Ticket;
use postern_lib::anvil::local::Refusal;
use postern_lib::skeleton::conn::{Deadlines, Front, Gated, Io, Start};
use postern_lib::skeleton::{Accepted, Context, Peer, Stream};
use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;

/// The smtpd service: the gate and pool of lib's connection driver around [`Smtpd`].
pub type Server = Gated<Smtpd>;

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
    let (count, rate) = (cfg.conn_count_limit, cfg.conn_rate_limit);
    let front = Smtpd {
        cfg: Arc::new(cfg),
        tls,
        known: Rc::default(),
    };
    Ok(Gated::new(front, &ctx.service, count, rate))
}

/// smtpd's side of the service: how a client's session starts or is refused.
pub struct Smtpd {
    cfg: Arc<Settings>,
    tls: Option<Arc<rustls::ServerConfig>>,
    known: Rc<RefCell<known::Known>>,
}

impl Front for Smtpd {
    type Proto = SmtpConn;
    type Item = (TcpStream, SocketAddr);

    fn arrive(&mut self, conn: Accepted) -> Option<(Self::Item, Option<IpAddr>)> {
        let (Stream::Tcp(sock), Peer::Inet(peer)) = (conn.stream, conn.peer) else {
            tracing::warn!("smtpd accepts TCP connections only");
            return None;
        };
        let ip = peer.ip();
        // smtpd_client_event_limit_exceptions (default: mynetworks) are never counted.
        let counted = !self.cfg.event_limit_exceptions.iter().any(|c| c.contains(ip));
        Some(((sock, peer), counted.then_some(ip)))
    }

    /// Starts the session of an admitted client: greeting and all.
    fn start(&mut self, (sock, peer): Self::Item, ticket: Option<Ticket>) -> Result<Start<SmtpConn>, SmtpConn> {
        let ip = peer.ip();
        tracing::info!("connect from unknown[{ip}]");
        let proto = SmtpConn::new(ip, self.cfg.clone(), self.tls.clone(), self.known.clone(), ticket);
        let deadlines = Deadlines {
            idle: self.cfg.timeout,
            login: None,
            session: None,
        };
        let tls = if self.cfg.tls_wrapper {
            match &self.tls {
                Some(t) => Some(t.clone()),
                None => return Err(proto),
            }
        } else {
            None
        };
        Ok(Start {
            sock,
            peer: Some(peer),
            proto,
            tls,
            deadlines,
        })
    }

    /// Tells a client over a limit so, and closes.
    fn refuse(&mut self, (mut sock, _): Self::Item, ip: IpAddr, why: Refusal) {
        let what = match why {
            Refusal::Count => "too many connections",
            Refusal::Rate => "too many connections per minute",
        };
        tracing::warn!("{what} from unknown[{ip}]");
        let _ = sock.set_write_timeout(Some(std::time::Duration::from_secs(1)));
        let _ = write!(sock, "421 4.7.0 {} Error: {what} from {ip}\r\n", self.cfg.hostname);
    }

    fn ticket(&mut self, proto: &mut SmtpConn) -> Option<Ticket> {
        proto.ticket.take()
    }

    /// The cleanup and auth sockets' events.
    fn aux_event(
        &mut self,
        _registry: &mio::Registry,
        proto: &mut SmtpConn,
        io: &mut Io<'_>,
        slot: usize,
        event: &mio::event::Event,
    ) -> bool {
        proto.side_event(io, slot, event);
        true
    }
}
