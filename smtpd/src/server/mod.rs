//! The event loop side of smtpd: accepting clients from the skeleton, the per-client
//! connection limits, and routing readiness events to connections.
//!
//! Each connection owns up to three sockets, registered with tokens `4*id + k`: the client
//! (k = 0), its cleanup connection (1) and its auth connection (2). Token 3 is the
//! process's connection to the anvil daemon ([`anvil_client`]).
//!
//! Connection limits: a new client waits (no greeting yet) while anvil counts it over all
//! smtpd processes; when anvil is unavailable, the in-process counter ([`anvil`]) decides.

pub mod anvil;
pub mod anvil_client;
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
use std::net::{IpAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// The smtpd service.
pub struct Server {
    cfg: Arc<Settings>,
    tls: Option<Arc<rustls::ServerConfig>>,
    conns: HashMap<usize, Conn>,
    /// How each connection was counted.
    counted: HashMap<usize, Counted>,
    /// Clients waiting for anvil's answer, by key.
    pending: HashMap<u64, (TcpStream, IpAddr)>,
    next_pending: u64,
    anvil: anvil::Anvil,
    shared: anvil_client::AnvilClient,
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
            counted: HashMap::new(),
            pending: HashMap::new(),
            next_pending: 0,
            anvil: anvil::Anvil::default(),
            shared: anvil_client::AnvilClient::new(&ctx.service),
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
            let counted = self.counted.remove(&id).unwrap_or(Counted::No);
            self.uncount(registry, counted, c.ip, now);
            tracing::info!("disconnect from unknown[{}]", c.ip);
        }
    }
}

/// How a connection was counted, so that its end is counted the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// Not counted (no limits, or anvil's table was full).
    No,
    /// By the in-process counter.
    Local,
    /// By anvil, over the connection of this generation.
    Anvil(u64),
}

impl Server {
    /// Starts the session of an admitted client: greeting and all.
    fn start(&mut self, registry: &Registry, std_sock: TcpStream, ip: IpAddr, counted: Counted, now: Instant) {
        if std_sock.set_nonblocking(true).is_err() {
            self.uncount(registry, counted, ip, now);
            return;
        }
        tracing::info!("connect from unknown[{ip}]");
        let sock = mio::net::TcpStream::from_std(std_sock);
        let id = self.new_id();
        let mut c = Conn::new(sock, ip, self.cfg.clone(), self.tls.clone(), self.known.clone(), now);
        if registry.register(&mut c.sock, Token(4 * id), interest(false)).is_err() {
            self.uncount(registry, counted, ip, now);
            return;
        }
        c.pump(now);
        self.conns.insert(id, c);
        self.counted.insert(id, counted);
        self.settle(registry, id, now);
    }

    /// Counts a waiting client in this process only (anvil unavailable).
    fn count_locally(&mut self, registry: &Registry, key: u64, now: Instant) {
        let Some((sock, ip)) = self.pending.remove(&key) else {
            return;
        };
        match self
            .anvil
            .connect(ip, self.cfg.conn_count_limit, self.cfg.conn_rate_limit, now)
        {
            Ok(()) => self.start(registry, sock, ip, Counted::Local, now),
            Err(why) => self.refuse(sock, ip, why),
        }
    }

    /// Acts on anvil's answers, and counts locally the questions anvil can no longer answer.
    fn drain_anvil(&mut self, registry: &Registry, now: Instant) {
        // Bounded: each round may queue a disconnect whose pump brings more answers;
        // what is left waits for the next event or tick.
        for _ in 0..64 {
            let (answered, orphaned) = self.shared.take();
            if answered.is_empty() && orphaned.is_empty() {
                break;
            }
            for (key, answer) in answered {
                self.admit(registry, key, answer, now);
            }
            for key in orphaned {
                self.count_locally(registry, key, now);
            }
        }
    }

    /// Admits or refuses a waiting client on anvil's answer.
    fn admit(&mut self, registry: &Registry, key: u64, answer: anvil_client::Answer, now: Instant) {
        let Some((sock, ip)) = self.pending.remove(&key) else {
            return;
        };
        let (count, rate) = match answer {
            anvil_client::Answer::Untracked => return self.start(registry, sock, ip, Counted::No, now),
            anvil_client::Answer::Counts { count, rate } => (count, rate),
        };
        let (count_limit, rate_limit) = (self.cfg.conn_count_limit, self.cfg.conn_rate_limit);
        let why = if count_limit > 0 && count > count_limit {
            Some(anvil::Refusal::Count)
        } else if rate_limit > 0 && rate > rate_limit {
            Some(anvil::Refusal::Rate)
        } else {
            None
        };
        let generation = self.shared.generation();
        match why {
            Some(why) => {
                // anvil counted it: give the open count back (the rate keeps it).
                self.shared.release(registry, generation, ip, now);
                self.refuse(sock, ip, why);
            }
            None => self.start(registry, sock, ip, Counted::Anvil(generation), now),
        }
    }

    /// Tells a client over a limit so, and closes.
    fn refuse(&self, mut sock: TcpStream, ip: IpAddr, why: anvil::Refusal) {
        let what = match why {
            anvil::Refusal::Count => "too many connections",
            anvil::Refusal::Rate => "too many connections per minute",
        };
        tracing::warn!("{what} from unknown[{ip}]");
        let _ = sock.set_write_timeout(Some(std::time::Duration::from_secs(1)));
        let _ = write!(sock, "421 4.7.0 {} Error: {what} from {ip}\r\n", self.cfg.hostname);
    }

    /// A connection ended: count it out where it was counted.
    fn uncount(&mut self, registry: &Registry, counted: Counted, ip: IpAddr, now: Instant) {
        match counted {
            Counted::No => {}
            Counted::Local => self.anvil.disconnect(ip, now),
            Counted::Anvil(generation) => self.shared.release(registry, generation, ip, now),
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
        let registry = lp.registry();
        // smtpd_client_event_limit_exceptions (default: mynetworks) are never counted.
        let exempt = self.cfg.event_limit_exceptions.iter().any(|c| c.contains(ip));
        if exempt || (self.cfg.conn_count_limit == 0 && self.cfg.conn_rate_limit == 0) {
            self.start(registry, std_sock, ip, Counted::No, now);
            return;
        }
        let key = self.next_pending;
        self.next_pending = self.next_pending.wrapping_add(1);
        self.pending.insert(key, (std_sock, ip));
        if !self.shared.ask(registry, key, ip, now) {
            self.count_locally(registry, key, now);
        }
        self.drain_anvil(registry, now);
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        let now = Instant::now();
        if event.token() == anvil_client::TOKEN {
            self.shared.ready(lp.registry(), event, now);
            self.drain_anvil(lp.registry(), now);
            return;
        }
        let id = event.token().0 / 4;
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
        self.drain_anvil(lp.registry(), now);
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
        self.shared.tick(lp.registry(), now);
        self.drain_anvil(lp.registry(), now);
    }

    fn connections(&self) -> usize {
        self.conns.len() + self.pending.len()
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
        // Clients still waiting for anvil have not been greeted: just close them.
        self.pending.clear();
    }
}
