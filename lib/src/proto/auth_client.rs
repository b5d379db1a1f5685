//! A non-blocking client of auth for event-loop daemons (pop3d; smtpd and imapd may use
//! it too): one request per connection to `private/auth`, driven from the daemon's mio
//! loop on [`crate::ipc::codec`]. Start it, register [`AuthClient::source`] with a token
//! of the session, and call [`AuthClient::progress`] on every readiness event until it
//! yields the reply. The request bytes (a password) are written by the codec's
//! [`write_pending`] and zeroed, with all the buffer's capacity, once written or dropped.

use super::auth::{self, AuthReply, AuthRequest};
use crate::ipc::codec::{Decoder, Encoder, write_pending};
use mio::net::UnixStream;
use std::io::Read;
use std::path::Path;
use zeroize::Zeroize;

/// Largest reply accepted.
pub const MAX_REPLY: usize = 64 * 1024;

/// One request in progress.
#[derive(Debug)]
pub struct AuthClient {
    sock: UnixStream,
    dec: Decoder,
    out: Vec<u8>,
    greeted: bool,
}

impl AuthClient {
    /// Connects to `socket` (normally [`auth::SOCKET`] relative to the queue directory)
    /// and queues the hello and `request`.
    pub fn start(socket: &Path, request: &AuthRequest) -> Result<AuthClient, String> {
        let sock = UnixStream::connect(socket).map_err(|e| format!("connect to auth: {e}"))?;
        let mut out = Vec::new();
        Encoder::hello(auth::PROTOCOL, auth::VERSION, &mut out).map_err(|e| e.to_string())?;
        if let Err(e) = Encoder::message(request, &mut out) {
            out.zeroize();
            return Err(e.to_string());
        }
        Ok(AuthClient {
            sock,
            dec: Decoder::with_limit(MAX_REPLY),
            out,
            greeted: false,
        })
    }

    /// The socket, to register with the event loop (readable and writable).
    pub fn source(&mut self) -> &mut UnixStream {
        &mut self.sock
    }

    /// Writes what is pending and reads what arrived. `Ok(Some(reply))` when done;
    /// `Ok(None)` to wait for the next event; `Err` when auth could not be asked.
    pub fn progress(&mut self) -> Result<Option<AuthReply>, String> {
        if !self.out.is_empty() {
            match write_pending(&mut self.sock, &mut self.out) {
                // All written: zero the whole buffer, the spare room the written bytes
                // were shifted through included.
                Ok(true) => self.out.zeroize(),
                Ok(false) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {}
                Err(e) if e.kind() == std::io::ErrorKind::WriteZero => {
                    return Err("auth closed the connection".into());
                }
                Err(e) => return Err(format!("write to auth: {e}")),
            }
        }
        let mut buf = [0u8; 4096];
        let mut eof = false;
        while !self.dec.has_frame() {
            let want = self.dec.wants().min(buf.len());
            let Some(chunk) = buf.get_mut(..want) else { break };
            match self.sock.read(chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.dec.push(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read from auth: {e}")),
            }
            if !self.greeted && self.dec.has_frame() {
                let hello = self.dec.next_frame().map_err(|e| e.to_string())?;
                if let Some(h) = hello {
                    h.expect_hello(auth::PROTOCOL, auth::VERSION)
                        .map_err(|e| e.to_string())?;
                    self.greeted = true;
                }
            }
        }
        if !self.greeted {
            return if eof {
                Err("auth closed the connection".into())
            } else {
                Ok(None)
            };
        }
        match self.dec.next_frame().map_err(|e| e.to_string())? {
            Some(f) => f.message::<AuthReply>().map(Some).map_err(|e| e.to_string()),
            None if eof => Err("auth closed the connection".into()),
            None => Ok(None),
        }
    }
}

impl Drop for AuthClient {
    fn drop(&mut self) {
        self.out.zeroize();
    }
}
