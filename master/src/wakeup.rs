//! Wakeup triggers: for a service with `wakeup = "60s"` (pickup, qmgr) master connects to
//! its unix socket every period and writes one byte, `W`, as Postfix's master does.
//! The connection is non-blocking: if the service's backlog is full, it is awake anyway
//! and the trigger is skipped.

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, connect, socket_with};

/// Sends one wakeup to the unix socket at `path`.
pub fn trigger(path: &str) {
    let result = (|| -> rustix::io::Result<()> {
        let fd = socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )?;
        let addr = SocketAddrUnix::new(path)?;
        connect(&fd, &addr)?;
        rustix::io::write(&fd, b"W")?;
        Ok(())
    })();
    if let Err(e) = result
        && e != rustix::io::Errno::AGAIN
    {
        tracing::warn!("wakeup {path}: {e}");
    }
}
