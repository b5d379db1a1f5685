//! Job threads kept for the next job: a delivery job on a new thread cost a `clone3` and
//! about ten more system calls (stack, signal stack, rseq, ...) to start and as many to
//! end, per job (issue 14: qmgr's CPU per message). A thread that finished its job waits
//! [`IDLE_KEEP`] for another; at most [`IDLE_MAX`] wait at once, the rest end, and so do
//! those that waited in vain, so an idle qmgr holds no more threads than before.
//! A job never waits for a thread: without an idle one, a new one is started.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// How long a job thread waits for another job before it ends.
const IDLE_KEEP: Duration = Duration::from_secs(5);
/// Most job threads waiting at once.
const IDLE_MAX: usize = 64;

/// A job.
pub type Work = Box<dyn FnOnce() + Send + 'static>;

struct Pool {
    tx: Mutex<Sender<Work>>,
    rx: Mutex<Receiver<Work>>,
    /// Waiting threads that no job has been promised to yet. Invariant: threads waiting =
    /// `idle` + jobs sent and not yet taken.
    idle: AtomicUsize,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| {
    let (tx, rx) = channel();
    Pool {
        tx: Mutex::new(tx),
        rx: Mutex::new(rx),
        idle: AtomicUsize::new(0),
    }
});

/// Runs `work` on a waiting job thread, else on a new one.
pub fn run(work: Work) -> std::io::Result<()> {
    let p = &*POOL;
    if take_one(&p.idle) {
        // A waiting thread is promised this job; it stays until it has taken one.
        match p.tx.lock().unwrap_or_else(|e| e.into_inner()).send(work) {
            Ok(()) => return Ok(()),
            // Cannot happen (the receiver lives in the static); start a thread instead.
            Err(e) => return start(e.0),
        }
    }
    start(work)
}

fn start(work: Work) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("job".into())
        .spawn(move || worker(work))
        .map(|_| ())
}

/// Decrements `n` if it is above zero.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
        .is_ok()
}

fn worker(first: Work) {
    let p = &*POOL;
    let mut work = first;
    loop {
        work();
        // Wait for another job, unless enough threads wait already.
        if p.idle.fetch_add(1, Ordering::AcqRel) >= IDLE_MAX && take_one(&p.idle) {
            return;
        }
        loop {
            let next = p.rx.lock().unwrap_or_else(|e| e.into_inner()).recv_timeout(IDLE_KEEP);
            match next {
                Ok(w) => {
                    work = w;
                    break;
                }
                // Waited in vain: end, unless a job was promised meanwhile to a waiting
                // thread (idle already taken): then wait on for it.
                Err(RecvTimeoutError::Timeout) => {
                    if take_one(&p.idle) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn jobs_run_and_a_finished_thread_takes_the_next_job() {
        let (tx, rx) = channel();
        for i in 0..50 {
            let tx = tx.clone();
            run(Box::new(move || {
                let _ = tx.send((i, std::thread::current().id()));
            }))
            .unwrap();
            // one at a time: from the second job on, the thread of the first waits
            let (got, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got, i);
            std::thread::sleep(Duration::from_millis(2));
        }
        let (tx2, rx2) = channel();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..20 {
            let tx2 = tx2.clone();
            run(Box::new(move || {
                let _ = tx2.send(std::thread::current().id());
            }))
            .unwrap();
            threads.insert(rx2.recv_timeout(Duration::from_secs(10)).unwrap());
            std::thread::sleep(Duration::from_millis(2));
        }
        // Without reuse every job would have a thread of its own (20 thread IDs); a thread
        // that was still finishing when the next job came may add a few, never one per job.
        assert!(
            threads.len() <= 10,
            "sequential jobs reuse a waiting thread: {} threads for 20 jobs",
            threads.len()
        );
    }

    #[test]
    fn many_jobs_at_once_all_run() {
        let (tx, rx) = channel();
        let gate = std::sync::Arc::new(std::sync::Barrier::new(40));
        for i in 0..40 {
            let tx = tx.clone();
            let gate = gate.clone();
            // all 40 must run at the same time to pass the barrier: none waits for a thread
            run(Box::new(move || {
                gate.wait();
                let _ = tx.send(i);
            }))
            .unwrap();
        }
        let mut got: Vec<i32> = (0..40)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (0..40).collect::<Vec<_>>());
    }
}
