//! Spare queue files: the files of finished messages, kept for cleanup to write the next
//! message into instead of creating a new file.
//!
//! Why: ext4 without a journal (the queue file system measured in issue 14) does not hand
//! out an inode freed in the last ~30 s while it can find another, and finds out by looking
//! at each candidate (`recently_deleted` in the kernel's inode allocator). A queue that
//! creates one file per message and unlinks it a second later makes every new file scan
//! past all of the last half minute's: at 500 messages/s that scan was about a third of
//! cleanup's CPU (`perf`, BENCHMARKS.md). A file that is never unlinked costs nothing of the
//! kind, on any file system.
//!
//! How: qmgr moves a finished message's file to `spare/.<QUEUEID>` instead of unlinking it
//! ([`Giver::dispose`]), while `spare/` holds fewer than [`MAX_SPARES`] and the file is at
//! most [`MAX_SPARE_SIZE`] bytes (else it unlinks it, as before). cleanup takes a spare
//! ([`take_durable`]) by renaming it to its temporary name in the directory the new message goes
//! to; the rename is the claim (two cleanup processes wanting the same spare: one gets
//! ENOENT and tries the next). The spare is then opened like any queue file that is
//! updated in place ([`crate::safe_open::open_update`]: no symlink, a regular file with one
//! link, owned by us), rewritten from its start, cut to its new length and fdatasynced, and
//! only then renamed to its queue ID — the same sequence and the same durability as a new
//! file, with no inode allocated or freed.
//!
//! Claims are durable before use ([`take_durable`]): a process claims up to
//! [`CLAIM_BATCH`] spares at once (one rename each, to temporary names in the directory
//! new messages go to) and fsyncs `spare/` once for all of them, before any of them gets a
//! queue name. Without that fsync a crash could leave one inode named both in `spare/` and
//! as a queued message (a rename between two directories reaches the disk as two directory
//! blocks, which ext4 without a journal writes independently), and the next take of that
//! spare would overwrite the queued message. The same holds for the name a spare had
//! before it was given: qmgr gives only files from `active/` ([`GIVEN_FROM`], beside
//! `spare/`; any other file is unlinked), and its rename out of `active/` is made durable
//! by the same claim, which fsyncs `active/` too (once per batch): a spare that has been
//! claimed was seen in `spare/`, so its rename out of `active/` came first and that fsync
//! writes it. Without it a crash could leave a reused inode still named `active/<old ID>`
//! on disk beside its new queue name. qmgr itself syncs nothing when it gives: the cost is
//! one directory fsync more per claimed batch, on cleanup's side. Claimed spares a process did not use are
//! removed when it exits ([`release_claimed`]); after a crash they are left as temporary
//! files, which qmgr never reads, until the next cleanup process to start removes those whose
//! maker is gone ([`remove_abandoned_claims`]).
//!
//! Safety: a spare is never a queue file: its name starts with `.` in a directory no daemon
//! reads mail from, and once taken it carries cleanup's temporary name until all of the new
//! message is in it. A crash leaves it a spare or a temporary (which qmgr never reads), never
//! a queue file with old content. A spare holds a delivered message's content until it is
//! reused or unlinked, readable by mail_owner only (`spare/` is 0700, like the queue's other
//! directories): no more exposure than the queue itself.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::safe_open::{Expect, open_update};

/// The directory of spare files, below the queue directory.
pub const SPARE_DIR: &str = "spare";

/// The only directory spares are given from (beside the spare directory): qmgr's `active/`.
pub const GIVEN_FROM: &str = "active";

/// Most files kept in [`SPARE_DIR`] (about the messages in flight at a few hundred a second).
pub const MAX_SPARES: usize = 256;

/// Largest file kept as a spare: the pool holds at most `MAX_SPARES × MAX_SPARE_SIZE` bytes.
pub const MAX_SPARE_SIZE: u64 = 128 * 1024;

/// Finished files unlinked without listing `spare/` again once a listing found it full (a
/// full pool was listed at every give).
const FULL_SKIP: usize = 32;

/// Names a process tries beyond a batch's size per claim ([`take_durable`]).
const MAX_TRIES: usize = 8;

/// An empty `spare/` is listed again only after this long.
const RELIST_EMPTY: Duration = Duration::from_millis(200);

/// The giving side (qmgr): a finished message's file becomes a spare or is unlinked.
#[derive(Debug)]
pub struct Giver {
    dir: PathBuf,
    /// Spares at the last listing plus those given since: never fewer than there are
    /// (cleanup only takes), so `spare/` is listed again only when this says full.
    estimate: usize,
    /// Files still to be unlinked without listing `spare/` again, after it was found full.
    full_skip: usize,
}

impl Giver {
    /// Gives to `spare_dir` (normally [`SPARE_DIR`], relative to the queue directory).
    pub fn new(spare_dir: impl Into<PathBuf>) -> Giver {
        Giver {
            dir: spare_dir.into(),
            // Listed at the first give.
            estimate: MAX_SPARES,
            full_skip: 0,
        }
    }

    /// Disposes of the finished queue file `path` whose queue ID is `id`: moves it to
    /// `<spare_dir>/.<id>` when it is a small enough plain file in [`GIVEN_FROM`] (the
    /// directory whose fsync a claim makes, see the module doc) and there is room, else
    /// unlinks it. An error is the unlink's.
    pub fn dispose(&mut self, path: &Path, id: &str) -> io::Result<()> {
        let small = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() <= MAX_SPARE_SIZE);
        if small && path.parent() == Some(given_from(&self.dir).as_path()) && self.has_room() {
            let to = self.dir.join(format!(".{id}"));
            if std::fs::rename(path, &to).is_ok() {
                self.estimate += 1;
                return Ok(());
            }
        }
        std::fs::remove_file(path)
    }

    fn has_room(&mut self) -> bool {
        if self.estimate >= MAX_SPARES {
            if self.full_skip > 0 {
                self.full_skip -= 1;
                return false;
            }
            self.estimate = count(&self.dir);
            if self.estimate >= MAX_SPARES {
                self.full_skip = FULL_SKIP;
            }
        }
        self.estimate < MAX_SPARES
    }
}

/// The directory spares in `spare_dir` are given from: [`GIVEN_FROM`] beside it.
fn given_from(spare_dir: &Path) -> PathBuf {
    spare_dir.parent().unwrap_or(Path::new("")).join(GIVEN_FROM)
}

/// Spares in `dir` (at most `MAX_SPARES + 1` counted); a missing directory has none.
fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().as_encoded_bytes().first() == Some(&b'.'))
                .take(MAX_SPARES + 1)
                .count()
        })
        .unwrap_or(MAX_SPARES)
}

/// Most spares a process claims at once ([`take_durable`]): one fsync of `spare/` per batch.
pub const CLAIM_BATCH: usize = 16;

/// Spares this process has claimed into a directory (durably) and not yet used.
struct Claimed {
    dir: PathBuf,
    paths: Vec<PathBuf>,
    /// A thread is claiming the next batch for this directory now.
    claiming: bool,
}

static CLAIMED: Mutex<Vec<Claimed>> = Mutex::new(Vec::new());

/// Numbers the temporary names of claimed spares within this process.
static CLAIM_SEQ: AtomicU64 = AtomicU64::new(0);

/// Signalled when a batch has been claimed.
static CLAIM_DONE: Condvar = Condvar::new();

/// A thread claims the next batch when a directory's claimed spares run down to this many,
/// so the others rarely find none (and make a new file) while it claims.
const CLAIM_LOW: usize = CLAIM_BATCH / 4;

/// How long a thread that found no claimed spare waits for the batch being claimed.
const CLAIM_WAIT: Duration = Duration::from_millis(20);

/// What one look at the claimed spares of a directory gives.
enum Next {
    /// A claimed spare; `true`: few are left, this thread claims the next batch too.
    Path(PathBuf, bool),
    /// None left: this thread claims the next batch.
    Claim,
    /// None left, and none came within [`CLAIM_WAIT`] from another thread's claim.
    Nothing,
}

fn next_claimed(dir: &Path) -> Next {
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    let mut waited = false;
    loop {
        let i = match claimed.iter().position(|c| c.dir == dir) {
            Some(i) => i,
            None => {
                claimed.push(Claimed {
                    dir: dir.to_owned(),
                    paths: Vec::new(),
                    claiming: false,
                });
                claimed.len() - 1
            }
        };
        let Some(c) = claimed.get_mut(i) else {
            return Next::Nothing;
        };
        if let Some(p) = c.paths.pop() {
            let claim = c.paths.len() <= CLAIM_LOW && !c.claiming;
            c.claiming |= claim;
            return Next::Path(p, claim);
        }
        if !c.claiming {
            c.claiming = true;
            return Next::Claim;
        }
        if waited {
            return Next::Nothing;
        }
        waited = true;
        claimed = CLAIM_DONE
            .wait_timeout(claimed, CLAIM_WAIT)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

fn claimed_done(dir: &Path, batch: Vec<PathBuf>) {
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = claimed.iter_mut().find(|c| c.dir == dir) {
        c.claiming = false;
        c.paths.extend(batch);
    }
    drop(claimed);
    CLAIM_DONE.notify_all();
}

/// The taking side (cleanup): a spare claimed into `dir` under a temporary name starting
/// with `prefix`, whose old name in `spare_dir` is gone on disk (see the module doc),
/// opened for rewriting. Returns the file, its current length and its path, or `None` when
/// there is no spare to take now (create a new file then). `spare_dir` is normally
/// [`SPARE_DIR`].
pub fn take_durable(spare_dir: &Path, dir: &Path, prefix: &str) -> Option<(File, u64, PathBuf)> {
    let mut claims = 0;
    loop {
        let path = match next_claimed(dir) {
            Next::Path(path, claim) => {
                if claim {
                    claimed_done(dir, claim_batch(spare_dir, dir, prefix));
                }
                path
            }
            Next::Nothing => return None,
            Next::Claim => {
                let batch = if claims < 2 {
                    claim_batch(spare_dir, dir, prefix)
                } else {
                    Vec::new()
                };
                claims += 1;
                let none = batch.is_empty();
                claimed_done(dir, batch);
                if none {
                    return None;
                }
                continue;
            }
        };
        let opened = open_update(&path, &owner())
            .ok()
            .and_then(|f| f.metadata().ok().map(|m| (f, m.len())));
        match opened {
            Some((f, len)) => return Some((f, len, path)),
            None => {
                // Not a plain file of ours: it goes, and the next one is tried.
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// What a claimed spare must be owned by: this process's effective user, asked once (a
/// taking process has dropped its privileges for good before it takes a spare).
fn owner() -> Expect {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    Expect::owner(*EUID.get_or_init(|| rustix::process::geteuid().as_raw()))
}

/// Renames up to [`CLAIM_BATCH`] spares into `dir` and fsyncs `spare_dir` and the directory
/// they were given from ([`GIVEN_FROM`]) once; the paths claimed (none when an fsync
/// failed: they are removed).
fn claim_batch(spare_dir: &Path, dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut got = Vec::new();
    let pid = std::process::id();
    for _ in 0..CLAIM_BATCH + MAX_TRIES {
        if got.len() >= CLAIM_BATCH {
            break;
        }
        let Some(name) = next_name(spare_dir) else {
            break;
        };
        let n = CLAIM_SEQ.fetch_add(1, Ordering::Relaxed);
        let to = dir.join(format!("{prefix}{pid}.{n}"));
        match std::fs::rename(spare_dir.join(&name), &to) {
            Ok(()) => got.push(to),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => break,
        }
    }
    if !got.is_empty() && (!fsync_dir(spare_dir) || !fsync_dir(&given_from(spare_dir))) {
        for p in got.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }
    got
}

/// Fsyncs a directory; true too when it does not exist (nothing was renamed out of it).
fn fsync_dir(dir: &Path) -> bool {
    match crate::safe_open::fsync_dir(dir) {
        Ok(()) => true,
        Err(_) => !dir.exists(),
    }
}

/// Removes the spares this process claimed and did not use (when it exits).
pub fn release_claimed() {
    let claimed = std::mem::take(&mut *CLAIMED.lock().unwrap_or_else(|p| p.into_inner()));
    for c in claimed {
        for p in c.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Removes the spares claimed into `dir` under `prefix` (`PREFIX<PID>.<N>`, as
/// [`take_durable`] names them) by processes that are gone: a process killed before
/// [`release_claimed`] ran leaves up to [`CLAIM_BATCH`] of them, which nothing reads.
/// A claim whose PID names a live process (its maker, or another process that got the PID
/// since) is kept. Returns how many were removed. At most `MAX_SPARES × 16` names are
/// looked at, so a directory filled by someone else cannot hold the caller.
pub fn remove_abandoned_claims(dir: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten().take(MAX_SPARES * 16) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
        if !alive && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Names of spares this process has seen in a spare directory and not yet tried, and when
/// that directory was last listed and found empty.
struct Seen {
    dir: PathBuf,
    names: Vec<String>,
    empty_at: Option<Instant>,
}

static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

fn next_name(spare_dir: &Path) -> Option<String> {
    let mut guard = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = match guard.as_mut() {
        Some(s) if s.dir == spare_dir => s,
        _ => guard.insert(Seen {
            dir: spare_dir.to_owned(),
            names: Vec::new(),
            empty_at: None,
        }),
    };
    if let Some(n) = seen.names.pop() {
        return Some(n);
    }
    if seen.empty_at.is_some_and(|t| t.elapsed() < RELIST_EMPTY) {
        return None;
    }
    seen.names = std::fs::read_dir(spare_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.len() > 1 && n.len() <= 64 && n.starts_with('.'))
                .take(MAX_SPARES)
                .collect()
        })
        .unwrap_or_default();
    seen.empty_at = seen.names.is_empty().then(Instant::now);
    seen.names.pop()
}

#[cfg(test)]
mod tests;
