//! Triggers: one byte written to a service's socket to wake it, as Postfix does. No
//! framing, no reply; the writer connects non-blocking, writes, closes.
//!
//! | byte | meaning |
//! | --- | --- |
//! | `W` | wake up: scan your queue (master's periodic wakeup, postdrop → pickup) |
//! | `A` | new mail arrived in `incoming/` (cleanup → qmgr) |
//! | `F` | flush: retry deferred mail now (`postqueue -f`, `sendmail -q`) |

/// Wake up and scan.
pub const WAKEUP: u8 = b'W';
/// New mail in incoming/.
pub const ARRIVED: u8 = b'A';
/// Retry deferred mail now.
pub const FLUSH: u8 = b'F';
/// qmgr's socket, relative to the queue directory.
pub const QMGR_SOCKET: &str = "public/qmgr";
/// pickup's socket, relative to the queue directory.
pub const PICKUP_SOCKET: &str = "public/pickup";

/// Sends `byte` to the unix socket at `path` without blocking. Returns false when nobody
/// listens or the backlog is full (the service will scan on its next wakeup anyway).
pub fn send(path: &std::path::Path, byte: u8) -> bool {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, connect, socket_with};
    (|| -> rustix::io::Result<()> {
        let fd = socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )?;
        connect(&fd, &SocketAddrUnix::new(path)?)?;
        rustix::io::write(&fd, &[byte])?;
        Ok(())
    })()
    .is_ok()
}
