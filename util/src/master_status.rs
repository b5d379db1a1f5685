//! The status channel between master and each child it starts.
//!
//! Master creates one Unix socket pair per child and passes one end to it as file
//! descriptor [`STATUS_FD`]. The child writes fixed-size [`Status`] records on it whenever
//! its state changes; master reads them to know how many children can take another
//! connection (Postfix's "available" count), which drives spawning. When master goes away
//! the child sees end-of-file on the same descriptor and exits once its current work is
//! done, so a dead master never leaves children holding its listening sockets.
//!
//! Record layout (16 bytes, little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 | `b'A'` available (can take another connection), `b'B'` busy (cannot, for now) or `b'R'` retiring (never again; exits once its connections end) |
//! | 1..4 | zero |
//! | 4..8 | open connections (u32) |
//! | 8..16 | connections served so far (u64) |
//!
//! Records are smaller than `PIPE_BUF` and written with one `write`, so they never
//! interleave; master still reassembles them from a byte stream and drops a peer that
//! sends anything else.

use std::io::{self, Write};

/// The descriptor number of the status channel in a child.
pub const STATUS_FD: i32 = 3;
/// The first listening socket in a child; the rest follow in order.
pub const FIRST_LISTEN_FD: i32 = 4;
/// Size of one record.
pub const RECORD_LEN: usize = 16;

/// Environment variables master sets for a child.
pub mod env {
    /// Number of listening sockets passed, starting at [`super::FIRST_LISTEN_FD`].
    pub const LISTEN_FDS: &str = "POSTERN_LISTEN_FDS";
    /// The kind of each listener, comma-separated: `inet` or `unix`.
    pub const LISTEN_KINDS: &str = "POSTERN_LISTEN_KINDS";
    /// `NAME/TYPE` of the service.
    pub const SERVICE: &str = "POSTERN_SERVICE";
    /// The config directory.
    pub const CONFIG_DIR: &str = "POSTERN_CONFIG_DIR";
    /// Requests to serve before exiting.
    pub const MAX_USE: &str = "POSTERN_MAX_USE";
    /// Seconds idle before exiting.
    pub const MAX_IDLE: &str = "POSTERN_MAX_IDLE";
    /// Connections per process (multi-connection daemons).
    pub const MAX_CONNS: &str = "POSTERN_MAX_CONNS";
    /// The account to drop to, when master runs as root and the service is unprivileged.
    pub const RUN_AS: &str = "POSTERN_RUN_AS";
    /// The file holding the configuration texts master validated (see
    /// postern-lib's `master_control::ConfigSnapshot`).
    pub const CONFIG_SNAPSHOT: &str = "POSTERN_CONFIG_SNAPSHOT";
    /// Set when master runs in the foreground with logs on stderr.
    pub const LOG_STDERR: &str = "POSTERN_LOG_STDERR";
}

/// What a child tells master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Whether the child can accept another connection now.
    pub available: bool,
    /// Connections open now.
    pub connections: u32,
    /// Connections accepted since the child started.
    pub served: u64,
    /// The child will accept nothing more (it is stopping, or a single-flavour child
    /// reached `max_use`) and exits when its open connections end; master counts it
    /// towards `maxproc` until then.
    pub retiring: bool,
}

impl Status {
    /// The wire form.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0] = match (self.retiring, self.available) {
            (true, _) => b'R',
            (false, true) => b'A',
            (false, false) => b'B',
        };
        b[4..8].copy_from_slice(&self.connections.to_le_bytes());
        b[8..16].copy_from_slice(&self.served.to_le_bytes());
        b
    }

    /// Parses one record; `None` if it is not a valid record.
    pub fn decode(b: &[u8; RECORD_LEN]) -> Option<Status> {
        let (available, retiring) = match b[0] {
            b'A' => (true, false),
            b'B' => (false, false),
            b'R' => (false, true),
            _ => return None,
        };
        if b[1..4] != [0, 0, 0] {
            return None;
        }
        let mut c = [0u8; 4];
        c.copy_from_slice(&b[4..8]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[8..16]);
        Some(Status {
            available,
            connections: u32::from_le_bytes(c),
            served: u64::from_le_bytes(s),
            retiring,
        })
    }

    /// Writes the record in one call.
    pub fn send(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())
    }
}

/// A child sent bytes that are not a status record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed status record")]
pub struct MalformedStatus;

/// Reassembles records from a byte stream (master side).
#[derive(Default, Debug)]
pub struct StatusReader {
    buf: Vec<u8>,
}

impl StatusReader {
    /// Adds bytes read from the channel; returns the complete records, or `Err` when the
    /// peer sent something that is not a record.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Status>, MalformedStatus> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while self.buf.len() >= RECORD_LEN {
            let mut rec = [0u8; RECORD_LEN];
            rec.copy_from_slice(&self.buf[..RECORD_LEN]);
            out.push(Status::decode(&rec).ok_or(MalformedStatus)?);
            self.buf.drain(..RECORD_LEN);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reassembly() {
        let s = Status {
            available: false,
            connections: 7,
            served: 1 << 40,
            retiring: true,
        };
        let bytes = s.encode();
        let mut r = StatusReader::default();
        assert_eq!(r.push(&bytes[..5]).unwrap(), vec![]);
        let mut rest = bytes[5..].to_vec();
        rest.extend_from_slice(
            &Status {
                available: true,
                connections: 0,
                served: 2,
                retiring: false,
            }
            .encode(),
        );
        let got = r.push(&rest).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], s);
        assert!(got[1].available);
        assert!(StatusReader::default().push(&[b'X'; 16]).is_err());
    }
}
