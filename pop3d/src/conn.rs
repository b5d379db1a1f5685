//! The connection layer: mio sockets, TLS ([`postern_lib::tls::TlsSession`]), the auth
//! round trip ([`postern_lib::proto::auth_client::AuthClient`]) and timeouts around the sans-I/O
//! [`Session`]. Token `2·id` is the client socket, `2·id+1` its auth request, [`ANVIL`]
//! the process's connection to anvil.
//!
//! Before a session starts, its client address is counted by anvil over all pop3d
//! processes of the service (`login_client_connection_count_limit` connections not yet
//! logged in per address; in-process while anvil is away): the connection over the limit
//! gets `-ERR [SYS/TEMP]` and is closed. A session's count is given back at login.

use crate::maildrop::{Maildrop, OpenError};
use crate::retrieve::Retrieval;
use crate::session::{Action, MAX_LINE, Security, Session, err};
use mio::net::TcpStream;
use mio::{Interest, Token};
use postern_lib::anvil::gate::{Decision, Gate, Ticket, refuse_login_client};
use postern_lib::anvil::local::Refusal;
use postern_lib::config::Cidr;
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use postern_lib::proto::auth_client::AuthClient;
use postern_lib::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use postern_lib::skeleton::{Accepted, Context, Peer, Stream};
use postern_lib::tls::TlsSession;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The connection to anvil (client tokens stay below it).
const ANVIL: Token = Token(RESERVED_TOKENS - 1);
/// The process's waker: connections that used up their turn go on after the others.
const WAKER: Token = Token(RESERVED_TOKENS - 2);
/// Rounds of reading, streaming and writing one connection gets per turn (a round sends
/// up to about [`OUTPUT_HIGH_WATER`]); a client reading a large message fast then waits
/// behind the other connections' events instead of holding the process for all of it.
const ROUNDS_PER_TURN: usize = 8;

/// Unsent bytes above which the session stops reading commands until the client reads.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// The same before login: a client that sends CAPA after CAPA without reading the
/// answers makes the process hold no more than this (plus one reply).
pub const PRELOGIN_HIGH_WATER: usize = 16 * 1024;

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

struct Conn {
    sock: TcpStream,
    peer: Option<SocketAddr>,
    tls: Option<TlsSession>,
    raw: Vec<u8>,
    input: Vec<u8>,
    out: Vec<u8>,
    session: Session,
    /// A RETR or TOP answer being sent as the client reads.
    stream: Option<Box<Retrieval>>,
    auth: Option<(AuthClient, String)>,
    last: Instant,
    /// When the connection was accepted: the login deadline runs from here.
    born: Instant,
    closing: bool,
    dead: bool,
    /// The per-address count of a connection not yet logged in, given back at login.
    ticket: Option<Ticket>,
}

/// All connections of one pop3d process.
pub struct Pop3 {
    settings: Settings,
    conns: HashMap<usize, Conn>,
    next: usize,
    /// New connections waiting for anvil's count.
    gate: Gate<Accepted>,
    waker: Option<mio::Waker>,
    /// Connections that used up their turn with work left, driven again on the waker.
    again: Vec<usize>,
}

impl Pop3 {
    /// A new service.
    pub fn new(settings: Settings) -> Pop3 {
        let gate = Gate::new(&settings.service, ANVIL, settings.login_limit, 0);
        Pop3 {
            settings,
            conns: HashMap::new(),
            next: 0,
            gate,
            waker: None,
            again: Vec::new(),
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

    fn id(&mut self) -> usize {
        loop {
            let id = self.next;
            self.next = (self.next + 1) % (RESERVED_TOKENS / 2 - 1);
            if !self.conns.contains_key(&id) {
                return id;
            }
        }
    }

    /// Reads, handles complete command lines, writes; repeats while that made progress
    /// (edge-triggered readiness: input left in the socket or the buffers must be used
    /// now, no second event will announce it).
    fn drive(&mut self, lp: &EventLoop<'_>, id: usize) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let mut rounds = 0;
        let mut more = false;
        loop {
            let progress = read_socket(c) + stream_message(c) + process_lines(lp, &self.settings, id, c) + flush(c);
            if c.dead || progress == 0 {
                break;
            }
            rounds += 1;
            if rounds == ROUNDS_PER_TURN {
                more = true;
                break;
            }
        }
        if c.dead || (c.closing && c.out.is_empty()) {
            self.close(lp, id);
        } else if more {
            self.later(lp, id);
        }
    }

    /// Queues a connection with work left for after the events waiting now.
    fn later(&mut self, lp: &EventLoop<'_>, id: usize) {
        if !self.again.contains(&id) {
            self.again.push(id);
        }
        if self.waker.is_none() {
            match mio::Waker::new(lp.registry(), WAKER) {
                Ok(w) => self.waker = Some(w),
                Err(e) => tracing::warn!("waker: {e}"),
            }
        }
        // without a waker the next tick goes on with it
        if let Some(w) = &self.waker
            && let Err(e) = w.wake()
        {
            tracing::warn!("waker: {e}");
        }
    }

    fn auth_event(&mut self, lp: &EventLoop<'_>, id: usize) {
        let Some(c) = self.conns.get_mut(&id) else { return };
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
                    tracing::info!("login: user={account}, client={client_addr}, tls={}", c.tls.is_some());
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
        apply(lp, &self.settings, id, c, acts);
        // logged in: no longer counted against the address's pre-login limit
        if c.session.user.is_some()
            && let Some(t) = c.ticket.take()
        {
            self.gate.release(lp.registry(), t, Instant::now());
        }
        self.drive(lp, id);
    }

    fn close(&mut self, lp: &EventLoop<'_>, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = lp.registry().deregister(&mut c.sock);
            if let Some((mut a, _)) = c.auth.take() {
                let _ = lp.registry().deregister(a.source());
            }
            if let Some(t) = c.ticket {
                self.gate.release(lp.registry(), t, Instant::now());
            }
        }
    }
}

/// Handles complete lines; returns how many.
fn process_lines(lp: &EventLoop<'_>, settings: &Settings, id: usize, c: &mut Conn) -> usize {
    let mut handled = 0;
    loop {
        let high_water = if c.session.user.is_some() {
            OUTPUT_HIGH_WATER
        } else {
            PRELOGIN_HIGH_WATER
        };
        if c.dead || c.closing || c.stream.is_some() || !c.session.ready() || c.out.len() > high_water {
            return handled;
        }
        let Some(pos) = c.input.iter().position(|&b| b == b'\n') else {
            if c.input.len() >= MAX_LINE {
                log_too_long(c);
                let acts = c.session.line_too_long();
                apply(lp, settings, id, c, acts);
            }
            return handled;
        };
        let mut line: Vec<u8> = c.input.drain(..=pos).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() >= MAX_LINE {
            log_too_long(c);
            let acts = c.session.line_too_long();
            apply(lp, settings, id, c, acts);
            return handled + 1;
        }
        handled += 1;
        c.last = Instant::now();
        let acts = c.session.command(&line);
        zeroize::Zeroize::zeroize(&mut line);
        apply(lp, settings, id, c, acts);
    }
}

/// Goes on with a RETR or TOP answer while little output waits; returns the bytes
/// added. A read error half way cannot be answered (the `+OK` is out): logged, and the
/// connection closes.
fn stream_message(c: &mut Conn) -> usize {
    let mut added = 0;
    while let Some(r) = c.stream.as_mut() {
        if c.dead || c.out.len() > OUTPUT_HIGH_WATER {
            break;
        }
        let mut part = Vec::new();
        if let Err(e) = r.fill(&mut part) {
            let addr = c.peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "local".into());
            tracing::warn!(
                "read {} for {addr}, user={}: {e}",
                r.what,
                c.session.user.as_deref().unwrap_or("-")
            );
            c.stream = None;
            c.dead = true;
            break;
        }
        if r.done() {
            c.stream = None;
        }
        added += part.len();
        send(c, &part);
    }
    added
}

/// The log line of a command line over [`MAX_LINE`] (the connection closes).
fn log_too_long(c: &Conn) {
    let when = if c.session.user.is_some() { "" } else { " before login" };
    let addr = c.peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "local".into());
    tracing::info!("command line too long{when} from {addr}");
}

/// Reads what the socket has (bounded); returns how many bytes.
fn read_socket(c: &mut Conn) -> usize {
    let mut buf = [0u8; 8192];
    let mut total = 0;
    loop {
        let pending = if c.tls.is_some() { c.raw.len() } else { c.input.len() };
        if pending >= MAX_LINE * 4 {
            break;
        }
        match c.sock.read(&mut buf) {
            Ok(0) => {
                c.dead = true;
                break;
            }
            Ok(n) => {
                total += n;
                let got = buf.get(..n).unwrap_or_default();
                if c.tls.is_some() {
                    c.raw.extend_from_slice(got);
                } else {
                    c.input.extend_from_slice(got);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.dead = true;
                break;
            }
        }
    }
    if let Some(tls) = &mut c.tls {
        match tls.receive(&c.raw, &mut c.input, MAX_LINE * 4) {
            Ok(used) => {
                c.raw.drain(..used);
            }
            Err(e) => {
                tracing::info!("TLS error from {:?}: {e}", c.peer);
                tls.transmit(&mut c.out);
                c.closing = true;
                c.input.clear();
            }
        }
        tls.transmit(&mut c.out);
    }
    total
}

fn send(c: &mut Conn, bytes: &[u8]) {
    match &mut c.tls {
        Some(tls) => {
            if tls.send(bytes).is_err() {
                c.dead = true;
            }
            tls.transmit(&mut c.out);
        }
        None => c.out.extend_from_slice(bytes),
    }
}

fn apply(lp: &EventLoop<'_>, settings: &Settings, id: usize, c: &mut Conn, acts: Vec<Action>) {
    for act in acts {
        match act {
            Action::Send(bytes) => send(c, &bytes),
            Action::Stream(r) => c.stream = Some(r),
            Action::Close => {
                if let Some(tls) = &mut c.tls {
                    tls.close();
                    tls.transmit(&mut c.out);
                }
                c.closing = true;
            }
            Action::StartTls => match settings.tls.as_ref().map(|cfg| TlsSession::new(Arc::clone(cfg))) {
                Some(Ok(t)) => {
                    // Anything pipelined after STLS was sent in the clear: drop it.
                    c.input.clear();
                    flush(c);
                    c.tls = Some(t);
                    c.session.security.tls = true;
                    c.session.security.tls_available = false;
                }
                _ => c.dead = true,
            },
            Action::Verify { user, password } => {
                let req = AuthRequest::Verify {
                    user: user.clone(),
                    password: password.to_string(),
                    service: "pop3".into(),
                    client: c.peer.map(|p| p.ip().to_string()),
                };
                let started = AuthClient::start(std::path::Path::new(auth::SOCKET), &req);
                if let AuthRequest::Verify { mut password, .. } = req {
                    zeroize::Zeroize::zeroize(&mut password);
                }
                match started {
                    Ok(mut client) => {
                        let token = Token(2 * id + 1);
                        if lp
                            .registry()
                            .register(client.source(), token, Interest::READABLE | Interest::WRITABLE)
                            .is_err()
                        {
                            c.dead = true;
                        } else {
                            c.auth = Some((client, user));
                        }
                    }
                    Err(e) => {
                        tracing::warn!("{e}");
                        let acts = c.session.auth_done(Err(err(
                            "[SYS/TEMP] Authentication is not available now, try again later",
                        )));
                        for a in acts {
                            if let Action::Send(b) = a {
                                send(c, &b);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Writes what is queued; returns how many bytes went out.
fn flush(c: &mut Conn) -> usize {
    let mut total = 0;
    while total < c.out.len() {
        match c.sock.write(c.out.get(total..).unwrap_or_default()) {
            Ok(0) => {
                c.dead = true;
                break;
            }
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.dead = true;
                break;
            }
        }
    }
    // One move of the rest per call, not one per write.
    c.out.drain(..total);
    total
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
        if event.token() == WAKER {
            for id in std::mem::take(&mut self.again) {
                self.drive(lp, id);
            }
            return;
        }
        let t = event.token().0;
        if t % 2 == 1 {
            self.auth_event(lp, t / 2);
        } else {
            self.drive(lp, t / 2);
        }
    }

    fn tick(&mut self, lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        let decisions = self.gate.tick(lp.registry(), now);
        self.decide(lp, decisions);
        self.timeouts(lp, now);
        // in case the waker failed
        for id in std::mem::take(&mut self.again) {
            self.drive(lp, id);
        }
    }

    fn connections(&self) -> usize {
        self.conns.len() + self.gate.pending()
    }

    fn stop(&mut self, lp: &EventLoop<'_>, _ctx: &Context) {
        // Clients still waiting for anvil have not been greeted: just close them.
        self.gate.clear_pending();
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                send(c, b"-ERR Server shutting down\r\n");
                flush(c);
            }
            self.close(lp, id);
        }
    }
}

impl Pop3 {
    /// Starts the session of an admitted client: greeting and all.
    fn start(&mut self, lp: &EventLoop<'_>, conn: Accepted, ticket: Option<Ticket>) {
        let give_back = |gate: &mut Gate<Accepted>| {
            if let Some(t) = ticket {
                gate.release(lp.registry(), t, Instant::now());
            }
        };
        let Stream::Tcp(std_sock) = conn.stream else {
            return give_back(&mut self.gate);
        };
        if std_sock.set_nonblocking(true).is_err() {
            return give_back(&mut self.gate);
        }
        let peer = match conn.peer {
            Peer::Inet(a) => Some(a),
            Peer::Unix => None,
        };
        let trusted = peer.is_some_and(|p| self.settings.secure_networks.iter().any(|n| n.contains(p.ip())));
        let mut sock = TcpStream::from_std(std_sock);
        let id = self.id();
        if lp
            .registry()
            .register(&mut sock, Token(2 * id), Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            return give_back(&mut self.gate);
        }
        let tls = if self.settings.implicit_tls {
            match self.settings.tls.as_ref().map(|cfg| TlsSession::new(Arc::clone(cfg))) {
                Some(Ok(t)) => Some(t),
                _ => {
                    let _ = lp.registry().deregister(&mut sock);
                    return give_back(&mut self.gate);
                }
            }
        } else {
            None
        };
        let security = Security {
            tls: tls.is_some(),
            tls_available: self.settings.tls.is_some() && tls.is_none(),
            plaintext_ok: self.settings.allow_plaintext || trusted,
        };
        let session = Session::new(security);
        let mut c = Conn {
            sock,
            peer,
            tls,
            raw: Vec::new(),
            input: Vec::new(),
            out: Vec::new(),
            session,
            stream: None,
            auth: None,
            last: Instant::now(),
            born: Instant::now(),
            closing: false,
            dead: false,
            ticket,
        };
        if let Action::Send(g) = c.session.greeting() {
            send(&mut c, &g);
        }
        self.conns.insert(id, c);
        self.drive(lp, id);
    }

    /// The login deadline and the idle timeout.
    fn timeouts(&mut self, lp: &EventLoop<'_>, now: Instant) {
        // Before login a hard deadline from the connection's start: commands (CAPA every
        // few seconds), bytes or a pending password check do not extend it.
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.session.user.is_none() && now.saturating_duration_since(c.born) > self.settings.login_timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(c) = self.conns.get_mut(&id) {
                tracing::info!(
                    "login timeout from {}: not logged in within {}s",
                    c.peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "local".into()),
                    self.settings.login_timeout.as_secs()
                );
                send(c, b"-ERR Disconnected: no login in time\r\n");
                flush(c);
            }
            self.close(lp, id);
        }
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.auth.is_none() && now.saturating_duration_since(c.last) > self.settings.timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if let Some(c) = self.conns.get_mut(&id) {
                send(c, b"-ERR Autologout; idle for too long\r\n");
                flush(c);
            }
            self.close(lp, id);
        }
    }
}
