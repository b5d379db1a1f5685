//! The deliver protocol: qmgr hands one delivery job to a delivery agent (local, smtp, …).
//!
//! Protocol name `deliver`, version 1, on `private/<transport>`. One job per connection:
//!
//! 1. qmgr → agent: `M` [`DeliverRequest`]: which queue file, the sender, and the
//!    recipients of this job (all for one transport and nexthop), each with its
//!    recipient index in the queue file;
//! 2. agent → qmgr: `M` [`DeliverReply`] with one [`RecipientResult`] per recipient; for
//!    a success it also says where the message went ([`Handoff`]: delivered here, relayed
//!    to a next hop without DSN, or passed on with the DSN request), from which qmgr
//!    decides the success notice of a NOTIFY=SUCCESS recipient.
//!
//! Or a batch: qmgr sends `M` [`DeliverBatch`] (up to [`MAX_BATCH`] requests, in practice
//! several messages for the one recipient a `local`-style transport has as destination)
//! and the agent answers `M` [`DeliverBatchReply`], one reply per request in order. The
//! agent may then share the costly syncs among the batch's deliveries (local: one `fsync`
//! of a Maildir's `new/` for all the files it linked there), but it marks a recipient done
//! only once its delivery is durable, as for a single request, and a recipient left
//! undecided is deferred. [`AgentRequest`] reads either form.
//!
//! The agent reads the envelope and content from the queue file itself
//! (`queue_file` is relative to the queue directory, e.g. `active/<ID>`), and for each
//! recipient with `mark` set it records the final outcome — delivered (2xx) or bounced
//! (5xx) — in the queue file with [`crate::queue_file::mark_done`] *immediately* after the
//! delivery, before going on to the next recipient. So if the agent or qmgr dies in the
//! middle, at most the recipient in flight is delivered twice, and qmgr, reading the file
//! again, never repeats one that was finished. A recipient that is already final in the
//! file when the agent reads it is not delivered again; its result repeats the status.
//!
//! The agent also logs each attempt (`to=<…>, relay=…, delay=…, delays=a/b/c/d, dsn=…,
//! status=…`), using the times in the request for the `delays` breakdown.

use crate::dsn::Dsn;
use crate::queue_id::QueueId;
use serde::{Deserialize, Serialize};

/// Protocol name.
pub const PROTOCOL: &str = "deliver";
/// Version.
pub const VERSION: u32 = 1;
/// Most recipients in one request.
pub const MAX_RECIPIENTS: usize = 10_000;
/// Most requests in one [`DeliverBatch`].
pub const MAX_BATCH: usize = 256;

/// The socket of a transport, relative to the queue directory.
pub fn socket(transport: &str) -> String {
    format!("private/{transport}")
}

/// Whether `name` can be a transport name (and so a socket name): `[a-z0-9_-]{1,32}`.
pub fn valid_transport(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// One recipient of a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliverRecipient {
    /// The recipient's index in the queue file (recipient records in file order).
    pub index: usize,
    /// The address to deliver to (after rewriting and virtual aliasing).
    pub address: String,
    /// The address as the queue file holds it (for logs: `orig_to=`).
    pub original: String,
    /// Whether the agent marks the queue file itself. False when one queue recipient
    /// expanded to several routes: qmgr marks it once all of them are finished.
    pub mark: bool,
}

/// A delivery job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliverRequest {
    /// The message's queue ID (checked when the request is read).
    pub queue_id: QueueId,
    /// The queue file, relative to the queue directory (`active/<ID>`).
    pub queue_file: String,
    /// The envelope sender (empty: the null sender).
    pub sender: String,
    /// The nexthop from the resolver.
    pub nexthop: String,
    /// The recipients, all for this transport and nexthop.
    pub recipients: Vec<DeliverRecipient>,
    /// Arrival time, microseconds since the epoch.
    pub arrival_micros: u64,
    /// When qmgr moved the message into the active queue, microseconds since the epoch.
    pub active_micros: u64,
    /// When qmgr handed the job to the agent, microseconds since the epoch.
    pub dispatch_micros: u64,
}

/// The outcome for one recipient.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecipientResult {
    /// The recipient's index in the queue file.
    pub index: usize,
    /// The address delivered to.
    pub address: String,
    /// SMTP-style code: 2xx delivered, 4xx try again later, 5xx failed for good.
    pub code: u16,
    /// Enhanced status code (RFC 3463), e.g. `2.0.0`; checked when the reply is read.
    pub dsn: Dsn,
    /// What happened, for logs and the defer log or bounce.
    pub text: String,
    /// For a 2xx: where the message went, which decides the DSN success notice a
    /// NOTIFY=SUCCESS recipient gets. Agents that do not say mean final delivery here.
    #[serde(default, skip_serializing_if = "Handoff::is_delivered")]
    pub handoff: Handoff,
}

/// Where a delivered recipient's message went (RFC 3461 section 6.2), as the agent saw it:
/// qmgr turns it into the success notice for a recipient that asked with NOTIFY=SUCCESS.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Handoff {
    /// Final delivery (a mailbox, a file): the notice says "delivered".
    #[default]
    Delivered,
    /// Handed to a next hop that does not offer DSN, so the request ends here: the notice
    /// says "relayed", naming that host.
    Relayed {
        /// The next hop's host name (Remote-MTA).
        remote_mta: String,
    },
    /// Handed to a next hop that took NOTIFY and ORCPT onward: it reports, we send nothing.
    DsnPassed,
}

impl Handoff {
    /// The default: final delivery here.
    pub fn is_delivered(&self) -> bool {
        *self == Handoff::Delivered
    }
}

impl RecipientResult {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliverReply {
    /// One result per recipient of the request.
    pub results: Vec<RecipientResult>,
}

/// Several jobs for one agent in one exchange; answered by a [`DeliverBatchReply`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliverBatch {
    /// The jobs, at most [`MAX_BATCH`].
    pub batch: Vec<DeliverRequest>,
}

/// The agent's answer to a [`DeliverBatch`]: one reply per job, in the batch's order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliverBatchReply {
    /// The replies.
    pub replies: Vec<DeliverReply>,
}

/// What an agent reads from qmgr: a batch or a single job. Told apart by the `batch`
/// field, so that a request refused says why (a bad queue ID), not only that it matched
/// neither form.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum AgentRequest {
    /// Several jobs (has a `batch` field).
    Batch(DeliverBatch),
    /// One job.
    One(DeliverRequest),
}

impl<'de> Deserialize<'de> for AgentRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AgentRequest, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        if v.get("batch").is_some() {
            DeliverBatch::deserialize(v).map(AgentRequest::Batch)
        } else {
            DeliverRequest::deserialize(v).map(AgentRequest::One)
        }
        .map_err(D::Error::custom)
    }
}

/// A queue file path in a request is `active/` followed by one or more safe components
/// (hash directories and a queue ID): no `..`, no absolute path, nothing odd.
pub fn valid_queue_file(path: &str) -> bool {
    let mut parts = path.split('/');
    if parts.next() != Some("active") {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    !rest.is_empty()
        && rest.len() <= 4
        && rest
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Seconds in Postfix's log style: `0`, `0.04`, `0.12`, `1.2`, `12`.
pub fn fmt_secs(micros: u64) -> String {
    let s = micros as f64 / 1_000_000.0;
    if s < 0.01 {
        "0".into()
    } else if s < 1.0 {
        let t = format!("{s:.2}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else if s < 10.0 {
        let t = format!("{s:.1}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{s:.0}")
    }
}

/// The delivery status log line of Postfix (after the `QUEUEID: ` prefix):
/// `to=<…>, [orig_to=<…>, ]relay=…, delay=…, delays=a/b/c/d, dsn=…, status=… (text)`.
/// Times are microseconds since the epoch: arrival, entry into the active queue, hand-off
/// to the agent, start of the delivery proper, end.
#[allow(clippy::too_many_arguments)]
pub fn status_line(
    to: &str,
    orig_to: &str,
    relay: &str,
    times: [u64; 5],
    dsn: Dsn,
    status: &str,
    text: &str,
) -> String {
    let [arrival, active, dispatch, start, end] = times;
    let d = |a: u64, b: u64| fmt_secs(b.saturating_sub(a));
    let orig = if orig_to.is_empty() || orig_to.eq_ignore_ascii_case(to) {
        String::new()
    } else {
        format!("orig_to=<{orig_to}>, ")
    };
    format!(
        "to=<{to}>, {orig}relay={relay}, delay={}, delays={}/{}/{}/{}, dsn={dsn}, status={status} ({})",
        d(arrival, end),
        d(arrival, active.max(arrival)),
        d(active, dispatch.max(active)),
        d(dispatch, start.max(dispatch)),
        d(start, end.max(start)),
        crate::strbuf::printable_bounded(text.as_bytes(), 1000),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_file_paths() {
        assert!(valid_queue_file("active/0123456789ABCDEF"));
        assert!(valid_queue_file("active/a/b/0123456789ABCDEF"));
        assert!(!valid_queue_file("active/../etc/passwd"));
        assert!(!valid_queue_file("/active/x"));
        assert!(!valid_queue_file("deferred/x"));
        assert!(!valid_queue_file("active/"));
        assert!(!valid_queue_file("active/.x"));
    }

    #[test]
    fn log_line_format() {
        let l = status_line(
            "bob@example.test",
            "bob@example.test",
            "local",
            [0, 10_000, 10_000, 20_000, 120_000],
            Dsn::OK,
            "sent",
            "delivered to maildir",
        );
        assert_eq!(
            l,
            "to=<bob@example.test>, relay=local, delay=0.12, delays=0.01/0/0.01/0.1, dsn=2.0.0, status=sent (delivered to maildir)"
        );
        assert_eq!(fmt_secs(12_345_678), "12");
        assert_eq!(fmt_secs(1_250_000), "1.2");
    }

    #[test]
    fn batch_and_single_requests_read_apart() {
        let one = DeliverRequest {
            queue_id: QueueId::parse("0123456789ABCDEF").unwrap(),
            queue_file: "active/0123456789ABCDEF".into(),
            sender: String::new(),
            nexthop: "x".into(),
            recipients: Vec::new(),
            arrival_micros: 1,
            active_micros: 2,
            dispatch_micros: 3,
        };
        let json = serde_json::to_vec(&one).unwrap();
        let read: AgentRequest = serde_json::from_slice(&json).unwrap();
        assert_eq!(read, AgentRequest::One(one.clone()));
        let batch = DeliverBatch {
            batch: vec![one.clone(), one],
        };
        let json = serde_json::to_vec(&batch).unwrap();
        let read: AgentRequest = serde_json::from_slice(&json).unwrap();
        assert_eq!(read, AgentRequest::Batch(batch));
    }

    #[test]
    fn transport_names() {
        assert!(valid_transport("local"));
        assert!(valid_transport("tcp_siroe-daemon"));
        assert!(!valid_transport("../x"));
        assert!(!valid_transport(""));
        assert!(!valid_transport("Local"));
    }
}
