//! One client connection: the socket, TLS, the sans-I/O session, and the session's
//! connections to cleanup and auth. [`Conn::pump`] moves every byte that can move without
//! blocking, in a loop, until nothing more can; the loop calls it on every readiness event
//! of any of the three sockets and on timer ticks.
//!
//! Backpressure: the session is given no more input while the replies it produced have not
//! been read by the client (more than [`MAX_CLIENT_OUT`] bytes pending) or while cleanup
//! has not taken the content already sent (more than [`MAX_CLEANUP_OUT`]); the client's
//! socket is then not read either, so TCP flow control slows it down.

use super::known::Known;
use super::peer::PeerConn;
use super::tls;
use crate::protocol::{Action, ClientInfo, LookupResult, Session, VerifyResult};
use crate::settings::Settings;
use mio::net::TcpStream;
use postern_lib::line::LineBuffer;
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use postern_lib::proto::cleanup::{self, CleanupReply, CleanupRequest, CleanupStarted};
use rustls::ServerConnection;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
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

/// What an auth request in flight was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthAsk {
    Lookup,
    Verify,
}

/// A client connection.
pub struct Conn {
    /// The client's socket.
    pub sock: TcpStream,
    /// The client's address.
    pub ip: IpAddr,
    /// The client socket may have bytes to read (see [`PeerConn::readable`]).
    pub client_readable: bool,
    /// The client has closed its side (or the socket failed): read to the end, since no
    /// further event will come for the end of input.
    pub client_hup: bool,
    /// Whether the client socket is registered for writability too (only while replies
    /// wait for room; otherwise every segment the client acknowledges would wake us).
    pub write_interest: bool,
    tls: Option<ServerConnection>,
    tls_reported: bool,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    input: LineBuffer,
    out: Vec<u8>,
    session: Session,
    greeted: bool,
    /// The connection to cleanup for the message in progress.
    pub cleanup: Option<PeerConn>,
    /// Whether cleanup has named the queue ID ([`CleanupStarted`]) on `cleanup`.
    cleanup_started: bool,
    /// The connection to auth.
    pub auth: Option<PeerConn>,
    auth_ask: Option<AuthAsk>,
    /// The user of the lookup in flight, remembered in `known` if auth says it exists.
    lookup_user: Option<String>,
    /// Mailboxes auth said exist, shared by the process's connections.
    known: Rc<RefCell<Known>>,
    starttls_pending: bool,
    close_pending: bool,
    eof: bool,
    /// The connection is finished; the loop removes it.
    pub dead: bool,
    /// When the client must have sent its next command.
    deadline: Instant,
    /// When the message in progress must be complete.
    data_deadline: Option<Instant>,
    cfg: Arc<Settings>,
    /// Peer sockets whose registration changed (the loop (de)registers them).
    pub peers_changed: bool,
}

impl Conn {
    /// A new connection; `wrapper` starts TLS at once (smtps).
    pub fn new(
        sock: TcpStream,
        ip: IpAddr,
        cfg: Arc<Settings>,
        tls_config: Option<Arc<rustls::ServerConfig>>,
        known: Rc<RefCell<Known>>,
        now: Instant,
    ) -> Conn {
        let client = ClientInfo {
            addr: ip,
            name: "unknown".into(),
        };
        let session = Session::new(cfg.clone(), client, None);
        let mut c = Conn {
            sock,
            ip,
            client_readable: true,
            client_hup: false,
            write_interest: false,
            tls: None,
            tls_reported: false,
            tls_config,
            input: LineBuffer::new(cfg.line_limit, MAX_INPUT),
            out: Vec::new(),
            session,
            greeted: false,
            cleanup: None,
            cleanup_started: false,
            auth: None,
            auth_ask: None,
            lookup_user: None,
            known,
            starttls_pending: false,
            close_pending: false,
            eof: false,
            dead: false,
            deadline: now + cfg.timeout,
            data_deadline: None,
            cfg,
            peers_changed: false,
        };
        if c.cfg.tls_wrapper {
            c.begin_tls();
            c.tls_reported = false;
        } else {
            c.greeted = true;
            let a = c.session.start();
            c.apply(a);
        }
        c
    }

    fn begin_tls(&mut self) {
        let Some(cfg) = self.tls_config.clone() else {
            self.dead = true;
            return;
        };
        match ServerConnection::new(cfg) {
            Ok(t) => self.tls = Some(t),
            Err(e) => {
                tracing::warn!("TLS set-up for {}: {e}", self.ip);
                self.dead = true;
            }
        }
    }

    /// Performs the session's actions (and the actions their immediate outcomes produce).
    fn apply(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Send(b) => {
                    self.out.extend_from_slice(&b);
                    if !self.session.in_message() {
                        self.deadline = Instant::now() + self.cfg.timeout;
                    }
                }
                Action::StartTls => self.starttls_pending = true,
                Action::Close => self.close_pending = true,
                Action::Lookup(user) => {
                    if self.known.borrow_mut().exists(&user, Instant::now()) {
                        queue.extend(self.session.lookup_done(LookupResult::Exists));
                        continue;
                    }
                    self.lookup_user = Some(user.clone());
                    if let Some(more) = self.auth_request(AuthRequest::Lookup { user }, AuthAsk::Lookup) {
                        queue.extend(more);
                    }
                }
                Action::Verify { user, password } => {
                    let req = AuthRequest::Verify {
                        user,
                        password: password.to_string(),
                        service: self.cfg.service.clone(),
                        client: Some(self.ip.to_string()),
                    };
                    if let Some(more) = self.auth_request(req, AuthAsk::Verify) {
                        queue.extend(more);
                    }
                }
                Action::Begin(sub) => {
                    self.data_deadline = Some(Instant::now() + self.cfg.data_timeout);
                    let opened = PeerConn::connect(Path::new(cleanup::SOCKET), cleanup::PROTOCOL, cleanup::VERSION)
                        .and_then(|mut p| {
                            p.send(&CleanupRequest::Open(*sub)).map_err(|e| e.to_string())?;
                            // Due: the queue ID (CleanupStarted), later the outcome.
                            p.reply_due = Some(Instant::now() + self.cfg.timeout);
                            Ok(p)
                        });
                    match opened {
                        Ok(p) => {
                            self.cleanup = Some(p);
                            self.cleanup_started = false;
                            self.peers_changed = true;
                        }
                        Err(e) => {
                            tracing::warn!("cleanup: {e}");
                            queue.extend(self.session.cleanup_done(None));
                        }
                    }
                }
                Action::Data(bytes) => {
                    if let Some(p) = self.cleanup.as_mut()
                        && postern_lib::ipc::codec::Encoder::data(&bytes, &mut p.out).is_err()
                    {
                        self.cleanup = None;
                        self.peers_changed = true;
                        queue.extend(self.session.cleanup_done(None));
                    }
                }
                Action::End => match self.cleanup.as_mut() {
                    Some(p) => {
                        let _ = postern_lib::ipc::codec::Encoder::end(&mut p.out);
                        p.reply_due = Some(Instant::now() + self.cfg.timeout);
                    }
                    None => queue.extend(self.session.cleanup_done(None)),
                },
                Action::Abort => {
                    if self.cleanup.take().is_some() {
                        self.peers_changed = true;
                    }
                    self.data_deadline = None;
                }
            }
        }
    }

    /// Sends an auth request; returns the session's actions if it failed at once.
    fn auth_request(&mut self, req: AuthRequest, ask: AuthAsk) -> Option<Vec<Action>> {
        if self.auth.is_none() {
            match PeerConn::connect(Path::new(auth::SOCKET), auth::PROTOCOL, auth::VERSION) {
                Ok(p) => {
                    self.auth = Some(p);
                    self.peers_changed = true;
                }
                Err(e) => {
                    tracing::warn!("auth: {e}");
                    return Some(self.auth_failed(ask));
                }
            }
        }
        let p = self.auth.as_mut()?;
        if p.send(&req).is_err() {
            self.auth = None;
            self.peers_changed = true;
            return Some(self.auth_failed(ask));
        }
        p.reply_due = Some(Instant::now() + self.cfg.timeout);
        self.auth_ask = Some(ask);
        None
    }

    fn auth_failed(&mut self, ask: AuthAsk) -> Vec<Action> {
        self.auth_ask = None;
        self.lookup_user = None;
        match ask {
            AuthAsk::Lookup => self.session.lookup_done(LookupResult::TempFail),
            AuthAsk::Verify => self.session.verify_done(VerifyResult::TempFail),
        }
    }

    /// Moves everything that can move now.
    pub fn pump(&mut self, now: Instant) {
        let mut rounds = 0;
        while !self.dead && rounds < 1000 {
            rounds += 1;
            let mut progress = self.flush_client();
            progress |= self.pump_cleanup();
            progress |= self.pump_auth();
            progress |= self.tls_progress();
            if self.can_read() {
                progress |= self.read_client(now);
            }
            progress |= self.run_session();
            if self.close_pending && self.out.is_empty() && self.tls.as_ref().is_none_or(|t| !t.wants_write()) {
                self.finish();
            }
            if self.eof && !self.dead {
                let a = self.session.disconnected();
                self.apply(a);
                self.finish();
            }
            if !progress {
                break;
            }
        }
    }

    fn finish(&mut self) {
        if let Some(t) = self.tls.as_mut() {
            t.send_close_notify();
            let _ = t.write_tls(&mut self.sock);
        }
        if self.cleanup.take().is_some() || self.auth.take().is_some() {
            self.peers_changed = true;
        }
        self.auth = None;
        self.dead = true;
    }

    /// Whether bytes wait for room in the client socket.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    fn can_read(&self) -> bool {
        !self.eof
            && !self.close_pending
            && !self.starttls_pending
            && self.out.len() < MAX_CLIENT_OUT
            && self.cleanup.as_ref().is_none_or(|c| c.out.len() < MAX_CLEANUP_OUT)
    }

    /// Feeds buffered input to the session.
    fn run_session(&mut self) -> bool {
        if !self.greeted || self.session.is_waiting() || self.input.pending_len() == 0 {
            return false;
        }
        if self.out.len() >= MAX_CLIENT_OUT || self.cleanup.as_ref().is_some_and(|c| c.out.len() >= MAX_CLEANUP_OUT) {
            return false;
        }
        let before = self.input.pending_len();
        let actions = self.session.process(&mut self.input);
        let progress = !actions.is_empty() || self.input.pending_len() != before;
        self.apply(actions);
        if !self.session.in_message() {
            self.data_deadline = None;
        }
        progress
    }

    /// Writes pending replies (through TLS when active).
    fn flush_client(&mut self) -> bool {
        let mut progress = false;
        match self.tls.as_mut() {
            None => {
                while !self.out.is_empty() {
                    match self.sock.write(&self.out) {
                        Ok(0) => {
                            self.eof = true;
                            break;
                        }
                        Ok(n) => {
                            self.out.drain(..n);
                            progress = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            self.eof = true;
                            break;
                        }
                    }
                }
                if self.out.is_empty() && self.starttls_pending {
                    self.starttls_pending = false;
                    // Bytes that came after STARTTLS were sent in the clear: drop them.
                    let stale = self.input.take_pending();
                    if !stale.is_empty() {
                        tracing::warn!("{}: {} bytes pipelined after STARTTLS discarded", self.ip, stale.len());
                    }
                    self.begin_tls();
                    progress = true;
                }
            }
            Some(t) => loop {
                if !t.is_handshaking() && !t.wants_write() && !self.out.is_empty() {
                    match t.writer().write(&self.out) {
                        Ok(n) if n > 0 => {
                            self.out.drain(..n);
                            progress = true;
                        }
                        _ => {}
                    }
                }
                if !t.wants_write() {
                    break;
                }
                match t.write_tls(&mut self.sock) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(_) => progress = true,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.eof = true;
                        break;
                    }
                }
            },
        }
        progress
    }

    /// Reports a completed handshake to the session (and greets, for smtps).
    fn tls_progress(&mut self) -> bool {
        let Some(t) = self.tls.as_ref() else { return false };
        if self.tls_reported || t.is_handshaking() {
            return false;
        }
        self.tls_reported = true;
        let info = tls::info(t);
        tracing::info!("{}: TLS established ({} {})", self.ip, info.version, info.cipher);
        let mut a = self.session.tls_started(info);
        if !self.greeted {
            self.greeted = true;
            a.extend(self.session.start());
        }
        self.apply(a);
        true
    }

    /// Reads from the client into the input buffer.
    fn read_client(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let mut buf = [0u8; 16384];
        loop {
            let space = self.input.free_space().min(buf.len());
            if space == 0 {
                break;
            }
            let Some(slot) = buf.get_mut(..space) else { break };
            let got = match self.tls.as_mut() {
                None if !self.client_readable => break,
                None => {
                    let got = self.sock.read(slot);
                    // A short read drained the socket: the next arrival is a new event.
                    if !self.client_hup && got.as_ref().is_ok_and(|&n| n > 0 && n < space) {
                        self.client_readable = false;
                    }
                    got
                }
                Some(t) => {
                    match t.reader().read(slot) {
                        Ok(n) => Ok(n),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            // No plaintext buffered: read more ciphertext.
                            match t.read_tls(&mut self.sock) {
                                Ok(0) => Ok(0),
                                Ok(_) => match t.process_new_packets() {
                                    Ok(_) => {
                                        progress = true;
                                        continue;
                                    }
                                    Err(e) => {
                                        tracing::warn!("{}: TLS error: {e}", self.ip);
                                        let _ = t.write_tls(&mut self.sock);
                                        Err(std::io::Error::other(e))
                                    }
                                },
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match got {
                Ok(0) => {
                    self.eof = true;
                    progress = true;
                    break;
                }
                Ok(n) => {
                    if self.input.push(slot.get(..n).unwrap_or_default()).is_err() {
                        break;
                    }
                    progress = true;
                    if self.session.in_message() {
                        self.deadline = now + self.cfg.timeout;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if self.tls.is_none() {
                        self.client_readable = false;
                    }
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.eof = true;
                    progress = true;
                    break;
                }
            }
        }
        progress
    }

    fn pump_cleanup(&mut self) -> bool {
        let Some(p) = self.cleanup.as_mut() else { return false };
        let r = p.pump();
        let mut progress = r.progress;
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
                let a = self.session.cleanup_started(Some(started.queue_id));
                self.apply(a);
                progress = true;
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
            && self.cleanup.take().is_some()
        {
            self.peers_changed = true;
            self.data_deadline = None;
            let a = self.session.cleanup_done(o);
            self.apply(a);
            progress = true;
        }
        progress
    }

    fn pump_auth(&mut self) -> bool {
        let Some(p) = self.auth.as_mut() else { return false };
        let r = p.pump();
        let mut progress = r.progress;
        if let Some(f) = r.frames.first() {
            p.reply_due = None;
            let reply = f.message::<AuthReply>().ok();
            let ask = self.auth_ask.take();
            let user = self.lookup_user.take();
            let a = match (ask, reply) {
                (Some(AuthAsk::Lookup), Some(AuthReply::Exists { .. })) => {
                    if let Some(u) = user {
                        self.known.borrow_mut().insert(&u, Instant::now());
                    }
                    self.session.lookup_done(LookupResult::Exists)
                }
                (Some(AuthAsk::Lookup), Some(AuthReply::NoSuchUser)) => {
                    self.session.lookup_done(LookupResult::NoSuchUser)
                }
                (Some(AuthAsk::Verify), Some(AuthReply::Ok { user })) => {
                    self.session.verify_done(VerifyResult::Ok(user))
                }
                (Some(AuthAsk::Verify), Some(AuthReply::Fail { .. })) => self.session.verify_done(VerifyResult::Fail),
                (Some(ask), _) => self.auth_failed(ask),
                (None, _) => Vec::new(),
            };
            self.apply(a);
            progress = true;
        } else if let Some(e) = r.failed {
            tracing::warn!("auth connection: {e}");
            self.auth = None;
            self.peers_changed = true;
            if let Some(ask) = self.auth_ask.take() {
                let a = self.auth_failed(ask);
                self.apply(a);
            }
            progress = true;
        }
        progress
    }

    /// Timers: the command timeout, the DATA deadline, replies due from peers.
    pub fn tick(&mut self, now: Instant) {
        if self.dead {
            return;
        }
        if let Some(p) = self.cleanup.as_ref()
            && p.reply_due.is_some_and(|d| now >= d)
        {
            tracing::warn!("cleanup did not answer in time");
            self.cleanup = None;
            self.peers_changed = true;
            let a = self.session.cleanup_done(None);
            self.apply(a);
        }
        if let Some(p) = self.auth.as_ref()
            && p.reply_due.is_some_and(|d| now >= d)
        {
            tracing::warn!("auth did not answer in time");
            self.auth = None;
            self.peers_changed = true;
            if let Some(ask) = self.auth_ask.take() {
                let a = self.auth_failed(ask);
                self.apply(a);
            }
        }
        let waiting_peer = self.auth_ask.is_some() || self.cleanup.as_ref().is_some_and(|c| c.reply_due.is_some());
        let data_expired = self.data_deadline.is_some_and(|d| now >= d);
        if !self.close_pending && !waiting_peer && (now >= self.deadline || data_expired) {
            tracing::info!(
                "timeout after {} from unknown[{}]",
                if data_expired { "DATA" } else { "command" },
                self.ip
            );
            if !self.greeted {
                // TLS handshake never finished (smtps).
                self.finish();
                return;
            }
            let a = self.session.timeout();
            self.apply(a);
            self.data_deadline = None;
        }
        if self.close_pending && now >= self.deadline + self.cfg.timeout {
            // The client does not read our last reply either.
            self.finish();
        }
        self.pump(now);
    }

    /// The process is stopping: end an idle session politely.
    pub fn stop(&mut self, now: Instant) {
        if !self.session.in_message() && !self.session.is_waiting() && self.greeted {
            self.out.extend_from_slice(
                format!(
                    "421 4.3.2 {} Service shutting down, closing transmission channel\r\n",
                    self.cfg.hostname
                )
                .as_bytes(),
            );
            self.close_pending = true;
        }
        self.pump(now);
    }
}
