//! Adopting file descriptors that master passed to this process at exec time.
//!
//! This is the one module of the crate that needs `unsafe`: turning a descriptor number
//! into an owned handle cannot be checked by the compiler. The check is done at run time
//! instead: the number must be open (`fcntl(F_GETFD)` succeeds) and of the expected kind
//! (a socket), and each number may be adopted once per process.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

static TAKEN: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Takes ownership of inherited descriptor `fd` if it is an open socket not yet adopted.
pub fn adopt_socket(fd: RawFd) -> Option<OwnedFd> {
    let mut taken = TAKEN.lock().ok()?;
    if fd < 3 || taken.contains(&fd) {
        return None;
    }
    let borrowed = {
        // SAFETY: the descriptor is only borrowed for the duration of fstat; `fstat` on
        // a closed number fails cleanly with EBADF.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        rustix::fs::fstat(b).ok()?
    };
    if rustix::fs::FileType::from_raw_mode(borrowed.st_mode) != rustix::fs::FileType::Socket {
        return None;
    }
    taken.push(fd);
    // SAFETY: `fd` is open (fstat succeeded), is a socket, was handed to us by master for
    // this purpose, and is adopted at most once (TAKEN), so no other owner exists.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
