//! Bounded line reading and writing for every line protocol Postern speaks (SMTP, LMTP,
//! POP3, IMAP, and text-mode IPC).
//!
//! - [`LineReader`] reads lines from any blocking [`std::io::Read`], for one-request-per-process
//!   daemons and clients.
//! - [`LineBuffer`] is the same line splitter without I/O: an event-driven daemon pushes the
//!   bytes it read and pulls lines (or raw byte runs, for IMAP literals and SMTP `BDAT`
//!   chunks) out of the same buffer.
//! - [`LineWriter`] and [`format_line`] write a line with CRLF and refuse a payload that
//!   contains CR or LF, so a value taken from a peer can never inject a second line.
//! - [`dot_stuff`], [`dot_unstuff`] and [`DotStuffer`] implement SMTP `DATA` transparency
//!   (RFC 5321 section 4.5.2).
//!
//! # Line rules
//!
//! A line ends at LF. If the byte before the LF is CR, the line ended with CRLF
//! ([`LineEnding::CrLf`]), otherwise with a bare LF ([`LineEnding::BareLf`]); the terminator
//! is never part of the returned line. A CR anywhere else is an ordinary byte. The maximum
//! line length counts the line without its terminator (so SMTP's 512-octet command line is a
//! maximum of 510).
//!
//! A line longer than the maximum is reported once as `TooLong`, **after** the reader has
//! discarded the rest of that line up to and including its LF. The caller answers "line too
//! long" and reads the next line in step with the peer: the tail of the long line is never
//! mistaken for a command. Neither the reader nor the buffer ever holds more than about the
//! maximum line length of a single line.
//!
//! # Security stance
//!
//! Attacks that shaped this module:
//! - *Memory exhaustion* by a line that never ends: every buffer here has a hard bound fixed
//!   by the daemon, and an over-long line is discarded while it streams in.
//! - *Command injection after a long line*: a naive reader that truncates at the limit
//!   returns the tail as the next "command". The discard-to-LF rule above prevents it.
//! - *SMTP smuggling* (2023): peers disagree on whether a bare LF or bare CR ends a line, so
//!   `<LF>.<CR><LF>` ends the message for one MTA and not another. The reader reports which
//!   ending each line had so smtpd can refuse bare LF, and [`DotStuffer`] turns every bare LF
//!   into CRLF and dot-stuffs after a bare CR, so what Postern sends cannot be split
//!   differently downstream.
//! - *STARTTLS command injection* (CVE-2011-0411): bytes pipelined after `STARTTLS` arrive
//!   in plaintext and must not be treated as commands received under TLS. After reading the
//!   `STARTTLS` line, a daemon must discard what is buffered
//!   ([`LineReader::take_buffered`], [`LineBuffer::take_pending`]) — and may treat a non-empty
//!   remainder as a protocol violation.
//! - *Header/response splitting*: [`format_line`] refuses CR and LF inside a payload.

mod buffer;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use buffer::{LineBuffer, LineEvent};
pub use reader::LineReader;
pub use writer::{DotLine, DotStuffer, LineWriter, dot_stuff, dot_unstuff, format_line, is_data_terminator};

use thiserror::Error;

/// The largest maximum line length a reader or buffer accepts (1 MiB); larger requests are
/// clamped to it, so a misconfigured limit cannot make the buffer itself huge.
pub const MAX_LINE_LIMIT: usize = 1 << 20;

/// How a line was terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineEnding {
    /// CR LF, as every Internet line protocol requires.
    CrLf,
    /// LF alone, without a preceding CR.
    BareLf,
}

/// The outcome of [`LineReader::read_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineRead {
    /// A complete line; the output buffer holds it without its terminator.
    Line {
        /// How the line was terminated.
        ending: LineEnding,
    },
    /// The line exceeded the maximum. Its bytes have been discarded up to and including its
    /// LF (or up to end of input), and the next read starts at the next line.
    TooLong,
    /// Clean end of input: the peer closed and nothing was pending.
    Eof,
    /// End of input in mid-line: the output buffer holds the partial line (it was not too long).
    Truncated,
}

/// Errors from line formatting and the sans-I/O buffer.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    /// A line to be written contains a CR or LF byte, at the given offset.
    #[error("line contains a CR or LF at offset {offset}")]
    EmbeddedNewline {
        /// Offset of the first CR or LF in the payload.
        offset: usize,
    },
    /// [`LineBuffer::push`] would take the pending bytes past the buffer's limit; nothing was
    /// added. Drain lines or bytes first, or read less from the peer
    /// (see [`LineBuffer::free_space`]).
    #[error("line buffer full: {pending} bytes pending, {pushed} more would exceed {limit}")]
    BufferFull {
        /// Bytes already pending.
        pending: usize,
        /// Bytes offered to `push`.
        pushed: usize,
        /// The buffer's limit.
        limit: usize,
    },
}

/// Clamps a requested maximum line length into `1..=MAX_LINE_LIMIT`.
fn clamp_max_line(max_line: usize) -> usize {
    max_line.clamp(1, MAX_LINE_LIMIT)
}

/// Splits a complete line (the bytes before its LF) into content and ending.
fn split_ending(line: &[u8]) -> (&[u8], LineEnding) {
    match line.split_last() {
        Some((b'\r', content)) => (content, LineEnding::CrLf),
        _ => (line, LineEnding::BareLf),
    }
}
