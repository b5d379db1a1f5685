//! A non-blocking client of auth for event-loop daemons (pop3d; smtpd and imapd may use
//! it too): one request per connection to `private/auth`, driven from the daemon's mio
//! loop. Start it, register [`AuthClient::source`] with a token of the session, and call
//! [`AuthClient::progress`] on every readiness event until it yields the reply.

use crate::codec::{self, FrameDecoder};
use mio::net::UnixStream;
use postern_lib::ipc::Hello;
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use std::io::{Read, Write};
use std::path::Path;
use zeroize::Zeroize;

/// Largest reply accepted.
pub const MAX_REPLY: usize = 64 * 1024;

/// One request in progress.
#[derive(Debug)]
pub struct AuthClient {
    sock: UnixStream,
    dec: FrameDecoder,
    out: Vec<u8>,
    greeted: bool,
}

impl AuthClient {
    /// Connects to `socket` (normally [`auth::SOCKET`] relative to the queue directory)
    /// and queues the hello and `request`.
    pub fn start(socket: &Path, request: &AuthRequest) -> Result<AuthClient, String> {
        let sock = UnixStream::connect(socket).map_err(|e| format!("connect to auth: {e}"))?;
        let mut out = Vec::new();
        codec::encode_hello(auth::PROTOCOL, auth::VERSION, &mut out);
        codec::encode(request, &mut out).map_err(|e| e.to_string())?;
        Ok(AuthClient {
            sock,
            dec: FrameDecoder::new(MAX_REPLY),
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
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(0) => return Err("auth closed the connection".into()),
                Ok(n) => {
                    let sent: Vec<u8> = self.out.drain(..n).collect();
                    let mut sent = sent;
                    sent.zeroize();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write to auth: {e}")),
            }
        }
        let mut buf = [0u8; 4096];
        let mut eof = false;
        loop {
            let room = self.dec.room().min(buf.len());
            let Some(chunk) = buf.get_mut(..room) else { break };
            if chunk.is_empty() {
                break;
            }
            match self.sock.read(chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.dec.push(chunk.get(..n).unwrap_or_default());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read from auth: {e}")),
            }
        }
        if !self.greeted {
            match self.dec.next_message::<Hello>().map_err(|e| e.to_string())? {
                Some(h) => {
                    codec::check_hello(&h, auth::PROTOCOL, auth::VERSION).map_err(|e| e.to_string())?;
                    self.greeted = true;
                }
                None if eof => return Err("auth closed the connection".into()),
                None => return Ok(None),
            }
        }
        match self.dec.next_message::<AuthReply>().map_err(|e| e.to_string())? {
            Some(r) => Ok(Some(r)),
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
