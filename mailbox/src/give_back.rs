//! Giving freed memory back to the system when a folder state goes.
//!
//! A folder state of a large folder is megabytes of small allocations (a message list,
//! envelopes, maps). When its last session closes they are freed, but glibc's allocator
//! keeps the pages: the heap's top is trimmed only when it is free, and freed blocks
//! below it stay part of the process. `malloc_trim(0)` returns every whole free page of
//! every arena to the kernel (`madvise(MADV_DONTNEED)`), so an imapd whose sessions all
//! closed goes back near the size it started at. It walks the free lists (a millisecond
//! or so for a heap of tens of megabytes); it is called when a state is dropped, at most
//! once per [`MIN_INTERVAL`].
//!
//! The one `unsafe` of the module is the call itself: it takes no pointer and is safe to
//! call at any time from any thread (glibc takes each arena's lock).

#![allow(unsafe_code)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Least time between two trims: a process closing many folders one after another
/// trims once, then again after this.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

static LAST: Mutex<Option<Instant>> = Mutex::new(None);

/// Returns the allocator's free pages to the system (glibc), unless it was done less
/// than [`MIN_INTERVAL`] ago; whether it was done now.
pub fn give_back() -> bool {
    let Ok(mut last) = LAST.lock() else { return false };
    if last.is_some_and(|t| t.elapsed() < MIN_INTERVAL) {
        return false;
    }
    *last = Some(Instant::now());
    trim();
    true
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointer and only works on the allocator's own
    // structures under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
