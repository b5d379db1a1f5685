//! A message file sent as it goes on the wire, a [`CHUNK`] at a time: bare LFs become
//! CRLF as the bytes are copied out, with the one byte of state a chunk boundary needs
//! (was the last byte a CR). imapd streams whole-message FETCH bodies with
//! [`CrlfStream`], whose size ([`CrlfStream::size`]) is counted from the open file first
//! so the literal's `{n}` is exact; pop3d's RETR reads its chunks with [`read_chunk`].
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

/// The bytes `src` would add to the output once bare LFs are CRLF, `prev_cr` saying
/// whether the byte before `src` was a CR.
fn crlf_len(src: &[u8], prev_cr: bool) -> u64 {
    let bare = memchr::memchr_iter(b'\n', src)
        .filter(|&i| if i == 0 { !prev_cr } else { src[i - 1] != b'\r' })
        .count();
    src.len() as u64 + bare as u64
}

/// Appends `src` to `out` with bare LFs as CRLF, `prev_cr` as in [`crlf_len`].
fn extend_crlf(out: &mut Vec<u8>, src: &[u8], prev_cr: bool) {
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
    /// Reads `file` through once to count its size on the wire (a chunk at a time), then
    /// stands at its start.
    pub fn new(mut file: R) -> io::Result<CrlfStream<R>> {
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0;
        let mut prev_cr = false;
        loop {
            let n = read_chunk(&mut file, &mut buf)?;
            let Some(got) = buf.get(..n).filter(|g| !g.is_empty()) else {
                break;
            };
            size += crlf_len(got, prev_cr);
            prev_cr = got.last() == Some(&b'\r');
        }
        file.seek(SeekFrom::Start(0))?;
        Ok(CrlfStream {
            file,
            size,
            left: size,
            prev_cr: false,
            buf,
        })
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
    /// [`CrlfStream::size`] bytes come out in all: should the file change under it (a
    /// Maildir file never does), the rest is cut or filled with spaces and logged, so the
    /// literal announced stays true to its length.
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
            let want = crate::mailbox::folder::to_crlf(msg.to_vec());
            for step in 1..=msg.len().max(1) {
                let mut s = CrlfStream::new(Steps(std::io::Cursor::new(msg.to_vec()), step)).unwrap();
                assert_eq!(s.size(), want.len() as u64, "{msg:?}");
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
