//! The pop3d process: the event skeleton's service ([`Gated`]) over a pool of
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
use postern_lib::anvil::gate::{Ticket, refuse_login_client};
use postern_lib::anvil::local::Refusal;
use postern_lib::config::Cidr;
use postern_lib::proto::auth::AuthReply;
use postern_lib::skeleton::Accepted;
use postern_lib::skeleton::conn::{Deadlines, Front, Gated, Io, Start, by_address, inet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

/// All connections of one pop3d process: the gate and pool of lib's connection driver
/// around [`Pop3`].
pub type Service = Gated<Pop3>;

/// A new service.
pub fn new(settings: Settings) -> Service {
    let (service, limit) = (settings.service.clone(), settings.login_limit);
    Gated::new(Pop3 { settings }, &service, limit, 0)
}

/// pop3d's side of the service: how a session starts or is refused, the auth answers.
pub struct Pop3 {
    settings: Settings,
}

impl Front for Pop3 {
    type Proto = Pop3Conn;
    type Item = Accepted;

    fn arrive(&mut self, conn: Accepted) -> Option<(Accepted, Option<IpAddr>)> {
        by_address(conn)
    }

    /// Tells a client over its address's limit so, and closes (RFC 3206 `SYS/TEMP`).
    fn refuse(&mut self, conn: Accepted, ip: IpAddr, why: Refusal) {
        let reply = format!("-ERR [SYS/TEMP] Too many connections from {ip} not logged in, try again later");
        refuse_login_client(conn, ip, why, self.settings.login_limit, &reply);
    }

    /// Starts the session of an admitted client: greeting and all.
    fn start(&mut self, conn: Accepted, ticket: Option<Ticket>) -> Result<Start<Pop3Conn>, Pop3Conn> {
        let peer = inet(&conn.peer);
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
        if s.implicit_tls != implicit.is_some() {
            return Err(proto);
        }
        Start::tcp(conn.stream, proto, implicit, deadlines)
    }

    fn ticket(&mut self, c: &mut Pop3Conn) -> Option<Ticket> {
        c.ticket.take()
    }

    /// Logged in: no longer counted against the address's limit.
    fn logged_in(&self, c: &Pop3Conn) -> bool {
        c.session.user.is_some()
    }

    /// Gives back what a closed connection held: its auth request.
    fn closed(&mut self, registry: &mio::Registry, c: &mut Pop3Conn) {
        if let Some((mut a, _)) = c.auth.take() {
            let _ = registry.deregister(a.source());
        }
    }

    /// The auth answer.
    fn aux_event(
        &mut self,
        registry: &mio::Registry,
        c: &mut Pop3Conn,
        io: &mut Io<'_>,
        _slot: usize,
        _event: &mio::event::Event,
    ) -> bool {
        let Some((client, _)) = c.auth.as_mut() else {
            return false;
        };
        let reply = match client.progress() {
            Ok(None) => return false,
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
        };
        let Some((mut client, user)) = c.auth.take() else {
            return false;
        };
        let _ = registry.deregister(client.source());
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
        c.apply(io, acts);
        // logged in: no login deadline (the count is given back after this)
        if c.session.user.is_some() {
            io.authenticated();
        }
        true
    }
}
