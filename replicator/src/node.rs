//! This replica's side of replication: merging a user with every peer on request
//! ([`Node::sync`], what the proxy asks before it answers OK), the background sweep that
//! merges the users changed since the last one and retries those a peer missed
//! ([`Node::sweep`]), and the per-peer state `postern status` shows ([`Node::status`]).

use crate::merge::{Options, Report, sync_user};
use crate::remote::RemoteReplica;
use crate::replica::Res;
use postern_lib::proto::replica::{PeerState, PeerStatus, ReplicaReply};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// After a connect or a reply that timed out, `Sync` requests skip the peer this long
/// (the proxy must not wait a timeout on every change while a peer host is down or hangs);
/// the sweep retries it.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest wait for a peer's TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings a node works with.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `replica_name`.
    pub node: String,
    /// `replica_peers`.
    pub peers: Vec<String>,
    /// The shared secret.
    pub secret: Vec<u8>,
    /// `virtual_mailbox_base`.
    pub base: PathBuf,
    /// `replica_timeout`.
    pub timeout: Duration,
    /// `message_size_limit`.
    pub max_message: u64,
}

struct Track {
    status: PeerStatus,
    /// When the last attempt failed, for the back-off of [`RETRY_AFTER`].
    failed_at: Option<std::time::Instant>,
    /// Users changed here and not yet merged into this peer.
    pending: BTreeSet<String>,
}

/// One replica's replication state, shared by the threads of the process.
pub struct Node {
    cfg: NodeConfig,
    peers: Mutex<Vec<Track>>,
    /// Each user's mailbox fingerprint after its last merge.
    seen: Mutex<HashMap<String, u64>>,
    /// Folder states kept between merges.
    cache: crate::replica::Cache,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Node {
    /// A node with every peer in state unknown.
    pub fn new(cfg: NodeConfig) -> Node {
        let peers = cfg
            .peers
            .iter()
            .map(|p| Track {
                status: PeerStatus {
                    peer: p.clone(),
                    state: PeerState::Unknown,
                    since: now(),
                    last_success: None,
                    last_error: None,
                    users_pending: 0,
                },
                pending: BTreeSet::new(),
                failed_at: None,
            })
            .collect();
        Node {
            cfg,
            peers: Mutex::new(peers),
            seen: Mutex::new(HashMap::new()),
            cache: crate::replica::Cache::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    fn options(&self) -> Options {
        Options {
            lock_wait: self.cfg.timeout,
            ..Options::default()
        }
    }

    fn connect(&self, peer: &str) -> Res<RemoteReplica> {
        RemoteReplica::connect(
            peer,
            &self.cfg.node,
            &self.cfg.secret,
            self.cfg.timeout.min(CONNECT_TIMEOUT),
            self.cfg.timeout,
            self.cfg.max_message,
        )
    }

    /// Whether peer `i` failed within [`RETRY_AFTER`]: a `Sync` does not wait for it
    /// again (the sweep retries it).
    fn backing_off(&self, i: usize) -> Option<String> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let t = peers.get(i)?;
        let recent = t.failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER);
        recent.then(|| format!("{} (retried later)", t.status.last_error.clone().unwrap_or_default()))
    }

    /// Merges `user` with `remote` (connected to peer number `i`).
    fn merge(&self, remote: &mut RemoteReplica, user: &str) -> Res<Report> {
        let mut local = self
            .cache
            .take(&self.cfg.base, user, &self.cfg.node, self.cfg.max_message)?;
        remote.open(user)?;
        let r = sync_user(&mut local, remote, &self.options())?;
        self.cache.put(user, local);
        if !r.failed.is_empty() {
            return Err(r.failed.join("; "));
        }
        Ok(r)
    }

    fn record(&self, i: usize, user: &str, result: &Res<Report>) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = peers.get_mut(i) else { return };
        let state = match result {
            Ok(_) => {
                t.failed_at = None;
                t.pending.remove(user);
                t.status.last_success = Some(now());
                t.status.last_error = None;
                if t.pending.is_empty() {
                    PeerState::InStep
                } else {
                    PeerState::CatchingUp
                }
            }
            Err(e) => {
                // only a peer that does not answer (connect or a reply timed out) costs a
                // wait worth skipping
                let silent = e.contains(crate::remote::NO_ANSWER) || e.contains(": timed out");
                t.failed_at = silent.then(std::time::Instant::now);
                t.pending.insert(user.to_string());
                t.status.last_error = Some(e.clone());
                PeerState::Unreachable
            }
        };
        if state != t.status.state {
            t.status.state = state;
            t.status.since = now();
        }
        t.status.users_pending = t.pending.len() as u64;
    }

    /// Merges `user` with every peer now (the answer to a `Sync` request).
    pub fn sync(&self, user: &str) -> ReplicaReply {
        if let Err(e) = postern_mailbox::Store::open(&self.cfg.base, user) {
            return ReplicaReply::Failed {
                reason: format!("mailbox {user}: {e}"),
            };
        }
        let mut in_step = Vec::new();
        let mut unreachable = Vec::new();
        for (i, peer) in self.cfg.peers.iter().enumerate() {
            if let Some(why) = self.backing_off(i) {
                let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = peers.get_mut(i) {
                    t.pending.insert(user.to_string());
                    t.status.users_pending = t.pending.len() as u64;
                }
                unreachable.push((peer.clone(), why));
                self.served_alone(user);
                continue;
            }
            let r = match self.connect(peer) {
                Ok(mut remote) => self.merge(&mut remote, user),
                Err(e) => {
                    self.served_alone(user);
                    Err(e)
                }
            };
            match &r {
                Ok(rep) => {
                    if rep.changed() {
                        tracing::info!(
                            "user={user} peer={peer} merged: {} copied, {} expunged, {} flags, {} conflicts, {} folder changes",
                            rep.copied,
                            rep.expunged,
                            rep.flags,
                            rep.conflicts,
                            rep.folder_ops
                        );
                    }
                    in_step.push(peer.clone());
                }
                Err(e) => {
                    tracing::warn!("user={user} peer={peer}: not in step: {e}");
                    unreachable.push((peer.clone(), e.clone()));
                }
            }
            self.record(i, user, &r);
        }
        ReplicaReply::Synced { in_step, unreachable }
    }

    /// Marks that `user` is served here while a peer cannot be reached (see
    /// [`postern_mailbox::replica::mark_alone`]): until the next completed merge, a
    /// conflict keeps this replica's UIDs, which its clients may have read.
    fn served_alone(&self, user: &str) {
        let marked =
            postern_mailbox::Store::open(&self.cfg.base, user).and_then(|s| postern_mailbox::replica::mark_alone(&s));
        if let Err(e) = marked {
            tracing::warn!("user={user}: cannot mark it served alone: {e}");
        }
    }

    /// The per-peer state.
    pub fn status(&self) -> ReplicaReply {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        ReplicaReply::Status {
            peers: peers.iter().map(|t| t.status.clone()).collect(),
        }
    }

    /// One sweep: every user whose mailbox changed since its last merge here (or that a
    /// peer still misses) is merged with every peer; a peer that cannot be reached is tried
    /// once per sweep, not once per user.
    pub fn sweep(&self) {
        let users = list_users(&self.cfg.base);
        let mut todo: Vec<(String, u64)> = Vec::new();
        {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            for u in users {
                let fp = fingerprint(&self.cfg.base.join(&u));
                let pending = peers.iter().any(|t| t.pending.contains(&u));
                if pending || seen.get(&u) != Some(&fp) {
                    todo.push((u, fp));
                }
            }
        }
        if todo.is_empty() {
            return;
        }
        {
            // changed users count as pending until merged
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            for t in peers.iter_mut() {
                t.pending.extend(todo.iter().map(|(u, _)| u.clone()));
                t.status.users_pending = t.pending.len() as u64;
                if t.status.state == PeerState::InStep {
                    t.status.state = PeerState::CatchingUp;
                    t.status.since = now();
                }
            }
        }
        let mut all_ok: HashMap<String, bool> = todo.iter().map(|(u, _)| (u.clone(), true)).collect();
        for (i, peer) in self.cfg.peers.iter().enumerate() {
            let mut conn: Option<RemoteReplica> = None;
            for (user, _) in &todo {
                if conn.is_none() {
                    match self.connect(peer) {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            tracing::warn!("sweep: peer={peer}: {e}");
                            for (u, _) in &todo {
                                self.served_alone(u);
                                self.record(i, u, &Err(e.clone()));
                                all_ok.insert(u.clone(), false);
                            }
                            break;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { break };
                let r = self.merge(c, user);
                if let Err(e) = &r {
                    tracing::warn!("sweep: user={user} peer={peer}: {e}");
                    all_ok.insert(user.clone(), false);
                    // the connection's position is unknown after an error
                    conn = None;
                }
                self.record(i, user, &r);
            }
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (user, _) in todo {
            if all_ok.get(&user) == Some(&true) {
                seen.insert(user.clone(), fingerprint(&self.cfg.base.join(&user)));
            }
        }
    }
}

/// The users with a mailbox under `base`.
pub fn list_users(base: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && n.len() <= 64)
        .collect();
    out.sort();
    out
}

/// A cheap fingerprint of a mailbox: the modification times of its folders' directories,
/// their `new/` and `cur/`, uidlists and the subscriptions file. Any delivery, flag change,
/// expunge, folder or subscription change moves one of them.
pub fn fingerprint(root: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stamp = |p: &Path| {
        if let Ok(m) = std::fs::symlink_metadata(p) {
            (m.mtime(), m.mtime_nsec(), m.ino(), m.size()).hash(&mut h);
        } else {
            0u8.hash(&mut h);
        }
    };
    let mut dirs = vec![root.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(root) {
        let mut subs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with('.') && n.len() > 1 && n != "..")
            })
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        subs.sort();
        dirs.extend(subs);
    }
    stamp(&root.join("subscriptions"));
    for d in dirs {
        stamp(&d);
        stamp(&d.join("new"));
        stamp(&d.join("cur"));
        stamp(&d.join("dovecot-uidlist"));
    }
    h.finish()
}
