//! The parsed sort and thread keys of messages ([`Keys`]: sent date, base subject,
//! From/To/Cc address and display keys, hashed Message-ID and references), kept in
//! memory after the first SORT or THREAD of a folder so that the next ones do not read
//! and parse the headers again (Dovecot keeps its sort/thread data the same way).
//!
//! Correctness: a folder's keys are kept per (folder path, UIDVALIDITY), per message by
//! UID; a message never changes under its UID within one UIDVALIDITY, so an entry stays
//! right until the message is expunged. Entries of expunged messages are dropped when a
//! SORT/THREAD [`bind`]s a folder whose [`Folder::generation`] moved; new messages are
//! parsed on demand (a miss). Flags are not keys, so flag changes need nothing.
//!
//! Sharing: one map per thread (imapd runs its sessions on one event loop, like the
//! shared folder states of `postern_mailbox::shared`), so every session of a process on
//! the same folder uses the same keys.
//!
//! Bounds: a message's [`Keys`] cost about [`FIXED_BYTES`] plus its key strings and 8
//! bytes per reference kept (at most [`crate::thread::MAX_REFS`]); typically 250–400
//! bytes, so 10,000 messages ≈ 3–4 MB. Folders over [`MAX_MESSAGES`] are not cached; a
//! folder stops learning past [`MAX_BYTES`], and when [`bind`] finds the process over
//! [`MAX_BYTES`] in all it drops the least recently used other folders first.

use postern_mailbox::folder::Folder;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::RandomState;
use std::path::PathBuf;
use std::rc::Rc;

/// Folders with more messages are not cached.
pub const MAX_MESSAGES: usize = 200_000;
/// Bytes of keys one imapd process keeps (all folders).
pub const MAX_BYTES: usize = 64 << 20;
/// The fixed part of one message's entry: the struct, its hash-table slot and slack.
pub const FIXED_BYTES: usize = std::mem::size_of::<Keys>() + 32;

/// What SORT and THREAD use of one message's header.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    /// Sent date (the internal date when no Date: parses).
    pub sent: i64,
    /// Collation key of the base subject.
    pub subject: Vec<u8>,
    /// Whether the subject was a reply or forward (ORDEREDSUBJECT/REFERENCES).
    pub reply: bool,
    /// Collation keys of the first From, To, Cc's addr-mailbox.
    pub from: Vec<u8>,
    pub to: Vec<u8>,
    pub cc: Vec<u8>,
    /// Collation keys of the first From, To's display name (RFC 5957).
    pub display_from: Vec<u8>,
    pub display_to: Vec<u8>,
    /// Hashed Message-ID ([`hasher`]).
    pub msgid: Option<u64>,
    /// Hashed references (the last [`crate::thread::MAX_REFS`], or In-Reply-To).
    pub refs: Vec<u64>,
}

impl Keys {
    /// Parses what SORT and THREAD use of `header` (only those fields are parsed: a
    /// header may be 100 KB of others).
    pub fn parse(header: &[u8], internal_date: i64) -> Keys {
        let fields = crate::mime::header_fields(header, &["From", "To", "Cc", "Subject", "Date"], false);
        let parsed = mail_parser::MessageParser::default().parse_headers(&fields[..]);
        let mut k = crate::sort::keys(parsed.as_ref(), internal_date);
        (k.msgid, k.refs) = crate::thread::thread_ids(header, &hasher());
        k
    }

    /// Bytes this entry holds.
    pub fn bytes(&self) -> usize {
        FIXED_BYTES
            + self.subject.capacity()
            + self.from.capacity()
            + self.to.capacity()
            + self.cc.capacity()
            + self.display_from.capacity()
            + self.display_to.capacity()
            + self.refs.capacity() * 8
    }
}

/// The cached keys of one folder.
#[derive(Default)]
pub struct FolderKeys {
    by_uid: HashMap<u32, Rc<Keys>>,
    bytes: usize,
    generation: u64,
    /// Whether new entries are kept (not past the bounds).
    learning: bool,
    used: u64,
}

impl FolderKeys {
    /// The keys of `uid`, when known.
    pub fn get(&self, uid: u32) -> Option<Rc<Keys>> {
        self.by_uid.get(&uid).cloned()
    }

    /// Keeps `keys` for `uid` (unless past the bounds).
    pub fn put(&mut self, uid: u32, keys: Rc<Keys>) {
        if !self.learning {
            return;
        }
        if self.bytes > MAX_BYTES {
            self.learning = false;
            return;
        }
        self.bytes += keys.bytes();
        if let Some(old) = self.by_uid.insert(uid, keys) {
            self.bytes -= old.bytes();
        }
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

/// A folder's cached keys, shared by a sorter or threader and the process's map.
pub type Shared = Rc<RefCell<FolderKeys>>;

#[derive(Default)]
struct Cache {
    folders: HashMap<(PathBuf, u32), Shared>,
    tick: u64,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    static HASHER: RandomState = RandomState::new();
}

/// The keyed hasher message ids are hashed with (one random key per process, so that
/// cached hashes stay comparable).
pub fn hasher() -> RandomState {
    HASHER.with(|h| h.clone())
}

/// The cached keys of `folder` for a SORT or THREAD about to run: entries of expunged
/// messages dropped, other folders evicted when the process is over [`MAX_BYTES`].
/// `None` for a folder over [`MAX_MESSAGES`].
pub fn bind(folder: &Folder) -> Option<Shared> {
    let n = folder.messages().len();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.tick += 1;
        let tick = c.tick;
        let key = (folder.path().to_path_buf(), folder.uid_validity());
        if n > MAX_MESSAGES {
            c.folders.remove(&key);
            return None;
        }
        let shared = c.folders.entry(key.clone()).or_default().clone();
        {
            let mut fk = shared.borrow_mut();
            fk.used = tick;
            if fk.generation != folder.generation() || fk.by_uid.len() > n {
                fk.by_uid.retain(|u, _| folder.get(*u).is_some());
                fk.bytes = fk.by_uid.values().map(|k| k.bytes()).sum();
                fk.generation = folder.generation();
            }
            fk.learning = fk.bytes <= MAX_BYTES;
        }
        // over the process's bound: drop the least recently used other folders
        let mut total: usize = c.folders.values().map(|f| f.borrow().bytes).sum();
        while total > MAX_BYTES {
            let Some(victim) = c
                .folders
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, f)| f.borrow().used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(f) = c.folders.remove(&victim) {
                total -= f.borrow().bytes;
            }
        }
        Some(shared)
    })
}

/// The keys of message `uid` (header `header`): from `cache` when there, else parsed
/// (and kept there).
pub fn keys_of(cache: Option<&Shared>, uid: u32, header: &[u8], internal_date: i64) -> Rc<Keys> {
    if let Some(k) = cache.and_then(|c| c.borrow().get(uid)) {
        return k;
    }
    let k = Rc::new(Keys::parse(header, internal_date));
    if let Some(c) = cache {
        c.borrow_mut().put(uid, k.clone());
    }
    k
}
