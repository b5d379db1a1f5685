//! Free space on the queue file system (`queue_minfree`), as Postfix's smtpd checks it
//! before it accepts MAIL: refused with `452 4.3.1 Insufficient system storage` when the
//! free space is at most `queue_minfree`, or less than 1.5 × `message_size_limit`, or
//! when a declared `SIZE=` would leave less than `queue_minfree` or take half of what is
//! free. smtpd's working directory is the queue directory; the measurement (`statvfs`)
//! is cached for one second per process, so a busy server makes one call a second.

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one measurement is used.
const CACHE_TIME: Duration = Duration::from_secs(1);

thread_local! {
    static CACHE: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// Bytes free on the file system of the working directory (the queue), at most a second
/// old; `None` when it cannot be measured (then nothing is refused).
pub fn queue_free() -> Option<u64> {
    let now = Instant::now();
    if let Some((at, free)) = CACHE.get()
        && now.duration_since(at) < CACHE_TIME
    {
        return Some(free);
    }
    let free = postern_lib::queue_dirs::free_space(Path::new(".")).ok()?;
    CACHE.set(Some((now, free)));
    Some(free)
}

/// Whether a message may be accepted with `free` bytes free: `minfree` is
/// `queue_minfree`, `limit` `message_size_limit`, `declared` the MAIL `SIZE=`.
pub fn enough(free: u64, minfree: u64, limit: u64, declared: Option<u64>) -> bool {
    if free <= minfree || limit.saturating_mul(3) / 2 > free {
        return false;
    }
    match declared {
        Some(size) => size < free - minfree && size < free / 2,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::enough;

    #[test]
    fn thresholds() {
        const MB: u64 = 1 << 20;
        // 1.5 × message_size_limit must be free.
        assert!(enough(16 * MB, 0, 10 * MB, None));
        assert!(!enough(14 * MB, 0, 10 * MB, None));
        // queue_minfree above that.
        assert!(!enough(16 * MB, 16 * MB, 10 * MB, None));
        assert!(enough(17 * MB, 16 * MB, 10 * MB, None));
        // A declared size may take neither the reserve nor half of what is free.
        assert!(enough(40 * MB, 0, 10 * MB, Some(9 * MB)));
        assert!(!enough(40 * MB, 35 * MB, 10 * MB, Some(9 * MB)));
        assert!(!enough(17 * MB, 0, 10 * MB, Some(9 * MB)));
        assert!(!enough(0, 0, 1024, None));
    }
}
