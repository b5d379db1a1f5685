//! The verification pool: password hashing is CPU-heavy (argon2id takes tens of
//! milliseconds), so the event loop hands each check to one of a few threads over a
//! bounded channel and is woken (a mio [`Waker`]) when a result is ready. A full queue is
//! refused at once (the caller answers tempfail) instead of growing.
//!
//! Threads start after the privilege drop (the first time a check is needed), because
//! credentials may only change while the process is single-threaded.

use mio::Waker;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError, channel, sync_channel};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// Checks waiting for a thread, at most.
pub const QUEUE: usize = 64;

/// One check.
pub struct Job {
    /// Who asked (the connection's token).
    pub token: usize,
    /// The password; zeroed when dropped.
    pub password: Zeroizing<String>,
    /// The stored hash.
    pub hash: String,
}

/// A finished check.
#[derive(Debug)]
pub struct Done {
    /// The connection's token.
    pub token: usize,
    /// `Ok(true)`: right; `Ok(false)`: wrong; `Err`: the stored hash is unusable.
    pub result: Result<bool, String>,
}

/// The pool.
pub struct Pool {
    jobs: SyncSender<Job>,
    done: Receiver<Done>,
}

impl Pool {
    /// Starts `threads` workers that wake the loop through `waker`.
    pub fn start(threads: usize, waker: Arc<Waker>) -> std::io::Result<Pool> {
        let (jobs, job_rx) = sync_channel::<Job>(QUEUE);
        let (done_tx, done) = channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&job_rx);
            let tx: Sender<Done> = done_tx.clone();
            let waker = Arc::clone(&waker);
            std::thread::Builder::new()
                .name(format!("verify-{i}"))
                .spawn(move || work(&rx, &tx, &waker))?;
        }
        Ok(Pool { jobs, done })
    }

    /// Queues a check; gives it back when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => Err(j),
        }
    }

    /// A finished check, if any.
    pub fn try_done(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }
}

fn work(rx: &Mutex<Receiver<Job>>, tx: &Sender<Done>, waker: &Waker) {
    loop {
        let job = match rx.lock() {
            Ok(guard) => match guard.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let result = postern_password::verify(job.password.as_bytes(), &job.hash).map_err(|e| e.to_string());
        let token = job.token;
        drop(job);
        if tx.send(Done { token, result }).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}
