//! The active queue in memory and the scheduler: messages taken in from disk, their
//! recipients resolved into per-destination queues, jobs handed out round-robin within
//! the concurrency limits, results folded back, finished messages retired or deferred.
//! Each destination's concurrency follows slow start and back-off ([`crate::feedback`]).
//! The deferred queue is fed in by [`scan`]: bounded batches, mail for dead destinations
//! deferred where it lies, mail for busy destinations parked on disk.

use crate::feedback::{Window, site_failure};
use crate::notices::{self, Action, Outcome};
use crate::{replica, success};

mod scan;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use postern_lib::dsn::Dsn;
use postern_lib::proto::bounce::NoticeRecipient;
use postern_lib::proto::deliver::{self, DeliverRecipient, DeliverReply, DeliverRequest, status_line};
use postern_lib::proto::resolve::{ERROR_TRANSPORT, Route};
use postern_lib::queue_file::{QueueFile, RecipientStatus};
use postern_lib::queue_id::QueueId;
use postern_lib::queue_scan::QueuedFile;

use crate::agent::{self, JobDone};
use crate::queue::{self, ReadError};
use crate::settings::Settings;

/// Most resolved addresses remembered (the cache is dropped when full or old).
const CACHE_MAX: usize = 10_000;
/// How long a resolved address is remembered (tables may change).
const CACHE_AGE: Duration = Duration::from_secs(60);
/// Messages moved from incoming/ to active/ per pass of the event loop.
const INCOMING_BATCH: usize = 16;
/// Wait after trivial-rewrite failed before asking again.
const RESOLVE_RETRY: Duration = Duration::from_secs(5);
/// Most messages in one batch job to a destination that is one recipient (`local`): the
/// agent shares its syncs among them (one `fsync` of the Maildir's `new/` per batch).
const BATCH_MAX: usize = 32;

type DestKey = (String, String);

struct Entry {
    msg: QueueId,
    rcpt: usize,
    address: String,
}

struct Dest {
    nexthop: String,
    queue: VecDeque<Entry>,
    active: usize,
    window: Window,
    /// Due deferred messages left on disk until this destination can take more
    /// ([`scan`]): queue IDs only.
    parked: VecDeque<QueueId>,
}

struct Rcpt {
    index: usize,
    address: String,
    /// A replica copy's fixed route (`transport:nexthop`, the queue file's `N` record).
    route: Option<String>,
    /// A replica copy refused permanently in this attempt: (dsn, text), settled when the
    /// attempt ends ([`settle_refused`]).
    refused: Option<(Dsn, String)>,
    routes_left: usize,
    /// qmgr (not the agent) records the outcome: several routes, or the error transport.
    qmgr_marks: bool,
    /// A success notice is wanted: NOTIFY=SUCCESS, and a sender to tell.
    notify_success: bool,
    temp: bool,
    perm: bool,
}

struct Msg {
    path: PathBuf,
    arrival_micros: u64,
    active_micros: u64,
    sender: String,
    rcpts: Vec<Rcpt>,
    /// Entries queued or in flight.
    waiting: usize,
    /// Temporary failures in this attempt.
    temp: Vec<Deferred>,
    /// Permanent failures decided by qmgr itself: (rcpt position, dsn, reason).
    perm: Vec<(usize, Dsn, String)>,
    /// Permanent failures reported by delivery agents in this attempt.
    failed: Vec<Outcome>,
    /// Deliveries in this attempt that a success notice is owed for.
    succeeded: Vec<Outcome>,
    /// Taken in from incoming/ by this process: nothing but its queue file exists for it
    /// ([`Qmgr::admit`]).
    fresh: bool,
}

impl Msg {
    /// Whether every recipient pending when the message was taken in was delivered in this
    /// attempt by an agent that marks it done itself (one route each, no qmgr mark), and no
    /// notice is owed: then the queue file holds nothing that is still to do.
    fn delivered_by_agents(&self) -> bool {
        self.temp.is_empty()
            && self.perm.is_empty()
            && self.failed.is_empty()
            && self.succeeded.is_empty()
            && self
                .rcpts
                .iter()
                .all(|r| !r.qmgr_marks && !r.temp && !r.perm && r.refused.is_none() && r.routes_left == 0)
    }
}

/// One recipient deferred in this attempt.
struct Deferred {
    /// Its index in the queue file.
    index: usize,
    address: String,
    dsn: Dsn,
    reason: String,
}

/// A job in flight: one deliver request per part (one message and its entries); more
/// than one part is a batch.
struct Job {
    key: DestKey,
    parts: Vec<(QueueId, Vec<Entry>)>,
    dispatch_micros: u64,
}

/// The queue manager's state.
pub struct Qmgr {
    s: Settings,
    msgs: HashMap<QueueId, Msg>,
    rcpt_count: usize,
    dests: HashMap<DestKey, Dest>,
    rotation: VecDeque<DestKey>,
    transport_active: HashMap<String, usize>,
    jobs: HashMap<u64, Job>,
    next_job: u64,
    resolver: agent::Resolver,
    cache: HashMap<String, Vec<Route>>,
    cache_born: Instant,
    unresolved: VecDeque<QueueId>,
    resolve_wait: Option<Instant>,
    want_incoming: bool,
    /// The part of the last listing of `incoming/` not yet taken in.
    incoming: VecDeque<QueuedFile>,
    want_deferred: bool,
    flush: bool,
    recovered: bool,
    postponed: Vec<QueuedFile>,
    last_deferred_scan: Option<Instant>,
    /// The deferred queue run in progress.
    scan: Option<scan::Cursor>,
    /// Messages parked in all destinations.
    parked_total: usize,
}

impl Qmgr {
    /// An empty active queue; the first [`pump`](Self::pump) takes `active/` back.
    pub fn new(s: Settings) -> Qmgr {
        Qmgr {
            s,
            msgs: HashMap::new(),
            rcpt_count: 0,
            dests: HashMap::new(),
            rotation: VecDeque::new(),
            transport_active: HashMap::new(),
            jobs: HashMap::new(),
            next_job: 0,
            resolver: agent::Resolver::default(),
            cache: HashMap::new(),
            cache_born: Instant::now(),
            unresolved: VecDeque::new(),
            resolve_wait: None,
            want_incoming: true,
            incoming: VecDeque::new(),
            want_deferred: true,
            flush: false,
            recovered: false,
            postponed: Vec::new(),
            last_deferred_scan: None,
            scan: None,
            parked_total: 0,
        }
    }

    /// Jobs in flight.
    pub fn in_flight(&self) -> usize {
        self.jobs.len()
    }

    /// A trigger byte arrived.
    pub fn trigger(&mut self, byte: u8) {
        use postern_lib::proto::trigger::{ARRIVED, FLUSH, WAKEUP};
        match byte {
            ARRIVED => self.want_incoming = true,
            WAKEUP => {
                self.want_incoming = true;
                if self.deferred_due() {
                    self.want_deferred = true;
                }
            }
            FLUSH => {
                self.want_incoming = true;
                self.want_deferred = true;
                self.flush = true;
                // As Postfix's flush: dead destinations are tried again now.
                for (key, d) in self.dests.iter_mut() {
                    d.window = Window::new(self.s.initial_concurrency(&key.0));
                }
            }
            _ => {}
        }
    }

    fn deferred_due(&self) -> bool {
        self.last_deferred_scan
            .is_none_or(|t| t.elapsed() >= self.s.queue_run_delay)
    }

    /// Periodic work: the deferred queue run, messages an agent still held at start-up.
    pub fn tick(&mut self) {
        if self.deferred_due() {
            self.want_deferred = true;
        }
        if !self.postponed.is_empty() {
            let files = std::mem::take(&mut self.postponed);
            for f in files {
                self.take_in(&f.path, f.id, true);
            }
        }
        self.trim();
    }

    /// When nothing is in memory any more, gives back what the collections grew to (a
    /// burst leaves capacity behind) and forgets old resolver answers.
    fn trim(&mut self) {
        if !self.msgs.is_empty() || !self.jobs.is_empty() || self.scan.is_some() || self.parked_total > 0 {
            return;
        }
        self.msgs.shrink_to_fit();
        self.jobs.shrink_to_fit();
        self.unresolved.shrink_to_fit();
        self.postponed.shrink_to_fit();
        self.rotation.shrink_to_fit();
        self.dests.shrink_to_fit();
        for d in self.dests.values_mut() {
            d.queue.shrink_to_fit();
            d.parked.shrink_to_fit();
        }
        if self.cache_born.elapsed() > CACHE_AGE && !self.cache.is_empty() {
            self.cache = HashMap::new();
        }
    }

    fn has_room(&self) -> bool {
        self.msgs.len() + self.postponed.len() < self.s.active_limit && self.rcpt_count < self.s.recipient_limit
    }

    /// Does whatever can be done now: scans, resolution, dispatch.
    pub fn pump(&mut self, done: &Sender<JobDone>, waker: &Arc<mio::Waker>) {
        if !self.recovered {
            self.recovered = true;
            for f in queue::list(queue::ACTIVE) {
                self.take_in(&f.path, f.id, true);
            }
        }
        self.feed_incoming(waker);
        self.feed_deferred(waker);
        self.resolve_pending();
        self.dispatch(done, waker);
    }

    /// Moves new mail from incoming/ to active/ and into memory, at most
    /// [`INCOMING_BATCH`] messages per pass of the event loop: `incoming/` is listed once
    /// (when an arrival was announced and the previous listing is used up) and worked
    /// through in batches, so that finished jobs are taken in and their agents given new
    /// work between batches — activating a burst of a thousand arrivals at once left the
    /// delivery agents idle for tens of milliseconds (issue 14).
    fn feed_incoming(&mut self, waker: &Arc<mio::Waker>) {
        if !self.has_room() {
            return;
        }
        if self.incoming.is_empty() && self.want_incoming {
            self.want_incoming = false;
            self.incoming = queue::list(queue::INCOMING).into();
        }
        for _ in 0..INCOMING_BATCH {
            if !self.has_room() {
                // Listed again once there is room (the rest may have been taken meanwhile).
                self.incoming.clear();
                self.want_incoming = true;
                return;
            }
            let Some(f) = self.incoming.pop_front() else { return };
            match queue::move_to(&f.path, queue::ACTIVE, &f.id) {
                Ok(p) => self.take_in(&p, f.id, false),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(queue_id = f.id.as_str(), "cannot move to active: {e}"),
            }
        }
        if !self.incoming.is_empty() {
            let _ = waker.wake();
        }
    }

    /// Reads a message now in active/ into memory.
    fn take_in(&mut self, path: &Path, id: QueueId, recovering: bool) {
        if self.msgs.contains_key(&id) {
            return;
        }
        let (file, qf) = match queue::open_and_read(path) {
            Ok(x) => x,
            Err(ReadError::Corrupt(why)) => return queue::to_corrupt(path, &id, &why),
            Err(ReadError::Io(why)) => {
                tracing::warn!(queue_id = id.as_str(), "cannot read queue file: {why}");
                return;
            }
        };
        if recovering && !queue::try_lock_exclusive(&file) {
            // A delivery agent still works on it for a qmgr that died: later.
            self.postponed.push(QueuedFile {
                queue: queue::ACTIVE.into(),
                id,
                relative: PathBuf::from(id.as_str()),
                path: path.to_path_buf(),
            });
            return;
        }
        if recovering {
            queue::unlock(&file);
        }
        drop(file);
        // Taken from incoming/ now: never attempted, so no log or marker of it exists.
        self.admit(path, id, &qf, None, !recovering);
    }

    /// Takes a message read from `path` in active/ into memory; with `routes` (one list
    /// per pending recipient, in file order) its recipients are queued at once, else they
    /// wait for resolution. `fresh`: it came from incoming/ in this process's life, so no
    /// defer, bounce or trace log and no delay-warning marker exist for it yet.
    fn admit(&mut self, path: &Path, id: QueueId, qf: &QueueFile, routes: Option<Vec<Vec<Route>>>, fresh: bool) {
        if qf.envelope.queue_id != id {
            return queue::to_corrupt(path, &id, "queue ID in the file differs from its name");
        }
        let has_sender = !qf.envelope.sender.is_empty();
        let rcpts: Vec<Rcpt> = qf
            .recipients
            .iter()
            .filter(|r| !r.status.is_final())
            .map(|r| Rcpt {
                index: r.handle.index(),
                address: r.spec.address.clone(),
                route: r.route.clone(),
                refused: None,
                routes_left: 0,
                qmgr_marks: false,
                notify_success: has_sender && r.spec.notify.success() && !r.spec.notify.never(),
                temp: false,
                perm: false,
            })
            .collect();
        let nrcpt = qf.recipients.len();
        tracing::info!(
            queue_id = id.as_str(),
            "from=<{}>, size={}, nrcpt={} (queue active)",
            qf.envelope.sender,
            qf.content_len(),
            nrcpt
        );
        if rcpts.is_empty() {
            return self.retire_or_wait(path, &id, qf.envelope.arrival.secs);
        }
        self.rcpt_count += rcpts.len();
        let arrival = qf.envelope.arrival.secs * 1_000_000 + u64::from(qf.envelope.arrival.micros);
        self.msgs.insert(
            id,
            Msg {
                path: path.to_path_buf(),
                arrival_micros: arrival,
                active_micros: queue::now_micros(),
                sender: qf.envelope.sender.clone(),
                rcpts,
                waiting: 0,
                temp: Vec::new(),
                perm: Vec::new(),
                failed: Vec::new(),
                succeeded: Vec::new(),
                fresh,
            },
        );
        match routes {
            Some(all) => self.enqueue(id, all),
            None => self.unresolved.push_back(id),
        }
    }

    /// Where a recipient goes: its fixed route (a replica copy), else the resolver's.
    fn routes_for(&mut self, address: &str, fixed: Option<&str>) -> Result<Vec<Route>, String> {
        match fixed.and_then(|f| replica::fixed_route(f, address)) {
            Some(route) => Ok(vec![route]),
            None => self.routes(address),
        }
    }

    fn routes(&mut self, address: &str) -> Result<Vec<Route>, String> {
        if self.cache.len() >= CACHE_MAX || self.cache_born.elapsed() > CACHE_AGE {
            self.cache = HashMap::new();
            self.cache_born = Instant::now();
        }
        if let Some(r) = self.cache.get(address) {
            return Ok(r.clone());
        }
        let r = self.resolver.resolve(address)?;
        self.cache.insert(address.to_string(), r.clone());
        Ok(r)
    }

    fn resolve_pending(&mut self) {
        if self.resolve_wait.is_some_and(|t| t > Instant::now()) {
            return;
        }
        while let Some(id) = self.unresolved.front().copied() {
            let Some(msg) = self.msgs.get(&id) else {
                self.unresolved.pop_front();
                continue;
            };
            let addrs: Vec<(String, Option<String>)> =
                msg.rcpts.iter().map(|r| (r.address.clone(), r.route.clone())).collect();
            let mut all = Vec::with_capacity(addrs.len());
            for (a, fixed) in &addrs {
                match self.routes_for(a, fixed.as_deref()) {
                    Ok(r) => all.push(r),
                    Err(why) => {
                        tracing::warn!("cannot resolve recipients: {why}; will retry");
                        self.resolve_wait = Some(Instant::now() + RESOLVE_RETRY);
                        return;
                    }
                }
            }
            self.unresolved.pop_front();
            self.enqueue(id, all);
        }
    }

    fn enqueue(&mut self, id: QueueId, all: Vec<Vec<Route>>) {
        let mut finished = false;
        if let Some(msg) = self.msgs.get_mut(&id) {
            for (pos, routes) in all.into_iter().enumerate() {
                let Some(r) = msg.rcpts.get_mut(pos) else { continue };
                r.routes_left = routes.len();
                // qmgr marks a replica copy itself: a permanent refusal is not final for it.
                r.qmgr_marks = routes.len() > 1 || r.route.is_some();
                for route in routes {
                    if route.transport == ERROR_TRANSPORT || !deliver::valid_transport(&route.transport) {
                        let (dsn, text) = split_dsn(&route.nexthop, Dsn::MISCONFIGURED.permanent());
                        let text = if route.transport == ERROR_TRANSPORT {
                            text
                        } else {
                            format!("bad transport name {:?}", route.transport)
                        };
                        r.qmgr_marks = true;
                        r.perm = true;
                        r.routes_left -= 1;
                        msg.perm.push((pos, dsn, text));
                        continue;
                    }
                    let key = dest_key(&self.s, &route);
                    let initial = self.s.initial_concurrency(&route.transport);
                    let d = self.dests.entry(key.clone()).or_insert_with(|| {
                        self.rotation.push_back(key.clone());
                        Dest {
                            nexthop: route.nexthop.clone(),
                            queue: VecDeque::new(),
                            active: 0,
                            window: Window::new(initial),
                            parked: VecDeque::new(),
                        }
                    });
                    d.queue.push_back(Entry {
                        msg: id,
                        rcpt: pos,
                        address: route.recipient.clone(),
                    });
                    msg.waiting += 1;
                }
            }
            finished = msg.waiting == 0;
        }
        if finished {
            self.finish(id);
        }
    }

    /// Hands out jobs, round-robin over destinations, within the limits.
    fn dispatch(&mut self, done: &Sender<JobDone>, waker: &Arc<mio::Waker>) {
        self.suspend_dead();
        loop {
            let mut progress = false;
            let n = self.rotation.len();
            let now = Instant::now();
            for _ in 0..n {
                let Some(key) = self.rotation.pop_front() else { break };
                let Some(d) = self.dests.get_mut(&key) else { continue };
                if d.queue.is_empty() {
                    // A destination that failed is remembered for a while (feedback.rs).
                    if d.active == 0 && d.parked.is_empty() && !d.window.remembered(now) {
                        self.dests.remove(&key);
                    } else {
                        self.rotation.push_back(key);
                    }
                    continue;
                }
                let t_active = self.transport_active.get(&key.0).copied().unwrap_or(0);
                let allowed = d
                    .window
                    .allowed(now, self.s.initial_concurrency(&key.0), self.s.concurrency(&key.0));
                if d.active >= allowed || t_active >= self.s.process_limit(&key.0) {
                    self.rotation.push_back(key);
                    continue;
                }
                let limit = self.s.recipients_per_job(&key.0);
                let parts = if limit == 1 {
                    // The destination is one recipient: its queued messages are shared
                    // out among the free job slots, at most BATCH_MAX per job.
                    let free = allowed
                        .saturating_sub(d.active)
                        .min(self.s.process_limit(&key.0).saturating_sub(t_active))
                        .max(1);
                    let take = d.queue.len().div_ceil(free).clamp(1, BATCH_MAX);
                    d.queue
                        .drain(..take.min(d.queue.len()))
                        .map(|e| (e.msg, vec![e]))
                        .collect()
                } else {
                    let mut entries = Vec::new();
                    while entries.len() < limit {
                        let same = match (d.queue.front(), entries.first()) {
                            (Some(e), Some(first)) => e.msg == first_msg(first),
                            (Some(_), None) => true,
                            (None, _) => false,
                        };
                        if !same {
                            break;
                        }
                        if let Some(e) = d.queue.pop_front() {
                            entries.push(e);
                        }
                    }
                    entries
                        .first()
                        .map(first_msg)
                        .map(|m| vec![(m, entries)])
                        .unwrap_or_default()
                };
                let nexthop = d.nexthop.clone();
                d.active += 1;
                *self.transport_active.entry(key.0.clone()).or_insert(0) += 1;
                self.start_job(key.clone(), nexthop, parts, done, waker);
                self.rotation.push_back(key);
                progress = true;
            }
            if !progress {
                break;
            }
        }
    }

    fn start_job(
        &mut self,
        key: DestKey,
        nexthop: String,
        parts: Vec<(QueueId, Vec<Entry>)>,
        done: &Sender<JobDone>,
        waker: &Arc<mio::Waker>,
    ) {
        let now = queue::now_micros();
        let mut reqs = Vec::with_capacity(parts.len());
        for (id, entries) in &parts {
            let Some(msg) = self.msgs.get(id) else { continue };
            let recipients = entries
                .iter()
                .filter_map(|e| {
                    let r = msg.rcpts.get(e.rcpt)?;
                    Some(DeliverRecipient {
                        index: r.index,
                        address: e.address.clone(),
                        original: r.address.clone(),
                        mark: !r.qmgr_marks,
                    })
                })
                .collect();
            reqs.push(DeliverRequest {
                queue_id: *id,
                queue_file: format!("{}/{}", queue::ACTIVE, id.as_str()),
                sender: msg.sender.clone(),
                nexthop: nexthop.clone(),
                recipients,
                arrival_micros: msg.arrival_micros,
                active_micros: msg.active_micros,
                dispatch_micros: now,
            });
        }
        // Only parts whose message is in memory were asked for (all of them, in practice).
        let parts: Vec<(QueueId, Vec<Entry>)> =
            parts.into_iter().filter(|(id, _)| self.msgs.contains_key(id)).collect();
        if reqs.is_empty() {
            if let Some(d) = self.dests.get_mut(&key) {
                d.active = d.active.saturating_sub(1);
            }
            if let Some(t) = self.transport_active.get_mut(&key.0) {
                *t = t.saturating_sub(1);
            }
            return;
        }
        let job_id = self.next_job;
        self.next_job += 1;
        let transport = key.0.clone();
        self.jobs.insert(
            job_id,
            Job {
                key,
                parts,
                dispatch_micros: now,
            },
        );
        agent::spawn_job(
            job_id,
            &transport,
            reqs,
            self.s.ipc_timeout,
            done.clone(),
            waker.clone(),
        );
    }

    /// Defers, without a delivery attempt, the mail queued for destinations that are
    /// throttled as dead.
    fn suspend_dead(&mut self) {
        let now = Instant::now();
        let dead: Vec<DestKey> = self
            .dests
            .iter()
            .filter(|(_, d)| !d.queue.is_empty() && d.window.dead(now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dead {
            let Some(d) = self.dests.get_mut(&key) else { continue };
            let entries: Vec<Entry> = d.queue.drain(..).collect();
            let (dsn, reason) = d.window.reason.clone();
            let why = format!("delivery temporarily suspended: {reason}");
            let mut finished = Vec::new();
            for e in entries {
                let Some(msg) = self.msgs.get_mut(&e.msg) else { continue };
                defer_entry(msg, &e, dsn, &why, queue::now_micros());
                if msg.waiting == 0 && !finished.contains(&e.msg) {
                    finished.push(e.msg);
                }
            }
            for id in finished {
                self.finish(id);
            }
        }
    }

    /// Folds a finished job back in: each part (message) with its reply.
    pub fn job_done(&mut self, job_id: u64, result: Result<Vec<DeliverReply>, String>) {
        let Some(job) = self.jobs.remove(&job_id) else { return };
        let result = match result {
            Ok(replies) if replies.len() != job.parts.len() => Err(format!(
                "delivery agent answered {} of {} jobs",
                replies.len(),
                job.parts.len()
            )),
            other => other,
        };
        if let Some(d) = self.dests.get_mut(&job.key) {
            d.active = d.active.saturating_sub(1);
            let initial = self.s.initial_concurrency(&job.key.0);
            let limit = self.s.concurrency(&job.key.0);
            // A batch reached the site if any of its messages did.
            let verdict = result.as_ref().ok().map(|replies| {
                let failures: Vec<Option<(Dsn, String)>> = replies.iter().map(site_failure).collect();
                if failures.iter().any(Option::is_none) {
                    None
                } else {
                    failures.into_iter().flatten().next()
                }
            });
            match verdict {
                Some(None) => d.window.success(initial, limit),
                Some(Some((dsn, why))) => {
                    let dead_time = Duration::from_secs(self.s.min_backoff);
                    if d.window
                        .failure(dsn, &why, self.s.cohort_limit, dead_time, Instant::now())
                    {
                        tracing::info!(
                            "{}:{}: destination throttled (dead) for {}s: {why}",
                            job.key.0,
                            d.nexthop,
                            self.s.min_backoff
                        );
                    }
                }
                // The agent failed, not the destination.
                None => {}
            }
        }
        if let Some(t) = self.transport_active.get_mut(&job.key.0) {
            *t = t.saturating_sub(1);
        }
        for (pos, (id, entries)) in job.parts.iter().enumerate() {
            let part = match &result {
                Ok(replies) => replies.get(pos).ok_or_else(|| "no reply".to_string()),
                Err(why) => Err(why.clone()),
            };
            if self.fold(id, entries, part, job.dispatch_micros) {
                self.finish(*id);
            }
        }
    }

    /// Folds one message's part of a finished job back in; true when nothing of the
    /// message is waiting any more.
    fn fold(&mut self, id: &QueueId, entries: &[Entry], result: Result<&DeliverReply, String>, dispatch: u64) -> bool {
        let mut finished = false;
        if let Some(msg) = self.msgs.get_mut(id) {
            let now = queue::now_micros();
            for e in entries {
                msg.waiting = msg.waiting.saturating_sub(1);
                let Some(r) = msg.rcpts.get_mut(e.rcpt) else { continue };
                r.routes_left = r.routes_left.saturating_sub(1);
                let found = result.as_ref().ok().and_then(|rep| {
                    rep.results
                        .iter()
                        .find(|x| x.index == r.index && x.address.eq_ignore_ascii_case(&e.address))
                });
                match (found, &result) {
                    (Some(x), _) if x.is_success() => {
                        if r.notify_success
                            && let Some(o) = success::outcome(r.index, &e.address, x)
                        {
                            msg.succeeded.push(o);
                        }
                    }
                    (Some(x), _) if x.is_permanent() && r.route.is_some() => {
                        r.refused = Some((x.dsn, x.text.clone()));
                    }
                    (Some(x), _) if x.is_permanent() => {
                        r.perm = true;
                        msg.failed.push(Outcome {
                            index: r.index,
                            address: e.address.clone(),
                            dsn: x.dsn,
                            text: x.text.clone(),
                            remote_mta: None,
                            action: Action::Failed,
                        });
                    }
                    (Some(x), _) => {
                        r.temp = true;
                        msg.temp.push(Deferred {
                            index: r.index,
                            address: e.address.clone(),
                            dsn: x.dsn,
                            reason: x.text.clone(),
                        });
                    }
                    (None, res) => {
                        // The agent said nothing about it: it never got that far.
                        let why = match res {
                            Err(why) => why.clone(),
                            Ok(_) => "delivery agent gave no result for this recipient".into(),
                        };
                        r.temp = true;
                        let line = status_line(
                            &e.address,
                            &r.address,
                            "none",
                            [msg.arrival_micros, msg.active_micros, dispatch, now, now],
                            Dsn::MAIL_SYSTEM,
                            "deferred",
                            &why,
                        );
                        tracing::info!(queue_id = id.as_str(), "{line}");
                        msg.temp.push(Deferred {
                            index: r.index,
                            address: e.address.clone(),
                            dsn: Dsn::MAIL_SYSTEM,
                            reason: why,
                        });
                    }
                }
            }
            finished = msg.waiting == 0;
        }
        finished
    }

    /// Every entry of a message is back: record what qmgr records, then retire or defer.
    fn finish(&mut self, id: QueueId) {
        let Some(mut msg) = self.msgs.remove(&id) else { return };
        self.rcpt_count = self.rcpt_count.saturating_sub(msg.rcpts.len());
        if msg.delivered_by_agents() {
            // Nothing for qmgr to record and nothing pending: retired without reading the
            // file again (the agents marked their recipients) — and, when it is fresh,
            // without looking for logs and markers that cannot exist.
            if msg.fresh {
                return self.retire_fresh(&msg.path, &id);
            }
            return self.retire_or_wait(&msg.path, &id, msg.arrival_micros / 1_000_000);
        }
        let (file, qf) = match queue::open_and_read(&msg.path) {
            Ok(x) => x,
            Err(ReadError::Corrupt(why)) => return queue::to_corrupt(&msg.path, &id, &why),
            Err(ReadError::Io(why)) => {
                tracing::warn!(queue_id = id.as_str(), "cannot reread queue file: {why}");
                return;
            }
        };
        settle_refused(&id, &mut msg, &qf);
        let now = queue::now_micros();
        let times = [msg.arrival_micros, msg.active_micros, now, now, now];
        let mut failed = msg.failed.clone();
        for (pos, dsn, text) in &msg.perm {
            if let Some(r) = msg.rcpts.get(*pos) {
                let line = status_line(&r.address, "", "none", times, *dsn, "bounced", text);
                tracing::info!(queue_id = id.as_str(), "{line}");
                failed.push(Outcome {
                    index: r.index,
                    address: r.address.clone(),
                    dsn: *dsn,
                    text: text.clone(),
                    remote_mta: None,
                    action: Action::Failed,
                });
            }
        }
        // The notice is owed before any done mark says the recipient is finished.
        if let Err(e) = notices::append(&id, &failed) {
            tracing::warn!(queue_id = id.as_str(), "cannot write bounce log: {e}");
        }
        if let Err(e) = success::append(&id, &msg.succeeded) {
            tracing::warn!(queue_id = id.as_str(), "cannot write trace log: {e}");
        }
        // The file was read after the agents' marks; what qmgr marks now is noted, so it
        // need not be read again.
        let mut marked = Vec::new();
        for r in msg
            .rcpts
            .iter()
            .filter(|r| r.qmgr_marks && r.routes_left == 0 && !r.temp)
        {
            let Some(rec) = qf.recipients.get(r.index) else {
                continue;
            };
            if rec.status.is_final() {
                continue;
            }
            let status = if r.perm {
                RecipientStatus::Bounced
            } else {
                RecipientStatus::Delivered
            };
            match queue::mark(&file, &rec.handle, status) {
                Ok(()) => marked.push(r.index),
                Err(e) => tracing::warn!(queue_id = id.as_str(), "cannot mark recipient done: {e}"),
            }
        }
        let pending =
            |r: &&postern_lib::queue_file::Recipient| !r.status.is_final() && !marked.contains(&r.handle.index());
        if !qf.recipients.iter().any(|r| pending(&r)) {
            drop(file);
            return self.retire_or_wait(&msg.path, &id, msg.arrival_micros / 1_000_000);
        }
        let temp = msg.temp;
        let age = queue::now_secs().saturating_sub(msg.arrival_micros / 1_000_000);
        if age >= self.s.lifetime {
            let last = temp
                .last()
                .map(|t| t.reason.clone())
                .unwrap_or_else(|| "delivery incomplete".into());
            for rec in qf.recipients.iter().filter(pending) {
                if let Err(e) = queue::mark(&file, &rec.handle, RecipientStatus::Bounced) {
                    tracing::warn!(queue_id = id.as_str(), "cannot mark recipient done: {e}");
                    continue;
                }
                let text = format!("message expired after {age}s in the queue: {last}");
                let line = status_line(&rec.spec.address, "", "none", times, Dsn::EXPIRED, "bounced", &text);
                tracing::info!(queue_id = id.as_str(), "{line}");
                let expired = Outcome {
                    index: rec.handle.index(),
                    address: rec.spec.address.clone(),
                    dsn: Dsn::EXPIRED,
                    text,
                    remote_mta: None,
                    action: Action::Failed,
                };
                if let Err(e) = notices::append(&id, &[expired]) {
                    tracing::warn!(queue_id = id.as_str(), "cannot write bounce log: {e}");
                }
            }
            drop(file);
            return self.retire_or_wait(&msg.path, &id, msg.arrival_micros / 1_000_000);
        }
        drop(file);
        let entries: Vec<(String, Dsn, String)> = temp
            .iter()
            .map(|t| (t.address.clone(), t.dsn, t.reason.clone()))
            .collect();
        if let Err(e) = queue::append_defer_log(&id, &entries) {
            tracing::warn!(queue_id = id.as_str(), "cannot write defer log: {e}");
        }
        // No warning about null-sender mail (a notice itself): there is nobody to tell.
        if self.s.delay_warning > 0 && age >= self.s.delay_warning && !msg.sender.is_empty() {
            self.warn_delay(&msg.path, &id, &temp);
        }
        // Success notices go out now, not when the last recipient is done; if the bounce
        // daemon cannot take them, the trace log keeps them for the next pass.
        if let Err(why) = success::send(&msg.path, &id) {
            tracing::warn!(
                queue_id = id.as_str(),
                "cannot send delivery status notification: {why}; will retry"
            );
        }
        match queue::move_to(&msg.path, queue::DEFERRED, &id) {
            Ok(p) => {
                let next = queue::now_secs() + self.s.backoff(age);
                if let Err(e) = queue::set_mtime(&p, next) {
                    tracing::warn!(queue_id = id.as_str(), "cannot set retry time: {e}");
                }
            }
            Err(e) => tracing::warn!(queue_id = id.as_str(), "cannot move to deferred: {e}"),
        }
    }

    /// A message whose recipients are all finished: send the notice it still owes, then
    /// remove it; if the notice cannot be sent now, it waits in deferred/ for its next
    /// retry.
    fn retire_or_wait(&mut self, path: &Path, id: &QueueId, arrival_secs: u64) {
        match notices::send(path, id).and_then(|()| success::send(path, id)) {
            Ok(()) => self.retire(path, id),
            Err(why) => {
                tracing::warn!(queue_id = id.as_str(), "cannot send notification: {why}; will retry");
                let age = queue::now_secs().saturating_sub(arrival_secs);
                match queue::move_to(path, queue::DEFERRED, id) {
                    Ok(p) => {
                        let _ = queue::set_mtime(&p, queue::now_secs() + self.s.backoff(age));
                    }
                    Err(e) => tracing::warn!(queue_id = id.as_str(), "cannot move to deferred: {e}"),
                }
            }
        }
    }

    /// The one delay warning, about the recipients deferred in this attempt (while the
    /// message is still in active/, where the bounce daemon reads it).
    fn warn_delay(&self, path: &Path, id: &QueueId, temp: &[Deferred]) {
        let mut seen = std::collections::HashSet::new();
        let mut pending: Vec<NoticeRecipient> = Vec::new();
        for t in temp {
            // A recipient with several routes is reported once.
            if !seen.insert(t.index) {
                continue;
            }
            pending.push(NoticeRecipient {
                index: t.index,
                address: t.address.clone(),
                dsn: t.dsn,
                text: t.reason.clone(),
                remote_mta: None,
            });
        }
        if let Err(why) = notices::warn_delay(path, id, pending) {
            tracing::warn!(
                queue_id = id.as_str(),
                "cannot send delay notification: {why}; will retry"
            );
        }
    }

    /// [`retire`](Self::retire) for a fresh message delivered in its first attempt with no
    /// notice owed: no defer, bounce or trace log and no marker to look for or remove.
    fn retire_fresh(&mut self, path: &Path, id: &QueueId) {
        match queue::remove_file_only(path, id) {
            Ok(()) => tracing::info!(queue_id = id.as_str(), "removed"),
            Err(e) => tracing::warn!(queue_id = id.as_str(), "cannot remove finished message: {e}"),
        }
    }

    fn retire(&mut self, path: &Path, id: &QueueId) {
        match queue::remove(path, id) {
            Ok(()) => tracing::info!(queue_id = id.as_str(), "removed"),
            Err(e) => tracing::warn!(queue_id = id.as_str(), "cannot remove finished message: {e}"),
        }
    }
}

/// The scheduling queue a route goes to: (transport, next hop), or (transport, recipient)
/// for a transport that takes one recipient per delivery.
fn dest_key(s: &Settings, route: &Route) -> DestKey {
    let dest = if s.recipients_per_job(&route.transport) == 1 {
        route.recipient.to_lowercase()
    } else {
        route.nexthop.to_lowercase()
    };
    (route.transport.clone(), dest)
}

fn first_msg(e: &Entry) -> QueueId {
    e.msg
}

/// Defers one queued entry without a delivery attempt (its destination is dead): the log
/// line, the defer-log entry, the bookkeeping of a finished entry.
fn defer_entry(msg: &mut Msg, e: &Entry, dsn: Dsn, why: &str, now: u64) {
    msg.waiting = msg.waiting.saturating_sub(1);
    let Some(r) = msg.rcpts.get_mut(e.rcpt) else { return };
    r.routes_left = r.routes_left.saturating_sub(1);
    r.temp = true;
    let line = status_line(
        &e.address,
        &r.address,
        "none",
        [msg.arrival_micros, msg.active_micros, now, now, now],
        dsn,
        "deferred",
        why,
    );
    tracing::info!(queue_id = e.msg.as_str(), "{line}");
    msg.temp.push(Deferred {
        index: r.index,
        address: e.address.clone(),
        dsn,
        reason: why.to_string(),
    });
}

/// Settles the replica copies refused permanently in this attempt ([`replica`]): a copy is
/// kept (deferred, loudly) while another copy of its address was delivered, now or before,
/// or may still be (deferred, not refused); it bounces when every copy was refused.
fn settle_refused(id: &QueueId, msg: &mut Msg, qf: &QueueFile) {
    for pos in 0..msg.rcpts.len() {
        let Some(r) = msg.rcpts.get_mut(pos) else { continue };
        let Some((dsn, text)) = r.refused.take() else { continue };
        let (index, address, route) = (r.index, r.address.clone(), r.route.clone().unwrap_or_default());
        let sibling = |i: usize, a: &str, routed: bool| i != index && routed && a.eq_ignore_ascii_case(&address);
        let alive = msg
            .rcpts
            .iter()
            .any(|o| sibling(o.index, &o.address, o.route.is_some()) && o.refused.is_none() && !o.perm)
            || qf.recipients.iter().any(|q| {
                sibling(q.handle.index(), &q.spec.address, q.route.is_some()) && q.status == RecipientStatus::Delivered
            });
        let Some(r) = msg.rcpts.get_mut(pos) else { continue };
        if alive {
            r.temp = true;
            let (dsn, reason) = replica::keep(id, &address, &route, dsn, &text);
            msg.temp.push(Deferred {
                index,
                address,
                dsn,
                reason,
            });
        } else {
            r.perm = true;
            replica::bounce(id, &address, &route);
            // The agent logged the refusal as deferred (a replica copy's 5xx is not final
            // for it); the final line is this one.
            let now = queue::now_micros();
            let times = [msg.arrival_micros, msg.active_micros, now, now, now];
            let line = status_line(&address, "", &route, times, dsn, "bounced", &text);
            tracing::info!(queue_id = id.as_str(), "{line}");
            msg.failed.push(Outcome {
                index,
                address,
                dsn,
                text,
                remote_mta: None,
                action: Action::Failed,
            });
        }
    }
}

/// `5.1.1 text` → (`5.1.1`, `text`); without a leading DSN, the default.
fn split_dsn(s: &str, default: Dsn) -> (Dsn, String) {
    let mut it = s.splitn(2, ' ');
    match it.next().unwrap_or("").parse::<Dsn>() {
        Ok(dsn) => (dsn, it.next().unwrap_or("").trim().to_string()),
        Err(_) => (default, s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::split_dsn;
    use postern_lib::dsn::Dsn;

    #[test]
    fn dsn_prefix_is_split_off() {
        let default = Dsn::MISCONFIGURED.permanent();
        assert_eq!(
            split_dsn("5.7.1 this domain is refused", default),
            (Dsn::NOT_AUTHORIZED, "this domain is refused".to_string())
        );
        assert_eq!(
            split_dsn("no code here", default),
            (default, "no code here".to_string())
        );
        assert_eq!(split_dsn("5.x.1 odd", default).0, "5.3.5");
    }
}
