//! A replica of one user's mailbox as the merge sees it: the operations of
//! [`Replica`], implemented by [`LocalReplica`] on this server's Maildir store and by
//! [`crate::remote::RemoteReplica`] over the peer protocol. The merge
//! ([`crate::merge`]) is written against the trait only, so it is tested with two local
//! stores.

use crate::state::SyncState;
use postern_mailbox::replica::{self as store_ops, FolderInfo, MessageInfo, NewMessage, Placed, UserLock};
use postern_mailbox::{Folder, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Errors are texts for the log and the status display.
pub type Res<T> = Result<T, String>;

/// A user's folders and subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// Every folder, INBOX first.
    pub folders: Vec<FolderInfo>,
    /// Subscribed folder names.
    pub subscriptions: Vec<String>,
    /// This replica served the user while its peer was unreachable, since the last
    /// completed merge: a conflict keeps its UIDs (see [`crate::merge`]).
    #[serde(default)]
    pub alone: bool,
}

/// A folder's state and messages, and the GUIDs it expunged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The folder.
    pub info: FolderInfo,
    /// All its messages, in UID order.
    pub messages: Vec<MessageInfo>,
    /// `(GUID hex, MODSEQ)` of the expunges its GUID expunge log holds.
    pub gone: Vec<(String, u64)>,
}

/// New flags for one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagChange {
    /// Its UID.
    pub uid: u32,
    /// System flags.
    pub system: u8,
    /// Keywords by name.
    pub keywords: Vec<String>,
    /// Made only if the message's MODSEQ is still at most this (it was not changed by a
    /// client since the merge listed it); `None`: always.
    #[serde(default)]
    pub unchanged_since: Option<u64>,
}

/// One user's mailbox on one replica.
pub trait Replica {
    /// This replica's name (`replica_name`): the key of its sync state on the other side,
    /// and the order in which user locks are taken.
    fn node(&self) -> &str;
    /// Takes the user's replication lock (waiting at most `wait`); held until
    /// [`Replica::unlock`] or the end of the session.
    fn lock(&mut self, wait: Duration) -> Res<()>;
    /// Releases the lock.
    fn unlock(&mut self);
    /// The folders (each synced with its Maildir first) and subscriptions.
    fn mailbox(&mut self) -> Res<Mailbox>;
    /// A folder's state, all its messages, and its GUID expunge log.
    fn messages(&mut self, folder: &str) -> Res<Listing>;
    /// Messages' bytes, in order (`None`: gone).
    fn fetch(&mut self, folder: &str, uids: &[u32]) -> Res<Vec<Option<Vec<u8>>>>;
    /// Adds messages under their UIDs; the results in order, and HIGHESTMODSEQ after.
    /// `reuse`: a UID below UIDNEXT that no message has now may be given (only on the
    /// side that adopts its peer's numbering, see [`crate::merge`]).
    fn put(&mut self, folder: &str, msgs: Vec<NewMessage>, reuse: bool) -> Res<(Vec<Placed>, u64)>;
    /// Gives messages new UIDs `(old, new)` (new ones at or above UIDNEXT, or with
    /// `reuse` any UID no message has now), files and GUIDs kept; per pair whether done,
    /// and HIGHESTMODSEQ after.
    fn renumber(&mut self, folder: &str, moves: Vec<(u32, u32)>, reuse: bool) -> Res<(Vec<bool>, u64)>;
    /// Sets flags; HIGHESTMODSEQ after.
    fn set_flags(&mut self, folder: &str, changes: Vec<FlagChange>) -> Res<u64>;
    /// Expunges messages; HIGHESTMODSEQ after.
    fn expunge(&mut self, folder: &str, uids: Vec<u32>) -> Res<u64>;
    /// Creates a folder with this UIDVALIDITY.
    fn create_folder(&mut self, name: &str, uid_validity: u32) -> Res<()>;
    /// Renames a folder (and those below it).
    fn rename_folder(&mut self, old: &str, new: &str) -> Res<()>;
    /// Deletes a folder.
    fn delete_folder(&mut self, name: &str) -> Res<()>;
    /// Gives a folder another UIDVALIDITY.
    fn set_uid_validity(&mut self, folder: &str, uid_validity: u32) -> Res<()>;
    /// Gives a folder the mailbox GUID (MAILBOXID) and created special uses of the peer's.
    fn set_folder_meta(&mut self, folder: &str, guid: &str, special_use: &[String]) -> Res<()>;
    /// Subscribes or unsubscribes.
    fn subscribe(&mut self, name: &str, on: bool) -> Res<()>;
    /// The sync state this replica keeps for `peer`, from its own point of view.
    fn load_state(&mut self, peer: &str) -> Res<Option<SyncState>>;
    /// Replaces it.
    fn save_state(&mut self, peer: &str, state: &SyncState) -> Res<()>;
}

/// Users whose [`LocalReplica`] (its open folder states) a process keeps between merges.
pub const CACHED_USERS: usize = 16;

/// The local replicas of the users merged last, kept so that the next merge of a user
/// finds its folder states open (a folder unchanged since is not read again). Taken out
/// for a merge (one user is merged by one thread at a time) and put back after.
#[derive(Default)]
pub struct Cache {
    users: std::sync::Mutex<Vec<(String, LocalReplica)>>,
}

impl Cache {
    /// The user's replica: the cached one, or a new one.
    pub fn take(&self, base: &Path, user: &str, node: &str, max_message: u64) -> Res<LocalReplica> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = users.iter().position(|(u, _)| u == user) {
            let (_, r) = users.remove(i);
            if r.store.root().is_dir() {
                return Ok(r);
            }
        }
        drop(users);
        LocalReplica::open(base, user, node, max_message)
    }

    /// Keeps `r` (unlocked) for the next merge of `user`, dropping the oldest beyond
    /// [`CACHED_USERS`].
    pub fn put(&self, user: &str, mut r: LocalReplica) {
        r.unlock();
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.retain(|(u, _)| u != user);
        users.push((user.to_string(), r));
        if users.len() > CACHED_USERS {
            users.remove(0);
        }
    }
}

/// One user's mailbox in this server's store.
pub struct LocalReplica {
    node: String,
    store: Store,
    lock: Option<UserLock>,
    /// Largest message read or written.
    max_message: u64,
    /// Folder states opened in this session.
    open: HashMap<String, Folder>,
}

impl LocalReplica {
    /// `base/user` (created when new), as replica `node`.
    pub fn open(base: &Path, user: &str, node: &str, max_message: u64) -> Res<LocalReplica> {
        let store = Store::open(base, user).map_err(|e| format!("mailbox {user}: {e}"))?;
        Ok(LocalReplica {
            node: node.to_string(),
            store,
            lock: None,
            max_message,
            open: HashMap::new(),
        })
    }

    /// The largest message this replica moves.
    pub fn max_message(&self) -> u64 {
        self.max_message
    }

    /// A synced state of `name`.
    fn folder(&mut self, name: &str) -> Res<&mut Folder> {
        let name = Store::canonical(name);
        if !self.open.contains_key(&name) {
            let f = self.store.folder(&name).map_err(|e| e.to_string())?;
            self.open.insert(name.clone(), f);
        } else if let Some(f) = self.open.get_mut(&name) {
            if !self.store.exists(&name) {
                self.open.remove(&name);
                return Err(format!("no such folder: {name}"));
            }
            if f.changed() {
                f.sync().map_err(|e| e.to_string())?;
            }
        }
        self.open
            .get_mut(&name)
            .ok_or_else(|| format!("no such folder: {name}"))
    }
}

impl Replica for LocalReplica {
    fn node(&self) -> &str {
        &self.node
    }

    fn lock(&mut self, wait: Duration) -> Res<()> {
        if self.lock.is_none() {
            self.lock = Some(UserLock::acquire(&self.store, wait).map_err(|e| format!("user lock: {e}"))?);
        }
        Ok(())
    }

    fn unlock(&mut self) {
        self.lock = None;
    }

    fn mailbox(&mut self) -> Res<Mailbox> {
        let names = self.store.list().map_err(|e| e.to_string())?;
        let mut folders = Vec::with_capacity(names.len());
        for n in names {
            let f = match self.folder(&n) {
                Ok(f) => f,
                Err(e) => {
                    if !Store::exists(&self.store, &n) {
                        // removed meanwhile
                        continue;
                    }
                    return Err(e);
                }
            };
            let mut info = store_ops::folder_info(&n, f);
            info.special_use = store_ops::created_special_uses(&self.store, &n);
            folders.push(info);
        }
        Ok(Mailbox {
            folders,
            subscriptions: self.store.subscriptions(),
            alone: store_ops::is_alone(&self.store),
        })
    }

    fn messages(&mut self, folder: &str) -> Res<Listing> {
        let f = self.folder(folder)?;
        Ok(Listing {
            info: store_ops::folder_info(folder, f),
            messages: store_ops::list(f, 0, usize::MAX),
            gone: store_ops::expunge_log(f),
        })
    }

    fn fetch(&mut self, folder: &str, uids: &[u32]) -> Res<Vec<Option<Vec<u8>>>> {
        let max = self.max_message;
        let f = self.folder(folder)?;
        uids.iter()
            .map(|&uid| store_ops::read(f, uid, max).map_err(|e| e.to_string()))
            .collect()
    }

    fn put(&mut self, folder: &str, msgs: Vec<NewMessage>, reuse: bool) -> Res<(Vec<Placed>, u64)> {
        let max = self.max_message;
        let f = self.folder(folder)?;
        let (ok, too_big): (Vec<_>, Vec<_>) = msgs
            .into_iter()
            .enumerate()
            .partition(|(_, m)| m.bytes.len() as u64 <= max);
        let (idx, ok): (Vec<usize>, Vec<NewMessage>) = ok.into_iter().unzip();
        let placed = store_ops::place(f, &ok, reuse).map_err(|e| e.to_string())?;
        let mut out: Vec<(usize, Placed)> = idx.into_iter().zip(placed).collect();
        out.extend(too_big.into_iter().map(|(i, _)| {
            (
                i,
                Placed::Refused {
                    reason: format!("larger than {max} bytes"),
                },
            )
        }));
        out.sort_by_key(|(i, _)| *i);
        Ok((out.into_iter().map(|(_, p)| p).collect(), f.highest_modseq()))
    }

    fn renumber(&mut self, folder: &str, moves: Vec<(u32, u32)>, reuse: bool) -> Res<(Vec<bool>, u64)> {
        let f = self.folder(folder)?;
        let done = store_ops::renumber(f, &moves, reuse).map_err(|e| e.to_string())?;
        Ok((done, f.highest_modseq()))
    }

    fn set_flags(&mut self, folder: &str, changes: Vec<FlagChange>) -> Res<u64> {
        let f = self.folder(folder)?;
        // a change a client made since the listing is not overwritten: the merge's next
        // round sees both changes and unites them
        let c: Vec<(u32, u8, Vec<String>)> = changes
            .into_iter()
            .filter(|c| {
                c.unchanged_since
                    .is_none_or(|since| f.get(c.uid).is_some_and(|m| m.modseq <= since))
            })
            .map(|c| (c.uid, c.system, c.keywords))
            .collect();
        store_ops::set_flags(f, &c).map_err(|e| e.to_string())
    }

    fn expunge(&mut self, folder: &str, uids: Vec<u32>) -> Res<u64> {
        let f = self.folder(folder)?;
        f.expunge(&uids).map_err(|e| e.to_string())?;
        Ok(f.highest_modseq())
    }

    fn create_folder(&mut self, name: &str, uid_validity: u32) -> Res<()> {
        store_ops::create_folder(&self.store, name, uid_validity).map_err(|e| e.to_string())
    }

    fn rename_folder(&mut self, old: &str, new: &str) -> Res<()> {
        self.open.clear();
        store_ops::rename_folder(&self.store, old, new).map_err(|e| e.to_string())
    }

    fn delete_folder(&mut self, name: &str) -> Res<()> {
        self.open.remove(&Store::canonical(name));
        self.store.delete(name).map_err(|e| e.to_string())
    }

    fn set_uid_validity(&mut self, folder: &str, uid_validity: u32) -> Res<()> {
        let dir = self.store.folder_path(folder).map_err(|e| e.to_string())?;
        store_ops::set_uid_validity(&dir, uid_validity).map_err(|e| e.to_string())?;
        if let Some(f) = self.open.get_mut(&Store::canonical(folder)) {
            f.sync().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn subscribe(&mut self, name: &str, on: bool) -> Res<()> {
        self.store.subscribe(name, on).map_err(|e| e.to_string())
    }

    fn set_folder_meta(&mut self, folder: &str, guid: &str, special_use: &[String]) -> Res<()> {
        store_ops::set_folder_meta(&self.store, folder, guid, special_use).map_err(|e| e.to_string())?;
        if let Some(f) = self.open.get_mut(&Store::canonical(folder)) {
            f.sync().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn load_state(&mut self, peer: &str) -> Res<Option<SyncState>> {
        match store_ops::read_state(&self.store, peer).map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => Ok(Some(s)),
                Err(e) => {
                    // merged from scratch: nothing is lost, deleted mail may come back
                    tracing::warn!(
                        "{}: sync state for {peer} unreadable ({e}): merging without it",
                        self.store.root().display()
                    );
                    Ok(None)
                }
            },
        }
    }

    fn save_state(&mut self, peer: &str, state: &SyncState) -> Res<()> {
        let bytes = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        store_ops::write_state(&self.store, peer, &bytes).map_err(|e| e.to_string())?;
        // a completed merge: the pair is in step, neither served alone since
        store_ops::clear_alone(&self.store).map_err(|e| e.to_string())
    }
}
