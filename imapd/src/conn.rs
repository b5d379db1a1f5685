//! The IMAP session on lib's connection driver ([`postern_lib::skeleton::conn`]): the
//! session reads its commands (lines and literals) from the driver's input buffer, its
//! output goes to the driver, its [`Need`]s are carried out (STARTTLS by the driver, a
//! password check by the non-blocking auth client on the driver's auxiliary token), a
//! half-done command goes on in the driver's fair turns ([`Protocol::more`]) and IDLE hears
//! of folder changes through [`Protocol::notify`] and the tick ([`Protocol::timer`]).
//! Sockets, TLS, buffers, back-pressure, the write loop and deadlines are the driver's.

use crate::session::{Account, LoginFailure, Need, PRELOGIN_MAX_LINE, Session};
use mio::Interest;
use postern_lib::anvil::gate::Ticket;
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use postern_lib::proto::auth_client::AuthClient;
use postern_lib::skeleton::conn::{Ending, Io, Limits, Protocol};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Before login: most unsent output held for one client before its commands wait (a
/// client that pipelines CAPABILITY without reading the answers gets no more).
pub const PRELOGIN_MAX_OUT: usize = 16 * 1024;
/// After login: commands (and a half-done FETCH or SEARCH) go on only while less than
/// this waits to be written; each step adds at most about
/// [`crate::session::OUTPUT_PAUSE`] plus one command's answer.
pub const MAX_OUT: usize = 256 * 1024;
/// Before login: input held beyond the longest command line (the driver stops reading
/// there; a longer line is refused).
const PRELOGIN_SLACK: usize = 1024;
/// After login: input held beyond the longest command line (a large literal's bytes come
/// through this much at a time).
const SLACK: usize = 256 * 1024;

/// The auth request in flight: the password check, then the account's quota.
pub(crate) enum Auth {
    /// Verifying the password of this login name.
    Verify(AuthClient),
    /// The account was accepted: looking up its quota.
    Lookup(AuthClient, String),
}

impl Auth {
    pub(crate) fn client(&mut self) -> &mut AuthClient {
        match self {
            Auth::Verify(c) | Auth::Lookup(c, _) => c,
        }
    }
}

/// One IMAP connection's protocol side.
pub struct ImapConn {
    pub(crate) session: Session,
    /// The client's address, for log lines.
    pub(crate) peer: String,
    /// For STARTTLS.
    tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) auth: Option<Auth>,
    /// The per-address count of a connection not yet logged in, given back at login.
    pub(crate) ticket: Option<Ticket>,
    /// The user this session is counted under (`imapd_user_connection_limit`).
    pub(crate) counted_user: Option<String>,
    login_timeout: Duration,
    /// The session is over and the driver was told to close.
    closing: bool,
}

impl ImapConn {
    /// A connection's protocol side.
    pub fn new(
        session: Session,
        peer: String,
        tls: Option<Arc<rustls::ServerConfig>>,
        ticket: Option<Ticket>,
        login_timeout: Duration,
    ) -> ImapConn {
        ImapConn {
            session,
            peer,
            tls,
            auth: None,
            ticket,
            counted_user: None,
            login_timeout,
            closing: false,
        }
    }

    /// Moves the session's output to the connection, and closes once the session is over;
    /// returns whether there was output.
    pub(crate) fn emit(&mut self, io: &mut Io<'_>) -> bool {
        let out = self.session.take_output();
        if !out.is_empty() {
            io.send(&out);
        }
        if self.session.closed() && !self.closing {
            self.closing = true;
            io.close();
        }
        !out.is_empty()
    }

    /// Emits the session's output, then carries out what it needs.
    pub(crate) fn apply(&mut self, io: &mut Io<'_>, need: Option<Need>) {
        self.emit(io);
        match need {
            None => {}
            Some(Need::StartTls) if !self.tls.clone().is_some_and(|cfg| io.start_tls(cfg)) => {
                self.session.bye("TLS unavailable");
                self.emit(io);
            }
            Some(Need::StartTls) => {}
            Some(Need::Compress) => io.start_compress(),
            Some(Need::Verify { user, password }) => self.verify(io, user, password),
        }
    }

    fn verify(&mut self, io: &mut Io<'_>, user: String, password: String) {
        let req = AuthRequest::Verify {
            user,
            password,
            service: "imap".into(),
            client: Some(self.peer.clone()),
        };
        let started = AuthClient::start(std::path::Path::new(auth::SOCKET), &req);
        if let AuthRequest::Verify { mut password, .. } = req {
            zeroize::Zeroize::zeroize(&mut password);
        }
        self.ask(io, started.map(Auth::Verify));
    }

    /// Registers an auth request started on the connection's auxiliary token; one that
    /// could not be started is answered as auth being unavailable.
    pub(crate) fn ask(&mut self, io: &mut Io<'_>, started: Result<Auth, String>) {
        match started {
            Ok(mut a) => {
                let (registry, token) = io.aux();
                if registry
                    .register(a.client().source(), token, Interest::READABLE | Interest::WRITABLE)
                    .is_err()
                {
                    io.abort();
                } else {
                    self.auth = Some(a);
                }
            }
            Err(e) => {
                let need = self
                    .session
                    .auth_done_with(Err(LoginFailure::Unavailable(e)), io.lines());
                self.apply(io, need);
            }
        }
    }

    /// The answer to the auth request in flight, once it is whole: the next request (the
    /// quota after the password), or the login's outcome.
    pub(crate) fn answer(&mut self, reply: Result<AuthReply, String>) -> Step {
        match (self.auth.take(), reply) {
            (Some(Auth::Verify(_)), Ok(AuthReply::Ok { user })) => {
                let req = AuthRequest::Lookup { user: user.clone() };
                match AuthClient::start(std::path::Path::new(auth::SOCKET), &req) {
                    Ok(c) => Step::Ask(Auth::Lookup(c, user)),
                    Err(e) => Step::Done(Err(LoginFailure::Unavailable(e))),
                }
            }
            (Some(Auth::Verify(_)), Ok(AuthReply::Fail { reason })) => Step::Done(Err(LoginFailure::Refused(reason))),
            (Some(Auth::Verify(_)), Ok(AuthReply::TempFail { reason })) => {
                Step::Done(Err(LoginFailure::Unavailable(reason)))
            }
            (Some(Auth::Lookup(_, name)), Ok(AuthReply::Exists { quota, .. })) => {
                Step::Done(Ok(Account { name, quota }))
            }
            (Some(Auth::Lookup(_, name)), Ok(AuthReply::NoSuchUser)) => Step::Done(Ok(Account { name, quota: None })),
            (Some(Auth::Lookup(..)), Ok(other)) => {
                Step::Done(Err(LoginFailure::Unavailable(format!("quota lookup: {other:?}"))))
            }
            (_, Ok(other)) => Step::Done(Err(LoginFailure::Unavailable(format!("unexpected reply {other:?}")))),
            (_, Err(e)) => Step::Done(Err(LoginFailure::Unavailable(e))),
        }
    }
}

/// What an auth answer leads to.
pub(crate) enum Step {
    /// Another request.
    Ask(Auth),
    /// The login's outcome.
    Done(Result<Account, LoginFailure>),
}

impl Protocol for ImapConn {
    fn greeting(&mut self, io: &mut Io<'_>) {
        self.emit(io);
    }

    fn handle(&mut self, io: &mut Io<'_>) -> bool {
        if self.closing || self.auth.is_some() || self.session.waiting() {
            return false;
        }
        // a half-done command or held-back commands: one step, then the others' turn
        if self.session.busy() {
            let need = self.session.resume_with(io.lines());
            self.apply(io, need);
            return false;
        }
        let before = io.lines().pending_len();
        if before == 0 {
            return false;
        }
        let need = self.session.run(io.lines());
        let used = before - io.lines().pending_len();
        if used > 0 {
            io.touch();
        }
        let said = self.emit(io);
        let progress = used > 0 || said || need.is_some();
        self.apply(io, need);
        progress && !self.session.busy()
    }

    fn limits(&self) -> Limits {
        let max_line = self.session.settings.max_line;
        if self.session.authenticated() {
            Limits {
                input: max_line + SLACK,
                output: MAX_OUT,
            }
        } else {
            Limits {
                input: max_line.min(PRELOGIN_MAX_LINE) + PRELOGIN_SLACK,
                output: PRELOGIN_MAX_OUT,
            }
        }
    }

    fn waiting(&self) -> bool {
        self.auth.is_some() || self.session.waiting()
    }

    fn more(&self) -> bool {
        !self.closing && self.auth.is_none() && !self.session.waiting() && self.session.busy()
    }

    fn ending(&mut self, why: Ending, io: &mut Io<'_>) {
        match why {
            Ending::Login => {
                tracing::info!(
                    "login timeout from {}: not logged in within {}s",
                    self.peer,
                    self.login_timeout.as_secs()
                );
                self.session.bye("Login timeout: not authenticated in time");
            }
            Ending::Idle | Ending::Session | Ending::Phase => {
                tracing::info!(
                    "autologout of {}, user={}",
                    self.peer,
                    self.counted_user.as_deref().unwrap_or("-")
                );
                self.session.bye("Autologout; idle for too long");
            }
            Ending::Shutdown => self.session.bye("Server shutting down"),
        }
        self.emit(io);
    }

    /// About twice a second: a session in IDLE reports what changed in its folder (a
    /// folder without a watch is checked by its stamps).
    fn timer(&mut self, _now: Instant, io: &mut Io<'_>) -> bool {
        self.notify(io)
    }

    /// The folder watch saw a change: a session in IDLE tells its client at once.
    fn notify(&mut self, io: &mut Io<'_>) -> bool {
        if self.closing || self.auth.is_some() {
            return false;
        }
        self.session.poll();
        self.emit(io)
    }

    fn disconnected(&mut self, registry: &mio::Registry) {
        if let Some(mut a) = self.auth.take() {
            let _ = registry.deregister(a.client().source());
        }
        tracing::info!(
            "disconnect from {}, user={}",
            self.peer,
            self.counted_user.as_deref().unwrap_or("-")
        );
    }
}
