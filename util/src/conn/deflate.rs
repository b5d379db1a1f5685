//! [`Deflate`]: a connection's compression layer (IMAP COMPRESS=DEFLATE, RFC 4978),
//! between the protocol and TLS (or the socket): raw deflate (no zlib header) both ways,
//! the output sync-flushed after each burst so the client can decode every answer at
//! once, the input inflated only as far as there is room for it in the driver's input
//! bound — a small compressed input that would inflate to gigabytes (a zip bomb) is
//! never held in memory; it reaches the protocol a bound at a time, as a too-long line
//! or as commands it answers with back-pressure.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The compressed input read and not yet inflated, and both directions' streams.
pub(crate) struct Deflate {
    out: Compress,
    inp: Decompress,
    /// Compressed bytes from the client not yet inflated.
    pub(crate) pending: Vec<u8>,
    /// Bytes before and after compression, for the log line at the end.
    pub(crate) plain_out: u64,
}

/// Inflated at most this much per step (then pushed to the input buffer).
const STEP: usize = 16 * 1024;

impl Deflate {
    pub(crate) fn new() -> Deflate {
        Deflate {
            out: Compress::new(Compression::new(6), false),
            inp: Decompress::new(false),
            pending: Vec::new(),
            plain_out: 0,
        }
    }

    /// Compresses `bytes` onto `out`, sync-flushed (the client can decode all of it now).
    pub(crate) fn compress(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        self.plain_out += bytes.len() as u64;
        loop {
            out.reserve(bytes.len() / 2 + 64);
            let before = self.out.total_in();
            self.out
                .compress_vec(bytes, out, FlushCompress::Sync)
                .map_err(|e| e.to_string())?;
            let used = usize::try_from(self.out.total_in() - before).unwrap_or(bytes.len());
            bytes = bytes.get(used..).unwrap_or_default();
            // all taken and room left over: the flush is complete
            if bytes.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }

    /// Inflates what is pending into `push`, at most `room` bytes; returns how many bytes
    /// it produced (an error: the client's stream is corrupt).
    pub(crate) fn inflate(&mut self, mut room: usize, push: &mut dyn FnMut(&[u8])) -> Result<usize, String> {
        let mut made = 0;
        let mut buf = vec![0u8; room.min(STEP)];
        while room > 0 && !self.pending.is_empty() {
            let space = buf.get_mut(..room.min(STEP)).unwrap_or_default();
            let (in_before, out_before) = (self.inp.total_in(), self.inp.total_out());
            let status = self
                .inp
                .decompress(&self.pending, space, FlushDecompress::Sync)
                .map_err(|e| e.to_string())?;
            let used = usize::try_from(self.inp.total_in() - in_before).unwrap_or(0);
            let got = usize::try_from(self.inp.total_out() - out_before).unwrap_or(0);
            self.pending.drain(..used.min(self.pending.len()));
            if got > 0 {
                push(buf.get(..got).unwrap_or_default());
            }
            made += got;
            room = room.saturating_sub(got);
            if status == Status::StreamEnd {
                return Err("compressed stream ended".into());
            }
            if used == 0 && got == 0 {
                // a partial block: more input needed
                break;
            }
        }
        Ok(made)
    }

    /// Bytes sent after compression.
    pub(crate) fn wire_out(&self) -> u64 {
        self.out.total_out()
    }
}

#[cfg(test)]
mod tests {
    use super::Deflate;
    use flate2::{Compress, Compression, FlushCompress};

    /// Raw-deflates `data` with a sync flush, as a client does.
    fn client(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(data.len() + 1024);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        out
    }

    #[test]
    fn a_bomb_inflates_only_as_far_as_there_is_room() {
        let bomb = client(&vec![b'a'; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
        let mut d = Deflate::new();
        d.pending = bomb;
        let mut got = 0;
        let made = d.inflate(300 * 1024, &mut |b| got += b.len()).unwrap();
        assert_eq!((made, got), (300 * 1024, 300 * 1024));
        assert!(!d.pending.is_empty());
    }

    #[test]
    fn output_is_raw_deflate_and_decodes_after_each_flush() {
        let mut d = Deflate::new();
        let mut wire = Vec::new();
        d.compress(b"* OK first\r\n", &mut wire).unwrap();
        // a sync flush ends with an empty stored block
        assert!(wire.ends_with(&[0, 0, 0xff, 0xff]));
        let mut back = Deflate::new();
        back.pending = wire;
        let mut text = Vec::new();
        back.inflate(1024, &mut |b| text.extend_from_slice(b)).unwrap();
        assert_eq!(text, b"* OK first\r\n");
    }
}
