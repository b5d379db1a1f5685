//! One Maildir folder: its messages with stable UIDs, their flags and sizes, and the
//! operations IMAP and POP3 need — append, flag changes, expunge, copy and move.
//!
//! A [`Folder`] is one process's view; several views (imapd sessions, pop3d, local
//! delivery) share a folder through the file system alone. [`Folder::sync`] brings a view
//! up to date: it moves files from `new/` to `cur/` on first sight, gives UIDs to names
//! the uidlist does not know yet (under the uidlist lock), and notices files that were
//! renamed (flag changes) or removed (expunges) by others. [`Folder::changed`] is the cheap
//! test for "someone did something" (directory and uidlist stamps), for IDLE and NOOP.

use super::cache::{self, Entry};
use super::flags::{self, Flags};
use super::headers::HeaderCache;
use super::uidlist::{self, Lock, UidList};
use super::{MailboxError, Result, io_err};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

/// New cache entries a sync measures before it writes the cache file.
const MEASURED_BEFORE_WRITE: usize = 64;

/// One message as this view knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The IMAP UID.
    pub uid: u32,
    /// The Maildir base name (file name without `:2,flags`): the POP3 UIDL source too.
    pub base: String,
    /// The file name in cur/.
    pub file: String,
    /// Flags.
    pub flags: Flags,
    /// Size with CRLF line ends (RFC822.SIZE).
    pub size: u64,
    /// Internal date, seconds since the epoch (the file's mtime, as Dovecot uses).
    pub date: i64,
}

/// Directory and uidlist stamps: when none changed, nothing in the folder did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stamp {
    new: (i64, i64, u64),
    cur: (i64, i64, u64),
    list: (i64, i64, u64),
    /// A stamp this close to now cannot be trusted (coarse file-system clocks).
    recent: bool,
}

/// A view of one folder.
#[derive(Debug)]
pub struct Folder {
    path: PathBuf,
    uid_validity: u32,
    next_uid: u32,
    messages: Vec<Message>,
    keywords: Vec<String>,
    cache: HashMap<u32, Entry>,
    cache_dirty: bool,
    stamp: Option<Stamp>,
}

impl Folder {
    /// Opens the Maildir at `path` (which must exist with cur/ new/ tmp/) and syncs it.
    pub fn open(path: &Path) -> Result<Folder> {
        for sub in ["cur", "new", "tmp"] {
            let p = path.join(sub);
            if !p.is_dir() {
                return Err(MailboxError::NoSuchFolder(path.display().to_string()));
            }
        }
        let mut f = Folder {
            path: path.to_path_buf(),
            uid_validity: 0,
            next_uid: 1,
            messages: Vec::new(),
            keywords: Vec::new(),
            cache: HashMap::new(),
            cache_dirty: false,
            stamp: None,
        };
        super::spool::clean_tmp(path);
        f.sync()?;
        Ok(f)
    }

    /// The folder's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// UIDVALIDITY.
    pub fn uid_validity(&self) -> u32 {
        self.uid_validity
    }

    /// The UID the next new message will get (UIDNEXT).
    pub fn next_uid(&self) -> u32 {
        self.next_uid
    }

    /// The messages, in UID order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The message with this UID.
    pub fn get(&self, uid: u32) -> Option<&Message> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .and_then(|i| self.messages.get(i))
    }

    /// The keyword table (index = bit in [`Flags::keywords`]).
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// The bit of keyword `name`, adding it to the folder's table when `create`.
    pub fn keyword_bit(&mut self, name: &str, create: bool) -> Result<Option<u32>> {
        if let Some(i) = self.keywords.iter().position(|k| k.eq_ignore_ascii_case(name)) {
            return Ok(Some(1 << i));
        }
        if !create {
            return Ok(None);
        }
        if !flags::valid_keyword(name) {
            return Err(MailboxError::BadName(name.to_string()));
        }
        let lock = Lock::acquire(&self.path).map_err(|e| io_err("lock", &self.path, e))?;
        self.read_keywords();
        if let Some(i) = self.keywords.iter().position(|k| k.eq_ignore_ascii_case(name)) {
            return Ok(Some(1 << i));
        }
        let slot = match self.keywords.iter().position(|k| k.is_empty()) {
            Some(i) => i,
            None if self.keywords.len() < flags::MAX_KEYWORDS => {
                self.keywords.push(String::new());
                self.keywords.len() - 1
            }
            None => return Err(MailboxError::TooManyKeywords),
        };
        self.keywords[slot] = name.to_string();
        let text = flags::format_keywords(&self.keywords);
        let tmp = self.path.join(format!(".{}.tmp", flags::KEYWORDS_FILE));
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, self.path.join(flags::KEYWORDS_FILE)))
            .map_err(|e| io_err("write keywords", &self.path, e))?;
        drop(lock);
        Ok(Some(1 << slot))
    }

    fn read_keywords(&mut self) {
        if let Ok(text) = fs::read_to_string(self.path.join(flags::KEYWORDS_FILE)) {
            self.keywords = flags::parse_keywords(&text);
        }
    }

    fn stamp(&self) -> Stamp {
        let st = |p: PathBuf| {
            fs::metadata(p)
                .map(|m| (m.mtime(), m.mtime_nsec(), m.ino()))
                .unwrap_or_default()
        };
        let s = Stamp {
            new: st(self.path.join("new")),
            cur: st(self.path.join("cur")),
            list: st(self.path.join(uidlist::FILE)),
            recent: false,
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let recent = [s.new.0, s.cur.0, s.list.0].iter().any(|&t| t >= now - 1);
        Stamp { recent, ..s }
    }

    /// Whether the folder may have changed since the last sync (cheap: three `stat`s).
    pub fn changed(&self) -> bool {
        match self.stamp {
            None => true,
            Some(old) => old.recent || self.stamp() != old,
        }
    }

    /// Brings this view up to date with the folder on disk.
    pub fn sync(&mut self) -> Result<()> {
        let stamp = self.stamp();
        self.read_keywords();
        let mut on_disk = self.scan()?;
        let mut list = uidlist::read(&self.path).map_err(|e| io_err("read uidlist", &self.path, e))?;
        let unknown = |list: &Option<UidList>, on_disk: &HashMap<String, (String, Flags)>| match list {
            None => true,
            Some(l) => {
                let known = l.map();
                on_disk.keys().any(|k| !known.contains_key(k.as_str()))
            }
        };
        if unknown(&list, &on_disk) {
            let lock = Lock::acquire(&self.path).map_err(|e| io_err("lock", &self.path, e))?;
            // Others may have added names meanwhile: read both again under the lock.
            on_disk = self.scan()?;
            list = uidlist::read(&self.path).map_err(|e| io_err("read uidlist", &self.path, e))?;
            let mut l = match list {
                Some(l) => l,
                None => {
                    let mut l = UidList::new();
                    // The old list's UIDVALIDITY was given no later than the file was last
                    // written: one past that differs from it even when it cannot be read.
                    let floor = fs::metadata(self.path.join(uidlist::FILE))
                        .map(|m| m.mtime().max(0) as u32 + 1)
                        .unwrap_or(0)
                        .max(self.uid_validity + 1);
                    l.uid_validity = l.uid_validity.max(floor);
                    let never = self.uid_validity == 0 && fs::symlink_metadata(self.path.join(uidlist::FILE)).is_err();
                    if never {
                        // No uidlist ever: a new mailbox's first session, nothing to report.
                        tracing::debug!("{}: new uidlist (uidvalidity {})", self.path.display(), l.uid_validity);
                    } else {
                        tracing::info!(
                            "{}: uidlist missing or unusable, UIDs assigned anew (uidvalidity {})",
                            self.path.display(),
                            l.uid_validity
                        );
                    }
                    l
                }
            };
            let known: std::collections::HashSet<String> = l.entries.iter().map(|(_, n)| n.clone()).collect();
            l.entries.retain(|(_, n)| on_disk.contains_key(n));
            let mut fresh: Vec<&String> = on_disk.keys().filter(|k| !known.contains(*k)).collect();
            fresh.sort_by(|a, b| maildir_order(a, b));
            for name in fresh {
                l.entries.push((l.next_uid, name.clone()));
                l.next_uid = l.next_uid.saturating_add(1);
            }
            lock.commit(&l).map_err(|e| io_err("write uidlist", &self.path, e))?;
            list = Some(l);
        }
        let list = list.unwrap_or_default();
        if list.uid_validity != self.uid_validity {
            self.cache = cache::read(&self.path, list.uid_validity, false);
        }
        self.uid_validity = list.uid_validity;
        self.next_uid = list.next_uid;
        let mut messages = Vec::with_capacity(list.entries.len());
        let mut measured = 0usize;
        for (uid, base) in list.entries {
            let Some((file, fl)) = on_disk.remove(&base) else {
                continue;
            };
            let (size, date) = match self.cache.get(&uid) {
                Some(e) => (e.size, e.date),
                None => match self.measure(&base, &file) {
                    Some(e) => {
                        let sd = (e.size, e.date);
                        self.cache.insert(uid, e);
                        measured += 1;
                        sd
                    }
                    None => continue, // vanished between scan and stat
                },
            };
            messages.push(Message {
                uid,
                base,
                file,
                flags: fl,
                size,
                date,
            });
        }
        self.messages = messages;
        // A few new messages are cheap to measure again: writing the cache for each
        // delivery would have every open view of the folder rewrite it at once.
        if measured >= MEASURED_BEFORE_WRITE || self.cache.len() > self.messages.len() + self.messages.len() / 4 + 16 {
            self.cache_dirty = true;
            self.save_cache();
        }
        self.stamp = Some(stamp);
        Ok(())
    }

    /// base name → (file name in cur/, flags); moves new/ files into cur/ on the way.
    fn scan(&self) -> Result<HashMap<String, (String, Flags)>> {
        let mut out = HashMap::new();
        let new = self.path.join("new");
        let cur = self.path.join("cur");
        for entry in fs::read_dir(&new).map_err(|e| io_err("read", &new, e))? {
            let Ok(entry) = entry else { continue };
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let (base, fl) = flags::split_name(&name);
            let target = flags::cur_name(base, fl);
            match fs::rename(new.join(&name), cur.join(&target)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("rename", &new.join(&name), e)),
            }
        }
        for entry in fs::read_dir(&cur).map_err(|e| io_err("read", &cur, e))? {
            let Ok(entry) = entry else { continue };
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let (base, fl) = flags::split_name(&name);
            out.insert(base.to_string(), (name.clone(), fl));
        }
        Ok(out)
    }

    fn measure(&self, base: &str, file: &str) -> Option<Entry> {
        let path = self.path.join("cur").join(file);
        let meta = fs::metadata(&path).ok()?;
        let size = match name_field(base, "W") {
            Some(w) => w,
            None => cache::crlf_size(&fs::read(&path).ok()?),
        };
        Some(Entry {
            size,
            date: meta.mtime(),
            envelope: None,
        })
    }

    /// The cached IMAP ENVELOPEs of the folder's messages, read from the cache file (a
    /// view does not keep them in memory).
    pub fn envelopes(&self) -> HashMap<u32, Vec<u8>> {
        cache::read(&self.path, self.uid_validity, true)
            .into_iter()
            .filter_map(|(uid, e)| e.envelope.map(|env| (uid, env)))
            .collect()
    }

    /// Stores a message's IMAP ENVELOPE in the cache (written by [`Folder::save_cache`]).
    pub fn set_envelope(&mut self, uid: u32, envelope: &[u8]) {
        if envelope.len() <= cache::MAX_ENVELOPE
            && let Some(e) = self.cache.get_mut(&uid)
        {
            e.envelope = Some(envelope.to_vec());
            self.cache_dirty = true;
        }
    }

    /// Writes the cache file if it changed (best effort), keeping the envelopes it holds,
    /// and lets go of the envelopes held in memory.
    pub fn save_cache(&mut self) {
        if !self.cache_dirty {
            return;
        }
        let messages = &self.messages;
        self.cache
            .retain(|uid, _| messages.binary_search_by_key(uid, |m: &Message| m.uid).is_ok());
        let mut on_file = cache::read(&self.path, self.uid_validity, true);
        for (uid, e) in self.cache.iter_mut() {
            if e.envelope.is_none()
                && let Some(old) = on_file.remove(uid)
            {
                e.envelope = old.envelope;
            }
        }
        let entries: Vec<(u32, &Entry)> = messages
            .iter()
            .filter_map(|m| self.cache.get(&m.uid).map(|e| (m.uid, e)))
            .collect();
        cache::write(&self.path, self.uid_validity, &entries);
        for e in self.cache.values_mut() {
            e.envelope = None;
        }
        self.cache_dirty = false;
    }

    /// The folder's header cache ([`HeaderCache`]), read from its file.
    pub fn header_cache(&self) -> HeaderCache {
        HeaderCache::read(&self.path, self.uid_validity)
    }

    /// The header of `uid` from `hc`, else read from its file and added to `hc`; `None` if
    /// the message is gone. Write `hc` back with [`Folder::save_header_cache`].
    pub fn cached_header<'h>(&mut self, hc: &'h mut HeaderCache, uid: u32) -> Result<Option<Cow<'h, [u8]>>> {
        if !hc.contains(uid) {
            let Some(h) = self.read_header(uid)? else {
                return Ok(None);
            };
            hc.insert(uid, &h);
            if !hc.contains(uid) {
                return Ok(Some(Cow::Owned(h)));
            }
        }
        Ok(hc.get(uid).map(Cow::Borrowed))
    }

    /// Writes `hc` back if entries were added (best effort), without expunged messages.
    pub fn save_header_cache(&self, hc: &HeaderCache) {
        if hc.dirty() {
            hc.write(&self.path, self.uid_validity, self.messages.iter().map(|m| m.uid));
        }
    }

    /// The message's header (up to and with the blank line), CRLF line ends; `None` if
    /// the message is gone. Reads only as much of the file as the header needs.
    pub fn read_header(&mut self, uid: u32) -> Result<Option<Vec<u8>>> {
        use std::io::Read;
        for _ in 0..3 {
            let Some(path) = self.get(uid).map(|m| self.path.join("cur").join(&m.file)) else {
                return Ok(None);
            };
            let mut f = match fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.sync()?;
                    continue;
                }
                Err(e) => return Err(io_err("open", &path, e)),
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let n = f.read(&mut chunk).map_err(|e| io_err("read", &path, e))?;
                if n == 0 {
                    break;
                }
                let from = buf.len().saturating_sub(3);
                buf.extend_from_slice(&chunk[..n]);
                let lf = memchr::memmem::find(&buf[from..], b"\n\n").map(|i| from + i + 2);
                let crlf = memchr::memmem::find(&buf[from..], b"\n\r\n").map(|i| from + i + 3);
                let end = match (lf, crlf) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(end) = end {
                    buf.truncate(end);
                    break;
                }
                if buf.len() > 1024 * 1024 {
                    break;
                }
            }
            return Ok(Some(to_crlf(buf)));
        }
        Ok(None)
    }

    /// The path of a message's file now, following a rename by another process.
    fn locate(&mut self, uid: u32) -> Result<Option<PathBuf>> {
        let Some(m) = self.get(uid) else { return Ok(None) };
        let path = self.path.join("cur").join(&m.file);
        if path.exists() {
            return Ok(Some(path));
        }
        self.sync()?;
        Ok(self.get(uid).map(|m| self.path.join("cur").join(&m.file)))
    }

    /// The message's bytes with CRLF line ends; `None` if it is gone (expunged elsewhere).
    pub fn read(&mut self, uid: u32) -> Result<Option<Vec<u8>>> {
        for _ in 0..3 {
            let Some(path) = self.get(uid).map(|m| self.path.join("cur").join(&m.file)) else {
                return Ok(None);
            };
            match fs::read(&path) {
                Ok(bytes) => return Ok(Some(to_crlf(bytes))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.sync()?,
                Err(e) => return Err(io_err("read", &path, e)),
            }
        }
        Ok(None)
    }

    /// The message's bytes exactly as on disk (line ends as stored) into `buf`, which is
    /// cleared first; `false` if it is gone. For callers that convert line ends on output
    /// ([`extend_crlf`]) without a second copy.
    pub fn read_raw(&mut self, uid: u32, buf: &mut Vec<u8>) -> Result<bool> {
        use std::io::Read;
        for _ in 0..3 {
            let Some((path, size)) = self.get(uid).map(|m| (self.path.join("cur").join(&m.file), m.size)) else {
                return Ok(false);
            };
            buf.clear();
            // the CRLF size is at least the file's: read until end of file without the
            // stat and seek `read_to_end` makes to size its buffer (open, read, read, close)
            let read_all = |f: &mut fs::File, buf: &mut Vec<u8>| -> io::Result<()> {
                buf.resize(size as usize + 1, 0);
                let mut n = 0;
                loop {
                    if n == buf.len() {
                        buf.resize(n * 2 + 4096, 0);
                    }
                    match f.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(n);
                Ok(())
            };
            match fs::File::open(&path).and_then(|mut f| read_all(&mut f, buf)) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.sync()?,
                Err(e) => return Err(io_err("read", &path, e)),
            }
        }
        Ok(false)
    }

    /// The message's file, open for reading (line ends as stored, for callers that stream
    /// it: [`super::stream`]); `None` if it is gone. Opened without following a symbolic
    /// link and without blocking, and refused unless it is a regular file, so a FIFO or a
    /// link put in `cur/` neither blocks the reader nor leads it elsewhere.
    pub fn open_message(&mut self, uid: u32) -> Result<Option<fs::File>> {
        use std::os::unix::fs::OpenOptionsExt;
        // a flag change by another session renames the file: look again
        for _ in 0..3 {
            let Some(path) = self.get(uid).map(|m| self.path.join("cur").join(&m.file)) else {
                return Ok(None);
            };
            let opened = fs::OpenOptions::new()
                .read(true)
                .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
                .open(&path);
            match opened {
                Ok(f) => {
                    let meta = f.metadata().map_err(|e| io_err("stat", &path, e))?;
                    if !meta.is_file() {
                        let e = io::Error::new(io::ErrorKind::InvalidData, "not a regular file");
                        return Err(io_err("open", &path, e));
                    }
                    return Ok(Some(f));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.sync()?,
                Err(e) => return Err(io_err("open", &path, e)),
            }
        }
        Ok(None)
    }

    /// Sets a message's flags (renaming its file); `false` if it is gone.
    pub fn set_flags(&mut self, uid: u32, new: Flags) -> Result<bool> {
        for _ in 0..3 {
            let Some(i) = self.messages.binary_search_by_key(&uid, |m| m.uid).ok() else {
                return Ok(false);
            };
            let m = &self.messages[i];
            if m.flags == new {
                return Ok(true);
            }
            let target = flags::cur_name(&m.base, new);
            let cur = self.path.join("cur");
            match fs::rename(cur.join(&m.file), cur.join(&target)) {
                Ok(()) => {
                    let m = &mut self.messages[i];
                    m.file = target;
                    m.flags = new;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.sync()?,
                Err(e) => return Err(io_err("rename", &cur.join(&m.file), e)),
            }
        }
        Ok(false)
    }

    /// Removes messages; returns the UIDs that were removed here (not already gone).
    pub fn expunge(&mut self, uids: &[u32]) -> Result<Vec<u32>> {
        let mut done = Vec::new();
        for &uid in uids {
            for _ in 0..3 {
                let Some(path) = self.locate(uid)? else { break };
                match fs::remove_file(&path) {
                    Ok(()) => {
                        done.push(uid);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => self.sync()?,
                    Err(e) => return Err(io_err("unlink", &path, e)),
                }
            }
        }
        let gone: std::collections::HashSet<u32> = done.iter().copied().collect();
        self.messages.retain(|m| !gone.contains(&m.uid));
        Ok(done)
    }

    /// Adds a message (written to tmp/, fsynced, renamed into cur/); returns its UID.
    /// `date` sets the internal date (seconds since the epoch).
    pub fn append(&mut self, bytes: &[u8], fl: Flags, date: Option<i64>) -> Result<u32> {
        let bytes = to_crlf(bytes.to_vec());
        let base = unique_base(bytes.len() as u64);
        let tmp = self.path.join("tmp").join(&base);
        let res = (|| {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(&bytes)?;
            if let Some(d) = date {
                let t = SystemTime::UNIX_EPOCH + Duration::from_secs(d.max(0) as u64);
                f.set_modified(t)?;
            }
            f.sync_all()?;
            fs::rename(&tmp, self.path.join("cur").join(flags::cur_name(&base, fl)))
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("append", &tmp, e));
        }
        let _ = crate::safe_open::fsync_dir(&self.path.join("cur"));
        self.uid_of(&base)
    }

    /// Adds a message received into `tmp/` ([`super::spool::Spool`], line ends already
    /// CRLF) as [`Folder::append`] adds one in memory: its date set, fsynced, renamed into
    /// `cur/`; returns its UID. On failure the spool's file is removed.
    pub fn append_spool(&mut self, spool: super::spool::Spool, fl: Flags, date: Option<i64>) -> Result<u32> {
        let base = unique_base(spool.size());
        let tmp = spool.path().to_path_buf();
        let date = date.map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.max(0) as u64));
        spool
            .finish(date, &self.path.join("cur").join(flags::cur_name(&base, fl)))
            .map_err(|e| io_err("append", &tmp, e))?;
        let _ = crate::safe_open::fsync_dir(&self.path.join("cur"));
        self.uid_of(&base)
    }

    fn uid_of(&mut self, base: &str) -> Result<u32> {
        self.sync()?;
        self.messages
            .iter()
            .rev()
            .find(|m| m.base == base)
            .map(|m| m.uid)
            .ok_or_else(|| io_err("append", &self.path, io::Error::other("message vanished")))
    }

    /// The flags of `m` translated into `dest`'s keyword table.
    fn flags_for(&self, fl: Flags, dest: &mut Folder) -> Result<Flags> {
        let mut out = Flags {
            system: fl.system,
            keywords: 0,
        };
        for (i, k) in self.keywords.iter().enumerate() {
            if fl.keywords & (1 << i) != 0
                && !k.is_empty()
                && let Some(bit) = dest.keyword_bit(k, true)?
            {
                out.keywords |= bit;
            }
        }
        Ok(out)
    }

    /// Copies messages into `dest` (hard links where possible); returns (old, new) UIDs.
    pub fn copy_to(&mut self, uids: &[u32], dest: &mut Folder) -> Result<Vec<(u32, u32)>> {
        self.transfer(uids, dest, false)
    }

    /// Moves messages into `dest` (rename); returns (old, new) UIDs.
    pub fn move_to(&mut self, uids: &[u32], dest: &mut Folder) -> Result<Vec<(u32, u32)>> {
        self.transfer(uids, dest, true)
    }

    fn transfer(&mut self, uids: &[u32], dest: &mut Folder, mv: bool) -> Result<Vec<(u32, u32)>> {
        let mut placed = Vec::new();
        for &uid in uids {
            let Some(m) = self.get(uid).cloned() else { continue };
            let Some(src) = self.locate(uid)? else { continue };
            let fl = self.flags_for(m.flags, dest)?;
            let base = unique_base(m.size);
            let target = dest.path.join("cur").join(flags::cur_name(&base, fl));
            let res = if mv {
                fs::rename(&src, &target)
            } else {
                fs::hard_link(&src, &target).or_else(|_| {
                    let bytes = fs::read(&src)?;
                    let tmp = dest.path.join("tmp").join(&base);
                    let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                    f.write_all(&bytes)?;
                    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(m.date.max(0) as u64))?;
                    f.sync_all()?;
                    fs::rename(&tmp, &target)
                })
            };
            match res {
                Ok(()) => placed.push((uid, base)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(if mv { "move" } else { "copy" }, &src, e)),
            }
        }
        let _ = crate::safe_open::fsync_dir(&dest.path.join("cur"));
        if mv {
            let gone: std::collections::HashSet<u32> = placed.iter().map(|(u, _)| *u).collect();
            self.messages.retain(|m| !gone.contains(&m.uid));
        }
        dest.sync()?;
        let by_base: HashMap<&str, u32> = dest.messages.iter().map(|m| (m.base.as_str(), m.uid)).collect();
        Ok(placed
            .iter()
            .filter_map(|(old, base)| by_base.get(base.as_str()).map(|new| (*old, *new)))
            .collect())
    }
}

/// Orders Maildir names by their time stamp, then by name.
fn maildir_order(a: &str, b: &str) -> std::cmp::Ordering {
    let t = |s: &str| s.split('.').next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    t(a).cmp(&t(b)).then_with(|| a.cmp(b))
}

/// A `,K=value` field of a base name (`S=`, `W=`).
fn name_field(base: &str, key: &str) -> Option<u64> {
    base.split(',')
        .skip(1)
        .find_map(|f| f.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
}

/// A new base name: `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>,W=<size>`.
pub fn unique_base(size: u64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    let host: String = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
        .chars()
        .map(|c| if c == '/' || c == ':' || c == ',' { '_' } else { c })
        .collect();
    format!(
        "{}.M{}P{}Q{}.{},S={size},W={size}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        host
    )
}

/// Turns bare LF line ends into CRLF (messages delivered with LF read as IMAP wants).
pub fn to_crlf(bytes: Vec<u8>) -> Vec<u8> {
    if !memchr::memchr_iter(b'\n', &bytes).any(|i| i == 0 || bytes[i - 1] != b'\r') {
        return bytes;
    }
    let mut out = Vec::with_capacity(cache::crlf_size(&bytes) as usize);
    extend_crlf(&mut out, &bytes);
    out
}

/// Appends `src` to `out` with every bare LF written as CRLF (whole runs between line
/// ends copied at once); exactly [`cache::crlf_size`] bytes.
pub fn extend_crlf(out: &mut Vec<u8>, src: &[u8]) {
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', src) {
        if i == 0 || src[i - 1] != b'\r' {
            out.extend_from_slice(&src[start..i]);
            out.extend_from_slice(b"\r\n");
            start = i + 1;
        }
    }
    out.extend_from_slice(&src[start..]);
}
