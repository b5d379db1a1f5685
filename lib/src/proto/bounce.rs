//! The bounce protocol: asking the bounce daemon to tell a sender what happened to a
//! message — a non-delivery report, a delay warning, or a success notice (RFC 3464).
//!
//! Protocol name `bounce`, version 1, on `private/bounce`. One [`BounceRequest`], one
//! [`BounceReply`]. The bounce daemon reads the envelope (sender, arrival, DSN ENVID/RET,
//! each recipient's NOTIFY and ORCPT) and the original content from the queue file
//! itself, builds the report, and submits it through cleanup as a new message from the
//! null sender; it answers `Sent` only once cleanup has queued it, so the caller (qmgr)
//! may then mark the recipients finished or remove the message.
//!
//! It never sends a report to the null sender: a failed bounce goes once to
//! `bounce_notice_recipient` (postmaster) as a "double bounce", and a failed double bounce
//! is dropped with a log line. Recipients whose NOTIFY excludes the kind of notice are
//! skipped; when none is left, the answer is `NotNeeded`.

use crate::dsn::Dsn;
use crate::queue_id::QueueId;
use serde::{Deserialize, Serialize};

/// Protocol name.
pub const PROTOCOL: &str = "bounce";
/// Version.
pub const VERSION: u32 = 1;
/// The socket, relative to the queue directory.
pub const SOCKET: &str = "private/bounce";
/// Queue file attribute that marks a message Postern generated as a notice
/// (`bounce`, `delay`, `success`, `double`), so that a notice about a notice is recognised.
pub const NOTICE_ATTRIBUTE: &str = "notice";

/// What kind of report.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Delivery failed for good (Action: failed).
    Failure,
    /// Still trying after `delay_warning_time` (Action: delayed).
    Delay,
    /// Delivered, and the sender asked to know (NOTIFY=SUCCESS; Action: delivered).
    Success,
    /// Handed to a next hop that does not offer DSN, and the sender asked to know
    /// (NOTIFY=SUCCESS; Action: relayed): no further notice may come from there.
    Relayed,
}

/// One recipient the notice is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NoticeRecipient {
    /// The recipient's index in the queue file.
    pub index: usize,
    /// The address the outcome is about (Final-Recipient).
    pub address: String,
    /// Enhanced status code (`5.1.1`).
    pub dsn: Dsn,
    /// The diagnostic: the remote server's reply or our own reason.
    pub text: String,
    /// The remote server, when one answered (`mx.example.test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
}

/// A request to the bounce daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BounceRequest {
    /// Send a notice about some recipients of a queued message.
    Notify {
        /// The message's queue ID.
        queue_id: QueueId,
        /// Its queue file, relative to the queue directory (`active/ID`, `deferred/ID`).
        queue_file: String,
        /// The kind of notice.
        kind: NoticeKind,
        /// The recipients it is about.
        recipients: Vec<NoticeRecipient>,
    },
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BounceReply {
    /// The notice is queued under this ID.
    Sent {
        /// The notice's queue ID (checked like a [`QueueId`] when the reply is read).
        #[serde(deserialize_with = "crate::queue_id::checked")]
        queue_id: String,
    },
    /// No notice is due (null sender of a double bounce, NOTIFY=NEVER, ...); why.
    NotNeeded {
        /// Why.
        reason: String,
    },
    /// Could not send it now; ask again later.
    TempFail {
        /// Why.
        reason: String,
    },
}
