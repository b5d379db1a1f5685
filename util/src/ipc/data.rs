//! Data streams (`D` frames up to an `E` frame) as `io::Read` and `io::Write`.

use std::io::{self, Read, Write};

use super::{IpcError, IpcStream, MAX_DATA_CHUNK, kind};

/// Reads the data stream the peer is sending, up to and including its end frame.
///
/// Errors come out of [`Read::read`] as `io::Error`s wrapping the [`IpcError`] (timeouts as
/// `TimedOut`, truncation as `UnexpectedEof`). After `read` has returned 0 the end frame
/// has been consumed and the connection is ready for the next message. Dropping the reader
/// earlier leaves the rest of the stream unread: call [`finish`](Self::finish) to skip it.
#[derive(Debug)]
pub struct DataReader<'a> {
    stream: &'a mut IpcStream,
    /// Read position in `stream.payload`.
    pos: usize,
    done: bool,
    total: u64,
    max_total: u64,
}

impl<'a> DataReader<'a> {
    pub(super) fn new(stream: &'a mut IpcStream, max_total: u64) -> Self {
        stream.payload.clear();
        Self {
            stream,
            pos: 0,
            done: false,
            total: 0,
            max_total,
        }
    }

    /// Bytes of the stream received so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether the end frame has been received.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Reads and discards the rest of the stream, through its end frame; returns the
    /// stream's total length.
    pub fn finish(mut self) -> Result<u64, IpcError> {
        while !self.done {
            self.next_frame()?;
        }
        Ok(self.total)
    }

    /// Reads the next frame; `D` refills the buffer, `E` ends the stream.
    fn next_frame(&mut self) -> Result<(), IpcError> {
        let got = self.stream.recv_frame_no_fds()?;
        self.pos = 0;
        match got {
            kind::DATA => {
                let n = self.stream.payload.len() as u64;
                self.total = self.total.saturating_add(n);
                if self.total > self.max_total {
                    return Err(IpcError::TooLarge {
                        kind: kind::DATA,
                        len: self.total,
                        max: self.max_total,
                    });
                }
                Ok(())
            }
            kind::END => {
                self.done = true;
                Ok(())
            }
            other => Err(IpcError::UnexpectedFrame {
                expected: "data or end",
                got: other,
            }),
        }
    }
}

impl Read for DataReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos >= self.stream.payload.len() {
            if self.done {
                return Ok(0);
            }
            self.next_frame()?;
        }
        let available = self.stream.payload.get(self.pos..).unwrap_or_default();
        let n = available.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Ok(n)
    }
}

/// Sends what is written to it as a data stream, in frames of up to
/// [`MAX_DATA_CHUNK`](super::MAX_DATA_CHUNK) bytes; [`finish`](Self::finish) sends the
/// rest and the end frame. Dropping it without `finish` leaves the stream unterminated.
#[derive(Debug)]
pub struct DataWriter<'a> {
    stream: &'a mut IpcStream,
    buf: Vec<u8>,
}

impl<'a> DataWriter<'a> {
    pub(super) fn new(stream: &'a mut IpcStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends any buffered bytes and the end frame.
    pub fn finish(mut self) -> Result<(), IpcError> {
        self.send_buffered()?;
        self.stream.send_end()
    }

    fn send_buffered(&mut self) -> Result<(), IpcError> {
        if !self.buf.is_empty() {
            self.stream.send_data(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Write for DataWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && bytes.len() >= MAX_DATA_CHUNK {
            // Large writes go straight out, without copying.
            let n = bytes.len() - bytes.len() % MAX_DATA_CHUNK;
            self.stream.send_data(bytes.get(..n).unwrap_or_default())?;
            return Ok(n);
        }
        let n = (MAX_DATA_CHUNK - self.buf.len()).min(bytes.len());
        self.buf.extend_from_slice(bytes.get(..n).unwrap_or_default());
        if self.buf.len() >= MAX_DATA_CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(self.send_buffered()?)
    }
}
