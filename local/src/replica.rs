//! Replicated mailboxes (issue 15), local's part: a message that carries an
//! `X-Postern-GUID` header — cleanup keeps it only from a trusted hub
//! (`replica_hub_networks`) — is filed in a virtual Maildir under the base name the GUID
//! gives ([`postern_lib::replica_id::base_name`]: `<hub arrival secs>.G<guid>.replica`), the
//! same on every mailbox server; [`postern_lib::maildir_deliver`] then finds a second
//! delivery of it in `new/` or `cur/` and writes nothing (exactly once).

use std::io::{BufRead, BufReader, Read};

use postern_lib::agent::Job;
use postern_lib::replica_id::{GUID_HEADER, base_name};

/// Most header bytes scanned for the GUID.
const MAX_SCAN: u64 = 1 << 20;

/// The replica base name of the message of `job`, if its header holds one valid GUID.
pub fn base(job: &Job) -> Option<String> {
    let content = job.content().ok()?;
    let mut r = BufReader::new(content.take(MAX_SCAN));
    let mut line = Vec::new();
    let mut found = None;
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let l = String::from_utf8_lossy(&line);
        let l = l.trim_end_matches(['\r', '\n']);
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
