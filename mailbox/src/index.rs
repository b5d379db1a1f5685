//! `postern-index`: the folder's index — per message its GUID, MODSEQ, flags, size,
//! internal date and save date; the folder's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ; and an
//! expunge log by MODSEQ (what QRESYNC's VANISHED needs).
//!
//! # Format (version 1)
//!
//! A text file of lines. The first line is the magic and version with the folder's
//! UIDVALIDITY; every later line is one record ending in ` *` and the CRC-32 (IEEE) of
//! everything before that, as 8 lower-case hex digits:
//!
//! ```text
//! postern-index 1 V1733500000
//! H 25022 1733500000000123 0 *1c291ca3                     header: UIDNEXT HIGHESTMODSEQ FLOOR
//! M 25020 3085f01b7f11094c501100008c4a11c1 17 S 10956 1491941793 1491941793 *5e1f0a2b
//! X 25019 18 *0a9b8c7d                                     expunge: UID MODSEQ
//! ```
//!
//! - `H uidnext highestmodseq floor`: written at the head of a compacted file. `floor` is the
//!   MODSEQ at or below which expunges are no longer listed ("vanished before").
//! - `M uid guid modseq info size date saved`: a message as it is from this record on
//!   (inserted or replaced): the GUID as 32 hex digits, MODSEQ, the Maildir info letters of
//!   its flags (`-` for none), its size with CRLF line ends, internal date and save date in
//!   seconds since the epoch.
//! - `X uid modseq`: the message was expunged at that MODSEQ.
//! - `R uid`: every message below this UID has been seen by a session (IMAP `\Recent`
//!   went to it); those from it on are recent for the next session to look.
//!
//! Reading replays the records in order. A line that does not parse, whose CRC does not
//! match, or that has no line end (a write cut short), ends the reading there: what follows
//! is lost, and the reader says so ([`Loaded::damaged`]) so the folder gives new MODSEQs
//! from above anything it could have handed out.
//!
//! # Writing: an append-only log, compacted
//!
//! A change appends its records with one `write` to the end of the file, under an
//! exclusive `flock` of the file, which every writer takes (a process first reads what
//! others appended since its last look, so MODSEQs are handed out in one order by all
//! processes). Appending a few lines per STORE costs the same at 50 messages as at 50,000,
//! where rewriting the whole file on each change would cost megabytes a command. When the
//! log holds more records than twice the messages (and at least [`COMPACT_ABOVE`]), it is
//! compacted: a complete new file (header, one `M` per message, the last
//! [`EXPUNGE_LOG`] expunges; older ones folded into the floor) written to
//! `.postern-index.<pid>.tmp`, fsynced and renamed over the old one while the old one is
//! still locked. A writer that locked a file which is no longer the one at the path (it was
//! compacted meanwhile) reads the new file and locks again, so no append is lost.
//!
//! The index is a cache of what the Maildir says, as Postfix's caches are: when it is
//! missing, damaged, from another UIDVALIDITY or another version, the folder rebuilds it
//! from the messages (UIDs from `dovecot-uidlist`, GUIDs from its `G` record fields or
//! from the base names), with MODSEQs from above any it could have given before.

use super::flags::Flags;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The file name.
pub const FILE: &str = "postern-index";
/// The format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Expunges kept in the log at compaction.
pub const EXPUNGE_LOG: usize = 1024;
/// A log with fewer records than this is never compacted.
pub const COMPACT_ABOVE: usize = 1024;
/// Largest index read (about 90 bytes a message: more than two million messages).
pub const MAX_SIZE: u64 = 256 * 1024 * 1024;

/// One message's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The message GUID, the same in every folder and on every server it is copied to.
    pub guid: u128,
    /// Its MODSEQ.
    pub modseq: u64,
    /// Its flags (keywords by the folder's `dovecot-keywords` letters).
    pub flags: Flags,
    /// Size with CRLF line ends.
    pub size: u64,
    /// Internal date.
    pub date: i64,
    /// Save date (when it came into this folder).
    pub saved: i64,
}

/// A change to append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Inserted or replaced.
    Message(u32, Record),
    /// Expunged at this MODSEQ.
    Expunge(u32, u64),
    /// Messages below this UID are no longer recent.
    Recent(u32),
}

/// What a reading found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// UIDNEXT as last written in a header.
    pub next_uid: u32,
    /// The highest MODSEQ in the file.
    pub highest_modseq: u64,
    /// Expunges at or below this MODSEQ are not in `expunged`.
    pub floor: u64,
    /// The messages.
    pub messages: HashMap<u32, Record>,
    /// (modseq, uid) of expunges, in file order.
    pub expunged: Vec<(u64, u32)>,
    /// The first UID still recent (0 when no `R` record was read).
    pub recent_from: u32,
    /// Records since the last header (how much a compaction would save).
    pub records: usize,
    /// A record did not parse or its CRC was wrong: the rest was dropped.
    pub damaged: bool,
    /// Bytes read (where to go on reading appended records).
    pub offset: u64,
}

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, as zlib's `crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// A GUID made from a Maildir base name (FNV-1a, 128 bits): the same on every rebuild.
/// A replica base name (`<secs>.G<32 hex>.replica`, [`postern_lib::replica_id`]) carries its
/// GUID, the hub's, which is returned as it is.
pub fn guid_of(base: &str) -> u128 {
    if let Some(g) = postern_lib::replica_id::guid_of_base(base) {
        return g;
    }
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for &b in base.as_bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    h
}

/// A GUID as 32 hex digits.
pub fn guid_hex(guid: u128) -> String {
    format!("{guid:032x}")
}

/// A GUID from hex (exactly 32 digits), else the hash of the text as [`guid_of`] makes it.
pub fn parse_guid(text: &str) -> u128 {
    if text.len() == 32
        && let Ok(g) = u128::from_str_radix(text, 16)
    {
        return g;
    }
    guid_of(text)
}

fn push_line(out: &mut Vec<u8>, body: &str) {
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(format!(" *{:08x}\n", crc32(body.as_bytes())).as_bytes());
}

/// The magic line of a file for `uid_validity`.
pub fn magic(uid_validity: u32) -> String {
    format!("postern-index {VERSION} V{uid_validity}\n")
}

/// Formats changes as record lines.
pub fn format_changes(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::with_capacity(changes.len() * 90);
    for c in changes {
        let body = match c {
            Change::Message(uid, r) => {
                let info = r.flags.to_info();
                format!(
                    "M {uid} {} {} {} {} {} {}",
                    guid_hex(r.guid),
                    r.modseq,
                    if info.is_empty() { "-" } else { &info },
                    r.size,
                    r.date,
                    r.saved
                )
            }
            Change::Expunge(uid, m) => format!("X {uid} {m}"),
            Change::Recent(uid) => format!("R {uid}"),
        };
        push_line(&mut out, &body);
    }
    out
}

/// Parses one record line (without its line end); `None` if damaged.
fn parse_line(line: &[u8]) -> Option<Line> {
    let text = std::str::from_utf8(line).ok()?;
    let (body, crc) = text.rsplit_once(" *")?;
    if crc.len() != 8 || u32::from_str_radix(crc, 16).ok()? != crc32(body.as_bytes()) {
        return None;
    }
    let f: Vec<&str> = body.split(' ').collect();
    match f.as_slice() {
        ["H", next, high, floor] => Some(Line::Header(
            next.parse().ok()?,
            high.parse().ok()?,
            floor.parse().ok()?,
        )),
        ["M", uid, guid, modseq, info, size, date, saved] => {
            if guid.len() != 32 {
                return None;
            }
            let info = if *info == "-" { "" } else { info };
            Some(Line::Change(Change::Message(
                uid.parse().ok()?,
                Record {
                    guid: u128::from_str_radix(guid, 16).ok()?,
                    modseq: modseq.parse().ok()?,
                    flags: Flags::from_info(info),
                    size: size.parse().ok()?,
                    date: date.parse().ok()?,
                    saved: saved.parse().ok()?,
                },
            )))
        }
        ["X", uid, modseq] => Some(Line::Change(Change::Expunge(uid.parse().ok()?, modseq.parse().ok()?))),
        ["R", uid] => Some(Line::Change(Change::Recent(uid.parse().ok()?))),
        _ => None,
    }
}

enum Line {
    Header(u32, u64, u64),
    Change(Change),
}

impl Loaded {
    /// Applies the record lines in `bytes` (read from `self.offset` on); stops at the first
    /// damaged or unfinished line. Returns the changes applied.
    pub fn apply(&mut self, bytes: &[u8]) -> Vec<Change> {
        let mut applied = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(end) = memchr::memchr(b'\n', &bytes[pos..]) else {
                // a write cut short
                self.damaged = true;
                break;
            };
            let line = &bytes[pos..pos + end];
            match parse_line(line) {
                None => {
                    self.damaged = true;
                    break;
                }
                Some(Line::Header(next, high, floor)) => {
                    self.next_uid = self.next_uid.max(next);
                    self.highest_modseq = self.highest_modseq.max(high);
                    self.floor = self.floor.max(floor);
                    self.records = 0;
                }
                Some(Line::Change(c)) => {
                    match c {
                        Change::Message(uid, r) => {
                            self.highest_modseq = self.highest_modseq.max(r.modseq);
                            self.next_uid = self.next_uid.max(uid.saturating_add(1));
                            self.messages.insert(uid, r);
                        }
                        Change::Expunge(uid, m) => {
                            self.highest_modseq = self.highest_modseq.max(m);
                            self.messages.remove(&uid);
                            self.expunged.push((m, uid));
                        }
                        Change::Recent(uid) => self.recent_from = self.recent_from.max(uid),
                    }
                    self.records += 1;
                    applied.push(c);
                }
            }
            pos += end + 1;
        }
        self.offset += pos as u64;
        applied
    }
}

/// Why a whole index could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    /// No file.
    Missing,
    /// Another format version, or not an index at all.
    Version,
    /// Written for another UIDVALIDITY.
    Validity,
    /// Larger than [`MAX_SIZE`] or unreadable.
    Unreadable,
}

/// Reads a whole index for `uid_validity`. A damaged tail is dropped (and
/// [`Loaded::damaged`] set); an index of another version or UIDVALIDITY is unusable.
pub fn read(dir: &Path, uid_validity: u32) -> Result<Loaded, Unusable> {
    let path = dir.join(FILE);
    let mut f = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(_) => return Err(Unusable::Unreadable),
    };
    read_open(&mut f, uid_validity)
}

/// [`read`] of an open file, from its start.
pub fn read_open(f: &mut fs::File, uid_validity: u32) -> Result<Loaded, Unusable> {
    let len = f.metadata().map_err(|_| Unusable::Unreadable)?.len();
    if len > MAX_SIZE {
        return Err(Unusable::Unreadable);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.seek(SeekFrom::Start(0)).map_err(|_| Unusable::Unreadable)?;
    f.read_to_end(&mut bytes).map_err(|_| Unusable::Unreadable)?;
    let Some(nl) = memchr::memchr(b'\n', &bytes) else {
        return Err(Unusable::Version);
    };
    let first = &bytes[..=nl];
    if !first.starts_with(b"postern-index ") {
        return Err(Unusable::Version);
    }
    if first != magic(uid_validity).as_bytes() {
        let version_ok = first.starts_with(format!("postern-index {VERSION} ").as_bytes());
        return Err(if version_ok {
            Unusable::Validity
        } else {
            Unusable::Version
        });
    }
    let mut l = Loaded {
        offset: first.len() as u64,
        ..Loaded::default()
    };
    l.apply(&bytes[first.len()..]);
    Ok(l)
}

/// Reads what was appended after `l.offset` to the open file, applying it to `l`.
pub fn read_tail(f: &mut fs::File, l: &mut Loaded) -> io::Result<Vec<Change>> {
    let len = f.metadata()?.len();
    if len <= l.offset {
        return Ok(Vec::new());
    }
    let mut bytes = Vec::with_capacity((len - l.offset) as usize);
    f.seek(SeekFrom::Start(l.offset))?;
    f.take(len - l.offset).read_to_end(&mut bytes)?;
    // a record being written by another process is completed under the lock: a reader
    // without it leaves an unfinished last line for next time
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let damaged = l.damaged;
    let applied = l.apply(&bytes[..whole]);
    l.damaged |= damaged;
    Ok(applied)
}

/// The open index of a folder with its exclusive lock; unlocked when dropped.
pub struct Locked {
    /// The file, open for reading and appending.
    pub file: fs::File,
}

impl Locked {
    /// Opens (creating it with `magic` when missing) and locks the index of `dir`. Loops
    /// when the locked file was replaced meanwhile (compacted by another process). `fresh`
    /// is true when the file was created here.
    pub fn open(dir: &Path, uid_validity: u32) -> io::Result<(Locked, bool)> {
        let path = dir.join(FILE);
        for _ in 0..16 {
            let mut fresh = false;
            let file = match fs::OpenOptions::new().read(true).append(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // created complete under a temporary name: never seen half-written
                    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
                    fs::write(&tmp, magic(uid_validity))?;
                    match fs::hard_link(&tmp, &path) {
                        Ok(()) => fresh = true,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            let _ = fs::remove_file(&tmp);
                            return Err(e);
                        }
                    }
                    let _ = fs::remove_file(&tmp);
                    continue_open(&path)?
                }
                Err(e) => return Err(e),
            };
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
            let same = match (file.metadata(), fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if same {
                return Ok((Locked { file }, fresh));
            }
        }
        Err(io::Error::other("index replaced too often while locking"))
    }

    /// Appends changes with one write.
    pub fn append(&mut self, changes: &[Change]) -> io::Result<u64> {
        let bytes = format_changes(changes);
        self.file.write_all(&bytes)?;
        Ok(bytes.len() as u64)
    }
}

fn continue_open(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new().read(true).append(true).open(path)
}

/// The contents of a compacted index.
pub struct Snapshot<'a> {
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// UIDNEXT.
    pub next_uid: u32,
    /// HIGHESTMODSEQ.
    pub highest_modseq: u64,
    /// Expunges at or below this are not listed.
    pub floor: u64,
    /// (uid, record) in UID order.
    pub messages: &'a [(u32, Record)],
    /// (modseq, uid) of the expunges kept.
    pub expunged: &'a [(u64, u32)],
    /// The first UID still recent.
    pub recent_from: u32,
}

/// The bytes of a compacted index (magic line included).
pub fn format_snapshot(s: &Snapshot<'_>) -> Vec<u8> {
    let mut out = magic(s.uid_validity).into_bytes();
    push_line(&mut out, &format!("H {} {} {}", s.next_uid, s.highest_modseq, s.floor));
    let mut changes = vec![Change::Recent(s.recent_from)];
    changes.extend(s.messages.iter().map(|&(u, r)| Change::Message(u, r)));
    changes.extend(s.expunged.iter().map(|&(m, u)| Change::Expunge(u, m)));
    out.extend_from_slice(&format_changes(&changes));
    out
}

/// Replaces the index of `dir` with `bytes` (temporary file, fsync, rename). Call while
/// holding the old file's [`Locked`], so no append lands in the replaced file.
pub fn replace(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        fs::rename(&tmp, dir.join(FILE))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(modseq: u64) -> Record {
        Record {
            guid: guid_of("1.M1P1.host"),
            modseq,
            flags: Flags::from_info("Sa"),
            size: 120,
            date: 1_700_000_000,
            saved: 1_700_000_100,
        }
    }

    #[test]
    fn crc_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn snapshot_and_appends_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let msgs = [(1, rec(5)), (3, rec(7))];
        let bytes = format_snapshot(&Snapshot {
            uid_validity: 42,
            next_uid: 4,
            highest_modseq: 8,
            floor: 2,
            messages: &msgs,
            expunged: &[(8, 2)],
            recent_from: 3,
        });
        replace(dir.path(), &bytes).unwrap();
        let (mut lk, fresh) = Locked::open(dir.path(), 42).unwrap();
        assert!(!fresh);
        lk.append(&[Change::Expunge(1, 9), Change::Message(4, rec(10))])
            .unwrap();
        drop(lk);
        let l = read(dir.path(), 42).unwrap();
        assert!(!l.damaged);
        assert_eq!((l.next_uid, l.highest_modseq, l.floor), (5, 10, 2));
        assert_eq!(l.messages.len(), 2);
        assert_eq!(l.messages[&3], rec(7));
        assert_eq!(l.messages[&4], rec(10));
        assert_eq!(l.expunged, vec![(8, 2), (9, 1)]);
        assert_eq!(l.recent_from, 3);
        assert_eq!(read(dir.path(), 43).unwrap_err(), Unusable::Validity);
    }

    #[test]
    fn tail_reading_sees_only_whole_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut lk, fresh) = Locked::open(dir.path(), 7).unwrap();
        assert!(fresh);
        let mut l = read(dir.path(), 7).unwrap();
        lk.append(&[Change::Message(1, rec(3))]).unwrap();
        let mut f = fs::File::open(dir.path().join(FILE)).unwrap();
        assert_eq!(read_tail(&mut f, &mut l).unwrap().len(), 1);
        // half a record (a writer mid-way): left for later, not damage
        let line = format_changes(&[Change::Expunge(1, 4)]);
        lk.file.write_all(&line[..5]).unwrap();
        assert!(read_tail(&mut f, &mut l).unwrap().is_empty());
        assert!(!l.damaged);
        lk.file.write_all(&line[5..]).unwrap();
        assert_eq!(read_tail(&mut f, &mut l).unwrap(), vec![Change::Expunge(1, 4)]);
        assert!(l.messages.is_empty());
    }

    #[test]
    fn truncated_and_corrupt_records_end_the_reading() {
        let dir = tempfile::tempdir().unwrap();
        let msgs = [(1, rec(5)), (2, rec(6)), (3, rec(7))];
        let bytes = format_snapshot(&Snapshot {
            uid_validity: 1,
            next_uid: 4,
            highest_modseq: 7,
            floor: 0,
            messages: &msgs,
            expunged: &[],
            recent_from: 1,
        });
        // cut in the middle of the last record
        replace(dir.path(), &bytes[..bytes.len() - 10]).unwrap();
        let l = read(dir.path(), 1).unwrap();
        assert!(l.damaged);
        assert_eq!(l.messages.len(), 2);
        // one byte changed in the second message record (after the magic, H and R
        // lines): its CRC fails, the rest is dropped
        let mut bad = bytes.clone();
        let second = bad.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(3).unwrap().0 + 3;
        bad[second] ^= 1;
        replace(dir.path(), &bad).unwrap();
        let l = read(dir.path(), 1).unwrap();
        assert!(l.damaged);
        assert_eq!(l.messages.len(), 1);
    }

    #[test]
    fn other_versions_and_garbage_are_unusable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), 1).unwrap_err(), Unusable::Missing);
        fs::write(dir.path().join(FILE), "postern-index 0 V1\nM 1 2 3\n").unwrap();
        assert_eq!(read(dir.path(), 1).unwrap_err(), Unusable::Version);
        fs::write(dir.path().join(FILE), b"\x00\xff garbage").unwrap();
        assert_eq!(read(dir.path(), 1).unwrap_err(), Unusable::Version);
    }

    #[test]
    fn guids_parse_and_hash() {
        let g = guid_of("a");
        assert_eq!(parse_guid(&guid_hex(g)), g);
        assert_eq!(parse_guid("dovecot-style-guid"), guid_of("dovecot-style-guid"));
        assert_ne!(guid_of("a"), guid_of("b"));
    }

    /// A replica base name's GUID is the one the hub stamped (moved here from
    /// postern_lib::replica_id's tests with the crate split).
    #[test]
    fn replica_base_names_keep_the_hubs_guid() {
        use postern_lib::replica_id::{base_name, new_guid};
        let g = new_guid(1_790_000_000, 5, "mh1.example.test", "0Rk3Xq1Z9a01b2c3");
        let base = base_name(&g).unwrap();
        assert_eq!(guid_of(&base), u128::from_str_radix(&g, 16).unwrap());
        assert_eq!(
            guid_of(&format!("{base},S=1234")),
            u128::from_str_radix(&g, 16).unwrap()
        );
    }
}
