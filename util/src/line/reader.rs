//! [`LineReader`]: bounded line reading over a blocking stream.

use std::io::{self, Read};

use super::{LineRead, clamp_max_line, split_ending};

/// Reads lines of at most a fixed length from a stream, with a fixed-size internal buffer.
///
/// The buffer holds `max_line + 2` bytes (room for a maximal line and its CRLF), or
/// [`LineReader::MIN_BUFFER`] if that is larger, so pipelined lines are read in few system
/// calls. It never grows.
///
/// An I/O error (including `WouldBlock` and `TimedOut` from a socket timeout) leaves the
/// reader's state intact: no byte already read is lost, and calling `read_line` again
/// resumes.
///
/// `LineReader` also implements [`Read`], returning buffered bytes first, so raw payloads
/// (`BDAT` chunks) can be read with `(&mut reader).take(n)` between lines.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Box<[u8]>,
    /// Start of unconsumed bytes.
    start: usize,
    /// End of valid bytes.
    end: usize,
    /// Bytes in `start..scan` are known to contain no LF.
    scan: usize,
    max_line: usize,
    /// Inside an over-long line whose bytes are being dropped.
    discarding: bool,
}

impl<R: Read> LineReader<R> {
    /// The smallest internal buffer, in bytes.
    pub const MIN_BUFFER: usize = 4096;

    /// A reader over `inner` that accepts lines of at most `max_line` bytes (excluding the
    /// terminator; clamped to `1..=`[`super::MAX_LINE_LIMIT`]).
    pub fn new(inner: R, max_line: usize) -> Self {
        let max_line = clamp_max_line(max_line);
        let size = (max_line + 2).max(Self::MIN_BUFFER);
        Self {
            inner,
            buf: vec![0; size].into_boxed_slice(),
            start: 0,
            end: 0,
            scan: 0,
            max_line,
            discarding: false,
        }
    }

    /// The maximum line length in effect (after clamping).
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Reads the next line into `out` (cleared first). See [`LineRead`] for the outcomes.
    pub fn read_line(&mut self, out: &mut Vec<u8>) -> io::Result<LineRead> {
        out.clear();
        loop {
            if let Some(result) = self.take_line(out) {
                return Ok(result);
            }
            self.compact();
            let free = self.buf.get_mut(self.end..).unwrap_or_default();
            let n = match self.inner.read(free) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(self.at_eof(out));
            }
            self.end = (self.end + n).min(self.buf.len());
        }
    }

    /// Looks for a complete line in the buffered bytes; drops over-long input as it goes.
    fn take_line(&mut self, out: &mut Vec<u8>) -> Option<LineRead> {
        let unscanned = self.buf.get(self.scan..self.end).unwrap_or_default();
        if let Some(i) = memchr::memchr(b'\n', unscanned) {
            let lf = self.scan + i;
            let line = self.buf.get(self.start..lf).unwrap_or_default();
            self.start = lf + 1;
            self.scan = self.start;
            if self.discarding {
                self.discarding = false;
                return Some(LineRead::TooLong);
            }
            let (content, ending) = split_ending(line);
            if content.len() > self.max_line {
                return Some(LineRead::TooLong);
            }
            out.extend_from_slice(content);
            return Some(LineRead::Line { ending });
        }
        self.scan = self.end;
        // A pending partial line longer than max_line + 1 (the +1 allows its CR) can no
        // longer become a valid line: drop it and skip to its LF.
        if self.discarding || self.end - self.start > self.max_line + 1 {
            self.discarding = true;
            self.start = self.end;
        }
        None
    }

    fn at_eof(&mut self, out: &mut Vec<u8>) -> LineRead {
        let pending = self.buf.get(self.start..self.end).unwrap_or_default();
        let result = if self.discarding {
            LineRead::TooLong
        } else if pending.is_empty() {
            LineRead::Eof
        } else {
            out.extend_from_slice(pending);
            LineRead::Truncated
        };
        self.discarding = false;
        self.start = 0;
        self.end = 0;
        self.scan = 0;
        result
    }

    /// Moves unconsumed bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scan -= self.start;
            self.start = 0;
        }
    }

    /// The bytes read from the stream but not yet returned.
    pub fn buffered(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Removes and returns the bytes read from the stream but not yet returned: after
    /// `STARTTLS`, these are plaintext the peer pipelined and must be discarded (or
    /// treated as a protocol violation), never parsed as commands received under TLS.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let bytes = self.buffered().to_vec();
        self.start = 0;
        self.end = 0;
        self.scan = 0;
        self.discarding = false;
        bytes
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying stream, mutably (for writing replies, setting timeouts). Reading from
    /// it directly skips the buffered bytes.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The underlying stream; buffered bytes are lost (take them first if they matter).
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for LineReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buffered = self.buffered();
        if buffered.is_empty() {
            return self.inner.read(out);
        }
        let n = buffered.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), buffered.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.start += n;
        self.scan = self.scan.max(self.start);
        Ok(n)
    }
}
