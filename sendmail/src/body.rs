//! The message as sendmail reads it from standard input, turned into maildrop content
//! (sans-I/O: bytes in, bytes out).
//!
//! - CRLF line endings become LF (Postfix's `sendmail_fix_line_endings = always`); a CR
//!   elsewhere is kept.
//! - Without `-i`, a line holding only `.` ends the message (the rest of the input is not
//!   read); with `-i`/`-oi` only end of input does.
//! - A last line without a newline gets one.
//!
//! Lines may be of any length: memory stays bounded by [`MAX_HELD`], because a line that
//! grows past it is passed on in pieces (such a line can no longer be a lone dot).

/// Most bytes of an unfinished line held back.
pub const MAX_HELD: usize = 64 * 1024;

/// The transformation state.
#[derive(Debug)]
pub struct Body {
    ignore_dots: bool,
    /// The current line so far (without its LF).
    line: Vec<u8>,
    /// Part of the current line has already been passed on.
    continued: bool,
    done: bool,
}

impl Body {
    /// A new message; `ignore_dots` is `-i`.
    pub fn new(ignore_dots: bool) -> Self {
        Self {
            ignore_dots,
            line: Vec::new(),
            continued: false,
            done: false,
        }
    }

    /// Whether the terminating dot has been seen (stop reading input).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Processes `input`, appending content to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        while !self.done && !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.line.extend_from_slice(rest.get(..nl).unwrap_or_default());
                    rest = rest.get(nl + 1..).unwrap_or_default();
                    self.end_line(out);
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                    if self.line.len() > MAX_HELD {
                        // Keep a trailing CR: it may be the first half of a CRLF.
                        let keep = usize::from(self.line.last() == Some(&b'\r'));
                        let cut = self.line.len() - keep;
                        out.extend(self.line.drain(..cut));
                        self.continued = true;
                    }
                }
            }
        }
    }

    /// End of input: flushes a last line without a newline.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.done && (!self.line.is_empty() || self.continued) {
            self.end_line(out);
        }
        self.done = true;
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        if !self.ignore_dots && !self.continued && self.line == b"." {
            self.done = true;
            self.line.clear();
            return;
        }
        out.append(&mut self.line);
        out.push(b'\n');
        self.continued = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], ignore_dots: bool, piece: usize) -> Vec<u8> {
        let mut b = Body::new(ignore_dots);
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            b.push(chunk, &mut out);
        }
        b.finish(&mut out);
        out
    }

    #[test]
    fn dots_and_line_endings() {
        for piece in [1, 2, 3, 1000] {
            assert_eq!(run(b"a\r\nb\n.\r\nc\n", false, piece), b"a\nb\n");
            assert_eq!(run(b"a\r\nb\n.\r\nc\n", true, piece), b"a\nb\n.\nc\n");
            assert_eq!(run(b"a\n..\nx\rx\nlast", false, piece), b"a\n..\nx\rx\nlast\n");
            assert_eq!(run(b"a\n.", false, piece), b"a\n");
            assert_eq!(run(b"", false, piece), b"");
        }
    }

    #[test]
    fn long_lines_are_kept_whole() {
        let mut input = vec![b'y'; 3 * MAX_HELD + 7];
        input.extend_from_slice(b"\r\n.\n");
        let out = run(&input, false, 4096);
        assert_eq!(out.len(), 3 * MAX_HELD + 8);
        assert!(out.ends_with(b"y\n"));
    }
}
