//! RETR and TOP answers streamed from the message file: [`Retrieval::fill`] reads the
//! file a [`CHUNK`] at a time as the client takes the answer, writing bare LFs as CRLF,
//! dot-stuffing lines that start with `.` (RFC 1939 §3) and stopping TOP after its body
//! lines, then the final `.`. The connection layer calls it only while little output waits
//! ([`crate::conn::OUTPUT_HIGH_WATER`]), so a message of any size costs a connection
//! about one chunk, and a client that pipelines RETR after RETR without reading holds no
//! more than that.

use std::fs::File;
use std::io::{self, Read};

/// Bytes read from the message file per step (lib's, as imapd's FETCH reads).
pub use postern_mailbox::stream::CHUNK;
use postern_mailbox::stream::read_chunk;

/// One RETR or TOP answer in progress (its `+OK` line already sent).
pub struct Retrieval {
    file: Box<dyn Read + Send>,
    /// TOP: the body lines to send.
    top: Option<usize>,
    /// The next byte starts a line.
    at_line_start: bool,
    /// Bytes of the current line so far, and whether the last of them was CR.
    line_len: usize,
    prev_cr: bool,
    in_body: bool,
    body_lines: usize,
    /// TOP has sent its lines: the rest of the file is not read.
    stopped: bool,
    done: bool,
    /// For the log line of a read error.
    pub what: String,
}

impl Retrieval {
    /// The answer of message file `file`: all of it, or the header and `top` body lines.
    pub fn new(file: File, top: Option<usize>, what: String) -> Retrieval {
        Retrieval::from_reader(Box::new(file), top, what)
    }

    fn from_reader(file: Box<dyn Read + Send>, top: Option<usize>, what: String) -> Retrieval {
        Retrieval {
            file,
            top,
            at_line_start: true,
            line_len: 0,
            prev_cr: false,
            in_body: false,
            body_lines: 0,
            stopped: false,
            done: false,
            what,
        }
    }

    /// Whether the final `.` has been written.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Appends the next part of the answer (at most about two [`CHUNK`]s) to `out`; the
    /// last part ends with `.\r\n`.
    pub fn fill(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if self.done {
            return Ok(());
        }
        let mut buf = vec![0u8; CHUNK];
        let n = if self.stopped {
            0
        } else {
            read_chunk(&mut self.file, &mut buf)?
        };
        if n == 0 {
            if !self.at_line_start {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
            self.done = true;
            return Ok(());
        }
        out.reserve(n + n / 32 + 16);
        self.convert(buf.get(..n).unwrap_or_default(), out);
        Ok(())
    }

    /// Writes `data` (the file's next bytes) as it goes on the wire.
    fn convert(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut rest = data;
        while !rest.is_empty() && !self.stopped {
            if self.at_line_start {
                if self.in_body && self.top.is_some_and(|max| self.body_lines >= max) {
                    self.stopped = true;
                    return;
                }
                if rest.first() == Some(&b'.') {
                    out.push(b'.');
                }
                self.at_line_start = false;
            }
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    let (text, after) = rest.split_at(i);
                    out.extend_from_slice(text);
                    let cr = text.last().map_or(self.prev_cr, |&b| b == b'\r');
                    let len = self.line_len + text.len();
                    if !cr {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    if self.in_body {
                        self.body_lines += 1;
                    } else if len == 0 || (len == 1 && cr) {
                        self.in_body = true;
                    }
                    self.at_line_start = true;
                    self.line_len = 0;
                    self.prev_cr = false;
                    rest = after.get(1..).unwrap_or_default();
                }
                None => {
                    out.extend_from_slice(rest);
                    self.line_len += rest.len();
                    self.prev_cr = rest.last() == Some(&b'\r');
                    rest = &[];
                }
            }
        }
    }
}

impl postern_lib::skeleton::conn::Source for Retrieval {
    fn fill(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        Retrieval::fill(self, out)
    }

    fn done(&self) -> bool {
        Retrieval::done(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer as one conversion of the whole message would give it (the old,
    /// whole-message code), for comparison.
    fn whole(bytes: &[u8], top: Option<usize>) -> Vec<u8> {
        let bytes = postern_mailbox::folder::to_crlf(bytes.to_vec());
        let mut out = Vec::new();
        let mut in_body = false;
        let mut body_lines = 0usize;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            if in_body && top.is_some_and(|max| body_lines >= max) {
                break;
            }
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            if in_body {
                body_lines += 1;
            } else if line == b"\r\n" || line == b"\n" {
                in_body = true;
            }
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// A reader that gives `step` bytes per read, so every chunk boundary is tried.
    struct Steps(Vec<u8>, usize, usize);

    impl Read for Steps {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let end = (self.1 + self.2).min(self.0.len());
            let n = (end - self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    fn streamed(bytes: &[u8], top: Option<usize>, step: usize) -> Vec<u8> {
        let mut r = Retrieval::from_reader(Box::new(Steps(bytes.to_vec(), 0, step)), top, "test".into());
        let mut out = Vec::new();
        while !r.done() {
            r.fill(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn streamed_answers_equal_whole_message_answers_at_every_chunk_boundary() {
        let cases: [&[u8]; 8] = [
            b"Subject: a\n\n.x\nb\n..y\n",
            b"Subject: b\r\n\r\nno final newline",
            b"",
            b".\r\n.\n\r\n.\r\n..\n",
            b"A: 1\r\n\r\nbody\r",
            b"A: 1\r\r\n\n\n.\r\n\rx\n",
            b"no header end at all\n.line\n",
            b"H: v\n\n1\n2\n3\n4\n5\n",
        ];
        for msg in cases {
            for top in [None, Some(0), Some(1), Some(3)] {
                let want = whole(msg, top);
                for step in 1..=msg.len().max(1) {
                    assert_eq!(
                        String::from_utf8_lossy(&streamed(msg, top, step)),
                        String::from_utf8_lossy(&want),
                        "{msg:?} top {top:?} step {step}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_large_message_is_answered_a_chunk_at_a_time() {
        let mut msg = b"Subject: big\n\n".to_vec();
        msg.resize(10 * CHUNK, b'x');
        let mut r = Retrieval::from_reader(Box::new(std::io::Cursor::new(msg.clone())), None, "t".into());
        let mut out = Vec::new();
        let mut steps = 0;
        while !r.done() {
            let before = out.len();
            r.fill(&mut out).unwrap();
            assert!(out.len() - before <= 2 * CHUNK + 16);
            steps += 1;
        }
        assert!(steps > 10);
        assert_eq!(out, whole(&msg, None));
    }
}
