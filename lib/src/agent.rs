//! The delivery agent's half of the deliver protocol ([`crate::proto::deliver`]), shared by
//! every transport (local, smtp, lmtp, ...) so none of them re-implements the queue-file
//! bookkeeping.
//!
//! [`serve`] takes one connection from qmgr: it reads the [`DeliverRequest`], opens the
//! queue file in place ([`crate::safe_open::open_update`]: no symlinks, one link, owned by
//! us), and hands a [`Job`] to the transport. The transport delivers the recipients
//! [`Job::pending`] lists and reports each outcome with [`Job::complete`], which — for a
//! final outcome (2xx delivered, 5xx bounced) of a recipient the request says to mark —
//! records it in the queue file at once ([`crate::queue_file::mark_done`]: one pwrite and
//! fdatasync) and logs the Postfix-style line:
//!
//! ```text
//! 4Xk9cZ1qf: to=<bob@example.test>, relay=local, delay=0.12, delays=0.01/0/0/0.11, dsn=2.0.0, status=sent (delivered to maildir)
//! ```
//!
//! `delays=a/b/c/d` are: before the active queue, in the active queue until dispatch,
//! dispatch until the agent opened the job (connection set-up), and delivery itself
//! ([`deliver::status_line`]). The agent holds a shared `flock` on the queue file while it
//! works, which qmgr's crash recovery waits for.
//! A recipient the transport left without an outcome gets `4.3.0` (deferred): a
//! transport bug can delay mail, never lose it. A recipient already final in the file is
//! not delivered again; its status is repeated in the reply.
//!
//! A batch ([`deliver::DeliverBatch`], several messages in one exchange) is served by
//! [`serve_batched`]: each job is opened and delivered in turn, and a transport whose
//! deliveries wait for a shared sync (local's Maildir `new/` directories) reports them with
//! [`Job::complete_after_sync`]. Once every job of the exchange is delivered, the
//! transport's `sync` runs once; only if it succeeds are those recipients marked done (the
//! jobs' queue files synced several at once on threads kept between batches,
//! [`crate::parallel::for_each_kept`]) and logged as sent, else
//! they are deferred (`4.3.0`) — so a done mark never precedes the
//! durability of what it records, and a `kill -9` in the middle of a batch leaves every
//! recipient not yet marked for qmgr to deliver again (the transport's once-only names
//! keep a delivery that was already linked from being added twice).

use crate::dsn::Dsn;
use crate::ipc::IpcStream;
use crate::proto::deliver::{
    self, AgentRequest, DeliverBatchReply, DeliverRecipient, DeliverReply, DeliverRequest, Handoff, RecipientResult,
};
use crate::queue_file::{QueueFile, RecipientHandle, RecipientStatus, mark_done};
use crate::safe_open::{Expect, open_update};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One delivery job being worked on.
pub struct Job {
    /// The request.
    pub req: DeliverRequest,
    /// The queue file's envelope and recipients.
    pub qf: QueueFile,
    /// Shared with the threads that write the done marks of a batch ([`Mark`]).
    file: Arc<File>,
    opened_micros: u64,
    results: Vec<Option<RecipientResult>>,
    /// Outcomes that count once the transport's shared sync succeeded: (position, code,
    /// dsn, text, relay).
    after_sync: Vec<(usize, u16, Dsn, String, String)>,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Job {
    /// Opens the queue file of `req` (relative to the current directory, the queue).
    pub fn open(req: DeliverRequest) -> Result<Job, String> {
        if !deliver::valid_queue_file(&req.queue_file) {
            return Err(format!("bad queue file name {:?}", req.queue_file));
        }
        if req.recipients.len() > deliver::MAX_RECIPIENTS {
            return Err("too many recipients in one request".into());
        }
        let file = open_update(Path::new(&req.queue_file), &Expect::current_user()).map_err(|e| e.to_string())?;
        // Shared lock while we work: a restarted qmgr waits for it before taking the
        // message back (see qmgr's recovery), so no recipient is handed out twice.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| format!("lock {}: {e}", req.queue_file))?;
        let qf = QueueFile::read(&file).map_err(|e| format!("{}: {e}", req.queue_file))?;
        if qf.envelope.queue_id != req.queue_id {
            return Err(format!(
                "{} holds queue ID {}, not {}",
                req.queue_file, qf.envelope.queue_id, req.queue_id
            ));
        }
        let mut results = vec![None; req.recipients.len()];
        for (pos, r) in req.recipients.iter().enumerate() {
            match qf.recipients.get(r.index) {
                None => {
                    results[pos] = Some(result(
                        r,
                        500,
                        Dsn::MAIL_SYSTEM.permanent(),
                        "internal error: no such recipient in the queue file",
                    ))
                }
                Some(rec) if rec.status.is_final() => {
                    let (code, dsn) = if rec.status == RecipientStatus::Bounced {
                        (550, Dsn::UNDEFINED)
                    } else {
                        (250, Dsn::OK)
                    };
                    results[pos] = Some(result(r, code, dsn, "already done"));
                }
                Some(_) => {}
            }
        }
        Ok(Job {
            req,
            qf,
            file: Arc::new(file),
            opened_micros: now_micros(),
            results,
            after_sync: Vec::new(),
        })
    }

    /// Positions (in `req.recipients`) still to be delivered.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.req.recipients.len())
            .filter(|&p| self.results[p].is_none() && !self.after_sync.iter().any(|a| a.0 == p))
            .collect()
    }

    /// Records an outcome that holds only once the transport's shared sync (the `sync` of
    /// [`serve_batched`]) has succeeded: the recipient is marked and logged then, or
    /// deferred if the sync fails. For a transport served by [`serve`] (no sync), it
    /// counts at the end of the job.
    pub fn complete_after_sync(&mut self, pos: usize, code: u16, dsn: Dsn, text: &str, relay: &str) {
        if pos < self.req.recipients.len() {
            self.after_sync
                .push((pos, code, dsn, text.to_string(), relay.to_string()));
        }
    }

    /// The done marks the outcomes waiting for the shared sync call for, once it
    /// succeeded (none when it failed: those recipients are deferred). `job` numbers the
    /// job in its batch.
    fn marks(&self, job: usize, synced: &Result<(), String>) -> Vec<Mark> {
        if synced.is_err() {
            return Vec::new();
        }
        self.after_sync
            .iter()
            .filter_map(|(pos, code, ..)| {
                let (handle, status) = self.mark_for(*pos, *code)?;
                Some(Mark {
                    job,
                    pos: *pos,
                    file: self.file.clone(),
                    handle,
                    status,
                    error: None,
                })
            })
            .collect()
    }

    /// The outcomes waiting for the shared sync become final: as recorded when `synced`
    /// holds no error (their done marks, written already, are `marks`), else deferred with
    /// its reason.
    fn settle(&mut self, synced: &Result<(), String>, marks: &[&Mark]) {
        for (pos, code, dsn, text, relay) in std::mem::take(&mut self.after_sync) {
            match synced {
                Ok(()) => {
                    match marks.iter().find(|m| m.pos == pos) {
                        Some(m) => {
                            if let Some(e) = &m.error {
                                self.mark_failed(pos, e);
                            }
                        }
                        None if self.mark_for(pos, code).is_some() => {
                            self.mark_failed(pos, "its done mark was not written");
                        }
                        None => {}
                    }
                    self.record(pos, code, dsn, &text, &relay, Handoff::Delivered);
                }
                Err(why) => self.complete(
                    pos,
                    451,
                    Dsn::MAIL_SYSTEM,
                    &format!("{text}, but not made durable: {why}"),
                    &relay,
                ),
            }
        }
    }

    /// The message content, from the start.
    pub fn content(&self) -> io::Result<io::Take<File>> {
        self.qf.content_reader(self.file.try_clone()?)
    }

    /// The message content, from the start, read with `pread` on the job's own descriptor
    /// ([`ContentAt`]): no `dup`, `lseek` or `close` per reader, and readers made at once do
    /// not share a file offset.
    pub fn content_at(&self) -> ContentAt<'_> {
        let r = self.qf.content_range();
        ContentAt {
            file: &self.file,
            pos: r.start,
            end: r.end,
        }
    }

    /// Records the outcome for the recipient at `pos`: marks the queue file when final
    /// and requested, logs the delivery line. A failure to mark turns success into a
    /// deferral of nothing — the delivery happened; the log says the mark failed, and the
    /// recipient may be delivered again (the narrow duplicate window, now visible).
    pub fn complete(&mut self, pos: usize, code: u16, dsn: Dsn, text: &str, relay: &str) {
        self.complete_handoff(pos, code, dsn, text, relay, Handoff::Delivered);
    }

    /// [`complete`](Self::complete) for a transport that hands mail on (smtp, lmtp): a
    /// success also says where it went ([`Handoff`]), which decides whether qmgr asks for
    /// a "relayed" success notice, or none because the next hop took the DSN request.
    pub fn complete_handoff(&mut self, pos: usize, code: u16, dsn: Dsn, text: &str, relay: &str, handoff: Handoff) {
        if let Some((handle, status)) = self.mark_for(pos, code)
            && let Err(e) = mark_done(&self.file, &handle, status)
        {
            self.mark_failed(pos, &e.to_string());
        }
        self.record(pos, code, dsn, text, relay, handoff);
    }

    /// The done mark an outcome `code` of the recipient at `pos` calls for: final (2xx
    /// delivered, 5xx bounced) and asked for by the request.
    fn mark_for(&self, pos: usize, code: u16) -> Option<(RecipientHandle, RecipientStatus)> {
        let r = self.req.recipients.get(pos)?;
        let status = match code {
            200..=299 => RecipientStatus::Delivered,
            // A replica copy's 5xx is not final (qmgr keeps it queued: qmgr/src/replica.rs).
            500..=599 if !self.replica_copy(r) => RecipientStatus::Bounced,
            _ => return None,
        };
        if !r.mark {
            return None;
        }
        Some((self.qf.recipients.get(r.index)?.handle, status))
    }

    fn mark_failed(&self, pos: usize, e: &str) {
        if let Some(r) = self.req.recipients.get(pos) {
            tracing::error!(queue_id = %self.req.queue_id, "cannot mark recipient {} done: {e}", r.address);
        }
    }

    /// Logs the outcome of the recipient at `pos` and keeps it for the reply.
    fn record(&mut self, pos: usize, code: u16, dsn: Dsn, text: &str, relay: &str, handoff: Handoff) {
        let Some(r) = self.req.recipients.get(pos) else { return };
        self.log(r, code, dsn, text, relay);
        let mut res = result(r, code, dsn, text);
        res.handoff = handoff;
        if let Some(slot) = self.results.get_mut(pos) {
            *slot = Some(res);
        }
    }

    /// Whether `r` is a copy for one replica relay (a recipient with a route in the queue
    /// file, written by a hub's cleanup).
    fn replica_copy(&self, r: &DeliverRecipient) -> bool {
        self.qf.recipients.get(r.index).is_some_and(|q| q.route.is_some())
    }

    fn log(&self, r: &DeliverRecipient, code: u16, dsn: Dsn, text: &str, relay: &str) {
        let req = &self.req;
        let status = match code {
            200..=299 => "sent",
            500..=599 if !self.replica_copy(r) => "bounced",
            _ => "deferred",
        };
        let times = [
            req.arrival_micros,
            req.active_micros,
            req.dispatch_micros,
            self.opened_micros,
            now_micros(),
        ];
        let line = deliver::status_line(&r.address, &r.original, relay, times, dsn, status, text);
        tracing::info!(queue_id = %req.queue_id, "{line}");
    }

    /// The reply to qmgr; recipients without an outcome are deferred.
    pub fn reply(self) -> DeliverReply {
        let results = self
            .results
            .into_iter()
            .zip(&self.req.recipients)
            .map(|(res, r)| {
                res.unwrap_or_else(|| result(r, 451, Dsn::MAIL_SYSTEM, "delivery agent left the recipient undecided"))
            })
            .collect();
        DeliverReply { results }
    }
}

/// One done mark of a batch, written on a kept thread ([`crate::parallel::for_each_kept`])
/// after the transport's shared sync: the recipient at `pos` of the batch's job `job`.
struct Mark {
    job: usize,
    pos: usize,
    file: Arc<File>,
    handle: RecipientHandle,
    status: RecipientStatus,
    /// Why it could not be written.
    error: Option<String>,
}

impl Mark {
    fn write(&mut self) {
        self.error = mark_done(&self.file, &self.handle, self.status)
            .err()
            .map(|e| e.to_string());
    }
}

/// A reader of a byte range of a file by `pread` ([`Job::content_at`]).
pub struct ContentAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl ContentAt<'_> {
    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.pos)
    }
}

impl io::Read for ContentAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining()).unwrap_or(usize::MAX).min(buf.len());
        let Some(buf) = buf.get_mut(..want).filter(|b| !b.is_empty()) else {
            return Ok(0);
        };
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn result(r: &DeliverRecipient, code: u16, dsn: Dsn, text: &str) -> RecipientResult {
    RecipientResult {
        index: r.index,
        address: r.address.clone(),
        code,
        dsn,
        text: text.into(),
        handoff: Handoff::Delivered,
    }
}

/// Serves one deliver connection: handshake, request (one job or a batch), `deliver(job)`
/// for each job, reply. The transport's function sees only jobs whose queue file opened;
/// one that cannot be opened defers every recipient with the reason.
pub fn serve(stream: UnixStream, timeout: Duration, deliver: impl FnMut(&mut Job)) {
    serve_batched(stream, timeout, deliver, || Ok(()));
}

/// [`serve`] for a transport that shares a sync among a batch's deliveries: after every
/// job of the request was given to `deliver`, `sync` runs once and settles the outcomes
/// that wait for it ([`Job::complete_after_sync`]); then the reply.
pub fn serve_batched(
    stream: UnixStream,
    timeout: Duration,
    mut deliver: impl FnMut(&mut Job),
    mut sync: impl FnMut() -> Result<(), String>,
) {
    let mut ipc = match IpcStream::server(stream, deliver::PROTOCOL, deliver::VERSION, Some(timeout)) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("deliver request: {e}");
            return;
        }
    };
    let (reqs, batch) = match ipc.recv::<AgentRequest>() {
        Ok(AgentRequest::One(r)) => (vec![r], false),
        Ok(AgentRequest::Batch(b)) if b.batch.len() <= deliver::MAX_BATCH => (b.batch, true),
        Ok(AgentRequest::Batch(b)) => {
            tracing::warn!(
                "deliver request: a batch of {} jobs (at most {})",
                b.batch.len(),
                deliver::MAX_BATCH
            );
            return;
        }
        Err(e) => {
            tracing::warn!("deliver request: {e}");
            return;
        }
    };
    let mut jobs: Vec<Result<Job, (DeliverRequest, String)>> = Vec::with_capacity(reqs.len());
    for req in reqs {
        jobs.push(match Job::open(req.clone()) {
            Ok(mut job) => {
                deliver(&mut job);
                Ok(job)
            }
            Err(e) => {
                tracing::warn!(queue_id = %req.queue_id, "cannot open queue file: {e}");
                Err((req, e))
            }
        });
    }
    // Always, so nothing a transport wrote is left unsynced; costs nothing when empty.
    if jobs.iter().any(Result::is_ok) {
        let synced = sync();
        // Each queue file's done mark is an fdatasync of its own: several at once, on
        // threads kept between batches.
        let marks: Vec<Mark> = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| j.as_ref().ok().map(|job| job.marks(i, &synced)))
            .flatten()
            .collect();
        let marks = crate::parallel::for_each_kept(marks, crate::parallel::MAX_THREADS, Mark::write);
        for (i, job) in jobs.iter_mut().enumerate() {
            if let Ok(job) = job {
                let mine: Vec<&Mark> = marks.iter().filter(|m| m.job == i).collect();
                job.settle(&synced, &mine);
            }
        }
    }
    let replies: Vec<DeliverReply> = jobs
        .into_iter()
        .map(|j| match j {
            Ok(job) => job.reply(),
            Err((req, e)) => DeliverReply {
                results: req
                    .recipients
                    .iter()
                    .map(|r| result(r, 451, Dsn::MAIL_SYSTEM, &e))
                    .collect(),
            },
        })
        .collect();
    let sent = if batch {
        ipc.send(&DeliverBatchReply { replies })
    } else {
        match replies.first() {
            Some(r) => ipc.send(r),
            None => Ok(()),
        }
    };
    if let Err(e) = sent {
        tracing::warn!("cannot reply to qmgr: {e}");
    }
}
