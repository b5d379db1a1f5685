//! `smtp_line_length_limit`: breaking lines that are too long for SMTP, as Postfix's smtp
//! client does. RFC 5321 section 4.5.3.1.6 allows 1,000 octets per line with its CRLF; a
//! line of the stored content (LF-terminated, before dot-stuffing) longer than the limit
//! is sent as its first `limit` bytes, then `CRLF SPACE` and at most `limit - 1` bytes per
//! further line, until the line ends. A line of exactly `limit` bytes is sent unchanged;
//! 0 disables the limit. Header lines are broken the same way (the inserted space makes the
//! rest a continuation line, "to minimise the damage to MIME formatted mail", as Postfix
//! puts it). The dot-stuffing that follows does not count against the limit.

/// Breaks long lines of content given in chunks (which may split lines anywhere).
#[derive(Debug, Clone)]
pub struct LineFolder {
    limit: usize,
    /// Bytes on the current output line so far.
    column: usize,
}

impl LineFolder {
    /// A folder at the start of the content; `limit` 0 passes everything through (1, which
    /// would leave no room after the inserted space, counts as 2).
    pub fn new(limit: usize) -> Self {
        let limit = if limit == 1 { 2 } else { limit };
        Self { limit, column: 0 }
    }

    /// Appends `chunk` to `out`, with `CR LF SPACE` inserted where a line reaches the
    /// limit and goes on. Without a limit, or while no line is too long, the chunk is
    /// copied as it is, a run at a time.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.limit == 0 {
            out.extend_from_slice(chunk);
            return;
        }
        let mut rest = chunk;
        while let Some(&first) = rest.first() {
            if self.column >= self.limit && first != b'\n' {
                // The line goes on past the limit: break it.
                out.extend_from_slice(b"\r\n ");
                self.column = 1;
            }
            let room = self.limit - self.column.min(self.limit);
            // What fits on this line, and an LF right after it (which ends the line).
            let window = &rest[..rest.len().min(room + 1)];
            let n = match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.column = 0;
                    i + 1
                }
                None => {
                    let n = window.len().min(room);
                    self.column += n;
                    n
                }
            };
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LineFolder;

    fn fold(limit: usize, chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = LineFolder::new(limit);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        out
    }

    #[test]
    fn short_and_exact_lines_pass_unchanged() {
        assert_eq!(fold(5, &[b"abc\nabcde\n\nxy"]), b"abc\nabcde\n\nxy");
        assert_eq!(fold(0, &[&[b'a'; 5000][..]]), vec![b'a'; 5000]);
    }

    #[test]
    fn long_lines_break_with_crlf_space() {
        assert_eq!(fold(5, &[b"abcdef\n"]), b"abcde\r\n f\n");
        assert_eq!(fold(5, &[b"abcdefghijklm\nz\n"]), b"abcde\r\n fghi\r\n jklm\nz\n");
        // The content may end inside a long line.
        assert_eq!(fold(3, &[b"abcdefg"]), b"abc\r\n de\r\n fg");
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let text: Vec<u8> = (0..3000u32)
            .map(|i| if i % 1237 == 1236 { b'\n' } else { b'a' + (i % 26) as u8 })
            .collect();
        let whole = fold(998, &[&text]);
        for size in [1, 2, 7, 997, 998, 999, 1000, 4096] {
            let chunks: Vec<&[u8]> = text.chunks(size).collect();
            assert_eq!(fold(998, &chunks), whole, "chunks of {size}");
        }
        for line in whole.split(|&b| b == b'\n') {
            assert!(line.strip_suffix(b"\r").unwrap_or(line).len() <= 998);
        }
        // Unfolding (removing each inserted CR LF SPACE) gives the content back.
        let unfolded: Vec<u8> = String::from_utf8(whole).unwrap().replace("\r\n ", "").into_bytes();
        assert_eq!(unfolded, text);
    }
}
