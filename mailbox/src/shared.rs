//! One [`Folder`] state per mailbox folder per thread, shared by every session of a
//! single-threaded server (imapd's event loop), and one inotify watch per such folder.
//!
//! A session holds a [`Handle`]; while it runs a command it takes the state out
//! ([`Handle::take`]) and puts it back afterwards ([`Handle::put`]) — sessions of one loop
//! never run at the same time, so no lock is needed and a session's commands work on
//! `&mut Folder` as before. The state lives while a handle does: the last handle dropped
//! frees it and removes its watches, so a process's memory follows the folders in use.
//!
//! Change detection: after [`enable_watching`] (the event loop registers the returned
//! descriptor and calls [`watch_events`] when it is readable), each state gets an inotify
//! watch on its `new/` and `cur/` (set up before it is first read); an event marks it
//! changed ([`Folder::mark_changed`]) and [`Handle::refresh`] then syncs it once, whatever
//! the number of sessions; a watched state's [`Folder::changed`] costs no system call. A state without a watch
//! (`inotify_add_watch` failed, e.g. ENOSPC at the system's `max_user_watches`) falls back
//! to its stamps ([`Folder::changed`], three `stat`s) at most once per round of polls
//! ([`new_round`], which the event loop calls at each tick).
//! Sessions compare [`Folder::generation`]s: nothing changed, nothing to do.
//!
//! A watched state's own changes (a rename for new flags, an expunge, an APPEND, a move
//! from `new/` to `cur/`) are told to the registry as they are made ([`expect`]); the
//! events they cause are then matched by name and kind and dropped instead of marking
//! the state changed, so a state rescans only for what another state or process did. An
//! event the registry did not expect, or a lost one (the queue overflowed), marks it.
//!
//! Kept warm: with [`set_keep`] (imapd's `imapd_folder_keep_time`), a state whose last
//! handle is dropped is not freed at once but kept, with its watch, for that long, so a
//! client that logs out and in again (or opens one connection per command) does not
//! read the folder afresh (`cur/`, the uidlist, the index). A kept state is checked like
//! any other when a handle opens it again: its watch's mark (the pending events read
//! first), else its stamps; what another process changed meanwhile is synced then. At most
//! [`Keep::states`] states and [`Keep::bytes`] of them (estimated,
//! [`Folder::memory_estimate`]) are kept, the oldest going first; [`expire`] (the event
//! loop's tick) frees those kept longer than [`Keep::time`], and their memory goes back to
//! the system then.

use super::Result;
use super::folder::Folder;
use rustix::fd::{AsRawFd, OwnedFd, RawFd};
use rustix::fs::inotify;
use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Entry {
    folder: Option<Folder>,
    users: usize,
    /// Watch descriptors of new/ and cur/, when watched.
    watches: Vec<i32>,
    /// The watch saw a change while the state was taken: told to it when it is put back.
    dirty: bool,
    /// The round of polls in which the stamps were last looked at.
    checked: Option<u64>,
    /// Events the state's own changes will cause, by kind ([`slot`]): name → how many.
    expected: [HashMap<Box<str>, u32>; 4],
    /// Since when no handle holds the state (kept warm, [`set_keep`]), and its estimated
    /// size then.
    kept: Option<(Instant, usize)>,
}

/// Most events a state may be waiting for: past that it forgets them and syncs once.
const MAX_EXPECTED: usize = 1 << 16;

/// The slot of [`Entry::expected`] for an event: a name that `appeared` in (or left) `sub`.
fn slot(appeared: bool, sub: &str) -> usize {
    usize::from(appeared) * 2 + usize::from(sub == "cur")
}

impl Entry {
    /// Whether an event was one the state's own change caused (forgotten then).
    fn consume(&mut self, appeared: bool, sub: &str, name: &str) -> bool {
        let map = &mut self.expected[slot(appeared, sub)];
        match map.get_mut(name) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                map.remove(name);
            }
            None => return false,
        }
        true
    }

    /// Events expected, all kinds.
    fn expecting(&self) -> usize {
        self.expected.iter().map(HashMap::len).sum()
    }

    /// Forgets the events expected.
    fn forget_expected(&mut self) {
        for m in &mut self.expected {
            *m = HashMap::new();
        }
    }

    /// The watch saw a change.
    fn mark(&mut self) {
        match self.folder.as_mut() {
            Some(f) => f.mark_changed(),
            None => self.dirty = true,
        }
    }
}

#[derive(Default)]
struct Registry {
    states: HashMap<PathBuf, Entry>,
    inotify: Option<OwnedFd>,
    /// watch descriptor → (folder path, "new" or "cur")
    by_wd: HashMap<i32, (PathBuf, &'static str)>,
    round: u64,
    keep: Keep,
}

/// How long and how many folder states no session holds are kept warm ([`set_keep`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    /// How long after its last handle went (zero: freed at once).
    pub time: Duration,
    /// Most states kept.
    pub states: usize,
    /// Most bytes (estimated) of the states kept together.
    pub bytes: usize,
}

impl Keep {
    /// Kept for `time`, at most 16 states and 64 MB of them (a 50,000-message folder's
    /// state is about 15 MB).
    pub fn for_time(time: Duration) -> Keep {
        Keep {
            time,
            states: 16,
            bytes: 64 << 20,
        }
    }
}

/// Keeps this thread's folder states warm after their last handle went ([`Keep`]);
/// `Keep::default()` frees them at once (the default).
pub fn set_keep(keep: Keep) {
    let gone = REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        r.keep = keep;
        r.evict(None)
    });
    freed(gone);
}

/// Frees the states kept warm for longer than [`Keep::time`] (call at each tick of the
/// event loop); how many went.
pub fn expire() -> usize {
    let gone = REGISTRY.with(|r| r.borrow_mut().evict(Some(Instant::now())));
    freed(gone)
}

/// Drops states taken out of the registry, then gives the memory back; how many.
fn freed(gone: Vec<Entry>) -> usize {
    let n = gone.len();
    if n > 0 {
        // the states' envelopes are written as they drop
        drop(gone);
        super::give_back::give_back();
    }
    n
}

impl Registry {
    /// Takes the state of `path` out with its watches.
    fn remove(&mut self, path: &Path) -> Option<Entry> {
        let mut e = self.states.remove(path)?;
        for wd in std::mem::take(&mut e.watches) {
            self.by_wd.remove(&wd);
            if let Some(fd) = self.inotify.as_ref() {
                let _ = inotify::remove_watch(fd, wd);
            }
        }
        Some(e)
    }

    /// Takes out the kept states past the bounds of [`Keep`]: the oldest first while
    /// there are too many or too much of them, and, with `now`, those kept too long.
    fn evict(&mut self, now: Option<Instant>) -> Vec<Entry> {
        let mut kept: Vec<(Instant, PathBuf, usize)> = self
            .states
            .iter()
            .filter_map(|(p, e)| e.kept.map(|(at, bytes)| (at, p.clone(), bytes)))
            .collect();
        if kept.is_empty() {
            return Vec::new();
        }
        kept.sort_by_key(|k| k.0);
        let mut bytes: usize = kept.iter().map(|k| k.2).sum();
        let mut count = kept.len();
        let mut out = Vec::new();
        for (at, path, size) in kept {
            let old = now.is_some_and(|now| now.saturating_duration_since(at) >= self.keep.time);
            if !(old || count > self.keep.states || bytes > self.keep.bytes || self.keep.time.is_zero()) {
                continue;
            }
            count -= 1;
            bytes -= size;
            out.extend(self.remove(&path));
        }
        out
    }
}

/// Starts a new round of polls: a folder without a watch looks at its stamps once in each.
pub fn new_round() {
    REGISTRY.with(|r| r.borrow_mut().round += 1);
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// Starts watching folders with inotify for this thread's states; returns the descriptor
/// to poll for readability (then call [`watch_events`]). `None` when inotify is not
/// available (states then look at their stamps).
pub fn enable_watching() -> Option<RawFd> {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        if r.inotify.is_none() {
            match inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK) {
                Ok(fd) => r.inotify = Some(fd),
                Err(e) => {
                    tracing::warn!("inotify: {e}; folders are checked by their stamps");
                    return None;
                }
            }
        }
        r.inotify.as_ref().map(|fd| fd.as_raw_fd())
    })
}

/// Reads the pending inotify events and marks their folders dirty; returns whether any
/// folder was.
pub fn watch_events() -> bool {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        // out of the registry while it is read (no dup of the descriptor)
        let Some(fd) = r.inotify.take() else {
            return false;
        };
        let any = read_events(&mut r, &fd);
        r.inotify = Some(fd);
        any
    })
}

/// [`watch_events`] on the registry's descriptor `fd`, each event matched as it is read.
fn read_events(r: &mut Registry, fd: &OwnedFd) -> bool {
    let mut buf = [MaybeUninit::<u8>::uninit(); 16384];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut any = false;
    // the state of the last event's watch: a run of events of one folder looks it up once
    let mut last: Option<(i32, PathBuf, &'static str)> = None;
    while let Ok(ev) = reader.next() {
        let kind = ev.events();
        let wd = ev.wd();
        if kind.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
            // events were lost: every state looks once
            for e in r.states.values_mut() {
                e.forget_expected();
                e.mark();
            }
            any = true;
            continue;
        }
        if kind.contains(inotify::ReadFlags::IGNORED) {
            // a watch the kernel dropped (its directory deleted or moved): the folder's
            // state goes back to its stamps
            last = None;
            let Some((path, _)) = r.by_wd.remove(&wd) else { continue };
            let mut rest = Vec::new();
            if let Some(e) = r.states.get_mut(&path) {
                if let Some(f) = e.folder.as_mut() {
                    f.set_watched(false);
                }
                e.forget_expected();
                rest = e.watches.drain(..).filter(|&w| w != wd).collect();
            }
            for w in rest {
                r.by_wd.remove(&w);
                let _ = inotify::remove_watch(fd, w);
            }
            continue;
        }
        if last.as_ref().is_none_or(|l| l.0 != wd) {
            last = r.by_wd.get(&wd).map(|(p, sub)| (wd, p.clone(), *sub));
        }
        let Some((_, path, sub)) = last.as_ref() else { continue };
        let Some(e) = r.states.get_mut(path) else { continue };
        let appeared = kind.intersects(inotify::ReadFlags::CREATE | inotify::ReadFlags::MOVED_TO);
        let gone = kind.intersects(inotify::ReadFlags::DELETE | inotify::ReadFlags::MOVED_FROM);
        let name = ev.file_name().and_then(|n| n.to_str().ok());
        if let Some(name) = name
            && appeared != gone
            && e.consume(appeared, sub, name)
        {
            continue;
        }
        e.mark();
        any = true;
    }
    any
}

fn add_watches(r: &mut Registry, path: &Path) -> Vec<i32> {
    let Some(fd) = r.inotify.as_ref() else {
        return Vec::new();
    };
    let flags = inotify::WatchFlags::CREATE
        | inotify::WatchFlags::DELETE
        | inotify::WatchFlags::MOVED_FROM
        | inotify::WatchFlags::MOVED_TO
        | inotify::WatchFlags::DELETE_SELF
        | inotify::WatchFlags::MOVE_SELF;
    let mut wds = Vec::new();
    let subs = ["new", "cur"];
    for sub in subs {
        match inotify::add_watch(fd, path.join(sub), flags) {
            Ok(wd) => wds.push(wd),
            Err(e) => {
                tracing::info!("inotify watch {}: {e}; checked by its stamps", path.join(sub).display());
                for wd in wds.drain(..) {
                    let _ = inotify::remove_watch(fd, wd);
                }
                return wds;
            }
        }
    }
    for (&wd, sub) in wds.iter().zip(subs) {
        r.by_wd.insert(wd, (path.to_path_buf(), sub));
    }
    wds
}

/// A session's share of a folder state.
#[derive(Debug)]
pub struct Handle {
    path: PathBuf,
}

impl Handle {
    /// Opens the folder at `path`: the state this thread already has (synced if it
    /// changed), else a new one. The state comes out taken: [`Handle::put`] it back.
    pub fn open(path: &Path) -> Result<(Handle, Folder)> {
        // what changed before this open is seen by it (an existing state's watch marks)
        watch_events();
        // a kept state of what is another folder at this path now (the folder was renamed
        // away, or deleted and made anew): freed, and this one read afresh
        let stale = REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            let e = r.states.get(path)?;
            let other = e.kept.is_some() && e.folder.as_ref().is_some_and(|f| !f.same_directories());
            if other { r.remove(path) } else { None }
        });
        drop(stale);
        // Some(None): the state exists but is taken (by the caller itself): a state of
        // its own for this one, whichever is put back last stays
        let existing = REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            let e = r.states.get_mut(path)?;
            e.users += 1;
            e.kept = None;
            Some(e.folder.take())
        });
        let handle = Handle {
            path: path.to_path_buf(),
        };
        if let Some(None) = existing {
            return Ok((handle, Folder::open(path)?));
        }
        let existing = existing.flatten();
        if let Some(mut f) = existing {
            // the watch's mark (or the stamps), and the index and uidlist as it left them
            if (f.changed() || f.files_changed())
                && let Err(e) = f.sync()
            {
                handle.put(f);
                return Err(e);
            }
            return Ok((handle, f));
        }
        // the watch first: a change while the folder is read is not missed; and the
        // state's entry, so the moves from new/ to cur/ of its first sync are expected
        let watched = REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            let watches = add_watches(&mut r, path);
            let watched = !watches.is_empty();
            r.states.insert(
                path.to_path_buf(),
                Entry {
                    folder: None,
                    users: 1,
                    watches,
                    dirty: false,
                    checked: None,
                    expected: Default::default(),
                    kept: None,
                },
            );
            watched
        });
        let f = match Folder::open_as(path, watched) {
            Ok(f) => f,
            Err(e) => {
                let gone = REGISTRY.with(|r| r.borrow_mut().remove(path));
                drop(gone);
                return Err(e);
            }
        };
        Ok((handle, f))
    }

    /// The folder's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the state out to work on it (`None` if another holder has it out).
    pub fn take(&self) -> Option<Folder> {
        REGISTRY.with(|r| r.borrow_mut().states.get_mut(&self.path).and_then(|e| e.folder.take()))
    }

    /// For the holder of the taken state: reads the pending inotify events and says
    /// whether one was for this folder ([`Folder::mark_changed`] it then).
    pub fn notice(&self) -> bool {
        watch_events();
        REGISTRY.with(|r| {
            r.borrow_mut()
                .states
                .get_mut(&self.path)
                .is_some_and(|e| std::mem::take(&mut e.dirty))
        })
    }

    /// Puts the state back.
    pub fn put(&self, mut f: Folder) {
        REGISTRY.with(|r| {
            if let Some(e) = r.borrow_mut().states.get_mut(&self.path) {
                if e.watches.is_empty() {
                    f.set_watched(false);
                }
                if std::mem::take(&mut e.dirty) {
                    f.mark_changed();
                }
                e.folder = Some(f);
            }
        });
    }

    /// Syncs the state (while it is in) when its watch saw a change, or, without a watch,
    /// when its stamps changed (looked at once per round, [`new_round`]); returns its
    /// generation. `None` while the state is taken.
    pub fn refresh(&self) -> Option<u64> {
        let taken = REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            let round = r.round;
            let e = r.states.get_mut(&self.path)?;
            let f = e.folder.as_ref()?;
            // watched: the watch's mark, no system call; else the stamps once a round
            let look = if e.watches.is_empty() {
                e.checked != Some(round) && f.changed()
            } else {
                f.changed()
            };
            e.checked = Some(round);
            if !look {
                return Some(Err(f.generation()));
            }
            e.folder.take().map(Ok)
        })?;
        let mut folder = match taken {
            Err(generation) => return Some(generation),
            Ok(f) => f,
        };
        if let Err(e) = folder.sync() {
            tracing::warn!("sync {}: {e}", self.path.display());
        }
        let generation = folder.generation();
        self.put(folder);
        Some(generation)
    }
}

impl Drop for Handle {
    /// The last handle of a state frees it, or keeps it warm ([`set_keep`]) when it is in
    /// (not taken) and the bounds allow.
    fn drop(&mut self) {
        let gone = REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            let keep = !r.keep.time.is_zero();
            let Some(e) = r.states.get_mut(&self.path) else {
                return Vec::new();
            };
            e.users = e.users.saturating_sub(1);
            if e.users > 0 {
                return Vec::new();
            }
            if keep && let Some(f) = e.folder.as_ref() {
                e.kept = Some((Instant::now(), f.memory_estimate()));
                return r.evict(None);
            }
            r.remove(&self.path).into_iter().collect()
        });
        // the state's memory goes back to the system (its envelopes are written first)
        freed(gone);
    }
}

/// The state of `path` (a watched one) has just made a change that its watch will report
/// as an event: `appeared` (created or moved in) or not (removed or moved out) for `name`
/// in `sub` ("new" or "cur"). That event then does not mark the state changed.
pub(super) fn expect(path: &Path, appeared: bool, sub: &str, name: &str) {
    expect_many(path, sub, [(appeared, name)]);
}

/// [`expect`] for many changes in `sub` at once (one look-up of the state).
pub(super) fn expect_many<'n>(path: &Path, sub: &str, events: impl IntoIterator<Item = (bool, &'n str)>) {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let Some(e) = r.states.get_mut(path) else { return };
        if e.watches.is_empty() {
            return;
        }
        for (appeared, name) in events {
            if e.expecting() >= MAX_EXPECTED {
                // events that never came: forget them and look once
                e.forget_expected();
                e.mark();
                return;
            }
            let n = e.expected[slot(appeared, sub)].entry(Box::from(name)).or_insert(0);
            *n += 1;
        }
    });
}

/// Folder states this thread holds, kept warm ones too (for tests and metrics).
pub fn states() -> usize {
    REGISTRY.with(|r| r.borrow().states.len())
}

/// Folder states this thread keeps warm with no handle ([`set_keep`]).
pub fn kept() -> usize {
    REGISTRY.with(|r| r.borrow().states.values().filter(|e| e.kept.is_some()).count())
}
