//! One Maildir folder: its messages with stable UIDs, their flags and sizes, and the
//! operations IMAP and POP3 need — append, flag changes, expunge, copy and move.
//!
//! A [`Folder`] is one process's state of a folder (imapd shares one among all its
//! sessions of the folder); processes (imapd, pop3d, Dovecot, a user's `mv`) share a
//! folder through the file system and its index ([`super::index`]). [`Folder::sync`]
//! ([`super::folder_sync`]) brings a state up to date: it moves files from `new/` to `cur/`
//! on first sight, gives UIDs to names the uidlist does not know yet (under the uidlist
//! lock), notices files that were renamed (flag changes) or removed (expunges) by others,
//! and records every change in the index under a new MODSEQ. [`Folder::changed`] is the
//! cheap test for "someone did something" (nanosecond directory and uidlist stamps), for
//! IDLE and NOOP; [`Folder::generation`] counts the changes a state has seen.
//!
//! A state keeps the last [`GHOSTS`] messages expunged as they were ([`Folder::ghost`]),
//! and the files of the last ones it expunged itself open past their unlink
//! ([`GHOST_FILES`] per state, [`PROCESS_GHOST_FILES`] per process): imapd answers a FETCH
//! of them for sessions not yet told of the expunge (RFC 2180 §4.1).

use super::cache::{self, Entry};
use super::flags::{self, Flags};
use super::headers::HeaderCache;
use super::uidlist::{self, Lock};
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
    /// The message GUID (kept across COPY and MOVE).
    pub guid: u128,
    /// MODSEQ of its last change.
    pub modseq: u64,
    /// Save date: when it came into this folder, seconds since the epoch.
    pub saved: i64,
}

impl Message {
    /// What the index keeps of the message ([`super::index::Record`]).
    pub fn record(&self) -> super::index::Record {
        super::index::Record {
            guid: self.guid,
            modseq: self.modseq,
            flags: self.flags,
            size: self.size,
            date: self.date,
            saved: self.saved,
        }
    }
}

/// Directory and uidlist stamps (nanosecond mtimes, inode, size): when none changed,
/// nothing in the folder did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) new: (i64, i64, u64, u64),
    pub(super) cur: (i64, i64, u64, u64),
    pub(super) list: (i64, i64, u64, u64),
    /// A stamp within [`CLOCK_TICK`] of when it was taken: a change in the same tick of
    /// the file system's clock would leave it as it is, so look once more later.
    pub(super) recent: bool,
}

/// The coarsest step of the kernel's file time stamps (its tick): a directory stamp this
/// close to the time it was read may hide a change made in the same tick.
pub const CLOCK_TICK: Duration = Duration::from_millis(20);

/// Most expunges a folder state remembers in memory (16 bytes each); older ones are
/// folded into [`Folder::vanished_floor`].
pub const MEMORY_EXPUNGES: usize = 1 << 20;

/// A view of one folder.
#[derive(Debug)]
pub struct Folder {
    pub(super) path: PathBuf,
    pub(super) uid_validity: u32,
    pub(super) next_uid: u32,
    pub(super) messages: Vec<Message>,
    pub(super) keywords: Vec<String>,
    /// Envelopes computed since the cache file was last written.
    pub(super) new_envelopes: HashMap<u32, Vec<u8>>,
    /// Envelopes read from the cache file or written to it, up to [`ENVELOPE_MEMORY`]
    /// bytes: a FETCH ENVELOPE of a few messages reads no file.
    pub(super) envelope_memo: HashMap<u32, Vec<u8>>,
    /// Bytes of the envelopes in `envelope_memo`.
    pub(super) memo_bytes: usize,
    /// `envelope_memo` holds every envelope of the cache file as this state read or wrote
    /// it: one it lacks is computed, not looked for in the file.
    pub(super) memo_whole: bool,
    pub(super) stamp: Option<Stamp>,
    /// HIGHESTMODSEQ.
    pub(super) highest_modseq: u64,
    /// Expunges at or below this MODSEQ are not in `expunged`.
    pub(super) floor: u64,
    /// (modseq, uid) of expunges, oldest first.
    pub(super) expunged: Vec<(u64, u32)>,
    /// The uidlist as this state last read or wrote it (for [`Folder::append`]: when it is
    /// still that version, a new record is appended without reading it).
    pub(super) list_at: Option<super::uidlist::FileId>,
    /// Records appended to the uidlist since it was last written whole.
    pub(super) list_appends: usize,
    /// Where this state is in the index file: (device, inode, bytes read), once read.
    pub(super) index_at: Option<(u64, u64, u64)>,
    /// Records in the index file since its last compaction.
    pub(super) index_records: usize,
    /// Changes whatever their source bump this.
    pub(super) generation: u64,
    /// GUIDs for base names about to be given UIDs (messages copied or moved in).
    pub(super) pending_guids: HashMap<String, u128>,
    /// Index records of UIDs this state has no message for yet (read from the index,
    /// matched with the Maildir at the next sync).
    pub(super) index_new: HashMap<u32, super::index::Record>,
    /// The first UID no session has seen (`\Recent` from here on).
    pub(super) recent_from: u32,
    /// Watched by inotify: whether a change was seen since the last sync.
    pub(super) watch: Option<bool>,
    /// The last [`GHOSTS`] messages expunged, as they were: sessions not yet told of an
    /// expunge still FETCH their flags, UID, size and date (RFC 2180 §4.1).
    pub(super) ghosts: std::collections::VecDeque<Message>,
    /// The files of the last [`GHOST_FILES`] messages this state expunged itself, kept
    /// open past their unlink, so their bodies stay readable to those sessions too.
    pub(super) ghost_files: std::collections::VecDeque<(u32, GhostFile)>,
    /// The mailbox GUID of the uidlist header (`G`), as last read: kept across RENAME,
    /// new when the folder is created again (IMAP OBJECTID's MAILBOXID).
    pub(super) mailbox_guid: String,
}

/// Most expunged message files a folder state keeps open for [`Folder::read_ghost`].
pub const GHOST_FILES: usize = 64;

/// Most expunged message files kept open by all folder states of a process together, so
/// a process serving many users' folders holds a bounded number of descriptors (and of
/// unlinked files' disk space) for them.
pub const PROCESS_GHOST_FILES: usize = 128;

/// Expunged message files open in this process.
static GHOST_FILES_OPEN: AtomicU64 = AtomicU64::new(0);

/// An expunged message's file, kept open: counted in [`PROCESS_GHOST_FILES`] while it lives.
#[derive(Debug)]
pub(super) struct GhostFile(fs::File);

impl GhostFile {
    /// Takes `f` if the process is under [`PROCESS_GHOST_FILES`], else gives it back.
    fn new(f: fs::File) -> std::result::Result<GhostFile, fs::File> {
        let n = GHOST_FILES_OPEN.fetch_add(1, Ordering::Relaxed);
        if n >= PROCESS_GHOST_FILES as u64 {
            GHOST_FILES_OPEN.fetch_sub(1, Ordering::Relaxed);
            return Err(f);
        }
        Ok(GhostFile(f))
    }
}

impl Drop for GhostFile {
    fn drop(&mut self) {
        GHOST_FILES_OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Most bytes of envelopes a folder state keeps in memory ([`Folder::envelopes_of`]).
pub const ENVELOPE_MEMORY: usize = 4 << 20;

/// Envelopes computed before [`Folder::save_cache_soon`] writes the cache file (a state
/// also writes what it has when it goes).
pub const CACHE_SAVE_EVERY: usize = 64;

/// Most expunged messages a folder state keeps for [`Folder::ghost`] (about 150 bytes each).
pub const GHOSTS: usize = 1024;

impl Folder {
    /// Opens the Maildir at `path` (which must exist with cur/ new/ tmp/) and syncs it.
    pub fn open(path: &Path) -> Result<Folder> {
        Folder::open_as(path, false)
    }

    /// [`Folder::open`] of a state `watched` by inotify from the start (its watch set up
    /// before, [`Folder::set_watched`]), so the changes of its first sync are expected.
    pub(super) fn open_as(path: &Path, watched: bool) -> Result<Folder> {
        for sub in ["cur", "new", "tmp"] {
            let p = path.join(sub);
            if !p.is_dir() {
                return Err(MailboxError::NoSuchFolder(path.display().to_string()));
            }
        }
        let mut f = Folder::placeholder();
        f.path = path.to_path_buf();
        if watched {
            f.watch = Some(false);
        }
        super::spool::clean_tmp(path);
        f.sync()?;
        Ok(f)
    }

    /// An empty stand-in (no path, no messages) for a state that is elsewhere.
    pub fn placeholder() -> Folder {
        Folder {
            path: PathBuf::new(),
            uid_validity: 0,
            next_uid: 1,
            messages: Vec::new(),
            keywords: Vec::new(),
            new_envelopes: HashMap::new(),
            envelope_memo: HashMap::new(),
            memo_bytes: 0,
            memo_whole: false,
            list_at: None,
            list_appends: 0,
            stamp: None,
            highest_modseq: 0,
            floor: 0,
            expunged: Vec::new(),
            index_at: None,
            index_records: 0,
            generation: 0,
            pending_guids: HashMap::new(),
            index_new: HashMap::new(),
            recent_from: 0,
            watch: None,
            ghosts: std::collections::VecDeque::new(),
            ghost_files: std::collections::VecDeque::new(),
            mailbox_guid: String::new(),
        }
    }

    /// About how many bytes of memory the state holds (its message list with the names,
    /// envelopes, the expunge log, ghosts), for the bounds of the states kept warm
    /// ([`super::shared::Keep`]).
    pub fn memory_estimate(&self) -> usize {
        let names: usize = self
            .messages
            .iter()
            .map(|m| m.base.capacity() + m.file.capacity())
            .sum();
        let envelopes: usize = self.new_envelopes.values().map(Vec::capacity).sum();
        std::mem::size_of::<Folder>()
            + self.path.as_os_str().len()
            + self.messages.capacity() * std::mem::size_of::<Message>()
            + names
            + self.memo_bytes
            + envelopes
            + self.expunged.capacity() * 16
            + self.ghosts.len() * (std::mem::size_of::<Message>() + 100)
    }

    /// Whether this is a [`Folder::placeholder`].
    pub fn is_placeholder(&self) -> bool {
        self.path.as_os_str().is_empty()
    }

    /// Whether the last sync's stamps were too close to their time to be trusted
    /// ([`CLOCK_TICK`]): look again.
    pub fn stamp_recent(&self) -> bool {
        self.stamp.is_none_or(|s| s.recent)
    }

    /// The folder's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// UIDVALIDITY.
    pub fn uid_validity(&self) -> u32 {
        self.uid_validity
    }

    /// The mailbox GUID from the uidlist header as found (Dovecot writes 32 hex digits;
    /// may be empty in a list written by something else).
    pub fn mailbox_guid(&self) -> &str {
        &self.mailbox_guid
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

    pub(super) fn read_keywords(&mut self) {
        if let Ok(text) = fs::read_to_string(self.path.join(flags::KEYWORDS_FILE)) {
            self.keywords = flags::parse_keywords(&text);
        }
    }

    pub(super) fn stamp(&self) -> Stamp {
        let st = |p: PathBuf| {
            fs::metadata(p)
                .map(|m| (m.mtime(), m.mtime_nsec(), m.ino(), m.size()))
                .unwrap_or_default()
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let s = Stamp {
            new: st(self.path.join("new")),
            cur: st(self.path.join("cur")),
            list: st(self.path.join(uidlist::FILE)),
            recent: false,
        };
        let tick = now.saturating_sub(CLOCK_TICK);
        let recent = [s.new, s.cur, s.list]
            .iter()
            .any(|t| Duration::new(t.0.max(0) as u64, t.1.clamp(0, 999_999_999) as u32) >= tick);
        Stamp { recent, ..s }
    }

    /// Whether the folder may have changed since the last sync: for a watched state
    /// ([`Folder::set_watched`]) whether its watch saw a change since, without a system
    /// call; else by its stamps (three `stat`s, nanosecond stamps; a stamp from the last
    /// [`CLOCK_TICK`] is looked at once more).
    pub fn changed(&self) -> bool {
        if let Some(dirty) = self.watch {
            return dirty || self.stamp.is_none();
        }
        match self.stamp {
            None => true,
            Some(old) => old.recent || self.stamp() != old,
        }
    }

    /// Whether the index file or the uidlist is not as this state last read or wrote it
    /// (another file, or another size: records appended by another process, or cut,
    /// rewritten or removed by something else), which the watch of `new/` and `cur/`
    /// does not see. Two `stat`s; a file the state has no identity of is not compared.
    pub fn files_changed(&self) -> bool {
        let index = self.index_at.is_some_and(|(dev, ino, at)| {
            fs::metadata(self.path.join(super::index::FILE))
                .ok()
                .is_none_or(|m| (m.dev(), m.ino(), m.len()) != (dev, ino, at))
        });
        index
            || self.list_at.is_some_and(|(ino, len)| {
                fs::metadata(self.path.join(uidlist::FILE))
                    .ok()
                    .is_none_or(|m| (m.ino(), m.len()) != (ino, len))
            })
    }

    /// Whether `cur/` and `new/` at the folder's path are still the directories the state
    /// last synced (same inodes): not when the folder was renamed away or deleted and made
    /// anew (a watch on the old ones sees nothing of the new). Two `stat`s.
    pub fn same_directories(&self) -> bool {
        let Some(stamp) = self.stamp else { return true };
        let ino = |sub: &str| fs::metadata(self.path.join(sub)).map(|m| m.ino()).ok();
        ino("cur") == Some(stamp.cur.2) && ino("new") == Some(stamp.new.2)
    }

    /// Makes [`Folder::changed`] follow an inotify watch of `new/` and `cur/` (set up
    /// before the state last synced) instead of the stamps; `false`: the stamps again.
    pub fn set_watched(&mut self, on: bool) {
        self.watch = if on {
            Some(self.watch.unwrap_or(false))
        } else {
            // from the watch back to the stamps: look once
            if self.watch.is_some() {
                self.stamp = None;
            }
            None
        };
    }

    /// A change this state made that its watch will report (see [`super::shared::expect`]):
    /// `name` appeared in (or left) `sub`.
    pub(super) fn expect(&self, appeared: bool, sub: &str, name: &str) {
        if self.watch.is_some() {
            super::shared::expect(&self.path, appeared, sub, name);
        }
    }

    /// The watch saw a change: the next [`Folder::changed`] says so.
    pub fn mark_changed(&mut self) {
        if let Some(d) = self.watch.as_mut() {
            *d = true;
        }
    }

    /// HIGHESTMODSEQ.
    pub fn highest_modseq(&self) -> u64 {
        self.highest_modseq
    }

    /// Expunges at or below this MODSEQ are no longer listed by [`Folder::expunged_since`].
    pub fn vanished_floor(&self) -> u64 {
        self.floor
    }

    /// UIDs expunged after MODSEQ `since`, with their MODSEQs (oldest first); `None` when
    /// `since` is below what the log remembers.
    pub fn expunged_since(&self, since: u64) -> Option<&[(u64, u32)]> {
        if since < self.floor {
            return None;
        }
        let i = self.expunged.partition_point(|&(m, _)| m <= since);
        Some(&self.expunged[i..])
    }

    /// A message expunged lately (one of the last [`GHOSTS`]), as it was when it went:
    /// for sessions that have not yet been told (RFC 2180 §4.1).
    pub fn ghost(&self, uid: u32) -> Option<&Message> {
        self.ghosts.iter().rev().find(|m| m.uid == uid)
    }

    /// An expunged message's file as stored, if it is still readable: kept open when this
    /// state expunged it ([`GHOST_FILES`]), or still at its name (another program may not
    /// have removed it yet); `None` once it is gone.
    pub fn read_ghost(&self, uid: u32) -> Option<Vec<u8>> {
        if let Some((_, f)) = self.ghost_files.iter().rev().find(|(u, _)| *u == uid) {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; 64 * 1024];
            let mut n = 0;
            loop {
                if n == buf.len() {
                    buf.resize(n * 2, 0);
                }
                match f.0.read_at(&mut buf[n..], n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
            buf.truncate(n);
            return Some(buf);
        }
        let m = self.ghost(uid)?;
        if m.file.is_empty() || m.file.contains('/') {
            return None;
        }
        fs::read(self.path.join("cur").join(&m.file)).ok()
    }

    /// Keeps an expunged message for [`Folder::ghost`].
    pub(super) fn bury(&mut self, m: Message) {
        if self.ghosts.len() >= GHOSTS {
            self.ghosts.pop_front();
        }
        self.ghosts.push_back(m);
    }

    /// Takes the messages of `gone` out of the folder's list, keeping them as ghosts.
    pub(super) fn remove_messages(&mut self, gone: &std::collections::HashSet<u32>) {
        if gone.is_empty() {
            return;
        }
        let (out, keep): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.messages)
            .into_iter()
            .partition(|m| gone.contains(&m.uid));
        self.messages = keep;
        for m in out {
            self.bury(m);
        }
    }

    /// Bumped by every change this state learns of or makes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The cached IMAP ENVELOPEs of the folder's messages, read from the cache file (a
    /// view does not keep them in memory), with those computed since it was written.
    pub fn envelopes(&self) -> HashMap<u32, Vec<u8>> {
        let mut out: HashMap<u32, Vec<u8>> = cache::read(&self.path, self.uid_validity, true)
            .into_iter()
            .filter_map(|(uid, e)| e.envelope.map(|env| (uid, env)))
            .collect();
        out.extend(self.new_envelopes.iter().map(|(u, e)| (*u, e.clone())));
        out
    }

    /// The cached IMAP ENVELOPEs of the messages `uids` (those known): from memory, the
    /// cache file read only for some not there (all of it kept in memory when it fits in
    /// [`ENVELOPE_MEMORY`]).
    pub fn envelopes_of(&mut self, uids: &[u32]) -> HashMap<u32, Vec<u8>> {
        let known = |f: &Folder, u: &u32| f.new_envelopes.contains_key(u) || f.envelope_memo.contains_key(u);
        if !self.memo_whole && uids.iter().any(|u| !known(self, u) && self.get(*u).is_some()) {
            let size = fs::metadata(self.path.join(cache::FILE)).map_or(0, |m| m.len());
            let whole = size as usize <= ENVELOPE_MEMORY;
            let want: std::collections::HashSet<u32> = uids.iter().copied().collect();
            let read = cache::read_some(&self.path, self.uid_validity, true, |u| whole || want.contains(&u));
            if whole {
                self.envelope_memo.clear();
                self.memo_bytes = 0;
                self.memo_whole = true;
            }
            for (uid, e) in read {
                if let Some(env) = e.envelope {
                    self.remember_envelope(uid, env);
                }
            }
        }
        uids.iter()
            .filter_map(|u| {
                let e = self.new_envelopes.get(u).or_else(|| self.envelope_memo.get(u))?;
                Some((*u, e.clone()))
            })
            .collect()
    }

    /// Keeps an envelope in memory, within [`ENVELOPE_MEMORY`].
    fn remember_envelope(&mut self, uid: u32, env: Vec<u8>) {
        if self.memo_bytes + env.len() > ENVELOPE_MEMORY {
            self.memo_whole = false;
            return;
        }
        self.memo_bytes += env.len();
        if let Some(old) = self.envelope_memo.insert(uid, env) {
            self.memo_bytes -= old.len();
        }
    }

    /// Forgets the envelopes held in memory (a new UIDVALIDITY).
    pub(super) fn forget_envelopes(&mut self) {
        self.new_envelopes = HashMap::new();
        self.envelope_memo = HashMap::new();
        self.memo_bytes = 0;
        self.memo_whole = false;
    }

    /// Stores a message's IMAP ENVELOPE for the cache (written by [`Folder::save_cache`]).
    pub fn set_envelope(&mut self, uid: u32, envelope: &[u8]) {
        if envelope.len() <= cache::MAX_ENVELOPE && self.get(uid).is_some() {
            self.new_envelopes.insert(uid, envelope.to_vec());
        }
    }

    /// Writes the cache file if envelopes were added (best effort), keeping the envelopes
    /// it holds, and lets go of those held in memory.
    pub fn save_cache(&mut self) {
        if self.new_envelopes.is_empty() || self.is_placeholder() {
            return;
        }
        let mut on_file = if self.memo_whole {
            HashMap::new()
        } else {
            cache::read(&self.path, self.uid_validity, true)
        };
        let entries: Vec<(u32, Entry)> = self
            .messages
            .iter()
            .map(|m| {
                let envelope = self
                    .new_envelopes
                    .get(&m.uid)
                    .or_else(|| self.envelope_memo.get(&m.uid))
                    .cloned()
                    .or_else(|| on_file.remove(&m.uid).and_then(|e| e.envelope));
                (
                    m.uid,
                    Entry {
                        size: m.size,
                        date: m.date,
                        envelope,
                    },
                )
            })
            .collect();
        let refs: Vec<(u32, &Entry)> = entries.iter().map(|(u, e)| (*u, e)).collect();
        cache::write(&self.path, self.uid_validity, &refs);
        for (uid, env) in std::mem::take(&mut self.new_envelopes) {
            self.remember_envelope(uid, env);
        }
    }

    /// [`Folder::save_cache`] once [`CACHE_SAVE_EVERY`] envelopes wait (a state writes
    /// the rest when it goes).
    pub fn save_cache_soon(&mut self) {
        if self.new_envelopes.len() >= CACHE_SAVE_EVERY {
            self.save_cache();
        }
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
        Ok(self.set_flags_many(&[(uid, new)])?[0])
    }

    /// Sets the flags of many messages, recorded in the index at one MODSEQ; per message
    /// whether it is still there.
    pub fn set_flags_many(&mut self, changes: &[(u32, Flags)]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(changes.len());
        let mut changed = Vec::new();
        let mut failed = None;
        // renames relative to cur/ (no walk of the folder's path per message)
        let cur = rustix::fs::open(
            self.path.join("cur"),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        // (old, new) names of the renames whose events the watch will report
        let mut renamed = Vec::new();
        for (k, &(uid, new)) in changes.iter().enumerate() {
            // two events a rename: taken off the watch's queue before it overflows (which
            // would cost a rescan), once they are expected
            if k % 2048 == 2047 {
                self.expect_renames(&mut renamed);
                super::shared::watch_events();
            }
            match self.rename_flags(cur.as_ref(), uid, new, &mut renamed) {
                Ok(r) => {
                    if r == Some(true) {
                        changed.push(uid);
                    }
                    out.push(r.is_some());
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.expect_renames(&mut renamed);
        self.record(&changed, &[]);
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Tells the watch of the renames in `cur/` this state made ([`Folder::expect`]), all
    /// at once; `renamed` is emptied.
    fn expect_renames(&self, renamed: &mut Vec<(String, String)>) {
        if self.watch.is_some() && !renamed.is_empty() {
            let events = renamed
                .iter()
                .flat_map(|(old, new)| [(false, old.as_str()), (true, new.as_str())]);
            super::shared::expect_many(&self.path, "cur", events);
        }
        renamed.clear();
    }

    /// Renames a message's file for new flags: `None` if it is gone, else whether they
    /// changed. A rename is added to `renamed` (old and new name) for
    /// [`Folder::expect_renames`].
    fn rename_flags(
        &mut self,
        dir: Option<&rustix::fd::OwnedFd>,
        uid: u32,
        new: Flags,
        renamed: &mut Vec<(String, String)>,
    ) -> Result<Option<bool>> {
        for _ in 0..3 {
            let Some(i) = self.messages.binary_search_by_key(&uid, |m| m.uid).ok() else {
                return Ok(None);
            };
            let m = &self.messages[i];
            if m.flags == new {
                return Ok(Some(false));
            }
            let target = flags::cur_name(&m.base, new);
            let done = match dir {
                Some(d) => rustix::fs::renameat(d, m.file.as_str(), d, target.as_str()).map_err(io::Error::from),
                None => {
                    let cur = self.path.join("cur");
                    fs::rename(cur.join(&m.file), cur.join(&target))
                }
            };
            match done {
                Ok(()) => {
                    let m = &mut self.messages[i];
                    m.flags = new;
                    if self.watch.is_some() {
                        let old = std::mem::replace(&mut m.file, target.clone());
                        renamed.push((old, target));
                    } else {
                        m.file = target;
                    }
                    return Ok(Some(true));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // (what this state renamed so far is expected before it looks again)
                    self.expect_renames(renamed);
                    self.sync()?
                }
                Err(e) => return Err(io_err("rename", &self.path.join("cur").join(&m.file), e)),
            }
        }
        Ok(None)
    }

    /// Removes messages; returns the UIDs that were removed here (not already gone).
    pub fn expunge(&mut self, uids: &[u32]) -> Result<Vec<u32>> {
        let mut done = Vec::new();
        for &uid in uids {
            for _ in 0..3 {
                let Some(path) = self.locate(uid)? else { break };
                // kept open for the sessions not yet told (a regular file only)
                let kept = {
                    use std::os::unix::fs::OpenOptionsExt;
                    fs::OpenOptions::new()
                        .read(true)
                        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
                        .open(&path)
                        .ok()
                        .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
                };
                match fs::remove_file(&path) {
                    Ok(()) => {
                        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                            self.expect(false, "cur", name);
                        }
                        done.push(uid);
                        if let Some(f) = kept {
                            if self.ghost_files.len() >= GHOST_FILES {
                                self.ghost_files.pop_front();
                            }
                            // the process's bound reached: this state's oldest makes room
                            let kept = GhostFile::new(f).or_else(|f| {
                                if self.ghost_files.pop_front().is_some() {
                                    GhostFile::new(f)
                                } else {
                                    Err(f)
                                }
                            });
                            if let Ok(g) = kept {
                                self.ghost_files.push_back((uid, g));
                            }
                        }
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => self.sync()?,
                    Err(e) => return Err(io_err("unlink", &path, e)),
                }
            }
        }
        let gone: std::collections::HashSet<u32> = done.iter().copied().collect();
        self.remove_messages(&gone);
        self.record(&[], &done);
        Ok(done)
    }

    /// Adds a message (written to tmp/, fsynced, renamed into cur/); returns its UID.
    /// `date` sets the internal date (seconds since the epoch).
    pub fn append(&mut self, bytes: &[u8], fl: Flags, date: Option<i64>) -> Result<u32> {
        let bytes = to_crlf(bytes.to_vec());
        let base = unique_base(bytes.len() as u64);
        let tmp = self.path.join("tmp").join(&base);
        let name = flags::cur_name(&base, fl);
        let res = (|| {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(&bytes)?;
            if let Some(d) = date {
                let t = SystemTime::UNIX_EPOCH + Duration::from_secs(d.max(0) as u64);
                f.set_modified(t)?;
            }
            f.sync_all()?;
            let mtime = f.metadata()?.mtime();
            fs::rename(&tmp, self.path.join("cur").join(&name))?;
            Ok(mtime)
        })();
        let mtime = match res {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_err("append", &tmp, e));
            }
        };
        self.expect(true, "cur", &name);
        // adopt makes the rename durable (cur/'s fsync) with the UID's record
        self.adopt(&base, name, fl, bytes.len() as u64, mtime)
    }

    /// Adds a message received into `tmp/` ([`super::spool::Spool`], line ends already
    /// CRLF) as [`Folder::append`] adds one in memory: its date set, fsynced, renamed into
    /// `cur/`; returns its UID. On failure the spool's file is removed.
    pub fn append_spool(&mut self, spool: super::spool::Spool, fl: Flags, date: Option<i64>) -> Result<u32> {
        let size = spool.size();
        let base = unique_base(size);
        let tmp = spool.path().to_path_buf();
        let date = date.map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.max(0) as u64));
        let name = flags::cur_name(&base, fl);
        let target = self.path.join("cur").join(&name);
        spool.finish(date, &target).map_err(|e| io_err("append", &tmp, e))?;
        self.expect(true, "cur", &name);
        // adopt makes the rename durable (cur/'s fsync) with the UID's record
        match fs::metadata(&target) {
            Ok(meta) => self.adopt(&base, name, fl, size, meta.mtime()),
            Err(_) => {
                let _ = postern_util::safe_open::fsync_dir(&self.path.join("cur"));
                self.uid_of(&base)
            }
        }
    }

    /// The UID of the message with base name `base`, after a sync.
    pub(super) fn uid_of(&mut self, base: &str) -> Result<u32> {
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
                Ok(()) => {
                    dest.pending_guids.insert(base.clone(), m.guid);
                    placed.push((uid, base));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(if mv { "move" } else { "copy" }, &src, e)),
            }
        }
        let _ = postern_util::safe_open::fsync_dir(&dest.path.join("cur"));
        if mv {
            let gone: std::collections::HashSet<u32> = placed.iter().map(|(u, _)| *u).collect();
            self.remove_messages(&gone);
            let gone: Vec<u32> = placed.iter().map(|(u, _)| *u).collect();
            self.record(&[], &gone);
        }
        dest.sync()?;
        let by_base: HashMap<&str, u32> = dest.messages.iter().map(|m| (m.base.as_str(), m.uid)).collect();
        Ok(placed
            .iter()
            .filter_map(|(old, base)| by_base.get(base.as_str()).map(|new| (*old, *new)))
            .collect())
    }
}

impl Drop for Folder {
    /// Writes the envelopes computed since the cache file was last written.
    fn drop(&mut self) {
        self.save_cache();
    }
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
