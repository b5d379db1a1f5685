//! The many-connections-per-process skeleton: for daemons that hold network clients which
//! may be slow, idle or hostile for minutes — smtpd, pop3d, imapd. One mio event loop per
//! process; the daemon's protocol code is sans-I/O and is driven from the callbacks of
//! [`EventService`].
//!
//! The skeleton owns the listening sockets, the status channel to master and the signal
//! pipe. It accepts while the process has fewer than `max_conns` connections (the
//! per-process connection cap: with the daemon's per-connection buffer bounds it bounds
//! the process's memory), tells master whether it can take more, and exits when it has
//! been idle for `max_idle`, when it has served `max_use` connections and has none open
//! (Postfix's multi_server: `max_use` recycles a process only between clients, it never
//! stops one from accepting, so a used-up child does not sit on long-lived connections
//! while master starts others beside it), or after SIGTERM / master's death once every
//! connection has closed (master enforces its own deadline on top). On SIGTERM or
//! master's death it closes its listening sockets at once (see `begin_stop`).

use super::{Accepted, Context, Listener, Setup, drain, fatal, prepare};
use crate::master_status::{Reports, Status};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub use crate::skeleton::conn::RESERVED_TOKENS;
const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
const STATUS_TOKEN: Token = Token(usize::MAX - 2);
const LISTEN_BASE: usize = usize::MAX - 512;
/// How often [`EventService::tick`] runs.
pub const TICK: Duration = Duration::from_millis(500);

/// Handed to the daemon's callbacks.
pub struct EventLoop<'a> {
    registry: &'a Registry,
}

impl EventLoop<'_> {
    /// The registry to register client sockets with (tokens below [`RESERVED_TOKENS`]).
    pub fn registry(&self) -> &Registry {
        self.registry
    }
}

/// A daemon driven by the event skeleton.
pub trait EventService {
    /// A new client connection; the daemon registers it (after making it non-blocking).
    fn accept(&mut self, lp: &EventLoop<'_>, ctx: &Context, conn: Accepted);
    /// Readiness for one of the daemon's tokens.
    fn ready(&mut self, lp: &EventLoop<'_>, ctx: &Context, event: &mio::event::Event);
    /// Called about every [`TICK`] for timeouts.
    fn tick(&mut self, _lp: &EventLoop<'_>, _ctx: &Context, _now: Instant) {}
    /// Connections open now.
    fn connections(&self) -> usize;
    /// The process is stopping: no more connections will come; finish or close the rest.
    fn stop(&mut self, _lp: &EventLoop<'_>, _ctx: &Context) {}
}

/// Runs an event-driven daemon. `pre_init` runs before privileges are dropped.
pub fn event_server<S: EventService>(command: &str, pre_init: impl FnOnce(&Context) -> Result<S, String>) -> ExitCode {
    let (mut setup, mut service) = match prepare(command, pre_init) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match run(&mut setup, &mut service) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(command, &format!("event loop: {e}")),
    }
}

struct State {
    accepted: u64,
    listening: bool,
    stopping: bool,
    /// What was told to master: only a change master's accounting needs goes at once
    /// (the counts follow within [`TICK`] plus [`crate::master_status::REFRESH`]: the loop
    /// wakes at least every tick), so master is not woken per connection.
    reports: Reports,
    idle_since: Option<Instant>,
}

fn run<S: EventService>(setup: &mut Setup, service: &mut S) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let lp = EventLoop { registry: &registry };
    let sig_fd = setup.signals.as_raw_fd();
    registry.register(&mut SourceFd(&sig_fd), SIGNAL_TOKEN, Interest::READABLE)?;
    if let Some(st) = &setup.status {
        registry.register(&mut SourceFd(&st.as_raw_fd()), STATUS_TOKEN, Interest::READABLE)?;
    }
    let mut st = State {
        accepted: 0,
        listening: false,
        stopping: false,
        reports: Reports::default(),
        idle_since: Some(Instant::now()),
    };
    set_listening(&registry, &setup.listeners, &mut st, true)?;
    let mut events = Events::with_capacity(256);
    let mut next_tick = Instant::now() + TICK;
    loop {
        let conns = service.connections();
        let can_accept = !st.stopping && conns < setup.ctx.max_conns;
        if can_accept != st.listening {
            set_listening(&registry, &setup.listeners, &mut st, can_accept)?;
        }
        // Availability drives master's spawning; the counts feed `postern status`.
        let status = Status {
            available: can_accept,
            connections: conns as u32,
            served: st.accepted,
            retiring: st.stopping,
        };
        if st.reports.due(status, Instant::now()) && !setup.report(status) {
            begin_stop(&lp, service, setup, &mut st);
        }
        if conns == 0 {
            if st.stopping || st.accepted >= setup.ctx.max_use {
                return Ok(());
            }
            let since = *st.idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= setup.ctx.max_idle {
                return Ok(());
            }
        } else {
            st.idle_since = None;
        }
        let now = Instant::now();
        let timeout = next_tick.saturating_duration_since(now);
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                SIGNAL_TOKEN if drain(&mut setup.signals) => begin_stop(&lp, service, setup, &mut st),
                SIGNAL_TOKEN => {}
                STATUS_TOKEN => {
                    if let Some(s) = &setup.status {
                        let _ = registry.deregister(&mut SourceFd(&s.as_raw_fd()));
                    }
                    setup.status = None;
                    begin_stop(&lp, service, setup, &mut st);
                }
                Token(t) if t >= LISTEN_BASE && t < LISTEN_BASE + setup.listeners.len() => {
                    accept_all(&lp, service, setup, &mut st, t - LISTEN_BASE);
                }
                Token(t) if t < RESERVED_TOKENS => service.ready(&lp, &setup.ctx, event),
                _ => {}
            }
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + TICK;
            service.tick(&lp, &setup.ctx, Instant::now());
        }
    }
}

/// Stops taking connections: the process's copies of the listening sockets are closed at
/// once, not when the last session ends. A stopping child may keep serving its sessions
/// for minutes (an SMTP client sending message after message); were it to keep a listener,
/// clients would queue on a socket nobody accepts from, and after master's death a new
/// master could not bind the TCP port (`Address already in use`) until every old
/// session ended. Master's own copy (on reload or stop) is unaffected.
fn begin_stop<S: EventService>(lp: &EventLoop<'_>, service: &mut S, setup: &mut Setup, st: &mut State) {
    if !st.stopping {
        st.stopping = true;
        let _ = deregister_all(lp.registry(), &setup.listeners);
        st.listening = false;
        setup.listeners.clear();
        service.stop(lp, &setup.ctx);
    }
}

fn accept_all<S: EventService>(lp: &EventLoop<'_>, service: &mut S, setup: &Setup, st: &mut State, index: usize) {
    let Some(listener) = setup.listeners.get(index) else {
        return;
    };
    while !st.stopping && service.connections() < setup.ctx.max_conns {
        match listener.accept() {
            Ok(conn) => {
                st.accepted += 1;
                service.accept(lp, &setup.ctx, conn);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("accept: {e}");
                return;
            }
        }
    }
    // Stopped accepting with connections possibly still queued: make sure we are woken
    // again (re-registration re-arms the edge) once there is room.
    st.listening = false;
    let _ = deregister_all(lp.registry(), &setup.listeners);
}

fn set_listening(registry: &Registry, listeners: &[Listener], st: &mut State, on: bool) -> std::io::Result<()> {
    if on {
        for (i, l) in listeners.iter().enumerate() {
            let fd = l.fd().as_raw_fd();
            registry.register(&mut SourceFd(&fd), Token(LISTEN_BASE + i), Interest::READABLE)?;
        }
    } else if st.listening {
        deregister_all(registry, listeners)?;
    }
    st.listening = on;
    Ok(())
}

fn deregister_all(registry: &Registry, listeners: &[Listener]) -> std::io::Result<()> {
    for l in listeners {
        let fd = l.fd().as_raw_fd();
        let _ = registry.deregister(&mut SourceFd(&fd));
    }
    Ok(())
}
