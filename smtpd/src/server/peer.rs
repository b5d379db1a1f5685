//! A non-blocking IPC connection to another daemon (cleanup or auth), driven by the
//! event loop: frames to send wait in an output buffer, received bytes go through the
//! sans-I/O decoder of [`postern_lib::ipc::codec`]. Nothing here ever blocks.

use mio::net::UnixStream;
use postern_lib::ipc::IpcError;
use postern_lib::ipc::codec::{Decoder, Encoder, Frame};
use serde::Serialize;
use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::Instant;

/// One connection to a local daemon.
#[derive(Debug)]
pub struct PeerConn {
    /// The socket.
    pub sock: UnixStream,
    /// Bytes waiting to be written.
    pub out: Vec<u8>,
    decoder: Decoder,
    protocol: &'static str,
    version: u32,
    hello_seen: bool,
    /// When a reply is due (a request is in flight).
    pub reply_due: Option<Instant>,
    /// Whether the loop has registered the socket.
    pub registered: bool,
}

/// What a pump of the connection produced.
#[derive(Debug, Default)]
pub struct Pumped {
    /// Whether any bytes moved.
    pub progress: bool,
    /// Messages received (hello excluded).
    pub frames: Vec<Frame>,
    /// The connection failed or closed.
    pub failed: Option<String>,
}

impl PeerConn {
    /// Connects without blocking and queues our hello.
    pub fn connect(path: &Path, protocol: &'static str, version: u32) -> Result<PeerConn, String> {
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
            registered: false,
        })
    }

    /// Queues one message.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), IpcError> {
        Encoder::message(msg, &mut self.out)
    }

    /// Writes what it can and reads what has arrived.
    pub fn pump(&mut self) -> Pumped {
        let mut p = Pumped::default();
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(0) => {
                    p.failed = Some("write returned 0".into());
                    return p;
                }
                Ok(n) => {
                    self.out.drain(..n);
                    p.progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    p.failed = Some(format!("write: {e}"));
                    return p;
                }
            }
        }
        let mut buf = [0u8; 8192];
        loop {
            let want = self.decoder.wants().min(buf.len());
            let Some(slot) = buf.get_mut(..want) else { break };
            match self.sock.read(slot) {
                Ok(0) => {
                    p.failed = Some("connection closed".into());
                    return p;
                }
                Ok(n) => {
                    p.progress = true;
                    self.decoder.push(slot.get(..n).unwrap_or_default());
                    loop {
                        match self.decoder.next_frame() {
                            Ok(Some(f)) if !self.hello_seen => {
                                if let Err(e) = f.expect_hello(self.protocol, self.version) {
                                    p.failed = Some(e.to_string());
                                    return p;
                                }
                                self.hello_seen = true;
                            }
                            Ok(Some(f)) => p.frames.push(f),
                            Ok(None) => break,
                            Err(e) => {
                                p.failed = Some(e.to_string());
                                return p;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    p.failed = Some(format!("read: {e}"));
                    return p;
                }
            }
        }
        p
    }
}
