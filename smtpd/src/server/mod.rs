//! The event loop side of smtpd: accepting clients from the skeleton, the per-client
//! connection limits ([`anvil`]), and routing readiness events to connections.
//!
//! Each connection owns up to three sockets, registered with tokens `4*id + k`: the client
//! (k = 0), its cleanup connection (1) and its auth connection (2).

pub mod anvil;
pub mod conn;
pub mod known;
pub mod peer;
pub mod tls;

use crate::settings::Settings;
use conn::Conn;
use mio::{Interest, Registry, Token};
use postern_lib::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use postern_lib::skeleton::{Accepted, Context, Peer, Stream};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// The smtpd service.
pub struct Server {
    cfg: Arc<Settings>,
    tls: Option<Arc<rustls::ServerConfig>>,
    conns: HashMap<usize, Conn>,
    anvil: anvil::Anvil,
    known: Rc<RefCell<known::Known>>,
    next_id: usize,
}

impl Server {
    /// `pre_init`: reads the settings, tables and certificate while still privileged.
    pub fn new(ctx: &Context) -> Result<Server, String> {
        let service = ctx.service.split('/').next().unwrap_or("smtp").to_string();
        let mut cfg = Settings::load(&ctx.main, &ctx.config.dir, &service)?;
        let tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
            (Some(c), Some(k)) if cfg.tls_level != crate::settings::TlsLevel::None || cfg.tls_wrapper => {
                Some(tls::load(c, k)?)
            }
            (Some(_), None) => return Err("smtpd_tls_cert_file is set but smtpd_tls_key_file is not".into()),
            _ => None,
        };
        cfg.tls_available = tls.is_some();
        Ok(Server {
            cfg: Arc::new(cfg),
            tls,
            conns: HashMap::new(),
            anvil: anvil::Anvil::default(),
            known: Rc::default(),
            next_id: 0,
        })
    }

    fn new_id(&mut self) -> usize {
        loop {
            self.next_id = (self.next_id + 1) % (RESERVED_TOKENS / 4);
            if !self.conns.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    /// After a connection did work: keep the registrations in step, drop it when dead.
    fn settle(&mut self, registry: &Registry, id: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        while c.peers_changed && !c.dead {
            c.peers_changed = false;
            for (k, p) in [(1, c.cleanup.as_mut()), (2, c.auth.as_mut())] {
                if let Some(p) = p
                    && !p.registered
                {
                    p.write_interest = !p.out.is_empty();
                    p.registered = registry
                        .register(&mut p.sock, Token(4 * id + k), interest(p.write_interest))
                        .is_ok();
                }
            }
            // A freshly registered peer may already be writable or readable.
            c.pump(now);
        }
        if !c.dead {
            // Writability is asked for only while output waits for room.
            let want = c.wants_write();
            if want != c.write_interest && registry.reregister(&mut c.sock, Token(4 * id), interest(want)).is_ok() {
                c.write_interest = want;
            }
            for (k, p) in [(1, c.cleanup.as_mut()), (2, c.auth.as_mut())] {
                if let Some(p) = p
                    && p.registered
                    && p.write_interest == p.out.is_empty()
                    && registry
                        .reregister(&mut p.sock, Token(4 * id + k), interest(!p.out.is_empty()))
                        .is_ok()
                {
                    p.write_interest = !p.out.is_empty();
                }
            }
        }
        if c.dead
            && let Some(mut c) = self.conns.remove(&id)
        {
            let _ = registry.deregister(&mut c.sock);
            if let Some(p) = c.cleanup.as_mut() {
                let _ = registry.deregister(&mut p.sock);
            }
            if let Some(p) = c.auth.as_mut() {
                let _ = registry.deregister(&mut p.sock);
            }
            self.anvil.disconnect(c.ip, now);
            tracing::info!("disconnect from unknown[{}]", c.ip);
        }
    }
}

/// Readable always; writable too when `write`.
fn interest(write: bool) -> Interest {
    if write {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

impl EventService for Server {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        let (Stream::Tcp(std_sock), Peer::Inet(peer)) = (conn.stream, conn.peer) else {
            tracing::warn!("smtpd accepts TCP connections only");
            return;
        };
        let now = Instant::now();
        let ip = peer.ip();
        if let Err(why) = self
            .anvil
            .connect(ip, self.cfg.conn_count_limit, self.cfg.conn_rate_limit, now)
        {
            let what = match why {
                anvil::Refusal::Count => "too many connections",
                anvil::Refusal::Rate => "too many connections per minute",
            };
            tracing::warn!("{what} from unknown[{ip}]");
            let mut s = std_sock;
            let _ = s.set_write_timeout(Some(std::time::Duration::from_secs(1)));
            let _ = write!(s, "421 4.7.0 {} Error: {what} from {ip}\r\n", self.cfg.hostname);
            return;
        }
        if std_sock.set_nonblocking(true).is_err() {
            self.anvil.disconnect(ip, now);
            return;
        }
        tracing::info!("connect from unknown[{ip}]");
        let sock = mio::net::TcpStream::from_std(std_sock);
        let id = self.new_id();
        let mut c = Conn::new(sock, ip, self.cfg.clone(), self.tls.clone(), self.known.clone(), now);
        if lp
            .registry()
            .register(&mut c.sock, Token(4 * id), interest(false))
            .is_err()
        {
            self.anvil.disconnect(ip, now);
            return;
        }
        c.pump(now);
        self.conns.insert(id, c);
        self.settle(lp.registry(), id, now);
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        let id = event.token().0 / 4;
        let now = Instant::now();
        if let Some(c) = self.conns.get_mut(&id) {
            // Something to read (or an end or error to find out about by reading).
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let hup = event.is_read_closed() || event.is_error();
                match event.token().0 % 4 {
                    0 => {
                        c.client_readable = true;
                        c.client_hup |= hup;
                    }
                    1 => {
                        if let Some(p) = c.cleanup.as_mut() {
                            p.readable = true;
                            p.hup |= hup;
                        }
                    }
                    _ => {
                        if let Some(p) = c.auth.as_mut() {
                            p.readable = true;
                            p.hup |= hup;
                        }
                    }
                }
            }
            c.pump(now);
        }
        self.settle(lp.registry(), id, now);
    }

    fn tick(&mut self, lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.tick(now);
            }
            self.settle(lp.registry(), id, now);
        }
        self.anvil.expire(now);
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }

    fn stop(&mut self, lp: &EventLoop<'_>, _ctx: &Context) {
        let now = Instant::now();
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.stop(now);
            }
            self.settle(lp.registry(), id, now);
        }
    }
}
