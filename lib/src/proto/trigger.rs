//! Triggers: one byte written to a service's socket to wake it, as Postfix does. No
//! framing, no reply; the writer connects non-blocking, writes, closes ([`send`]) — or, for
//! a writer that triggers the same service for every message (cleanup → qmgr), keeps the
//! connection open and writes one byte per trigger on it ([`Kept`]); the service reads a
//! connection's bytes until the writer closes it.
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

/// A trigger connection kept open and shared by a process's threads: one `send` per
/// trigger instead of socket, connect, write and close (cleanup triggers qmgr once per
/// message). A failed write (the service restarted) connects again.
#[derive(Debug)]
pub struct Kept {
    path: &'static str,
    sock: std::sync::Mutex<Option<std::os::fd::OwnedFd>>,
}

impl Kept {
    /// Triggers the service listening at `path` (relative to the working directory).
    pub const fn new(path: &'static str) -> Kept {
        Kept {
            path,
            sock: std::sync::Mutex::new(None),
        }
    }

    /// Sends `byte`; false when nobody listens. A connection whose unread bytes fill the
    /// socket counts as sent: the service reads them after this call, so it acts after
    /// whatever the caller did before it (the one thing a trigger promises).
    pub fn send(&self, byte: u8) -> bool {
        use rustix::io::Errno;
        use rustix::net::{SendFlags, send};
        let mut sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fd) = sock.as_ref() {
            match send(fd, &[byte], SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
                Ok(1..) | Err(Errno::AGAIN) => return true,
                Ok(0) | Err(_) => *sock = None,
            }
        }
        let connected = (|| -> rustix::io::Result<std::os::fd::OwnedFd> {
            use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, connect, socket_with};
            let fd = socket_with(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                None,
            )?;
            connect(&fd, &SocketAddrUnix::new(self.path)?)?;
            send(&fd, &[byte], SendFlags::NOSIGNAL | SendFlags::DONTWAIT)?;
            Ok(fd)
        })();
        match connected {
            Ok(fd) => {
                *sock = Some(fd);
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    /// One connection carries many triggers; a closed one is replaced by a new connection.
    #[test]
    fn a_kept_connection_carries_many_triggers_and_reconnects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmgr");
        let listener = UnixListener::bind(&path).expect("bind");
        let path: &'static str = Box::leak(path.to_string_lossy().into_owned().into_boxed_str());
        let kept = Kept::new(path);
        for _ in 0..3 {
            assert!(kept.send(ARRIVED));
        }
        let (mut first, _) = listener.accept().expect("accept");
        let mut got = [0u8; 3];
        first.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"AAA");
        listener.set_nonblocking(true).expect("nonblocking");
        assert!(listener.accept().is_err(), "one connection for all three");
        drop(first);
        // The first send after the service closed may still be taken by the dead socket's
        // buffer; the next one reconnects.
        let _ = kept.send(WAKEUP);
        assert!(kept.send(ARRIVED));
        listener.set_nonblocking(false).expect("blocking");
        let (mut second, _) = listener.accept().expect("a new connection");
        let mut b = [0u8; 1];
        second.read_exact(&mut b).expect("read");
        assert!(b == [WAKEUP] || b == [ARRIVED], "{b:?}");
    }

    /// Nobody listening: false.
    #[test]
    fn no_listener_is_false() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path: &'static str = Box::leak(dir.path().join("none").to_string_lossy().into_owned().into_boxed_str());
        assert!(!Kept::new(path).send(ARRIVED));
    }
}
