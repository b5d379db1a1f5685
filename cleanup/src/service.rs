//! One connection: the cleanup protocol exchange, the processing pipeline, and the one
//! place where outcomes become [`CleanupReply`]s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_checks::Cached;
use postern_lib::address;
use postern_lib::dsn::Dsn;
use postern_lib::ipc::IpcError;
use postern_lib::ipc::codec::Encoder;
use postern_lib::proto::cleanup::{self, CleanupReply, CleanupRequest, CleanupStarted, Origin, Submission};
use postern_lib::proto::trigger;
use postern_lib::queue_file::{Arrival, Envelope, Notify, RecipientSpec};
use postern_lib::queue_id::QueueId;
use postern_lib::skeleton::{Accepted, Context, Stream};
use postern_lib::strbuf::printable_bounded;
use postern_milter::Message;

use crate::wire::Wire;
use crate::{content, milters, queue, replica};

/// How long to wait for the client between frames (Postfix's `ipc_timeout`).
const IPC_TIMEOUT: Duration = Duration::from_secs(3600);

/// Per-process state: the check tables, reloaded when their files change.
#[derive(Debug, Default)]
pub struct State {
    header_checks: Cached,
    body_checks: Cached,
}

/// Why a message is not queued normally.
#[derive(Debug)]
pub enum Stop {
    /// Refuse for good: code, enhanced status, text.
    Reject(u16, Dsn, String),
    /// Refuse this time.
    Temp(u16, Dsn, String),
    /// Accept and drop.
    Discard,
}

impl Stop {
    /// A 451 with this enhanced status and text.
    pub fn temp(dsn: Dsn, text: &str) -> Stop {
        Stop::Temp(451, dsn, text.into())
    }
}

/// Serves one client connection.
pub fn serve(state: &mut State, ctx: &Context, conn: Accepted) {
    let Stream::Unix(sock) = conn.stream else {
        tracing::warn!("cleanup serves unix sockets only");
        return;
    };
    let mut ipc = match Wire::server(sock, cleanup::PROTOCOL, cleanup::VERSION, Some(IPC_TIMEOUT)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cleanup handshake: {e}");
            return;
        }
    };
    let qid = QueueId::new();
    let sub = match ipc.recv().and_then(|f| f.message::<CleanupRequest>()) {
        Ok(CleanupRequest::Submit(s)) => s,
        Ok(CleanupRequest::Open(s)) => {
            let started = CleanupStarted { queue_id: qid };
            if let Err(e) = ipc.send(|out| Encoder::message(&started, out)) {
                tracing::warn!("{qid}: cannot announce the queue ID: {e}");
                return;
            }
            s
        }
        Err(e) => {
            tracing::warn!("cleanup request: {e}");
            return;
        }
    };
    let limit = ctx.main.message_size_limit;
    let mut held = HeldContent::new(ctx.main.cleanup_content_memory_limit);
    let (data, total) = match read_content(&mut ipc, limit, &mut held) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("{qid}: lost connection while receiving the message content: {e}");
            return;
        }
    };
    let outcome = if total > limit {
        tracing::info!("{qid}: reject: message size {total} exceeds message_size_limit {limit}");
        Err(Stop::Reject(552, Dsn::TOO_BIG, "Error: message file too big".into()))
    } else if held.refused {
        tracing::warn!(
            "{qid}: message of {total} bytes refused for now: this cleanup process holds {} of its {} bytes of message content (cleanup_content_memory_limit)",
            HELD.load(Ordering::Relaxed),
            held.budget
        );
        Err(Stop::temp(
            Dsn::NOT_ACCEPTING,
            "Server busy: too much mail in transit, try again later",
        ))
    } else {
        process(state, ctx, sub, data, &qid)
    };
    let (reply, queued_dir) = match outcome {
        Ok(dir) => (
            CleanupReply::Queued {
                queue_id: qid.to_string(),
            },
            Some(dir),
        ),
        Err(Stop::Discard) => (
            CleanupReply::Discarded {
                queue_id: qid.to_string(),
            },
            None,
        ),
        Err(Stop::Reject(code, dsn, text)) => (CleanupReply::Rejected { code, dsn, text }, None),
        Err(Stop::Temp(code, dsn, text)) => (CleanupReply::TempFail { code, dsn, text }, None),
    };
    if let Err(e) = ipc.send(|out| Encoder::message(&reply, out)) {
        // The file is durable either way; the client will see a broken connection and may
        // resubmit (a duplicate, never a loss).
        tracing::warn!("{qid}: cannot send the reply: {e}");
    }
    if queued_dir == Some("incoming") {
        QMGR.send(trigger::ARRIVED);
    }
}

/// The process's trigger connection to qmgr, kept open (one write per message).
static QMGR: trigger::Kept = trigger::Kept::new(trigger::QMGR_SOCKET);

/// Message content held in memory by all connections (threads) of this process.
static HELD: AtomicU64 = AtomicU64::new(0);

/// One connection's share of [`HELD`], given back when the connection is done, however it
/// ends. A share that would take the process past its budget is refused, and the message
/// with it (a temporary failure: the client sends it again later, nothing accepted is lost).
struct HeldContent {
    budget: u64,
    mine: u64,
    refused: bool,
}

impl HeldContent {
    fn new(budget: u64) -> HeldContent {
        HeldContent {
            budget,
            mine: 0,
            refused: false,
        }
    }

    /// Takes `n` more bytes of the budget; false (and from then on) when they do not fit.
    fn take(&mut self, n: u64) -> bool {
        if self.refused {
            return false;
        }
        let fits = HELD
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|after| *after <= self.budget)
            })
            .is_ok();
        if fits {
            self.mine += n;
        } else {
            self.refused = true;
            self.release();
        }
        fits
    }

    fn release(&mut self) {
        HELD.fetch_sub(self.mine, Ordering::AcqRel);
        self.mine = 0;
    }
}

impl Drop for HeldContent {
    fn drop(&mut self) {
        self.release();
    }
}

/// Reads the content stream to its end; stores at most `limit` bytes, counts them all.
/// Content that does not fit the process's budget (`held`) is read and dropped.
fn read_content(ipc: &mut Wire, limit: u64, held: &mut HeldContent) -> Result<(Vec<u8>, u64), IpcError> {
    let mut data = Vec::new();
    let mut total: u64 = 0;
    ipc.read_data(|chunk| {
        let n = chunk.len() as u64;
        total = total.saturating_add(n);
        if total <= limit {
            if held.take(n) {
                data.extend_from_slice(chunk);
            } else {
                data = Vec::new();
            }
        }
    })?;
    Ok((data, total))
}

fn table_path(ctx: &Context, setting: &str) -> PathBuf {
    let s = setting.trim();
    let s = s
        .strip_prefix("regexp:")
        .or_else(|| s.strip_prefix("pcre:"))
        .unwrap_or(s);
    if s.is_empty() {
        return PathBuf::new();
    }
    let p = Path::new(s);
    if p.is_absolute() {
        p.to_owned()
    } else {
        ctx.config.dir.join(p)
    }
}

/// The pipeline; returns the queue directory the message went to.
fn process(
    state: &mut State,
    ctx: &Context,
    sub: Submission,
    data: Vec<u8>,
    qid: &QueueId,
) -> Result<&'static str, Stop> {
    let main = &ctx.main;
    let q = qid.as_str();
    let data = content::to_lf(data);
    let limits = content::header_limits(main.header_size_limit);
    let (mut header, body_at) = postern_lib::headers::parse(&data, limits);
    if header.len() >= limits.max_fields {
        tracing::warn!(
            "{q}: header reached {} fields; any further ones are kept as message body",
            limits.max_fields
        );
    }
    let mut body = data.get(body_at..).unwrap_or_default().to_vec();
    drop(data);
    let bad_addr = || Stop::Reject(553, Dsn::BAD_ADDRESS_SYNTAX, "Error: bad address syntax".into());
    let sender = address::canonical(&sub.sender, &main.myorigin);
    if !address::storable(&sender) {
        return Err(bad_addr());
    }
    let mut recipients: Vec<(String, Option<String>, Notify)> = Vec::new();
    for r in &sub.recipients {
        let a = address::canonical(&r.address, &main.myorigin);
        if a.is_empty() || !address::storable(&a) {
            return Err(bad_addr());
        }
        recipients.push((a, r.orcpt.clone(), notify(&r.notify)));
    }
    if sub.extract_recipients {
        for a in content::extract_recipients(&header) {
            let a = address::canonical(&a, &main.myorigin);
            if address::storable(&a) && !recipients.iter().any(|(x, _, _)| *x == a) {
                recipients.push((a, None, Notify::UNSPECIFIED));
            }
        }
        header.remove_all("Bcc");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let local = sub.origin == Origin::Local;
    content::add_missing(
        &mut header,
        local.then_some((
            sender.as_str(),
            sub.attributes
                .get(postern_lib::maildrop::attr::FULL_NAME)
                .map(String::as_str),
        )),
        now.as_secs(),
        q,
        &main.myhostname,
    )?;
    let mut flags = content::Flags::default();
    if sub.hold {
        flags.hold = Some("requested by the client".into());
    }
    if sub.origin != Origin::Internal {
        let config_error = |e: postern_checks::ChecksError| {
            tracing::error!("{q}: {e}");
            Stop::temp(Dsn::MISCONFIGURED, "Error: server configuration error")
        };
        if let Some(t) = state
            .header_checks
            .get(&table_path(ctx, &main.header_checks))
            .map_err(config_error)?
        {
            content::header_checks(&mut header, t, q, &mut flags)?;
        }
        if let Some(t) = state
            .body_checks
            .get(&table_path(ctx, &main.body_checks))
            .map_err(config_error)?
            && let Some(b) = content::body_checks(&body, t, q, &mut flags)?
        {
            body = b;
        }
    }
    let list = match sub.origin {
        Origin::Smtp => &main.smtpd_milters,
        Origin::Local => &main.non_smtpd_milters,
        Origin::Internal => &Vec::new(),
    };
    let mut sender = sender;
    if !list.is_empty() {
        let tx = milters::transaction(&sub.attributes, main, q, local);
        let mut msg = Message {
            sender: sender.clone(),
            recipients: recipients.iter().map(|(a, _, _)| a.clone()).collect(),
            header,
            body,
            quarantine: None,
        };
        milters::run_all(list, main, &tx, &mut msg, q)?;
        // Keep DSN details of recipients that survived; new ones have none.
        let old = std::mem::take(&mut recipients);
        for a in msg.recipients {
            let a = address::canonical(&a, &main.myorigin);
            if a.is_empty() || !address::storable(&a) {
                continue;
            }
            let r = old
                .iter()
                .find(|(x, _, _)| x.eq_ignore_ascii_case(&a))
                .cloned()
                .unwrap_or((a, None, Notify::UNSPECIFIED));
            recipients.push(r);
        }
        let s = address::canonical(&msg.sender, &main.myorigin);
        if address::storable(&s) {
            sender = s;
        }
        if let Some(reason) = msg.quarantine {
            tracing::info!("{q}: milter-hold: {}", printable_bounded(reason.as_bytes(), 200));
            flags.hold.get_or_insert(reason);
        }
        header = msg.header;
        body = msg.body;
    }
    if recipients.is_empty() {
        tracing::info!("{q}: reject: no recipients");
        return Err(Stop::Reject(
            554,
            Dsn::INVALID_COMMAND,
            "Error: no recipients specified".into(),
        ));
    }
    let env = Envelope {
        queue_id: *qid,
        arrival: Arrival {
            secs: now.as_secs(),
            micros: now.subsec_micros(),
        },
        sender: sender.clone(),
        attributes: sub
            .attributes
            .iter()
            .filter(|(_, v)| address::storable(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let specs: Vec<RecipientSpec> = recipients
        .iter()
        .map(|(a, o, n)| RecipientSpec {
            address: a.clone(),
            orcpt: o.clone().filter(|o| address::storable(o)),
            notify: *n,
        })
        .collect();
    let addrs: Vec<&str> = specs.iter().map(|s| s.address.as_str()).collect();
    let replicated = replica::replicated(main, &addrs);
    let arrival = (env.arrival.secs, env.arrival.micros);
    let internal = sub.origin == Origin::Internal;
    let guid = replica::header(&mut header, main, &sub.attributes, internal, replicated, arrival, q)?;
    let specs = replica::copies(main, specs, replicated);
    if replicated && let Some(g) = &guid {
        if main.director_pairs.is_empty() {
            tracing::info!(
                "{q}: replica guid={g}, one copy per relay: {}",
                main.replica_relays.join(", ")
            );
        } else {
            tracing::info!("{q}: replica guid={g}, copies per the director's pairs");
        }
    }
    let mut hdr = Vec::with_capacity(header.size() + 1);
    header.write_to(&mut hdr);
    let dir = if flags.hold.is_some() { "hold" } else { "incoming" };
    if let Some(f) = header.get("Message-ID") {
        tracing::info!("{q}: message-id={}", printable_bounded(f.value().as_bytes(), 200));
    }
    let write_error = |e: queue::WriteError| {
        if e.no_space {
            tracing::warn!("{q}: not enough space in the queue file system: {}", e.text);
            Stop::Temp(452, Dsn::SYSTEM_FULL, "Insufficient system storage".into())
        } else {
            tracing::error!("{q}: cannot write queue file: {}", e.text);
            Stop::temp(Dsn::MAIL_SYSTEM, "Error: queue file write error")
        }
    };
    let prepared = queue::prepare(dir, &env, &specs, &hdr, &body).map_err(write_error)?;
    crate::mirror::copy(main, q, prepared.path())?;
    prepared.commit().map_err(write_error)?;
    // The `from=<...>, size=..., nrcpt=...` line is qmgr's (as in Postfix), logged when the
    // message enters the active queue; log analysers take the first one per queue ID.
    if dir == "hold" {
        tracing::info!(
            "{q}: from=<{}>, size={}, nrcpt={} (queue hold)",
            printable_bounded(sender.as_bytes(), 300),
            hdr.len() + 1 + body.len(),
            specs.len()
        );
    }
    Ok(dir)
}

fn notify(words: &[String]) -> Notify {
    let has = |w: &str| words.iter().any(|x| x.eq_ignore_ascii_case(w));
    if has("NEVER") {
        Notify::NEVER
    } else {
        Notify::new(has("SUCCESS"), has("FAILURE"), has("DELAY"))
    }
}
