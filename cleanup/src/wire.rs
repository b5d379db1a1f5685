//! The cleanup protocol on one client connection, read in bulk: each `read` takes whatever
//! the client has sent (up to [`READ_SIZE`] bytes) and [`Decoder`] splits it into frames, so
//! smtpd's hello and request arrive with one system call and a message's data frames with
//! about one per burst — the blocking [`postern_lib::ipc::IpcStream`] makes two `recvmsg`
//! per frame (its header, then its payload; it must not read past a frame, for descriptor
//! passing, which the cleanup protocol never uses: descriptors sent anyway are dropped by
//! the kernel, as a plain `read` takes no control data).
//!
//! The handshake is the transport's (each side sends its hello, then reads the peer's), with
//! one saving: when the client's request came with its hello (smtpd sends both at once) our
//! hello waits and goes out in one write with the first answer; a client that waits for our
//! hello before it sends its request (the blocking clients: pickup, bounce, postsuper) gets
//! it at once.
//!
//! Security stance: the decoder checks each frame's length against its kind's maximum
//! before buffering the payload, and is fed at most what one frame still needs, so a
//! hostile client can make it hold at most one maximal frame plus one read buffer.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use postern_lib::ipc::IpcError;
use postern_lib::ipc::codec::{Decoder, Encoder, Frame};
use postern_lib::ipc::kind;

/// Bytes taken from the socket at once.
const READ_SIZE: usize = 64 * 1024;

/// Bytes a connection can be sent without a write ever waiting for the client: a small
/// fraction of any Unix stream socket's send buffer (208 KB by default, `wmem_default`; the
/// kernel's floor, `SOCK_MIN_SNDBUF`, still holds a few such writes), all writes of the
/// connection counted. cleanup's hello, queue ID and reply take about 150 bytes.
const NEVER_WAITS: usize = 1024;

/// One client connection.
pub struct Wire {
    sock: UnixStream,
    decoder: Decoder,
    frames: VecDeque<Frame>,
    /// Bytes to send with the next [`send`](Self::send) (our deferred hello).
    out: Vec<u8>,
    buf: Vec<u8>,
    /// A bad frame ended decoding: given out after the frames before it.
    failed: Option<IpcError>,
    /// The write timeout, until it is set on the socket (before a write that could wait).
    write_timeout: Option<Option<Duration>>,
    /// Bytes written so far.
    sent: usize,
}

impl Wire {
    /// Takes the accepted socket, with `timeout` for every read and every write that could
    /// wait, and does the handshake for `protocol`/`version`. A write of at most
    /// [`NEVER_WAITS`] bytes cannot wait (the socket's send buffer holds it whatever the
    /// client does), and those are all cleanup writes but for a milter's long reply text:
    /// the write timeout is set only before a longer one, not with a system call per
    /// connection.
    pub fn server(sock: UnixStream, protocol: &str, version: u32, timeout: Option<Duration>) -> Result<Wire, IpcError> {
        sock.set_read_timeout(timeout)?;
        let mut w = Wire {
            sock,
            decoder: Decoder::new(),
            frames: VecDeque::new(),
            out: Vec::new(),
            buf: vec![0u8; READ_SIZE],
            failed: None,
            write_timeout: Some(timeout),
            sent: 0,
        };
        Encoder::hello(protocol, version, &mut w.out)?;
        let checked = w.next_frame().and_then(|f| f.expect_hello(protocol, version));
        if let Err(e) = checked {
            // The client learns why we end the connection (if it is still there).
            let _ = w.write_out();
            return Err(e);
        }
        if w.frames.is_empty() {
            // The client waits for our hello before it sends its request.
            w.write_out()?;
        }
        Ok(w)
    }

    /// The next frame; reads from the socket when none is buffered.
    fn next_frame(&mut self) -> Result<Frame, IpcError> {
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Ok(f);
            }
            if let Some(e) = self.failed.take() {
                // Once told, the stream position is unknown: nothing more is read.
                self.failed = Some(IpcError::Truncated);
                return Err(e);
            }
            let n = loop {
                match self.sock.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return Err(IpcError::Timeout);
                    }
                    Err(e) => return Err(IpcError::Io(e)),
                }
            };
            if n == 0 {
                return Err(if self.decoder.has_partial() {
                    IpcError::Truncated
                } else {
                    IpcError::Closed
                });
            }
            let mut bytes = self.buf.get(..n).unwrap_or_default();
            'split: while !bytes.is_empty() {
                let (now, rest) = bytes.split_at(self.decoder.wants().min(bytes.len()));
                bytes = rest;
                self.decoder.push(now);
                loop {
                    match self.decoder.next_frame() {
                        Ok(Some(f)) => self.frames.push_back(f),
                        Ok(None) => break,
                        Err(e) => {
                            self.failed = Some(e);
                            break 'split;
                        }
                    }
                }
            }
        }
    }

    /// Receives one frame (decode a message with [`Frame::message`]).
    pub fn recv(&mut self) -> Result<Frame, IpcError> {
        self.next_frame()
    }

    /// Sends what `encode` appends (e.g. [`Encoder::message`]), after our hello if it is
    /// still waiting, in one write.
    pub fn send(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> Result<(), IpcError>) -> Result<(), IpcError> {
        encode(&mut self.out)?;
        self.write_out()
    }

    fn write_out(&mut self) -> Result<(), IpcError> {
        if self.out.len() + self.sent > NEVER_WAITS
            && let Some(t) = self.write_timeout.take()
        {
            self.sock.set_write_timeout(t)?;
        }
        self.sent += self.out.len();
        let r = self.sock.write_all(&self.out);
        self.out.clear();
        r.map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => IpcError::Timeout,
            _ => IpcError::Io(e),
        })
    }

    /// Reads the data stream (data frames up to the end frame), handing each chunk to
    /// `chunk`; returns its total length.
    pub fn read_data(&mut self, mut chunk: impl FnMut(&[u8])) -> Result<u64, IpcError> {
        let mut total: u64 = 0;
        loop {
            let f = self.next_frame()?;
            match f.kind {
                kind::DATA => {
                    total = total.saturating_add(f.payload.len() as u64);
                    chunk(&f.payload);
                }
                kind::END => return Ok(total),
                got => {
                    return Err(IpcError::UnexpectedFrame {
                        expected: "data or end",
                        got,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::ipc::IpcStream;

    /// A blocking client (waits for our hello before its request) and a client that sends
    /// hello, request and data at once are both served; the content comes through whole.
    #[test]
    fn blocking_and_eager_clients() {
        for eager in [false, true] {
            let (a, b) = UnixStream::pair().expect("pair");
            let client = std::thread::spawn(move || {
                if eager {
                    let mut out = Vec::new();
                    Encoder::hello("cleanup", 7, &mut out).expect("hello");
                    Encoder::message(&"request", &mut out).expect("msg");
                    Encoder::data(&vec![b'x'; 100_000], &mut out).expect("data");
                    Encoder::end(&mut out).expect("end");
                    let mut a = a;
                    a.write_all(&out).expect("write");
                    let mut ipc = IpcStream::new(a);
                    let hello: postern_lib::ipc::Hello = ipc.recv().expect("hello");
                    assert_eq!(hello.protocol, "cleanup");
                    ipc.recv::<String>().expect("reply")
                } else {
                    let mut ipc = IpcStream::client(a, "cleanup", 7, None).expect("handshake");
                    ipc.send(&"request").expect("send");
                    ipc.send_data(&vec![b'x'; 100_000]).expect("data");
                    ipc.send_end().expect("end");
                    ipc.recv::<String>().expect("reply")
                }
            });
            let mut w = Wire::server(b, "cleanup", 7, Some(Duration::from_secs(5))).expect("server");
            let req: String = w.recv().and_then(|f| f.message()).expect("request");
            assert_eq!(req, "request");
            let mut got = Vec::new();
            let total = w.read_data(|c| got.extend_from_slice(c)).expect("data");
            assert_eq!(total, 100_000);
            assert!(got.iter().all(|&b| b == b'x') && got.len() == 100_000);
            w.send(|out| Encoder::message(&format!("done {eager}"), out))
                .expect("reply");
            assert_eq!(client.join().expect("client"), format!("done {eager}"));
        }
    }

    /// A reply too long to be sure to fit the socket's buffer is sent with the write
    /// timeout: a client that does not read it cannot hold the thread past it.
    #[test]
    fn a_long_reply_to_a_client_that_does_not_read_times_out() {
        let (mut a, b) = UnixStream::pair().expect("pair");
        let mut out = Vec::new();
        Encoder::hello("cleanup", 7, &mut out).expect("hello");
        Encoder::message(&"request", &mut out).expect("msg");
        a.write_all(&out).expect("write");
        let mut w = Wire::server(b, "cleanup", 7, Some(Duration::from_millis(200))).expect("server");
        let _: String = w.recv().and_then(|f| f.message()).expect("request");
        let long = "x".repeat(1_000_000);
        let started = std::time::Instant::now();
        assert!(matches!(w.send(|o| Encoder::message(&long, o)), Err(IpcError::Timeout)));
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(a);
    }

    /// Another protocol version: the client learns ours, the server fails.
    #[test]
    fn a_version_mismatch_is_refused_and_told() {
        let (a, b) = UnixStream::pair().expect("pair");
        let client = std::thread::spawn(move || IpcStream::client(a, "cleanup", 6, None).map(|_| ()));
        assert!(matches!(
            Wire::server(b, "cleanup", 7, Some(Duration::from_secs(5))),
            Err(IpcError::Version { .. })
        ));
        assert!(matches!(client.join().expect("client"), Err(IpcError::Version { .. })));
    }

    /// A frame longer than its kind allows ends the connection without buffering it.
    #[test]
    fn an_oversized_frame_is_refused() {
        let (mut a, b) = UnixStream::pair().expect("pair");
        let mut out = Vec::new();
        Encoder::hello("cleanup", 7, &mut out).expect("hello");
        out.extend_from_slice(&u32::MAX.to_be_bytes());
        out.push(kind::DATA);
        a.write_all(&out).expect("write");
        let mut w = Wire::server(b, "cleanup", 7, Some(Duration::from_secs(5))).expect("server");
        assert!(matches!(w.read_data(|_| {}), Err(IpcError::TooLarge { .. })));
    }
}
