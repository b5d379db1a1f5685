//! Running one blocking step — in practice an `fsync` — for each of several items on a few
//! threads at once: concurrent syncs on one file system share the disk's cache flushes
//! (on the benchmark host 1 thread did ~500 `fsync`s of new 4 KB files per second, 4
//! threads ~6,500), so a batch of deliveries made durable together waits for about one
//! flush instead of one per file.

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
}
