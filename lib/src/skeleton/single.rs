//! The one-connection-at-a-time skeleton (Postfix's `single_server`): for daemons that do
//! one bounded piece of work for a local peer with blocking I/O — cleanup, local, smtp,
//! bounce. Concurrency comes from master running several of them.
//!
//! Every child waits in `poll(2)` on the shared listening sockets (level-triggered), the
//! status channel and the signal pipe. Whoever wins `accept` reports busy, serves the
//! connection, and reports available again; the others see `EAGAIN` and go back to
//! waiting. After `max_use` connections, after `max_idle` without one, on SIGTERM or when
//! master goes away, the child exits with status 0 once the current connection is done.

use super::{Accepted, Context, Setup, accept_ready, drain, prepare};
use crate::master_status::Status;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Instant;

/// Runs a single-connection daemon. `pre_init` runs before privileges are dropped and
/// returns the daemon's state; `serve` handles one connection to its end.
pub fn single_server<S>(
    command: &str,
    pre_init: impl FnOnce(&Context) -> Result<S, String>,
    mut serve: impl FnMut(&mut S, &Context, Accepted),
) -> ExitCode {
    let (mut setup, mut state) = match prepare(command, pre_init) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut served: u64 = 0;
    let mut idle_since = Instant::now();
    if !setup.report(Status {
        available: true,
        connections: 0,
        served,
        retiring: false,
    }) {
        return ExitCode::SUCCESS;
    }
    loop {
        let Some(ready) = wait(&mut setup, idle_since) else {
            return ExitCode::SUCCESS;
        };
        for i in ready {
            let Some(conn) = accept_ready(&setup.listeners, i) else {
                continue;
            };
            served += 1;
            let last = served >= setup.ctx.max_use;
            if !setup.report(Status {
                available: false,
                connections: 1,
                served,
                retiring: last,
            }) {
                // Master is gone: hold no listener while finishing this connection.
                setup.listeners.clear();
                serve(&mut state, &setup.ctx, conn);
                return ExitCode::SUCCESS;
            }
            let ctx = setup.ctx.clone();
            serve(&mut state, &ctx, conn);
            if last {
                return ExitCode::SUCCESS;
            }
            if !setup.report(Status {
                available: true,
                connections: 0,
                served,
                retiring: false,
            }) {
                return ExitCode::SUCCESS;
            }
            idle_since = Instant::now();
            break;
        }
    }
}

/// Waits for work. Returns the indexes of readable listeners, or `None` when the child
/// should exit (idle too long, stop signal, master gone).
fn wait(setup: &mut Setup, idle_since: Instant) -> Option<Vec<usize>> {
    loop {
        let left = setup.ctx.max_idle.checked_sub(idle_since.elapsed())?;
        if left.is_zero() {
            return None;
        }
        let n = setup.listeners.len();
        let mut fds: Vec<PollFd<'_>> = setup
            .listeners
            .iter()
            .map(|l| PollFd::from_borrowed_fd(l.fd(), PollFlags::IN))
            .collect();
        fds.push(PollFd::from_borrowed_fd(setup.signals.as_fd(), PollFlags::IN));
        if let Some(st) = &setup.status {
            fds.push(PollFd::from_borrowed_fd(st.as_fd(), PollFlags::IN));
        }
        let timeout = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!("poll: {e}");
                return None;
            }
        }
        let ready: Vec<usize> = fds[..n]
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.revents().is_empty())
            .map(|(i, _)| i)
            .collect();
        let signalled = !fds[n].revents().is_empty();
        let master_gone = fds.get(n + 1).is_some_and(|f| !f.revents().is_empty());
        drop(fds);
        if signalled && drain(&mut setup.signals) {
            return None;
        }
        if master_gone {
            return None;
        }
        if !ready.is_empty() {
            return Some(ready);
        }
    }
}
