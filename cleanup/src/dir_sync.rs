//! Group commit of the queue directory's fsync: the connections (threads) of this process
//! whose queue files were renamed into the same directory share one `fsync` of it.
//!
//! A thread calls [`after_rename`] once its `rename` has returned. It joins the batch
//! that is collecting for that directory. When no fsync of the directory is running, the
//! thread closes the batch and fsyncs the directory itself (the leader); otherwise it
//! waits, and when the running fsync ends, one thread of the next batch becomes its
//! leader. So every thread returns only after an fsync of its directory that *started
//! after its own rename completed* (the batch is closed before its fsync starts, and a
//! thread joins only after its rename) and succeeded: the rule before a 250 is unchanged,
//! only several renames are made durable by one flush instead of one flush each.
//!
//! A failed fsync fails every thread of its batch (none of their entries is known to be
//! on disk; a later fsync's success would not prove it after a failure). At most one
//! fsync per directory runs at a time in this process; other cleanup processes have
//! their own groups.
//!
//! The directory is opened once per process and kept: the rename into it ([`rename_into`])
//! and its fsync both go through that descriptor, so they always name the same directory
//! (were the directory replaced, the rename fails and the message is refused for now) and
//! no message pays an `open` and a `close` for the fsync.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Condvar, LazyLock, Mutex, OnceLock};

use rustix::fs::{self as rfs, Mode, OFlags};

use crate::queue::WriteError;

/// The outcome of one batch's fsync (ENOSPC/EDQUOT stay `no_space`, as unshared).
type Outcome = Result<(), WriteError>;

/// One directory's group: the batch collecting and whether an fsync is running.
#[derive(Default)]
struct Group {
    state: Mutex<GroupState>,
    done: Condvar,
    /// The directory, once opened.
    fd: OnceLock<OwnedFd>,
}

#[derive(Default)]
struct GroupState {
    collecting: Arc<OnceLock<Outcome>>,
    running: bool,
    /// Threads waiting for an fsync (the leader wakes them only when there are some).
    waiting: usize,
}

static GROUPS: LazyLock<Mutex<HashMap<&'static str, Arc<Group>>>> = LazyLock::new(Default::default);

fn group(dir: &'static str) -> Arc<Group> {
    let mut groups = GROUPS.lock().unwrap_or_else(|p| p.into_inner());
    groups.entry(dir).or_default().clone()
}

fn io_error(what: &str, dir: &str, e: rustix::io::Errno) -> WriteError {
    WriteError::io(&format!("{what} {dir}"), &std::io::Error::from(e))
}

/// The kept descriptor of `dir` (opened at the first use; an error is not kept, the next
/// call tries again).
fn dir_fd<'g>(group: &'g Group, dir: &str) -> Result<&'g OwnedFd, WriteError> {
    if group.fd.get().is_none() {
        let fd = rfs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io_error("open directory", dir, e))?;
        // Another thread may have set it meanwhile: then this one is closed.
        let _ = group.fd.set(fd);
    }
    group
        .fd
        .get()
        .ok_or_else(|| io_error("open directory", dir, rustix::io::Errno::BADF))
}

/// Renames `from` to `to`, both names in `dir`, through the kept descriptor of `dir`.
pub fn rename_into(dir: &'static str, from: &Path, to: &str) -> Result<(), WriteError> {
    let group = group(dir);
    let fd = dir_fd(&group, dir)?;
    rfs::renameat(fd, from, fd, to).map_err(|e| io_error(&format!("rename {} in", from.display()), dir, e))
}

/// Returns once `dir` has been fsynced by a call that started after this call began
/// (so after the caller's rename into it), or the error of that fsync.
pub fn after_rename(dir: &'static str) -> Outcome {
    let group = group(dir);
    sync_in(&group, dir, |d| {
        let fd = dir_fd(&group, d)?;
        rfs::fsync(fd).map_err(|e| io_error("fsync directory", d, e))
    })
}

#[cfg(test)]
fn sync_grouped(dir: &'static str, fsync: impl Fn(&str) -> Outcome) -> Outcome {
    sync_in(&group(dir), dir, fsync)
}

fn sync_in(group: &Group, dir: &'static str, fsync: impl Fn(&str) -> Outcome) -> Outcome {
    let mut state = group.state.lock().unwrap_or_else(|p| p.into_inner());
    let mine = state.collecting.clone();
    loop {
        if let Some(outcome) = mine.get() {
            return outcome.clone();
        }
        if !state.running && Arc::ptr_eq(&state.collecting, &mine) {
            // Lead: close the batch (later arrivals join the next one), then fsync.
            state.running = true;
            state.collecting = Arc::default();
            drop(state);
            let outcome = fsync(dir);
            let _ = mine.set(outcome.clone());
            let mut state = group.state.lock().unwrap_or_else(|p| p.into_inner());
            state.running = false;
            let waiting = state.waiting > 0;
            drop(state);
            if waiting {
                group.done.notify_all();
            }
            return outcome;
        }
        state.waiting += 1;
        state = group.done.wait(state).unwrap_or_else(|p| p.into_inner());
        state.waiting -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    /// Every caller returns only after an fsync that started after it called, and
    /// concurrent callers share fsyncs.
    #[test]
    fn each_caller_is_covered_by_a_later_fsync_and_callers_share() {
        static CLOCK: AtomicU64 = AtomicU64::new(0);
        static FSYNCS: AtomicUsize = AtomicUsize::new(0);
        // (began, ended) of every fsync, on one logical clock.
        let fsyncs = Mutex::new(Vec::<(u64, u64)>::new());
        let threads = 16;
        let rounds = 20;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..rounds {
                        let called = CLOCK.fetch_add(1, Ordering::SeqCst);
                        let r = sync_grouped("test-dir-a", |_| {
                            let began = CLOCK.fetch_add(1, Ordering::SeqCst);
                            FSYNCS.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(2));
                            let ended = CLOCK.fetch_add(1, Ordering::SeqCst);
                            fsyncs.lock().unwrap().push((began, ended));
                            Ok(())
                        });
                        let returned = CLOCK.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(r, Ok(()));
                        let covered = fsyncs.lock().unwrap().iter().any(|&(b, e)| b > called && e < returned);
                        assert!(
                            covered,
                            "call at {called} returned at {returned} with no fsync in between"
                        );
                    }
                });
            }
        });
        let n = FSYNCS.load(Ordering::SeqCst);
        assert!(
            n < threads * rounds,
            "{n} fsyncs for {} calls: none shared",
            threads * rounds
        );
    }

    fn eio() -> WriteError {
        WriteError {
            text: "EIO".into(),
            no_space: false,
        }
    }

    /// A failed fsync fails its whole batch, and the next batch fsyncs again.
    #[test]
    fn a_failure_reaches_its_batch_and_the_next_batch_retries() {
        let calls = AtomicUsize::new(0);
        let fail = |_: &str| {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(eio())
        };
        assert_eq!(sync_grouped("test-dir-b", fail), Err(eio()));
        assert_eq!(sync_grouped("test-dir-b", |_: &str| Ok(())), Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
