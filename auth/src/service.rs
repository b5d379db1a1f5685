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
//! Master users (Dovecot's master passdb): with `auth_master_users_file` set, a login
//! `USER*MASTER` (the separator is `auth_master_user_separator`), or `USER\0MASTER` (how
//! pop3d and imapd pass SASL PLAIN with authorization identity USER, authentication
//! identity MASTER), is checked against MASTER's password in that file; right, and USER
//! exists, it logs in as USER. A wrong master password, an unknown master or an unknown
//! USER is a failure like any other (delayed, counted in the penalty). Without the file
//! the separator means nothing and `alice*bob` is just an unknown user.
//!
//! Log lines (never a password): `auth failure: user=U, client=ADDR, service=S,
//! reason=wrong password|unknown user|...` (warning) and
//! `auth ok: user=U, client=ADDR, service=S` (info); for a master login `user=U, master=M`
//! and `master user M logged in as U`.

use crate::backend::Backend;
use crate::throttle::Penalty;
use crate::workers::{Done, Job, Pool};
use postern_lib::ipc::server::{Answer, ClientId, Config, Handler, Outbox, Server};
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use postern_lib::strbuf::printable_bounded;
use std::collections::HashMap;
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

struct Pending {
    /// The account to log in as.
    user: String,
    /// The master user whose password is checked, for a master login.
    master: Option<String>,
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

/// What one client's request waits for (at most one of them).
#[derive(Default)]
struct Conn {
    in_flight: Option<Pending>,
    held: Option<Held>,
    delayed: Option<(Instant, AuthReply)>,
}

/// The service state of one auth process.
pub struct AuthService {
    backend: Backend,
    penalty: Penalty,
    failure_delay: Duration,
    threads: usize,
    pool: Option<Pool>,
    conns: HashMap<ClientId, Conn>,
    /// Checks in the pool: the client that asked and its penalty key (kept until the check
    /// is done, even when the client closed).
    flights: HashMap<ClientId, Option<String>>,
    /// Replies given by the timers and the pool, handed to the server's outbox.
    replies: Vec<(ClientId, AuthReply)>,
    /// `local_system_users`: /etc/passwd accounts count as existing mailboxes.
    passwd: bool,
    /// `auth_master_user_separator`.
    master_separator: String,
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

/// `U` or `U, master=M` for the log.
fn who(p: &Pending) -> String {
    match &p.master {
        Some(m) => format!("{}, master={}", shown(&p.user), shown(m)),
        None => shown(&p.user),
    }
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
            replies: Vec::new(),
            passwd: false,
            master_separator: "*".into(),
        }
    }

    /// A master login is `USER` + `sep` + `MASTER` (`auth_master_user_separator`).
    pub fn with_master_separator(mut self, sep: &str) -> AuthService {
        self.master_separator = sep.to_string();
        self
    }

    /// `(user, master)` of a master login (only when master users are configured).
    fn master_login<'a>(&self, login: &'a str) -> Option<(&'a str, &'a str)> {
        if !self.backend.has_masters() {
            return None;
        }
        let (user, master) = match login.split_once('\0') {
            Some(pair) => pair,
            None if self.master_separator.is_empty() => return None,
            None => login.rsplit_once(self.master_separator.as_str())?,
        };
        (!user.is_empty() && !master.is_empty()).then_some((user, master))
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

    /// The server of this service on `private/auth`.
    pub fn server(self) -> Server<AuthService> {
        let config = Config {
            name: "auth",
            protocol: auth::PROTOCOL,
            version: auth::VERSION,
            max_request: MAX_REQUEST,
            max_output: MAX_OUTPUT,
            idle_timeout: Some(IDLE_TIMEOUT),
        };
        Server::new(config, self)
    }

    fn ensure_pool(&mut self, out: &Outbox<AuthReply>) {
        if self.pool.is_some() {
            return;
        }
        let Some(waker) = out.waker() else {
            tracing::error!("cannot start verification threads: no waker");
            return;
        };
        match Pool::start(self.threads, waker) {
            Ok(p) => self.pool = Some(p),
            Err(e) => tracing::error!("cannot start verification threads: {e}"),
        }
    }

    fn handle(&mut self, token: ClientId, req: AuthRequest, now: Instant) -> Answer<AuthReply> {
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
                Answer::Reply(reply)
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
                Answer::Reply(reply)
            }
            AuthRequest::Verify {
                user,
                password,
                service,
                client,
            } => {
                let password = Zeroizing::new(password);
                let login = user.to_ascii_lowercase();
                let (user, master) = match self.master_login(&login) {
                    Some((u, m)) => (u, Some(m.chars().take(MAX_USER).collect())),
                    None => (login.as_str(), None),
                };
                let pending = Pending {
                    attempt: self.penalty.attempt(&login, &password),
                    user: user.chars().take(MAX_USER + 1).collect(),
                    master,
                    service: service.chars().take(32).collect(),
                    client: client.map(|c| c.chars().take(64).collect()),
                };
                self.conns.entry(token).or_default().held = Some(Held {
                    due: now,
                    since: now,
                    pending,
                    password,
                });
                self.admit(now);
                Answer::Deferred
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
        }
    }

    /// Answers a check that found no room in the pool for [`MAX_WAIT`].
    fn overloaded(&mut self, token: ClientId, client: &Option<String>) {
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
    fn verify(&mut self, token: ClientId, p: Pending, password: Zeroizing<String>, now: Instant) -> Option<Held> {
        if let Some(fail) = self.refresh(now) {
            self.reply(token, fail);
            return None;
        }
        let account = if p.user.len() > MAX_USER {
            None
        } else if let Some(m) = &p.master {
            self.backend.master(m)
        } else {
            self.backend.account(&p.user)
        };
        let Some(account) = account else {
            let reason = if p.master.is_some() {
                "unknown master user"
            } else {
                "unknown user"
            };
            self.fail_after(token, &p, reason, now);
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
    fn fail_after(&mut self, token: ClientId, p: &Pending, reason: &str, now: Instant) {
        self.penalty.fail(p.client.as_deref(), p.attempt, now);
        let delay = self.failure_delay;
        tracing::warn!(
            "auth failure: user={}, client={}, service={}, reason={reason}",
            who(p),
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
                // a master login: the master's password is right; the user must exist
                if let Some(m) = &p.master {
                    let Some(target) = self.backend.account(&p.user) else {
                        return self.fail_after(done.token, &p, "unknown target user", now);
                    };
                    self.penalty.succeed(p.client.as_deref());
                    tracing::info!(
                        "auth ok: user={}, client={}, service={}: master user {} logged in as {}",
                        who(&p),
                        shown(p.client.as_deref().unwrap_or("local")),
                        shown(&p.service),
                        shown(m),
                        shown(&target.name)
                    );
                    return self.reply(done.token, AuthReply::Ok { user: target.name });
                }
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
    }

    fn reply(&mut self, token: ClientId, reply: AuthReply) {
        self.replies.push((token, reply));
    }

    /// Hands the replies given since the last call to the server.
    fn post(&mut self, out: &mut Outbox<AuthReply>) {
        for (client, reply) in self.replies.drain(..) {
            out.reply(client, reply);
        }
    }

    /// Answers the delayed failures whose time has come.
    fn answer_delayed(&mut self, now: Instant) {
        let due: Vec<ClientId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.delayed.as_ref().is_some_and(|(t, _)| *t <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            if let Some((_, reply)) = self.conns.get_mut(&token).and_then(|c| c.delayed.take()) {
                self.reply(token, reply);
            }
        }
    }
}

impl Handler for AuthService {
    type Request = AuthRequest;
    type Reply = AuthReply;

    fn connected(&mut self, out: &mut Outbox<AuthReply>, client: ClientId) {
        self.ensure_pool(out);
        self.conns.insert(client, Conn::default());
    }

    fn request(&mut self, out: &mut Outbox<AuthReply>, client: ClientId, req: AuthRequest) -> Answer<AuthReply> {
        let answer = self.handle(client, req, Instant::now());
        self.post(out);
        answer
    }

    fn disconnected(&mut self, _out: &mut Outbox<AuthReply>, client: ClientId) {
        // A check in the pool stays counted in `flights` until it is done.
        self.conns.remove(&client);
    }

    fn tick(&mut self, out: &mut Outbox<AuthReply>, now: Instant) {
        self.admit(now);
        self.answer_delayed(now);
        self.post(out);
    }

    fn woken(&mut self, out: &mut Outbox<AuthReply>, now: Instant) {
        while let Some(done) = self.pool.as_ref().and_then(Pool::try_done) {
            self.finished(done, now);
        }
        // Room in the pool, and fewer checks of some address: start who waits.
        self.admit(now);
        self.post(out);
    }
}
