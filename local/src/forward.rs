//! Forwarding: the targets of an alias or `.forward` that are addresses in other domains
//! go back into the queue as a new message, as Postfix's local does — over
//! `private/cleanup` ([`postern_lib::proto::cleanup`]), with the same envelope sender (or
//! the `owner-` alias), the new recipients (each with ORCPT naming the recipient it was
//! forwarded from, as Postfix records it), the envelope attributes of the original, and
//! the content with `Delivered-To: <recipient>` in front, so a message that comes back
//! here is recognised as a loop (`5.4.6`). The original recipient counts as delivered only
//! once cleanup has answered `Queued`; anything else defers it.
//!
//! The copy is an internal message: header and body checks and milters ran when the
//! message first arrived and do not run again.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use postern_lib::ipc::IpcStream;
use postern_lib::proto::cleanup::{
    CleanupReply, CleanupRequest, Origin, PROTOCOL, Recipient, SOCKET, Submission, VERSION,
};

use crate::delivery::Outcome;
use postern_lib::dsn::Dsn;

/// How long cleanup may take over one forwarded message.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(300);

/// The message being forwarded and why.
pub struct Forward<'a> {
    /// Envelope sender of the copy.
    pub sender: &'a str,
    /// The recipient it is forwarded from (becomes `Delivered-To:`).
    pub recipient: &'a str,
    /// That recipient's ORCPT, if it had one.
    pub orcpt: Option<&'a str>,
    /// The original's queue file attributes (client, protocol, DSN RET/ENVID...).
    pub attributes: &'a std::collections::BTreeMap<String, String>,
    /// The content length in bytes.
    pub size: u64,
}

/// Queues a copy of `content` for `to` (addresses) through cleanup.
pub fn forward(f: &Forward<'_>, to: &[String], content: &mut dyn Read) -> Outcome {
    match submit(f, to, content) {
        Ok(id) => Outcome::sent(&format!("forwarded as {id}")),
        Err(o) => o,
    }
}

fn submit(f: &Forward<'_>, to: &[String], content: &mut dyn Read) -> Result<String, Outcome> {
    let fail = |what: String| Outcome::temp(Dsn::MAIL_SYSTEM, format!("cannot forward: {what}"));
    let sock = UnixStream::connect(Path::new(SOCKET)).map_err(|e| fail(format!("connect to {SOCKET}: {e}")))?;
    let mut ipc = IpcStream::client(sock, PROTOCOL, VERSION, Some(CLEANUP_TIMEOUT))
        .map_err(|e| fail(format!("{SOCKET}: {e}")))?;
    let orcpt = f
        .orcpt
        .map(str::to_string)
        .unwrap_or_else(|| format!("rfc822;{}", f.recipient));
    let submission = Submission {
        sender: f.sender.to_string(),
        recipients: to
            .iter()
            .map(|a| Recipient {
                address: a.clone(),
                orcpt: Some(orcpt.clone()),
                notify: Vec::new(),
            })
            .collect(),
        origin: Origin::Internal,
        extract_recipients: false,
        hold: false,
        attributes: f.attributes.clone(),
    };
    ipc.send(&CleanupRequest::Submit(submission))
        .map_err(|e| fail(format!("{SOCKET}: {e}")))?;
    let head = format!("Delivered-To: {}\n", f.recipient);
    let mut w = ipc.data_writer();
    let sent = std::io::copy(&mut head.as_bytes().chain(content), &mut w);
    match sent {
        Ok(n) if n == f.size + head.len() as u64 => {}
        // Dropping the connection before the end frame makes cleanup throw the copy away.
        Ok(n) => return Err(fail(format!("content cut short at {n} bytes"))),
        Err(e) => return Err(fail(format!("send content: {e}"))),
    }
    w.finish().map_err(|e| fail(format!("{SOCKET}: {e}")))?;
    match ipc.recv::<CleanupReply>() {
        Ok(CleanupReply::Queued { queue_id }) | Ok(CleanupReply::Discarded { queue_id }) => Ok(queue_id),
        Ok(CleanupReply::Rejected { code, dsn, text }) => Err(Outcome {
            code: if (500..600).contains(&code) { code } else { 550 },
            dsn,
            text: format!("forwarded copy refused: {text}"),
        }),
        Ok(CleanupReply::TempFail { dsn, text, .. }) => Err(Outcome::temp(dsn, format!("cannot forward: {text}"))),
        Err(e) => Err(fail(format!("{SOCKET}: no reply: {e}"))),
    }
}
