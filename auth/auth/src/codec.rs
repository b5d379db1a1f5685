//! Sans-I/O framing of the IPC wire format ([`postern_lib::ipc`]) for event loops: bytes in,
//! typed messages out, and messages to bytes. The blocking `IpcStream` in lib serves
//! one-request daemons; this is the same format for a mio loop (auth's server side and the
//! non-blocking auth client in [`crate::client`]).
//!
//! Only message (`M`) frames are accepted; a data frame, an unknown kind, or a length over
//! the decoder's bound is an error, and the connection must be dropped. Consumed frame
//! bytes are zeroed, because auth requests carry passwords.

use postern_lib::ipc::{HEADER_LEN, Hello, kind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroize;

/// Why a byte stream is not a valid sequence of message frames.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame announces more than the decoder accepts.
    TooLarge(usize),
    /// A frame kind other than `M`.
    Kind(u8),
    /// The JSON is not the expected message.
    Decode(String),
    /// The peer's hello names another protocol or version.
    Version(String),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::TooLarge(n) => write!(f, "frame of {n} bytes is too large"),
            CodecError::Kind(k) => write!(f, "unexpected frame kind {k:#04x}"),
            CodecError::Decode(e) => write!(f, "bad message: {e}"),
            CodecError::Version(v) => write!(f, "protocol mismatch: peer speaks {v}"),
        }
    }
}

/// Collects bytes and yields one message frame at a time.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_payload: usize,
}

impl FrameDecoder {
    /// A decoder accepting message payloads up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            max_payload,
        }
    }

    /// How many more bytes [`push`](Self::push) takes now (one frame's worth at most).
    pub fn room(&self) -> usize {
        (HEADER_LEN + self.max_payload).saturating_sub(self.buf.len())
    }

    /// Appends bytes read from the socket (at most [`room`](Self::room); the rest is kept
    /// out and the returned count says how many were taken).
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        self.buf.extend_from_slice(data.get(..n).unwrap_or_default());
        n
    }

    /// The payload of the next complete message frame, if one is there. The caller
    /// decodes it; the bytes are zeroed when the returned guard is dropped.
    pub fn next_frame(&mut self) -> Result<Option<Payload>, CodecError> {
        let Some(&[l0, l1, l2, l3, k]) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        if k != kind::MESSAGE {
            return Err(CodecError::Kind(k));
        }
        if len > self.max_payload {
            return Err(CodecError::TooLarge(len));
        }
        let end = HEADER_LEN + len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload = self.buf.get(HEADER_LEN..end).unwrap_or_default().to_vec();
        let rest = self.buf.get(end..).unwrap_or_default().to_vec();
        self.buf.zeroize();
        self.buf = rest;
        Ok(Some(Payload(payload)))
    }

    /// The next message decoded as `T`.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        match self.next_frame()? {
            None => Ok(None),
            Some(p) => p.decode().map(Some),
        }
    }

    /// Whether bytes of an incomplete frame are waiting.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

impl Drop for FrameDecoder {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// A frame's payload; zeroed on drop.
pub struct Payload(Vec<u8>);

impl Payload {
    /// Decodes the JSON.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        serde_json::from_slice(&self.0).map_err(|e| CodecError::Decode(e.to_string()))
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Appends `msg` as one message frame to `out`.
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let json = serde_json::to_vec(msg).map_err(|e| CodecError::Decode(e.to_string()))?;
    let len = u32::try_from(json.len()).map_err(|_| CodecError::TooLarge(json.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind::MESSAGE);
    out.extend_from_slice(&json);
    let mut json = json;
    json.zeroize();
    Ok(())
}

/// Appends our hello for `protocol`/`version`.
pub fn encode_hello(protocol: &str, version: u32, out: &mut Vec<u8>) {
    let hello = Hello {
        protocol: protocol.to_string(),
        version,
    };
    // A Hello always serialises.
    let _ = encode(&hello, out);
}

/// Checks a received hello.
pub fn check_hello(hello: &Hello, protocol: &str, version: u32) -> Result<(), CodecError> {
    if hello.protocol == protocol && hello.version == version {
        Ok(())
    } else {
        Err(CodecError::Version(format!(
            "{}/{}",
            postern_lib::strbuf::printable_bounded(hello.protocol.as_bytes(), 64),
            hello.version
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::proto::auth::AuthRequest;

    #[test]
    fn round_trip_byte_by_byte() {
        let req = AuthRequest::Lookup { user: "alice".into() };
        let mut wire = Vec::new();
        encode_hello("auth", 1, &mut wire);
        encode(&req, &mut wire).expect("encode");
        let mut dec = FrameDecoder::new(1024);
        let mut got_hello = None;
        let mut got_req = None;
        for b in &wire {
            assert_eq!(dec.push(std::slice::from_ref(b)), 1);
            if got_hello.is_none() {
                got_hello = dec.next_message::<Hello>().expect("hello");
            } else if got_req.is_none() {
                got_req = dec.next_message::<AuthRequest>().expect("req");
            }
        }
        check_hello(&got_hello.expect("hello"), "auth", 1).expect("same");
        assert_eq!(got_req, Some(req));
        assert!(!dec.has_partial());
    }

    #[test]
    fn oversized_and_wrong_kind_are_errors() {
        let mut dec = FrameDecoder::new(16);
        dec.push(&[0, 0, 1, 0, b'M']);
        assert_eq!(dec.next_frame().err(), Some(CodecError::TooLarge(256)));
        let mut dec = FrameDecoder::new(16);
        dec.push(&[0, 0, 0, 0, b'D']);
        assert_eq!(dec.next_frame().err(), Some(CodecError::Kind(b'D')));
        let dec = FrameDecoder::new(16);
        assert_eq!(dec.room(), 21);
    }

    #[test]
    fn version_mismatch() {
        let h = Hello {
            protocol: "cleanup".into(),
            version: 1,
        };
        assert!(check_hello(&h, "auth", 1).is_err());
    }
}
