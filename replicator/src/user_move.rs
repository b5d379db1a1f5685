//! Moving a user's mailbox from one pair of mailbox servers to another (the director,
//! issue 16): the copy, check and removal steps of `postern user move|rebalance`, done by
//! the replicator of the director's host on that command's request (the local protocol's
//! `Move`, [`postern_lib::proto::replica`]), so the command itself links no replication
//! code. This replicator is the client of both pairs' replicators, over their peer
//! protocol with `replica_secret_file`; the command keeps the order of the steps, the
//! switch of `director_user_map` and the wait for the proxies (see `postern user move`).
//!
//! - **copy** ([`Mover::copy`]): the mailbox is merged from every reachable replicator of
//!   the old pair into the first of the new pair, then from that one into the others of
//!   the new pair, while the user may be logged in and reading; messages keep their UIDs,
//!   folders their UIDVALIDITY. Then **check**: every folder of the old copy is on each
//!   new replicator with the same UIDVALIDITY, every message under the same UID and GUID.
//!   The answer is the number of messages checked. A new pair holding an emptied old copy
//!   of the user (from an earlier move away) is refused before anything is merged: with no
//!   sync state, its GUID expunge log would make the first merge expunge the messages on
//!   the old pair.
//! - **remove** ([`Mover::remove`]): only once `director_user_map` sends the user to the
//!   new pair (so a request can never empty the copy clients read): the sync state
//!   between old and new replicators is cleared on both (a later merge of the two is a
//!   first contact, never an "expunged there"), then on each old replicator every message
//!   is expunged and every folder but INBOX deleted.
//!
//! Bounds: the pairs are named, and resolved in this replicator's own `director_pairs`,
//! so a request can reach no other replicator than those; every exchange with a peer is
//! bounded by `replica_timeout`.

use crate::merge::{Options, sync_user};
use crate::remote::RemoteReplica;
use crate::replica::{Replica, Res};
use crate::state::SyncState;
use postern_lib::config::MainConfig;
use postern_lib::director::Director;
use postern_lib::proto::replica::{MoveStep, ReplicaReply};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The name this replicator gives itself when it only asks a replicator its name.
const PROBE: &str = "postern-user-move";
/// How long a replicator's learnt node name is used before it is asked again.
const NAME_TTL: Duration = Duration::from_secs(60);

/// The settings of moves, and the replicators' names learnt so far.
pub struct Mover {
    /// From `director_pairs`; `None`: moves are refused (not a director).
    director: Option<Director>,
    secret: Vec<u8>,
    timeout: Duration,
    max_message: u64,
    /// Replicator address → its node name, and when it was learnt.
    names: Mutex<HashMap<String, (String, Instant)>>,
}

impl Mover {
    /// The mover of this replicator's configuration; `secret` is `replica_secret_file`'s.
    pub fn new(main: &MainConfig, secret: Vec<u8>) -> Mover {
        let director = match Director::from_config(main) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("director_pairs: {e}: user moves are refused");
                None
            }
        };
        Mover {
            director,
            secret,
            timeout: Duration::from_secs(main.replica_timeout.0),
            max_message: main.message_size_limit,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Does one step of moving `user` from pair `from` to pair `to`.
    pub fn request(&self, user: &str, from: &str, to: &str, step: MoveStep) -> ReplicaReply {
        let r = self.pairs(from, to).and_then(|(olds, news)| match step {
            MoveStep::Copy => self
                .copy(user, &olds, &news)
                .map(|messages| ReplicaReply::Copied { messages }),
            MoveStep::Remove => self.remove(user, to, &olds, &news).map(|()| ReplicaReply::Removed),
        });
        match r {
            Ok(reply) => {
                tracing::info!("move of {user} from {from} to {to}: {step:?} done");
                reply
            }
            Err(reason) => {
                tracing::warn!("move of {user} from {from} to {to}: {step:?}: {reason}");
                ReplicaReply::Failed { reason }
            }
        }
    }

    /// The replicators of pairs `from` and `to`, from this replicator's `director_pairs`.
    fn pairs(&self, from: &str, to: &str) -> Res<(Vec<String>, Vec<String>)> {
        let d = self
            .director
            .as_ref()
            .ok_or("this replicator has no director_pairs: user moves are asked of a director's replicator")?;
        if self.secret.is_empty() {
            return Err("this replicator has no replica_secret_file".into());
        }
        let replicators = |name: &str| -> Res<Vec<String>> {
            let i = d
                .index(name)
                .ok_or_else(|| format!("pair {name:?} is not in this replicator's director_pairs (reload?)"))?;
            let r = d.pairs().get(i).map(|p| p.replicator.clone()).unwrap_or_default();
            if r.is_empty() {
                return Err(format!("pair {name} has no replicator= addresses"));
            }
            Ok(r)
        };
        if from == to {
            return Err("the old and the new pair are the same".into());
        }
        Ok((replicators(from)?, replicators(to)?))
    }

    fn connect(&self, addr: &str, me: &str) -> Res<RemoteReplica> {
        RemoteReplica::connect(
            addr,
            me,
            &self.secret,
            self.timeout.min(Duration::from_secs(5)),
            self.timeout,
            self.max_message,
        )
    }

    /// The node name of the replicator at `addr` (asked, or remembered for [`NAME_TTL`]).
    fn node(&self, addr: &str) -> Res<String> {
        if let Some((n, at)) = self.names.lock().unwrap_or_else(|e| e.into_inner()).get(addr)
            && at.elapsed() < NAME_TTL
        {
            return Ok(n.clone());
        }
        let n = self
            .connect(addr, PROBE)
            .map_err(|e| format!("replicator {addr}: {e}"))?
            .node()
            .to_string();
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr.to_string(), (n.clone(), Instant::now()));
        Ok(n)
    }

    /// Both replicators, each told the other's name (so each keeps its sync state for
    /// the real other side), working on `user`.
    fn both(&self, user: &str, a: &str, b: &str) -> Res<(RemoteReplica, RemoteReplica)> {
        let (na, nb) = (self.node(a)?, self.node(b)?);
        let mut ra = self.connect(a, &nb)?;
        ra.open(user)?;
        let mut rb = self.connect(b, &na)?;
        rb.open(user)?;
        Ok((ra, rb))
    }

    /// Merges `user` between `a` (old pair) and `b` (new pair).
    fn merge(&self, user: &str, a: &str, b: &str) -> Res<()> {
        let (mut ra, mut rb) = self.both(user, a, b)?;
        let opt = Options {
            lock_wait: self.timeout,
            ..Options::default()
        };
        // a folder the new side has that the sync state does not know (its INBOX made at
        // `open`, an old emptied copy, hub deliveries) takes the old side's UIDVALIDITY:
        // no client reads the new side yet, and the first contact would otherwise keep
        // the lower of the two, which may be the new side's
        let (ma, mb) = (ra.mailbox()?, rb.mailbox()?);
        let known = rb.load_state(ra.node())?.unwrap_or_default();
        if known.generation == 0 {
            // never merged with the old side (or the state was cleared by a move away):
            // an expunge log on the new side (an old copy emptied by a move away) would
            // make the first merge expunge the messages on the OLD side. Refused.
            for f in &mb.folders {
                if !rb.messages(&f.name)?.gone.is_empty() {
                    return Err(format!(
                        "{b} holds an emptied old copy of {user} (folder {} has expunged messages it \
                         would expunge here too): remove virtual_mailbox_base/{user} on every server of \
                         that pair first",
                        f.name
                    ));
                }
            }
        }
        let fresh: Vec<(String, u32)> = mb
            .folders
            .iter()
            .filter(|f| !known.folders.contains_key(&f.name))
            .filter_map(|f| {
                let old = ma.folders.iter().find(|o| o.name == f.name)?;
                (old.uid_validity != f.uid_validity).then(|| (f.name.clone(), old.uid_validity))
            })
            .collect();
        if !fresh.is_empty() {
            rb.lock(self.timeout)?;
            let r = fresh.iter().try_for_each(|(f, v)| rb.set_uid_validity(f, *v));
            rb.unlock();
            r?;
        }
        let r = sync_user(&mut ra, &mut rb, &opt)?;
        if !r.failed.is_empty() {
            return Err(r.failed.join("; "));
        }
        Ok(())
    }

    /// Every folder and message of `a` is on `b`: same UIDVALIDITY, same UID and GUID.
    fn check(&self, user: &str, a: &str, b: &str) -> Res<u64> {
        let (mut ra, mut rb) = self.both(user, a, b)?;
        let (ma, mb) = (ra.mailbox()?, rb.mailbox()?);
        let mut n = 0;
        for f in &ma.folders {
            let Some(g) = mb.folders.iter().find(|g| g.name == f.name) else {
                return Err(format!("folder {} is not on {b}", f.name));
            };
            if g.uid_validity != f.uid_validity {
                return Err(format!(
                    "folder {}: UIDVALIDITY {} on {a}, {} on {b}",
                    f.name, f.uid_validity, g.uid_validity
                ));
            }
            let la = ra.messages(&f.name)?;
            let lb = rb.messages(&f.name)?;
            let there: BTreeMap<u32, &str> = lb.messages.iter().map(|m| (m.uid, m.guid.as_str())).collect();
            for m in &la.messages {
                if there.get(&m.uid) != Some(&m.guid.as_str()) {
                    return Err(format!("folder {}: UID {} ({}) is not on {b}", f.name, m.uid, m.guid));
                }
            }
            n += la.messages.len() as u64;
        }
        Ok(n)
    }

    /// Merges `user` from every reachable old replicator into every new one, and checks
    /// each new one against the first old one that merged. Returns the messages checked.
    fn copy(&self, user: &str, olds: &[String], news: &[String]) -> Res<u64> {
        let Some((first, others)) = news.split_first() else {
            return Err("a pair without replicator= addresses".into());
        };
        let mut source = None;
        let mut why = Vec::new();
        for o in olds {
            match self.merge(user, o, first) {
                Ok(()) => source = source.or(Some(o.clone())),
                Err(e) => why.push(format!("{o}: {e}")),
            }
        }
        let source = source.ok_or_else(|| format!("no replicator of the old pair merged: {}", why.join("; ")))?;
        for n in others {
            self.merge(user, first, n)?;
        }
        let mut count = 0;
        for n in news {
            count = self.check(user, &source, n)?;
        }
        Ok(count)
    }

    /// Clears the old↔new sync states, then empties the old copies; refused unless the
    /// director's table sends `user` to pair `to` already.
    fn remove(&self, user: &str, to: &str, olds: &[String], news: &[String]) -> Res<()> {
        let d = self.director.as_ref().ok_or("no director_pairs")?;
        let (now, _) = d.pair_of(user)?;
        if d.pairs().get(now).map(|p| p.name.as_str()) != Some(to) {
            return Err(format!(
                "director_user_map does not send {user} to {to} yet: the old copy is what clients read"
            ));
        }
        for o in olds {
            for n in news {
                let (mut ro, mut rn) = self.both(user, o, n)?;
                let (no, nn) = (ro.node().to_string(), rn.node().to_string());
                rn.save_state(&no, &SyncState::default())?;
                ro.save_state(&nn, &SyncState::default())?;
            }
        }
        for o in olds {
            let mut r = self.connect(o, PROBE)?;
            r.open(user)?;
            r.lock(self.timeout)?;
            let done = empty(&mut r);
            r.unlock();
            done?;
        }
        Ok(())
    }
}

/// Expunges every message and deletes every folder but INBOX (the caller holds the lock).
fn empty(r: &mut RemoteReplica) -> Res<()> {
    let mb = r.mailbox()?;
    // deepest first, so a folder's children go before it
    let mut folders = mb.folders.clone();
    folders.sort_by_key(|f| std::cmp::Reverse(f.name.matches('.').count()));
    for f in &folders {
        let l = r.messages(&f.name)?;
        let uids: Vec<u32> = l.messages.iter().map(|m| m.uid).collect();
        for chunk in uids.chunks(1000) {
            r.expunge(&f.name, chunk.to_vec())?;
        }
        if f.name != "INBOX" {
            r.delete_folder(&f.name)?;
        }
    }
    for s in &mb.subscriptions {
        r.subscribe(s, false)?;
    }
    Ok(())
}
