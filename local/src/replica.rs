//! Replicated mailboxes (issue 15), local's part: a message that carries an
//! `X-Postern-GUID` header — cleanup keeps it only from a trusted hub
//! (`replica_hub_networks`) — is filed in a virtual Maildir under the base name the GUID
//! gives ([`postern_lib::replica_id::base_name`]: `<hub arrival secs>.G<guid>.replica`), the
//! same on every mailbox server; [`postern_mailbox::maildir_deliver`] then finds a second
//! delivery of it in `new/` or `cur/` and writes nothing (exactly once).

use std::io::Read;

use postern_lib::agent::Job;
use postern_lib::replica_id::{GUID_HEADER, base_name};

/// Most header bytes scanned for the GUID (and for `Delivered-To:`).
const MAX_SCAN: u64 = 1 << 20;

/// The message header of `job` (at most [`MAX_SCAN`] bytes, through the blank line that
/// ends it), read once per job with `pread` ([`Job::content_at`]): the GUID and the
/// `Delivered-To:` lines are both looked for in it.
pub fn header(job: &Job) -> Vec<u8> {
    let mut content = job.content_at();
    let len = content.remaining().min(MAX_SCAN);
    let mut head = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while (head.len() as u64) < len {
        let want = usize::try_from(len - head.len() as u64)
            .unwrap_or(buf.len())
            .min(buf.len());
        let Some(chunk) = buf.get_mut(..want) else { break };
        let n = match content.read(chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Only the new bytes (and the one before them) can complete the blank line.
        let from = head.len().saturating_sub(1);
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if let Some(end) = head.get(from..).and_then(|t| memchr::memmem::find(t, b"\n\n")) {
            head.truncate(from + end + 1);
            break;
        }
    }
    head
}

/// The replica base name the header `head` ([`header`]) gives, if it holds one valid GUID.
pub fn base_in(head: &[u8]) -> Option<String> {
    let mut found = None;
    for line in head.split(|&b| b == b'\n') {
        let l = String::from_utf8_lossy(line);
        let l = l.trim_end_matches('\r');
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':')
            && name.eq_ignore_ascii_case(GUID_HEADER)
        {
            if found.is_some() {
                // Two GUIDs: not what a hub writes; file it as an ordinary message.
                return None;
            }
            found = Some(base_name(value)?);
        }
    }
    found
}
