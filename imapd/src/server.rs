//! The event-loop side of imapd: sockets, buffers, timeouts and the auth daemon, around
//! the sans-I/O [`Session`]. Password checks go to the auth daemon (`private/auth`) from a
//! short-lived thread per attempt, so a slow or throttled answer never stalls the loop;
//! the answer comes back through a channel and a [`mio::Waker`].
//!
//! Before a session starts, its client address is counted by anvil over all imapd
//! processes of the service (`login_client_connection_count_limit` connections not yet
//! logged in per address; in-process while anvil is away): the connection over the limit
//! gets `* BYE [UNAVAILABLE]` and is closed. A session's count is given back at login.

use crate::literal_budget::LiteralBudget;
use crate::session::{Account, LoginFailure, Need, Session, Settings};
use mio::net::TcpStream;
use mio::{Interest, Token, Waker};
use postern_lib::anvil::gate::{Decision, Gate, Ticket, refuse_login_client};
use postern_lib::anvil::local::Refusal;
use postern_lib::ipc::IpcStream;
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use postern_lib::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use postern_lib::skeleton::{Accepted, Context, Peer, Stream};
use postern_lib::tls::TlsSession;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
/// The connection to anvil (client connections count up from 1).
const ANVIL: Token = Token(RESERVED_TOKENS - 1);
/// The inotify descriptor watching the selected folders
/// ([`postern_lib::mailbox::shared`]).
const WATCH: Token = Token(RESERVED_TOKENS - 2);
/// Most unsent output held for one client before reading from it pauses.
const MAX_PENDING_OUT: usize = 4 * 1024 * 1024;
/// A paused FETCH goes on once less than this is waiting to be written.
const RESUME_BELOW: usize = 256 * 1024;
/// Most ciphertext (or plaintext per step) taken from one client at a time.
const MAX_RAW: usize = 256 * 1024;
/// Before login: most unsent output held for one client before reading from it pauses
/// (a client that pipelines CAPABILITY without reading the answers gets no more).
const PRELOGIN_MAX_OUT: usize = 16 * 1024;
/// Before login: bytes read from the socket per step, and ciphertext held (one TLS
/// record fits). With the session's pre-login line and literal bounds, these bound what an
/// unauthenticated connection can make the process hold (see [`Imapd`]).
const PRELOGIN_READ: usize = 1024;
const PRELOGIN_MAX_RAW: usize = 24 * 1024;
/// Work one connection gets per turn: reads from its socket, and rounds of a paused
/// command or of pipelined commands (each about [`crate::session::OUTPUT_PAUSE`] of
/// output). A connection with more to do then waits behind the others' events (see
/// [`Imapd::again`]), so a client pipelining heavy commands delays nobody else by more
/// than a turn.
const READS_PER_TURN: usize = 8;
const ROUNDS_PER_TURN: usize = 1;

struct Conn {
    sock: TcpStream,
    session: Session,
    /// Bytes to write to the socket (ciphertext once TLS is on).
    out: OutBuf,
    /// TLS, once STARTTLS succeeded or from the start (imaps).
    tls: Option<TlsSession>,
    /// Ciphertext read but not yet taken by TLS.
    raw: Vec<u8>,
    last: Instant,
    /// When the connection was accepted: the login deadline runs from here.
    born: Instant,
    peer: String,
    counted_user: Option<String>,
    /// The per-address count of a connection not yet logged in, given back at login.
    ticket: Option<Ticket>,
}

/// The imapd service.
///
/// Memory bound per process: at most `max_conns` (master.toml, default
/// `default_connection_limit`, 200) connections; before login each holds at most
/// [`crate::session::PRELOGIN_MAX_LINE`] plus one read ([`PRELOGIN_READ`]) of unparsed
/// input, one command of up to a line and two [`crate::session::PRELOGIN_MAX_LITERAL`]
/// literals, [`PRELOGIN_MAX_OUT`] plus one read's answers of output (about 40 KB) and
/// [`PRELOGIN_MAX_RAW`] of ciphertext: under 100 KB, plus rustls' own buffers with TLS;
/// and it must log in within `imapd_login_timeout` of connecting, however much it sends.
/// With `maxproc` processes (which master holds, see `master/src/supervisor.rs`) that
/// bounds what unauthenticated clients can make a service hold, however many they are.
///
/// After login: the literals held in memory by all sessions together fit
/// `imapd_literal_memory_limit` ([`LiteralBudget`], reserved when announced); APPEND
/// literals over [`crate::session::SPOOL_ABOVE`] (64 KB) are not among them: they go to
/// the folder's `tmp/` as they arrive ([`crate::append_spool`]) and cost a read. The one
/// command running at a time adds its parsed copy (up to `imapd_max_literal` plus a
/// line, for a command with a literal held in memory, and what its command file makes of
/// it). Each connection holds besides at most a line and a read (256 KB with TLS) of
/// unparsed input, 256 KB of ciphertext, and output: commands stop running at
/// [`crate::session::OUTPUT_PAUSE`] of unread output and go on below 256 KB
/// (`RESUME_BELOW`), so about 512 KB plus one command's answer — for FETCH at most
/// [`crate::cmd_fetch::FETCH_CHUNK`] plus 128 KB (a whole-message body over
/// [`crate::cmd_fetch::STREAM_ABOVE`] is streamed from its file), or for a message under
/// that size its response ([`crate::cmd_fetch::MAX_PER_MESSAGE`] times its size). Items
/// that take a large message apart (BODYSTRUCTURE, `BODY[1]`, BINARY) read it into
/// memory for its turn; the parts they answer stay until the client has read them. So:
///
/// `max_conns × (about 2 MB + parts answered of one message)
///   + imapd_literal_memory_limit + imapd_max_literal + what one command makes`.
pub struct Imapd {
    settings: Settings,
    conns: HashMap<usize, Conn>,
    next: usize,
    waker: Option<Arc<Waker>>,
    tx: Sender<(usize, Result<Account, LoginFailure>)>,
    rx: Receiver<(usize, Result<Account, LoginFailure>)>,
    per_user: HashMap<String, u32>,
    user_limit: u32,
    timeout: Duration,
    login_timeout: Duration,
    auth_socket: std::path::PathBuf,
    tls_config: Option<Arc<ServerConfig>>,
    implicit_tls: bool,
    /// New connections waiting for anvil's count.
    gate: Gate<Accepted>,
    login_limit: u32,
    /// `imapd_secure_networks`: clients whose cleartext LOGIN is taken without TLS.
    secure_networks: Vec<postern_lib::config::Cidr>,
    /// `imapd_literal_memory_limit`, shared by the sessions.
    literal_budget: LiteralBudget,
    /// Connections that used up their turn with work left: pumped again once the events
    /// already waiting have been handled (the waker brings the loop back).
    again: Vec<usize>,
    /// The folder watch was set up (or found unavailable).
    watching: bool,
}

impl Imapd {
    /// A service from the skeleton's context; `tls_config` when a certificate is
    /// configured, `implicit_tls` for the imaps service.
    pub fn new(
        ctx: &Context,
        mail_base: std::path::PathBuf,
        tls_config: Option<Arc<ServerConfig>>,
        implicit_tls: bool,
    ) -> Imapd {
        let m = &ctx.main;
        let (tx, rx) = channel();
        Imapd {
            settings: Settings {
                mail_base,
                max_literal: m.imapd_max_literal,
                max_line: m.imapd_max_line_length as usize,
                hostname: m.myhostname.clone(),
                starttls: tls_config.is_some() && !implicit_tls,
            },
            conns: HashMap::new(),
            next: 1,
            waker: None,
            tx,
            rx,
            per_user: HashMap::new(),
            user_limit: m.imapd_user_connection_limit,
            timeout: Duration::from_secs(m.imapd_timeout.0),
            login_timeout: Duration::from_secs(m.imapd_login_timeout.0),
            auth_socket: auth::SOCKET.into(),
            tls_config,
            implicit_tls,
            gate: Gate::new(&ctx.service, ANVIL, m.login_client_connection_count_limit, 0),
            login_limit: m.login_client_connection_count_limit,
            secure_networks: m.imapd_secure_networks.clone(),
            literal_budget: LiteralBudget::new(m.imapd_literal_memory_limit),
            again: Vec::new(),
            watching: false,
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

    /// Tells a client over its address's limit so, and closes (RFC 5530 `UNAVAILABLE`).
    fn refuse(&self, conn: Accepted, ip: std::net::IpAddr, why: Refusal) {
        let reply = format!("* BYE [UNAVAILABLE] Too many connections from {ip} not logged in, try again later");
        refuse_login_client(conn, ip, why, self.login_limit, &reply);
    }

    fn handle_need(&mut self, id: usize, need: Need, lp: &EventLoop<'_>) {
        let (user, password) = match need {
            Need::Verify { user, password } => (user, password),
            Need::StartTls => {
                let Some(c) = self.conns.get_mut(&id) else { return };
                emit(c);
                match self.tls_config.as_ref().map(|cfg| TlsSession::new(Arc::clone(cfg))) {
                    Some(Ok(t)) => {
                        c.raw.clear();
                        c.tls = Some(t);
                    }
                    _ => c.session.bye("TLS unavailable"),
                }
                return;
            }
        };
        let Some(waker) = self.waker(lp) else { return };
        let tx = self.tx.clone();
        let socket = self.auth_socket.clone();
        let client = self.conns.get(&id).map(|c| c.peer.clone());
        let spawned = std::thread::Builder::new().name("auth".into()).spawn(move || {
            let result = verify(&socket, user, password, client);
            let _ = tx.send((id, result));
            let _ = waker.wake();
        });
        if let Err(e) = spawned {
            let _ = self
                .tx
                .send((id, Err(LoginFailure::Unavailable(format!("thread: {e}")))));
        }
    }

    /// The process's waker (auth answers, connections with work left), made once.
    fn waker(&mut self, lp: &EventLoop<'_>) -> Option<Arc<Waker>> {
        if self.waker.is_none() {
            match Waker::new(lp.registry(), WAKER) {
                Ok(w) => self.waker = Some(Arc::new(w)),
                Err(e) => tracing::warn!("waker: {e}"),
            }
        }
        self.waker.clone()
    }

    /// Queues a connection that used up its turn with work left, for after the events
    /// waiting now.
    fn later(&mut self, id: usize, lp: &EventLoop<'_>) {
        if !self.again.contains(&id) {
            self.again.push(id);
        }
        // without a waker the next tick goes on with it
        if let Some(w) = self.waker(lp)
            && let Err(e) = w.wake()
        {
            tracing::warn!("waker: {e}");
        }
    }

    fn after(&mut self, id: usize, lp: &EventLoop<'_>, need: Option<Need>) {
        if let Some(need) = need {
            self.handle_need(id, need, lp);
        }
        let Some(c) = self.conns.get_mut(&id) else { return };
        // logged in: no longer counted against the address's pre-login limit
        if c.session.authenticated()
            && let Some(t) = c.ticket.take()
        {
            self.gate.release(lp.registry(), t, Instant::now());
        }
        // count the sessions of each user (the limit is applied when auth answers)
        if c.counted_user.is_none()
            && let Some(u) = c.session.user().map(str::to_string)
        {
            *self.per_user.entry(u.clone()).or_insert(0) += 1;
            c.counted_user = Some(u);
        }
        emit(c);
        if c.session.closed()
            && let Some(t) = &mut c.tls
        {
            t.close();
            t.transmit(&mut c.out.buf);
        }
        if flush(c).is_err() || (c.session.closed() && c.out.is_empty()) {
            self.close(id, lp);
        }
    }

    /// Reads what the client sent and runs the session on it, unless the session is
    /// waiting (for auth) or has too much unsent output; called on readiness, after an
    /// auth answer and on every tick, so input left unread by a pause is picked up.
    fn pump(&mut self, id: usize, lp: &EventLoop<'_>) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if c.session.closed() {
            if c.out.is_empty() {
                self.close(id, lp);
            }
            return;
        }
        // a large FETCH goes on as the client reads what came before
        let mut more = false;
        let Ok(mut need) = resume(c, &mut more) else {
            self.close(id, lp);
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        let mut eof = false;
        let mut reads = 0;
        loop {
            let (max_out, max_raw, chunk) = if c.session.authenticated() {
                (MAX_PENDING_OUT, MAX_RAW, buf.len())
            } else {
                (PRELOGIN_MAX_OUT, PRELOGIN_MAX_RAW, PRELOGIN_READ)
            };
            if c.out.len() > max_out
                || c.session.closed()
                || c.session.waiting()
                || c.session.busy()
                || need.is_some()
                || c.raw.len() > max_raw
            {
                break;
            }
            if reads == READS_PER_TURN {
                more = true;
                break;
            }
            reads += 1;
            let Some(slice) = buf.get_mut(..chunk) else { break };
            match c.sock.read(slice) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    c.last = Instant::now();
                    let got = slice.get(..n).unwrap_or_default();
                    if c.tls.is_some() {
                        c.raw.extend_from_slice(got);
                    } else {
                        need = c.session.input(got);
                        emit(c);
                        let _ = flush(c);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if need.is_none()
            && let Some(t) = &mut c.tls
        {
            let mut plain = Vec::new();
            let most = if c.session.authenticated() {
                MAX_RAW
            } else {
                PRELOGIN_READ
            };
            match t.receive(&c.raw, &mut plain, most) {
                Ok(used) => {
                    c.raw.drain(..used.min(c.raw.len()));
                }
                Err(e) => {
                    tracing::info!("TLS error from {}: {e}", c.peer);
                    t.transmit(&mut c.out.buf);
                    eof = true;
                }
            }
            t.transmit(&mut c.out.buf);
            if t.peer_closed() && plain.is_empty() {
                eof = true;
            }
            if !plain.is_empty() {
                need = c.session.input(&plain);
            }
        }
        // A FETCH started just now whose first part the socket took whole gets no
        // writable edge to go on with: go on now (else it would wait for the next tick).
        if need.is_none() && !eof && !more {
            match resume(c, &mut more) {
                Ok(n) => need = n,
                Err(_) => eof = true,
            }
        }
        if eof {
            if let Some(c) = self.conns.get_mut(&id) {
                let _ = flush(c);
            }
            self.close(id, lp);
            return;
        }
        self.after(id, lp, need);
        if more && self.conns.contains_key(&id) {
            self.later(id, lp);
        }
    }

    fn close(&mut self, id: usize, lp: &EventLoop<'_>) {
        if let Some(mut c) = self.conns.remove(&id) {
            tracing::info!(
                "disconnect from {}, user={}",
                c.peer,
                c.counted_user.as_deref().unwrap_or("-")
            );
            let _ = lp.registry().deregister(&mut c.sock);
            if let Some(t) = c.ticket {
                self.gate.release(lp.registry(), t, Instant::now());
            }
            if let Some(u) = c.counted_user
                && let Some(n) = self.per_user.get_mut(&u)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_user.remove(&u);
                }
            }
        }
    }
}

fn verify(
    socket: &std::path::Path,
    user: String,
    password: String,
    client: Option<String>,
) -> Result<Account, LoginFailure> {
    let mut req = AuthRequest::Verify {
        user,
        password,
        service: "imap".into(),
        client,
    };
    let res = (|| {
        let sock = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
        let mut ipc = IpcStream::client(sock, auth::PROTOCOL, auth::VERSION, Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        ipc.send(&req).map_err(|e| e.to_string())?;
        let reply = ipc.recv::<AuthReply>().map_err(|e| e.to_string())?;
        // the account's quota, for APPEND, COPY and MOVE
        let quota = match &reply {
            AuthReply::Ok { user } => {
                ipc.send(&AuthRequest::Lookup { user: user.clone() })
                    .map_err(|e| e.to_string())?;
                match ipc.recv::<AuthReply>().map_err(|e| e.to_string())? {
                    AuthReply::Exists { quota, .. } => quota,
                    AuthReply::NoSuchUser => None,
                    other => return Err(format!("quota lookup: {other:?}")),
                }
            }
            _ => None,
        };
        Ok((reply, quota))
    })();
    if let AuthRequest::Verify { password, .. } = &mut req {
        zeroize::Zeroize::zeroize(password);
    }
    let (reply, quota) = res.map_err(LoginFailure::Unavailable)?;
    match reply {
        AuthReply::Ok { user } => Ok(Account { name: user, quota }),
        AuthReply::Fail { reason } => Err(LoginFailure::Refused(reason)),
        AuthReply::TempFail { reason } => Err(LoginFailure::Unavailable(reason)),
        other => Err(LoginFailure::Unavailable(format!("unexpected reply {other:?}"))),
    }
}

/// Runs a half-done command (or held-back commands) on while little output waits (the
/// socket took the rest), for at most [`ROUNDS_PER_TURN`] rounds: `more` is set when it
/// could go on; `Err` when the connection failed.
fn resume(c: &mut Conn, more: &mut bool) -> io::Result<Option<Need>> {
    let mut need = None;
    let mut rounds = 0;
    while c.session.busy() && c.out.len() < RESUME_BELOW && need.is_none() {
        if rounds == ROUNDS_PER_TURN {
            *more = true;
            break;
        }
        rounds += 1;
        need = c.session.resume();
        emit(c);
        flush(c)?;
    }
    Ok(need)
}

/// Moves the session's output to the socket buffer, through TLS when it is on.
fn emit(c: &mut Conn) {
    let data = c.session.take_output();
    match &mut c.tls {
        Some(t) => {
            if !data.is_empty() && t.send(&data).is_err() {
                c.session.bye("TLS error");
            }
            t.transmit(&mut c.out.buf);
        }
        None => c.out.push(data),
    }
}

/// Output waiting for the socket: written from an offset, so a partial write never moves
/// the rest of a large FETCH answer in memory.
#[derive(Default)]
struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn unsent(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn sent(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= 256 * 1024 && self.pos * 2 >= self.buf.len() {
            // amortised: the bytes moved are fewer than those written since the last move
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    fn push(&mut self, data: Vec<u8>) {
        if self.buf.is_empty() {
            self.buf = data;
            self.pos = 0;
            return;
        }
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(&data);
    }
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while !c.out.is_empty() {
        match c.sock.write(c.out.unsent()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.out.sent(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl EventService for Imapd {
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
        self.on_ready(lp, event);
    }

    fn tick(&mut self, lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        self.on_tick(lp, now);
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
                c.session.bye("Server shutting down");
            }
            self.after(id, lp, None);
        }
    }
}

impl Imapd {
    /// Starts the session of an admitted client: greeting and all.
    fn start(&mut self, lp: &EventLoop<'_>, conn: Accepted, ticket: Option<Ticket>) {
        let give_back = |gate: &mut Gate<Accepted>| {
            if let Some(t) = ticket {
                gate.release(lp.registry(), t, Instant::now());
            }
        };
        let Stream::Tcp(std_sock) = conn.stream else {
            tracing::warn!("imapd serves TCP only");
            return give_back(&mut self.gate);
        };
        if std_sock.set_nonblocking(true).is_err() {
            return give_back(&mut self.gate);
        }
        let (peer, secure) = match &conn.peer {
            Peer::Inet(a) => (
                a.ip().to_string(),
                a.ip().is_loopback() || self.secure_networks.iter().any(|n| n.contains(a.ip())),
            ),
            _ => ("local".into(), true),
        };
        self.watch(lp);
        let mut sock = TcpStream::from_std(std_sock);
        let id = self.next;
        self.next += 1;
        if lp
            .registry()
            .register(&mut sock, Token(id), Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            return give_back(&mut self.gate);
        }
        tracing::info!("connect from {peer}");
        let tls = match (&self.tls_config, self.implicit_tls) {
            (Some(cfg), true) => match TlsSession::new(Arc::clone(cfg)) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!("TLS: {e}");
                    let _ = lp.registry().deregister(&mut sock);
                    return give_back(&mut self.gate);
                }
            },
            _ => None,
        };
        let mut session = Session::new(self.settings.clone(), secure, tls.is_some());
        session.set_peer(&peer);
        session.set_literal_budget(self.literal_budget.clone());
        self.conns.insert(
            id,
            Conn {
                sock,
                session,
                out: OutBuf::default(),
                tls,
                raw: Vec::new(),
                last: Instant::now(),
                born: Instant::now(),
                peer,
                counted_user: None,
                ticket,
            },
        );
        self.after(id, lp, None);
    }

    /// Registers the process's folder watch (once): a change in a selected folder then
    /// wakes the loop, and sessions in IDLE hear of it at once, not at the next tick.
    fn watch(&mut self, lp: &EventLoop<'_>) {
        if std::mem::replace(&mut self.watching, true) {
            return;
        }
        if let Some(fd) = postern_lib::mailbox::shared::enable_watching() {
            let res = lp
                .registry()
                .register(&mut mio::unix::SourceFd(&fd), WATCH, Interest::READABLE);
            if let Err(e) = res {
                tracing::warn!("folder watch: {e}; folders are checked by their stamps");
            }
        }
    }

    fn on_ready(&mut self, lp: &EventLoop<'_>, event: &mio::event::Event) {
        let id = event.token().0;
        if event.token() == WATCH {
            if postern_lib::mailbox::shared::watch_events() {
                // each shared state syncs once; sessions whose view it matches do nothing
                let ids: Vec<usize> = self.conns.keys().copied().collect();
                for id in ids {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.session.poll();
                    }
                    self.after(id, lp, None);
                    self.pump(id, lp);
                }
            }
            return;
        }
        if self.gate.owns(event.token()) {
            let decisions = self.gate.ready(lp.registry(), event, Instant::now());
            return self.decide(lp, decisions);
        }
        if event.token() == WAKER {
            while let Ok((cid, result)) = self.rx.try_recv() {
                let over = match &result {
                    Ok(account) => self.per_user.get(&account.name).copied().unwrap_or(0) >= self.user_limit,
                    Err(_) => false,
                };
                let need = match self.conns.get_mut(&cid) {
                    Some(c) if over => c.session.auth_limited(),
                    Some(c) => c.session.auth_done(result),
                    None => continue,
                };
                self.after(cid, lp, need);
                self.pump(cid, lp);
            }
            for id in std::mem::take(&mut self.again) {
                self.pump(id, lp);
            }
            return;
        }
        if event.is_writable()
            && let Some(c) = self.conns.get_mut(&id)
            && flush(c).is_err()
        {
            self.close(id, lp);
            return;
        }
        self.pump(id, lp);
    }

    fn on_tick(&mut self, lp: &EventLoop<'_>, now: Instant) {
        let decisions = self.gate.tick(lp.registry(), now);
        self.decide(lp, decisions);
        // a folder without a watch looks at its stamps once this tick, for all its sessions
        postern_lib::mailbox::shared::new_round();
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else { continue };
            if !c.session.authenticated() && !c.session.closed() {
                // A hard deadline: bytes, commands or a pending password check do not
                // extend it (Dovecot's login timeout).
                if now.duration_since(c.born) > self.login_timeout {
                    tracing::info!(
                        "login timeout from {}: not logged in within {}s",
                        c.peer,
                        self.login_timeout.as_secs()
                    );
                    c.session.bye("Login timeout: not authenticated in time");
                }
            } else if c.session.waiting() {
                c.last = now;
            } else if now.duration_since(c.last) > self.timeout {
                tracing::info!(
                    "autologout of {}, user={}",
                    c.peer,
                    c.counted_user.as_deref().unwrap_or("-")
                );
                c.session.bye("Autologout; idle for too long");
            } else {
                c.session.poll();
            }
            self.after(id, lp, None);
            self.pump(id, lp);
        }
    }
}
