//! Serving one notice request: read what the queue file says, decide who (if anyone) gets
//! a report and about which recipients, build it ([`crate::report`]) and submit it
//! through cleanup from the null sender.
//!
//! Who gets it: the original sender; for a message from the null sender (itself a
//! notice, or a client's `MAIL FROM:<>`), a failure report goes once to
//! `bounce_notice_recipient` as a double bounce; a failed double bounce, and delay or
//! success notices about null-sender mail, are dropped with a log line — so notices can
//! never loop. Which recipients: those whose DSN NOTIFY asks for this kind (no NOTIFY
//! means failures and delays; NEVER means nothing). What is returned: the whole message
//! for failures when RET=FULL or unspecified and it fits `bounce_size_limit`, else the
//! header only; delay warnings and success notices ("delivered", "relayed") always carry
//! the header only, as Postfix's do (RET is about failure reports, RFC 3461 section 4.3).

use crate::report::{Entry, Report, header_of};
use postern_lib::ipc::IpcStream;
use postern_lib::proto::bounce::{BounceReply, NOTICE_ATTRIBUTE, NoticeKind, NoticeRecipient};
use postern_lib::proto::cleanup::{self, CleanupReply, CleanupRequest, Origin, Recipient, Submission};
use postern_lib::queue_file::{QueueFile, attr};
use postern_lib::safe_open::{Expect, open_read};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Settings the notices need.
pub struct Settings {
    /// Reporting host.
    pub hostname: String,
    /// Domain for bare addresses.
    pub origin: String,
    /// Largest original returned whole.
    pub size_limit: u64,
    /// Who gets double bounces.
    pub notice_recipient: String,
    /// Timeout towards cleanup.
    pub timeout: Duration,
}

/// Handles one request.
pub fn notify(
    s: &Settings,
    queue_id: &str,
    queue_file: &str,
    kind: NoticeKind,
    rcpts: &[NoticeRecipient],
) -> BounceReply {
    match build_and_send(s, queue_id, queue_file, kind, rcpts) {
        Ok(reply) => reply,
        Err(reason) => {
            tracing::warn!(queue_id = %queue_id, "cannot send {kind:?} notice: {reason}");
            BounceReply::TempFail { reason }
        }
    }
}

/// Queue file attribute of a notice: the queue ID of the message the first notice in the
/// chain was about (a double bounce names the original mail, not the bounce).
const ORIGINAL_ID_ATTRIBUTE: &str = "notice_original_id";

fn valid_queue_file(p: &str) -> bool {
    let mut parts = p.split('/');
    matches!(parts.next(), Some("active" | "deferred" | "incoming" | "hold"))
        && parts.clone().count() >= 1
        && parts.all(|c| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn build_and_send(
    s: &Settings,
    queue_id: &str,
    queue_file: &str,
    kind: NoticeKind,
    rcpts: &[NoticeRecipient],
) -> Result<BounceReply, String> {
    if !valid_queue_file(queue_file) {
        return Err(format!("bad queue file name {queue_file:?}"));
    }
    let file = open_read(Path::new(queue_file), &Expect::current_user()).map_err(|e| e.to_string())?;
    let qf = QueueFile::read(&file).map_err(|e| format!("{queue_file}: {e}"))?;
    let env = &qf.envelope;
    let not_needed = |reason: String| {
        tracing::info!(queue_id = %queue_id, "{reason}");
        Ok(BounceReply::NotNeeded { reason })
    };
    let notice_of = env.attributes.get(NOTICE_ATTRIBUTE).map(String::as_str);
    let (to, notice) = match (env.sender.is_empty(), kind) {
        (false, _) => (env.sender.clone(), kind_name(kind)),
        (true, NoticeKind::Failure) if notice_of != Some("double") => {
            (qualify(&s.notice_recipient, &s.origin), "double")
        }
        (true, NoticeKind::Failure) => {
            // A double bounce that could not be delivered: the end of the line, so say so
            // loudly, naming the message it was about and why postmaster did not get it.
            let original = env
                .attributes
                .get(ORIGINAL_ID_ATTRIBUTE)
                .map_or("unknown", String::as_str);
            let why: Vec<String> = rcpts
                .iter()
                .map(|r| format!("to=<{}>, dsn={}, reason: {}", r.address, r.dsn, r.text))
                .collect();
            let reason = format!(
                "undeliverable postmaster notification discarded (it reported on queue ID {original}): {}",
                why.join("; ")
            );
            tracing::warn!(queue_id = %queue_id, "{reason}");
            return Ok(BounceReply::NotNeeded { reason });
        }
        (true, _) => return not_needed(format!("{kind:?} notice about null-sender mail dropped")),
    };
    let entries: Vec<Entry> = rcpts
        .iter()
        .filter_map(|r| {
            let rec = qf.recipients.get(r.index)?;
            let n = rec.spec.notify;
            let wanted = match kind {
                _ if n.never() => false,
                NoticeKind::Failure => n.bits() == 0 || n.failure(),
                NoticeKind::Delay => n.bits() == 0 || n.delay(),
                NoticeKind::Success | NoticeKind::Relayed => n.success(),
            };
            // A double bounce goes to the postmaster regardless of the sender's wishes.
            (wanted || notice == "double").then(|| {
                let (remote_mta, text) = match (&r.remote_mta, remote_said(&r.text)) {
                    (Some(m), Some((_, said))) => (Some(m.clone()), said.to_string()),
                    (Some(m), None) => (Some(m.clone()), r.text.clone()),
                    (None, Some((host, said))) => (Some(host.to_string()), said.to_string()),
                    (None, None) => (None, r.text.clone()),
                };
                Entry {
                    address: r.address.clone(),
                    orcpt: rec.spec.orcpt.clone(),
                    dsn: r.dsn,
                    text,
                    remote_mta,
                }
            })
        })
        .collect();
    if entries.is_empty() {
        return not_needed(format!("no {kind:?} notice: no recipient asked for one"));
    }
    let ret_hdrs = env
        .attributes
        .get(attr::DSN_RET)
        .is_some_and(|r| r.eq_ignore_ascii_case("HDRS"));
    let whole = kind == NoticeKind::Failure && !ret_hdrs && qf.content_len() <= s.size_limit;
    let limit = if whole {
        s.size_limit
    } else {
        s.size_limit.min(256 * 1024)
    };
    let mut content = Vec::new();
    qf.content_reader(&file)
        .and_then(|r| r.take(limit).read_to_end(&mut content))
        .map_err(|e| e.to_string())?;
    let original: &[u8] = if whole { &content } else { header_of(&content) };
    let arrival = UNIX_EPOCH + Duration::from_secs(env.arrival.secs);
    let unique = format!(
        "{queue_id}.{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0)
    );
    let report = Report {
        hostname: &s.hostname,
        kind,
        queue_id,
        sender: &env.sender,
        to: &to,
        arrival: postern_lib::date::rfc5322(arrival),
        date: postern_lib::date::rfc5322(SystemTime::now()),
        envid: env.attributes.get(attr::DSN_ENVID).map(String::as_str),
        entries,
        original,
        headers_only: !whole,
        unique,
    }
    .render();
    let original = env
        .attributes
        .get(ORIGINAL_ID_ATTRIBUTE)
        .map_or(queue_id, String::as_str);
    let new_id = submit(s, &to, notice, original, &report)?;
    tracing::info!(queue_id = %queue_id, "sender {} notification: {new_id}", notice_label(notice));
    Ok(BounceReply::Sent { queue_id: new_id })
}

/// `host mx.example.test[192.0.2.1] said: 550 5.1.1 ...` (the smtp client's wording, as
/// Postfix's) → (`mx.example.test`, `550 5.1.1 ...`).
fn remote_said(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("host ")?;
    let (who, said) = rest.split_once(" said: ")?;
    let host = who.split('[').next().filter(|h| !h.is_empty())?;
    Some((host, said))
}

fn kind_name(k: NoticeKind) -> &'static str {
    match k {
        NoticeKind::Failure => "bounce",
        NoticeKind::Delay => "delay",
        NoticeKind::Success | NoticeKind::Relayed => "success",
    }
}

fn notice_label(n: &str) -> &str {
    match n {
        "bounce" => "non-delivery",
        "double" => "postmaster (double bounce)",
        "delay" => "delay",
        _ => "delivery status",
    }
}

fn qualify(addr: &str, origin: &str) -> String {
    if addr.contains('@') {
        addr.to_string()
    } else {
        format!("{addr}@{origin}")
    }
}

/// Queues the report through cleanup; returns its queue ID.
fn submit(s: &Settings, to: &str, notice: &str, original: &str, report: &[u8]) -> Result<String, String> {
    let sock = std::os::unix::net::UnixStream::connect(cleanup::SOCKET).map_err(|e| format!("cleanup: {e}"))?;
    let mut ipc =
        IpcStream::client(sock, cleanup::PROTOCOL, cleanup::VERSION, Some(s.timeout)).map_err(|e| e.to_string())?;
    let mut attributes = BTreeMap::new();
    attributes.insert(NOTICE_ATTRIBUTE.to_string(), notice.to_string());
    attributes.insert(ORIGINAL_ID_ATTRIBUTE.to_string(), original.to_string());
    let req = CleanupRequest::Submit(Submission {
        sender: String::new(),
        recipients: vec![Recipient {
            address: to.to_string(),
            orcpt: None,
            notify: vec!["NEVER".into()],
        }],
        origin: Origin::Internal,
        extract_recipients: false,
        hold: false,
        attributes,
    });
    ipc.send(&req).map_err(|e| e.to_string())?;
    ipc.send_data(report)
        .and_then(|_| ipc.send_end())
        .map_err(|e| e.to_string())?;
    match ipc.recv::<CleanupReply>().map_err(|e| e.to_string())? {
        CleanupReply::Queued { queue_id } | CleanupReply::Discarded { queue_id } => Ok(queue_id),
        CleanupReply::Rejected { code, dsn, text } | CleanupReply::TempFail { code, dsn, text } => {
            Err(format!("cleanup refused the notice: {code} {dsn} {text}"))
        }
    }
}
