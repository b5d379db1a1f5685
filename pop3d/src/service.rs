//! The pop3d process: the event skeleton's [`EventService`] over a [`Pool`] of
//! [`Pop3Conn`]s — the per-address gate before a session starts, the auth answers, and
//! what a closed connection gives back.
//!
//! Before a session starts, its client address is counted by anvil over all pop3d
//! processes of the service (`login_client_connection_count_limit` connections not yet
//! logged in per address; in-process while anvil is away): the connection over the limit
//! gets `-ERR [SYS/TEMP]` and is closed. A session's count is given back at login.

use crate::conn::Pop3Conn;
use crate::maildrop::{Maildrop, OpenError};
use crate::session::{Security, Session, err};
use mio::Token;
use postern_lib::anvil::gate::{Decision, Gate, Ticket, refuse_login_client};
use postern_lib::anvil::local::Refusal;
use postern_lib::config::Cidr;
use postern_lib::proto::auth::AuthReply;
use postern_lib::skeleton::conn::{Deadlines, Pool};
use postern_lib::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use postern_lib::skeleton::{Accepted, Context, Peer, Stream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The connection to anvil (client tokens stay below it).
const ANVIL: Token = Token(RESERVED_TOKENS - 1);
/// The process's waker: connections that used up their turn go on after the others.
const WAKER: Token = Token(RESERVED_TOKENS - 2);

/// The daemon's settings.
pub struct Settings {
    /// TLS configuration, when a certificate is configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Implicit TLS (the pop3s service).
    pub implicit_tls: bool,
    /// `pop3d_allow_plaintext`.
    pub allow_plaintext: bool,
    /// `pop3d_secure_networks`.
    pub secure_networks: Vec<Cidr>,
    /// `virtual_mailbox_base`.
    pub mailbox_base: PathBuf,
    /// `pop3d_timeout`.
    pub timeout: Duration,
    /// `pop3d_login_timeout`: from connecting to a login, a hard deadline.
    pub login_timeout: Duration,
    /// `login_client_connection_count_limit`.
    pub login_limit: u32,
    /// The service (`pop3/inet`): anvil counts per service.
    pub service: String,
}

/// All connections of one pop3d process.
pub struct Pop3 {
    settings: Settings,
    pool: Pool<Pop3Conn>,
    /// New connections waiting for anvil's count.
    gate: Gate<Accepted>,
}

impl Pop3 {
    /// A new service.
    pub fn new(settings: Settings) -> Pop3 {
        let gate = Gate::new(&settings.service, ANVIL, settings.login_limit, 0);
        Pop3 {
            settings,
            pool: Pool::new(WAKER),
            gate,
        }
    }

    /// Starts or refuses the connections the gate has decided on.
    fn decide(&mut self, lp: &EventLoop<'_>, decisions: Vec<Decision<Accepted>>) {
        for d in decisions {
            match d {
                Decision::Admit(conn, ticket) => self.start(lp, conn, Some(ticket)),
                Decision::Refuse(conn, ip, why) => self.refuse(conn, ip, why),
            }
        }
    }

    /// Tells a client over its address's limit so, and closes (RFC 3206 `SYS/TEMP`).
    fn refuse(&self, conn: Accepted, ip: std::net::IpAddr, why: Refusal) {
        let reply = format!("-ERR [SYS/TEMP] Too many connections from {ip} not logged in, try again later");
        refuse_login_client(conn, ip, why, self.settings.login_limit, &reply);
    }

    /// Starts the session of an admitted client: greeting and all.
    fn start(&mut self, lp: &EventLoop<'_>, conn: Accepted, ticket: Option<Ticket>) {
        let peer = match conn.peer {
            Peer::Inet(a) => Some(a),
            Peer::Unix => None,
        };
        let s = &self.settings;
        let trusted = peer.is_some_and(|p| s.secure_networks.iter().any(|n| n.contains(p.ip())));
        let implicit = s.implicit_tls.then(|| s.tls.clone()).flatten();
        let session = Session::new(Security {
            tls: implicit.is_some(),
            tls_available: s.tls.is_some() && implicit.is_none(),
            plaintext_ok: s.allow_plaintext || trusted,
        });
        let proto = Pop3Conn::new(session, peer, s.tls.clone(), ticket, s.login_timeout);
        let deadlines = Deadlines {
            idle: s.timeout,
            login: Some(s.login_timeout),
            session: None,
        };
        let closed = match conn.stream {
            Stream::Tcp(sock) if s.implicit_tls == implicit.is_some() => {
                self.pool.add(lp.registry(), sock, proto, implicit, deadlines)
            }
            _ => vec![proto],
        };
        self.closed(lp, closed);
    }

    /// Gives back what closed connections held.
    fn closed(&mut self, lp: &EventLoop<'_>, closed: Vec<Pop3Conn>) {
        for mut c in closed {
            if let Some((mut a, _)) = c.auth.take() {
                let _ = lp.registry().deregister(a.source());
            }
            if let Some(t) = c.ticket.take() {
                self.gate.release(lp.registry(), t, Instant::now());
            }
        }
    }

    fn auth_event(&mut self, lp: &EventLoop<'_>, id: usize) {
        let Some(conn) = self.pool.get(id) else { return };
        let (c, mut io) = conn.parts(lp.registry());
        let Some((client, _)) = c.auth.as_mut() else { return };
        let reply = match client.progress() {
            Ok(None) => return,
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
        };
        let Some((mut client, user)) = c.auth.take() else {
            return;
        };
        let _ = lp.registry().deregister(client.source());
        let client_addr = c.peer.map(|p| p.ip().to_string()).unwrap_or_default();
        let result = match reply {
            Ok(AuthReply::Ok { user: account }) => match Maildrop::open(&self.settings.mailbox_base, &account) {
                Ok(md) => {
                    tracing::info!("login: user={account}, client={client_addr}, tls={}", io.tls_active());
                    Ok((account, md))
                }
                Err(OpenError::InUse) => Err(err("[IN-USE] Mailbox is locked by another POP3 session")),
                Err(OpenError::Failed(e)) => {
                    tracing::warn!("open mailbox of {account}: {e}");
                    Err(err("[SYS/TEMP] Cannot open the mailbox"))
                }
            },
            Ok(AuthReply::TempFail { .. }) | Err(_) => {
                if let Err(e) = &reply {
                    tracing::warn!("auth: {e}");
                }
                Err(err("[SYS/TEMP] Authentication is not available now, try again later"))
            }
            Ok(_) => {
                tracing::info!(
                    "authentication failed: user={}, client={client_addr}",
                    postern_lib::strbuf::printable_bounded(user.as_bytes(), 80)
                );
                Err(err("[AUTH] Authentication failed"))
            }
        };
        let acts = c.session.auth_done(result);
        c.apply(&mut io, acts);
        // logged in: no login deadline, no longer counted against the address's limit
        if c.session.user.is_some() {
            io.authenticated();
            if let Some(t) = c.ticket.take() {
                self.gate.release(lp.registry(), t, Instant::now());
            }
        }
        let closed = self.pool.drive(lp.registry(), id);
        self.closed(lp, closed);
    }
}

impl EventService for Pop3 {
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
        if let Some(id) = self.pool.aux_id(event.token()) {
            return self.auth_event(lp, id);
        }
        let closed = self.pool.ready(lp.registry(), event.token());
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
