//! Descriptors that cross `exec`: adopting the ones master passed to this process, and
//! making sure no other descriptor reaches a program this process starts.
//!
//! This is the one module of the crate that needs `unsafe`: turning a descriptor number
//! into an owned handle cannot be checked by the compiler, nor can a raw system call made
//! between `fork` and `exec`. The checks are made at run time instead:
//!
//! - [`adopt_socket`]: the number must be open (`fstat` succeeds) and of the expected kind
//!   (a socket), each number may be adopted once per process, and the adopted descriptor
//!   is made close-on-exec at once, so it never reaches a program this process starts (a
//!   user's `.forward` command holding local's listening socket could accept the next
//!   delivery meant for local, or master's status channel).
//! - [`only_stdio_on_exec`]: a second line of defence behind "every descriptor is
//!   close-on-exec from birth": in the child, after the standard library placed standard
//!   input, output and error, every descriptor from 3 up is marked close-on-exec
//!   (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`, one async-signal-safe system call; a
//!   bounded `fcntl` sweep on kernels before 5.11). Marking rather than closing keeps the
//!   standard library's own exec-error pipe (already close-on-exec) working.
//! - [`close_inherited`]: for master, started by whatever shell or script: standard input,
//!   output and error are made to exist (`/dev/null` where missing, so no socket lands on
//!   descriptor 1 and receives log lines) and every other inherited descriptor is closed.

#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;

use rustix::io::FdFlags;

static TAKEN: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Highest descriptor number swept where `close_range` is missing.
const MAX_SWEEP: RawFd = 1 << 16;

/// Takes ownership of inherited descriptor `fd` if it is an open socket not yet adopted,
/// and makes it close-on-exec.
pub fn adopt_socket(fd: RawFd) -> Option<OwnedFd> {
    let mut taken = TAKEN.lock().ok()?;
    if fd < 3 || taken.contains(&fd) {
        return None;
    }
    let st = {
        // SAFETY: the descriptor is only borrowed for the duration of fstat; `fstat` on
        // a closed number fails cleanly with EBADF.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        rustix::fs::fstat(b).ok()?
    };
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
        return None;
    }
    taken.push(fd);
    // SAFETY: `fd` is open (fstat succeeded), is a socket, was handed to us by master for
    // this purpose, and is adopted at most once (TAKEN), so no other owner exists.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Master placed it without close-on-exec (dup2 clears the flag); nothing this process
    // starts may inherit it.
    rustix::io::fcntl_setfd(&owned, FdFlags::CLOEXEC).ok()?;
    Some(owned)
}

/// The bound of the `fcntl`/`close` sweeps: the descriptor limit, at most 65536. Call it
/// before forking and pass it to [`cloexec_from`].
pub fn sweep_limit() -> RawFd {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    lim.current
        .map_or(MAX_SWEEP, |n| RawFd::try_from(n).unwrap_or(MAX_SWEEP))
        .clamp(3, MAX_SWEEP)
}

/// Marks every descriptor from `first` up close-on-exec. Async-signal-safe (two system
/// calls or a loop of them, no allocation, no lock), so it may run between `fork` and
/// `exec` (master's own placement of descriptors calls it there); `limit`
/// ([`sweep_limit`], computed before the fork) bounds the fallback.
pub fn cloexec_from(first: RawFd, limit: RawFd) {
    let first_u = u32::try_from(first).unwrap_or(3);
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors of this
    // process; it closes nothing and touches no memory.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first_u, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return;
    }
    sweep_cloexec(first, limit);
}

/// The fallback of [`cloexec_from`]: `fcntl(F_SETFD, FD_CLOEXEC)` on every number below
/// `limit`. Async-signal-safe.
fn sweep_cloexec(first: RawFd, limit: RawFd) {
    for fd in first..limit {
        // SAFETY: F_SETFD on a number that is not open fails with EBADF and does nothing.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// Makes the program `cmd` starts see only the descriptors the standard library sets up
/// for it (0, 1, 2): everything from 3 up is close-on-exec in the child (see the module
/// doc).
pub fn only_stdio_on_exec(cmd: &mut Command) {
    let limit = sweep_limit();
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe system calls of `cloexec_from` on integers; it allocates nothing
    // and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            cloexec_from(3, limit);
            Ok(())
        });
    }
}

/// For a program that anyone may start (master): makes sure descriptors 0, 1 and 2 are
/// open (on `/dev/null` where they are not) and closes every other descriptor it
/// inherited. Returns how many were closed.
///
/// # Safety
///
/// Must be called first thing in `main`, before the process (or any library it uses)
/// opened a descriptor of its own: every descriptor from 3 up is closed, whoever might
/// think it owns it.
pub unsafe fn close_inherited() -> usize {
    for _ in 0..3 {
        let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") else {
            break;
        };
        let fd = OwnedFd::from(null);
        if std::os::fd::AsRawFd::as_raw_fd(&fd) >= 3 {
            break;
        }
        // It filled a missing 0, 1 or 2: keep it there, inheritable like a standard
        // descriptor should be.
        let _ = rustix::io::fcntl_setfd(&fd, FdFlags::empty());
        let _ = fd.into_raw_fd();
    }
    let open: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd >= 3)
            .collect(),
        Err(_) => (3..sweep_limit()).collect(),
    };
    let mut closed = 0;
    for fd in open {
        // SAFETY: the caller guarantees no one in this process owns a descriptor from 3
        // up yet; a number that is not open (the directory listing's own, closed again)
        // makes close fail with EBADF and nothing else.
        if unsafe { libc::close(fd) } == 0 {
            closed += 1;
        }
    }
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The descriptors a shell started by `cmd` holds, as it lists them (the directory
    /// the listing reads is closed again when each entry is tested).
    fn child_fds(mut cmd: Command) -> Vec<RawFd> {
        let out = cmd
            .arg("-c")
            .arg("for f in /proc/$$/fd/*; do [ -e \"$f\" ] && echo \"${f##*/}\"; done; exit 0")
            .output()
            .unwrap();
        let mut fds: Vec<RawFd> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        fds.sort_unstable();
        fds
    }

    #[test]
    fn a_started_program_sees_only_stdio_even_with_a_leaky_descriptor() {
        // pipe(2) without flags: inheritable, as a careless raw call would leave it.
        let (r, w) = rustix::pipe::pipe().unwrap();
        let leaked = std::os::fd::AsRawFd::as_raw_fd(&w);
        assert!(!rustix::io::fcntl_getfd(&w).unwrap().contains(FdFlags::CLOEXEC));
        let plain = child_fds(Command::new("/bin/sh"));
        assert!(plain.contains(&leaked), "control: the leak is visible: {plain:?}");
        let mut cmd = Command::new("/bin/sh");
        only_stdio_on_exec(&mut cmd);
        assert_eq!(child_fds(cmd), vec![0, 1, 2]);
        drop((r, w));
    }

    #[test]
    fn the_fallback_sweep_alone_leaves_only_stdio() {
        // As on kernels before 5.11 (no close_range), in the child only: marking other
        // tests' descriptors here would race with them.
        let (_r, _w) = rustix::pipe::pipe().unwrap();
        let limit = sweep_limit();
        assert!(limit > 3);
        let mut cmd = Command::new("/bin/sh");
        // SAFETY: as in only_stdio_on_exec.
        unsafe {
            cmd.pre_exec(move || {
                sweep_cloexec(3, limit);
                Ok(())
            });
        }
        assert_eq!(child_fds(cmd), vec![0, 1, 2]);
    }

    #[test]
    fn adopting_makes_close_on_exec() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = OwnedFd::from(a);
        rustix::io::fcntl_setfd(&fd, FdFlags::empty()).unwrap();
        let raw = fd.into_raw_fd();
        let owned = adopt_socket(raw).expect("adopted");
        assert!(rustix::io::fcntl_getfd(&owned).unwrap().contains(FdFlags::CLOEXEC));
        assert!(adopt_socket(raw).is_none(), "adopted twice");
        drop((owned, b));
    }
}
