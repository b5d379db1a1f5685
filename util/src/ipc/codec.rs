//! The IPC wire format without I/O, for event-driven clients (smtpd talking to cleanup and
//! auth from its mio loop): an [`Encoder`] appends frames to an output buffer the caller
//! writes when the socket is writable, and a [`Decoder`] takes bytes as they arrive and
//! yields complete frames.
//!
//! The format, limits and handshake are exactly those of the blocking [`super::IpcStream`]
//! (see the module doc of [`super`]); the per-kind limits come from the same function.
//! Descriptor passing is not supported here: a codec peer never sends or expects
//! descriptors.
//!
//! Security stance: the decoder checks a frame's length against its kind's maximum (or a
//! lower per-decoder limit, [`Decoder::with_limit`]) as soon as the 5-byte header is in,
//! before buffering the payload, so a hostile peer can never make it hold more than one
//! maximal frame. Consumed frame bytes are zeroed in the decoder's buffer (auth requests
//! carry passwords); the encoder zeroes its JSON scratch copy.

use super::frame::max_payload;
use super::{HEADER_LEN, Hello, IpcError, MAX_DATA_CHUNK, kind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroize;

/// Appends frames to an output buffer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Encoder;

impl Encoder {
    /// Appends one frame of kind `k`.
    pub fn frame(k: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), IpcError> {
        let max = max_payload(k).ok_or(IpcError::BadKind(k))?;
        let too_large = || IpcError::TooLarge {
            kind: k,
            len: payload.len() as u64,
            max: max as u64,
        };
        if payload.len() > max {
            return Err(too_large());
        }
        let len = u32::try_from(payload.len()).map_err(|_| too_large())?;
        out.extend_from_slice(&len.to_be_bytes());
        out.push(k);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// Appends a message frame holding `msg` as JSON.
    pub fn message<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), IpcError> {
        let mut json = serde_json::to_vec(msg).map_err(IpcError::Encode)?;
        let r = Self::frame(kind::MESSAGE, &json, out);
        json.zeroize();
        r
    }

    /// Appends the hello of `protocol`/`version`.
    pub fn hello(protocol: &str, version: u32, out: &mut Vec<u8>) -> Result<(), IpcError> {
        Self::message(
            &Hello {
                protocol: protocol.to_owned(),
                version,
            },
            out,
        )
    }

    /// Appends `data` as data frames of at most [`MAX_DATA_CHUNK`] bytes (none for empty
    /// data).
    pub fn data(data: &[u8], out: &mut Vec<u8>) -> Result<(), IpcError> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            Self::frame(kind::DATA, chunk, out)?;
        }
        Ok(())
    }

    /// Appends the end-of-data frame.
    pub fn end(out: &mut Vec<u8>) -> Result<(), IpcError> {
        Self::frame(kind::END, &[], out)
    }
}

/// One complete frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The kind byte.
    pub kind: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// Decodes a message frame as `T`; another kind is [`IpcError::UnexpectedFrame`].
    pub fn message<T: DeserializeOwned>(&self) -> Result<T, IpcError> {
        if self.kind != kind::MESSAGE {
            return Err(IpcError::UnexpectedFrame {
                expected: "message",
                got: self.kind,
            });
        }
        serde_json::from_slice(&self.payload).map_err(IpcError::Decode)
    }

    /// Checks that this frame is the hello of `protocol`/`version`.
    pub fn expect_hello(&self, protocol: &str, version: u32) -> Result<(), IpcError> {
        let theirs: Hello = self.message()?;
        if theirs.protocol != protocol || theirs.version != version {
            return Err(IpcError::Version {
                ours: format!("{protocol}/{version}"),
                theirs: format!(
                    "{}/{}",
                    crate::strbuf::printable_bounded(theirs.protocol.as_bytes(), 64),
                    theirs.version
                ),
            });
        }
        Ok(())
    }
}

/// Splits received bytes into frames.
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Vec<u8>,
    /// A frame error was seen: the stream position is unknown, nothing more is decoded.
    failed: bool,
    /// Largest payload accepted, whatever the kind's own maximum.
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::with_limit(usize::MAX)
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty decoder that also refuses any frame whose payload is over `limit` bytes
    /// (e.g. auth, whose requests are a user name and a password).
    pub fn with_limit(limit: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            failed: false,
            limit,
        }
    }

    /// Whether a complete frame (or a bad header) is buffered, so
    /// [`next_frame`](Self::next_frame) answers without more bytes.
    pub fn has_frame(&self) -> bool {
        self.failed
            || self.header().is_some_and(|(len, k)| {
                let max = max_payload(k).map_or(0, |m| m.min(self.limit));
                len > max || self.buf.len() >= HEADER_LEN.saturating_add(len)
            })
    }

    /// How many more bytes [`push`](Self::push) takes now without exceeding one header and
    /// one maximal payload of the frame in progress.
    pub fn wants(&self) -> usize {
        let need = match self.header() {
            Some((len, _)) => HEADER_LEN + len,
            None => HEADER_LEN,
        };
        need.saturating_sub(self.buf.len()).max(1)
    }

    /// Adds received bytes. Push at most [`wants`](Self::wants) bytes at a time, then
    /// drain [`next_frame`](Self::next_frame).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The length and kind of the frame at the front, once its header is in.
    fn header(&self) -> Option<(usize, u8)> {
        let h = self.buf.get(..HEADER_LEN)?;
        let [l0, l1, l2, l3, k] = <[u8; HEADER_LEN]>::try_from(h).ok()?;
        let len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);
        Some((len, k))
    }

    /// The next complete frame, `Ok(None)` while more bytes are needed, or an error for a
    /// bad header (after which the decoder yields only that error).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, IpcError> {
        if self.failed {
            return Err(IpcError::Truncated);
        }
        let Some((len, k)) = self.header() else {
            return Ok(None);
        };
        let Some(max) = max_payload(k).map(|m| m.min(self.limit)) else {
            self.failed = true;
            return Err(IpcError::BadKind(k));
        };
        if len > max {
            self.failed = true;
            return Err(IpcError::TooLarge {
                kind: k,
                len: len as u64,
                max: max as u64,
            });
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf.get(HEADER_LEN..HEADER_LEN + len).unwrap_or_default().to_vec();
        // Zero the consumed bytes and the stale copy the shift leaves past the new end.
        let old = self.buf.len();
        if let Some(done) = self.buf.get_mut(..HEADER_LEN + len) {
            done.zeroize();
        }
        self.buf.drain(..HEADER_LEN + len);
        let kept = self.buf.len();
        self.buf.resize(old, 0);
        self.buf.truncate(kept);
        Ok(Some(Frame { kind: k, payload }))
    }

    /// Bytes held (of frames not yet taken).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether bytes of an incomplete frame are held (a close now would truncate it).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Writes as much of `out` as a non-blocking `sink` takes now, removing what was written.
/// `Ok(true)`: all of it went; `Ok(false)`: the socket is full (wait for writability);
/// `Err`: the peer is gone (a write of 0 bytes counts as that). The write loop every
/// event-driven codec peer needs.
pub fn write_pending(sink: &mut impl std::io::Write, out: &mut Vec<u8>) -> std::io::Result<bool> {
    while !out.is_empty() {
        match sink.write(out) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn round_trip_byte_by_byte() {
        let mut out = Vec::new();
        Encoder::hello("cleanup", 1, &mut out).unwrap();
        Encoder::data(&vec![7u8; MAX_DATA_CHUNK + 10], &mut out).unwrap();
        Encoder::end(&mut out).unwrap();
        let mut d = Decoder::new();
        let mut frames = Vec::new();
        for b in &out {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 4);
        frames[0].expect_hello("cleanup", 1).unwrap();
        assert!(frames[0].expect_hello("auth", 1).is_err());
        assert_eq!(frames[1].payload.len(), MAX_DATA_CHUNK);
        assert_eq!(frames[2].payload.len(), 10);
        assert_eq!(frames[3].kind, kind::END);
        assert!(!d.has_partial());
    }

    #[test]
    fn refuses_huge_and_unknown_frames_before_buffering() {
        let mut d = Decoder::new();
        d.push(&[0xff, 0xff, 0xff, 0xff, b'M']);
        assert!(matches!(d.next_frame(), Err(IpcError::TooLarge { .. })));
        assert!(d.next_frame().is_err());
        let mut d = Decoder::new();
        d.push(&[0, 0, 0, 0, b'Z']);
        assert!(matches!(d.next_frame(), Err(IpcError::BadKind(b'Z'))));
        let mut out = Vec::new();
        assert!(Encoder::frame(kind::END, b"x", &mut out).is_err());
        assert!(Encoder::frame(b'Q', b"", &mut out).is_err());
    }

    #[test]
    fn interoperates_with_ipc_stream() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut s = super::super::IpcStream::server(b, "t", 3, None).unwrap();
            let mut body = Vec::new();
            s.data_reader(1 << 20).read_to_end(&mut body).unwrap();
            s.send(&serde_json::json!({"type": "ok", "n": body.len()})).unwrap();
        });
        let mut a = a;
        let mut out = Vec::new();
        Encoder::hello("t", 3, &mut out).unwrap();
        Encoder::data(b"hello world", &mut out).unwrap();
        Encoder::end(&mut out).unwrap();
        a.write_all(&out).unwrap();
        let mut d = Decoder::new();
        let mut frames = Vec::new();
        let mut buf = [0u8; 100];
        while frames.len() < 2 {
            let n = a.read(&mut buf).unwrap();
            assert!(n > 0);
            d.push(&buf[..n]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        frames[0].expect_hello("t", 3).unwrap();
        let v: serde_json::Value = frames[1].message().unwrap();
        assert_eq!(v["n"], 11);
        t.join().unwrap();
    }

    #[test]
    fn a_decoder_limit_refuses_smaller_frames_than_the_kind_allows() {
        let mut out = Vec::new();
        Encoder::message(&"x".repeat(100), &mut out).unwrap();
        let mut d = Decoder::with_limit(64);
        d.push(&out[..HEADER_LEN]);
        assert!(d.has_frame(), "a refused header answers at once");
        assert!(matches!(d.next_frame(), Err(IpcError::TooLarge { max: 64, .. })));
        let mut d = Decoder::with_limit(200);
        d.push(&out[..out.len() - 1]);
        assert!(!d.has_frame());
        d.push(&out[out.len() - 1..]);
        assert!(d.has_frame());
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(d.buffered(), 0);
    }

    /// A socket that takes `room` bytes, then would block; `closed`: writes return 0.
    struct Sink {
        got: Vec<u8>,
        room: usize,
        closed: bool,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.closed {
                return Ok(0);
            }
            if self.room == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room).min(2);
            self.got.extend_from_slice(&b[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_pending_writes_what_fits_and_keeps_the_rest() {
        let mut sink = Sink {
            got: Vec::new(),
            room: 5,
            closed: false,
        };
        let mut out = b"abcdefgh".to_vec();
        assert!(!write_pending(&mut sink, &mut out).unwrap());
        assert_eq!((sink.got.as_slice(), out.as_slice()), (&b"abcde"[..], &b"fgh"[..]));
        sink.room = 100;
        assert!(write_pending(&mut sink, &mut out).unwrap());
        assert_eq!((sink.got.as_slice(), out.len()), (&b"abcdefgh"[..], 0));
        sink.closed = true;
        let mut more = b"x".to_vec();
        assert!(write_pending(&mut sink, &mut more).is_err());
    }
}
