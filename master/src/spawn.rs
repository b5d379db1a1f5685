//! Starting one child: the one place in master that needs `unsafe`.
//!
//! The child gets, in this order: stdin `/dev/null`, stdout and stderr shared with master
//! (the log), descriptor 3 the status channel, descriptors 4.. the service's listening
//! sockets; nothing else (every other descriptor of master is close-on-exec). Between
//! `fork` and `exec` the child only calls async-signal-safe functions (`fcntl`, `dup2`) on
//! descriptor numbers prepared beforehand: first every source is copied above any target
//! so that no `dup2` can overwrite a source not yet moved, then each copy is placed;
//! last, every descriptor above the ones placed is marked close-on-exec
//! ([`postern_lib::inherited_fd::cloexec_from`]), a second line of defence should any
//! descriptor of master have been born without the flag.
//! The environment is cleared except for a few variables Postern and libc need.
//!
//! [`start_clean`] is master's first act: it closes whatever descriptors the shell or
//! script that started master left open (a pipe of the starting shell would otherwise
//! reach every daemon and every user command local runs).
#![allow(unsafe_code)]

use postern_lib::master_status::{FIRST_LISTEN_FD, STATUS_FD, env};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// What the child needs to know.
pub struct SpawnSpec<'a> {
    /// The program.
    pub program: &'a std::path::Path,
    /// Its arguments.
    pub args: &'a [String],
    /// Listening sockets, in order, with their kind (`inet`/`unix`).
    pub listeners: Vec<(RawFd, &'static str)>,
    /// Environment variables specific to this child.
    pub vars: Vec<(&'static str, String)>,
}

/// Starts the child; returns its pid and master's end of the status channel.
pub fn spawn(spec: &SpawnSpec<'_>) -> std::io::Result<(u32, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    let mut sources: Vec<RawFd> = vec![theirs.as_raw_fd()];
    sources.extend(spec.listeners.iter().map(|(fd, _)| *fd));
    let high = FIRST_LISTEN_FD + sources.len() as i32 + 16;
    let kinds: Vec<&str> = spec.listeners.iter().map(|(_, k)| *k).collect();
    let sweep = postern_lib::inherited_fd::sweep_limit();
    let mut cmd = Command::new(spec.program);
    cmd.args(spec.args).env_clear().stdin(Stdio::null());
    for keep in ["PATH", "TZ", "LANG", "LC_ALL", "POSTERN_LOG_LEVEL", "RUST_BACKTRACE"] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
    }
    cmd.env(env::LISTEN_FDS, spec.listeners.len().to_string())
        .env(env::LISTEN_KINDS, kinds.join(","));
    for (k, v) in &spec.vars {
        cmd.env(k, v);
    }
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl,
    // dup2 and close_range on integers computed above; it allocates nothing and touches
    // no locks.
    unsafe {
        cmd.pre_exec(move || {
            let mut copies = [0 as RawFd; 80];
            let n = sources.len().min(copies.len());
            for (i, &src) in sources.iter().take(n).enumerate() {
                let c = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, high);
                if c < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                copies[i] = c;
            }
            for (i, &c) in copies.iter().take(n).enumerate() {
                let target = STATUS_FD + i as i32;
                if libc::dup2(c, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            postern_lib::inherited_fd::cloexec_from(STATUS_FD + n as i32, sweep);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    Ok((child.id(), ours))
}

/// Master's first act (see the module doc): standard input, output and error exist, every
/// other inherited descriptor is closed. Returns how many were closed.
pub fn start_clean() -> usize {
    // SAFETY: called first thing in main, before master opened anything of its own.
    unsafe { postern_lib::inherited_fd::close_inherited() }
}

/// Keeps the socket types honest: a listener passed to children.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}
