//! One delivery job, on the shared delivery-agent job ([`postern_lib::agent`]: the queue
//! file opened, locked, marked and logged there): for each pending recipient, aliases,
//! then each target; every failure becomes a per-recipient [`Outcome`] here, in one place.

use std::io::{BufRead, BufReader, Read};

use postern_lib::address::parse_mailbox;
use postern_lib::agent::Job;
use postern_lib::proto::deliver::status_line;

use crate::aliases::{self, Kind};
use crate::mailbox::{self, Lookup, Users};
use crate::settings::{MailboxFormat, Settings};

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
}

/// The `Delivered-To:` values of the message header, lower-cased.
fn delivered_to(job: &Job) -> Vec<String> {
    let Ok(content) = job.content() else {
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

/// Delivers every pending recipient of `job`, completing each before the next starts.
pub fn deliver(s: &mut Settings, job: &mut Job) {
    let seen = delivered_to(job);
    let mut users = std::mem::take(&mut s.users);
    for pos in job.pending() {
        let Some(r) = job.req.recipients.get(pos) else { continue };
        let matches = job
            .qf
            .recipients
            .get(r.index)
            .is_some_and(|q| q.spec.address == r.original);
        let outcome = if matches {
            deliver_one(s, &mut users, job, pos, &seen)
        } else {
            Outcome::temp("4.3.0", "recipient not found in the queue file".into())
        };
        job.complete(pos, outcome.code, &outcome.dsn, &outcome.text, "local");
    }
    s.users = users;
}

/// One recipient: aliases, then each target; the worst outcome wins (a temporary failure
/// of one target retries the recipient). With several targets each gets its own log line.
fn deliver_one(s: &mut Settings, users: &mut Users, job: &Job, pos: usize, seen: &[String]) -> Outcome {
    let Some(r) = job.req.recipients.get(pos) else {
        return Outcome::temp("4.3.0", "no such recipient in the request".into());
    };
    let qf = &job.qf;
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
        let sender = t.owner.clone().unwrap_or_else(|| job.req.sender.clone());
        let prefix = format!("Return-Path: <{sender}>\nDelivered-To: {}\n", r.address);
        let mut content = match job.content() {
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
                    let lookup_base = match s.mailbox_format {
                        MailboxFormat::Mbox => s.spool_dir(),
                        MailboxFormat::Maildir => s.mailbox_base.clone(),
                    };
                    match users.lookup(&lookup_base, &user) {
                        Lookup::Unknown => Outcome::perm("5.1.1", format!("unknown user: \"{user}\"")),
                        Lookup::TempFail(why) => Outcome::temp("4.3.0", why),
                        Lookup::Exists(quota) if s.mailbox_format == MailboxFormat::Mbox => crate::mbox::deliver_user(
                            &s.spool_dir(),
                            &user,
                            &sender,
                            quota,
                            qf.content_len(),
                            prefix.as_bytes(),
                            &mut content,
                            s.lock_stale,
                        ),
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
            let req = &job.req;
            let times = [
                req.arrival_micros,
                req.active_micros,
                req.dispatch_micros,
                start,
                now_micros(),
            ];
            let line = status_line(&to, &r.address, "local", times, &o.dsn, o.status(), &o.text);
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

impl Outcome {
    fn status(&self) -> &'static str {
        match self.code {
            200..=299 => "sent",
            500.. => "bounced",
            _ => "deferred",
        }
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
