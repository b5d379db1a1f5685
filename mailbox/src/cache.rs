//! `postern-cache`: what a folder listing needs without opening each message — the
//! RFC 822 size (with CRLF line ends, as IMAP counts it) and the internal date — kept per
//! UID so `FETCH 1:* (FLAGS RFC822.SIZE INTERNALDATE)` over ten thousand messages reads one
//! file instead of ten thousand.
//!
//! ```text
//! postern-cache 1 V<uidvalidity>
//! <uid> <size> <internal date, unix seconds>[ E<envelope>]
//! ```
//!
//! The optional last field is the message's IMAP ENVELOPE as imapd formats it, with `%`,
//! space, control and non-ASCII bytes written `%XX`; at most [`MAX_ENVELOPE`] bytes.
//!
//! The cache is only ever a copy of what the messages say: a header that does not match
//! the folder's UIDVALIDITY, or a line that does not parse, is ignored and the entry
//! computed again from the message file. It is replaced atomically, and holds one line per
//! message of the folder at most.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

/// The file name.
pub const FILE: &str = "postern-cache";
/// Largest cache file read.
pub const MAX_SIZE: u64 = 64 * 1024 * 1024;

/// Largest envelope kept in the cache.
pub const MAX_ENVELOPE: usize = 8192;

/// One message's cached facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Size with CRLF line ends.
    pub size: u64,
    /// Internal date, seconds since the epoch.
    pub date: i64,
    /// The IMAP ENVELOPE, once computed.
    pub envelope: Option<Vec<u8>>,
}

fn escape(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b > b' ' && b < 0x7f && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Reads the cache of `dir` for `uid_validity`; an empty map when absent or unusable.
/// Envelopes are kept only when `with_envelopes` (a view keeps sizes and dates in memory,
/// envelopes only while a FETCH needs them).
pub fn read(dir: &Path, uid_validity: u32, with_envelopes: bool) -> HashMap<u32, Entry> {
    read_some(dir, uid_validity, with_envelopes, |_| true)
}

/// [`read`] of the entries whose UID `keep` accepts (the others' envelopes are not even
/// decoded).
pub fn read_some(
    dir: &Path,
    uid_validity: u32,
    with_envelopes: bool,
    keep: impl Fn(u32) -> bool,
) -> HashMap<u32, Entry> {
    let mut out = HashMap::new();
    let path = dir.join(FILE);
    let ok_size = fs::metadata(&path).map(|m| m.len() <= MAX_SIZE).unwrap_or(false);
    if !ok_size {
        return out;
    }
    let Ok(text) = fs::read_to_string(&path) else {
        return out;
    };
    let mut lines = text.lines();
    if lines.next() != Some(format!("postern-cache 1 V{uid_validity}").as_str()) {
        return out;
    }
    for line in lines {
        let mut f = line.split(' ');
        let (Some(u), Some(s), Some(d), e, None) = (f.next(), f.next(), f.next(), f.next(), f.next()) else {
            continue;
        };
        if !u.parse().is_ok_and(&keep) {
            continue;
        }
        let envelope = match e {
            None => None,
            Some(e) if !e.starts_with('E') => continue,
            Some(_) if !with_envelopes => None,
            Some(e) => match e.strip_prefix('E').and_then(postern_util::percent::decode) {
                Some(env) => Some(env),
                None => continue,
            },
        };
        if let (Ok(uid), Ok(size), Ok(date)) = (u.parse(), s.parse(), d.parse()) {
            out.insert(uid, Entry { size, date, envelope });
        }
    }
    out
}

/// Replaces the cache of `dir` with `entries` (best effort: a cache that cannot be written
/// only costs time).
pub fn write(dir: &Path, uid_validity: u32, entries: &[(u32, &Entry)]) {
    let mut text = format!("postern-cache 1 V{uid_validity}\n");
    for (uid, e) in entries {
        text.push_str(&format!("{uid} {} {}", e.size, e.date));
        if let Some(env) = &e.envelope {
            text.push_str(" E");
            escape(env, &mut text);
        }
        text.push('\n');
    }
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    let res = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| fs::rename(&tmp, dir.join(FILE)));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        tracing::debug!("cache {}: {e}", dir.display());
    }
}

/// The size of a message with every line end as CRLF.
pub fn crlf_size(bytes: &[u8]) -> u64 {
    let bare = memchr::memchr_iter(b'\n', bytes)
        .filter(|&i| i == 0 || bytes[i - 1] != b'\r')
        .count();
    bytes.len() as u64 + bare as u64
}
