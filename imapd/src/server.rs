//! The imapd process: the event skeleton's service, lib's gated pool of connections
//! ([`Gated`]) around [`ImapConn`] — the per-address gate before a session starts, the
//! auth answers, the per-user session count, and the folder watch that wakes sessions in
//! IDLE.
//!
//! Before a session starts, its client address is counted by anvil over all imapd
//! processes of the service (`login_client_connection_count_limit` connections not yet
//! logged in per address; in-process while anvil is away): the connection over the limit
//! gets `* BYE [UNAVAILABLE]` and is closed. A session's count is given back at login.
//! Password checks go to the auth daemon (`private/auth`) on the connection's auxiliary
//! token, so a slow or throttled answer never stalls the loop.
//!
//! Memory bound per process: at most `max_conns` (master.toml, default
//! `default_connection_limit`, 200) connections; before login each holds at most
//! [`crate::session::PRELOGIN_MAX_LINE`] plus 1 KB and one read of unparsed input, one
//! command of up to a line and two [`crate::session::PRELOGIN_MAX_LITERAL`] literals,
//! [`crate::conn::PRELOGIN_MAX_OUT`] plus one step's answers of output, and as much
//! ciphertext as input, plus rustls' own buffers with TLS; and it must log in within
//! `imapd_login_timeout` of connecting, however much it sends. With `maxproc` processes
//! (which master holds, see `master/src/supervisor.rs`) that bounds what unauthenticated
//! clients can make a service hold, however many they are.
//!
//! After login: the literals held in memory by all sessions together fit
//! `imapd_literal_memory_limit` ([`LiteralBudget`], reserved when announced); APPEND
//! literals over [`crate::session::SPOOL_ABOVE`] (64 KB) are not among them: they go to
//! the folder's `tmp/` as they arrive ([`crate::append_spool`]) and cost a read. The one
//! command running at a time adds its parsed copy (up to `imapd_max_literal` plus a
//! line, for a command with a literal held in memory, and what its command file makes of
//! it). Each connection holds besides at most a line and 256 KB (and a read) of unparsed
//! input, as much ciphertext, and output: commands run only while less than
//! [`crate::conn::MAX_OUT`] (256 KB) waits and stop at [`crate::session::OUTPUT_PAUSE`],
//! so about 512 KB plus one command's answer — for FETCH at most
//! [`crate::cmd_fetch::FETCH_CHUNK`] plus 128 KB (a whole-message body over
//! [`crate::cmd_fetch::STREAM_ABOVE`] is streamed from its file), or for a message under
//! that size its response ([`crate::cmd_fetch::MAX_PER_MESSAGE`] times its size). Items
//! that take a large message apart (BODYSTRUCTURE, `BODY[1]`, BINARY) read it into
//! memory for its turn; the parts they answer stay until the client has read them. So:
//!
//! `max_conns × (about 1 MB + parts answered of one message)
//!   + imapd_literal_memory_limit + imapd_max_literal + what one command makes`.

use crate::conn::{ImapConn, Step};
use crate::literal_budget::LiteralBudget;
use crate::session::{Session, Settings};
use mio::{Interest, Token};
use postern_lib::anvil::gate::{Ticket, refuse_login_client};
use postern_lib::anvil::local::Refusal;
use postern_lib::config::Cidr;
use postern_lib::skeleton::conn::{Deadlines, FIRST_FREE, Front, Gated, Io, Start, by_address, inet};
use postern_lib::skeleton::event::{EventLoop, EventService};
use postern_lib::skeleton::{Accepted, Context};
use rustls::ServerConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The inotify descriptor watching the selected folders
/// ([`postern_mailbox::shared`]); below the gate's and the waker's tokens.
const WATCH: Token = Token(FIRST_FREE);

/// The imapd service: the gated pool and the folder watch.
pub struct Imapd {
    gated: Gated<Imap>,
    /// The folder watch was set up (or found unavailable).
    watching: bool,
    /// `imapd_folder_keep_time`: how long a folder's state outlives its last session.
    keep: Duration,
}

/// imapd's side of the gated pool: how a session starts or is refused, the auth answers
/// and the sessions per user.
pub struct Imap {
    settings: Settings,
    tls_config: Option<Arc<ServerConfig>>,
    implicit_tls: bool,
    /// `imapd_secure_networks`: clients whose cleartext LOGIN is taken without TLS.
    secure_networks: Vec<Cidr>,
    /// `imapd_literal_memory_limit`, shared by the sessions.
    literal_budget: LiteralBudget,
    per_user: HashMap<String, u32>,
    user_limit: u32,
    timeout: Duration,
    login_timeout: Duration,
    login_limit: u32,
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
        let front = Imap {
            settings: Settings {
                mail_base,
                max_literal: m.imapd_max_literal,
                max_line: m.imapd_max_line_length as usize,
                hostname: m.myhostname.clone(),
                starttls: tls_config.is_some() && !implicit_tls,
            },
            tls_config,
            implicit_tls,
            secure_networks: m.imapd_secure_networks.clone(),
            literal_budget: LiteralBudget::new(m.imapd_literal_memory_limit),
            per_user: HashMap::new(),
            user_limit: m.imapd_user_connection_limit,
            timeout: Duration::from_secs(m.imapd_timeout.0),
            login_timeout: Duration::from_secs(m.imapd_login_timeout.0),
            login_limit: m.login_client_connection_count_limit,
        };
        Imapd {
            gated: Gated::new(front, &ctx.service, m.login_client_connection_count_limit, 0),
            watching: false,
            keep: m.imapd_folder_keep_time.duration(),
        }
    }

    /// Registers the process's folder watch (once): a change in a selected folder then
    /// wakes the loop, and sessions in IDLE hear of it at once, not at the next tick.
    fn watch(&mut self, registry: &mio::Registry) {
        if std::mem::replace(&mut self.watching, true) {
            return;
        }
        // the registry is the loop thread's: set up from it
        postern_mailbox::shared::set_keep(postern_mailbox::shared::Keep::for_time(self.keep));
        if let Some(fd) = postern_mailbox::shared::enable_watching() {
            let res = registry.register(&mut mio::unix::SourceFd(&fd), WATCH, Interest::READABLE);
            if let Err(e) = res {
                tracing::warn!("folder watch: {e}; folders are checked by their stamps");
            }
        }
    }
}

impl EventService for Imapd {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        self.watch(lp.registry());
        self.gated.arrive(lp.registry(), conn);
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        if event.token() != WATCH {
            return self.gated.event(lp.registry(), event);
        }
        // each shared state syncs once; sessions whose view it matches do nothing
        if postern_mailbox::shared::watch_events() {
            self.gated.notify(lp.registry());
        }
    }

    fn tick(&mut self, lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        // a folder without a watch looks at its stamps once this tick, for all its sessions
        postern_mailbox::shared::new_round();
        // folder states kept warm past imapd_folder_keep_time go
        postern_mailbox::shared::expire();
        self.gated.timers(lp.registry(), now);
    }

    fn connections(&self) -> usize {
        self.gated.len()
    }

    fn stop(&mut self, lp: &EventLoop<'_>, _ctx: &Context) {
        self.gated.shut(lp.registry());
    }
}

impl Front for Imap {
    type Proto = ImapConn;
    type Item = Accepted;

    fn arrive(&mut self, conn: Accepted) -> Option<(Accepted, Option<IpAddr>)> {
        by_address(conn)
    }

    /// Tells a client over its address's limit so, and closes (RFC 5530 `UNAVAILABLE`).
    fn refuse(&mut self, conn: Accepted, ip: IpAddr, why: Refusal) {
        let reply = format!("* BYE [UNAVAILABLE] Too many connections from {ip} not logged in, try again later");
        refuse_login_client(conn, ip, why, self.login_limit, &reply);
    }

    /// Starts the session of an admitted client: greeting and all.
    fn start(&mut self, conn: Accepted, ticket: Option<Ticket>) -> Result<Start<ImapConn>, ImapConn> {
        let (peer, secure) = match inet(&conn.peer) {
            Some(a) => (
                a.ip().to_string(),
                a.ip().is_loopback() || self.secure_networks.iter().any(|n| n.contains(a.ip())),
            ),
            None => ("local".to_string(), true),
        };
        let implicit = self.implicit_tls.then(|| self.tls_config.clone()).flatten();
        let mut session = Session::new(self.settings.clone(), secure, implicit.is_some());
        session.set_peer(&peer);
        session.set_literal_budget(self.literal_budget.clone());
        tracing::info!("connect from {peer}");
        let proto = ImapConn::new(session, peer, self.tls_config.clone(), ticket, self.login_timeout);
        let deadlines = Deadlines {
            idle: self.timeout,
            login: Some(self.login_timeout),
            session: None,
        };
        Start::tcp(conn.stream, proto, implicit, deadlines).inspect_err(|_| tracing::warn!("imapd serves TCP only"))
    }

    fn ticket(&mut self, c: &mut ImapConn) -> Option<Ticket> {
        c.ticket.take()
    }

    /// Logged in: no longer counted against the address's limit.
    fn logged_in(&self, c: &ImapConn) -> bool {
        c.session.authenticated()
    }

    /// An answer of auth: the quota lookup after a password accepted, or the login's
    /// outcome (refused with `[LIMIT]` when the user has too many sessions).
    fn aux_event(
        &mut self,
        registry: &mio::Registry,
        c: &mut ImapConn,
        io: &mut Io<'_>,
        _slot: usize,
        _event: &mio::event::Event,
    ) -> bool {
        let Some(a) = c.auth.as_mut() else {
            return false;
        };
        let reply = match a.client().progress() {
            Ok(None) => return false,
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
        };
        let _ = registry.deregister(a.client().source());
        let result = match c.answer(reply) {
            Step::Ask(next) => {
                c.ask(io, Ok(next));
                return true;
            }
            Step::Done(result) => result,
        };
        let over = match &result {
            Ok(account) => self.per_user.get(&account.name).copied().unwrap_or(0) >= self.user_limit,
            Err(_) => false,
        };
        let need = if over {
            c.session.auth_limited_with(io.lines())
        } else {
            c.session.auth_done_with(result, io.lines())
        };
        // count the sessions of each user (the limit is applied when auth answers)
        if c.counted_user.is_none()
            && let Some(u) = c.session.user().map(str::to_string)
        {
            *self.per_user.entry(u.clone()).or_insert(0) += 1;
            c.counted_user = Some(u);
            io.authenticated();
        }
        c.apply(io, need);
        true
    }

    /// Gives back what a closed connection held: its count under its user.
    fn closed(&mut self, _registry: &mio::Registry, c: &mut ImapConn) {
        if let Some(u) = c.counted_user.take()
            && let Some(n) = self.per_user.get_mut(&u)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(&u);
            }
        }
    }
}
