//! [`OutBuf`]: a connection's output waiting for the socket, written from an offset, so
//! a partial write of a large answer (an IMAP FETCH, a POP3 RETR) never moves the rest
//! of it in memory; what was sent is dropped when new output comes and it is at least
//! half of the buffer (amortised: fewer bytes moved than were written).

use std::io::{self, Write};

/// Output bytes and how many of them were sent.
#[derive(Debug, Default)]
pub(crate) struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    /// Bytes not yet sent.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The vector to append output to.
    pub(crate) fn tail(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        &mut self.buf
    }

    /// Writes what the sink takes; returns how many bytes went (an error: the sink failed).
    pub(crate) fn write_to(&mut self, sink: &mut (impl Write + ?Sized)) -> io::Result<usize> {
        let mut written = 0;
        while let Some(rest) = self.buf.get(self.pos..).filter(|r| !r.is_empty()) {
            match sink.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.pos += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(written)
    }

    /// Frees a buffer that grew past `keep` once everything in it was sent.
    pub(crate) fn give_back(&mut self, keep: usize) {
        if self.is_empty() && self.buf.capacity() > keep {
            *self = OutBuf::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OutBuf;
    use std::io::{self, Write};

    /// Takes `n` bytes a write.
    struct Slow(usize, Vec<u8>);

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.0);
            self.1.extend_from_slice(&b[..n]);
            self.0 -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_the_order_and_sent_bytes_are_dropped() {
        let mut out = OutBuf::default();
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        out.tail().extend_from_slice(&data);
        let mut sink = Slow(30_000, Vec::new());
        assert_eq!(out.write_to(&mut sink).unwrap(), 30_000);
        assert_eq!(out.len(), 70_000);
        // more output: what was sent is less than half, kept for now
        out.tail().extend_from_slice(&data);
        sink.0 = 200_000;
        assert_eq!(out.write_to(&mut sink).unwrap(), 170_000);
        assert!(out.is_empty());
        assert_eq!(sink.1, [data.clone(), data].concat());
        out.give_back(1024);
        assert_eq!(out.capacity(), 0);
    }
}
