//! Writing CRLF lines, and SMTP `DATA` dot-stuffing.

use std::borrow::Cow;
use std::io::{self, Write};

use super::LineError;

/// Appends `line` and CRLF to `out`, refusing a `line` that contains CR or LF (nothing is
/// appended then).
pub fn format_line(line: &[u8], out: &mut Vec<u8>) -> Result<(), LineError> {
    if let Some(offset) = memchr::memchr2(b'\r', b'\n', line) {
        return Err(LineError::EmbeddedNewline { offset });
    }
    out.reserve(line.len() + 2);
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Writes CRLF-terminated lines to a stream.
///
/// Each line is checked, then written with one `write_all`; a line containing CR or LF
/// fails with `ErrorKind::InvalidInput` (wrapping [`LineError::EmbeddedNewline`]) before
/// anything is written. The writer does not buffer: wrap a `BufWriter` when writing many
/// small lines, and flush before waiting for the peer.
#[derive(Debug)]
pub struct LineWriter<W> {
    inner: W,
    scratch: Vec<u8>,
}

impl<W: Write> LineWriter<W> {
    /// Lines will be written to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            scratch: Vec::new(),
        }
    }

    /// Writes `line` followed by CRLF.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.scratch.clear();
        format_line(line, &mut self.scratch).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.inner.write_all(&self.scratch)?;
        // Do not keep a large allocation around after one long line.
        if self.scratch.capacity() > 64 * 1024 {
            self.scratch = Vec::new();
        }
        Ok(())
    }

    /// Flushes the underlying stream.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying stream, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The underlying stream.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// A `DATA` line as sent: a leading `.` is doubled (RFC 5321 section 4.5.2).
///
/// The input is one line without its terminator.
pub fn dot_stuff(line: &[u8]) -> Cow<'_, [u8]> {
    if line.first() == Some(&b'.') {
        let mut stuffed = Vec::with_capacity(line.len() + 1);
        stuffed.push(b'.');
        stuffed.extend_from_slice(line);
        Cow::Owned(stuffed)
    } else {
        Cow::Borrowed(line)
    }
}

/// A received `DATA` line, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DotLine<'a> {
    /// The line was exactly `.`: end of the message data.
    End,
    /// A content line, with its transparency dot (if any) removed.
    Data(&'a [u8]),
}

/// Classifies one received `DATA` line (without its terminator): the lone `.` ends the
/// data; otherwise one leading `.` is removed.
///
/// The caller decides which line endings may end the data: to resist SMTP smuggling, only a
/// `.` line terminated by CRLF *and preceded by a CRLF-terminated line* should end it (see
/// [`super::LineEnding`]).
pub fn dot_unstuff(line: &[u8]) -> DotLine<'_> {
    match line {
        b"." => DotLine::End,
        [b'.', rest @ ..] => DotLine::Data(rest),
        _ => DotLine::Data(line),
    }
}

/// Whether a received line (without its terminator) is the lone `.` that ends `DATA`.
pub fn is_data_terminator(line: &[u8]) -> bool {
    line == b"."
}

/// Turns stored message content into an SMTP `DATA` stream, chunk by chunk.
///
/// Every LF not preceded by CR becomes CRLF, a `.` at the start of a line is doubled, and
/// [`finish`](Self::finish) adds a final CRLF if the content did not end with one, then the
/// `.` CRLF terminator. A bare CR (one not followed by LF) is kept, but the byte after it is
/// treated as a line start for stuffing, so that a receiver that takes a bare CR as a line
/// end can never see a lone `.` line (SMTP smuggling).
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    prev_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of the content.
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            prev_cr: false,
        }
    }

    /// Appends the stuffed form of `chunk` to `out`. Chunks may split lines anywhere,
    /// including between CR and LF.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 16 + 2);
        for &b in chunk {
            let line_start = self.at_line_start || (self.prev_cr && b != b'\n');
            if line_start && b == b'.' {
                out.push(b'.');
            }
            if b == b'\n' && !self.prev_cr {
                out.push(b'\r');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
            self.prev_cr = b == b'\r';
        }
    }

    /// Appends the end of the data: CRLF if the content did not end with a line end, and
    /// the `.` CRLF terminator.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.prev_cr {
            out.push(b'\n');
        } else if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = Self::new();
    }
}
