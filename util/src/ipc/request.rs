//! One request to a local daemon from an event loop, on [`super::codec`]: connect, send the
//! hello and the request, read the daemon's hello and one reply, never blocking. The
//! client of auth (postern-lib's `proto::auth_client`) and of the replicator
//! (`proto::replica`) for smtpd, pop3d, imapd and the proxy.
//!
//! Start it, register [`OneRequest::source`] (readable and writable) with a token of the
//! session, and call [`OneRequest::progress`] on every readiness event until it yields the
//! reply. The request bytes (a password, for auth) are zeroed with the whole capacity of
//! their buffer once written, and when the client is dropped; the decoder zeroes the
//! reply bytes it consumed.

use super::codec::{Decoder, Encoder, write_pending};
use mio::net::UnixStream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{ErrorKind, Read};
use std::marker::PhantomData;
use std::path::Path;
use zeroize::Zeroize;

/// Bytes read at once.
const READ_SIZE: usize = 4096;

/// Which daemon, in which protocol: the hello both sides send, and the name in errors.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The daemon's name in error messages (`connect to auth: ...`).
    pub name: &'static str,
    /// Protocol name of the hello.
    pub protocol: &'static str,
    /// Protocol version of the hello.
    pub version: u32,
    /// Largest reply frame accepted.
    pub max_reply: usize,
}

/// One request in progress, answered by a reply of type `R`.
#[derive(Debug)]
pub struct OneRequest<R> {
    sock: UnixStream,
    dec: Decoder,
    out: Vec<u8>,
    peer: Peer,
    greeted: bool,
    reply: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> OneRequest<R> {
    /// Connects to `socket` without blocking and queues the hello and `request`.
    pub fn start(socket: &Path, peer: Peer, request: &impl Serialize) -> Result<Self, String> {
        let sock = UnixStream::connect(socket).map_err(|e| format!("connect to {}: {e}", peer.name))?;
        let mut out = Vec::new();
        let queued =
            Encoder::hello(peer.protocol, peer.version, &mut out).and_then(|()| Encoder::message(request, &mut out));
        if let Err(e) = queued {
            out.zeroize();
            return Err(e.to_string());
        }
        Ok(OneRequest {
            sock,
            dec: Decoder::with_limit(peer.max_reply),
            out,
            peer,
            greeted: false,
            reply: PhantomData,
        })
    }

    /// The socket, to register with the event loop (readable and writable).
    pub fn source(&mut self) -> &mut UnixStream {
        &mut self.sock
    }

    /// Writes what is pending and reads what arrived. `Ok(Some(reply))` when done;
    /// `Ok(None)` to wait for the next event; `Err` when the daemon could not be asked (it
    /// is not there, closed the connection, or sent a wrong hello or a bad frame).
    pub fn progress(&mut self) -> Result<Option<R>, String> {
        let name = self.peer.name;
        if !self.out.is_empty() {
            match write_pending(&mut self.sock, &mut self.out) {
                // All written: zero the whole buffer, the spare room the written bytes
                // were shifted through included.
                Ok(true) => self.out.zeroize(),
                Ok(false) => {}
                // A non-blocking connect not finished yet: the next event goes on.
                Err(e) if e.kind() == ErrorKind::NotConnected => {}
                Err(e) if e.kind() == ErrorKind::WriteZero => return Err(format!("{name} closed the connection")),
                Err(e) => return Err(format!("write to {name}: {e}")),
            }
        }
        let mut buf = [0u8; READ_SIZE];
        loop {
            if let Some(reply) = self.next_reply().map_err(|e| format!("{name}: {e}"))? {
                return Ok(Some(reply));
            }
            let want = self.dec.wants().min(buf.len());
            let Some(chunk) = buf.get_mut(..want) else {
                return Ok(None);
            };
            match self.sock.read(chunk) {
                Ok(0) => return Err(format!("{name} closed the connection")),
                Ok(n) => self.dec.push(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read from {name}: {e}")),
            }
        }
    }

    /// The reply once complete; the daemon's hello is checked first.
    fn next_reply(&mut self) -> Result<Option<R>, super::IpcError> {
        while let Some(frame) = self.dec.next_frame()? {
            if self.greeted {
                return frame.message().map(Some);
            }
            frame.expect_hello(self.peer.protocol, self.peer.version)?;
            self.greeted = true;
        }
        Ok(None)
    }
}

impl<R> Drop for OneRequest<R> {
    fn drop(&mut self) {
        self.out.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    const PEER: Peer = Peer {
        name: "echo",
        protocol: "echo",
        version: 1,
        max_reply: 64,
    };

    /// Polls `progress` until it is not `Ok(None)` (the peer runs on a thread).
    fn finish(c: &mut OneRequest<String>) -> Result<Option<String>, String> {
        for _ in 0..2000 {
            match c.progress() {
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(1)),
                other => return other,
            }
        }
        Ok(None)
    }

    fn server(reply: Vec<u8>) -> (tempfile::TempDir, std::path::PathBuf, std::thread::JoinHandle<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(&reply).unwrap();
            let mut got = vec![0u8; 4096];
            let n = s.read(&mut got).unwrap();
            got.truncate(n);
            // Keep the socket open until the client has read the reply.
            std::thread::sleep(std::time::Duration::from_millis(200));
            got
        });
        (dir, path, t)
    }

    #[test]
    fn hello_request_and_reply() {
        let mut reply = Vec::new();
        Encoder::hello("echo", 1, &mut reply).unwrap();
        Encoder::message(&"pong".to_string(), &mut reply).unwrap();
        let (_d, path, t) = server(reply);
        let mut c: OneRequest<String> = OneRequest::start(&path, PEER, &"ping".to_string()).unwrap();
        assert_eq!(finish(&mut c), Ok(Some("pong".to_string())));
        let mut want = Vec::new();
        Encoder::hello("echo", 1, &mut want).unwrap();
        Encoder::message(&"ping".to_string(), &mut want).unwrap();
        assert_eq!(t.join().unwrap(), want);
        assert!(c.out.is_empty() && c.out.capacity() > 0);
    }

    #[test]
    fn a_wrong_hello_an_oversize_reply_or_a_close_is_an_error() {
        let mut wrong = Vec::new();
        Encoder::hello("other", 1, &mut wrong).unwrap();
        let mut big = Vec::new();
        Encoder::hello("echo", 1, &mut big).unwrap();
        Encoder::message(&"x".repeat(100), &mut big).unwrap();
        let mut short = Vec::new();
        Encoder::hello("echo", 1, &mut short).unwrap();
        for reply in [wrong, big, short] {
            let (_d, path, _t) = server(reply);
            let mut c: OneRequest<String> = OneRequest::start(&path, PEER, &"ping".to_string()).unwrap();
            let r = finish(&mut c);
            assert!(matches!(&r, Err(e) if e.starts_with("echo")), "{r:?}");
        }
    }

    #[test]
    fn nobody_listening_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let e = OneRequest::<String>::start(&dir.path().join("none"), PEER, &"ping").unwrap_err();
        assert!(e.starts_with("connect to echo:"), "{e}");
    }
}
