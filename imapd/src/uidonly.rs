//! UIDONLY (RFC 9586): after `ENABLE UIDONLY` a session names messages by UID only.
//! Commands that take sequence numbers — FETCH, STORE, SEARCH, COPY, MOVE, SORT, THREAD,
//! REPLACE without UID, and a sequence set used as a search key (`UID SEARCH 1:3`) — are
//! `BAD [UIDREQUIRED]`; a message's data comes as `* uid UIDFETCH (...)` instead of
//! `* n FETCH (...)` ([`fetch_head`]), solicited or not; expunges are told as
//! `* VANISHED uids` as after `ENABLE QRESYNC` ([`Session::report`]). `* n EXISTS`
//! stays (the RFC keeps it: it is a count).

use crate::session::{Reply, Session};

/// The message commands that name messages by sequence number unless UID comes first.
const SEQUENCE_COMMANDS: [&str; 8] = ["FETCH", "STORE", "SEARCH", "COPY", "MOVE", "SORT", "THREAD", "REPLACE"];

/// The refusal of a sequence number under UIDONLY.
pub(crate) fn uid_required() -> Reply {
    Reply::Bad("[UIDREQUIRED] Message sequence numbers are not allowed after ENABLE UIDONLY".into())
}

/// The start of a message's data response: `* seq FETCH (` or, under UIDONLY,
/// `* uid UIDFETCH (`. `index` is the message's place in the view (from 0).
pub(crate) fn fetch_head(uidonly: bool, index: usize, uid: u32) -> String {
    if uidonly {
        format!("* {uid} UIDFETCH (")
    } else {
        format!("* {} FETCH (", index + 1)
    }
}

impl Session {
    /// `Err(BAD [UIDREQUIRED])` for command `name` without UID once UIDONLY is on.
    pub(crate) fn check_uidonly(&self, name: &str) -> Result<(), Reply> {
        if self.uidonly && SEQUENCE_COMMANDS.contains(&name) {
            return Err(uid_required());
        }
        Ok(())
    }
}
