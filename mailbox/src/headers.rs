//! `postern-headers`: each message's header block (CRLF line ends, up to and with the
//! blank line), kept per UID so SEARCH on header fields (FROM, TO, CC, BCC, SUBJECT,
//! HEADER, SENT*) over a large folder reads one file instead of opening every message.
//!
//! ```text
//! postern-headers 1 V<uidvalidity>
//! <uid> <length>
//! <length bytes of header>
//! ...
//! ```
//!
//! A message's bytes never change under a UID while the UIDVALIDITY stays, so an entry is
//! right for as long as its UID exists: flag changes (renames) leave it alone, expunged
//! UIDs are dropped when the file is next written, and messages not in it yet (new
//! deliveries, headers over [`MAX_HEADER`]) are read from their files by the caller and
//! added. A file whose first line does not match the folder's UIDVALIDITY, or that does
//! not parse, is ignored from the first bad record on. Written atomically, best effort.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

/// The file name.
pub const FILE: &str = "postern-headers";
/// Largest file read.
pub const MAX_SIZE: u64 = 256 * 1024 * 1024;
/// Largest header kept.
pub const MAX_HEADER: usize = 16 * 1024;

/// The header cache of one folder, in memory while a command needs it.
#[derive(Debug, Default)]
pub struct HeaderCache {
    data: Vec<u8>,
    index: HashMap<u32, (usize, usize)>,
    dirty: bool,
}

impl HeaderCache {
    /// Reads `dir`'s cache for `uid_validity` (empty when absent or unusable).
    pub fn read(dir: &Path, uid_validity: u32) -> HeaderCache {
        let mut hc = HeaderCache::default();
        let path = dir.join(FILE);
        if !fs::metadata(&path).is_ok_and(|m| m.len() <= MAX_SIZE) {
            return hc;
        }
        let Ok(data) = fs::read(&path) else { return hc };
        let head = format!("postern-headers 1 V{uid_validity}\n");
        if !data.starts_with(head.as_bytes()) {
            return hc;
        }
        let mut i = head.len();
        while i < data.len() {
            let Some(nl) = memchr::memchr(b'\n', &data[i..]).map(|n| i + n) else {
                break;
            };
            let line = std::str::from_utf8(&data[i..nl]).unwrap_or("");
            let Some((u, l)) = line.split_once(' ') else { break };
            let (Ok(uid), Ok(len)) = (u.parse::<u32>(), l.parse::<usize>()) else {
                break;
            };
            let start = nl + 1;
            let Some(end) = start.checked_add(len).filter(|&e| e < data.len() && data[e] == b'\n') else {
                break;
            };
            hc.index.insert(uid, (start, len));
            i = end + 1;
        }
        hc.data = data;
        hc
    }

    /// The header of `uid`, if cached.
    pub fn get(&self, uid: u32) -> Option<&[u8]> {
        self.index.get(&uid).and_then(|&(s, l)| self.data.get(s..s + l))
    }

    /// Whether `uid` is cached.
    pub fn contains(&self, uid: u32) -> bool {
        self.index.contains_key(&uid)
    }

    /// Adds a header (ignored when over [`MAX_HEADER`]).
    pub fn insert(&mut self, uid: u32, header: &[u8]) {
        if header.len() > MAX_HEADER || self.index.contains_key(&uid) {
            return;
        }
        let start = self.data.len();
        self.data.extend_from_slice(header);
        self.index.insert(uid, (start, header.len()));
        self.dirty = true;
    }

    /// Whether entries were added since it was read.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the entries of the UIDs in `uids` (the folder's messages) to `dir`.
    pub fn write(&self, dir: &Path, uid_validity: u32, uids: impl Iterator<Item = u32>) {
        let mut out = format!("postern-headers 1 V{uid_validity}\n").into_bytes();
        for uid in uids {
            if let Some(h) = self.get(uid) {
                out.extend_from_slice(format!("{uid} {}\n", h.len()).as_bytes());
                out.extend_from_slice(h);
                out.push(b'\n');
            }
        }
        let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
        let res = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&out))
            .and_then(|()| fs::rename(&tmp, dir.join(FILE)));
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            tracing::debug!("header cache {}: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut hc = HeaderCache::read(dir.path(), 7);
        assert!(!hc.contains(1));
        hc.insert(1, b"Subject: a\r\n\r\n");
        hc.insert(2, b"Subject: b\nx\r\n\r\n");
        hc.insert(3, &vec![b'x'; MAX_HEADER + 1]);
        assert!(hc.dirty() && !hc.contains(3));
        hc.write(dir.path(), 7, [1, 2, 3].into_iter());
        let back = HeaderCache::read(dir.path(), 7);
        assert_eq!(back.get(1), Some(&b"Subject: a\r\n\r\n"[..]));
        assert_eq!(back.get(2), Some(&b"Subject: b\nx\r\n\r\n"[..]));
        assert!(!back.dirty());
        assert!(HeaderCache::read(dir.path(), 8).get(1).is_none());
        // a torn file keeps the records before the tear
        let mut bytes = fs::read(dir.path().join(FILE)).unwrap();
        bytes.truncate(bytes.len() - 5);
        fs::write(dir.path().join(FILE), bytes).unwrap();
        let torn = HeaderCache::read(dir.path(), 7);
        assert!(torn.get(1).is_some() && torn.get(2).is_none());
    }
}
