//! The auth daemon's event service: many client daemons (smtpd, pop3d, imapd processes)
//! connected to `private/auth` at once, each sending requests of
//! [`postern_lib::proto::auth`] one at a time. Lookups are answered at once; password
//! checks go to the [`Pool`]. Two timers, kept per connection and fired from the loop's
//! tick (nothing sleeps), hold requests back: an attempt from an address with recent
//! failures waits out the address's [`Penalty`] before it is checked, and a failure is
//! answered only after `auth_failure_delay` — so a slow hash, a penalised guesser or a
//! delayed failure never stalls the other clients. A right password is never refused.
//!
//! Fairness: at most [`MAX_CHECKS_PER_CLIENT`] checks of one client address (its penalty
//! key, IPv6 by /64) are in the pool at once; the others wait in auth, and when they start
//! the address's penalty is reckoned again from when they came (so a burst of guesses sent
//! at once is slowed like guesses sent one by one). A check that finds the pool full waits
//! for room, oldest first, for up to [`MAX_WAIT`] before it is answered tempfail. So one
//! address opening many connections at once cannot fill the pool and make the checks of
//! everybody else fail.
//!
//! Log lines (never a password): `auth failure: user=U, client=ADDR, service=S,
//! reason=wrong password|unknown user|...` (warning) and
//! `auth ok: user=U, client=ADDR, service=S` (info).

use crate::backend::Backend;
use crate::codec::{self, FrameDecoder};
use crate::throttle::Penalty;
use crate::workers::{Done, Job, Pool};
use mio::net::UnixStream;
use mio::{Interest, Token, Waker};
use postern_lib::ipc::Hello;
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use postern_lib::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use postern_lib::skeleton::{Accepted, Context, Stream};
use postern_lib::strbuf::printable_bounded;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Largest request accepted (a request is a user name and a password).
pub const MAX_REQUEST: usize = 16 * 1024;
/// Largest user name looked up; longer ones fail at once.
pub const MAX_USER: usize = 256;
/// A client connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a failure waits before it is answered unless set (`auth_failure_delay`).
pub const DEFAULT_FAILURE_DELAY: Duration = Duration::from_secs(2);
/// Unsent reply bytes a client may leave unread before it is dropped.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Password checks of one client address in the pool at once; more wait in auth.
pub const MAX_CHECKS_PER_CLIENT: usize = 2;
/// Longest wait for room in the pool before a check is answered tempfail (auth's clients
/// give up after 30 s).
pub const MAX_WAIT: Duration = Duration::from_secs(20);

const WAKER_TOKEN: Token = Token(RESERVED_TOKENS - 1);

struct Pending {
    user: String,
    service: String,
    client: Option<String>,
    /// The keyed hash of user and password ([`Penalty::attempt`]).
    attempt: u64,
}

/// A password check waiting out its address's penalty, or for its turn in the pool.
struct Held {
    due: Instant,
    /// When the request came: the penalty runs from here, and the oldest starts first.
    since: Instant,
    pending: Pending,
    password: Zeroizing<String>,
}

struct Conn {
    sock: UnixStream,
    dec: FrameDecoder,
    out: Vec<u8>,
    greeted: bool,
    in_flight: Option<Pending>,
    held: Option<Held>,
    delayed: Option<(Instant, AuthReply)>,
    last: Instant,
    dead: bool,
}

/// The service state of one auth process.
pub struct AuthService {
    backend: Backend,
    penalty: Penalty,
    failure_delay: Duration,
    threads: usize,
    pool: Option<Pool>,
    conns: HashMap<usize, Conn>,
    /// Checks in the pool: the token that asked and its client's penalty key (kept until
    /// the check is done, even when the connection closed, so no token is reused early).
    flights: HashMap<usize, Option<String>>,
    next: usize,
    /// `local_system_users`: /etc/passwd accounts count as existing mailboxes.
    passwd: bool,
}

/// The answer for a name that is no virtual user, with `local_system_users`: an
/// /etc/passwd account exists (mail to it is delivered by local as that account).
fn system_mailbox(user: &str) -> AuthReply {
    if user.len() > MAX_USER || user.contains(['/', '\0']) {
        return AuthReply::NoSuchUser;
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => AuthReply::Exists {
            user: u.name,
            quota: None,
        },
        Ok(None) => AuthReply::NoSuchUser,
        Err(e) => AuthReply::TempFail {
            reason: format!("passwd lookup: {e}"),
        },
    }
}

fn shown(s: &str) -> String {
    printable_bounded(s.as_bytes(), 80)
}

impl AuthService {
    /// A service over `backend`.
    pub fn new(backend: Backend, penalty: Penalty, threads: usize) -> AuthService {
        AuthService {
            backend,
            penalty,
            failure_delay: DEFAULT_FAILURE_DELAY,
            threads,
            pool: None,
            conns: HashMap::new(),
            flights: HashMap::new(),
            next: 0,
            passwd: false,
        }
    }

    /// Failed attempts are answered after `delay` (`auth_failure_delay`).
    pub fn with_failure_delay(mut self, delay: Duration) -> AuthService {
        self.failure_delay = delay;
        self
    }

    /// With `local_system_users`: a lookup of an /etc/passwd account (through the C
    /// library, so NSS sources count too) answers that the mailbox exists.
    pub fn with_system_mailboxes(mut self, on: bool) -> AuthService {
        self.passwd = on;
        self
    }

    fn token(&mut self) -> usize {
        loop {
            let t = self.next;
            self.next = (self.next + 1) % (RESERVED_TOKENS - 1);
            if !self.conns.contains_key(&t) && !self.flights.contains_key(&t) {
                return t;
            }
        }
    }

    fn ensure_pool(&mut self, lp: &EventLoop<'_>) {
        if self.pool.is_some() {
            return;
        }
        let started = Waker::new(lp.registry(), WAKER_TOKEN).and_then(|w| Pool::start(self.threads, Arc::new(w)));
        match started {
            Ok(p) => self.pool = Some(p),
            Err(e) => tracing::error!("cannot start verification threads: {e}"),
        }
    }

    /// Reads what the client sent, handles complete requests, writes replies.
    fn drive(&mut self, token: usize, now: Instant) {
        let mut requests = Vec::new();
        if let Some(conn) = self.conns.get_mut(&token) {
            read_into(conn);
            loop {
                if conn.dead || conn.in_flight.is_some() || conn.held.is_some() || conn.delayed.is_some() {
                    break;
                }
                if !conn.greeted {
                    match conn.dec.next_message::<Hello>() {
                        Ok(Some(h)) => match codec::check_hello(&h, auth::PROTOCOL, auth::VERSION) {
                            Ok(()) => conn.greeted = true,
                            Err(e) => {
                                tracing::warn!("auth client: {e}");
                                conn.dead = true;
                            }
                        },
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!("auth client: {e}");
                            conn.dead = true;
                        }
                    }
                    continue;
                }
                match conn.dec.next_message::<AuthRequest>() {
                    Ok(Some(req)) => {
                        conn.last = now;
                        requests.push(req);
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("auth client: {e}");
                        conn.dead = true;
                    }
                }
            }
        }
        for req in requests {
            self.handle(token, req, now);
        }
        self.flush(token);
    }

    fn handle(&mut self, token: usize, req: AuthRequest, now: Instant) {
        match req {
            AuthRequest::Lookup { user } => {
                let user = user.to_ascii_lowercase();
                let reply = if let Some(fail) = self.refresh(now) {
                    fail
                } else {
                    match self.backend.account(&user) {
                        Some(a) => AuthReply::Exists {
                            user: a.name,
                            quota: a.quota,
                        },
                        None if self.passwd => system_mailbox(&user),
                        None => AuthReply::NoSuchUser,
                    }
                };
                self.reply(token, reply);
            }
            AuthRequest::LookupVirtual { user } => {
                let user = user.to_ascii_lowercase();
                let reply = if let Some(fail) = self.refresh(now) {
                    fail
                } else {
                    match self.backend.virtual_account(&user) {
                        Some(a) => AuthReply::Exists {
                            user: a.name,
                            quota: a.quota,
                        },
                        None => AuthReply::NoSuchUser,
                    }
                };
                self.reply(token, reply);
            }
            AuthRequest::Verify {
                user,
                password,
                service,
                client,
            } => {
                let password = Zeroizing::new(password);
                let user = user.to_ascii_lowercase();
                let pending = Pending {
                    attempt: self.penalty.attempt(&user, &password),
                    user: user.chars().take(MAX_USER).collect(),
                    service: service.chars().take(32).collect(),
                    client: client.map(|c| c.chars().take(64).collect()),
                };
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.held = Some(Held {
                        due: now,
                        since: now,
                        pending,
                        password,
                    });
                }
                self.admit(now);
            }
        }
    }

    /// Starts the held checks whose time has come, oldest first: each waits out its
    /// address's penalty (reckoned from when it came), then for fewer than
    /// [`MAX_CHECKS_PER_CLIENT`] checks of its address in the pool, then for room in the
    /// pool — at most [`MAX_WAIT`], then it is answered tempfail.
    fn admit(&mut self, now: Instant) {
        let mut ready: Vec<(Instant, usize)> = self
            .conns
            .iter()
            .filter_map(|(t, c)| c.held.as_ref().filter(|h| h.due <= now).map(|h| (h.since, *t)))
            .collect();
        ready.sort_unstable();
        let mut full = false;
        for (since, token) in ready {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            let Some(h) = conn.held.as_mut() else { continue };
            let client = h.pending.client.clone();
            let due = since + self.penalty.delay(client.as_deref(), now);
            if due > now {
                h.due = due;
                continue;
            }
            let key = crate::throttle::key(client.as_deref());
            let checking = self.flights.values().filter(|k| **k == key).count();
            if checking >= MAX_CHECKS_PER_CLIENT {
                continue;
            }
            if full {
                if now.saturating_duration_since(since) >= MAX_WAIT {
                    conn.held = None;
                    self.overloaded(token, &client);
                }
                continue;
            }
            let Some(h) = conn.held.take() else { continue };
            if let Some(back) = self.verify(token, h.pending, h.password, now) {
                // The pool is full: wait for room, unless waited long enough.
                full = true;
                if now.saturating_duration_since(since) >= MAX_WAIT {
                    self.overloaded(token, &back.pending.client);
                } else if let Some(conn) = self.conns.get_mut(&token) {
                    conn.held = Some(Held { since, ..back });
                }
            }
            self.flush(token);
        }
    }

    /// Answers a check that found no room in the pool for [`MAX_WAIT`].
    fn overloaded(&mut self, token: usize, client: &Option<String>) {
        tracing::warn!(
            "auth overloaded: verification queue full for {}s, client={}",
            MAX_WAIT.as_secs(),
            shown(client.as_deref().unwrap_or("local"))
        );
        self.reply(
            token,
            AuthReply::TempFail {
                reason: "overloaded".into(),
            },
        );
        self.flush(token);
    }

    /// Re-reads changed password files; a reply when auth cannot answer now.
    fn refresh(&mut self, now: Instant) -> Option<AuthReply> {
        if let Err(e) = self.backend.refresh(now, false) {
            tracing::warn!("cannot read password data: {e}");
            if !self.backend.ready() {
                return Some(AuthReply::TempFail {
                    reason: "password data unreadable".into(),
                });
            }
        }
        None
    }

    /// Checks the password of `p` (in the pool, or failed at once); gives the request back
    /// when the pool is full.
    fn verify(&mut self, token: usize, p: Pending, password: Zeroizing<String>, now: Instant) -> Option<Held> {
        if let Some(fail) = self.refresh(now) {
            self.reply(token, fail);
            return None;
        }
        let account = if p.user.len() > MAX_USER {
            None
        } else {
            self.backend.account(&p.user)
        };
        let Some(account) = account else {
            self.fail_after(token, &p, "unknown user", now);
            return None;
        };
        if password.is_empty() {
            self.fail_after(token, &p, "empty password", now);
            return None;
        }
        let Some(pool) = &self.pool else {
            self.reply(
                token,
                AuthReply::TempFail {
                    reason: "no verification threads".into(),
                },
            );
            return None;
        };
        let job = Job {
            token,
            password,
            hash: account.hash,
        };
        match pool.submit(job) {
            Ok(()) => {
                self.flights.insert(token, crate::throttle::key(p.client.as_deref()));
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.in_flight = Some(p);
                }
                None
            }
            Err(job) => Some(Held {
                due: now,
                since: now,
                pending: p,
                password: job.password,
            }),
        }
    }

    /// Counts a failure against the client's address and answers it after the failure delay.
    fn fail_after(&mut self, token: usize, p: &Pending, reason: &str, now: Instant) {
        self.penalty.fail(p.client.as_deref(), p.attempt, now);
        let delay = self.failure_delay;
        tracing::warn!(
            "auth failure: user={}, client={}, service={}, reason={reason}",
            shown(&p.user),
            shown(p.client.as_deref().unwrap_or("local")),
            shown(&p.service)
        );
        let reply = AuthReply::Fail { reason: reason.into() };
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.delayed = Some((now + delay, reply));
        }
    }

    fn finished(&mut self, done: Done, now: Instant) {
        self.flights.remove(&done.token);
        let Some(p) = self.conns.get_mut(&done.token).and_then(|c| c.in_flight.take()) else {
            return;
        };
        match done.result {
            Ok(true) => {
                self.penalty.succeed(p.client.as_deref());
                tracing::info!(
                    "auth ok: user={}, client={}, service={}",
                    shown(&p.user),
                    shown(p.client.as_deref().unwrap_or("local")),
                    shown(&p.service)
                );
                self.reply(done.token, AuthReply::Ok { user: p.user });
            }
            Ok(false) => self.fail_after(done.token, &p, "wrong password", now),
            Err(e) => {
                tracing::warn!("unusable password hash for user {}: {e}", shown(&p.user));
                self.fail_after(done.token, &p, "unusable password hash", now);
            }
        }
        self.drive(done.token, now);
    }

    fn reply(&mut self, token: usize, reply: AuthReply) {
        if let Some(conn) = self.conns.get_mut(&token)
            && codec::encode(&reply, &mut conn.out).is_err()
        {
            conn.dead = true;
        }
    }

    fn flush(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        while !conn.out.is_empty() && !conn.dead {
            match conn.sock.write(&conn.out) {
                Ok(0) => conn.dead = true,
                Ok(n) => {
                    conn.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => conn.dead = true,
            }
        }
        if conn.out.len() > MAX_OUTPUT {
            conn.dead = true;
        }
        if conn.dead && conn.in_flight.is_none() {
            self.close(token);
        }
    }

    fn close(&mut self, token: usize) {
        self.conns.remove(&token);
        // Deregistration happens when the socket is dropped (close removes it from epoll).
    }
}

fn read_into(conn: &mut Conn) {
    let mut buf = zeroize::Zeroizing::new([0u8; 4096]);
    loop {
        let room = conn.dec.room().min(buf.len());
        if room == 0 {
            return;
        }
        let Some(chunk) = buf.get_mut(..room) else {
            return;
        };
        match conn.sock.read(chunk) {
            Ok(0) => {
                conn.dead = true;
                return;
            }
            Ok(n) => {
                conn.dec.push(chunk.get(..n).unwrap_or_default());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                conn.dead = true;
                return;
            }
        }
    }
}

impl EventService for AuthService {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        self.ensure_pool(lp);
        let Stream::Unix(std_sock) = conn.stream else {
            return;
        };
        if std_sock.set_nonblocking(true).is_err() {
            return;
        }
        let mut sock = UnixStream::from_std(std_sock);
        let token = self.token();
        if lp
            .registry()
            .register(&mut sock, Token(token), Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            return;
        }
        let mut out = Vec::new();
        codec::encode_hello(auth::PROTOCOL, auth::VERSION, &mut out);
        self.conns.insert(
            token,
            Conn {
                sock,
                dec: FrameDecoder::new(MAX_REQUEST),
                out,
                greeted: false,
                in_flight: None,
                held: None,
                delayed: None,
                last: Instant::now(),
                dead: false,
            },
        );
        self.drive(token, Instant::now());
    }

    fn ready(&mut self, _lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        let now = Instant::now();
        if event.token() == WAKER_TOKEN {
            while let Some(done) = self.pool.as_ref().and_then(Pool::try_done) {
                self.finished(done, now);
            }
            // Room in the pool, and fewer checks of some address: start who waits.
            self.admit(now);
            return;
        }
        self.drive(event.token().0, now);
    }

    fn tick(&mut self, _lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        self.admit(now);
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.delayed.as_ref().is_some_and(|(t, _)| *t <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            if let Some((_, reply)) = self.conns.get_mut(&token).and_then(|c| c.delayed.take()) {
                self.reply(token, reply);
                self.drive(token, now);
            }
        }
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.in_flight.is_none()
                    && c.held.is_none()
                    && c.delayed.is_none()
                    && now.saturating_duration_since(c.last) > IDLE_TIMEOUT
            })
            .map(|(t, _)| *t)
            .collect();
        for token in idle {
            self.close(token);
        }
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }

    fn stop(&mut self, _lp: &EventLoop<'_>, _ctx: &Context) {
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.in_flight.is_none() && c.held.is_none() && c.delayed.is_none() && c.out.is_empty())
            .map(|(t, _)| *t)
            .collect();
        for token in idle {
            self.close(token);
        }
    }
}
