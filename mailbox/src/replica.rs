//! What the replicator needs of the store beyond what IMAP does: list a folder's messages
//! with their GUIDs, UIDs, flags (keywords by name) and MODSEQs; add messages under a
//! UID, base name, flags and date chosen elsewhere (by the replica that has them); give a
//! folder a chosen UIDVALIDITY; create a folder with one; and keep the replicator's
//! per-peer state file and lock in the mailbox root.
//!
//! A message placed here ([`place`]) gets exactly the UID asked for, or none: under the
//! folder's uidlist lock, a UID below the folder's UIDNEXT is refused ([`Placed::Taken`]:
//! another message may have it, or had it), and a base name already in `new/` or `cur/` is
//! not written again ([`Placed::Exists`]: the hub's copy of the same message came first).
//! The files of a batch are written in `tmp/` with their dates, made durable together (one
//! `syncfs`, where an fsync a message would cost a disk flush each) and renamed into
//! `cur/` while the uidlist lock is held, and the uidlist (with the message's GUID in its `G` field) is
//! committed before the lock is released, so no other process can give the file another
//! UID. The index learns of it at the folder's next sync, which [`place`] runs.
//!
//! # The GUID expunge log
//!
//! The index's expunge records name UIDs only; the merge must also know *which message*
//! was expunged (a copy of the same message may come back from a hub, or sit under another
//! UID on the other replica). So every expunge the index records is also appended, by the
//! process that records it and under the index lock, to the folder's `postern-expunged`:
//! lines `<uid> <modseq> <guid hex>`. When it grows past [`EXPUNGE_LOG_MAX`] lines, the
//! older half is dropped (rewritten through `tmp/`).

use super::flags::{self, Flags};
use super::uidlist::{self, Lock, UidList};
use super::{Folder, MailboxError, Result, Store, io_err};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The replicator's state file for peer `<name>` in the mailbox root: `postern-replica-<name>`.
pub const STATE_PREFIX: &str = "postern-replica-";
/// The replicator's mark in the mailbox root that this replica served the user while a
/// peer was unreachable, since the last completed merge ([`mark_alone`]).
pub const ALONE_FILE: &str = "postern-alone";
/// The replicator's per-user lock file in the mailbox root.
pub const LOCK_FILE: &str = "postern-replica.lock";
/// Largest state file read.
pub const MAX_STATE: u64 = 64 * 1024 * 1024;
/// Longest base name accepted from a peer.
pub const MAX_BASE: usize = 200;
/// The folder's GUID expunge log.
pub const EXPUNGE_LOG: &str = "postern-expunged";
/// Lines the expunge log keeps at most (about 60 bytes each).
pub const EXPUNGE_LOG_MAX: usize = 8192;

/// One message as the replicas compare it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageInfo {
    /// UID.
    pub uid: u32,
    /// GUID as 32 hex digits.
    pub guid: String,
    /// Maildir base name (the POP3 UIDL).
    pub base: String,
    /// System flags ([`flags::SEEN`] | ...).
    pub system: u8,
    /// Keywords by name.
    pub keywords: Vec<String>,
    /// MODSEQ of its last change on this replica.
    pub modseq: u64,
    /// Internal date, seconds since the epoch.
    pub date: i64,
    /// Size with CRLF line ends.
    pub size: u64,
}

/// A folder as the replicas compare it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FolderInfo {
    /// Name (`INBOX`, `Sent`, `Lists.rust`).
    pub name: String,
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// UIDNEXT.
    pub next_uid: u32,
    /// HIGHESTMODSEQ.
    pub highest_modseq: u64,
    /// Number of messages.
    pub messages: u32,
    /// The uidlist's mailbox GUID (IMAP's MAILBOXID is `F` and this).
    #[serde(default)]
    pub guid: String,
    /// The special uses it was created with (`\\Sent`, …), for a name that has none of its
    /// own ([`Store::special_uses`]); filled in by the caller, which has the store.
    #[serde(default)]
    pub special_use: Vec<String>,
}

/// What [`place`] did with one message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Placed {
    /// Added under the UID asked for.
    Placed,
    /// The UID is below the folder's UIDNEXT: not added.
    Taken,
    /// A message of that base name is already in the folder (under this UID, if known):
    /// not added.
    Exists {
        /// Its UID.
        uid: Option<u32>,
    },
    /// Refused (bad base name, bad keyword): not added.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A message to add with [`place`].
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// Its description (UID, GUID, base name, flags, date).
    pub info: MessageInfo,
    /// Its bytes as stored on the other replica.
    pub bytes: Vec<u8>,
}

/// Whether `base` can be a message's base name here: printable ASCII without `/`, `:`,
/// a leading `.`, and not too long.
pub fn valid_base(base: &str) -> bool {
    !base.is_empty()
        && base.len() <= MAX_BASE
        && !base.starts_with('.')
        && base.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// The folder's description (opening and syncing it).
pub fn folder_info(name: &str, f: &Folder) -> FolderInfo {
    FolderInfo {
        name: name.to_string(),
        uid_validity: f.uid_validity(),
        next_uid: f.next_uid(),
        highest_modseq: f.highest_modseq(),
        messages: f.messages().len() as u32,
        guid: f.mailbox_guid().to_string(),
        special_use: Vec::new(),
    }
}

/// The special uses `name` was created with, when its name gives it none (those are the
/// same on every replica).
pub fn created_special_uses(store: &Store, name: &str) -> Vec<String> {
    if Store::special_use(name).is_some() {
        return Vec::new();
    }
    store.special_uses(name).into_iter().map(str::to_string).collect()
}

/// Gives folder `name` the mailbox GUID `guid` (letters and digits, at most 64: a peer's
/// MAILBOXID) and the special uses `uses` (those of [`super::CREATE_SPECIAL_USE`]; none
/// removes them), as a replica that created the folder itself adopts its peer's.
pub fn set_folder_meta(store: &Store, name: &str, guid: &str, uses: &[String]) -> Result<()> {
    let dir = store.folder_path(name)?;
    if !guid.is_empty() {
        if guid.len() > 64 || !guid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MailboxError::BadName(format!("mailbox GUID {guid}")));
        }
        let lock = Lock::acquire(&dir).map_err(|e| io_err("lock", &dir, e))?;
        let mut list = uidlist::read(&dir)
            .map_err(|e| io_err("read uidlist", &dir, e))?
            .ok_or_else(|| io_err("read uidlist", &dir, io::Error::other("no uidlist")))?;
        if list.guid != guid {
            list.guid = guid.to_string();
            lock.commit(&list).map_err(|e| io_err("write uidlist", &dir, e))?;
        }
    }
    if Store::special_use(name).is_none() {
        let uses: Vec<&str> = super::CREATE_SPECIAL_USE
            .iter()
            .copied()
            .filter(|u| uses.iter().any(|g| g.eq_ignore_ascii_case(u)))
            .collect();
        let path = dir.join(super::SPECIAL_USE_FILE);
        let res = if uses.is_empty() {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            postern_util::safe_open::write_atomic(&dir, super::SPECIAL_USE_FILE, 0o600, |f| {
                f.write_all(format!("{}\n", uses.join(" ")).as_bytes())
            })
            .map_err(|e| io::Error::other(e.to_string()))
        };
        res.map_err(|e| io_err("write special use", &dir, e))?;
    }
    Ok(())
}

/// Keyword names of `fl` in `f`'s table.
fn keyword_names(f: &Folder, fl: Flags) -> Vec<String> {
    f.keywords()
        .iter()
        .enumerate()
        .take(flags::MAX_KEYWORDS)
        .filter(|(i, k)| fl.keywords & (1 << i) != 0 && !k.is_empty())
        .map(|(_, k)| k.clone())
        .collect()
}

/// Up to `limit` messages with UIDs above `after`, in UID order.
pub fn list(f: &Folder, after: u32, limit: usize) -> Vec<MessageInfo> {
    let start = f.messages().partition_point(|m| m.uid <= after);
    f.messages()[start..]
        .iter()
        .take(limit)
        .map(|m| MessageInfo {
            uid: m.uid,
            guid: super::index::guid_hex(m.guid),
            base: m.base.clone(),
            system: m.flags.system & !flags::RECENT,
            keywords: keyword_names(f, m.flags),
            modseq: m.modseq,
            date: m.date,
            size: m.size,
        })
        .collect()
}

/// The flags for `system` and keyword names in `f`'s table (keywords added to it).
pub fn flags_for(f: &mut Folder, system: u8, keywords: &[String]) -> Result<Flags> {
    let mut fl = Flags {
        system: system & !flags::RECENT,
        keywords: 0,
    };
    for k in keywords {
        if let Some(bit) = f.keyword_bit(k, true)? {
            fl.keywords |= bit;
        }
    }
    Ok(fl)
}

/// A message's bytes as stored, at most `max` bytes (`None`: gone; a larger one is an
/// error).
pub fn read(f: &mut Folder, uid: u32, max: u64) -> Result<Option<Vec<u8>>> {
    let Some(file) = f.open_message(uid)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err("read", f.path(), e))?;
    if bytes.len() as u64 > max {
        return Err(io_err(
            "read",
            f.path(),
            io::Error::other(format!("message {uid} is larger than {max} bytes")),
        ));
    }
    Ok(Some(bytes))
}

/// Sets the flags of messages (`(uid, system, keywords)`); returns the folder's
/// HIGHESTMODSEQ after.
pub fn set_flags(f: &mut Folder, changes: &[(u32, u8, Vec<String>)]) -> Result<u64> {
    let mut out = Vec::with_capacity(changes.len());
    for (uid, system, kw) in changes {
        let fl = flags_for(f, *system, kw)?;
        // keep \Recent as it is (it is not replicated)
        let recent = f.get(*uid).map_or(0, |m| m.flags.system & flags::RECENT);
        out.push((
            *uid,
            Flags {
                system: fl.system | recent,
                keywords: fl.keywords,
            },
        ));
    }
    f.set_flags_many(&out)?;
    Ok(f.highest_modseq())
}

/// Base names in `new/` and `cur/`.
fn bases_on_disk(dir: &Path) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        for entry in fs::read_dir(&d).map_err(|e| io_err("read", &d, e))? {
            let Ok(entry) = entry else { continue };
            if let Some(name) = entry.file_name().to_str()
                && !name.starts_with('.')
            {
                out.insert(flags::split_name(name).0.to_string());
            }
        }
    }
    Ok(out)
}

/// Adds messages under the UIDs, base names, flags and dates given (see the module doc);
/// one result per message, in order. The folder is synced after. With `reuse`, a UID
/// below UIDNEXT that no message here has now is given too: for the replica that adopts
/// its peer's numbering after a conflict (the UID it had given is read by no client, see
/// the replicator's merge), never for a folder whose clients may know the old UID.
pub fn place(f: &mut Folder, msgs: &[NewMessage], reuse: bool) -> Result<Vec<Placed>> {
    let mut flags_of = Vec::with_capacity(msgs.len());
    for m in msgs {
        let fl = if valid_base(&m.info.base) {
            flags_for(f, m.info.system, &m.info.keywords).map_err(|e| e.to_string())
        } else {
            Err(format!("bad base name {:?}", m.info.base))
        };
        flags_of.push(fl);
    }
    let dir = f.path().to_path_buf();
    let lock = Lock::acquire(&dir).map_err(|e| io_err("lock", &dir, e))?;
    let mut list = uidlist::read(&dir)
        .map_err(|e| io_err("read uidlist", &dir, e))?
        .ok_or_else(|| io_err("read uidlist", &dir, io::Error::other("no uidlist")))?;
    let mut present = bases_on_disk(&dir)?;
    // a name whose file is gone (expunged, the uidlist not rewritten since) is free again
    let stale: HashSet<u32> = list
        .entries
        .iter()
        .filter(|(_, b)| !present.contains(b))
        .map(|(u, _)| *u)
        .collect();
    if !stale.is_empty() {
        list.entries.retain(|(u, _)| !stale.contains(u));
        list.ext.retain(|u, _| !stale.contains(u));
    }
    let mut known = list
        .map()
        .into_iter()
        .map(|(b, u)| (b.to_string(), u))
        .collect::<std::collections::HashMap<_, _>>();
    let mut out = Vec::with_capacity(msgs.len());
    // written into tmp/ first, made durable together (one syncfs, not an fsync a message),
    // then renamed into cur/ and named in the uidlist
    let mut written: Vec<(usize, std::path::PathBuf, String)> = Vec::new();
    let mut next = list.next_uid;
    let mut taken: HashSet<u32> = list.entries.iter().map(|(u, _)| *u).collect();
    for (i, (m, fl)) in msgs.iter().zip(flags_of).enumerate() {
        let fl = match fl {
            Ok(fl) => fl,
            Err(reason) => {
                out.push(Placed::Refused { reason });
                continue;
            }
        };
        if present.contains(&m.info.base) || known.contains_key(&m.info.base) {
            out.push(Placed::Exists {
                uid: known.get(&m.info.base).copied(),
            });
            continue;
        }
        let free = reuse && !taken.contains(&m.info.uid);
        if (m.info.uid < next && !free) || m.info.uid == u32::MAX {
            out.push(Placed::Taken);
            continue;
        }
        match write_tmp(&dir, &m.info.base, m.info.date, &m.bytes) {
            Ok(tmp) => {
                written.push((i, tmp, flags::cur_name(&m.info.base, fl)));
                next = next.max(m.info.uid + 1);
                taken.insert(m.info.uid);
                present.insert(m.info.base.clone());
                known.insert(m.info.base.clone(), m.info.uid);
                out.push(Placed::Placed);
            }
            Err(e) => out.push(Placed::Refused {
                reason: format!("write: {e}"),
            }),
        }
    }
    if written.is_empty() {
        drop(lock);
        f.sync()?;
        return Ok(out);
    }
    let synced = fs::File::open(dir.join("tmp"))
        .and_then(|d| rustix::fs::syncfs(&d).map_err(io::Error::from))
        .map_err(|e| io_err("syncfs", &dir, e));
    let mut added = false;
    for (i, tmp, cur) in written {
        let m = &msgs[i];
        let res = synced
            .as_ref()
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|()| fs::rename(&tmp, dir.join("cur").join(&cur)));
        match res {
            Ok(()) => {
                list.entries.push((m.info.uid, m.info.base.clone()));
                list.set_guid(m.info.uid, super::index::parse_guid(&m.info.guid));
                list.next_uid = list.next_uid.max(m.info.uid + 1);
                added = true;
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                if let Some(p) = out.get_mut(i) {
                    *p = Placed::Refused {
                        reason: format!("place: {e}"),
                    };
                }
            }
        }
    }
    if added {
        // a reused UID goes to its place: the uidlist's records are read in UID order
        list.entries.sort_by_key(|(u, _)| *u);
        let _ = postern_util::safe_open::fsync_dir(&dir.join("cur"));
        lock.commit(&list).map_err(|e| io_err("write uidlist", &dir, e))?;
    } else {
        drop(lock);
    }
    f.sync()?;
    Ok(out)
}

/// Gives messages new UIDs, `(old, new)`, each new one at or above the folder's UIDNEXT,
/// in increasing order: the file stays, the uidlist maps its name to the new UID (the
/// GUID with it). Other views see the old UID expunged and a new message. Per pair whether
/// it was done (not: the old UID is gone, or the new one is taken). The folder is synced
/// after. With `reuse`, a new UID below UIDNEXT that no message has now is given too (see
/// [`place`]).
pub fn renumber(f: &mut Folder, moves: &[(u32, u32)], reuse: bool) -> Result<Vec<bool>> {
    let dir = f.path().to_path_buf();
    let lock = Lock::acquire(&dir).map_err(|e| io_err("lock", &dir, e))?;
    let mut list = uidlist::read(&dir)
        .map_err(|e| io_err("read uidlist", &dir, e))?
        .ok_or_else(|| io_err("read uidlist", &dir, io::Error::other("no uidlist")))?;
    let present = bases_on_disk(&dir)?;
    let mut out = Vec::with_capacity(moves.len());
    let mut changed = false;
    for &(old, new) in moves {
        let free = if reuse {
            // a record whose file is gone (expunged, the uidlist not rewritten since)
            // frees its UID, as in `place`
            if let Some(j) = list.entries.iter().position(|(u, b)| *u == new && !present.contains(b)) {
                list.entries.remove(j);
                list.ext.remove(&new);
            }
            !list.entries.iter().any(|(u, _)| *u == new)
        } else {
            new >= list.next_uid
        };
        let at = list.entries.iter().position(|(u, b)| *u == old && present.contains(b));
        let Some(i) = at.filter(|_| free && new != u32::MAX) else {
            out.push(false);
            continue;
        };
        let (_, base) = list.entries.remove(i);
        let guid = list
            .guid_of(old)
            .or_else(|| f.get(old).map(|m| m.guid))
            .unwrap_or_else(|| super::index::guid_of(&base));
        list.ext.remove(&old);
        list.entries.push((new, base));
        list.set_guid(new, guid);
        list.next_uid = list.next_uid.max(new + 1);
        changed = true;
        out.push(true);
    }
    if changed {
        list.entries.sort_by_key(|(u, _)| *u);
        lock.commit(&list).map_err(|e| io_err("write uidlist", &dir, e))?;
    } else {
        drop(lock);
    }
    f.sync()?;
    Ok(out)
}

/// Writes one message file into `tmp/` with its date (not yet durable); its path.
fn write_tmp(dir: &Path, base: &str, date: i64, bytes: &[u8]) -> io::Result<std::path::PathBuf> {
    let tmp = dir.join("tmp").join(base);
    let res = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(date.max(0) as u64))
    })();
    match res {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Gives the folder at `dir` the UIDVALIDITY `v` (its messages keep their UIDs; the index
/// is rebuilt at the next sync). For the first contact of two replicas that created the
/// same folder each on its own.
pub fn set_uid_validity(dir: &Path, v: u32) -> Result<()> {
    let lock = Lock::acquire(dir).map_err(|e| io_err("lock", dir, e))?;
    let mut list = uidlist::read(dir)
        .map_err(|e| io_err("read uidlist", dir, e))?
        .unwrap_or_else(UidList::new);
    if list.uid_validity == v {
        return Ok(());
    }
    list.uid_validity = v.max(1);
    lock.commit(&list).map_err(|e| io_err("write uidlist", dir, e))?;
    raise_last_validity(dir, v);
    Ok(())
}

/// Creates folder `name` with UIDVALIDITY `v` (an existing one is [`MailboxError::Exists`]).
pub fn create_folder(store: &Store, name: &str, v: u32) -> Result<()> {
    store.create(name)?;
    let dir = store.folder_path(name)?;
    let lock = Lock::acquire(&dir).map_err(|e| io_err("lock", &dir, e))?;
    let mut list = uidlist::read(&dir)
        .map_err(|e| io_err("read uidlist", &dir, e))?
        .unwrap_or_else(UidList::new);
    list.uid_validity = v.max(1);
    lock.commit(&list).map_err(|e| io_err("write uidlist", &dir, e))?;
    raise_last_validity(&dir, v);
    Ok(())
}

/// Makes the mailbox's record of the last UIDVALIDITY given at least `v`, so a folder
/// created here later never gets one a peer gave.
fn raise_last_validity(folder: &Path, v: u32) {
    let sub = folder
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    let root = match folder.parent() {
        Some(p) if sub => p,
        _ => folder,
    };
    let path = root.join(super::folder_sync::UIDVALIDITY_FILE);
    let last = fs::read_to_string(&path)
        .ok()
        .and_then(|t| u32::from_str_radix(t.trim(), 16).ok())
        .unwrap_or(0);
    if last >= v {
        return;
    }
    let res = postern_util::safe_open::write_atomic(root, super::folder_sync::UIDVALIDITY_FILE, 0o600, |f| {
        f.write_all(format!("{v:08x}").as_bytes())
    });
    if let Err(e) = res {
        tracing::warn!("{}: {e}", path.display());
    }
}

/// Marks that this replica serves the user while a peer cannot be reached: until the next
/// completed merge ([`clear_alone`]) its UIDs are the ones clients may know, and a conflict
/// keeps them (see the replicator's merge). Durable (a restart keeps it).
pub fn mark_alone(store: &Store) -> Result<()> {
    if is_alone(store) {
        return Ok(());
    }
    postern_util::safe_open::write_atomic(store.root(), ALONE_FILE, 0o600, |f| f.write_all(b"1\n"))
        .map_err(|e| io_err("write", &store.root().join(ALONE_FILE), io::Error::other(e.to_string())))
}

/// Whether [`mark_alone`] marked the user since the last [`clear_alone`].
pub fn is_alone(store: &Store) -> bool {
    fs::symlink_metadata(store.root().join(ALONE_FILE)).is_ok_and(|m| m.is_file())
}

/// Removes the mark of [`mark_alone`] (a merge with the peer completed).
pub fn clear_alone(store: &Store) -> Result<()> {
    match fs::remove_file(store.root().join(ALONE_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &store.root().join(ALONE_FILE), e)),
        _ => Ok(()),
    }
}

/// The replicator's state for `peer` in the mailbox root (`None` when there is none).
pub fn read_state(store: &Store, peer: &str) -> Result<Option<Vec<u8>>> {
    let path = store.root().join(state_name(peer));
    let file = match postern_util::safe_open::open_read(&path, &postern_util::safe_open::Expect::any()) {
        Ok(f) => f,
        Err(postern_util::safe_open::SafeOpenError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(io_err("open", &path, io::Error::other(e.to_string()))),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err("read", &path, e))?;
    if bytes.len() as u64 > MAX_STATE {
        return Err(io_err("read", &path, io::Error::other("state file too large")));
    }
    Ok(Some(bytes))
}

/// Replaces the replicator's state for `peer` (durably).
pub fn write_state(store: &Store, peer: &str, bytes: &[u8]) -> Result<()> {
    postern_util::safe_open::write_atomic(store.root(), &state_name(peer), 0o600, |f| f.write_all(bytes)).map_err(|e| {
        io_err(
            "write",
            &store.root().join(state_name(peer)),
            io::Error::other(e.to_string()),
        )
    })
}

/// The state file's name for `peer`: its name with anything but letters, digits, `.`
/// and `-` as `_`.
pub fn state_name(peer: &str) -> String {
    let clean: String = peer
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{STATE_PREFIX}{clean}")
}

/// The replicator's per-user lock (an exclusive `flock` of the lock file in the mailbox
/// root), released when dropped.
#[derive(Debug)]
pub struct UserLock {
    _file: fs::File,
}

impl UserLock {
    /// Takes the lock, waiting at most `wait`.
    pub fn acquire(store: &Store, wait: Duration) -> Result<UserLock> {
        let path = store.root().join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags_nofollow()
            .open(&path)
            .map_err(|e| io_err("open", &path, e))?;
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(UserLock { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK) if start.elapsed() < wait => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(io_err("lock", &path, io::Error::from(e)));
                }
            }
        }
    }
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
    }
}

/// Renames a folder, refusing INBOX (a replica never renames INBOX: the RENAME of INBOX a
/// client made arrives as a new folder and INBOX's expunges).
pub fn rename_folder(store: &Store, old: &str, new: &str) -> Result<()> {
    if Store::canonical(old) == "INBOX" {
        return Err(MailboxError::Inbox("renamed by a replica"));
    }
    store.rename(old, new)
}

/// Appends the expunges among `changes` to the folder's GUID expunge log, the GUIDs
/// found among `ghosts` (the messages just expunged). Called with the index lock held.
pub(super) fn note_expunges(
    dir: &Path,
    changes: &[super::index::Change],
    ghosts: &std::collections::VecDeque<super::Message>,
) {
    let mut text = String::new();
    for c in changes {
        if let super::index::Change::Expunge(uid, modseq) = c
            && let Some(m) = ghosts.iter().rev().find(|m| m.uid == *uid)
        {
            text.push_str(&format!("{uid} {modseq} {}\n", super::index::guid_hex(m.guid)));
        }
    }
    if text.is_empty() {
        return;
    }
    let path = dir.join(EXPUNGE_LOG);
    let res = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)?;
        f.write_all(text.as_bytes())?;
        if f.metadata()?.len() > (EXPUNGE_LOG_MAX as u64) * 64 {
            let all = fs::read_to_string(&path)?;
            let lines: Vec<&str> = all.lines().collect();
            let keep = lines[lines.len().saturating_sub(EXPUNGE_LOG_MAX / 2)..].join("\n") + "\n";
            let tmp = dir.join("tmp").join(format!("{EXPUNGE_LOG}.{}", std::process::id()));
            fs::write(&tmp, keep)?;
            fs::rename(&tmp, &path)?;
        }
        Ok::<(), io::Error>(())
    })();
    if let Err(e) = res {
        tracing::warn!("{}: {e}", path.display());
    }
}

/// `(GUID hex, MODSEQ)` of every expunge the folder's log holds, oldest first.
pub fn expunge_log(f: &Folder) -> Vec<(String, u64)> {
    let Ok(text) = fs::read_to_string(f.path().join(EXPUNGE_LOG)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut it = l.split(' ');
            let _uid = it.next()?;
            let modseq: u64 = it.next()?.parse().ok()?;
            let guid = it.next()?;
            (guid.len() == 32).then(|| (guid.to_string(), modseq))
        })
        .collect()
}

/// The GUIDs (hex) the folder's expunge log lists as expunged at a MODSEQ above `since`.
pub fn expunged_since(f: &Folder, since: u64) -> HashSet<String> {
    expunge_log(f)
        .into_iter()
        .filter(|(_, m)| *m > since)
        .map(|(g, _)| g)
        .collect()
}

/// Whether a hub's copy named `base` (see [`is_hub_copy`]) is a message the Maildir at
/// `dir` already had and expunged (its GUID is in the folder's expunge log): a second copy
/// of it that a hub delivers late must be dropped as a duplicate, as one whose name is
/// still in `new/` or `cur/` is — else it would come back (under its old UID, while the
/// uidlist still names it).
pub fn hub_copy_expunged(dir: &Path, base: &str) -> bool {
    let Some(guid) = postern_lib::replica_id::guid_of_base(base) else {
        return false;
    };
    let guid = super::index::guid_hex(guid);
    let Ok(text) = fs::read_to_string(dir.join(EXPUNGE_LOG)) else {
        return false;
    };
    text.lines().any(|l| l.rsplit(' ').next() == Some(guid.as_str()))
}

/// Whether a base name is a hub's replica copy ([`postern_lib::replica_id`]:
/// `<secs>.G<32 hex>.replica`, with or without `,S=`): made only by a hub's delivery, the
/// same on every replica, never by COPY or MOVE here.
pub fn is_hub_copy(base: &str) -> bool {
    postern_lib::replica_id::is_replica_base(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(uid: u32, base: &str, system: u8, kw: &[&str]) -> NewMessage {
        NewMessage {
            info: MessageInfo {
                uid,
                guid: super::super::index::guid_hex(uid as u128 * 7),
                base: base.into(),
                system,
                keywords: kw.iter().map(|s| s.to_string()).collect(),
                modseq: 0,
                date: 1_700_000_000,
                size: 0,
            },
            bytes: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
        }
    }

    #[test]
    fn place_gives_the_uid_asked_or_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "u").unwrap();
        let mut inbox = store.folder("INBOX").unwrap();
        let own = inbox.append(b"Subject: a\r\n\r\n", Flags::default(), None).unwrap();
        assert_eq!(own, 1);
        let r = place(
            &mut inbox,
            &[
                msg(5, "100.Gabc.replica", flags::SEEN, &["$Label1"]),
                msg(3, "101.x", 0, &[]),
                msg(7, "100.Gabc.replica", 0, &[]),
                msg(8, "../evil", 0, &[]),
            ],
            false,
        )
        .unwrap();
        assert_eq!(r[0], Placed::Placed);
        assert_eq!(r[1], Placed::Taken);
        assert_eq!(r[2], Placed::Exists { uid: Some(5) });
        assert!(matches!(r[3], Placed::Refused { .. }));
        assert_eq!(inbox.next_uid(), 6);
        let l = list(&inbox, 1, 10);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].uid, 5);
        assert_eq!(l[0].guid, super::super::index::guid_hex(35));
        assert_eq!(l[0].base, "100.Gabc.replica");
        assert_eq!(l[0].system, flags::SEEN);
        assert_eq!(l[0].keywords, vec!["$Label1".to_string()]);
        assert_eq!(l[0].date, 1_700_000_000);
        // another process's view agrees, the GUID survives a lost index
        fs::remove_file(inbox.path().join(super::super::index::FILE)).unwrap();
        let again = store.folder("INBOX").unwrap();
        assert_eq!(
            list(&again, 0, 10)
                .iter()
                .map(|m| (m.uid, m.guid.clone()))
                .collect::<Vec<_>>(),
            vec![
                (1, list(&inbox, 0, 1)[0].guid.clone()),
                (5, super::super::index::guid_hex(35))
            ]
        );
        assert_eq!(
            read(&mut inbox, 5, 1000).unwrap().unwrap(),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        assert!(read(&mut inbox, 5, 3).is_err());
    }

    #[test]
    fn expunges_are_logged_with_their_guids() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "u").unwrap();
        let mut inbox = store.folder("INBOX").unwrap();
        let a = inbox.append(b"Subject: a\r\n\r\n", Flags::default(), None).unwrap();
        let b = inbox.append(b"Subject: b\r\n\r\n", Flags::default(), None).unwrap();
        let (ga, gb) = (inbox.get(a).unwrap().guid, inbox.get(b).unwrap().guid);
        let before = inbox.highest_modseq();
        inbox.expunge(&[a]).unwrap();
        let gone = expunged_since(&inbox, 0);
        assert!(gone.contains(&super::super::index::guid_hex(ga)));
        assert!(expunged_since(&inbox, inbox.highest_modseq()).is_empty());
        // a file removed by another program: found by the next sync, logged too
        let mut other = store.folder("INBOX").unwrap();
        let file = other.get(b).unwrap().file.clone();
        fs::remove_file(inbox.path().join("cur").join(file)).unwrap();
        other.sync().unwrap();
        let gone = expunged_since(&inbox, before);
        assert_eq!(gone.len(), 2);
        assert!(gone.contains(&super::super::index::guid_hex(gb)));
    }

    #[test]
    fn renumbering_keeps_the_file_and_the_guid() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "u").unwrap();
        let mut inbox = store.folder("INBOX").unwrap();
        let a = inbox.append(b"Subject: a\r\n\r\n", Flags::default(), None).unwrap();
        let b = inbox.append(b"Subject: b\r\n\r\n", Flags::default(), None).unwrap();
        let (ga, base) = (inbox.get(a).unwrap().guid, inbox.get(a).unwrap().base.clone());
        let mut other = store.folder("INBOX").unwrap();
        assert_eq!(
            renumber(&mut inbox, &[(a, 10), (b, 5), (99, 11)], false).unwrap(),
            vec![true, false, false]
        );
        assert_eq!(inbox.next_uid(), 11);
        let m = inbox.get(10).unwrap();
        assert_eq!((m.guid, m.base.clone()), (ga, base));
        assert!(inbox.get(a).is_none());
        other.sync().unwrap();
        assert_eq!(other.messages().iter().map(|m| m.uid).collect::<Vec<_>>(), vec![b, 10]);
        assert_eq!(other.get(10).unwrap().guid, ga);
    }

    /// The replica that adopts its peer's numbering gives a UID below UIDNEXT to another
    /// message; a view that still holds the old one there (not synced in between) sees it
    /// expunged and the new one, never the old GUID with the new file.
    #[test]
    fn a_reused_uid_is_another_message_in_every_view() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "u").unwrap();
        let mut inbox = store.folder("INBOX").unwrap();
        let a = inbox.append(b"Subject: a\r\n\r\n", Flags::default(), None).unwrap();
        let b = inbox.append(b"Subject: b\r\n\r\n", Flags::default(), None).unwrap();
        let ga = inbox.get(a).unwrap().guid;
        let mut other = store.folder("INBOX").unwrap();
        assert_eq!(other.get(a).unwrap().guid, ga);
        // without reuse, a UID below UIDNEXT is refused
        assert_eq!(renumber(&mut inbox, &[(b, a)], false).unwrap(), vec![false]);
        assert_eq!(renumber(&mut inbox, &[(a, 3)], false).unwrap(), vec![true]);
        assert_eq!(renumber(&mut inbox, &[(b, 3)], true).unwrap(), vec![false], "held");
        let r = place(&mut inbox, &[msg(a, "100.Gabc.replica", 0, &[])], false).unwrap();
        assert_eq!(r, vec![Placed::Taken]);
        let r = place(&mut inbox, &[msg(a, "100.Gabc.replica", 0, &[])], true).unwrap();
        assert_eq!(r, vec![Placed::Placed]);
        assert_eq!(inbox.next_uid(), 4);
        let new_guid = a as u128 * 7;
        for view in [&mut inbox, &mut other] {
            view.sync().unwrap();
            let got: Vec<(u32, u128)> = view.messages().iter().map(|m| (m.uid, m.guid)).collect();
            assert_eq!(got.len(), 3);
            assert_eq!(got[0], (a, new_guid));
            assert_eq!(got[2], (3, ga));
            assert_eq!(view.get(a).unwrap().base, "100.Gabc.replica");
        }
        // a third view from the index alone agrees
        let third = store.folder("INBOX").unwrap();
        assert_eq!(third.get(a).unwrap().guid, new_guid);
        assert_eq!(third.get(3).unwrap().guid, ga);
    }

    /// A process killed (SIGKILL) while it held a folder's uidlist lock leaves the lock
    /// file: a waiter breaks it a few seconds later, not after the two minutes of a stale
    /// lock (every delivery, SELECT and merge of the folder failed meanwhile: the soak's
    /// B without INBOX), while a live holder's lock, however old, is waited for.
    #[test]
    fn a_uidlist_lock_left_by_a_killed_process_is_broken_a_live_one_waited_for() {
        use super::super::uidlist::{ABANDONED_AFTER, LOCK, Lock};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "u").unwrap();
        let inbox = store.folder("INBOX").unwrap();
        let lock = inbox.path().join(LOCK);
        let aged = |f: &fs::File| {
            f.set_modified(SystemTime::now() - ABANDONED_AFTER - Duration::from_secs(1))
                .unwrap()
        };
        // left by a dead process: no flock on it
        aged(&fs::File::create(&lock).unwrap());
        let t = std::time::Instant::now();
        drop(Lock::acquire(inbox.path()).unwrap());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // held by a live process (its flock), made long ago: waited for until released
        let held = fs::File::create(&lock).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
        aged(&held);
        let path = inbox.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            Lock::acquire(&path).map(|_| t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(1500));
        fs::remove_file(&lock).unwrap();
        drop(held);
        let waited = waiter.join().unwrap().unwrap();
        assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    }

    /// A process killed after writing the new list into the lock and before renaming it
    /// over the uidlist leaves a written lock: broken as an empty one is (the redundant
    /// soak's B without INBOX once more: every SELECT and merge of INBOX waited out
    /// LOCK_WAIT and failed until the two-minute stale limit); the list it held is not
    /// taken, the folder's own uidlist stays.
    #[test]
    fn a_written_uidlist_lock_left_by_a_killed_process_is_broken() {
        use super::super::uidlist::{ABANDONED_AFTER, LOCK, Lock};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "u").unwrap();
        let inbox = store.folder("INBOX").unwrap();
        let validity = inbox.uid_validity();
        let lock = inbox.path().join(LOCK);
        let left = fs::File::create(&lock).unwrap();
        (&left).write_all(b"3 V1 N9 Gdead\n7 :1.dead.x\n").unwrap();
        left.set_modified(SystemTime::now() - ABANDONED_AFTER - Duration::from_secs(1))
            .unwrap();
        drop(left);
        let t = std::time::Instant::now();
        drop(Lock::acquire(inbox.path()).unwrap());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(!lock.exists());
        // a new message is given its UID (under the lock) and the folder keeps its list
        fs::write(inbox.path().join("new/1.new.x"), b"Subject: x\r\n\r\n").unwrap();
        let again = store.folder("INBOX").unwrap();
        assert_eq!(again.uid_validity(), validity);
        assert_eq!(again.messages().len(), 1);
    }

    #[test]
    fn a_hubs_late_copy_of_an_expunged_message_is_not_delivered_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "u").unwrap();
        let base = "1765000000.G0000000000000000000000000000abcd.replica";
        let deliver = || {
            crate::maildir_deliver::deliver_once(dir.path(), "u", Some(base), b"", &mut &b"Subject: x\r\n\r\n"[..])
                .unwrap()
        };
        assert!(!deliver().already);
        assert!(deliver().already, "a second copy while the first is there");
        let mut inbox = store.folder("INBOX").unwrap();
        let uid = inbox.messages()[0].uid;
        assert!(is_hub_copy(&inbox.messages()[0].base));
        inbox.expunge(&[uid]).unwrap();
        assert!(hub_copy_expunged(inbox.path(), base));
        assert!(deliver().already, "a late copy after the expunge");
        inbox.sync().unwrap();
        assert!(inbox.messages().is_empty());
    }

    #[test]
    fn folders_get_the_uidvalidity_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "u").unwrap();
        create_folder(&store, "Work", 4242).unwrap();
        assert_eq!(store.folder("Work").unwrap().uid_validity(), 4242);
        let mut inbox = store.folder("INBOX").unwrap();
        inbox.append(b"Subject: a\r\n\r\n", Flags::default(), None).unwrap();
        set_uid_validity(inbox.path(), 17).unwrap();
        inbox.sync().unwrap();
        assert_eq!(inbox.uid_validity(), 17);
        assert_eq!(inbox.messages().len(), 1);
        assert_eq!(inbox.messages()[0].uid, 1);
        // a folder made later here gets a UIDVALIDITY above the peer's
        store.create("Later").unwrap();
        assert!(store.folder("Later").unwrap().uid_validity() > 4242);
    }

    #[test]
    fn state_files_and_the_user_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "u").unwrap();
        assert_eq!(read_state(&store, "b:1190").unwrap(), None);
        write_state(&store, "b:1190", b"{}").unwrap();
        assert_eq!(read_state(&store, "b:1190").unwrap().unwrap(), b"{}");
        assert_eq!(state_name("../x"), "postern-replica-.._x");
        assert!(store.list().unwrap().iter().all(|n| !n.contains("replica")));
        let l = UserLock::acquire(&store, Duration::from_millis(10)).unwrap();
        assert!(UserLock::acquire(&store, Duration::from_millis(30)).is_err());
        drop(l);
        UserLock::acquire(&store, Duration::from_millis(10)).unwrap();
    }
}
