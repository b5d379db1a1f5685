//! The thread-per-connection skeleton: like [`super::single`] (blocking I/O, each
//! connection served to its end by plain code) but up to `max_conns` (master.toml, default
//! `default_connection_limit`) connections at once per process, each on a thread of its
//! own. Threads are kept for the next connection (a pool): a thread that finished its
//! connection waits for another for up to [`IDLE_THREAD`] and then ends, so a process
//! taking one short connection after another (cleanup: one per message) starts no thread
//! per connection.
//! For a daemon whose clients may hold a connection for long without costing it work:
//! cleanup, to which smtpd streams a message as the remote client sends it — with one
//! connection per process, a few dozen clients sending their DATA slowly held every cleanup
//! process and nobody else's mail got a `354`.
//!
//! A thread tells the accepting loop that its connection is done only when the loop has
//! to act on it (one byte on a socket pair): the loop stopped accepting because all
//! `max_conns` were taken, or the last connection ended (the process is idle: `max_idle`
//! counts from then, a retiring process exits, master hears it). Otherwise the loop reads
//! the count of connections in service from an atomic counter, and a finished connection
//! costs it no wake-up (on a small VM, a context switch and an inter-processor interrupt
//! per message).
//!
//! The process reports itself available to master while it has a free thread, so master
//! starts another process only when all are taken. It accepts only while it has one. After
//! `max_use` connections, after `max_idle` without one, on SIGTERM or when master goes
//! away, it stops accepting and exits with status 0 once its connections are done.

use super::{Accepted, Context, Setup, accept_ready, drain, prepare};
use crate::master_status::{REFRESH, Reports, Status};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a thread whose connection is done waits for another before it ends.
pub const IDLE_THREAD: Duration = Duration::from_secs(10);

/// Accepted connections not yet taken by a thread, and the threads waiting for one.
struct Pool<T> {
    queue: Mutex<Queue<T>>,
    ready: Condvar,
}

struct Queue<T> {
    conns: VecDeque<T>,
    /// Threads in their wait for a connection, including those woken and not yet running
    /// again: while `conns` holds no more than this, each queued connection has a thread
    /// coming for it.
    waiting: usize,
    /// No more connections come: waiting threads end.
    closing: bool,
}

impl<T> Pool<T> {
    fn new() -> Pool<T> {
        Pool {
            queue: Mutex::new(Queue {
                conns: VecDeque::new(),
                waiting: 0,
                closing: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `conn`; true when no waiting thread is left to take it (start one).
    fn give(&self, conn: T) -> bool {
        let mut q = self.lock();
        q.conns.push_back(conn);
        let start = q.conns.len() > q.waiting;
        drop(q);
        if !start {
            self.ready.notify_one();
        }
        start
    }

    /// The next connection for a thread; `None` when the thread should end (idle for
    /// [`IDLE_THREAD`], or the process is closing and nothing is queued).
    fn take(&self) -> Option<T> {
        self.take_waiting(IDLE_THREAD)
    }

    fn take_waiting(&self, idle: Duration) -> Option<T> {
        let mut q = self.lock();
        loop {
            if let Some(c) = q.conns.pop_front() {
                return Some(c);
            }
            if q.closing {
                return None;
            }
            q.waiting += 1;
            let (g, waited) = self.ready.wait_timeout(q, idle).unwrap_or_else(|p| p.into_inner());
            q = g;
            q.waiting -= 1;
            if waited.timed_out() && q.conns.is_empty() {
                return None;
            }
        }
    }

    /// The connection queued last, if no thread has taken it.
    fn take_back(&self) -> Option<T> {
        self.lock().conns.pop_back()
    }

    fn close(&self) {
        self.lock().closing = true;
        self.ready.notify_all();
    }
}

/// Runs a daemon that serves each connection on a thread of its own. `pre_init` runs
/// before privileges are dropped and returns state shared by the threads; `serve` handles
/// one connection to its end.
pub fn threaded_server<S: Send + Sync + 'static>(
    command: &str,
    pre_init: impl FnOnce(&Context) -> Result<S, String>,
    serve: impl Fn(&S, &Context, Accepted) + Send + Sync + 'static,
) -> ExitCode {
    let (mut setup, state) = match prepare(command, pre_init) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (mut done_rx, done_tx) = match UnixStream::pair().and_then(|(r, w)| r.set_nonblocking(true).map(|()| (r, w))) {
        Ok(p) => p,
        Err(e) => return super::fatal(command, &format!("socketpair: {e}")),
    };
    let state = Arc::new(state);
    let serve = Arc::new(serve);
    let most = setup.ctx.max_conns.max(1);
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let pool = Arc::new(Pool::<Accepted>::new());
    // Connections taken and not yet done (see `Done`).
    let count = Arc::new(Active {
        now: AtomicUsize::new(0),
        most,
    });
    let mut active: usize;
    let mut served: u64 = 0;
    let mut retiring = false;
    let mut idle_since = Instant::now();
    // Only what master's accounting needs goes at once (master_status::Reports): master is
    // not woken per connection; the counts follow within about a refresh (`wait` wakes for it).
    let mut reports = Reports::default();
    let status_of = |active: usize, served: u64, retiring: bool| Status {
        available: !retiring && active < most,
        connections: active as u32,
        served,
        retiring,
    };
    // whether master's counts are behind (a status not yet due)
    let owed = std::cell::Cell::new(false);
    let mut status = |setup: &mut Setup, active: usize, served: u64, retiring: bool| {
        let s = status_of(active, served, retiring);
        let due = reports.due(s, Instant::now());
        owed.set(!due && reports.stale(s));
        !due || setup.report(s)
    };
    if !status(&mut setup, 0, 0, false) {
        return ExitCode::SUCCESS;
    }
    loop {
        active = count.now.load(Ordering::SeqCst);
        if retiring && active == 0 {
            break;
        }
        let accepting = !retiring && active < most;
        let Some(ev) = wait(
            &mut setup,
            &done_rx,
            accepting,
            (active == 0).then_some(idle_since),
            owed.get(),
        ) else {
            break;
        };
        if !ev.finished && ev.ready.is_empty() {
            // the refresh of the counts
            if !status(&mut setup, active, served, retiring) {
                break;
            }
            continue;
        }
        if ev.finished {
            let mut buf = [0u8; 256];
            while let Ok(1..) = done_rx.read(&mut buf) {}
            active = count.now.load(Ordering::SeqCst);
            threads.retain(|t| !t.is_finished());
            if active == 0 {
                idle_since = Instant::now();
                if retiring {
                    break;
                }
            }
            if !status(&mut setup, active, served, retiring) {
                break;
            }
        }
        for i in ev.ready {
            if retiring || active >= most {
                break;
            }
            let Some(conn) = accept_ready(&setup.listeners, i) else {
                continue;
            };
            served += 1;
            retiring = served >= setup.ctx.max_use;
            active = count.now.fetch_add(1, Ordering::SeqCst) + 1;
            // (idle from the end of the last connection at the earliest: its end wakes
            // the loop, see `Done`)
            idle_since = Instant::now();
            if pool.give(conn) {
                let (state, serve, ctx, queue, shared) = (
                    Arc::clone(&state),
                    Arc::clone(&serve),
                    setup.ctx.clone(),
                    Arc::clone(&pool),
                    Arc::clone(&count),
                );
                let spawned = done_tx.try_clone().and_then(|mut tell| {
                    std::thread::Builder::new().spawn(move || {
                        while let Some(conn) = queue.take() {
                            // Told when dropped, so a thread that panics still gives its
                            // place back.
                            let _done = Done(&shared, &mut tell);
                            serve(&state, &ctx, conn);
                        }
                    })
                });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => {
                        tracing::warn!("cannot start a thread for a connection: {e}");
                        // Not served (as when no thread could be started before the pool);
                        // unless a running thread took it meanwhile.
                        if pool.take_back().is_some() {
                            active = count.now.fetch_sub(1, Ordering::SeqCst) - 1;
                        }
                    }
                }
            }
            if !status(&mut setup, active, served, retiring) {
                retiring = true;
            }
        }
    }
    // Stop, master gone, idle or used up: accept nothing more, finish what was taken.
    setup.listeners.clear();
    pool.close();
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

/// The connections being served, shared by the loop and the threads.
struct Active {
    /// Taken and not yet done.
    now: AtomicUsize,
    /// `max_conns`.
    most: usize,
}

/// Counts a thread's connection done when dropped (so a thread that panics still gives
/// its place back), and wakes the loop when it has to act on that: the last connection
/// ended (the process is idle; a retiring one exits) or all had been taken (the loop had
/// stopped accepting). The loop reads the count whenever it wakes, so a wake-up it is
/// given late, or for a change it has seen already, does no harm.
struct Done<'a>(&'a Active, &'a mut UnixStream);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let before = self.0.now.fetch_sub(1, Ordering::SeqCst);
        if before <= 1 || before >= self.0.most {
            let _ = self.1.write_all(&[1]);
        }
    }
}

/// What woke the loop.
struct Ready {
    /// Indexes of readable listeners.
    ready: Vec<usize>,
    /// A thread finished its connection.
    finished: bool,
}

/// Waits for a connection (while `accepting`) or a finished thread. `None` when the child
/// should stop: idle for `max_idle` since `idle_since` (when nothing is being served), a
/// stop signal, master gone. With `refresh` (master's counts are behind) it comes back
/// with nothing ready after at most [`REFRESH`], for the loop to send them.
fn wait(
    setup: &mut Setup,
    done: &UnixStream,
    accepting: bool,
    idle_since: Option<Instant>,
    refresh: bool,
) -> Option<Ready> {
    loop {
        let idle_left = match idle_since {
            Some(t) => Some(setup.ctx.max_idle.checked_sub(t.elapsed()).filter(|l| !l.is_zero())?),
            None => None,
        };
        let left = match (idle_left, refresh) {
            (Some(l), true) => Some(l.min(REFRESH)),
            (None, true) => Some(REFRESH),
            (l, false) => l,
        };
        let n = if accepting { setup.listeners.len() } else { 0 };
        let mut fds: Vec<PollFd<'_>> = setup
            .listeners
            .iter()
            .take(n)
            .map(|l| PollFd::from_borrowed_fd(l.fd(), PollFlags::IN))
            .collect();
        fds.push(PollFd::from_borrowed_fd(done.as_fd(), PollFlags::IN));
        fds.push(PollFd::from_borrowed_fd(setup.signals.as_fd(), PollFlags::IN));
        if let Some(st) = &setup.status {
            fds.push(PollFd::from_borrowed_fd(st.as_fd(), PollFlags::IN));
        }
        let timeout = left.map(|l| Timespec {
            tv_sec: l.as_secs() as i64,
            tv_nsec: i64::from(l.subsec_nanos()),
        });
        match poll(&mut fds, timeout.as_ref()) {
            // (the refresh of master's counts is due: nothing ready)
            Ok(0) if refresh => {
                return Some(Ready {
                    ready: Vec::new(),
                    finished: false,
                });
            }
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!("poll: {e}");
                return None;
            }
        }
        let fired = |i: usize| fds.get(i).is_some_and(|f| !f.revents().is_empty());
        let ready: Vec<usize> = (0..n).filter(|&i| fired(i)).collect();
        let finished = fired(n);
        let signalled = fired(n + 1);
        let master_gone = fired(n + 2);
        drop(fds);
        if (signalled && drain(&mut setup.signals)) || master_gone {
            return None;
        }
        if finished || !ready.is_empty() {
            return Some(Ready { ready, finished });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every connection given is served once; a thread is started only when no waiting
    /// thread is left for a connection; closing ends the waiting threads.
    #[test]
    fn the_pool_serves_each_connection_once_and_reuses_threads() {
        let pool = Arc::new(Pool::<usize>::new());
        let served = Arc::new(Mutex::new(Vec::new()));
        let started = AtomicUsize::new(0);
        let mut threads = Vec::new();
        for round in 0..20 {
            for i in 0..4 {
                if pool.give(round * 4 + i) {
                    started.fetch_add(1, Ordering::SeqCst);
                    let (pool, served) = (Arc::clone(&pool), Arc::clone(&served));
                    threads.push(std::thread::spawn(move || {
                        while let Some(c) = pool.take_waiting(Duration::from_secs(30)) {
                            served.lock().unwrap().push(c);
                        }
                    }));
                }
            }
            // Let the threads finish this round and wait again.
            let deadline = Instant::now() + Duration::from_secs(10);
            while (served.lock().unwrap().len() < (round + 1) * 4
                || pool.lock().waiting < started.load(Ordering::SeqCst))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        pool.close();
        for t in threads {
            t.join().expect("thread");
        }
        let mut got = served.lock().unwrap().clone();
        got.sort_unstable();
        assert_eq!(got, (0..80).collect::<Vec<_>>());
        assert!(
            started.load(Ordering::SeqCst) <= 4,
            "{} threads for 20 rounds of 4",
            started.load(Ordering::SeqCst)
        );
    }

    /// A thread idle for its time ends; one given a connection meanwhile serves it.
    #[test]
    fn an_idle_thread_ends() {
        let pool = Pool::<u8>::new();
        assert_eq!(pool.take_waiting(Duration::from_millis(20)), None);
        assert!(pool.give(1), "nobody waits: start a thread");
        assert_eq!(pool.take_waiting(Duration::from_millis(20)), Some(1));
        assert!(pool.give(2));
        assert_eq!(pool.take_back(), Some(2));
        assert_eq!(pool.take_back(), None);
    }
}
