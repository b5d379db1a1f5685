//! How a [`Folder`] state follows the Maildir and keeps its index ([`super::index`]).
//!
//! [`Folder::sync`] reads `new/` (moving what it finds to `cur/`) and `cur/`, gives UIDs
//! to names `dovecot-uidlist` does not know yet (under the uidlist lock, writing the `G`
//! of a message copied or moved in), then, holding the index lock, reads what other
//! processes appended to the index and compares the folder's messages with what the
//! index says: a message new to the index, or whose flags the index has otherwise (a
//! rename by Dovecot, a user's `mv`, another process that crashed before writing its
//! record), gets a new MODSEQ; a message the index has that is gone is expunged at a new
//! MODSEQ. Those records are appended in one write. Postern's own changes
//! ([`Folder::set_flags`], [`Folder::expunge`]) append theirs the same way
//! ([`Folder::record`]).
//!
//! When the index cannot be used (missing, damaged, another version or UIDVALIDITY), the
//! folder's messages keep their UIDs (from the uidlist) and GUIDs (the uidlist's `G`
//! field, else made from the base name), and MODSEQs go on from above the highest one that
//! could have been given: the index's own (when readable), the uidlist's `M` and the
//! clock in microseconds. The index is then written whole.
//!
//! A new UIDVALIDITY (a new folder, or one whose uidlist was lost) is at least one above
//! the last one given in the mailbox, kept in the root's `dovecot-uidvalidity` (hex, as
//! Dovecot keeps it), so DELETE and CREATE of a name within one second differ.

use super::cache;
use super::flags::{self, Flags};
use super::folder::{Folder, MEMORY_EXPUNGES, Message};
use super::index::{self, Change, Record};
use super::uidlist::{self, Lock, UidList};
use super::{Result, io_err};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Records appended to the uidlist before it is written whole again (at least; more when
/// the folder has more messages).
const LIST_APPENDS: usize = 1024;

/// The mailbox root's record of the last UIDVALIDITY given.
pub const UIDVALIDITY_FILE: &str = "dovecot-uidvalidity";

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The mailbox root of a folder directory: INBOX's is itself, `.name`'s its parent.
fn root_of(folder: &Path) -> &Path {
    let sub = folder
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    match folder.parent() {
        Some(p) if sub => p,
        _ => folder,
    }
}

/// A UIDVALIDITY at least `at_least`, above the last one given in the mailbox of
/// `folder`, recorded (best effort; the caller holds the folder's uidlist lock).
fn next_uid_validity(folder: &Path, at_least: u32) -> u32 {
    let root = root_of(folder);
    let path = root.join(UIDVALIDITY_FILE);
    let last = fs::read_to_string(&path)
        .ok()
        .and_then(|t| u32::from_str_radix(t.trim(), 16).ok())
        .unwrap_or(0);
    let v = at_least.max(last.saturating_add(1)).max(1);
    let tmp = root.join(format!(".{UIDVALIDITY_FILE}.{}.tmp", std::process::id()));
    let res = fs::write(&tmp, format!("{v:08x}")).and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        tracing::warn!("{}: {e}", path.display());
    }
    v
}

fn record_of(m: &Message) -> Record {
    m.record()
}

impl Folder {
    /// Brings this view up to date with the folder on disk.
    pub fn sync(&mut self) -> Result<()> {
        // what the watch reports from here on comes after this look
        if let Some(dirty) = self.watch.as_mut() {
            *dirty = false;
        }
        let stamp = self.stamp();
        self.read_keywords();
        let mut on_disk = self.scan()?;
        let read = uidlist::read_with_id(&self.path).map_err(|e| io_err("read uidlist", &self.path, e))?;
        self.list_at = read.as_ref().map(|(_, id)| *id);
        let mut list = read.map(|(l, _)| l);
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
                None => self.new_uidlist(),
            };
            let known: std::collections::HashSet<String> = l.entries.iter().map(|(_, n)| n.clone()).collect();
            l.entries.retain(|(_, n)| on_disk.contains_key(n));
            let kept: std::collections::HashSet<u32> = l.entries.iter().map(|(u, _)| *u).collect();
            l.ext.retain(|u, _| kept.contains(u));
            let mut fresh: Vec<&String> = on_disk.keys().filter(|k| !known.contains(*k)).collect();
            fresh.sort_by(|a, b| maildir_order(a, b));
            for name in fresh {
                let uid = l.next_uid;
                l.entries.push((uid, name.clone()));
                if let Some(g) = self.pending_guids.remove(name.as_str()) {
                    l.set_guid(uid, g);
                }
                l.next_uid = l.next_uid.saturating_add(1);
            }
            l.modseq = l.modseq.max(self.highest_modseq);
            self.list_at = Some(
                lock.commit_with_id(&l)
                    .map_err(|e| io_err("write uidlist", &self.path, e))?,
            );
            self.list_appends = 0;
            list = Some(l);
        }
        let list = list.unwrap_or_default();
        if list.uid_validity != self.uid_validity {
            // another incarnation: nothing of the old state holds
            self.messages = Vec::new();
            self.forget_envelopes();
            self.ghosts.clear();
            self.ghost_files.clear();
            self.expunged = Vec::new();
            self.floor = 0;
            self.index_at = None;
            self.generation += 1;
        }
        self.uid_validity = list.uid_validity;
        self.next_uid = list.next_uid;
        self.mailbox_guid.clone_from(&list.guid);
        self.reconcile(&list, &mut on_disk);
        self.stamp = Some(stamp);
        Ok(())
    }

    /// A message this state has just put into `cur/` itself as `file` (`size` with CRLF
    /// line ends, internal date `date`): its UID, given under the uidlist lock without a
    /// rescan when the uidlist holds nothing this state does not know yet (its UIDNEXT is
    /// the state's), and recorded in the index; else the UID a sync gives it.
    ///
    /// Durable before it returns: the rename into `cur/` (an fsync of `cur/`) and the
    /// uidlist record giving the UID (its fdatasync: a UID told to a client is never given
    /// to another message after a crash), as Dovecot does. `cur/`'s fsync runs on a
    /// thread of its own while the record's fdatasync runs here ([`Lock::append_then`]):
    /// the two wait for the disk together (APPEND's sync path -21 % median, BENCHMARKS.md
    /// "The mailbox store, session 8").
    pub(super) fn adopt(&mut self, base: &str, file: String, fl: Flags, size: u64, date: i64) -> Result<u32> {
        let cur = self.path.join("cur");
        let sync_dir = || {
            if let Err(e) = postern_util::safe_open::fsync_dir(&cur) {
                tracing::warn!("fsync {}: {e}", cur.display());
            }
        };
        if self.stamp.is_none() || self.messages.last().is_some_and(|m| m.uid >= self.next_uid) {
            sync_dir();
            return self.uid_of(base);
        }
        let lock = match Lock::acquire(&self.path) {
            Ok(l) => l,
            Err(e) => {
                sync_dir();
                return Err(io_err("lock", &self.path, e));
            }
        };
        let uid = self.next_uid;
        let guid = self.pending_guids.remove(base);
        let mut record = UidList::default();
        if let Some(g) = guid {
            record.set_guid(uid, g);
        }
        // the uidlist as this state left it: one record appended (Dovecot's way), until
        // the appended records are as many as the messages; then written whole
        let io = |e| io_err("write uidlist", &self.path, e);
        let mut dir_synced = false;
        let appended = match self.list_at {
            Some(at) if self.list_appends < self.messages.len().max(LIST_APPENDS) => lock
                .append_then(at, &record.record_line(uid, base), || {
                    sync_dir();
                    dir_synced = true;
                })
                .map_err(io)?,
            _ => None,
        };
        if !dir_synced {
            sync_dir();
        }
        match appended {
            Some(id) => {
                self.list_at = Some(id);
                self.list_appends += 1;
                drop(lock);
            }
            None => {
                let read = uidlist::read_with_id(&self.path).map_err(|e| io_err("read uidlist", &self.path, e))?;
                let Some((mut l, _)) =
                    read.filter(|(l, _)| l.uid_validity == self.uid_validity && l.next_uid == self.next_uid)
                else {
                    drop(lock);
                    if let Some(g) = guid {
                        self.pending_guids.insert(base.to_string(), g);
                    }
                    return self.uid_of(base);
                };
                // nobody gave a UID since this state's last sync: a record of a message it
                // does not hold is of one gone
                l.entries.retain(|(u, _)| self.get(*u).is_some());
                let kept: std::collections::HashSet<u32> = l.entries.iter().map(|(u, _)| *u).collect();
                l.ext.retain(|u, _| kept.contains(u));
                l.entries.push((uid, base.to_string()));
                if let Some(g) = guid {
                    l.set_guid(uid, g);
                }
                l.next_uid = uid.saturating_add(1);
                l.modseq = l.modseq.max(self.highest_modseq);
                self.list_at = Some(lock.commit_with_id(&l).map_err(io)?);
                self.list_appends = 0;
            }
        }
        self.next_uid = uid.saturating_add(1);
        self.messages.push(Message {
            uid,
            guid: guid.unwrap_or_else(|| index::guid_of(base)),
            base: base.to_string(),
            file,
            flags: fl,
            size,
            date,
            modseq: 0,
            saved: now_secs(),
        });
        self.record(&[uid], &[]);
        Ok(uid)
    }

    /// A new uidlist for a folder that has none (or an unusable one).
    fn new_uidlist(&self) -> UidList {
        let mut l = UidList::new();
        // The old list's UIDVALIDITY was given no later than the file was last
        // written: one past that differs from it even when it cannot be read.
        let floor = fs::metadata(self.path.join(uidlist::FILE))
            .map(|m| m.mtime().max(0) as u32 + 1)
            .unwrap_or(0)
            .max(self.uid_validity + 1);
        l.uid_validity = next_uid_validity(&self.path, l.uid_validity.max(floor));
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

    /// Locks the index and brings `self.messages` up to what it says (reading all of it
    /// the first time, or when it was replaced; what others appended since otherwise).
    /// `Ok(None)` when the index cannot be used at all (then changes live in memory only).
    /// The bool: the state must be written whole (it was rebuilt or damaged).
    fn lock_index(&mut self) -> Option<(index::Locked, bool)> {
        let (mut lk, fresh) = match index::Locked::open(&self.path, self.uid_validity) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("{}: index: {e}", self.path.join(index::FILE).display());
                return None;
            }
        };
        let meta = lk.file.metadata().ok()?;
        let here = (meta.dev(), meta.ino());
        match self.index_at {
            Some((_, _, at)) if meta.len() < at => {
                // cut below what this state read (truncated or rewritten in place by
                // something else): written whole again
                tracing::warn!(
                    "{}: shorter ({} bytes) than when last read ({at}), rewriting it",
                    self.path.join(index::FILE).display(),
                    meta.len()
                );
                self.index_at = None;
                // MODSEQs from above any the lost part may have given
                self.highest_modseq = self.highest_modseq.max(now_micros());
                Some((lk, true))
            }
            Some((dev, ino, at)) if (dev, ino) == here => {
                let mut l = index::Loaded {
                    offset: at,
                    ..index::Loaded::default()
                };
                let applied = index::read_tail(&mut lk.file, &mut l).unwrap_or_default();
                self.index_at = Some((dev, ino, l.offset));
                self.index_records += applied.len();
                if l.damaged {
                    tracing::warn!(
                        "{}: damaged records after offset {at}, rewriting it",
                        self.path.join(index::FILE).display()
                    );
                    return Some((lk, true));
                }
                self.apply(&applied);
                Some((lk, false))
            }
            _ => {
                let read = if fresh {
                    Err(index::Unusable::Missing)
                } else {
                    index::read_open(&mut lk.file, self.uid_validity)
                };
                let (loaded, rebuild) = match read {
                    Ok(l) => {
                        let damaged = l.damaged;
                        if damaged {
                            tracing::warn!(
                                "{}: damaged records, rebuilt from the messages",
                                self.path.join(index::FILE).display()
                            );
                        }
                        (Some(l), damaged)
                    }
                    Err(index::Unusable::Missing) => (None, true),
                    Err(why) => {
                        tracing::info!(
                            "{}: unusable ({why:?}), rebuilt from the messages",
                            self.path.join(index::FILE).display()
                        );
                        (None, true)
                    }
                };
                let list_modseq = uidlist::read(&self.path).ok().flatten().map_or(0, |l| l.modseq);
                match loaded {
                    Some(l) => {
                        self.highest_modseq = self.highest_modseq.max(l.highest_modseq);
                        if self.expunged.is_empty() {
                            self.floor = self.floor.max(l.floor);
                            self.expunged = l.expunged;
                        }
                        self.index_records = l.records;
                        self.recent_from = self.recent_from.max(l.recent_from);
                        self.index_at = Some((here.0, here.1, l.offset));
                        // what the index says replaces what memory held of the same UIDs;
                        // the others wait for the next reconciliation
                        for (uid, r) in l.messages {
                            match self.messages.binary_search_by_key(&uid, |m| m.uid) {
                                Ok(i) => {
                                    let m = &mut self.messages[i];
                                    m.guid = r.guid;
                                    m.modseq = r.modseq;
                                    m.saved = r.saved;
                                }
                                Err(_) => {
                                    self.index_new.insert(uid, r);
                                }
                            }
                        }
                    }
                    None => self.index_at = None,
                }
                if rebuild {
                    // from above anything that could have been given
                    self.highest_modseq = self.highest_modseq.max(list_modseq).max(now_micros());
                }
                Some((lk, rebuild))
            }
        }
    }

    /// Applies index records appended by others to the messages this state holds.
    fn apply(&mut self, changes: &[Change]) {
        for c in changes {
            match *c {
                Change::Message(uid, r) => {
                    self.highest_modseq = self.highest_modseq.max(r.modseq);
                    if let Ok(i) = self.messages.binary_search_by_key(&uid, |m| m.uid) {
                        let m = &mut self.messages[i];
                        if m.flags != r.flags {
                            m.file = flags::cur_name(&m.base, r.flags);
                            m.flags = r.flags;
                        }
                        m.modseq = r.modseq;
                        m.guid = r.guid;
                        m.saved = r.saved;
                        self.generation += 1;
                    } else {
                        self.index_new.insert(uid, r);
                    }
                }
                Change::Recent(uid) => self.recent_from = self.recent_from.max(uid),
                Change::Expunge(uid, modseq) => {
                    self.highest_modseq = self.highest_modseq.max(modseq);
                    // the memory's log lists what this state's sessions may have seen
                    if let Ok(i) = self.messages.binary_search_by_key(&uid, |m| m.uid) {
                        let m = self.messages.remove(i);
                        self.bury(m);
                        self.generation += 1;
                        self.log_expunge(modseq, uid);
                    }
                    self.index_new.remove(&uid);
                }
            }
        }
    }

    fn log_expunge(&mut self, modseq: u64, uid: u32) {
        self.expunged.push((modseq, uid));
        if self.expunged.len() > MEMORY_EXPUNGES {
            let drop = self.expunged.len() - MEMORY_EXPUNGES / 2;
            self.floor = self.floor.max(self.expunged[drop - 1].0);
            self.expunged.drain(..drop);
        }
    }

    /// Compares the Maildir (the uidlist's UIDs, the files found) with the messages the
    /// state holds after reading the index, records the differences under new MODSEQs.
    fn reconcile(&mut self, list: &UidList, on_disk: &mut HashMap<String, (String, Flags)>) {
        let locked = self.lock_index();
        let rebuild = locked.as_ref().is_none_or(|(_, r)| *r);
        let mut prev: HashMap<u32, Message> = std::mem::take(&mut self.messages)
            .into_iter()
            .map(|m| (m.uid, m))
            .collect();
        // sizes from the old cache when there is no index to say (an upgrade)
        let old_cache = if rebuild {
            cache::read(&self.path, self.uid_validity, false)
        } else {
            HashMap::new()
        };
        let modseq = self.highest_modseq + 1;
        let mut changes = Vec::new();
        let mut messages = Vec::with_capacity(list.entries.len());
        let now = now_secs();
        let mut learned = false;
        for (uid, base) in &list.entries {
            let Some((file, fl)) = on_disk.remove(base) else {
                continue;
            };
            let mut held = prev.remove(uid);
            if let Some(m) = held.take_if(|m| !m.base.is_empty() && m.base != *base) {
                // the UID now names another file (a replica adopted its peer's numbering
                // after a conflict): the message held is gone, this one is new
                changes.push(Change::Expunge(*uid, modseq));
                self.log_expunge(modseq, *uid);
                self.bury(m);
                self.index_new.remove(uid);
            }
            let known = held.or_else(|| {
                // new to this state, known to the index
                learned = true;
                // (unless the uidlist gives the UID to another message since the index
                // record: a reused UID, see above)
                let r = self.index_new.remove(uid);
                r.filter(|r| list.guid_of(*uid).is_none_or(|g| g == r.guid))
                    .map(|r| Message {
                        uid: *uid,
                        base: String::new(),
                        file: String::new(),
                        flags: r.flags,
                        size: r.size,
                        date: r.date,
                        guid: r.guid,
                        modseq: r.modseq,
                        saved: r.saved,
                    })
            });
            let m = match known {
                Some(mut m) => {
                    if m.flags != fl || rebuild {
                        if m.flags != fl {
                            m.modseq = modseq;
                        }
                        m.flags = fl;
                        changes.push(Change::Message(*uid, record_of(&m)));
                    }
                    if m.base.is_empty() {
                        m.base = base.clone();
                    }
                    m.file = file;
                    m
                }
                None => {
                    let (size, date) = match old_cache.get(uid) {
                        Some(e) => (e.size, e.date),
                        None => match self.measure(base, &file) {
                            Some(x) => x,
                            None => continue, // vanished between scan and stat
                        },
                    };
                    let m = Message {
                        uid: *uid,
                        guid: list.guid_of(*uid).unwrap_or_else(|| index::guid_of(base)),
                        base: base.clone(),
                        file,
                        flags: fl,
                        size,
                        date,
                        modseq,
                        saved: now,
                    };
                    changes.push(Change::Message(*uid, record_of(&m)));
                    m
                }
            };
            messages.push(m);
        }
        let mut gone: Vec<Message> = prev.into_values().collect();
        gone.sort_unstable_by_key(|m| m.uid);
        for m in gone {
            changes.push(Change::Expunge(m.uid, modseq));
            self.log_expunge(modseq, m.uid);
            self.bury(m);
        }
        // what the index has that the Maildir lacks is gone too, unless its UID was given
        // after the uidlist was read here (another process's new message); this state
        // never held it, so only the index's log lists it
        let next = list.next_uid;
        let mut unseen: Vec<u32> = self.index_new.keys().copied().filter(|&u| u < next).collect();
        unseen.sort_unstable();
        changes.extend(unseen.iter().map(|&u| Change::Expunge(u, modseq)));
        self.index_new.retain(|&u, _| u >= next);
        messages.sort_unstable_by_key(|m| m.uid);
        self.messages = messages;
        let any = changes.iter().any(|c| match c {
            Change::Expunge(..) => true,
            Change::Message(_, r) => r.modseq == modseq,
            Change::Recent(_) => false,
        });
        if any {
            self.highest_modseq = modseq;
        }
        if any || learned {
            self.generation += 1;
        }
        if let Some((lk, _)) = locked {
            self.write_index(lk, &changes, rebuild);
        }
    }

    /// Appends `changes` to the locked index, or writes it whole when `whole` or when the
    /// log has grown past twice the messages.
    fn write_index(&mut self, mut lk: index::Locked, changes: &[Change], whole: bool) {
        super::replica::note_expunges(&self.path, changes, &self.ghosts);
        let path = self.path.join(index::FILE);
        let compact = whole || self.index_records + changes.len() > index::COMPACT_ABOVE.max(2 * self.messages.len());
        if compact {
            let keep = self.expunged.len().saturating_sub(index::EXPUNGE_LOG);
            let floor = if keep > 0 {
                self.floor.max(self.expunged[keep - 1].0)
            } else {
                self.floor
            };
            let msgs: Vec<(u32, Record)> = self.messages.iter().map(|m| (m.uid, record_of(m))).collect();
            let bytes = index::format_snapshot(&index::Snapshot {
                uid_validity: self.uid_validity,
                next_uid: self.next_uid,
                highest_modseq: self.highest_modseq,
                floor,
                messages: &msgs,
                expunged: &self.expunged[keep..],
                recent_from: self.recent_from,
            });
            match index::replace(&self.path, &bytes) {
                Ok(()) => {
                    self.index_at = fs::metadata(&path).ok().map(|m| (m.dev(), m.ino(), bytes.len() as u64));
                    self.index_records = 0;
                }
                Err(e) => {
                    tracing::warn!("{}: {e}", path.display());
                    self.index_at = None;
                }
            }
            drop(lk);
            return;
        }
        if changes.is_empty() {
            return;
        }
        match lk.append(changes) {
            Ok(n) => {
                if let Some(at) = self.index_at.as_mut() {
                    at.2 += n;
                }
                self.index_records += changes.len();
            }
            Err(e) => {
                tracing::warn!("{}: {e}", path.display());
                // read it whole next time
                self.index_at = None;
            }
        }
    }

    /// Records changes this process made itself (flags of `set`, `expunged` UIDs) at one
    /// new MODSEQ, reading others' records first.
    pub(super) fn record(&mut self, set: &[u32], expunged: &[u32]) {
        if set.is_empty() && expunged.is_empty() {
            return;
        }
        let locked = self.lock_index();
        let modseq = self.highest_modseq + 1;
        self.highest_modseq = modseq;
        self.generation += 1;
        let mut changes = Vec::with_capacity(set.len() + expunged.len());
        for &uid in set {
            if let Ok(i) = self.messages.binary_search_by_key(&uid, |m| m.uid) {
                self.messages[i].modseq = modseq;
                changes.push(Change::Message(uid, record_of(&self.messages[i])));
            }
        }
        for &uid in expunged {
            changes.push(Change::Expunge(uid, modseq));
            self.log_expunge(modseq, uid);
        }
        if let Some((lk, rebuild)) = locked {
            self.write_index(lk, &changes, rebuild);
        }
    }

    /// Takes the messages still recent (IMAP `\Recent`: from the first UID no session has
    /// seen up to the last one this state knows) for one session, recording in the index
    /// that they are taken so no other session, of any process, gets them; returns the
    /// UID range taken (half-open; empty when none).
    pub fn claim_recent(&mut self) -> (u32, u32) {
        let locked = self.lock_index();
        let from = self.recent_from.max(1);
        let to = self.next_uid;
        if from >= to {
            return (to, to);
        }
        self.recent_from = to;
        if let Some((lk, rebuild)) = locked {
            self.write_index(lk, &[Change::Recent(to)], rebuild);
        }
        (from, to)
    }

    /// The first UID still recent (no session has seen it).
    pub fn recent_from(&self) -> u32 {
        self.recent_from.max(1)
    }

    /// base name → (file name in cur/, flags); moves new/ files into cur/ on the way.
    pub(super) fn scan(&self) -> Result<HashMap<String, (String, Flags)>> {
        let new = self.path.join("new");
        let cur = self.path.join("cur");
        for name in message_names(&new)? {
            let (base, fl) = flags::split_name(&name);
            let target = flags::cur_name(base, fl);
            match fs::rename(new.join(&name), cur.join(&target)) {
                Ok(()) => {
                    self.expect(false, "new", &name);
                    self.expect(true, "cur", &target);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("rename", &new.join(&name), e)),
            }
        }
        let mut out = HashMap::new();
        for name in message_names(&cur)? {
            let (base, fl) = flags::split_name(&name);
            out.insert(base.to_string(), (name.clone(), fl));
        }
        Ok(out)
    }

    /// (size with CRLF line ends, internal date) of a message file.
    fn measure(&self, base: &str, file: &str) -> Option<(u64, i64)> {
        let path: PathBuf = self.path.join("cur").join(file);
        let meta = fs::metadata(&path).ok()?;
        let size = match name_field(base, "W") {
            Some(w) => w,
            None => cache::crlf_size(&fs::read(&path).ok()?),
        };
        Some((size, meta.mtime()))
    }
}

/// The names in a Maildir directory that can be messages: UTF-8, not starting with `.`.
fn message_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err("read", dir, e))? {
        let Ok(entry) = entry else { continue };
        if let Some(name) = entry.file_name().to_str()
            && !name.starts_with('.')
        {
            out.push(name.to_string());
        }
    }
    Ok(out)
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
