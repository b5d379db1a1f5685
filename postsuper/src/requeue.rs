//! `postsuper -r`: handing a queued message to cleanup again, over `private/cleanup`
//! ([`postern_lib::proto::cleanup`]), as bounce does with its notices.
//!
//! Postfix requeues by moving the file into `maildrop/` for pickup; here the maildrop is
//! written only by postdrop (in its own format), so postsuper talks to cleanup directly:
//! the envelope sender, the recipients still pending (with their DSN ORCPT and NOTIFY), the
//! envelope attributes (client, protocol, DSN RET/ENVID...) and the content byte for byte,
//! as [`Origin::Internal`]: the message was checked when it first arrived, so header and
//! body checks and milters do not run again; addresses are canonicalised again (and
//! virtual aliases re-resolved by qmgr), which is what a requeue is for. cleanup gives the
//! copy a new queue ID and arrival time.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use postern_lib::ipc::IpcStream;
use postern_lib::proto::cleanup::{
    CleanupReply, CleanupRequest, Origin, PROTOCOL, Recipient, SOCKET, Submission, VERSION,
};
use postern_lib::queue_file::{Notify, QueueFile};

/// Why a message was not requeued.
pub enum Error {
    /// No pending recipient: nothing to send again.
    NothingPending,
    /// cleanup could not be reached or did not queue it (the reason, one line).
    Failed(String),
}

/// NOTIFY flags as the keywords of the cleanup protocol.
fn notify_words(n: Notify) -> Vec<String> {
    if n.never() {
        return vec!["NEVER".into()];
    }
    let mut v = Vec::new();
    if n.success() {
        v.push("SUCCESS".into());
    }
    if n.failure() {
        v.push("FAILURE".into());
    }
    if n.delay() {
        v.push("DELAY".into());
    }
    v
}

/// Submits the message in `file` to cleanup; returns the new queue ID.
pub fn submit(mut file: &File, queue_dir: &Path, timeout: Duration) -> Result<String, Error> {
    let failed = Error::Failed;
    {
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(0))
            .map_err(|e| failed(format!("cannot read the queue file: {e}")))?;
    }
    let qf = QueueFile::read(&mut file).map_err(|e| failed(format!("cannot read the queue file: {e}")))?;
    let recipients: Vec<Recipient> = qf
        .recipients
        .iter()
        .filter(|r| !r.status.is_final())
        .map(|r| Recipient {
            address: r.spec.address.clone(),
            orcpt: r.spec.orcpt.clone(),
            notify: notify_words(r.spec.notify),
        })
        .collect();
    if recipients.is_empty() {
        return Err(Error::NothingPending);
    }
    let sock = UnixStream::connect(queue_dir.join(SOCKET))
        .map_err(|e| failed(format!("cannot connect to {SOCKET}: {e} (is the mail system running?)")))?;
    let mut ipc =
        IpcStream::client(sock, PROTOCOL, VERSION, Some(timeout)).map_err(|e| failed(format!("{SOCKET}: {e}")))?;
    let submission = Submission {
        sender: qf.envelope.sender.clone(),
        recipients,
        origin: Origin::Internal,
        extract_recipients: false,
        hold: false,
        attributes: qf.envelope.attributes.clone(),
    };
    ipc.send(&CleanupRequest::Submit(submission))
        .map_err(|e| failed(format!("{SOCKET}: {e}")))?;
    let mut content = qf
        .content_reader(file)
        .map_err(|e| failed(format!("cannot read the content: {e}")))?;
    let mut w = ipc.data_writer();
    let sent = std::io::copy(&mut content, &mut w);
    match sent {
        Ok(n) if n == qf.content_len() => {}
        Ok(n) => {
            return Err(failed(format!(
                "content cut short at {n} of {} bytes",
                qf.content_len()
            )));
        }
        // Dropping the connection before the end frame makes cleanup throw the copy away.
        Err(e) => return Err(failed(format!("send content: {e}"))),
    }
    w.finish().map_err(|e| failed(format!("{SOCKET}: {e}")))?;
    match ipc.recv::<CleanupReply>() {
        Ok(CleanupReply::Queued { queue_id }) | Ok(CleanupReply::Discarded { queue_id }) => Ok(queue_id),
        Ok(CleanupReply::Rejected { code, dsn, text }) | Ok(CleanupReply::TempFail { code, dsn, text }) => {
            Err(failed(format!("cleanup did not queue it: {code} {dsn} {text}")))
        }
        Err(e) => Err(failed(format!("{SOCKET}: no reply: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::notify_words;
    use postern_lib::queue_file::Notify;

    #[test]
    fn notify_keywords() {
        assert!(notify_words(Notify::UNSPECIFIED).is_empty());
        assert_eq!(notify_words(Notify::NEVER), vec!["NEVER"]);
        assert_eq!(notify_words(Notify::new(true, false, true)), vec!["SUCCESS", "DELAY"]);
    }
}
