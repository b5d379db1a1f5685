//! Success notices (DSN NOTIFY=SUCCESS, RFC 3461 section 6.2): the trace log and its
//! request to the bounce daemon, as Postfix's `trace/` service.
//!
//! When a recipient whose NOTIFY includes SUCCESS is delivered, and the message has a
//! sender to tell, qmgr appends it to `trace/<ID>` (fdatasynced) with what the delivery
//! agent said about the hand-off ([`Handoff`]): final delivery here is "delivered", a next
//! hop without DSN is "relayed" (Remote-MTA: that host), and a next hop that took the DSN
//! request onward gets no entry — it reports itself. At the end of each delivery pass
//! (before the message moves to `deferred/` or is retired) qmgr asks the bounce daemon for
//! the notice: one for the delivered recipients ([`NoticeKind::Success`]) and one for the
//! relayed ones ([`NoticeKind::Relayed`]). After each answer `Sent` (or `NotNeeded`) a
//! `sent=<action>` block is appended, so a crash or a failure of the second request never
//! repeats the first; the log is removed once nothing is owed. A message is retired only
//! then: when the bounce daemon cannot be reached, it waits in `deferred/` and the notice
//! is asked for again at its next retry.
//!
//! A recipient that `virtual_alias_maps` turned into several routes gets one entry per
//! route delivered, each naming the address it went to. "expanded" (RFC 3461 section
//! 6.2.4) is not sent: an alias of `etc/aliases` is expanded inside local, which reports
//! one result for the recipient it was given, so it is reported as "delivered".

use crate::notices::{self, Action, Outcome};
use postern_lib::proto::bounce::NoticeKind;
use postern_lib::proto::deliver::{Handoff, RecipientResult};
use postern_lib::queue_id::QueueId;
use std::path::{Path, PathBuf};

/// The directory of trace logs.
pub const TRACE_LOG: &str = "trace";

fn path(id: &QueueId) -> PathBuf {
    Path::new(TRACE_LOG).join(id.as_str())
}

/// The trace-log entry for a delivered recipient that asked for a success notice (`None`
/// when the next hop reports instead). `address` is the address delivered to.
pub fn outcome(index: usize, address: &str, result: &RecipientResult) -> Option<Outcome> {
    let (action, remote_mta) = match &result.handoff {
        Handoff::Delivered => (Action::Delivered, None),
        Handoff::Relayed { remote_mta } => (Action::Relayed, Some(remote_mta.clone())),
        Handoff::DsnPassed => return None,
    };
    Some(Outcome {
        index,
        address: address.to_string(),
        dsn: result.dsn,
        text: result.text.clone(),
        remote_mta,
        action,
    })
}

/// Appends successes to the trace log, durably.
pub fn append(id: &QueueId, delivered: &[Outcome]) -> std::io::Result<()> {
    notices::append_to(TRACE_LOG, id, delivered)
}

/// Whether a success notice is still owed for this message.
pub fn owed(id: &QueueId) -> bool {
    path(id).exists()
}

/// Removes the trace log (with the message).
pub fn remove(id: &QueueId) {
    let _ = std::fs::remove_file(path(id));
}

/// Sends the owed success notices for the message at `queue_file` (relative to the queue
/// directory). `Ok` when nothing is owed any more.
pub fn send(queue_file: &Path, id: &QueueId) -> Result<(), String> {
    if !owed(id) {
        return Ok(());
    }
    let log = notices::read_from(TRACE_LOG, id).map_err(|e| format!("trace log: {e}"))?;
    let kinds = [
        (Action::Delivered, NoticeKind::Success),
        (Action::Relayed, NoticeKind::Relayed),
    ];
    let owed: Vec<_> = kinds
        .into_iter()
        .map(|(action, kind)| (action, kind, notices::unsent(&log, action)))
        .filter(|(_, _, r)| !r.is_empty())
        .collect();
    let last = owed.len().saturating_sub(1);
    for (n, (action, kind, recipients)) in owed.into_iter().enumerate() {
        notices::request(queue_file, id, kind, recipients)?;
        if n < last {
            notices::append_sent(TRACE_LOG, id, action)
                .map_err(|e| format!("success notice sent, but cannot record it: {e}"))?;
        }
    }
    remove(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::dsn::Dsn;

    fn result(handoff: Handoff) -> RecipientResult {
        RecipientResult {
            index: 3,
            address: "bob@x.test".into(),
            code: 250,
            dsn: Dsn::OK,
            text: "250 2.0.0 Ok".into(),
            handoff,
        }
    }

    #[test]
    fn the_handoff_decides_the_action() {
        let d = outcome(3, "bob@x.test", &result(Handoff::Delivered)).expect("delivered");
        assert_eq!((d.action, d.remote_mta), (Action::Delivered, None));
        let relayed = Handoff::Relayed {
            remote_mta: "mx.x.test".into(),
        };
        let r = outcome(3, "bob@x.test", &result(relayed)).expect("relayed");
        assert_eq!(
            (r.action, r.remote_mta.as_deref()),
            (Action::Relayed, Some("mx.x.test"))
        );
        assert!(outcome(3, "bob@x.test", &result(Handoff::DsnPassed)).is_none());
    }
}
