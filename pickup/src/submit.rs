//! Handing one maildrop message to cleanup over `private/cleanup`
//! ([`postern_lib::proto::cleanup`]): the envelope, the content as data frames, then
//! cleanup's one reply.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use postern_lib::ipc::IpcStream;
use postern_lib::maildrop::{Reader, attr};
use postern_lib::proto::cleanup::{
    CleanupReply, CleanupRequest, Origin, PROTOCOL, Recipient, SOCKET, Submission, VERSION,
};

/// How long cleanup may take over one step (header checks and milters run before it
/// answers).
const TIMEOUT: Duration = Duration::from_secs(300);

/// What cleanup made of a message.
pub enum Outcome {
    /// Queued or discarded: the maildrop file can go.
    Done,
    /// Refused for good: the reply as `CODE DSN TEXT`.
    Rejected(String),
    /// Not this time (cleanup's reply, or the connection broke mid-way).
    TempFail(String),
    /// Cleanup cannot be reached at all.
    Unavailable(String),
}

/// Submits the message in `reader` (already verified) for the user `uid`.
pub fn hand_over(mut reader: Reader<&File>, uid: u32) -> Outcome {
    let sock = match UnixStream::connect(SOCKET) {
        Ok(s) => s,
        Err(e) => return Outcome::Unavailable(format!("connect to {SOCKET}: {e}")),
    };
    let mut ipc = match IpcStream::client(sock, PROTOCOL, VERSION, Some(TIMEOUT)) {
        Ok(s) => s,
        Err(e) => return Outcome::Unavailable(format!("{SOCKET}: {e}")),
    };
    let env = reader.envelope().clone();
    let mut attributes = BTreeMap::new();
    attributes.insert(attr::UID.to_string(), uid.to_string());
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        attributes.insert(attr::LOGIN.to_string(), user.name);
    }
    if let Some(name) = &env.full_name {
        attributes.insert(attr::FULL_NAME.to_string(), name.clone());
    }
    let submission = Submission {
        sender: env.sender.clone(),
        recipients: env
            .recipients
            .iter()
            .map(|a| Recipient {
                address: a.clone(),
                orcpt: None,
                notify: Vec::new(),
            })
            .collect(),
        origin: Origin::Local,
        extract_recipients: env.extract_recipients,
        hold: false,
        attributes,
    };
    let sent = (|| -> Result<(), String> {
        ipc.send(&CleanupRequest::Submit(submission))
            .map_err(|e| e.to_string())?;
        let mut w = ipc.data_writer();
        std::io::copy(&mut reader, &mut w).map_err(|e| format!("send content: {e}"))?;
        w.finish().map_err(|e| e.to_string())
    })();
    if let Err(e) = sent {
        // Dropping the connection before the end frame makes cleanup throw the message away.
        return Outcome::TempFail(e);
    }
    match ipc.recv::<CleanupReply>() {
        Ok(CleanupReply::Queued { queue_id }) => {
            tracing::info!(queue_id = %queue_id, "uid={uid} from=<{}>", env.sender);
            Outcome::Done
        }
        Ok(CleanupReply::Discarded { queue_id }) => {
            tracing::info!(queue_id = %queue_id, "uid={uid} from=<{}> discarded by cleanup", env.sender);
            Outcome::Done
        }
        Ok(CleanupReply::Rejected { code, dsn, text }) => Outcome::Rejected(format!("{code} {dsn} {text}")),
        Ok(CleanupReply::TempFail { code, dsn, text }) => Outcome::TempFail(format!("{code} {dsn} {text}")),
        Err(e) => Outcome::TempFail(format!("reply: {e}")),
    }
}
