//! One delivery job: the request from qmgr, each recipient delivered, marked in the queue
//! file and logged, the results sent back. Every failure becomes a per-recipient
//! [`Outcome`] here, in one place.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use std::time::Duration;

use postern_lib::address::parse_mailbox;
use postern_lib::ipc::IpcStream;
use postern_lib::proto::deliver::{
    self, DeliverRecipient, DeliverReply, DeliverRequest, RecipientResult, status_line, valid_queue_file,
};
use postern_lib::queue_file::{QueueFile, RecipientStatus, mark_done};
use postern_lib::skeleton::{Accepted, Stream};
use rustix::fs::{FlockOperation, OFlags};

use crate::aliases::{self, Kind};
use crate::mailbox::{self, Lookup, Users};
use crate::settings::Settings;

/// How long qmgr may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most header bytes scanned for `Delivered-To:`.
const MAX_HEADER_SCAN: u64 = 1 << 20;

/// The result of one delivery (to one target or one recipient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// 250, 4xx, 5xx.
    pub code: u16,
    /// Enhanced status code.
    pub dsn: String,
    /// Text.
    pub text: String,
}

impl Outcome {
    /// Delivered.
    pub fn sent(text: &str) -> Outcome {
        Outcome {
            code: 250,
            dsn: "2.0.0".into(),
            text: text.into(),
        }
    }
    /// Try again later.
    pub fn temp(dsn: &str, text: String) -> Outcome {
        Outcome {
            code: 450,
            dsn: dsn.into(),
            text,
        }
    }
    /// Failed for good.
    pub fn perm(dsn: &str, text: String) -> Outcome {
        Outcome {
            code: 550,
            dsn: dsn.into(),
            text,
        }
    }
    fn status(&self) -> &'static str {
        match self.code {
            200..=299 => "sent",
            500.. => "bounced",
            _ => "deferred",
        }
    }
}

/// Serves one connection from qmgr.
pub fn serve(s: &mut Settings, conn: Accepted) {
    let Stream::Unix(sock) = conn.stream else { return };
    let mut c = match IpcStream::server(sock, deliver::PROTOCOL, deliver::VERSION, Some(REQUEST_TIMEOUT)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("deliver client: {e}");
            return;
        }
    };
    let req: DeliverRequest = match c.recv() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("deliver request: {e}");
            return;
        }
    };
    let results = run(s, &req);
    if let Err(e) = c.send(&DeliverReply { results }) {
        tracing::warn!(queue_id = req.queue_id.as_str(), "cannot answer qmgr: {e}");
    }
}

fn all(req: &DeliverRequest, o: &Outcome) -> Vec<RecipientResult> {
    req.recipients
        .iter()
        .map(|r| RecipientResult {
            index: r.index,
            address: r.address.clone(),
            code: o.code,
            dsn: o.dsn.clone(),
            text: o.text.clone(),
        })
        .take(deliver::MAX_RECIPIENTS)
        .collect()
}

/// Opens the queue file read-write without following symlinks, with a shared lock held
/// for the whole job (qmgr's restart waits for it).
fn open_queue_file(path: &str) -> Result<File, String> {
    if !valid_queue_file(path) {
        return Err(format!("bad queue file path {path:?}"));
    }
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("open {path}: {e}"))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("fstat {path}: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile || st.st_nlink != 1 {
        return Err(format!("{path} is not a regular file with one link"));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::RDWR).map_err(|e| format!("fcntl {path}: {e}"))?;
    rustix::fs::flock(&fd, FlockOperation::LockShared).map_err(|e| format!("lock {path}: {e}"))?;
    Ok(File::from(fd))
}

/// The `Delivered-To:` values of the message header, lower-cased.
fn delivered_to(qf: &QueueFile, file: &File) -> Vec<String> {
    let Ok(content) = qf.content_reader(file) else {
        return Vec::new();
    };
    let mut r = BufReader::new(content.take(MAX_HEADER_SCAN));
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let l = String::from_utf8_lossy(&line);
        let l = l.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':')
            && name.eq_ignore_ascii_case("delivered-to")
        {
            out.push(value.trim().trim_matches(['<', '>']).to_lowercase());
        }
    }
    out
}

fn run(s: &mut Settings, req: &DeliverRequest) -> Vec<RecipientResult> {
    let file = match open_queue_file(&req.queue_file) {
        Ok(f) => f,
        Err(e) => return all(req, &Outcome::temp("4.3.0", format!("cannot open queue file: {e}"))),
    };
    let qf = match QueueFile::read(&file) {
        Ok(q) => q,
        Err(e) => return all(req, &Outcome::temp("4.3.0", format!("cannot read queue file: {e}"))),
    };
    let seen = delivered_to(&qf, &file);
    let mut users = Users::default();
    let mut results = Vec::new();
    for r in req.recipients.iter().take(deliver::MAX_RECIPIENTS) {
        let start = now_micros();
        let rec = qf.recipients.get(r.index).filter(|q| q.spec.address == r.original);
        let outcome = match rec {
            None => Outcome::temp("4.3.0", "recipient not found in the queue file".into()),
            Some(q) if q.status == RecipientStatus::Delivered => Outcome::sent("already delivered"),
            Some(q) if q.status.is_final() => Outcome::perm("5.0.0", "already failed".into()),
            Some(_) => deliver_one(s, &mut users, req, r, &qf, &file, &seen),
        };
        if r.mark
            && outcome.code != 450
            && let Some(q) = rec
            && !q.status.is_final()
        {
            let status = if outcome.code < 300 {
                RecipientStatus::Delivered
            } else {
                RecipientStatus::Bounced
            };
            if let Err(e) = mark_done(&file, &q.handle, status) {
                tracing::warn!(queue_id = req.queue_id.as_str(), "cannot mark {} done: {e}", r.address);
            }
        }
        let line = status_line(
            &r.address,
            &r.original,
            "local",
            [
                req.arrival_micros,
                req.active_micros,
                req.dispatch_micros,
                start,
                now_micros(),
            ],
            &outcome.dsn,
            outcome.status(),
            &outcome.text,
        );
        tracing::info!(queue_id = req.queue_id.as_str(), "{line}");
        results.push(RecipientResult {
            index: r.index,
            address: r.address.clone(),
            code: outcome.code,
            dsn: outcome.dsn,
            text: outcome.text,
        });
    }
    results
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One recipient: aliases, then each target; the worst outcome wins (a temporary failure
/// of one target retries the recipient).
fn deliver_one(
    s: &mut Settings,
    users: &mut Users,
    req: &DeliverRequest,
    r: &DeliverRecipient,
    qf: &QueueFile,
    file: &File,
    seen: &[String],
) -> Outcome {
    let addr = match parse_mailbox(&r.address, true) {
        Ok(a) => a,
        Err(e) => return Outcome::perm("5.1.3", format!("bad recipient address: {e}")),
    };
    if !s.destinations.is_local_domain(&addr.domain) {
        return Outcome::perm("5.1.2", format!("domain {} is not delivered here", addr.domain));
    }
    let lower = r.address.to_lowercase();
    if seen.contains(&lower) {
        return Outcome::perm("5.4.6", format!("mail forwarding loop for {}", r.address));
    }
    let local = addr.local.to_lowercase();
    let base = s
        .delimiter
        .chars()
        .filter_map(|d| local.find(d))
        .min()
        .filter(|&at| at > 0)
        .and_then(|at| local.get(..at))
        .map(str::to_string);
    let myorigin = s.myorigin.clone();
    let destinations = s.destinations.clone();
    let is_local = |d: &str| destinations.is_local_domain(d);
    let targets = match s.aliases() {
        Ok(tables) => aliases::expand(tables, &local, base.as_deref(), &myorigin, &is_local),
        Err(e) => return Outcome::temp("4.3.0", format!("alias table unavailable: {e}")),
    };
    let targets = match targets {
        Ok(t) => t,
        Err(e) => return Outcome::perm("5.4.6", e),
    };
    let mut outcomes = Vec::new();
    let single = targets.len() == 1;
    for t in &targets {
        let start = now_micros();
        let sender = t.owner.clone().unwrap_or_else(|| req.sender.clone());
        let prefix = format!("Return-Path: <{sender}>\nDelivered-To: {}\n", r.address);
        let mut content = match qf.content_reader(file) {
            Ok(c) => c,
            Err(e) => return Outcome::temp("4.3.0", format!("cannot read queue file: {e}")),
        };
        let (to, o) = match &t.kind {
            Kind::User(u) => {
                let user = base_user(u, &s.delimiter);
                let to = format!("{u}@{}", addr.domain);
                let o = if postern_lib::users::check_name(&user).is_err() {
                    Outcome::perm("5.1.1", format!("unknown user: \"{u}\""))
                } else {
                    match users.lookup(&s.mailbox_base, &user) {
                        Lookup::Unknown => Outcome::perm("5.1.1", format!("unknown user: \"{user}\"")),
                        Lookup::TempFail(why) => Outcome::temp("4.3.0", why),
                        Lookup::Exists(quota) => {
                            let tag = format!("{}x{:08x}", r.index, fnv32(r.address.as_bytes()));
                            let once = postern_lib::maildir_deliver::once_name(
                                qf.envelope.arrival.secs,
                                qf.envelope.arrival.micros,
                                qf.envelope.queue_id.as_str(),
                                &tag,
                            );
                            mailbox::deliver(
                                &s.mailbox_base,
                                &user,
                                &once,
                                quota,
                                qf.content_len(),
                                prefix.as_bytes(),
                                &mut content,
                            )
                        }
                    }
                };
                (to, o)
            }
            Kind::File(path) => (
                path.clone(),
                crate::mbox::append(path, &sender, prefix.as_bytes(), &mut content),
            ),
            Kind::Command(cmd) => (
                format!("|{cmd}"),
                Outcome::temp("4.3.0", "delivery to a command is not supported yet".into()),
            ),
            Kind::Include(f) => (
                format!(":include:{f}"),
                Outcome::temp("4.3.0", ":include: aliases are not supported yet".into()),
            ),
            Kind::Remote(a) => (
                a.clone(),
                Outcome::temp(
                    "4.3.0",
                    "alias to a remote address: forwarding is not supported yet".into(),
                ),
            ),
        };
        if !single {
            let line = status_line(
                &to,
                &r.address,
                "local",
                [
                    req.arrival_micros,
                    req.active_micros,
                    req.dispatch_micros,
                    start,
                    now_micros(),
                ],
                &o.dsn,
                o.status(),
                &o.text,
            );
            tracing::info!(queue_id = req.queue_id.as_str(), "{line}");
        }
        outcomes.push(o);
    }
    merge(outcomes)
}

/// FNV-1a, 32 bits: tells apart the addresses one queue recipient was routed to.
fn fnv32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// `user+ext` → `user` for the mailbox name.
fn base_user(u: &str, delimiter: &str) -> String {
    delimiter
        .chars()
        .filter_map(|d| u.find(d))
        .min()
        .filter(|&at| at > 0)
        .and_then(|at| u.get(..at))
        .unwrap_or(u)
        .to_string()
}

/// The recipient's outcome from its targets': any temporary failure → that; else any
/// success → sent; else the first permanent failure.
fn merge(outcomes: Vec<Outcome>) -> Outcome {
    if let Some(t) = outcomes.iter().find(|o| (400..500).contains(&o.code)) {
        return t.clone();
    }
    if outcomes.len() > 1 && outcomes.iter().any(|o| o.code < 300) {
        return Outcome::sent("delivered to alias targets");
    }
    outcomes
        .into_iter()
        .next()
        .unwrap_or_else(|| Outcome::perm("5.1.1", "alias expands to nothing".into()))
}
