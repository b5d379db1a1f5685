//! `dovecot-uidlist`: the per-folder map from Maildir base names to IMAP UIDs, in
//! Dovecot's version 3 format so a folder moves between Dovecot and Postern unchanged.
//!
//! ```text
//! 3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1
//! 25020 :1491941793.M41850P8566.host,S=10956,W=11210
//! 25021 W4210 :1491941794.M1P2.host,S=4100
//! ```
//!
//! The header holds the version, UIDVALIDITY (`V`), the next UID (`N`) and a mailbox GUID
//! (`G`), and Postern's `M`: the highest MODSEQ the folder had given when the list was last
//! written (a floor for MODSEQs after the index is lost; Dovecot keeps header fields it does
//! not know). Each line a UID, optional extension fields (kept as found: Dovecot's `W`
//! size, `G` message GUID, which Postern writes for messages it copied or moved so their
//! GUID survives the loss of the index), and `:` with the base name (the file name without
//! `:2,flags`). UIDs only grow. A writer creates `dovecot-uidlist.lock` with `O_EXCL`
//! (Dovecot's dot-lock), then either writes the new list into it, fsyncs it and renames it
//! over `dovecot-uidlist`, which releases the lock in the same step, or — as Dovecot does
//! for new messages — appends records to `dovecot-uidlist` as it is ([`Lock::append`]),
//! fsyncs and removes the lock; a record's UID may then be at or above the header's `N`,
//! and the next UID is one past the last record's. A lock older than [`STALE_LOCK`] is
//! left over from a crashed writer and is removed. Readers need no lock: a replaced list
//! is complete, an appended one is read up to its last whole line.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file name.
pub const FILE: &str = "dovecot-uidlist";
/// The lock file name.
pub const LOCK: &str = "dovecot-uidlist.lock";
/// A lock older than this is stale (Dovecot's default is two minutes).
pub const STALE_LOCK: Duration = Duration::from_secs(120);
/// An empty lock file this old that no process holds a `flock` on was left by a process
/// that died holding it (see `break_abandoned`).
pub const ABANDONED_AFTER: Duration = Duration::from_secs(5);
/// How long to wait for a lock held by another process.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Largest uidlist read (about 100 bytes a message: a million messages).
pub const MAX_SIZE: u64 = 128 * 1024 * 1024;

/// A parsed uidlist.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UidList {
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// The next UID to give.
    pub next_uid: u32,
    /// Mailbox GUID (hex), kept as found.
    pub guid: String,
    /// The highest MODSEQ given when the list was written (`M`, 0 when absent).
    pub modseq: u64,
    /// (uid, base name), in increasing UID order.
    pub entries: Vec<(u32, String)>,
    /// The extension fields of a record (`W4210 G...`), by UID, for those that have some.
    pub ext: HashMap<u32, String>,
}

impl UidList {
    /// A fresh list with a new UIDVALIDITY (the current time, as Dovecot does).
    pub fn new() -> UidList {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        UidList {
            uid_validity: (now as u32).max(1),
            next_uid: 1,
            guid: format!("{:016x}{:08x}{:08x}", now, nanos, std::process::id()),
            modseq: 0,
            entries: Vec::new(),
            ext: HashMap::new(),
        }
    }

    /// Parses the text; `None` when the header is unusable (the caller rebuilds). Lines
    /// that do not parse (a last one without its line end too), and lines whose UIDs do
    /// not grow, are dropped: those messages get new UIDs. Records appended after the
    /// header was written may pass its `N`: the next UID is past the last record's.
    pub fn parse(text: &str) -> Option<UidList> {
        let mut lines = text.lines();
        let header = lines.next()?;
        let mut fields = header.split(' ');
        if fields.next()? != "3" {
            return None;
        }
        let mut list = UidList::default();
        for f in fields {
            match f.as_bytes().first() {
                Some(b'V') => list.uid_validity = f[1..].parse().ok()?,
                Some(b'N') => list.next_uid = f[1..].parse().ok()?,
                Some(b'G') => list.guid = f[1..].to_string(),
                Some(b'M') => list.modseq = f[1..].parse().unwrap_or(0),
                _ => {}
            }
        }
        if list.uid_validity == 0 || list.next_uid == 0 {
            return None;
        }
        let mut last = 0u32;
        let whole = if text.ends_with('\n') {
            text
        } else {
            text.rsplit_once('\n').map_or("", |(w, _)| w)
        };
        for line in whole.lines().skip(1) {
            let Some((head, name)) = line.split_once(':') else {
                continue;
            };
            let Some(uid) = head.split(' ').next().and_then(|u| u.parse::<u32>().ok()) else {
                continue;
            };
            if uid <= last || uid == u32::MAX || name.is_empty() || name.contains('/') {
                continue;
            }
            last = uid;
            let ext = head.split_once(' ').map_or("", |(_, e)| e.trim());
            if !ext.is_empty() && ext.len() <= 256 {
                list.ext.insert(uid, ext.to_string());
            }
            list.entries.push((uid, name.to_string()));
        }
        list.next_uid = list.next_uid.max(last.saturating_add(1));
        Some(list)
    }

    /// One record's line, as [`UidList::format`] writes it.
    pub fn record_line(&self, uid: u32, name: &str) -> String {
        match self.ext.get(&uid) {
            Some(ext) => format!("{uid} {ext} :{name}\n"),
            None => format!("{uid} :{name}\n"),
        }
    }

    /// The file text.
    pub fn format(&self) -> String {
        let mut s = format!("3 V{} N{} G{}", self.uid_validity, self.next_uid, self.guid);
        if self.modseq > 0 {
            s.push_str(&format!(" M{}", self.modseq));
        }
        s.push('\n');
        for (uid, name) in &self.entries {
            s.push_str(&self.record_line(*uid, name));
        }
        s
    }

    /// The message GUID a record's `G` field gives, if any.
    pub fn guid_of(&self, uid: u32) -> Option<u128> {
        let ext = self.ext.get(&uid)?;
        ext.split(' ')
            .find_map(|f| f.strip_prefix('G'))
            .filter(|g| !g.is_empty())
            .map(super::index::parse_guid)
    }

    /// Sets a record's `G` field (other fields kept).
    pub fn set_guid(&mut self, uid: u32, guid: u128) {
        let mut fields: Vec<String> = self
            .ext
            .get(&uid)
            .map(|e| {
                e.split(' ')
                    .filter(|f| !f.starts_with('G') && !f.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        fields.push(format!("G{}", super::index::guid_hex(guid)));
        self.ext.insert(uid, fields.join(" "));
    }

    /// Base name → UID.
    pub fn map(&self) -> HashMap<&str, u32> {
        self.entries.iter().map(|(u, n)| (n.as_str(), *u)).collect()
    }
}

/// Which version of the uidlist file was read or written: (inode, size). The file is only
/// ever replaced or appended to, so the same identity means the same contents.
pub type FileId = (u64, u64);

/// Reads the uidlist of `dir`: `Ok(None)` when missing or unusable.
pub fn read(dir: &Path) -> io::Result<Option<UidList>> {
    Ok(read_with_id(dir)?.map(|(l, _)| l))
}

/// [`read`], with the identity of what was read.
pub fn read_with_id(dir: &Path) -> io::Result<Option<(UidList, FileId)>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(FILE);
    let mut f = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if meta.len() > MAX_SIZE {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    Read::by_ref(&mut f).take(MAX_SIZE).read_to_end(&mut bytes)?;
    // what was appended after the stat is read again next time (the size differs)
    bytes.truncate(meta.len() as usize);
    Ok(std::str::from_utf8(&bytes)
        .ok()
        .and_then(UidList::parse)
        .map(|l| (l, (meta.ino(), meta.len()))))
}

/// The uidlist lock of one folder; dropping it without [`Lock::commit`] removes it.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    dir: PathBuf,
    file: Option<fs::File>,
}

impl Lock {
    /// Takes the lock, waiting up to [`LOCK_WAIT`] and breaking a stale one.
    pub fn acquire(dir: &Path) -> io::Result<Lock> {
        let path = dir.join(LOCK);
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    // held while this process lives: a waiter breaks the lock of one that
                    // died holding it (SIGKILL) at once instead of after STALE_LOCK
                    let _ = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
                    return Ok(Lock {
                        path,
                        dir: dir.to_path_buf(),
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        tracing::warn!("removing stale lock {}", path.display());
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if break_abandoned(&path) {
                        tracing::warn!("removed lock {} of a process that died holding it", path.display());
                        continue;
                    }
                    if start.elapsed() > LOCK_WAIT {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("{} is held by another process", path.display()),
                        ));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `list` into the lock file and renames it over the uidlist (releasing the lock).
    pub fn commit(self, list: &UidList) -> io::Result<()> {
        self.commit_with_id(list).map(|_| ())
    }

    /// [`Lock::commit`], with the identity of the file written.
    pub fn commit_with_id(mut self, list: &UidList) -> io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("lock already released"));
        };
        file.write_all(list.format().as_bytes())?;
        file.sync_data()?;
        let meta = file.metadata()?;
        fs::rename(&self.path, self.dir.join(FILE))?;
        Ok((meta.ino(), meta.len()))
    }

    /// Appends `lines` (whole records) to the uidlist if it is still the version `at`
    /// (fsynced; the lock is released when dropped): the identity after, or `None` when
    /// the file is another version now (nothing written).
    pub fn append(&self, at: FileId, lines: &str) -> io::Result<Option<FileId>> {
        let Some(f) = self.write_records(at, lines)? else {
            return Ok(None);
        };
        f.sync_data()?;
        Ok(Some((at.0, at.1 + lines.len() as u64)))
    }

    /// [`Lock::append`] with `alongside` run while the records are made durable, on a
    /// thread of its own (not run when nothing was written). A caller that must make
    /// another change durable too (the rename of the message a record names, by an fsync
    /// of its directory) does it there: the two fsyncs wait for the disk together, not
    /// one after the other (each is still made, and both are done when this returns).
    pub fn append_then(&self, at: FileId, lines: &str, alongside: impl FnOnce() + Send) -> io::Result<Option<FileId>> {
        let Some(f) = self.write_records(at, lines)? else {
            return Ok(None);
        };
        beside(alongside, || f.sync_data())?;
        Ok(Some((at.0, at.1 + lines.len() as u64)))
    }

    /// Writes `lines` at the end of the uidlist if it is still the version `at`: the file,
    /// or `None` when it is another version now (nothing written).
    fn write_records(&self, at: FileId, lines: &str) -> io::Result<Option<fs::File>> {
        use std::os::unix::fs::MetadataExt;
        let mut f = OpenOptions::new().append(true).open(self.dir.join(FILE))?;
        let meta = f.metadata()?;
        if (meta.ino(), meta.len()) != at || !lines.ends_with('\n') {
            return Ok(None);
        }
        f.write_all(lines.as_bytes())?;
        Ok(Some(f))
    }
}

/// Runs `other` on a thread of its own while `this` runs here (each typically waits for
/// the disk in an fsync), and returns `this`'s result once both are done; `other` runs
/// here, after `this`, when no thread can be started.
fn beside<T>(other: impl FnOnce() + Send, this: impl FnOnce() -> T) -> T {
    let other = std::sync::Mutex::new(Some(other));
    let run = || {
        if let Some(f) = other.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            f();
        }
    };
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new().name("fsync".into()).spawn_scoped(s, run);
        let out = this();
        match helper {
            Ok(h) => {
                if let Err(p) = h.join() {
                    std::panic::resume_unwind(p);
                }
            }
            Err(_) => run(),
        }
        out
    })
}

/// Removes the lock file at `path` when the process that made it died holding it: no
/// process holds the `flock` its maker takes (the kernel drops it with the process), it was
/// last written more than [`ABANDONED_AFTER`] ago (a live maker has long taken its `flock`;
/// a process that takes none, like Dovecot, holds it for far less), and the same file is
/// still at that name (not committed as the uidlist meanwhile). Empty or written alike: a
/// maker killed between writing the new list into the lock and renaming it over the
/// uidlist leaves it written (that list was never the folder's; the next writer makes its
/// own). Only one waiter gets the exclusive `flock` it checks with, so two waiters never
/// both break it.
fn break_abandoned(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let Ok(m) = f.metadata() else { return false };
    let old = m
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > ABANDONED_AFTER);
    if !old {
        return false;
    }
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return false;
    }
    let same = fs::symlink_metadata(path).is_ok_and(|p| p.ino() == m.ino() && p.dev() == m.dev());
    same && fs::remove_file(path).is_ok()
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod append_tests {
    use super::*;

    #[test]
    fn records_appended_beside_the_callers_step_and_a_changed_file_gets_none() {
        let dir = tempfile::tempdir().unwrap();
        let list = UidList {
            uid_validity: 7,
            next_uid: 2,
            entries: vec![(1, "1.M1P1.h".into())],
            ..UidList::default()
        };
        let at = Lock::acquire(dir.path()).unwrap().commit_with_id(&list).unwrap();
        let lock = Lock::acquire(dir.path()).unwrap();
        let line = "2 :2.M2P2.h\n";
        let mut ran = false;
        let after = lock.append_then(at, line, || ran = true).unwrap();
        assert!(ran);
        assert_eq!(after, Some((at.0, at.1 + line.len() as u64)));
        // the version the caller knew is gone: nothing written, its step not run
        let mut ran = false;
        assert_eq!(lock.append_then(at, "3 :3.M3P3.h\n", || ran = true).unwrap(), None);
        assert!(!ran);
        drop(lock);
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.ends_with(line) && !text.contains("3.M3P3.h"), "{text:?}");
        assert_eq!(read(dir.path()).unwrap().unwrap().next_uid, 3);
    }
}
