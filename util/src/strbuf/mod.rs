//! Bounded string buffers and the small byte-string helpers every daemon needs.
//!
//! [`BoundedBuf`] (bytes) and [`BoundedString`] (UTF-8) have a fixed size limit chosen at
//! construction. Appending past the limit fails with [`StrBufError::Overflow`] and leaves the
//! content exactly as it was, so a caller can answer "too long" and carry on; the buffer
//! never grows past its limit and never truncates silently.
//!
//! The helpers are address-independent: [`printable`] makes untrusted bytes safe to log,
//! [`trim_ascii_ws`] and [`starts_with_ignore_ascii_case`] serve command parsers.
//!
//! # Security stance
//!
//! Everything a peer controls (command arguments, header values, addresses) is held in a
//! buffer whose size was decided by us, not by the peer: the attack this answers is memory
//! exhaustion by one endless token. Logging untrusted bytes verbatim invites log injection
//! (a CR/LF that forges a second log line, terminal escape sequences, bidi overrides that
//! make a log line read differently than it is); [`printable`] escapes every byte outside
//! printable ASCII and bounds the output length.

use std::fmt;
use std::io;

use thiserror::Error;

#[cfg(test)]
mod tests;

/// Errors from bounded buffers.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StrBufError {
    /// Appending would have taken the buffer past its limit; the content is unchanged.
    #[error("buffer limit exceeded: {needed} bytes needed, limit is {limit}")]
    Overflow {
        /// The buffer's fixed limit in bytes.
        limit: usize,
        /// The length the content would have had after the append.
        needed: usize,
    },
}

/// A byte buffer that never holds more than a fixed number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoundedBuf {
    buf: Vec<u8>,
    limit: usize,
}

impl BoundedBuf {
    /// An empty buffer that will hold at most `limit` bytes. Memory is allocated as the
    /// content grows, so a generous limit costs nothing until used.
    pub fn new(limit: usize) -> Self {
        Self { buf: Vec::new(), limit }
    }

    /// Appends one byte, or fails leaving the content unchanged.
    pub fn push(&mut self, byte: u8) -> Result<(), StrBufError> {
        self.extend(&[byte])
    }

    /// Appends all of `bytes`, or none of them when they would not fit.
    pub fn extend(&mut self, bytes: &[u8]) -> Result<(), StrBufError> {
        let needed = check_room(self.buf.len(), bytes.len(), self.limit)?;
        self.buf.reserve_exact(needed - self.buf.len());
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The content.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Empties the buffer; the limit stays.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Shortens the content to `len` bytes (no effect if it is already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Current content length in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The fixed limit set at construction.
    pub fn capacity_limit(&self) -> usize {
        self.limit
    }

    /// How many more bytes fit.
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.buf.len())
    }

    /// The content, consuming the buffer.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// `io::Write` is all-or-nothing too: a write that does not fit fails with
/// `ErrorKind::OutOfMemory` and writes nothing.
impl io::Write for BoundedBuf {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.extend(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A UTF-8 string that never holds more than a fixed number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoundedString {
    s: String,
    limit: usize,
}

impl BoundedString {
    /// An empty string that will hold at most `limit` bytes of UTF-8.
    pub fn new(limit: usize) -> Self {
        Self {
            s: String::new(),
            limit,
        }
    }

    /// Appends one character, or fails leaving the content unchanged.
    pub fn push(&mut self, c: char) -> Result<(), StrBufError> {
        self.push_str(c.encode_utf8(&mut [0; 4]))
    }

    /// Appends all of `s`, or none of it when it would not fit.
    pub fn push_str(&mut self, s: &str) -> Result<(), StrBufError> {
        let needed = check_room(self.s.len(), s.len(), self.limit)?;
        self.s.reserve_exact(needed - self.s.len());
        self.s.push_str(s);
        Ok(())
    }

    /// The content.
    pub fn as_str(&self) -> &str {
        &self.s
    }

    /// The content as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.s.as_bytes()
    }

    /// Empties the string; the limit stays.
    pub fn clear(&mut self) {
        self.s.clear();
    }

    /// Current content length in bytes.
    pub fn len(&self) -> usize {
        self.s.len()
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.s.is_empty()
    }

    /// The fixed limit in bytes set at construction.
    pub fn capacity_limit(&self) -> usize {
        self.limit
    }

    /// How many more bytes fit.
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.s.len())
    }

    /// The content, consuming the buffer.
    pub fn into_string(self) -> String {
        self.s
    }
}

/// `write!` into a bounded string: a piece that does not fit fails with `fmt::Error`
/// and is not appended (pieces written before it stay).
impl fmt::Write for BoundedString {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s).map_err(|_| fmt::Error)
    }
}

impl fmt::Display for BoundedString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.s)
    }
}

fn check_room(len: usize, add: usize, limit: usize) -> Result<usize, StrBufError> {
    match len.checked_add(add) {
        Some(needed) if needed <= limit => Ok(needed),
        Some(needed) => Err(StrBufError::Overflow { limit, needed }),
        None => Err(StrBufError::Overflow {
            limit,
            needed: usize::MAX,
        }),
    }
}

/// Default output bound of [`printable`], in bytes.
pub const PRINTABLE_MAX: usize = 512;

/// Marker appended by [`printable_bounded`] when it had to cut the output.
pub const TRUNCATION_MARK: &str = "...";

/// Untrusted bytes made safe for a log line, at most [`PRINTABLE_MAX`] bytes long.
///
/// See [`printable_bounded`].
pub fn printable(bytes: &[u8]) -> String {
    printable_bounded(bytes, PRINTABLE_MAX)
}

/// Untrusted bytes made safe for a log line, at most `max` bytes long.
///
/// Printable ASCII (0x20..=0x7e) is kept, except `\` which becomes `\\`; tab, CR and LF
/// become `\t`, `\r`, `\n`; every other byte, including all non-ASCII bytes, becomes
/// `\xNN` (lower-case hex). The result is pure printable ASCII. When the escaped text would
/// be longer than `max`, it is cut at an escape boundary and ends with [`TRUNCATION_MARK`]
/// (when `max` is too small to hold the mark, only whole escapes that fit are kept).
pub fn printable_bounded(bytes: &[u8], max: usize) -> String {
    let total: usize = bytes.iter().map(|&b| escape_byte(b).len()).sum();
    let (budget, mark) = if total <= max {
        (max, "")
    } else if TRUNCATION_MARK.len() <= max {
        (max - TRUNCATION_MARK.len(), TRUNCATION_MARK)
    } else {
        (max, "")
    };
    let mut out = String::with_capacity(total.min(max));
    for &b in bytes {
        let esc = escape_byte(b);
        if out.len() + esc.len() > budget {
            break;
        }
        out.push_str(esc.as_str());
    }
    out.push_str(mark);
    out
}

struct Escaped {
    buf: [u8; 4],
    len: usize,
}

impl Escaped {
    fn as_str(&self) -> &str {
        // Only ASCII is ever stored; fall back to "" rather than panic.
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    fn len(&self) -> usize {
        self.len
    }
}

fn escape_byte(b: u8) -> Escaped {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let two = |c: u8| Escaped {
        buf: [b'\\', c, 0, 0],
        len: 2,
    };
    match b {
        b'\\' => two(b'\\'),
        b'\t' => two(b't'),
        b'\r' => two(b'r'),
        b'\n' => two(b'n'),
        0x20..=0x7e => Escaped {
            buf: [b, 0, 0, 0],
            len: 1,
        },
        _ => Escaped {
            buf: [b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]],
            len: 4,
        },
    }
}

/// `bytes` without leading and trailing ASCII whitespace (space, tab, CR, LF, FF).
pub fn trim_ascii_ws(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Whether `bytes` starts with `prefix`, comparing ASCII letters case-insensitively
/// (as SMTP, POP3 and IMAP verbs are). Non-ASCII bytes must match exactly.
pub fn starts_with_ignore_ascii_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// The rest of `bytes` after `prefix` when [`starts_with_ignore_ascii_case`] holds.
pub fn strip_prefix_ignore_ascii_case<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if starts_with_ignore_ascii_case(bytes, prefix) {
        bytes.get(prefix.len()..)
    } else {
        None
    }
}
