//! The transport every Postern daemon speaks to another over a Unix stream socket:
//! length-framed, size-limited, versioned, with file descriptor passing.
//!
//! Each protocol (smtpd → cleanup, qmgr → local, anything → auth, ...) is a typed enum of
//! requests and replies defined once in postern-lib (`proto`); this module carries them. It is documented
//! byte for byte so that a site can replace a daemon with a program in any language.
//!
//! # Wire format
//!
//! A connection is a sequence of frames in each direction:
//!
//! ```text
//! +----------------------------+------+---------------------+
//! | length                     | kind | payload             |
//! | 4 B, unsigned, big-endian  | 1 B  | `length` bytes      |
//! +----------------------------+------+---------------------+
//! ```
//!
//! `length` counts the payload only (not itself, not the kind byte). Kinds:
//!
//! | kind | name | payload | max payload |
//! | --- | --- | --- | --- |
//! | `M` (0x4d) | message | one JSON value, UTF-8 ([RFC 8259]); by convention an object whose `"type"` member names the request or reply | [`MAX_MESSAGE_LEN`] = 1 MiB |
//! | `D` (0x44) | data chunk | raw bytes, part of a data stream (e.g. a message body) | [`MAX_DATA_CHUNK`] = 64 KiB |
//! | `E` (0x45) | end of data | empty: ends the data stream begun by the preceding `D` frames (a stream may be empty: `E` alone) | 0 |
//!
//! A frame whose length exceeds its kind's maximum is a protocol error; the receiver stops
//! reading that connection and never allocates the announced size. Any other kind byte is a
//! protocol error. A peer that closes the connection between frames has closed cleanly;
//! inside a frame, the frame is truncated.
//!
//! **Handshake.** The first frame each way on a new connection is an `M` frame holding
//! `{"protocol":"<name>","version":<N>}` (unknown extra members are ignored). Both sides
//! send theirs at once, then read the peer's; a different protocol name or version ends the
//! connection with a clear error ([`IpcError::Version`]).
//!
//! **Descriptors.** A frame may carry up to [`MAX_FDS`] open file descriptors as an
//! `SCM_RIGHTS` control message attached to the frame's first byte (sent with the same
//! `sendmsg` call). Only frames whose message says so carry descriptors; descriptors that
//! arrive where none were expected are closed and reported ([`IpcError::UnexpectedFds`]).
//!
//! **Errors.** After any error except [`IpcError::Decode`] and [`IpcError::UnexpectedFds`]
//! (whose frame was read completely), the position in the stream is unknown: drop the
//! connection. Daemons answer a failed exchange as a temporary failure (4xx, defer).
//!
//! # Security stance
//!
//! Daemons of different privilege talk over these sockets (smtpd, which faces the Internet,
//! talks to cleanup and auth), so a receiver treats its peer as hostile: the length prefix
//! is checked against a per-kind constant before any allocation (the classic attack: a
//! 4 GiB length making the receiver allocate or wait forever), JSON is parsed by serde_json
//! with its recursion limit into typed structs only, data streams are bounded by the
//! receiver ([`IpcStream::data_reader`]), received descriptors are close-on-exec and capped
//! in number, and read/write timeouts keep a stalled peer from pinning a process.
//!
//! [RFC 8259]: https://www.rfc-editor.org/rfc/rfc8259

pub mod codec;
mod data;
mod frame;
pub mod request;

#[cfg(test)]
mod tests;

pub use data::{DataReader, DataWriter};

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Largest payload of a message (`M`) frame: 1 MiB.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Largest payload of a data (`D`) frame: 64 KiB.
pub const MAX_DATA_CHUNK: usize = 64 * 1024;
/// Most file descriptors one frame may carry.
pub const MAX_FDS: usize = 8;
/// Bytes in a frame header (length and kind).
pub const HEADER_LEN: usize = 5;

/// Frame kind bytes.
pub mod kind {
    /// A JSON message.
    pub const MESSAGE: u8 = b'M';
    /// A chunk of a data stream.
    pub const DATA: u8 = b'D';
    /// End of a data stream.
    pub const END: u8 = b'E';
}

/// Errors from the IPC transport.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum IpcError {
    /// The socket failed.
    #[error("IPC I/O: {0}")]
    Io(#[from] io::Error),
    /// The peer sent or accepted nothing within the socket's read or write timeout.
    #[error("IPC timeout")]
    Timeout,
    /// The peer closed the connection cleanly, between frames.
    #[error("IPC peer closed the connection")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("IPC frame truncated")]
    Truncated,
    /// A frame (or a data stream, or a message to send) is longer than its limit.
    #[error("IPC frame {:?} too large: {len} bytes, limit {max}", char::from(*kind))]
    TooLarge {
        /// The frame kind.
        kind: u8,
        /// The length announced or attempted.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A frame kind byte other than `M`, `D`, `E`.
    #[error("IPC frame of unknown kind {0:#04x}")]
    BadKind(u8),
    /// A message could not be encoded as JSON.
    #[error("IPC message encoding: {0}")]
    Encode(#[source] serde_json::Error),
    /// A message frame did not hold the JSON of the expected type.
    #[error("IPC message decoding: {0}")]
    Decode(#[source] serde_json::Error),
    /// The peer speaks another protocol or another version of it.
    #[error("IPC protocol mismatch: we speak {ours}, the peer speaks {theirs}")]
    Version {
        /// Our `protocol/version`.
        ours: String,
        /// The peer's `protocol/version`.
        theirs: String,
    },
    /// A frame of the wrong kind for this point of the protocol (e.g. data where a message
    /// was expected).
    #[error("IPC expected a {expected} frame, got {:?}", char::from(*got))]
    UnexpectedFrame {
        /// What was expected.
        expected: &'static str,
        /// The kind received.
        got: u8,
    },
    /// File descriptors arrived with a frame that should carry none; they were closed.
    #[error("IPC received {0} unexpected file descriptors")]
    UnexpectedFds(usize),
    /// More than [`MAX_FDS`] descriptors to send, or received (excess ones are closed).
    #[error("IPC too many file descriptors (limit {MAX_FDS})")]
    TooManyFds,
}

impl From<IpcError> for io::Error {
    fn from(e: IpcError) -> Self {
        match e {
            IpcError::Io(e) => e,
            IpcError::Timeout => io::Error::from(io::ErrorKind::TimedOut),
            IpcError::Truncated | IpcError::Closed => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// The first message each way on a connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    /// The protocol's name, e.g. `"cleanup"`.
    pub protocol: String,
    /// The protocol's version.
    pub version: u32,
}

/// A framed, blocking IPC connection over a Unix stream socket.
#[derive(Debug)]
pub struct IpcStream {
    sock: UnixStream,
    /// Payload of the last frame read (reused; never larger than a frame's maximum).
    payload: Vec<u8>,
}

impl IpcStream {
    /// Wraps a connected socket. No handshake is done: call [`handshake`](Self::handshake).
    pub fn new(sock: UnixStream) -> Self {
        Self {
            sock,
            payload: Vec::new(),
        }
    }

    /// Connects to the socket at `path` (no handshake, no timeouts).
    pub fn connect(path: &Path) -> Result<Self, IpcError> {
        Ok(Self::new(UnixStream::connect(path)?))
    }

    /// The client end of a new connection: sets `timeout` for reads and writes, then does
    /// the [`handshake`](Self::handshake).
    pub fn client(sock: UnixStream, protocol: &str, version: u32, timeout: Option<Duration>) -> Result<Self, IpcError> {
        Self::open(sock, protocol, version, timeout)
    }

    /// The server end of an accepted connection: sets `timeout` for reads and writes, then
    /// does the [`handshake`](Self::handshake). (The handshake is symmetric; the two names
    /// say which end a call site is.)
    pub fn server(sock: UnixStream, protocol: &str, version: u32, timeout: Option<Duration>) -> Result<Self, IpcError> {
        Self::open(sock, protocol, version, timeout)
    }

    fn open(sock: UnixStream, protocol: &str, version: u32, timeout: Option<Duration>) -> Result<Self, IpcError> {
        let mut this = Self::new(sock);
        this.set_read_timeout(timeout)?;
        this.set_write_timeout(timeout)?;
        this.handshake(protocol, version)?;
        Ok(this)
    }

    /// Sets the read timeout (`None`: wait forever); an expired wait is
    /// [`IpcError::Timeout`].
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), IpcError> {
        Ok(self.sock.set_read_timeout(timeout)?)
    }

    /// Sets the write timeout (`None`: wait forever).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<(), IpcError> {
        Ok(self.sock.set_write_timeout(timeout)?)
    }

    /// Sends our hello, reads the peer's, and fails unless both name the same protocol
    /// and version.
    pub fn handshake(&mut self, protocol: &str, version: u32) -> Result<(), IpcError> {
        let ours = Hello {
            protocol: protocol.to_owned(),
            version,
        };
        self.send(&ours)?;
        let theirs: Hello = self.recv()?;
        if theirs != ours {
            return Err(IpcError::Version {
                ours: format!("{}/{}", ours.protocol, ours.version),
                theirs: format!(
                    "{}/{}",
                    crate::strbuf::printable_bounded(theirs.protocol.as_bytes(), 64),
                    theirs.version
                ),
            });
        }
        Ok(())
    }

    /// Sends one message.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), IpcError> {
        self.send_with_fds(msg, &[])
    }

    /// Sends one message with file descriptors attached (at most [`MAX_FDS`]).
    pub fn send_with_fds<T: Serialize>(&mut self, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<(), IpcError> {
        if fds.len() > MAX_FDS {
            return Err(IpcError::TooManyFds);
        }
        let json = serde_json::to_vec(msg).map_err(IpcError::Encode)?;
        if json.len() > MAX_MESSAGE_LEN {
            return Err(IpcError::TooLarge {
                kind: kind::MESSAGE,
                len: json.len() as u64,
                max: MAX_MESSAGE_LEN as u64,
            });
        }
        frame::send(&self.sock, kind::MESSAGE, &json, fds)
    }

    /// Receives one message; a frame carrying descriptors is refused (and they are closed).
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, IpcError> {
        let (msg, fds) = self.recv_with_fds()?;
        if !fds.is_empty() {
            return Err(IpcError::UnexpectedFds(fds.len()));
        }
        Ok(msg)
    }

    /// Receives one message and the descriptors that came with it (possibly none).
    pub fn recv_with_fds<T: DeserializeOwned>(&mut self) -> Result<(T, Vec<OwnedFd>), IpcError> {
        let mut fds = Vec::new();
        let got = frame::recv(&self.sock, &mut self.payload, &mut fds)?;
        if got != kind::MESSAGE {
            return Err(IpcError::UnexpectedFrame {
                expected: "message",
                got,
            });
        }
        let msg = serde_json::from_slice(&self.payload).map_err(IpcError::Decode)?;
        Ok((msg, fds))
    }

    /// Sends `data` as part of a data stream, in chunks of at most [`MAX_DATA_CHUNK`].
    /// Sends nothing for empty `data`. End the stream with [`send_end`](Self::send_end).
    pub fn send_data(&mut self, data: &[u8]) -> Result<(), IpcError> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            frame::send(&self.sock, kind::DATA, chunk, &[])?;
        }
        Ok(())
    }

    /// Ends the current data stream.
    pub fn send_end(&mut self) -> Result<(), IpcError> {
        frame::send(&self.sock, kind::END, &[], &[])
    }

    /// A writer that sends what is written as a data stream; [`DataWriter::finish`] ends it.
    pub fn data_writer(&mut self) -> DataWriter<'_> {
        DataWriter::new(self)
    }

    /// A reader of the data stream the peer sends next, up to its end frame; more than
    /// `max_total` bytes in the stream is an error ([`IpcError::TooLarge`]).
    pub fn data_reader(&mut self, max_total: u64) -> DataReader<'_> {
        DataReader::new(self, max_total)
    }

    /// The socket.
    pub fn get_ref(&self) -> &UnixStream {
        &self.sock
    }

    /// The socket.
    pub fn into_inner(self) -> UnixStream {
        self.sock
    }

    /// Reads one frame into `self.payload`, refusing descriptors; returns its kind.
    fn recv_frame_no_fds(&mut self) -> Result<u8, IpcError> {
        let mut fds = Vec::new();
        let got = frame::recv(&self.sock, &mut self.payload, &mut fds)?;
        if !fds.is_empty() {
            return Err(IpcError::UnexpectedFds(fds.len()));
        }
        Ok(got)
    }
}
