//! A message file sent as it goes on the wire, a [`CHUNK`] at a time: bare LFs become
//! CRLF as the bytes are copied out, with the one byte of state a chunk boundary needs
//! (was the last byte a CR). imapd streams whole-message FETCH bodies with
//! [`CrlfStream`], announced with the size the folder knows (a file that does not match
//! it is cut or padded, so the client stays in step); [`read_chunk`] is the one read.
//! Either way a message of any size costs a connection about one chunk of memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// Bytes read from a message file per step.
pub const CHUNK: usize = 64 * 1024;

/// One read into `buf`, retried when interrupted; 0 at end of file.
pub fn read_chunk(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Appends `src` to `out` with bare LFs as CRLF, `prev_cr` saying whether the byte
/// before `src` was a CR.
pub(crate) fn extend_crlf(out: &mut Vec<u8>, src: &[u8], prev_cr: bool) {
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', src) {
        let bare = if i == 0 { !prev_cr } else { src[i - 1] != b'\r' };
        if bare {
            out.extend_from_slice(&src[start..i]);
            out.extend_from_slice(b"\r\n");
            start = i + 1;
        }
    }
    out.extend_from_slice(&src[start..]);
}

/// A message file being sent with CRLF line ends.
pub struct CrlfStream<R = File> {
    file: R,
    /// The size on the wire, counted when opened.
    size: u64,
    /// Bytes still to send of `size`.
    left: u64,
    prev_cr: bool,
    buf: Vec<u8>,
}

impl<R: Read + Seek> CrlfStream<R> {
    /// `file` to be sent as `size` bytes: its size on the wire as the folder knows it
    /// (the `W=` of its name, or counted when the folder first saw it), so nothing is
    /// read before the first chunk goes out.
    pub fn new(file: R, size: u64) -> CrlfStream<R> {
        CrlfStream {
            file,
            size,
            left: size,
            prev_cr: false,
            buf: vec![0u8; CHUNK],
        }
    }

    /// The bytes it sends in all.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Starts over from the first byte (the same message sent again).
    pub fn rewind(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.left = self.size;
        self.prev_cr = false;
        Ok(())
    }

    /// Whether all [`CrlfStream::size`] bytes have been sent.
    pub fn done(&self) -> bool {
        self.left == 0
    }

    /// Appends the next chunk (at most about two [`CHUNK`]s) to `out`. Exactly
    /// [`CrlfStream::size`] bytes come out in all: should the file not match the size
    /// known for it (a `W=` made up by hand; Maildir files never change), the rest is cut
    /// or filled with spaces and logged, so the literal announced stays true to its
    /// length and the client in step.
    pub fn fill(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if self.left == 0 {
            return Ok(());
        }
        let n = read_chunk(&mut self.file, &mut self.buf)?;
        let got = self.buf.get(..n).unwrap_or_default();
        if got.is_empty() {
            tracing::warn!("message file shorter than counted: {} bytes filled", self.left);
            out.resize(out.len() + self.left as usize, b' ');
            self.left = 0;
            return Ok(());
        }
        let start = out.len();
        extend_crlf(out, got, self.prev_cr);
        self.prev_cr = got.last() == Some(&b'\r');
        let wrote = (out.len() - start) as u64;
        if wrote > self.left {
            tracing::warn!("message file longer than counted: cut");
            out.truncate(start + self.left as usize);
            self.left = 0;
        } else {
            self.left -= wrote;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader giving `step` bytes per read, so every chunk boundary is tried.
    struct Steps(std::io::Cursor<Vec<u8>>, usize);

    impl Read for Steps {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.read(&mut buf[..n])
        }
    }

    impl Seek for Steps {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.0.seek(to)
        }
    }

    #[test]
    fn a_file_not_matching_its_size_is_cut_or_padded() {
        for (size, want) in [(3u64, &b"a\r\n"[..]), (7, b"a\r\nb\r\n "), (0, b"")] {
            let mut s = CrlfStream::new(std::io::Cursor::new(b"a\nb\n".to_vec()), size);
            let mut out = Vec::new();
            while !s.done() {
                s.fill(&mut out).unwrap();
            }
            assert_eq!(out, want);
        }
    }

    #[test]
    fn streamed_bytes_equal_the_whole_conversion_at_every_boundary() {
        let cases: [&[u8]; 6] = [
            b"Subject: a\n\nbody\n",
            b"A: 1\r\n\r\nx\r\n",
            b"\n\r\n\r\r\n\n",
            b"",
            b"no end",
            b"cr at end\r",
        ];
        for msg in cases {
            let want = crate::folder::to_crlf(msg.to_vec());
            for step in 1..=msg.len().max(1) {
                let mut s = CrlfStream::new(Steps(std::io::Cursor::new(msg.to_vec()), step), want.len() as u64);
                for _ in 0..2 {
                    let mut out = Vec::new();
                    while !s.done() {
                        s.fill(&mut out).unwrap();
                    }
                    assert_eq!(out, want, "{msg:?} step {step}");
                    s.rewind().unwrap();
                }
            }
        }
    }
}
