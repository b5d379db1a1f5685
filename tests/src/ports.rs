//! Free loopback ports for the whole-system tests, reserved across test processes.
//!
//! A port found by binding port 0 and releasing it can be taken again before the test's
//! master binds it — by any outgoing connection (the kernel hands source ports out of the
//! same ephemeral range) or by another test process asking the same way — and the start
//! then fails with "port N is in use by another program" (seen in CI). So ports come from
//! below the kernel's ephemeral range, where no outgoing connection takes them, and each
//! is reserved for the life of the test process by an `flock` on a file named after it in
//! a shared directory, which every other test process respects. The kernel drops the lock
//! when the process ends, however it ends, so nothing stale is left to clean up.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::sync::Mutex;

/// The reservations this process holds (kept open: closing one drops its lock).
static HELD: Mutex<Vec<Flock<File>>> = Mutex::new(Vec::new());

/// The lowest port handed out: above the peers' and the shipped configuration's ports.
const LOWEST: u16 = 11_000;

/// A TCP (and UDP) port on 127.0.0.1 that nothing listens on and no other test process
/// of this machine will be given while this process lives.
pub fn free_port() -> u16 {
    let (lo, hi) = (LOWEST, ephemeral_low().max(LOWEST + 1_000));
    let dir = std::env::temp_dir().join("postern-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let span = u32::from(hi - lo);
    let start = std::process::id().wrapping_mul(7_919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for i in 0..span {
        let port = lo + ((start.wrapping_add(i)) % span) as u16;
        let Ok(file) = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue;
        };
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_err() || UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
        return port;
    }
    panic!("no free port between {lo} and {hi} on 127.0.0.1");
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_differ_and_stay_below_the_ephemeral_range() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert!(a >= LOWEST && a < ephemeral_low().max(LOWEST + 1_000));
        // Held: a second reservation of the same port from this process fails.
        let file = File::options()
            .write(true)
            .open(std::env::temp_dir().join("postern-test-ports").join(a.to_string()))
            .expect("lock file");
        assert!(Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err());
    }
}
