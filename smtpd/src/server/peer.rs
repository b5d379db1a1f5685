//! The non-blocking IPC connection to cleanup for the message in progress, on one of the
//! connection's auxiliary tokens: frames to send wait in an output buffer written with
//! [`write_pending`], received bytes go through the sans-I/O decoder of
//! [`postern_lib::ipc::codec`]. Nothing here ever blocks; the socket is read only after a
//! readiness event says there may be something to read, and registered for writability
//! only while output waits for room. Dropping it closes the socket, which takes it off
//! the event loop (epoll forgets a closed descriptor: no deregistering call).

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use postern_lib::ipc::IpcError;
use postern_lib::ipc::codec::{Decoder, Encoder, Frame, write_pending};
use postern_lib::skeleton::conn::write_interest;
use serde::Serialize;
use std::io::{ErrorKind, Read};
use std::path::Path;
use std::time::Instant;

/// One connection to a local daemon.
#[derive(Debug)]
pub struct PeerConn {
    sock: UnixStream,
    /// Bytes waiting to be written.
    pub out: Vec<u8>,
    decoder: Decoder,
    protocol: &'static str,
    version: u32,
    hello_seen: bool,
    /// When a reply is due (a request is in flight).
    pub reply_due: Option<Instant>,
    /// The socket may have bytes to read: set by a readiness event, cleared when a read
    /// comes back short or would block (the socket is edge-triggered: every arrival
    /// after that is a new event), so a pump without news makes no read call.
    pub readable: bool,
    /// The peer has closed its side (or the socket failed): read to the end.
    pub hup: bool,
    token: Token,
    /// Whether the socket is registered for writability too.
    write_interest: bool,
}

/// Bytes read from a peer at once.
const READ_SIZE: usize = 8192;

/// What a pump of the connection produced.
#[derive(Debug, Default)]
pub struct Pumped {
    /// Messages received (hello excluded).
    pub frames: Vec<Frame>,
    /// The connection failed or closed.
    pub failed: Option<String>,
}

impl PeerConn {
    /// Connects without blocking and queues our hello; [`register`](Self::register) once
    /// the first request is queued too.
    pub fn connect(path: &Path, protocol: &'static str, version: u32, token: Token) -> Result<PeerConn, String> {
        let sock = UnixStream::connect(path).map_err(|e| format!("connect to {}: {e}", path.display()))?;
        let mut out = Vec::new();
        Encoder::hello(protocol, version, &mut out).map_err(|e| e.to_string())?;
        Ok(PeerConn {
            sock,
            out,
            decoder: Decoder::new(),
            protocol,
            version,
            hello_seen: false,
            reply_due: None,
            readable: true,
            hup: false,
            token,
            write_interest: false,
        })
    }

    /// Writes what is queued and registers the socket (for writability too if some is left).
    pub fn register(&mut self, registry: &Registry) -> Result<(), String> {
        write_pending(&mut self.sock, &mut self.out).map_err(|e| format!("write: {e}"))?;
        self.write_interest = !self.out.is_empty();
        let interest = if self.write_interest {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        registry
            .register(&mut self.sock, self.token, interest)
            .map_err(|e| format!("register: {e}"))
    }

    /// Queues one message.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), IpcError> {
        Encoder::message(msg, &mut self.out)
    }

    /// Writes what it can; asks for writability while output is left. `Err`: the peer is
    /// gone.
    pub fn flush(&mut self, registry: &Registry) -> std::io::Result<()> {
        write_pending(&mut self.sock, &mut self.out)?;
        let want = !self.out.is_empty();
        write_interest(registry, &mut self.sock, self.token, &mut self.write_interest, want);
        Ok(())
    }

    /// Writes what it can and reads what has arrived.
    pub fn pump(&mut self, registry: &Registry) -> Pumped {
        let mut p = Pumped::default();
        if let Err(e) = self.flush(registry) {
            p.failed = Some(format!("write: {e}"));
            return p;
        }
        let mut buf = [0u8; READ_SIZE];
        while self.readable {
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    p.failed = Some("connection closed".into());
                    return p;
                }
                Ok(n) => {
                    if n < buf.len() && !self.hup {
                        self.readable = false;
                    }
                    if let Err(e) = self.decode(buf.get(..n).unwrap_or_default(), &mut p.frames) {
                        p.failed = Some(e);
                        return p;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    p.failed = Some(format!("read: {e}"));
                    return p;
                }
            }
        }
        p
    }

    /// Feeds received bytes to the decoder (never more than it wants at a time, so it holds
    /// at most one frame) and collects the frames after our peer's hello.
    fn decode(&mut self, mut bytes: &[u8], frames: &mut Vec<Frame>) -> Result<(), String> {
        while !bytes.is_empty() {
            let (now, rest) = bytes.split_at(self.decoder.wants().min(bytes.len()));
            bytes = rest;
            self.decoder.push(now);
            while let Some(f) = self.decoder.next_frame().map_err(|e| e.to_string())? {
                if self.hello_seen {
                    frames.push(f);
                } else {
                    f.expect_hello(self.protocol, self.version).map_err(|e| e.to_string())?;
                    self.hello_seen = true;
                }
            }
        }
        Ok(())
    }
}
