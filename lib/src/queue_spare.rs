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
//! ([`take`]) by renaming it to its temporary name in the directory the new message goes
//! to; the rename is the claim (two cleanup processes wanting the same spare: one gets
//! ENOENT and tries the next). The spare is then opened like any queue file that is
//! updated in place ([`crate::safe_open::open_update`]: no symlink, a regular file with one
//! link, owned by us), rewritten from its start, cut to its new length and fdatasynced, and
//! only then renamed to its queue ID — the same sequence and the same durability as a new
//! file, with no inode allocated or freed.
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
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::safe_open::{Expect, open_update};

/// The directory of spare files, below the queue directory.
pub const SPARE_DIR: &str = "spare";

/// Most files kept in [`SPARE_DIR`] (about the messages in flight at a few hundred a second).
pub const MAX_SPARES: usize = 256;

/// Largest file kept as a spare: the pool holds at most `MAX_SPARES × MAX_SPARE_SIZE` bytes.
pub const MAX_SPARE_SIZE: u64 = 128 * 1024;

/// qmgr counts `spare/` again after this many files given (cleanup takes them meanwhile).
const RECOUNT_EVERY: usize = 64;

/// Most names a process tries per [`take`] before creating a new file instead.
const MAX_TRIES: usize = 8;

/// An empty `spare/` is listed again only after this long.
const RELIST_EMPTY: Duration = Duration::from_millis(200);

/// The giving side (qmgr): a finished message's file becomes a spare or is unlinked.
#[derive(Debug)]
pub struct Giver {
    dir: PathBuf,
    estimate: usize,
    since_count: usize,
}

impl Giver {
    /// Gives to `spare_dir` (normally [`SPARE_DIR`], relative to the queue directory).
    pub fn new(spare_dir: impl Into<PathBuf>) -> Giver {
        Giver {
            dir: spare_dir.into(),
            estimate: 0,
            since_count: RECOUNT_EVERY,
        }
    }

    /// Disposes of the finished queue file `path` whose queue ID is `id`: moves it to
    /// `<spare_dir>/.<id>` when it is a small enough plain file and there is room, else
    /// unlinks it. An error is the unlink's.
    pub fn dispose(&mut self, path: &Path, id: &str) -> io::Result<()> {
        let small = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() <= MAX_SPARE_SIZE);
        if small && self.has_room() {
            let to = self.dir.join(format!(".{id}"));
            if std::fs::rename(path, &to).is_ok() {
                self.estimate += 1;
                return Ok(());
            }
        }
        std::fs::remove_file(path)
    }

    fn has_room(&mut self) -> bool {
        if self.since_count >= RECOUNT_EVERY || self.estimate >= MAX_SPARES {
            self.estimate = count(&self.dir);
            self.since_count = 0;
        }
        self.since_count += 1;
        self.estimate < MAX_SPARES
    }
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

/// Names of spares this process has seen in a spare directory and not yet tried, and when
/// that directory was last listed and found empty.
struct Seen {
    dir: PathBuf,
    names: Vec<String>,
    empty_at: Option<Instant>,
}

static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

/// The taking side (cleanup): claims a spare as `dir/tmp_name` and opens it for
/// rewriting. Returns the file and its current length, or `None` when there is no spare to
/// take (create a new file then). `spare_dir` is normally [`SPARE_DIR`].
pub fn take(spare_dir: &Path, dir: &Path, tmp_name: &str) -> Option<(File, u64)> {
    let to = dir.join(tmp_name);
    for _ in 0..MAX_TRIES {
        let name = next_name(spare_dir)?;
        match std::fs::rename(spare_dir.join(&name), &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        }
        let opened = open_update(&to, &Expect::current_user())
            .ok()
            .and_then(|f| f.metadata().ok().map(|m| (f, m.len())));
        if opened.is_none() {
            // Not a plain file of ours: it goes, and a new file is made instead.
            let _ = std::fs::remove_file(&to);
        }
        return opened;
    }
    None
}

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
