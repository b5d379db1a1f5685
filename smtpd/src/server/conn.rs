//! One SMTP connection on lib's connection driver ([`postern_lib::skeleton::conn`]): the
//! sans-I/O [`Session`] fed from the driver's line buffer, its actions carried out, and
//! its two side sockets on the connection's auxiliary tokens — the cleanup connection of
//! the message in progress ([`PeerConn`], slot [`CLEANUP`]) and an auth request
//! ([`AuthClient`], slot [`AUTH`]). Socket, TLS, buffers, back-pressure and deadlines are
//! the driver's: the command timeout is its idle deadline (from the last reply, or from
//! the last content while a message comes), the DATA deadline its phase deadline.
//!
//! Back-pressure: besides the driver's bound on replies the client has not read
//! ([`MAX_CLIENT_OUT`]), the session is given no more input (and the client's socket is not
//! read) while more than [`MAX_CLEANUP_OUT`] bytes of content wait for cleanup.

use super::known::Known;
use super::peer::PeerConn;
use crate::protocol::{Action, ClientInfo, LookupResult, Session, TlsInfo, VerifyResult};
use crate::settings::Settings;
use mio::Interest;
use postern_lib::anvil::gate::Ticket;
use postern_lib::ipc::codec::Encoder;
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use postern_lib::proto::auth_client::AuthClient;
use postern_lib::proto::cleanup::{self, CleanupReply, CleanupRequest, CleanupStarted};
use postern_lib::skeleton::conn::{Ending, Io, Limits, Protocol};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Most reply bytes held for a client before its input is no longer processed.
pub const MAX_CLIENT_OUT: usize = 64 * 1024;
/// Most content bytes queued for cleanup before client input is no longer processed.
pub const MAX_CLEANUP_OUT: usize = 256 * 1024;
/// Most bytes of unprocessed client input.
const MAX_INPUT: usize = 64 * 1024;
/// Content bytes for cleanup held back until this many wait (or the message ends).
const CLEANUP_BURST: usize = 4096;

/// The auxiliary slot of the cleanup connection.
pub const CLEANUP: usize = 0;
/// The auxiliary slot of an auth request.
pub const AUTH: usize = 1;

/// An auth request in flight.
struct AuthAsk {
    client: AuthClient,
    /// The user of a lookup (remembered in `known` if auth says it exists); `None` for a
    /// password check.
    lookup: Option<String>,
    due: Instant,
}

/// The protocol side of a client connection.
pub struct SmtpConn {
    ip: IpAddr,
    session: Session,
    cfg: Arc<Settings>,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    /// Mailboxes auth said exist, shared by the process's connections.
    known: Rc<RefCell<Known>>,
    /// Whether the session has begun (for smtps: once the handshake is done).
    greeted: bool,
    /// The connection to cleanup for the message in progress.
    cleanup: Option<PeerConn>,
    /// Whether cleanup has named the queue ID ([`CleanupStarted`]) on `cleanup`.
    cleanup_started: bool,
    auth: Option<AuthAsk>,
    /// The per-address count, given back when the connection ends.
    pub(crate) ticket: Option<Ticket>,
}

impl SmtpConn {
    /// A new connection's protocol side.
    pub fn new(
        ip: IpAddr,
        cfg: Arc<Settings>,
        tls_config: Option<Arc<rustls::ServerConfig>>,
        known: Rc<RefCell<Known>>,
        ticket: Option<Ticket>,
    ) -> SmtpConn {
        let client = ClientInfo {
            addr: ip,
            name: "unknown".into(),
        };
        SmtpConn {
            ip,
            session: Session::new(cfg.clone(), client, None),
            cfg,
            tls_config,
            known,
            greeted: false,
            cleanup: None,
            cleanup_started: false,
            auth: None,
            ticket,
        }
    }

    /// Performs the session's actions (and the actions their immediate outcomes produce).
    fn apply(&mut self, io: &mut Io<'_>, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Send(b) => {
                    io.send(&b);
                    if !self.session.in_message() {
                        io.touch();
                    }
                }
                Action::StartTls => match self.tls_config.clone() {
                    Some(cfg) => {
                        io.start_tls(cfg);
                    }
                    None => io.abort(),
                },
                Action::Close => io.close(),
                Action::Lookup(user) => {
                    if self.known.borrow_mut().exists(&user, Instant::now()) {
                        queue.extend(self.session.lookup_done(LookupResult::Exists));
                        continue;
                    }
                    let req = AuthRequest::Lookup { user: user.clone() };
                    queue.extend(self.ask_auth(io, &req, Some(user)));
                }
                Action::Verify { user, password } => {
                    let req = AuthRequest::Verify {
                        user,
                        password: password.to_string(),
                        service: self.cfg.service.clone(),
                        client: Some(self.ip.to_string()),
                    };
                    queue.extend(self.ask_auth(io, &req, None));
                    if let AuthRequest::Verify { mut password, .. } = req {
                        zeroize::Zeroize::zeroize(&mut password);
                    }
                }
                Action::Begin(sub) => {
                    io.phase_deadline(Some(self.cfg.data_timeout));
                    let (registry, token) = io.aux_nth(CLEANUP);
                    let opened =
                        PeerConn::connect(Path::new(cleanup::SOCKET), cleanup::PROTOCOL, cleanup::VERSION, token)
                            .and_then(|mut p| {
                                p.send(&CleanupRequest::Open(*sub)).map_err(|e| e.to_string())?;
                                p.register(registry)?;
                                // Due: the queue ID (CleanupStarted), later the outcome.
                                p.reply_due = Some(Instant::now() + self.cfg.timeout);
                                Ok(p)
                            });
                    match opened {
                        Ok(p) => {
                            self.cleanup = Some(p);
                            self.cleanup_started = false;
                        }
                        Err(e) => {
                            tracing::warn!("cleanup: {e}");
                            queue.extend(self.session.cleanup_done(None));
                        }
                    }
                }
                Action::Data(bytes) => {
                    if let Some(p) = self.cleanup.as_mut()
                        && Encoder::data(&bytes, &mut p.out).is_err()
                    {
                        self.drop_cleanup();
                        queue.extend(self.session.cleanup_done(None));
                    }
                }
                Action::End => match self.cleanup.as_mut() {
                    Some(p) => {
                        let _ = Encoder::end(&mut p.out);
                        p.reply_due = Some(Instant::now() + self.cfg.timeout);
                    }
                    None => queue.extend(self.session.cleanup_done(None)),
                },
                Action::Abort => {
                    self.drop_cleanup();
                    io.phase_deadline(None);
                }
            }
        }
        // Content waits for a burst worth a write, or for the end: the Received header
        // cleanup's queue ID lets smtpd write goes out with the first body bytes (one
        // write to cleanup, not two). A request (Open, End) goes at once.
        if let Some(p) = self.cleanup.as_mut()
            && (p.reply_due.is_some() || p.out.len() >= CLEANUP_BURST)
            && let Err(e) = p.flush(io.aux().0)
        {
            tracing::warn!("cleanup connection: {e}");
            self.drop_cleanup();
            io.phase_deadline(None);
            let a = self.session.cleanup_done(None);
            self.apply(io, a);
        }
    }

    /// Closes the cleanup connection (closing takes it off the event loop).
    fn drop_cleanup(&mut self) {
        self.cleanup = None;
    }

    fn drop_auth(&mut self, registry: &mio::Registry) -> Option<AuthAsk> {
        let mut a = self.auth.take()?;
        let _ = registry.deregister(a.client.source());
        Some(a)
    }

    /// Sends an auth request; returns the session's actions if it failed at once.
    fn ask_auth(&mut self, io: &mut Io<'_>, req: &AuthRequest, lookup: Option<String>) -> Vec<Action> {
        let verify = lookup.is_none();
        let started = AuthClient::start(Path::new(auth::SOCKET), req).and_then(|mut client| {
            let (registry, token) = io.aux_nth(AUTH);
            registry
                .register(client.source(), token, Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| format!("register: {e}"))?;
            Ok(client)
        });
        match started {
            Ok(client) => {
                let due = Instant::now() + self.cfg.timeout;
                self.auth = Some(AuthAsk { client, lookup, due });
                Vec::new()
            }
            Err(e) => {
                tracing::warn!("auth: {e}");
                self.auth_failed(verify)
            }
        }
    }

    fn auth_failed(&mut self, verify: bool) -> Vec<Action> {
        if verify {
            self.session.verify_done(VerifyResult::TempFail)
        } else {
            self.session.lookup_done(LookupResult::TempFail)
        }
    }

    /// A readiness event on side socket `slot`.
    pub fn side_event(&mut self, io: &mut Io<'_>, slot: usize, event: &mio::event::Event) {
        if slot == CLEANUP {
            if let Some(p) = self.cleanup.as_mut()
                && (event.is_readable() || event.is_read_closed() || event.is_error())
            {
                p.readable = true;
                p.hup |= event.is_read_closed() || event.is_error();
            }
            self.pump_cleanup(io);
        } else if slot == AUTH {
            self.pump_auth(io);
        }
    }

    fn pump_cleanup(&mut self, io: &mut Io<'_>) {
        let Some(p) = self.cleanup.as_mut() else { return };
        let r = p.pump(io.aux().0);
        let mut outcome: Option<Option<CleanupReply>> = None;
        for f in &r.frames {
            let Some(p) = self.cleanup.as_mut() else { break };
            if !self.cleanup_started {
                // First comes the queue ID, then (after End) the outcome.
                let Ok(started) = f.message::<CleanupStarted>() else {
                    outcome = Some(None);
                    break;
                };
                self.cleanup_started = true;
                p.reply_due = None;
                let a = self.session.cleanup_started(Some(started.queue_id.to_string()));
                self.apply(io, a);
                continue;
            }
            outcome = Some(match f.message::<CleanupReply>() {
                Ok(reply) if p.reply_due.is_some() => Some(reply),
                Ok(_) | Err(_) => None,
            });
            break;
        }
        if outcome.is_none()
            && let Some(e) = r.failed
        {
            tracing::warn!("cleanup connection: {e}");
            outcome = Some(None);
        }
        if let Some(o) = outcome
            && self.cleanup.is_some()
        {
            self.drop_cleanup();
            io.phase_deadline(None);
            let a = self.session.cleanup_done(o);
            self.apply(io, a);
        }
    }

    fn pump_auth(&mut self, io: &mut Io<'_>) {
        let Some(ask) = self.auth.as_mut() else { return };
        let reply = match ask.client.progress() {
            Ok(None) => return,
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
        };
        let Some(ask) = self.drop_auth(io.aux().0) else { return };
        let a = match (ask.lookup, reply) {
            (Some(u), Ok(AuthReply::Exists { .. })) => {
                self.known.borrow_mut().insert(&u, Instant::now());
                self.session.lookup_done(LookupResult::Exists)
            }
            (Some(_), Ok(AuthReply::NoSuchUser)) => self.session.lookup_done(LookupResult::NoSuchUser),
            (None, Ok(AuthReply::Ok { user })) => self.session.verify_done(VerifyResult::Ok(user)),
            (None, Ok(AuthReply::Fail { .. })) => self.session.verify_done(VerifyResult::Fail),
            (lookup, other) => {
                if let Err(e) = other {
                    tracing::warn!("auth connection: {e}");
                }
                self.auth_failed(lookup.is_none())
            }
        };
        self.apply(io, a);
    }
}

impl Protocol for SmtpConn {
    fn greeting(&mut self, io: &mut Io<'_>) {
        // smtps greets once the handshake is done (secured)
        if !self.cfg.tls_wrapper {
            self.greeted = true;
            let a = self.session.start();
            self.apply(io, a);
        }
    }

    fn handle(&mut self, io: &mut Io<'_>) -> bool {
        let before = io.lines().pending_len();
        if !self.greeted || self.session.is_waiting() || before == 0 {
            return false;
        }
        let actions = self.session.process(io.lines());
        let used = io.lines().pending_len() != before;
        if used && self.session.in_message() {
            io.touch();
        }
        let progress = used || !actions.is_empty();
        self.apply(io, actions);
        if !self.session.in_message() {
            io.phase_deadline(None);
        }
        progress
    }

    fn limits(&self) -> Limits {
        Limits {
            input: MAX_INPUT.max(self.cfg.line_limit + 2),
            output: MAX_CLIENT_OUT,
        }
    }

    fn line_limit(&self) -> usize {
        self.cfg.line_limit
    }

    fn waiting(&self) -> bool {
        self.auth.is_some() || self.cleanup.as_ref().is_some_and(|c| c.reply_due.is_some())
    }

    fn blocked(&self) -> bool {
        self.cleanup.as_ref().is_some_and(|c| c.out.len() >= MAX_CLEANUP_OUT)
    }

    fn secured(&mut self, io: &mut Io<'_>) {
        let Some(t) = io.tls() else { return };
        let info = TlsInfo {
            version: t.version(),
            cipher: t.cipher(),
        };
        tracing::info!("{}: TLS established ({} {})", self.ip, info.version, info.cipher);
        let mut a = self.session.tls_started(info);
        if !self.greeted {
            self.greeted = true;
            a.extend(self.session.start());
        }
        self.apply(io, a);
    }

    fn may_stop(&self) -> bool {
        self.greeted && !self.session.in_message() && !self.session.is_waiting()
    }

    fn ending(&mut self, why: Ending, io: &mut Io<'_>) {
        if why == Ending::Shutdown {
            let hostname = &self.cfg.hostname;
            io.send(format!("421 4.3.2 {hostname} Service shutting down, closing transmission channel\r\n").as_bytes());
            io.close();
            return;
        }
        let what = if why == Ending::Phase { "DATA" } else { "command" };
        tracing::info!("timeout after {what} from unknown[{}]", self.ip);
        // (an smtps client that never finished its handshake gets nothing)
        if self.greeted {
            let a = self.session.timeout();
            self.apply(io, a);
        }
    }

    fn timer(&mut self, now: Instant, io: &mut Io<'_>) -> bool {
        let mut acted = false;
        if self
            .cleanup
            .as_ref()
            .is_some_and(|p| p.reply_due.is_some_and(|d| now >= d))
        {
            tracing::warn!("cleanup did not answer in time");
            self.drop_cleanup();
            let a = self.session.cleanup_done(None);
            self.apply(io, a);
            acted = true;
        }
        if self.auth.as_ref().is_some_and(|a| now >= a.due) {
            tracing::warn!("auth did not answer in time");
            if let Some(ask) = self.drop_auth(io.aux().0) {
                let a = self.auth_failed(ask.lookup.is_none());
                self.apply(io, a);
            }
            acted = true;
        }
        acted
    }

    fn disconnected(&mut self, registry: &mio::Registry) {
        self.drop_cleanup();
        self.drop_auth(registry);
        let _ = self.session.disconnected();
        tracing::info!("disconnect from unknown[{}]", self.ip);
    }
}
