//! The deferred queue run: which due messages come into memory, which are deferred again
//! where they lie, which wait on disk.
//!
//! A run lists the names in `deferred/` once (16 bytes per message) and then works through
//! them in batches of [`BATCH`] files per pass of the event loop, so that job results (a
//! destination found dead) are folded in between batches. For each file whose retry time
//! (its modification time) has come, the envelope is read where it lies and its pending
//! recipients are resolved (the resolve cache makes that cheap), and then:
//!
//! * **every route goes to a dead destination** ([`crate::feedback`]): the message is
//!   deferred in place, as Postfix's qmgr defers mail for a throttled queue: a
//!   `status=deferred (delivery temporarily suspended: <reason>)` line per recipient, a new
//!   defer log, the next retry time as the file's modification time — no rename to
//!   `active/`, no message in memory, one read of the file. (Not when the message has
//!   outlived `maximal_queue_lifetime`, owes a delay warning or a success notice: those
//!   take the ordinary path.)
//! * **every live destination it goes to is saturated** — it already has twice as many
//!   messages queued and in delivery as its concurrency window allows — the message is
//!   *parked*: its queue ID is remembered with one of those destinations and the file stays
//!   in `deferred/`, still due. When the destination has room again its parked messages are
//!   considered again; when it is found dead they are deferred in place. At most
//!   `qmgr_message_active_limit` IDs are parked; beyond that the run waits. A message
//!   parked by a flush gets "now" as its retry time, so that it stays due.
//! * otherwise it is moved to `active/` and its recipients are queued at once.
//!
//! So during a retry wave for a destination that is still dead, the first messages
//! probe it (as many as twice its initial concurrency window), the window closes after a
//! failed cohort, and the rest is deferred where it lies: `active/` holds at most those few,
//! and qmgr's memory holds the run's list of names and the parked IDs, both freed at the
//! end. A new run (every `queue_run_delay`, or a flush) forgets the parked IDs and meets
//! the files again in its own listing.

use super::{DestKey, Qmgr, RESOLVE_RETRY, dest_key};
use crate::notices;
use crate::queue::{self, ReadError};
use crate::success;
use postern_lib::dsn::Dsn;
use postern_lib::proto::deliver::{self, status_line};
use postern_lib::proto::resolve::{ERROR_TRANSPORT, Route};
use postern_lib::queue_file::{QueueFile, Recipient};
use postern_lib::queue_id::QueueId;
use std::sync::Arc;
use std::time::Instant;

/// Files looked at per pass of the event loop.
pub const BATCH: usize = 256;

/// A deferred queue run in progress.
pub struct Cursor {
    ids: Vec<QueueId>,
    next: usize,
    /// A flush: every message is due.
    force: bool,
    due: usize,
    activated: usize,
    in_place: usize,
    parked: usize,
}

impl Cursor {
    /// Lists `deferred/`, a flat directory of queue files (other names are skipped). A
    /// file in a hashed subdirectory (a queue laid out otherwise) is moved up first.
    fn list(force: bool) -> Cursor {
        let mut ids = Vec::new();
        let mut hashed = false;
        match std::fs::read_dir(queue::DEFERRED) {
            Ok(rd) => {
                for ent in rd.flatten() {
                    if let Some(id) = ent.file_name().to_str().and_then(|n| QueueId::parse(n).ok()) {
                        ids.push(id);
                    } else if ent.file_type().is_ok_and(|t| t.is_dir()) {
                        hashed = true;
                    }
                }
            }
            Err(e) => tracing::warn!("scan {}: {e}", queue::DEFERRED),
        }
        if hashed {
            for f in queue::list(queue::DEFERRED) {
                let flat = queue::path_in(queue::DEFERRED, &f.id);
                if f.path == flat || flat.exists() {
                    continue;
                }
                match std::fs::rename(&f.path, &flat) {
                    Ok(()) => ids.push(f.id),
                    Err(e) => tracing::warn!(queue_id = f.id.as_str(), "cannot move {} up: {e}", f.path.display()),
                }
            }
        }
        // Oldest first, as names sort by arrival.
        ids.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        Cursor {
            ids,
            next: 0,
            force,
            due: 0,
            activated: 0,
            in_place: 0,
            parked: 0,
        }
    }

    fn report(&self) {
        if self.due > 0 {
            tracing::info!(
                "deferred queue run: {} due: {} to active, {} deferred in place (destination dead), {} parked",
                self.due,
                self.activated,
                self.in_place,
                self.parked
            );
        }
    }
}

/// What became of a message considered.
enum Verdict {
    Activated,
    InPlace,
    Parked,
    /// Gone, corrupt or unreadable: nothing to count.
    Nothing,
    /// Its recipients cannot be resolved now: try again later.
    Wait,
}

/// Whether a destination has enough work already: twice what its window lets run at once.
fn saturated(d: &mut super::Dest, s: &crate::settings::Settings, transport: &str, now: Instant) -> bool {
    let allowed = d
        .window
        .allowed(now, s.initial_concurrency(transport), s.concurrency(transport));
    d.queue.len() + d.active >= 2 * allowed.max(1)
}

impl Qmgr {
    /// Starts a deferred queue run when one is wanted, then works through at most
    /// [`BATCH`] files (parked ones first); when the batch is used up, wakes the loop to
    /// come back after other events.
    pub(super) fn feed_deferred(&mut self, waker: &Arc<mio::Waker>) {
        if self.want_deferred && (self.scan.is_none() || self.flush) && self.has_room() {
            self.want_deferred = false;
            self.last_deferred_scan = Some(Instant::now());
            let force = std::mem::take(&mut self.flush);
            if let Some(old) = self.scan.take() {
                old.report();
            }
            self.forget_parked();
            self.scan = Some(Cursor::list(force));
        }
        let mut budget = BATCH;
        self.release_parked(&mut budget);
        self.run_cursor(&mut budget);
        if budget == 0 {
            let _ = waker.wake();
        }
    }

    fn resolver_waits(&self) -> bool {
        self.resolve_wait.is_some_and(|t| t > Instant::now())
    }

    fn forget_parked(&mut self) {
        for d in self.dests.values_mut() {
            d.parked = Default::default();
        }
        self.parked_total = 0;
    }

    fn run_cursor(&mut self, budget: &mut usize) {
        let now = queue::now_secs();
        loop {
            if *budget == 0 || !self.has_room() || self.parked_total >= self.s.active_limit || self.resolver_waits() {
                return;
            }
            let Some(cursor) = self.scan.as_mut() else { return };
            let Some(&id) = cursor.ids.get(cursor.next) else {
                cursor.report();
                self.scan = None;
                return;
            };
            *budget -= 1;
            let path = queue::path_in(queue::DEFERRED, &id);
            if !cursor.force && queue::mtime(&path).is_none_or(|t| t > now) {
                cursor.next += 1;
                continue;
            }
            let verdict = self.consider(id);
            let Some(cursor) = self.scan.as_mut() else { return };
            match verdict {
                Verdict::Wait => return,
                Verdict::Activated => cursor.activated += 1,
                Verdict::InPlace => cursor.in_place += 1,
                Verdict::Parked => cursor.parked += 1,
                Verdict::Nothing => {}
            }
            if !matches!(verdict, Verdict::Nothing) {
                cursor.due += 1;
            }
            cursor.next += 1;
        }
    }

    /// Parked messages of destinations that have room again (or are dead) are considered
    /// again.
    fn release_parked(&mut self, budget: &mut usize) {
        if self.parked_total == 0 {
            return;
        }
        let now = Instant::now();
        let keys: Vec<DestKey> = self
            .dests
            .iter()
            .filter(|(_, d)| !d.parked.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            loop {
                if *budget == 0 || !self.has_room() || self.resolver_waits() {
                    return;
                }
                let Some(d) = self.dests.get_mut(&key) else { break };
                if !d.window.dead(now) && saturated(d, &self.s, &key.0, now) {
                    break;
                }
                let Some(id) = d.parked.pop_front() else { break };
                self.parked_total -= 1;
                *budget -= 1;
                if let Verdict::Wait = self.consider(id) {
                    if let Some(d) = self.dests.get_mut(&key) {
                        d.parked.push_front(id);
                        self.parked_total += 1;
                    }
                    return;
                }
            }
        }
    }

    /// Reads a due message in `deferred/` and decides its fate (see the module comment).
    fn consider(&mut self, id: QueueId) -> Verdict {
        let path = queue::path_in(queue::DEFERRED, &id);
        if self.msgs.contains_key(&id) {
            return Verdict::Nothing;
        }
        let qf = match queue::open_and_read(&path) {
            Ok((_file, qf)) => qf,
            Err(ReadError::Corrupt(why)) => {
                queue::to_corrupt(&path, &id, &why);
                return Verdict::Nothing;
            }
            Err(ReadError::Io(why)) => {
                // Removed or held meanwhile (postsuper) is no news.
                if path.exists() {
                    tracing::warn!(queue_id = id.as_str(), "cannot read queue file: {why}");
                }
                return Verdict::Nothing;
            }
        };
        if qf.envelope.queue_id != id {
            queue::to_corrupt(&path, &id, "queue ID in the file differs from its name");
            return Verdict::Nothing;
        }
        let pending: Vec<&Recipient> = qf.recipients.iter().filter(|r| !r.status.is_final()).collect();
        if pending.is_empty() {
            // Only a notice is owed: the ordinary path sends it.
            return self.activate(id, &qf, None);
        }
        let mut all = Vec::with_capacity(pending.len());
        for r in &pending {
            match self.routes_for(&r.spec.address, r.route.as_deref()) {
                Ok(routes) => all.push(routes),
                Err(why) => {
                    tracing::warn!("cannot resolve recipients: {why}; will retry");
                    self.resolve_wait = Some(Instant::now() + RESOLVE_RETRY);
                    return Verdict::Wait;
                }
            }
        }
        let now = Instant::now();
        let (mut dead_only, mut free) = (true, false);
        let mut busy: Option<DestKey> = None;
        for route in all.iter().flatten() {
            if route.transport == ERROR_TRANSPORT || !deliver::valid_transport(&route.transport) {
                (dead_only, free) = (false, true);
                continue;
            }
            let key = dest_key(&self.s, route);
            match self.dests.get_mut(&key) {
                Some(d) if d.window.dead(now) => {}
                Some(d) => {
                    dead_only = false;
                    if saturated(d, &self.s, &key.0, now) {
                        busy.get_or_insert(key);
                    } else {
                        free = true;
                    }
                }
                None => (dead_only, free) = (false, true),
            }
        }
        if dead_only && self.may_defer_in_place(&id, &qf) {
            self.defer_in_place(&id, &qf, &pending, &all);
            return Verdict::InPlace;
        }
        if !free && let Some(key) = busy {
            // Due by force (a flush): made due on disk too, so that a later run, which
            // forgets what is parked, meets it as due.
            if self.scan.as_ref().is_some_and(|c| c.force)
                && let Err(e) = queue::set_mtime(&path, queue::now_secs())
            {
                tracing::warn!(queue_id = id.as_str(), "cannot set retry time: {e}");
            }
            if let Some(d) = self.dests.get_mut(&key) {
                d.parked.push_back(id);
                self.parked_total += 1;
                return Verdict::Parked;
            }
        }
        self.activate(id, &qf, Some(all))
    }

    /// Moves a message read in `deferred/` to `active/` and takes it in.
    fn activate(&mut self, id: QueueId, qf: &QueueFile, routes: Option<Vec<Vec<Route>>>) -> Verdict {
        match queue::move_to(&queue::path_in(queue::DEFERRED, &id), queue::ACTIVE, &id) {
            Ok(p) => {
                queue::clear_defer_log(&id);
                self.admit(&p, id, qf, routes, false);
                Verdict::Activated
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Verdict::Nothing,
            Err(e) => {
                tracing::warn!(queue_id = id.as_str(), "cannot move to active: {e}");
                Verdict::Nothing
            }
        }
    }

    /// Whether nothing but a new retry time is due for this message: it has not expired,
    /// owes no delay warning and no success notice.
    fn may_defer_in_place(&self, id: &QueueId, qf: &QueueFile) -> bool {
        let age = queue::now_secs().saturating_sub(qf.envelope.arrival.secs);
        let warning_owed = self.s.delay_warning > 0
            && age >= self.s.delay_warning
            && !qf.envelope.sender.is_empty()
            && !notices::warned(id);
        age < self.s.lifetime && !warning_owed && !success::owed(id)
    }

    /// Defers a message for dead destinations where it lies: log lines, defer log, next
    /// retry time.
    fn defer_in_place(&self, id: &QueueId, qf: &QueueFile, pending: &[&Recipient], all: &[Vec<Route>]) {
        let now = queue::now_micros();
        let arrival = qf.envelope.arrival.secs * 1_000_000 + u64::from(qf.envelope.arrival.micros);
        let mut entries = Vec::new();
        for (rec, routes) in pending.iter().zip(all) {
            for route in routes {
                let (dsn, reason) = self
                    .dests
                    .get(&dest_key(&self.s, route))
                    .map(|d| d.window.reason.clone())
                    .unwrap_or((Dsn::MAIL_SYSTEM, String::new()));
                let why = format!("delivery temporarily suspended: {reason}");
                let line = status_line(
                    &route.recipient,
                    &rec.spec.address,
                    "none",
                    [arrival, now, now, now, now],
                    dsn,
                    "deferred",
                    &why,
                );
                tracing::info!(queue_id = id.as_str(), "{line}");
                entries.push((route.recipient.clone(), dsn, why));
            }
        }
        queue::clear_defer_log(id);
        if let Err(e) = queue::append_defer_log(id, &entries) {
            tracing::warn!(queue_id = id.as_str(), "cannot write defer log: {e}");
        }
        let age = queue::now_secs().saturating_sub(qf.envelope.arrival.secs);
        let next = queue::now_secs() + self.s.backoff(age);
        if let Err(e) = queue::set_mtime(&queue::path_in(queue::DEFERRED, id), next) {
            tracing::warn!(queue_id = id.as_str(), "cannot set retry time: {e}");
        }
    }
}
