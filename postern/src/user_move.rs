//! `postern user where|move|pin|rebalance`: which pair of mailbox servers holds a user
//! (the director, issue 16), and moving mailboxes between pairs with nothing lost.
//!
//! ```text
//! postern user where NAME         the user's pair, and whether the ring or the table says so
//! postern user move NAME PAIR     moves the mailbox to PAIR and switches the user there
//! postern user pin                records every user's current pair in director_user_map
//! postern user rebalance          moves each pinned user to the ring's pair, unpins the rest
//! ```
//!
//! A move, for each user (a rebalance does every step for all its users at once, on up
//! to [`WORKERS`] threads):
//! 1. **copy and check**: asked of the replicator of this host (the `replicator` unix
//!    service on `private/replicator`, with the same `director_pairs` and a
//!    `replica_secret_file`; this command links no replication code and needs no secret):
//!    it merges the mailbox from every reachable replicator of the old pair into every
//!    replicator of the new one, over their peer protocol, while the user may be logged
//!    in and reading (messages keep their UIDs, folders their UIDVALIDITY), then checks
//!    that every folder of the old copy is on each new replicator with the same
//!    UIDVALIDITY, every message under the same UID and GUID (`replicator::user_move`);
//! 2. **switch**: `director_user_map` gets the new pair (or loses the user's entry when the
//!    ring gives the new pair anyway) in one atomic rename; proxies see it within a
//!    second and close the user's sessions on the old pair between two commands (the
//!    clients reconnect and reach the new pair); this command waits [`GRACE`];
//! 3. **last copy and check**: what the old sessions changed meanwhile is merged again,
//!    and checked again. If this fails, the table is switched back (the user is on the
//!    old pair, complete; what reached the new pair meanwhile is there for the next move,
//!    which merges both ways);
//! 4. **remove**: asked of the replicator too, which does it only once the table sends
//!    the user to the new pair: the sync state between old and new replicators is
//!    cleared on both (so a later merge of the two is a first contact, never an
//!    "expunged there"), then on each old replicator every message is expunged and every
//!    folder but INBOX deleted.
//!
//! A new pair holding an emptied old copy of the user (from an earlier move away) is
//! refused before anything is merged: with no sync state, its GUID expunge log would
//! make the first merge expunge the messages on the old pair. Its operator removes that
//! directory first.
//!
//! Stopped or failed before step 2, the user stays on the old pair with the mailbox
//! there untouched (a partial copy on the new pair is harmless: the next move merges
//! it). The old copy is removed only after step 3's check.
//!
//! Hubs whose `director_pairs` name each pair's `smtp=` addresses and read the same
//! `director_user_map` queue new mail for the user to the new pair from the switch on
//! ([`postern_lib::director::hub_relays`]). Limits: a copy a hub queued for the old pair
//! before the switch and delivers after step 3 is left in the old copy (as is all hub
//! mail when the hubs route by `replica_relays` only); a command that a client started on
//! the old pair before the switch and that runs longer than [`GRACE`] may change the old
//! copy after the last merge. The removal leaves an empty INBOX (and the replicators'
//! files) on the old pair. A step's answer is awaited up to [`STEP_WAIT`] (a merge of a
//! large mailbox takes a while; each exchange of the replicator with a peer is bounded by
//! `replica_timeout`).

use crate::files::{DirLock, print};
use postern_lib::config::Config;
use postern_lib::director::{self, Director, Source};
use postern_lib::proto::replica::{self, MoveStep, ReplicaReply, ReplicaRequest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How long a switch waits for proxies to see it and close old sessions.
pub const GRACE: Duration = Duration::from_secs(3);
/// The longest wait for the local replicator's answer to one step.
pub const STEP_WAIT: Duration = Duration::from_secs(3600);

type Res<T> = Result<T, String>;

/// One user to move.
#[derive(Clone, Debug)]
struct Move {
    user: String,
    from: usize,
    to: usize,
    /// The table's entry before the switch (restored when the last copy fails).
    before: Option<String>,
}

/// The settings a move needs.
struct Mover {
    dir: PathBuf,
    director: Director,
    map: PathBuf,
    /// The local replicator's socket.
    socket: PathBuf,
}

fn load(dir: &Path) -> Result<(Config, Director), String> {
    let config = Config::load(dir).map_err(|e| e.to_string())?;
    let d = Director::from_config(&config.main)?.ok_or("director_pairs is not set: there is one pair")?;
    Ok((config, d))
}

/// `postern user where NAME`.
pub fn where_is(dir: &Path, user: &str) -> Result<ExitCode, String> {
    let (_, d) = load(dir)?;
    let (i, src) = d.pair_of(user)?;
    let ring = d.ring_pair(user);
    let name = |i: usize| d.pairs().get(i).map(|p| p.name.clone()).unwrap_or_default();
    let why = match src {
        Source::Ring => "by hashing".to_string(),
        Source::Map if i == ring => "director_user_map (the same as by hashing)".to_string(),
        Source::Map => format!("director_user_map (by hashing: {})", name(ring)),
    };
    print(&format!("{user} {} {why}\n", name(i)))?;
    Ok(ExitCode::SUCCESS)
}

impl Mover {
    fn new(dir: &Path) -> Result<Mover, String> {
        let (config, director) = load(dir)?;
        let m = &config.main;
        if m.director_user_map.is_empty() {
            return Err("director_user_map is not set: a move is recorded there".into());
        }
        let socket = m.queue_directory.path().join(replica::SOCKET);
        if !socket.exists() {
            return Err(format!(
                "no replicator on this host ({} is missing): a move is done by the replicator unix \
                 service, with director_pairs and replica_secret_file (see etc/master.toml)",
                socket.display()
            ));
        }
        Ok(Mover {
            dir: dir.to_path_buf(),
            map: m.director_user_map.path().to_path_buf(),
            director,
            socket,
        })
    }

    fn pair_name(&self, i: usize) -> String {
        self.director.pairs().get(i).map(|p| p.name.clone()).unwrap_or_default()
    }

    /// Asks the local replicator to do `step` of `mv`.
    fn ask(&self, mv: &Move, step: MoveStep) -> Res<ReplicaReply> {
        let req = ReplicaRequest::Move {
            user: mv.user.clone(),
            from: self.pair_name(mv.from),
            to: self.pair_name(mv.to),
            step,
        };
        match replica::request(&self.socket, &req, STEP_WAIT) {
            Ok(ReplicaReply::Failed { reason }) => Err(reason),
            Ok(r) => Ok(r),
            Err(e) => Err(format!("the replicator ({}): {e}", self.socket.display())),
        }
    }

    /// Copies and checks `mv` (through the replicator); the messages checked.
    fn copy(&self, mv: &Move) -> Res<u64> {
        match self.ask(mv, MoveStep::Copy)? {
            ReplicaReply::Copied { messages } => Ok(messages),
            other => Err(format!("the replicator answered {other:?}")),
        }
    }

    /// Empties the old copy of `mv` (through the replicator).
    fn remove(&self, mv: &Move) -> Res<()> {
        match self.ask(mv, MoveStep::Remove)? {
            ReplicaReply::Removed => Ok(()),
            other => Err(format!("the replicator answered {other:?}")),
        }
    }

    /// Writes the table for `moves` (`back`: their entries from before).
    fn switch(&self, moves: &[Move], back: bool) -> Res<()> {
        let _lock = DirLock::exclusive(&self.dir)?;
        let changes: Vec<(String, Option<String>)> = moves
            .iter()
            .map(|m| {
                let entry = if back {
                    m.before.clone()
                } else if self.director.ring_pair(&m.user) == m.to {
                    None
                } else {
                    Some(self.pair_name(m.to))
                };
                (m.user.clone(), entry)
            })
            .collect();
        director::edit_map(&self.map, &changes)
    }

    /// Moves every user of `moves`; returns the failures (`user: why`).
    fn run(&self, moves: Vec<Move>) -> Vec<String> {
        let mut failed = Vec::new();
        let mut copied = Vec::new();
        let results = parallel(&moves, |mv| self.copy(mv));
        for (mv, r) in moves.into_iter().zip(results) {
            match r {
                Ok(n) => {
                    println!(
                        "{}: copied to {} ({n} messages checked)",
                        mv.user,
                        self.pair_name(mv.to)
                    );
                    copied.push(mv);
                }
                Err(e) => failed.push(format!("{}: copy: {e} (stays on {})", mv.user, self.pair_name(mv.from))),
            }
        }
        if copied.is_empty() {
            return failed;
        }
        if let Err(e) = self.switch(&copied, false) {
            for mv in &copied {
                failed.push(format!(
                    "{}: switch: {e} (stays on {})",
                    mv.user,
                    self.pair_name(mv.from)
                ));
            }
            return failed;
        }
        std::thread::sleep(GRACE);
        let mut switched = Vec::new();
        let mut back = Vec::new();
        let results = parallel(&copied, |mv| self.copy(mv));
        for (mv, r) in copied.into_iter().zip(results) {
            match r {
                Ok(_) => switched.push(mv),
                Err(e) => {
                    failed.push(format!(
                        "{}: last copy: {e} (switched back to {})",
                        mv.user,
                        self.pair_name(mv.from)
                    ));
                    back.push(mv);
                }
            }
        }
        if !back.is_empty()
            && let Err(e) = self.switch(&back, true)
        {
            failed.push(format!("switching back: {e}"));
        }
        let results = parallel(&switched, |mv| self.remove(mv));
        for (mv, r) in switched.into_iter().zip(results) {
            match r {
                Ok(()) => println!(
                    "{}: moved from {} to {}",
                    mv.user,
                    self.pair_name(mv.from),
                    self.pair_name(mv.to)
                ),
                Err(e) => failed.push(format!(
                    "{}: moved to {}, but the old copy on {} was not removed: {e}",
                    mv.user,
                    self.pair_name(mv.to),
                    self.pair_name(mv.from)
                )),
            }
        }
        failed
    }

    /// The table's entry for `user` now.
    fn entry(&self, user: &str) -> Res<Option<String>> {
        Ok(director::map_entries(&self.map)?
            .into_iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(user))
            .map(|(_, p)| p))
    }
}

/// Threads that move users at once.
const WORKERS: usize = 4;

/// `f` of every item, on up to [`WORKERS`] threads; the results in the items' order.
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out: std::sync::Mutex<Vec<Option<R>>> = std::sync::Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..WORKERS.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if let Some(slot) = out.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

fn report(failed: Vec<String>) -> Result<ExitCode, String> {
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &failed {
        eprintln!("postern: {f}");
    }
    Ok(ExitCode::FAILURE)
}

/// `postern user move NAME PAIR`.
pub fn move_user(dir: &Path, user: &str, target: &str) -> Result<ExitCode, String> {
    let m = Mover::new(dir)?;
    let to = m
        .director
        .index(target)
        .ok_or_else(|| format!("{target:?} is not in director_pairs"))?;
    let (from, _) = m.director.pair_of(user)?;
    if from == to {
        print(&format!("{user} is on {target} already\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let before = m.entry(user)?;
    report(m.run(vec![Move {
        user: user.to_string(),
        from,
        to,
        before,
    }]))
}

/// `postern user pin`: every user of `CONFIG_DIR/users` without an entry gets one naming
/// the pair it is on now (run before a pair is added to director_pairs: nobody moves
/// until `rebalance` has moved the mailbox).
pub fn pin(dir: &Path) -> Result<ExitCode, String> {
    let (config, d) = load(dir)?;
    if config.main.director_user_map.is_empty() {
        return Err("director_user_map is not set".into());
    }
    let map = config.main.director_user_map.path().to_path_buf();
    let users = postern_lib::users::Users::load(&postern_lib::users::path(dir)).map_err(|e| e.to_string())?;
    let _lock = DirLock::exclusive(dir)?;
    let have: std::collections::HashSet<String> = director::map_entries(&map)?
        .into_iter()
        .map(|(u, _)| u.to_lowercase())
        .collect();
    let mut changes = Vec::new();
    for u in users.list() {
        if have.contains(&u.name.to_lowercase()) {
            continue;
        }
        let (i, _) = d.pair_of(&u.name)?;
        changes.push((u.name.clone(), d.pairs().get(i).map(|p| p.name.clone())));
    }
    director::edit_map(&map, &changes)?;
    print(&format!("{} users pinned\n", changes.len()))?;
    Ok(ExitCode::SUCCESS)
}

/// `postern user rebalance`: each user in the table whose entry differs from the ring's
/// pair is moved there (all in one switch); entries equal to the ring's pair are removed.
pub fn rebalance(dir: &Path) -> Result<ExitCode, String> {
    let m = Mover::new(dir)?;
    let mut same = Vec::new();
    let mut moves = Vec::new();
    for (user, pair) in director::map_entries(&m.map)? {
        let ring = m.director.ring_pair(&user);
        match m.director.index(&pair) {
            Some(i) if i == ring => same.push((user, None)),
            Some(from) => moves.push(Move {
                user,
                from,
                to: ring,
                before: Some(pair),
            }),
            None => eprintln!("postern: {user}: pair {pair:?} is not in director_pairs: left alone"),
        }
    }
    {
        let _lock = DirLock::exclusive(dir)?;
        director::edit_map(&m.map, &same)?;
    }
    let n = moves.len();
    print(&format!("{} users unpinned, {n} to move\n", same.len()))?;
    let failed = m.run(moves);
    print(&format!("{} of {n} users moved\n", n - failed.len().min(n)))?;
    report(failed)
}
