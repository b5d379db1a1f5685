//! [`LineBuffer`]: the sans-I/O line splitter for event-driven daemons.

use super::{LineEnding, LineError, clamp_max_line, split_ending};

/// One result of [`LineBuffer::next_line`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LineEvent {
    /// A complete line, without its terminator.
    Line {
        /// The line's bytes.
        line: Vec<u8>,
        /// How the line was terminated.
        ending: LineEnding,
    },
    /// A line exceeded the maximum; its bytes up to and including its LF have been
    /// discarded and the next event starts at the next line.
    TooLong,
}

/// Bytes received from a peer, waiting to be split into lines or taken raw.
///
/// The daemon reads from its socket at most [`free_space`](Self::free_space) bytes,
/// [`push`](Self::push)es them, then drains [`next_line`](Self::next_line) until it returns
/// `None` — or, while a binary payload is expected (an IMAP literal, an SMTP `BDAT` chunk),
/// uses [`take_exact`](Self::take_exact) / [`take_up_to`](Self::take_up_to) on the same
/// bytes. Pending bytes never exceed the limit given at construction.
#[derive(Debug, Clone)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    /// Bytes in `start..scan` are known to contain no LF.
    scan: usize,
    max_line: usize,
    max_pending: usize,
    discarding: bool,
}

/// Compact the vector once this many consumed bytes sit at its front.
const COMPACT_AT: usize = 4096;

impl LineBuffer {
    /// A buffer for lines of at most `max_line` bytes (clamped to
    /// `1..=`[`super::MAX_LINE_LIMIT`]) holding at most `max_pending` unconsumed bytes
    /// (raised to `max_line + 2` if smaller, so that a maximal line always fits).
    pub fn new(max_line: usize, max_pending: usize) -> Self {
        let max_line = clamp_max_line(max_line);
        Self {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            max_line,
            max_pending: max_pending.max(max_line + 2),
            discarding: false,
        }
    }

    /// Adds bytes received from the peer: all of them, or none when they would take the
    /// pending bytes past the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), LineError> {
        let pending = self.pending_len();
        if bytes.len() > self.max_pending - pending {
            return Err(LineError::BufferFull {
                pending,
                pushed: bytes.len(),
                limit: self.max_pending,
            });
        }
        if self.start >= COMPACT_AT || self.start == self.buf.len() {
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete line, or `None` when more bytes are needed. Over-long input is
    /// dropped as it arrives, so pending bytes never hold more than one partial line.
    pub fn next_line(&mut self) -> Option<LineEvent> {
        let unscanned = self.buf.get(self.scan..).unwrap_or_default();
        if let Some(i) = memchr::memchr(b'\n', unscanned) {
            let lf = self.scan + i;
            let line = self.buf.get(self.start..lf).unwrap_or_default();
            let event = if self.discarding {
                LineEvent::TooLong
            } else {
                let (content, ending) = split_ending(line);
                if content.len() > self.max_line {
                    LineEvent::TooLong
                } else {
                    LineEvent::Line {
                        line: content.to_vec(),
                        ending,
                    }
                }
            };
            self.discarding = false;
            self.consume_to(lf + 1);
            return Some(event);
        }
        self.scan = self.buf.len();
        if self.discarding || self.pending_len() > self.max_line + 1 {
            self.discarding = true;
            self.consume_to(self.buf.len());
        }
        None
    }

    /// Exactly `n` raw bytes, or `None` (taking nothing) while fewer are pending.
    pub fn take_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.pending_len() < n {
            return None;
        }
        Some(self.take_up_to(n))
    }

    /// Up to `n` raw bytes (as many as are pending), possibly none.
    pub fn take_up_to(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.pending_len());
        let end = self.start + n;
        let bytes = self.buf.get(self.start..end).unwrap_or_default().to_vec();
        self.consume_to(end);
        bytes
    }

    /// Removes and returns every pending byte (see the STARTTLS note in the module doc).
    pub fn take_pending(&mut self) -> Vec<u8> {
        self.discarding = false;
        self.take_up_to(usize::MAX)
    }

    /// The pending (unconsumed) bytes.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// Whether the buffer is in the middle of dropping an over-long line (its rest is
    /// still to come): the buffer must not be replaced by a fresh one then.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// How many bytes are pending.
    pub fn pending_len(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// How many more bytes [`push`](Self::push) accepts now: read at most this much from
    /// the peer.
    pub fn free_space(&self) -> usize {
        self.max_pending - self.pending_len()
    }

    /// The maximum line length in effect (after clamping).
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The maximum number of pending bytes.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    fn consume_to(&mut self, pos: usize) {
        self.start = pos.min(self.buf.len());
        self.scan = self.scan.max(self.start);
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scan = 0;
        }
    }
}
