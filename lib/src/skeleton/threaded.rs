//! The thread-per-connection skeleton: like [`super::single`] (blocking I/O, each
//! connection served to its end by plain code) but up to `max_conns` (master.toml, default
//! `default_connection_limit`) connections at once per process, each on its own thread.
//! For a daemon whose clients may hold a connection for long without costing it work:
//! cleanup, to which smtpd streams a message as the remote client sends it — with one
//! connection per process, a few dozen clients sending their DATA slowly held every cleanup
//! process and nobody else's mail got a `354`.
//!
//! The process reports itself available to master while it has a free thread, so master
//! starts another process only when all are taken. It accepts only while it has one. After
//! `max_use` connections, after `max_idle` without one, on SIGTERM or when master goes
//! away, it stops accepting and exits with status 0 once its connections are done.

use super::{Accepted, Context, Setup, accept_ready, drain, prepare};
use crate::master_status::Status;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

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
    let mut active = 0usize;
    let mut served: u64 = 0;
    let mut retiring = false;
    let mut idle_since = Instant::now();
    let status = |setup: &mut Setup, active: usize, served: u64, retiring: bool| {
        setup.report(Status {
            available: !retiring && active < most,
            connections: active as u32,
            served,
            retiring,
        })
    };
    if !status(&mut setup, 0, 0, false) {
        return ExitCode::SUCCESS;
    }
    loop {
        let accepting = !retiring && active < most;
        let Some(ev) = wait(&mut setup, &done_rx, accepting, (active == 0).then_some(idle_since)) else {
            break;
        };
        if ev.finished {
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = done_rx.read(&mut buf) {
                active = active.saturating_sub(n);
            }
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
            let (state, serve, ctx) = (Arc::clone(&state), Arc::clone(&serve), setup.ctx.clone());
            let mut tell = match done_tx.try_clone() {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("cannot serve a connection: {e}");
                    continue;
                }
            };
            let spawned = std::thread::Builder::new().spawn(move || {
                // Told when dropped, so a thread that panics still gives its place back.
                let _done = Done(&mut tell);
                serve(&state, &ctx, conn);
            });
            match spawned {
                Ok(t) => {
                    threads.push(t);
                    active += 1;
                }
                Err(e) => tracing::warn!("cannot start a thread for a connection: {e}"),
            }
            if !status(&mut setup, active, served, retiring) {
                retiring = true;
            }
        }
    }
    // Stop, master gone, idle or used up: accept nothing more, finish what was taken.
    setup.listeners.clear();
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

/// Tells the loop, when dropped, that a thread's connection is done.
struct Done<'a>(&'a mut UnixStream);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let _ = self.0.write_all(&[1]);
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
/// stop signal, master gone.
fn wait(setup: &mut Setup, done: &UnixStream, accepting: bool, idle_since: Option<Instant>) -> Option<Ready> {
    loop {
        let left = match idle_since {
            Some(t) => Some(setup.ctx.max_idle.checked_sub(t.elapsed()).filter(|l| !l.is_zero())?),
            None => None,
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
