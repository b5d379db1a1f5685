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

use super::Result;
use super::folder::Folder;
use rustix::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use rustix::fs::inotify;
use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

struct Entry {
    folder: Option<Folder>,
    users: usize,
    /// Watch descriptors of new/ and cur/, when watched.
    watches: Vec<i32>,
    /// The watch saw a change while the state was taken: told to it when it is put back.
    dirty: bool,
    /// The round of polls in which the stamps were last looked at.
    checked: Option<u64>,
    /// Events the state's own changes will cause: (appeared, "cur/NAME" or "new/NAME")
    /// → how many.
    expected: HashMap<(bool, String), u32>,
}

/// Most events a state may be waiting for: past that it forgets them and syncs once.
const MAX_EXPECTED: usize = 1 << 16;

impl Entry {
    /// Whether an event was one the state's own change caused (forgotten then).
    fn consume(&mut self, appeared: bool, sub: &str, name: &str) -> bool {
        let key = (appeared, format!("{sub}/{name}"));
        match self.expected.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.expected.remove(&key);
            }
            None => return false,
        }
        true
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
        let Some(fd) = r.inotify.as_ref().map(|f| f.as_fd().try_clone_to_owned()) else {
            return false;
        };
        let Ok(fd) = fd else { return false };
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let mut reader = inotify::Reader::new(&fd, &mut buf);
        // (watch, Some((appeared, name)) for an event a state's own change may explain)
        let mut evs: Vec<(i32, Option<(bool, String)>)> = Vec::new();
        let mut ignored = Vec::new();
        let mut overflow = false;
        while let Ok(ev) = reader.next() {
            let kind = ev.events();
            if kind.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                overflow = true;
            }
            if kind.contains(inotify::ReadFlags::IGNORED) {
                ignored.push(ev.wd());
            }
            let appeared = kind.intersects(inotify::ReadFlags::CREATE | inotify::ReadFlags::MOVED_TO);
            let gone = kind.intersects(inotify::ReadFlags::DELETE | inotify::ReadFlags::MOVED_FROM);
            let name = ev.file_name().and_then(|n| n.to_str().ok()).map(str::to_string);
            let own = match name {
                Some(n) if appeared != gone => Some((appeared, n)),
                _ => None,
            };
            evs.push((ev.wd(), own));
        }
        // a watch the kernel dropped (its directory deleted or moved): the folder's state
        // goes back to its stamps
        for wd in ignored {
            let Some((path, _)) = r.by_wd.remove(&wd) else { continue };
            if let Some(e) = r.states.get_mut(&path) {
                if let Some(f) = e.folder.as_mut() {
                    f.set_watched(false);
                }
                e.expected.clear();
                let rest: Vec<i32> = e.watches.drain(..).filter(|&w| w != wd).collect();
                for w in rest {
                    r.by_wd.remove(&w);
                    let _ = inotify::remove_watch(&fd, w);
                }
            }
        }
        let mut any = false;
        if overflow {
            for e in r.states.values_mut() {
                e.expected.clear();
                e.mark();
            }
            any = true;
        }
        let Registry { states, by_wd, .. } = &mut *r;
        for (wd, own) in evs {
            if let Some((path, sub)) = by_wd.get(&wd)
                && let Some(e) = states.get_mut(path)
            {
                if let Some((appeared, name)) = own
                    && e.consume(appeared, sub, &name)
                {
                    continue;
                }
                e.mark();
                any = true;
            }
        }
        any
    })
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
        // Some(None): the state exists but is taken (by the caller itself): a state of
        // its own for this one, whichever is put back last stays
        let existing = REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            let e = r.states.get_mut(path)?;
            e.users += 1;
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
            if f.changed()
                && let Err(e) = f.sync()
            {
                handle.put(f);
                return Err(e);
            }
            return Ok((handle, f));
        }
        // the watch first: a change while the folder is read is not missed
        let watches = REGISTRY.with(|r| add_watches(&mut r.borrow_mut(), path));
        let mut f = match Folder::open(path) {
            Ok(f) => f,
            Err(e) => {
                REGISTRY.with(|r| {
                    let mut r = r.borrow_mut();
                    for wd in &watches {
                        r.by_wd.remove(wd);
                        if let Some(fd) = r.inotify.as_ref() {
                            let _ = inotify::remove_watch(fd, *wd);
                        }
                    }
                });
                return Err(e);
            }
        };
        f.set_watched(!watches.is_empty());
        REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            r.states.insert(
                path.to_path_buf(),
                Entry {
                    folder: None,
                    users: 1,
                    watches,
                    dirty: false,
                    checked: None,
                    expected: HashMap::new(),
                },
            );
        });
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
    fn drop(&mut self) {
        let gone = REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            let last = match r.states.get_mut(&self.path) {
                Some(e) => {
                    e.users = e.users.saturating_sub(1);
                    e.users == 0
                }
                None => false,
            };
            if last && let Some(mut e) = r.states.remove(&self.path) {
                for wd in std::mem::take(&mut e.watches) {
                    r.by_wd.remove(&wd);
                    if let Some(fd) = r.inotify.as_ref() {
                        let _ = inotify::remove_watch(fd, wd);
                    }
                }
                Some(e)
            } else {
                None
            }
        });
        // the state's memory goes back to the system (its envelopes are written first)
        if let Some(e) = gone {
            drop(e);
            super::give_back::give_back();
        }
    }
}

/// The state of `path` (a watched one) has just made a change that its watch will report
/// as an event: `appeared` (created or moved in) or not (removed or moved out) for `name`
/// in `sub` ("new" or "cur"). That event then does not mark the state changed.
pub(super) fn expect(path: &Path, appeared: bool, sub: &str, name: &str) {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let Some(e) = r.states.get_mut(path) else { return };
        if e.watches.is_empty() {
            return;
        }
        if e.expected.len() >= MAX_EXPECTED {
            // events that never came: forget them and look once
            e.expected.clear();
            e.mark();
            return;
        }
        *e.expected.entry((appeared, format!("{sub}/{name}"))).or_insert(0) += 1;
    });
}

/// Folder states this thread holds (for tests and metrics).
pub fn states() -> usize {
    REGISTRY.with(|r| r.borrow().states.len())
}
