//! Running one blocking step — in practice an `fsync` — for each of several items on a few
//! threads at once: concurrent syncs on one file system share the disk's cache flushes
//! (on the benchmark host 1 thread did ~500 `fsync`s of new 4 KB files per second, 4
//! threads ~6,500), so a batch of deliveries made durable together waits for about one
//! flush instead of one per file. [`for_each`] starts and ends its threads per call;
//! [`for_each_kept`] (owned items) hands them to threads kept between calls, for a process
//! that makes such a batch every few milliseconds.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

/// Most threads [`for_each`] starts.
pub const MAX_THREADS: usize = 8;

/// Calls `f` on every item, on up to `threads` (at most [`MAX_THREADS`]) scoped threads
/// that take the items one by one, the calling thread among them; returns once every call
/// has. With one item, or when no thread can be started, the calling thread does them all.
pub fn for_each<T: Send>(items: &mut [T], threads: usize, f: impl Fn(&mut T) + Sync) {
    let threads = threads.clamp(1, MAX_THREADS).min(items.len());
    if threads <= 1 {
        items.iter_mut().for_each(&f);
        return;
    }
    let queue = std::sync::Mutex::new(items.iter_mut().collect::<Vec<&mut T>>());
    let work = || {
        loop {
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(item) = next else { break };
            f(item);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            if let Err(e) = std::thread::Builder::new().spawn_scoped(s, work) {
                tracing::warn!("cannot start a sync thread: {e}");
                break;
            }
        }
        work();
    });
}

/// How long a thread kept by [`for_each_kept`] waits for more work before it ends.
const KEPT_IDLE: Duration = Duration::from_secs(10);

/// Work handed to a kept thread.
type Task = Box<dyn FnOnce() + Send>;

/// The threads [`for_each_kept`] keeps between calls, and the work waiting for them.
struct Kept {
    tasks: VecDeque<Task>,
    idle: usize,
    threads: usize,
}

static KEPT: Mutex<Kept> = Mutex::new(Kept {
    tasks: VecDeque::new(),
    idle: 0,
    threads: 0,
});
static KEPT_WORK: Condvar = Condvar::new();

fn kept() -> MutexGuard<'static, Kept> {
    KEPT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hands `task` to a kept thread: an idle one, else a new one while fewer than
/// `MAX_THREADS - 1` run, else it waits for the first one free. A task that no thread could
/// take is dropped: [`for_each_kept`]'s caller does the work itself meanwhile.
fn hand_over(task: Task) {
    let mut k = kept();
    if k.idle > k.tasks.len() || k.threads >= MAX_THREADS - 1 {
        k.tasks.push_back(task);
        drop(k);
        KEPT_WORK.notify_one();
        return;
    }
    k.threads += 1;
    drop(k);
    let spawned = std::thread::Builder::new().name("sync".into()).spawn(move || {
        task();
        keep_working();
    });
    if let Err(e) = spawned {
        kept().threads -= 1;
        tracing::warn!("cannot start a sync thread: {e}");
    }
}

/// A kept thread's life: tasks as they come, until none came for [`KEPT_IDLE`].
fn keep_working() {
    let mut k = kept();
    loop {
        if let Some(task) = k.tasks.pop_front() {
            drop(k);
            task();
            k = kept();
            continue;
        }
        k.idle += 1;
        let (guard, wait) = KEPT_WORK
            .wait_timeout(k, KEPT_IDLE)
            .unwrap_or_else(PoisonError::into_inner);
        k = guard;
        k.idle -= 1;
        if wait.timed_out() && k.tasks.is_empty() {
            k.threads -= 1;
            return;
        }
    }
}

/// [`for_each`] for owned items on threads kept between calls (no thread started and ended
/// per call, as [`for_each`]'s scoped threads are: a batch of syncs every few milliseconds
/// made that a good part of a delivery agent's CPU). `f` is called once on every item, on
/// up to `threads` threads (at most [`MAX_THREADS`]), the calling thread among them; the
/// items come back in their order once every call has returned. An item is lost only if
/// `f` panics on another thread.
pub fn for_each_kept<T: Send + 'static>(items: Vec<T>, threads: usize, f: fn(&mut T)) -> Vec<T> {
    let threads = threads.clamp(1, MAX_THREADS).min(items.len());
    if threads <= 1 {
        let mut items = items;
        items.iter_mut().for_each(f);
        return items;
    }
    let n = items.len();
    let queue: Arc<Mutex<Vec<(usize, T)>>> = Arc::new(Mutex::new(items.into_iter().enumerate().rev().collect()));
    let (done, results) = mpsc::channel::<(usize, T)>();
    let work = move |queue: Arc<Mutex<Vec<(usize, T)>>>, done: mpsc::Sender<(usize, T)>| {
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some((i, mut item)) = next else { break };
            f(&mut item);
            if done.send((i, item)).is_err() {
                break;
            }
        }
    };
    for _ in 1..threads {
        let (queue, done) = (queue.clone(), done.clone());
        hand_over(Box::new(move || work(queue, done)));
    }
    work(queue, done);
    let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(n).collect();
    for _ in 0..n {
        let Ok((i, item)) = results.recv() else { break };
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(item);
        }
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_visited_once() {
        for n in [0, 1, 2, 7, 33] {
            let mut v: Vec<u32> = vec![0; n];
            for_each(&mut v, 4, |x| *x += 1);
            assert!(v.iter().all(|x| *x == 1), "{n}: {v:?}");
        }
    }

    #[test]
    fn kept_threads_visit_every_item_once_and_keep_the_order() {
        for n in [0, 1, 2, 7, 33, 200] {
            let v: Vec<(usize, u32)> = (0..n).map(|i| (i, 0)).collect();
            let v = for_each_kept(v, MAX_THREADS, |x| x.1 += 1);
            assert_eq!(v.len(), n);
            assert!(v.iter().enumerate().all(|(i, x)| *x == (i, 1)), "{n}: {v:?}");
        }
    }

    #[test]
    fn kept_threads_are_kept_between_calls_and_bounded() {
        // Slow items, so the calling thread cannot do them all before a kept one starts.
        let slow = |x: &mut u64| {
            std::thread::sleep(Duration::from_millis(5));
            *x += 1;
        };
        for _ in 0..3 {
            let v = for_each_kept(vec![0u64; 16], MAX_THREADS, slow);
            assert_eq!(v, vec![1u64; 16]);
        }
        let k = kept();
        assert!(k.threads >= 1, "threads were kept: {}", k.threads);
        assert!(k.threads < MAX_THREADS, "at most MAX_THREADS - 1 kept: {}", k.threads);
    }
}
