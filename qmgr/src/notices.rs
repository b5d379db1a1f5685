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
//! The same log format (blocks of `key=value` lines: `index`, `recipient`, `status`,
//! `action`, `remote_mta`, `reason`; a block `sent=<action>` says the notice about the
//! blocks before it went out) serves the trace log of success notices ([`crate::success`]).
//!
//! Delay warnings (`delay_warning_time`, 0 = off): when a message is deferred and has
//! been queued longer than that, qmgr asks for one `Delay` notice about the recipients
//! still pending. A queue file cannot take a new record in place, so the fact that the
//! warning went out is a marker file `defer/<ID>.warned` beside the defer log (which is
//! cleared at every new attempt; the marker is not). It is written and fdatasynced only
//! after the bounce daemon answers `Sent` or `NotNeeded`, and removed with the message. A
//! crash between the answer and the marker can repeat the warning once; a lost marker
//! never loses a notice.

use postern_lib::dsn::Dsn;
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

/// What happened to a logged recipient: the RFC 3464 Action of its notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Failed for good (bounce log).
    Failed,
    /// Delivered here (trace log, NOTIFY=SUCCESS).
    Delivered,
    /// Handed to a next hop without DSN (trace log, NOTIFY=SUCCESS).
    Relayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        [Action::Failed, Action::Delivered, Action::Relayed]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// One recipient's outcome that a notice is owed for.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its index in the queue file.
    pub index: usize,
    /// The address the outcome is about.
    pub address: String,
    /// Enhanced status code.
    pub dsn: Dsn,
    /// Why, or what the server said.
    pub text: String,
    /// The next hop that took it (relayed).
    pub remote_mta: Option<String>,
    /// What happened.
    pub action: Action,
}

/// One block of a log read back: an outcome, or the marker that the notice about every
/// earlier outcome with this action was sent.
pub enum Logged {
    /// An outcome.
    Entry(Action, NoticeRecipient),
    /// `sent=<action>`.
    Sent(Action),
}

fn path(id: &QueueId) -> PathBuf {
    Path::new(BOUNCE_LOG).join(id.as_str())
}

fn clean(s: &str) -> String {
    postern_lib::strbuf::printable_bounded(s.as_bytes(), 1000)
}

/// Appends outcomes to the log `dir/<ID>`, durably.
pub fn append_to(dir: &str, id: &QueueId, entries: &[Outcome]) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for e in entries {
        text.push_str(&format!(
            "index={}\nrecipient={}\nstatus={}\naction={}\n",
            e.index,
            clean(&e.address),
            e.dsn,
            e.action.as_str()
        ));
        if let Some(mta) = &e.remote_mta {
            text.push_str(&format!("remote_mta={}\n", clean(mta)));
        }
        text.push_str(&format!("reason={}\n\n", clean(&e.text)));
    }
    write_durably(dir, id, &text)
}

/// Appends the marker that the notice about the `action` outcomes logged so far is sent.
pub fn append_sent(dir: &str, id: &QueueId, action: Action) -> std::io::Result<()> {
    write_durably(dir, id, &format!("sent={}\n\n", action.as_str()))
}

fn write_durably(dir: &str, id: &QueueId, text: &str) -> std::io::Result<()> {
    let p = Path::new(dir).join(id.as_str());
    let mut f = open_append(&p, &Expect::current_user(), Some(0o600)).map_err(std::io::Error::other)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

/// Reads the log `dir/<ID>` back, in order. Blocks that make no sense are skipped.
pub fn read_from(dir: &str, id: &QueueId) -> std::io::Result<Vec<Logged>> {
    let p = Path::new(dir).join(id.as_str());
    let f = open_read(&p, &Expect::current_user()).map_err(std::io::Error::other)?;
    let mut text = String::new();
    f.take(MAX_LOG).read_to_string(&mut text)?;
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut r = NoticeRecipient {
            index: usize::MAX,
            address: String::new(),
            dsn: Dsn::UNDEFINED,
            text: String::new(),
            remote_mta: None,
        };
        // Logs written before actions were recorded hold failures only.
        let mut action = Some(Action::Failed);
        for line in block.lines() {
            match line.split_once('=') {
                Some(("index", v)) => r.index = v.parse().unwrap_or(usize::MAX),
                Some(("recipient", v)) => r.address = v.to_string(),
                // The log is ours, but a file: a code that does not parse stays undefined.
                Some(("status", v)) => r.dsn = v.parse().unwrap_or(Dsn::UNDEFINED),
                Some(("reason", v)) => r.text = v.to_string(),
                Some(("remote_mta", v)) => r.remote_mta = Some(v.to_string()),
                Some(("action", v)) => action = Action::parse(v),
                Some(("sent", v)) => {
                    if let Some(a) = Action::parse(v) {
                        out.push(Logged::Sent(a));
                    }
                }
                _ => {}
            }
        }
        if let Some(a) = action
            && r.index != usize::MAX
            && !r.address.is_empty()
        {
            out.push(Logged::Entry(a, r));
        }
    }
    Ok(out)
}

/// The outcomes of one action that no `sent` marker covers yet.
pub fn unsent(log: &[Logged], action: Action) -> Vec<NoticeRecipient> {
    let mut out = Vec::new();
    for l in log {
        match l {
            Logged::Entry(a, r) if *a == action => out.push(r.clone()),
            Logged::Sent(a) if *a == action => out.clear(),
            _ => {}
        }
    }
    out
}

/// Appends failures to the bounce log, durably.
pub fn append(id: &QueueId, failed: &[Outcome]) -> std::io::Result<()> {
    append_to(BOUNCE_LOG, id, failed)
}

/// Whether a notice is owed for this message.
pub fn owed(id: &QueueId) -> bool {
    path(id).exists()
}

/// Removes the bounce log.
pub fn remove(id: &QueueId) {
    let _ = std::fs::remove_file(path(id));
}

/// Sends the owed failure notice for the message at `queue_file` (relative to the queue
/// directory). `Ok` when nothing is owed any more.
pub fn send(queue_file: &Path, id: &QueueId) -> Result<(), String> {
    if !owed(id) {
        return Ok(());
    }
    let log = read_from(BOUNCE_LOG, id).map_err(|e| format!("bounce log: {e}"))?;
    let recipients = unsent(&log, Action::Failed);
    if recipients.is_empty() {
        remove(id);
        return Ok(());
    }
    request(queue_file, id, NoticeKind::Failure, recipients)?;
    remove(id);
    Ok(())
}

/// Asks the bounce daemon for one notice; `Ok` once it is queued or not needed.
pub fn request(
    queue_file: &Path,
    id: &QueueId,
    kind: NoticeKind,
    recipients: Vec<NoticeRecipient>,
) -> Result<(), String> {
    let sock = std::os::unix::net::UnixStream::connect(bounce::SOCKET).map_err(|e| format!("bounce service: {e}"))?;
    let mut ipc = IpcStream::client(sock, bounce::PROTOCOL, bounce::VERSION, Some(Duration::from_secs(120)))
        .map_err(|e| format!("bounce service: {e}"))?;
    let req = BounceRequest::Notify {
        queue_id: *id,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(index: usize, action: Action, mta: Option<&str>) -> Outcome {
        Outcome {
            index,
            address: format!("r{index}@x.test"),
            dsn: Dsn::OK,
            text: "250 2.0.0 Ok\r\nforged=1".into(),
            remote_mta: mta.map(str::to_string),
            action,
        }
    }

    #[test]
    fn log_round_trip_and_sent_markers() {
        let dir = std::env::temp_dir().join(format!("qmgr-notices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap();
        let id = QueueId::new();
        append_to(
            d,
            &id,
            &[
                outcome(0, Action::Delivered, None),
                outcome(1, Action::Relayed, Some("mx.x.test")),
            ],
        )
        .unwrap();
        append_sent(d, &id, Action::Delivered).unwrap();
        append_to(d, &id, &[outcome(2, Action::Delivered, None)]).unwrap();
        let log = read_from(d, &id).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let delivered = unsent(&log, Action::Delivered);
        assert_eq!(delivered.len(), 1, "the marker covers what came before it");
        assert_eq!((delivered[0].index, delivered[0].address.as_str()), (2, "r2@x.test"));
        assert!(
            !delivered[0].text.contains('\n'),
            "one line per field: {:?}",
            delivered[0].text
        );
        let relayed = unsent(&log, Action::Relayed);
        assert_eq!(relayed.len(), 1);
        assert_eq!(relayed[0].remote_mta.as_deref(), Some("mx.x.test"));
        assert!(unsent(&log, Action::Failed).is_empty());
    }
}
