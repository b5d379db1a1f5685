//! The supervisor loop: one mio event loop over the listening sockets, the children's
//! status channels, signals, the control socket and timers.
//!
//! Spawning follows Postfix's master: a service's listeners are watched only while none of
//! its children can take a connection and it is below `maxproc`; a waiting client then
//! makes master start one more child, which counts as available until it says otherwise.
//! At `maxproc`, clients wait in the kernel's listen backlog and a warning is logged once.
//! Every child that still holds connections counts towards `maxproc`, one that retires by
//! itself (its `max_use` reached) too, so no mix of long-lived client connections makes
//! more than `maxproc` processes of a service. Only children master itself retired (reload,
//! stop, a removed service) stop counting at once, as in Postfix, so a reload never holds
//! new clients back behind the old generation's sessions.
//! A child that fails by itself (not killed by SIGKILL/SIGTERM) before it served anything
//! throttles its service for
//! `service_throttle_time` (a command that crashes on start-up is not respawned in a tight
//! loop); other abnormal exits are logged and the next client gets a fresh child.
//! Master itself never exits because a child misbehaved.

use crate::listeners::{self, Open};
use crate::services::{Child, Svc};
use crate::spawn::{SpawnSpec, raw, spawn};
use mio::net::UnixListener as MioUnixListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use postern_lib::config::Config;
use postern_lib::master_status::env;
use postern_lib::proto::trigger;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(0);
const CONTROL: Token = Token(1);
const FIRST_DYNAMIC: usize = 16;

/// What a token stands for.
enum Tok {
    Listener(String),
    Child(u32),
}

/// The running supervisor.
pub struct Master {
    pub(crate) config: Config,
    owner: Option<(u32, u32)>,
    foreground: bool,
    pub(crate) services: BTreeMap<String, Svc>,
    pub(crate) children: HashMap<u32, Child>,
    tokens: HashMap<Token, Tok>,
    child_tokens: HashMap<u32, Token>,
    next_token: usize,
    poll: Poll,
    signals: signal_hook_mio::v1_0::Signals,
    control: Option<MioUnixListener>,
    stopping: Option<Instant>,
    pub(crate) reloads: u64,
}

impl Master {
    /// Sets up the loop around services whose listeners are already open.
    pub fn new(
        config: Config,
        owner: Option<(u32, u32)>,
        foreground: bool,
        services: BTreeMap<String, Svc>,
        control: Option<std::os::unix::net::UnixListener>,
    ) -> std::io::Result<Master> {
        let poll = Poll::new()?;
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGCHLD, SIGHUP, SIGTERM, SIGINT])?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        let control = match control {
            Some(l) => {
                l.set_nonblocking(true)?;
                let mut l = MioUnixListener::from_std(l);
                poll.registry().register(&mut l, CONTROL, Interest::READABLE)?;
                Some(l)
            }
            None => None,
        };
        Ok(Master {
            config,
            owner,
            foreground,
            services,
            children: HashMap::new(),
            tokens: HashMap::new(),
            child_tokens: HashMap::new(),
            next_token: FIRST_DYNAMIC,
            poll,
            signals,
            control,
            stopping: None,
            reloads: 0,
        })
    }

    /// The next waiting control connection, as a blocking std stream.
    pub(crate) fn accept_control(&mut self) -> Option<std::os::unix::net::UnixStream> {
        let l = self.control.as_ref()?;
        match l.accept() {
            Ok((s, _)) => Some(std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(s))),
            Err(_) => None,
        }
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// Runs until stopped and every child has exited.
    pub fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(128);
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.stopping {
                if self.children.is_empty() {
                    tracing::info!("terminating on signal");
                    return Ok(());
                }
                if now >= deadline {
                    for pid in self.children.keys() {
                        tracing::warn!("process pid {pid} did not exit in time: killing it");
                        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
                    }
                    self.stopping = Some(now + Duration::from_secs(3600));
                }
            } else {
                self.adjust_all(now);
            }
            let timeout = self
                .next_timer(now)
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.on_signals(),
                    CONTROL => crate::control::serve(self),
                    t => match self.tokens.get(&t) {
                        Some(Tok::Listener(key)) => {
                            let key = key.clone();
                            self.on_client_waiting(&key);
                        }
                        Some(Tok::Child(pid)) => {
                            let pid = *pid;
                            // (an end or error that came with the records: read on to see it)
                            self.read_status(pid, ev.is_read_closed() || ev.is_error());
                        }
                        None => {}
                    },
                }
            }
        }
    }

    fn next_timer(&self, now: Instant) -> Instant {
        let mut next = now + Duration::from_secs(1);
        if let Some(d) = self.stopping {
            next = next.min(d);
        }
        for s in self.services.values() {
            for t in [s.throttled_until, s.next_wakeup].into_iter().flatten() {
                next = next.min(t);
            }
        }
        next
    }

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGCHLD => self.reap(),
                SIGHUP if self.stopping.is_none() => self.reload(),
                SIGTERM | SIGINT => self.begin_stop(),
                _ => {}
            }
        }
        // A SIGCHLD may be merged with others; reaping is cheap and idempotent.
        self.reap();
    }

    /// Per-service housekeeping: throttle expiry, min_procs, wakeups, listener watching.
    fn adjust_all(&mut self, now: Instant) {
        let keys: Vec<String> = self.services.keys().cloned().collect();
        for key in keys {
            self.adjust(&key, now);
        }
    }

    fn adjust(&mut self, key: &str, now: Instant) {
        let Some(svc) = self.services.get_mut(key) else { return };
        if svc.throttled_until.is_some_and(|t| now >= t) {
            svc.throttled_until = None;
        }
        if let Some(t) = svc.next_wakeup
            && now >= t
        {
            svc.next_wakeup = Some(now + svc.def.entry.wakeup.duration());
            // Master's wakeup (as Postfix's): one byte, non-blocking; a full backlog
            // means the service is awake anyway.
            if let Some(path) = svc.def.listen.first()
                && !trigger::send(std::path::Path::new(path), trigger::WAKEUP)
            {
                tracing::debug!("wakeup {path}: not delivered");
            }
        }
        while let Some(svc) = self.services.get(key) {
            if svc.throttled(now) || svc.total >= svc.def.entry.min_procs || svc.total >= svc.def.maxproc {
                break;
            }
            if !self.spawn(key) {
                break;
            }
        }
        let Some(svc) = self.services.get_mut(key) else { return };
        let want = svc.avail == 0 && svc.total < svc.def.maxproc && !svc.throttled(now) && !svc.listeners.is_empty();
        // A service limited to one process (qmgr, pickup) is busy by design: no warning.
        if svc.avail == 0 && svc.total >= svc.def.maxproc && svc.def.maxproc > 1 && !svc.warned_limit {
            svc.warned_limit = true;
            tracing::warn!(
                "service {key} has reached its process limit {}: new clients wait in the listen backlog and may experience noticeable delays",
                svc.def.maxproc
            );
        }
        if want != svc.watching {
            let fds: Vec<i32> = svc.listeners.iter().map(|o| o.fd.as_raw_fd()).collect();
            svc.watching = want;
            if want {
                for fd in fds {
                    let t = self.token();
                    if self
                        .poll
                        .registry()
                        .register(&mut SourceFd(&fd), t, Interest::READABLE)
                        .is_ok()
                    {
                        self.tokens.insert(t, Tok::Listener(key.to_string()));
                    }
                }
            } else {
                self.unwatch(key);
            }
        }
    }

    fn unwatch(&mut self, key: &str) {
        let Some(svc) = self.services.get_mut(key) else { return };
        svc.watching = false;
        for o in &svc.listeners {
            let _ = self.poll.registry().deregister(&mut SourceFd(&o.fd.as_raw_fd()));
        }
        self.tokens.retain(|_, t| !matches!(t, Tok::Listener(k) if k == key));
    }

    fn on_client_waiting(&mut self, key: &str) {
        let now = Instant::now();
        let Some(svc) = self.services.get(key) else { return };
        if self.stopping.is_none() && svc.avail == 0 && svc.total < svc.def.maxproc && !svc.throttled(now) {
            self.spawn(key);
        }
        // Stop watching (the new child is available) or re-arm if still needed.
        self.unwatch(key);
        self.adjust(key, now);
    }

    /// Starts one child of `key`. On failure the service is throttled.
    fn spawn(&mut self, key: &str) -> bool {
        let Some(svc) = self.services.get(key) else {
            return false;
        };
        let run_as = (self.owner.is_some() && svc.def.entry.unprivileged).then(|| self.config.main.mail_owner.clone());
        let mut vars = vec![
            (env::SERVICE, key.to_string()),
            (env::CONFIG_DIR, self.config.dir.to_string_lossy().into_owned()),
            (
                env::CONFIG_SNAPSHOT,
                self.config.snapshot_file().to_string_lossy().into_owned(),
            ),
            (env::MAX_USE, svc.def.max_use.to_string()),
            (env::MAX_IDLE, svc.def.max_idle.0.to_string()),
            (env::MAX_CONNS, svc.def.max_conns.to_string()),
        ];
        if let Some(u) = run_as {
            vars.push((env::RUN_AS, u));
        }
        if self.foreground {
            vars.push((env::LOG_STDERR, "1".into()));
        }
        let spec = SpawnSpec {
            program: &svc.def.program,
            args: &svc.def.entry.args,
            listeners: svc.listeners.iter().map(|o: &Open| (raw(&o.fd), o.kind)).collect(),
            vars,
        };
        match spawn(&spec) {
            Ok((pid, status)) => {
                let _ = status.set_nonblocking(true);
                let mut status = mio::net::UnixStream::from_std(status);
                let t = self.token();
                if self
                    .poll
                    .registry()
                    .register(&mut status, t, Interest::READABLE)
                    .is_ok()
                {
                    self.tokens.insert(t, Tok::Child(pid));
                    self.child_tokens.insert(pid, t);
                }
                self.children.insert(
                    pid,
                    Child {
                        pid,
                        service: key.to_string(),
                        status,
                        reader: Default::default(),
                        available: true,
                        connections: 0,
                        served: 0,
                        retiring: false,
                        released: false,
                        exiting: false,
                    },
                );
                self.recount(key);
                tracing::debug!("service {key}: started pid {pid}");
                true
            }
            Err(e) => {
                let throttle = self.config.main.service_throttle_time;
                tracing::error!(
                    "service {key}: cannot execute {}: {e}; throttling for {throttle}",
                    spec.program.display()
                );
                if let Some(svc) = self.services.get_mut(key) {
                    svc.throttled_until = Some(Instant::now() + throttle.duration());
                }
                false
            }
        }
    }

    /// Reads a child's status records. A short read emptied the channel: edge-triggered
    /// readiness announces anything written after it, so no read is made to hear `EAGAIN`
    /// (one system call per wake-up) unless `to_end`: the end of the channel may have come
    /// with the records, and no later event would announce it.
    fn read_status(&mut self, pid: u32, to_end: bool) {
        let mut buf = [0u8; 512];
        loop {
            let Some(child) = self.children.get_mut(&pid) else {
                return;
            };
            match child.status.read(&mut buf) {
                Ok(0) => {
                    self.close_status(pid);
                    return;
                }
                Ok(n) => match child.reader.push(&buf[..n]) {
                    Ok(records) => {
                        for r in records {
                            self.apply_status(pid, r);
                        }
                        if n < buf.len() && !to_end {
                            return;
                        }
                    }
                    Err(_) => {
                        tracing::warn!("process pid {pid} sent a malformed status record; ignoring it from now on");
                        self.close_status(pid);
                        return;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close_status(pid);
                    return;
                }
            }
        }
    }

    fn apply_status(&mut self, pid: u32, r: postern_lib::master_status::Status) {
        let Some(child) = self.children.get_mut(&pid) else {
            return;
        };
        child.connections = r.connections;
        child.served = r.served;
        // A retiring child takes no more connections, but the ones it holds still cost
        // memory: it keeps counting towards maxproc until they end (see `recount`).
        // No signal: it exits by itself.
        child.retiring |= r.retiring;
        child.available = r.available && !child.retiring && !child.exiting;
        let key = child.service.clone();
        self.recount(&key);
    }

    /// Recomputes a service's process counts from its children: every child counts
    /// towards `maxproc` unless it is retiring and holds no connection (it is about to
    /// exit) or master retired it (reload, stop), so no number of long-lived connections can make more than `maxproc`
    /// processes; `avail` counts those that can take another connection.
    fn recount(&mut self, key: &str) {
        let (mut total, mut avail) = (0u32, 0u32);
        for c in self.children.values().filter(|c| c.service == key) {
            if !c.retiring || (c.connections > 0 && !c.released) {
                total += 1;
            }
            if c.available {
                avail += 1;
            }
        }
        if let Some(svc) = self.services.get_mut(key) {
            svc.total = total;
            svc.avail = avail;
        }
    }

    /// The child closed its status channel: it is exiting; it takes no more clients.
    fn close_status(&mut self, pid: u32) {
        if let Some(t) = self.child_tokens.remove(&pid) {
            self.tokens.remove(&t);
        }
        let Some(child) = self.children.get_mut(&pid) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut child.status);
        if !child.exiting {
            child.exiting = true;
            if let Some(svc) = self.services.get_mut(&child.service) {
                svc.exiting += 1;
                svc.last_exiting = Some(Instant::now());
            }
        }
        child.available = false;
        let key = child.service.clone();
        self.recount(&key);
    }

    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            // Killed from outside (an operator, the OOM killer) says nothing about the
            // program; only a child that fails by itself before serving throttles.
            let (pid, abnormal, external) = match status {
                WaitStatus::Exited(pid, 0) => (pid, None, false),
                WaitStatus::Exited(pid, code) => (pid, Some(format!("exit status {code}")), false),
                WaitStatus::Signaled(pid, sig, _) => (
                    pid,
                    Some(format!("killed by signal {}", sig as i32)),
                    matches!(sig, Signal::SIGKILL | Signal::SIGTERM),
                ),
                _ => continue,
            };
            let pid = pid.as_raw() as u32;
            // Records the child wrote before dying are still readable.
            self.read_status(pid, true);
            self.close_status(pid);
            let Some(child) = self.children.remove(&pid) else {
                continue;
            };
            let stopping = self.stopping.is_some();
            let throttle = self.config.main.service_throttle_time;
            let Some(svc) = self.services.get_mut(&child.service) else {
                continue;
            };
            if child.exiting {
                svc.exiting = svc.exiting.saturating_sub(1);
            }
            svc.served_by_exited += child.served;
            if let Some(how) = abnormal {
                let program = svc.def.program.display().to_string();
                tracing::warn!("process {program} pid {pid} {how}");
                if !stopping && !child.retiring {
                    svc.restarts += 1;
                    if child.served == 0 && !external {
                        svc.throttled_until = Some(Instant::now() + throttle.duration());
                        tracing::warn!(
                            "{program}: bad command startup -- throttling service {} for {throttle}",
                            child.service
                        );
                    }
                }
            }
            self.recount(&child.service);
        }
    }

    /// Tells a child to finish its current work and exit (reload, stop, service removed);
    /// like Postfix's master, it stops counting towards `maxproc` at once.
    fn retire(&mut self, pid: u32) {
        let Some(child) = self.children.get_mut(&pid) else {
            return;
        };
        if child.retiring {
            return;
        }
        child.retiring = true;
        child.released = true;
        child.available = false;
        let key = child.service.clone();
        self.recount(&key);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }

    fn retire_service_children(&mut self, key: &str) {
        let pids: Vec<u32> = self
            .children
            .values()
            .filter(|c| c.service == key)
            .map(|c| c.pid)
            .collect();
        for pid in pids {
            self.retire(pid);
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        tracing::info!(
            "stopping: closing listeners and asking {} processes to finish",
            self.children.len()
        );
        self.stopping = Some(Instant::now() + self.config.main.shutdown_timeout.duration());
        let keys: Vec<String> = self.services.keys().cloned().collect();
        for key in &keys {
            self.unwatch(key);
            if let Some(svc) = self.services.get_mut(key) {
                listeners::close_all(std::mem::take(&mut svc.listeners));
            }
        }
        let pids: Vec<u32> = self.children.keys().copied().collect();
        for pid in pids {
            self.retire(pid);
        }
        if let Some(mut c) = self.control.take() {
            let _ = self.poll.registry().deregister(&mut c);
        }
    }

    /// SIGHUP: reread both files and apply the differences. A bad configuration is
    /// refused and the running one stays.
    fn reload(&mut self) {
        let new = match crate::startup::load_checked(&self.config.dir) {
            Ok((c, snapshot)) => match crate::startup::write_snapshot(&c, &snapshot) {
                Ok(()) => c,
                Err(e) => {
                    tracing::warn!("reload refused, keeping the running configuration: {e}");
                    return;
                }
            },
            Err(e) => {
                tracing::warn!("reload refused, keeping the running configuration: {e}");
                return;
            }
        };
        let main_changed = new.main != self.config.main;
        // Open every new or moved listener first, so a failure changes nothing.
        let mut opened: BTreeMap<String, Vec<Open>> = BTreeMap::new();
        for svc in &new.services {
            let key = svc.key();
            let same_listen = self.services.get(&key).is_some_and(|old| old.def.listen == svc.listen);
            if !same_listen {
                match listeners::open_all(svc, self.owner) {
                    Ok(o) => {
                        opened.insert(key, o);
                    }
                    Err(e) => {
                        tracing::warn!("reload refused, keeping the running configuration: {e}");
                        for (_, o) in opened {
                            listeners::close_all(o);
                        }
                        return;
                    }
                }
            }
        }
        let new_keys: Vec<String> = new.services.iter().map(|s| s.key()).collect();
        let removed: Vec<String> = self
            .services
            .keys()
            .filter(|k| !new_keys.contains(k))
            .cloned()
            .collect();
        for key in removed {
            self.unwatch(&key);
            self.retire_service_children(&key);
            if let Some(svc) = self.services.remove(&key) {
                listeners::close_all(svc.listeners);
            }
            tracing::info!("service {key} removed");
        }
        for def in new.services.iter().cloned() {
            let key = def.key();
            match self.services.get(&key).map(|old| old.def == def) {
                Some(true) if !main_changed => {}
                Some(_) => {
                    self.unwatch(&key);
                    self.retire_service_children(&key);
                    let Some(svc) = self.services.get_mut(&key) else {
                        continue;
                    };
                    if let Some(o) = opened.remove(&key) {
                        listeners::close_all(std::mem::replace(&mut svc.listeners, o));
                    }
                    let wakeup_changed = svc.def.entry.wakeup != def.entry.wakeup;
                    svc.def = def;
                    svc.warned_limit = false;
                    if wakeup_changed {
                        svc.next_wakeup =
                            (svc.def.entry.wakeup.0 > 0).then(|| Instant::now() + svc.def.entry.wakeup.duration());
                    }
                }
                None => {
                    let o = opened.remove(&key).unwrap_or_default();
                    self.services.insert(key.clone(), Svc::new(def, o));
                    tracing::info!("service {key} added");
                }
            }
        }
        self.config = new;
        self.reloads += 1;
        tracing::info!("reload -- configuration {}", self.config.dir.display());
    }
}
