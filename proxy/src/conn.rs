//! One proxied client connection on lib's connection driver
//! ([`postern_lib::skeleton::conn`]): the [`Dialect`] before login, the auth request, the
//! backend connection and the replicator request on the connection's auxiliary tokens,
//! and the relay between client and backend. Client socket, TLS, client-side buffers,
//! back-pressure towards the client and the client's deadlines are the driver's.
//!
//! Phases: before login (the dialect answers the client itself) → auth (lib's
//! non-blocking [`AuthClient`]) → the first sync (when a replicator runs) → connecting to
//! the backends in order (`proxy_connect_timeout` each) → the backend login as
//! `USER*MASTER` → relay. In the relay a changing command's success is held, with all
//! output after it, until the replicator has synced the user.
//!
//! The first sync comes before the backend session exists, because a backend fixes
//! what it serves at its login: pop3d takes its snapshot of the maildrop then (a
//! replica that was down would list, and fail to RETR, messages deleted elsewhere
//! meanwhile), and an imapd session must not have read any folder state before the
//! merge either. The wait is bounded by `replica_timeout` (twice, plus 5 s: the
//! replicator may wait that long for a peer and for the user's lock) and logged; a sync
//! that fails or times out is logged and the login goes on (the replicator's sweep
//! brings the replica in step later).
//!
//! Bounds: at most [`MAX_TO_BACKEND`] bytes wait for the backend (the client's socket is
//! not read meanwhile: [`Protocol::blocked`]), at most [`MAX_FROM_BACKEND`] bytes are read
//! ahead from the backend, and the backend is not read while more than
//! [`OUTPUT_HIGH_WATER`] bytes wait for the client — so a client that does not read holds
//! a fast backend back instead of making the proxy buffer its output.

use crate::backend::Backend;
use crate::dialect::{Dialect, Login, Pre, Security};
use crate::settings::Settings;
use mio::Interest;
use postern_lib::anvil::gate::Ticket;
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use postern_lib::proto::auth_client::AuthClient;
use postern_lib::proto::replica::{self, ReplicaClient, ReplicaReply, ReplicaRequest};
use postern_lib::skeleton::conn::{Ending, Io, Limits, Protocol};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The auxiliary slot of the auth request.
pub const AUTH: usize = 0;
/// The auxiliary slot of the backend connection.
pub const BACKEND: usize = 1;
/// The auxiliary slot of the replicator request.
pub const SYNC: usize = 2;
/// Unsent bytes for the client above which the backend is not read.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// The same before login.
pub const PRELOGIN_HIGH_WATER: usize = 16 * 1024;
/// Bytes waiting for the backend above which the client is not read.
pub const MAX_TO_BACKEND: usize = 256 * 1024;
/// Bytes read ahead from the backend.
pub const MAX_FROM_BACKEND: usize = 64 * 1024;
/// How long an auth answer may take (auth answers failures within 25 s).
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether "no replicator" has been logged by this process.
static NO_REPLICATOR_LOGGED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    PreAuth,
    Auth,
    /// The first sync, after auth and before any backend session.
    Sync,
    Connect,
    Login,
    Relay,
    Done,
}

/// A sync in flight.
struct SyncAsk {
    client: ReplicaClient,
    started: Instant,
    due: Instant,
    why: &'static str,
}

/// The protocol side of a proxied connection.
pub struct ProxyConn {
    cfg: Arc<Settings>,
    dialect: Box<dyn Dialect>,
    sec: Security,
    peer: Option<SocketAddr>,
    phase: Phase,
    auth: Option<(AuthClient, Instant)>,
    /// The account auth logged the client in as.
    user: Option<String>,
    backend: Option<Backend>,
    /// The backends of the user's pair (or `proxy_*_backends`), in order.
    backends: Vec<(String, SocketAddr)>,
    /// The backend to try next (index into `backends`).
    next_backend: usize,
    /// Whether the local replicator syncs this user (no director, or this host's pair).
    local_sync: bool,
    /// The director's pair of the session (checked on the ticks: moved → reconnect).
    pair: Option<usize>,
    connect_due: Instant,
    sync: Option<SyncAsk>,
    /// A changing command's answer is held until the sync answers.
    holding: bool,
    /// The client has more than [`OUTPUT_HIGH_WATER`] unread: the proxy waits for it.
    client_slow: bool,
    /// The per-address count of a connection not yet logged in, given back at login.
    pub ticket: Option<Ticket>,
}

impl ProxyConn {
    /// A new connection's protocol side.
    pub fn new(
        cfg: Arc<Settings>,
        dialect: Box<dyn Dialect>,
        peer: Option<SocketAddr>,
        ticket: Option<Ticket>,
    ) -> ProxyConn {
        let trusted = peer.is_some_and(|p| cfg.secure_networks.iter().any(|n| n.contains(p.ip())));
        let sec = Security {
            tls: false,
            tls_available: cfg.tls.is_some(),
            plaintext_ok: trusted,
        };
        ProxyConn {
            cfg,
            dialect,
            sec,
            peer,
            phase: Phase::PreAuth,
            auth: None,
            user: None,
            backend: None,
            backends: Vec::new(),
            next_backend: 0,
            local_sync: true,
            pair: None,
            connect_due: Instant::now(),
            sync: None,
            holding: false,
            client_slow: false,
            ticket,
        }
    }

    /// Whether the client is logged in (its per-address count can be given back).
    pub fn logged_in(&self) -> bool {
        self.phase == Phase::Relay
    }

    fn addr(&self) -> String {
        self.peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "local".into())
    }

    fn user(&self) -> &str {
        self.user.as_deref().unwrap_or("-")
    }

    /// A readiness event on side socket `slot`.
    pub fn side_event(&mut self, io: &mut Io<'_>, slot: usize, event: &mio::event::Event) {
        match slot {
            AUTH => self.pump_auth(io),
            BACKEND => {
                if let Some(b) = self.backend.as_mut() {
                    b.event(event);
                }
                self.pump_backend(io);
            }
            SYNC => self.pump_sync(io),
            _ => {}
        }
    }

    fn start_auth(&mut self, io: &mut Io<'_>, login: String, password: zeroize::Zeroizing<String>) {
        let mut req = AuthRequest::Verify {
            user: login,
            password: password.to_string(),
            service: format!("{}-proxy", crate::settings::name(self.cfg.kind)),
            client: self.peer.map(|p| p.ip().to_string()),
        };
        let started = AuthClient::start(Path::new(auth::SOCKET), &req).and_then(|mut c| {
            let (registry, token) = io.aux_nth(AUTH);
            registry
                .register(c.source(), token, Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| format!("register: {e}"))?;
            Ok(c)
        });
        if let AuthRequest::Verify { password, .. } = &mut req {
            zeroize::Zeroize::zeroize(password);
        }
        match started {
            Ok(c) => {
                self.auth = Some((c, Instant::now() + AUTH_TIMEOUT));
                self.phase = Phase::Auth;
            }
            Err(e) => {
                tracing::warn!("auth: {e}");
                let r = self
                    .dialect
                    .unavailable("Authentication is not available now, try again later");
                io.send(&r);
            }
        }
    }

    fn drop_auth(&mut self, registry: &mio::Registry) {
        if let Some((mut c, _)) = self.auth.take() {
            let _ = registry.deregister(c.source());
        }
    }

    fn pump_auth(&mut self, io: &mut Io<'_>) {
        let Some((c, _)) = self.auth.as_mut() else { return };
        let reply = match c.progress() {
            Ok(None) => return,
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
        };
        self.drop_auth(io.aux().0);
        self.phase = Phase::PreAuth;
        match reply {
            Ok(AuthReply::Ok { user }) => {
                match self.cfg.route(&user) {
                    Ok(route) => {
                        self.backends = route.backends.to_vec();
                        self.local_sync = route.local_sync;
                        self.pair = route.pair;
                    }
                    Err(e) => {
                        tracing::warn!("proxy: director: user={user}, client={}: {e}", self.addr());
                        let r = self
                            .dialect
                            .unavailable("Your mailbox is not reachable now, try again later");
                        io.send(&r);
                        return;
                    }
                }
                self.user = Some(user);
                self.next_backend = 0;
                // (the client has proved who it is: the login deadline no longer runs
                // while the sync and the backend login take their own bounded time)
                io.authenticated();
                if self.start_sync(io, "before the login") {
                    self.phase = Phase::Sync;
                } else {
                    self.connect_next(io);
                }
            }
            Ok(AuthReply::Fail { .. }) => {
                tracing::info!("proxy: authentication failed: client={}", self.addr());
                let r = self.dialect.auth_failed();
                io.send(&r);
            }
            other => {
                if let Err(e) = &other {
                    tracing::warn!("auth: {e}");
                }
                let r = self
                    .dialect
                    .unavailable("Authentication is not available now, try again later");
                io.send(&r);
            }
        }
    }

    /// Connects to the next backend in the list; none left: the client is told.
    fn connect_next(&mut self, io: &mut Io<'_>) {
        if let Some(mut b) = self.backend.take() {
            b.close(io.aux().0);
        }
        while let Some((name, addr)) = self.backends.get(self.next_backend) {
            self.next_backend += 1;
            let (registry, token) = io.aux_nth(BACKEND);
            match Backend::connect(name, *addr, registry, token) {
                Ok(b) => {
                    self.backend = Some(b);
                    self.dialect.reset_login();
                    self.connect_due = Instant::now() + self.cfg.connect_timeout;
                    self.phase = Phase::Connect;
                    return;
                }
                Err(e) => tracing::warn!("proxy: backend {name} ({addr}): connect: {e}"),
            }
        }
        tracing::warn!(
            "proxy: no backend reachable for user={}, client={}",
            self.user(),
            self.addr()
        );
        self.user = None;
        self.phase = Phase::PreAuth;
        let r = self
            .dialect
            .unavailable("No mailbox server is reachable now, try again later");
        io.send(&r);
    }

    /// A backend failed before the session started: the next one.
    fn backend_failed(&mut self, io: &mut Io<'_>, what: &str) {
        let name = self.backend.as_ref().map(|b| b.name.clone()).unwrap_or_default();
        tracing::warn!(
            "proxy: backend {name}: {what} (user={}, client={})",
            self.user(),
            self.addr()
        );
        self.connect_next(io);
    }

    fn pump_backend(&mut self, io: &mut Io<'_>) {
        match self.phase {
            Phase::Connect => {
                let registry = io.aux().0;
                let Some(b) = self.backend.as_mut() else { return };
                match b.check_connected(registry) {
                    Ok(true) => {
                        self.phase = Phase::Login;
                        self.backend_login(io);
                    }
                    Ok(false) => {}
                    Err(e) => self.backend_failed(io, &format!("connect: {e}")),
                }
            }
            Phase::Login => self.backend_login(io),
            Phase::Relay => {
                self.relay(io);
            }
            _ => {}
        }
    }

    fn backend_login(&mut self, io: &mut Io<'_>) {
        let registry = io.aux().0;
        let Some(b) = self.backend.as_mut() else { return };
        b.read(MAX_FROM_BACKEND);
        let login = format!("{}{}", self.user.as_deref().unwrap_or_default(), self.cfg.master_suffix);
        let step = self
            .dialect
            .backend_login(&mut b.inp, &mut b.out, &login, &self.cfg.master_password);
        let flushed = b.flush(registry);
        let eof = b.eof;
        match step {
            Login::Wait if flushed.is_err() || eof => {
                let why = flushed
                    .err()
                    .unwrap_or_else(|| "closed the connection during login".into());
                self.backend_failed(io, &why);
            }
            Login::Wait => {}
            Login::Failed(why) => self.backend_failed(io, &why),
            Login::Done(reply) => {
                // (the login line, with the master password, has been sent: wipe it)
                zeroize::Zeroize::zeroize(&mut b.out);
                let name = b.name.clone();
                tracing::info!(
                    "proxy: login: user={}, client={}, backend={name}, tls={}",
                    self.user(),
                    self.addr(),
                    io.tls_active()
                );
                io.send(&reply);
                self.phase = Phase::Relay;
                self.relay(io);
            }
        }
    }

    /// Asks the replicator to sync the user; false when there is none (or it cannot be
    /// asked: logged, nothing waits).
    fn start_sync(&mut self, io: &mut Io<'_>, why: &'static str) -> bool {
        let Some(user) = self.user.clone() else { return false };
        if !self.local_sync {
            // (a user of another pair: that pair's own proxy syncs it)
            return false;
        }
        let socket = Path::new(replica::SOCKET);
        if !socket.exists() {
            if !NO_REPLICATOR_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "proxy: no replicator ({}): changes are not synced to other replicas",
                    replica::SOCKET
                );
            }
            return false;
        }
        let started = ReplicaClient::start(socket, &ReplicaRequest::Sync { user }).and_then(|mut c| {
            let (registry, token) = io.aux_nth(SYNC);
            registry
                .register(c.source(), token, Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| format!("register: {e}"))?;
            Ok(c)
        });
        match started {
            Ok(client) => {
                let started = Instant::now();
                self.sync = Some(SyncAsk {
                    client,
                    started,
                    due: started + self.cfg.sync_timeout,
                    why,
                });
                true
            }
            Err(e) => {
                tracing::warn!("proxy: sync of {} {why}: {e}", self.user());
                false
            }
        }
    }

    fn pump_sync(&mut self, io: &mut Io<'_>) {
        let Some(s) = self.sync.as_mut() else { return };
        let reply = match s.client.progress() {
            Ok(None) => return,
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
        };
        self.sync_done(io, reply);
    }

    fn sync_done(&mut self, io: &mut Io<'_>, reply: Result<ReplicaReply, String>) {
        let Some(mut s) = self.sync.take() else { return };
        let _ = io.aux().0.deregister(s.client.source());
        let user = self.user().to_string();
        let ms = s.started.elapsed().as_millis();
        match reply {
            Ok(ReplicaReply::Synced { in_step, unreachable }) => {
                for (peer, reason) in &unreachable {
                    tracing::warn!("proxy: sync of {user} {}: peer {peer} not in step: {reason}", s.why);
                }
                if self.phase == Phase::Sync {
                    tracing::info!("proxy: synced {user} {} in {ms} ms with {in_step:?}", s.why);
                } else {
                    tracing::debug!("proxy: synced {user} {} in {ms} ms with {in_step:?}", s.why);
                }
            }
            Ok(ReplicaReply::Failed { reason }) => {
                tracing::warn!("proxy: sync of {user} {} failed after {ms} ms: {reason}", s.why)
            }
            Ok(other) => tracing::warn!("proxy: sync of {user}: unexpected reply {other:?}"),
            Err(e) => tracing::warn!("proxy: sync of {user} {}: {e}", s.why),
        }
        if self.phase == Phase::Sync {
            // the replicas are as in step as they get: now the backend session
            self.connect_next(io);
            return;
        }
        if self.holding {
            self.holding = false;
            let r = self.dialect.release();
            io.send(&r);
        }
        self.relay(io);
    }

    /// The backend connection is gone mid-session: the client is told and disconnected.
    fn lost(&mut self, io: &mut Io<'_>, why: &str) {
        let name = self.backend.as_ref().map(|b| b.name.clone()).unwrap_or_default();
        tracing::warn!(
            "proxy: backend {name} lost: {why} (user={}, client={})",
            self.user(),
            self.addr()
        );
        io.send(self.dialect.lost());
        io.close();
        self.phase = Phase::Done;
    }

    /// Between commands: when the director now places the user on another pair (`postern
    /// user move` switched it), the session ends with the shutdown words, so the client
    /// reconnects and is sent to the new pair. Returns whether it ended.
    fn moved(&mut self, io: &mut Io<'_>) -> bool {
        let (Some(d), Some(pair)) = (&self.cfg.director, self.pair) else {
            return false;
        };
        let between = self.phase == Phase::Relay
            && !self.holding
            && self.sync.is_none()
            && !self.dialect.outstanding()
            && self
                .backend
                .as_ref()
                .is_some_and(|b| b.inp.is_empty() && b.out.is_empty());
        if !between {
            return false;
        }
        let user = self.user().to_string();
        let now = match d.map.pair_of(&user) {
            Ok((i, _)) if i != pair => i,
            _ => return false,
        };
        let name = |i: usize| d.map.pairs().get(i).map(|p| p.name.clone()).unwrap_or_default();
        tracing::info!(
            "proxy: user={user} moved from pair {} to {}: session closed, client={} reconnects",
            name(pair),
            name(now),
            self.addr()
        );
        io.send(self.dialect.ending(Ending::Shutdown));
        io.close();
        self.phase = Phase::Done;
        true
    }

    /// Moves bytes both ways; returns whether anything moved.
    fn relay(&mut self, io: &mut Io<'_>) -> bool {
        if self.phase != Phase::Relay {
            return false;
        }
        let Some(b) = self.backend.as_mut() else { return false };
        let mut progress = false;
        // client -> backend (the backend's silence counts from the last byte sent)
        match self.dialect.client_input(io, &mut b.out, MAX_TO_BACKEND) {
            Ok(true) => {
                progress = true;
                b.last = Instant::now();
            }
            Ok(false) => {}
            Err(words) => {
                tracing::info!(
                    "proxy: protocol error from client={} user={}: {}",
                    self.addr(),
                    self.user(),
                    crate::dialect::shown(&words)
                );
                io.send(&words);
                io.close();
                self.phase = Phase::Done;
                return true;
            }
        }
        if let Err(e) = b.flush(io.aux().0) {
            self.lost(io, &format!("write: {e}"));
            return true;
        }
        // backend -> client (not read while the client has not read enough: then the
        // proxy waits for the client, not for the backend)
        if io.pending_output() >= OUTPUT_HIGH_WATER
            && let Some(b) = self.backend.as_mut()
        {
            b.last = Instant::now();
        }
        while !self.holding && io.pending_output() < OUTPUT_HIGH_WATER {
            let Some(b) = self.backend.as_mut() else { break };
            b.read(MAX_FROM_BACKEND);
            if b.inp.is_empty() {
                break;
            }
            let mut out = Vec::new();
            let room = OUTPUT_HIGH_WATER - io.pending_output();
            let r = self.dialect.backend_input(&mut b.inp, room, &mut out);
            io.send(&out);
            if let Some(bad) = r.bad {
                self.lost(io, &format!("protocol error: {bad}"));
                return true;
            }
            progress |= r.progress;
            if r.hold {
                if self.start_sync(io, "after a change") {
                    self.holding = true;
                } else {
                    let held = self.dialect.release();
                    io.send(&held);
                }
                progress = true;
            }
            if !r.progress {
                break;
            }
        }
        self.client_slow = io.pending_output() >= OUTPUT_HIGH_WATER;
        let Some(b) = self.backend.as_ref() else {
            return progress;
        };
        if b.eof && b.inp.is_empty() && !self.holding {
            if self.dialect.quitting() {
                io.close();
                self.phase = Phase::Done;
            } else {
                self.lost(io, "the backend closed the connection");
            }
            return true;
        }
        progress
    }
}

impl Protocol for ProxyConn {
    fn greeting(&mut self, io: &mut Io<'_>) {
        let g = self.dialect.greeting(&self.sec);
        io.send(&g);
    }

    fn handle(&mut self, io: &mut Io<'_>) -> bool {
        match self.phase {
            Phase::PreAuth => match self.dialect.preauth(io, &self.sec) {
                Pre::Wait => false,
                Pre::Done => true,
                Pre::StartTls => {
                    let started = self.cfg.tls.clone().is_some_and(|cfg| io.start_tls(cfg));
                    if started {
                        self.sec.tls = true;
                        self.sec.tls_available = false;
                    } else {
                        io.abort();
                    }
                    true
                }
                Pre::Verify { login, password } => {
                    self.start_auth(io, login, password);
                    true
                }
            },
            Phase::Relay => self.relay(io),
            _ => false,
        }
    }

    fn limits(&self) -> Limits {
        let output = if self.logged_in() {
            OUTPUT_HIGH_WATER
        } else {
            PRELOGIN_HIGH_WATER
        };
        Limits {
            input: 64 * 1024 + self.cfg.max_line + 2,
            output,
        }
    }

    fn line_limit(&self) -> usize {
        self.cfg.max_line + 2
    }

    fn waiting(&self) -> bool {
        match self.phase {
            Phase::Auth | Phase::Connect | Phase::Login | Phase::Sync => true,
            // (an answer the client does not read is not waited for: the idle deadline runs)
            Phase::Relay => self.holding || (self.dialect.outstanding() && !self.client_slow),
            Phase::PreAuth | Phase::Done => false,
        }
    }

    fn blocked(&self) -> bool {
        self.backend.as_ref().is_some_and(|b| b.out.len() >= MAX_TO_BACKEND)
    }

    fn secured(&mut self, io: &mut Io<'_>) {
        if let Some(t) = io.tls() {
            tracing::info!(
                "proxy: TLS established with {} ({} {})",
                self.addr(),
                t.version(),
                t.cipher()
            );
        }
    }

    fn may_stop(&self) -> bool {
        !self.holding && self.sync.is_none()
    }

    fn ending(&mut self, why: Ending, io: &mut Io<'_>) {
        if why == Ending::Login {
            tracing::info!("proxy: login timeout from {}", self.addr());
        }
        io.send(self.dialect.ending(why));
        io.close();
    }

    fn timer(&mut self, now: Instant, io: &mut Io<'_>) -> bool {
        if self.auth.as_ref().is_some_and(|(_, due)| now >= *due) {
            tracing::warn!("auth did not answer in time");
            self.drop_auth(io.aux().0);
            self.phase = Phase::PreAuth;
            let r = self
                .dialect
                .unavailable("Authentication is not available now, try again later");
            io.send(&r);
            return true;
        }
        if self.sync.as_ref().is_some_and(|s| now >= s.due) {
            self.sync_done(io, Err(format!("no answer in {}s", self.cfg.sync_timeout.as_secs())));
            return true;
        }
        if self.moved(io) {
            return true;
        }
        let timeout = self.cfg.backend_timeout;
        let silent = self
            .backend
            .as_ref()
            .is_some_and(|b| now.saturating_duration_since(b.last) >= timeout);
        match self.phase {
            Phase::Connect if now >= self.connect_due => {
                self.backend_failed(io, "connect: timed out");
                true
            }
            Phase::Login if silent => {
                self.backend_failed(io, &format!("no answer to the login in {}s", timeout.as_secs()));
                true
            }
            Phase::Relay
                if silent
                    && !self.holding
                    && self.dialect.outstanding()
                    && io.pending_output() < OUTPUT_HIGH_WATER
                    && self.backend.as_ref().is_some_and(|b| b.inp.is_empty()) =>
            {
                let name = self.backend.as_ref().map(|b| b.name.clone()).unwrap_or_default();
                tracing::warn!(
                    "proxy: backend {name} did not answer in {}s (user={}, client={})",
                    timeout.as_secs(),
                    self.user(),
                    self.addr()
                );
                io.send(self.dialect.backend_timeout());
                io.close();
                self.phase = Phase::Done;
                true
            }
            _ => false,
        }
    }

    fn disconnected(&mut self, registry: &mio::Registry) {
        self.drop_auth(registry);
        if let Some(mut s) = self.sync.take() {
            let _ = registry.deregister(s.client.source());
        }
        if let Some(mut b) = self.backend.take() {
            b.close(registry);
        }
        if self.user.is_some() {
            tracing::info!("proxy: disconnect: user={}, client={}", self.user(), self.addr());
        }
    }
}
