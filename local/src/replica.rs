//! Replicated mailboxes (issue 15), local's part: a message that carries an
//! `X-Postern-GUID` header — cleanup keeps it only from a trusted hub
//! (`replica_hub_networks`) — is filed in a virtual Maildir under the base name the GUID
//! gives ([`postern_lib::replica_id::base_name`]: `<hub arrival secs>.G<guid>.replica`), the
//! same on every mailbox server; [`postern_lib::maildir_deliver`] then finds a second
//! delivery of it in `new/` or `cur/` and writes nothing (exactly once).

use std::os::unix::fs::FileExt;

use postern_lib::agent::Job;
use postern_lib::replica_id::{GUID_HEADER, base_name};

/// Most header bytes scanned for the GUID.
const MAX_SCAN: u64 = 1 << 20;

/// The message header of `job` (at most [`MAX_SCAN`] bytes), read with `pread`: a content
/// reader the delivery already holds shares the file offset, which must stay at the start
/// of the content where [`Job::content`] (called here too) puts it — reading through the
/// descriptor instead delivered the rest of the file after the header scan.
fn header(job: &Job) -> Option<Vec<u8>> {
    let content = job.content().ok()?;
    let file = content.get_ref();
    let start = job.qf.content_range().start;
    let len = job.qf.content_len().min(MAX_SCAN);
    let mut head = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while (head.len() as u64) < len {
        let want = usize::try_from(len - head.len() as u64)
            .unwrap_or(buf.len())
            .min(buf.len());
        let n = file.read_at(buf.get_mut(..want)?, start + head.len() as u64).ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n)?);
        if let Some(end) = memchr::memmem::find(&head, b"\n\n") {
            head.truncate(end + 1);
            break;
        }
    }
    Some(head)
}

/// The replica base name of the message of `job`, if its header holds one valid GUID.
pub fn base(job: &Job) -> Option<String> {
    let head = header(job)?;
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
