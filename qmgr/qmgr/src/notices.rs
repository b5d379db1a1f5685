//! Non-delivery notices: the bounce log and the request to the bounce daemon.
//!
//! When a recipient fails for good (an agent's 5xx, an `error` route, queue lifetime
//! expiry), qmgr appends `(index, recipient, status, reason)` to `bounce/<ID>` and
//! fdatasyncs it before anything else, as Postfix does: the done mark in the queue file
//! says the recipient is finished, the bounce log says a notice is still owed. When the
//! message is otherwise finished, qmgr asks the bounce daemon
//! ([`postern_lib::proto::bounce`]) for a failure notice about the logged recipients;
//! only when it answers `Sent` (or `NotNeeded`) is the log removed and the message
//! retired. If the bounce daemon cannot be reached, the message waits in `deferred/` and
//! the notice is tried again at its next retry — a notice is never silently lost.
//!
//! Delay warnings (`delay_warning_time`, 0 = off): when a message is deferred and has
//! been queued longer than that, qmgr asks for one `Delay` notice about the recipients
//! still pending. A queue file cannot take a new record in place, so the fact that the
//! warning went out is a marker file `defer/<ID>.warned` beside the defer log (which is
//! cleared at every new attempt; the marker is not). It is written and fdatasynced only
//! after the bounce daemon answers `Sent` or `NotNeeded`, and removed with the message. A
//! crash between the answer and the marker can repeat the warning once; a lost marker
//! never loses a notice.

use postern_lib::ipc::IpcStream;
use postern_lib::proto::bounce::{self, BounceReply, BounceRequest, NoticeKind, NoticeRecipient};
use postern_lib::queue_id::QueueId;
use postern_lib::safe_open::{Expect, open_append, open_read};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory of bounce logs.
pub const BOUNCE_LOG: &str = "bounce";
/// The delay-warning marker: `defer/<ID>.warned`, beside the defer log.
pub const WARNED_SUFFIX: &str = ".warned";
/// Largest bounce log read back.
const MAX_LOG: u64 = 4 << 20;

/// One recipient that failed for good.
#[derive(Debug, Clone)]
pub struct Failed {
    /// Its index in the queue file.
    pub index: usize,
    /// The address that failed.
    pub address: String,
    /// Enhanced status code.
    pub dsn: String,
    /// Why.
    pub text: String,
}

fn path(id: &QueueId) -> PathBuf {
    Path::new(BOUNCE_LOG).join(id.as_str())
}

fn clean(s: &str) -> String {
    postern_lib::strbuf::printable_bounded(s.as_bytes(), 1000)
}

/// Appends failures to the bounce log, durably.
pub fn append(id: &QueueId, failed: &[Failed]) -> std::io::Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    let mut f = open_append(&path(id), &Expect::current_user(), Some(0o600)).map_err(std::io::Error::other)?;
    let mut text = String::new();
    for e in failed {
        text.push_str(&format!(
            "index={}\nrecipient={}\nstatus={}\nreason={}\n\n",
            e.index,
            clean(&e.address),
            clean(&e.dsn),
            clean(&e.text)
        ));
    }
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

/// Whether a notice is owed for this message.
pub fn owed(id: &QueueId) -> bool {
    path(id).exists()
}

/// Removes the bounce log.
pub fn remove(id: &QueueId) {
    let _ = std::fs::remove_file(path(id));
}

fn read(id: &QueueId) -> std::io::Result<Vec<NoticeRecipient>> {
    let f = open_read(&path(id), &Expect::current_user()).map_err(std::io::Error::other)?;
    let mut text = String::new();
    f.take(MAX_LOG).read_to_string(&mut text)?;
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut r = NoticeRecipient {
            index: usize::MAX,
            address: String::new(),
            dsn: "5.0.0".into(),
            text: String::new(),
            remote_mta: None,
        };
        for line in block.lines() {
            match line.split_once('=') {
                Some(("index", v)) => r.index = v.parse().unwrap_or(usize::MAX),
                Some(("recipient", v)) => r.address = v.to_string(),
                Some(("status", v)) => r.dsn = v.to_string(),
                Some(("reason", v)) => r.text = v.to_string(),
                _ => {}
            }
        }
        if r.index != usize::MAX && !r.address.is_empty() {
            out.push(r);
        }
    }
    Ok(out)
}

/// Sends the owed failure notice for the message at `queue_file` (relative to the queue
/// directory). `Ok` when nothing is owed any more.
pub fn send(queue_file: &Path, id: &QueueId) -> Result<(), String> {
    if !owed(id) {
        return Ok(());
    }
    let recipients = read(id).map_err(|e| format!("bounce log: {e}"))?;
    if recipients.is_empty() {
        remove(id);
        return Ok(());
    }
    request(queue_file, id, NoticeKind::Failure, recipients)?;
    remove(id);
    Ok(())
}

/// Asks the bounce daemon for one notice; `Ok` once it is queued or not needed.
fn request(queue_file: &Path, id: &QueueId, kind: NoticeKind, recipients: Vec<NoticeRecipient>) -> Result<(), String> {
    let sock = std::os::unix::net::UnixStream::connect(bounce::SOCKET).map_err(|e| format!("bounce service: {e}"))?;
    let mut ipc = IpcStream::client(sock, bounce::PROTOCOL, bounce::VERSION, Some(Duration::from_secs(120)))
        .map_err(|e| format!("bounce service: {e}"))?;
    let req = BounceRequest::Notify {
        queue_id: id.to_string(),
        queue_file: queue_file.to_string_lossy().into_owned(),
        kind,
        recipients,
    };
    ipc.send(&req).map_err(|e| format!("bounce service: {e}"))?;
    match ipc.recv::<BounceReply>().map_err(|e| format!("bounce service: {e}"))? {
        BounceReply::Sent { .. } | BounceReply::NotNeeded { .. } => Ok(()),
        BounceReply::TempFail { reason } => Err(reason),
    }
}

fn warned_path(id: &QueueId) -> PathBuf {
    Path::new(crate::queue::DEFER_LOG).join(format!("{}{WARNED_SUFFIX}", id.as_str()))
}

/// Whether the delay warning for this message was already sent.
pub fn warned(id: &QueueId) -> bool {
    warned_path(id).exists()
}

/// Removes the delay-warning marker (with the message).
pub fn remove_warned(id: &QueueId) {
    let _ = std::fs::remove_file(warned_path(id));
}

/// Sends the one delay warning about `pending` (recipients still being retried) for the
/// message at `queue_file`, then records it with the marker file. Does nothing when the
/// marker is already there. When the bounce daemon cannot take it now, nothing is recorded
/// and the warning is tried again at the next deferral.
pub fn warn_delay(queue_file: &Path, id: &QueueId, pending: Vec<NoticeRecipient>) -> Result<(), String> {
    if pending.is_empty() || warned(id) {
        return Ok(());
    }
    request(queue_file, id, NoticeKind::Delay, pending)?;
    let mut f = open_append(&warned_path(id), &Expect::current_user(), Some(0o600))
        .map_err(|e| format!("delay warning sent, but cannot record it: {e}"))?;
    let stamp = format!("warned={}\n", crate::queue::now_secs());
    f.write_all(stamp.as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(|e| format!("delay warning sent, but cannot record it: {e}"))
}
