//! What master keeps per service and per child: counts that drive spawning (Postfix's
//! "available" processes), the throttle, the wakeup timer, and the figures `postern
//! status` shows.

use crate::listeners::Open;
use mio::net::UnixStream;
use postern_lib::config::Service;
use postern_lib::master_status::StatusReader;
use std::time::Instant;

/// How long an exiting, unreaped child holds back spawning.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A service and its runtime state.
pub struct Svc {
    /// The current definition.
    pub def: Service,
    /// Its open listeners.
    pub listeners: Vec<Open>,
    /// Whether master watches the listeners for waiting clients.
    pub watching: bool,
    /// Children that count towards `maxproc`: all but retiring ones that hold no
    /// connection any more.
    pub total: u32,
    /// Of those, children that can take another connection.
    pub avail: u32,
    /// No spawning before this instant.
    pub throttled_until: Option<Instant>,
    /// The process-limit warning was logged for this episode.
    pub warned_limit: bool,
    /// Abnormal exits.
    pub restarts: u64,
    /// Connections served by children that have exited.
    pub served_by_exited: u64,
    /// Next wakeup trigger.
    pub next_wakeup: Option<Instant>,
    /// Children that closed their status channel (they are exiting) but are not reaped.
    pub exiting: u32,
    /// When the last of those closed it.
    pub last_exiting: Option<Instant>,
}

impl Svc {
    /// A service with no children yet.
    pub fn new(def: Service, listeners: Vec<Open>) -> Svc {
        let next_wakeup = (def.entry.wakeup.0 > 0).then(|| Instant::now() + def.entry.wakeup.duration());
        Svc {
            def,
            listeners,
            watching: false,
            total: 0,
            avail: 0,
            throttled_until: None,
            warned_limit: false,
            restarts: 0,
            served_by_exited: 0,
            next_wakeup,
            exiting: 0,
            last_exiting: None,
        }
    }

    /// Whether spawning is suspended now: throttled, or a child is exiting and master has
    /// not yet learned how (a start-up crash must throttle before anything respawns; a
    /// child that closes its channel without exiting delays spawning by one second only).
    pub fn throttled(&self, now: Instant) -> bool {
        self.throttled_until.is_some_and(|t| now < t)
            || (self.exiting > 0 && self.last_exiting.is_some_and(|t| now.duration_since(t) < EXIT_GRACE))
    }
}

/// A running child.
pub struct Child {
    /// Its pid.
    pub pid: u32,
    /// `NAME/TYPE` of its service.
    pub service: String,
    /// Master's end of the status channel.
    pub status: UnixStream,
    /// Partial records.
    pub reader: StatusReader,
    /// Whether it can take another connection (as last reported; true at start).
    pub available: bool,
    /// Connections open, as last reported.
    pub connections: u32,
    /// Connections served, as last reported.
    pub served: u64,
    /// Told to finish and exit (reload, stop, service removed), or said so itself.
    pub retiring: bool,
    /// Retired by master (reload, stop, service removed) rather than by its own `max_use`:
    /// as in Postfix, it no longer counts towards `maxproc` while it finishes, so a reload
    /// never holds new clients back behind the old generation's sessions. No client can
    /// cause this; a child that retires itself keeps counting (see `Supervisor::recount`).
    pub released: bool,
    /// Its status channel closed: it is exiting.
    pub exiting: bool,
}
