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
use std::time::{Duration, Instant};

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

/// How stale the counts master holds may grow while only they change ([`Reports`]).
pub const REFRESH: Duration = Duration::from_millis(500);

/// When a child tells master, so that master is not woken per connection: at once when
/// what drives its process accounting changes (available or busy, retiring, and every
/// change while retiring: its open connections keep it counted towards `maxproc`; having
/// served any: a child that fails before serving anything throttles its service), and
/// while only the counts for `postern status` change, at most once per [`REFRESH`] (a
/// later call sends what changed meanwhile: the caller calls again within about a
/// [`REFRESH`] while [`stale`](Self::stale)). Postfix's children likewise report only a
/// change between busy and idle.
#[derive(Debug, Default)]
pub struct Reports {
    sent: Option<(Status, Instant)>,
}

impl Reports {
    /// Whether `now` is the time to send `s` (if so, it counts as sent).
    pub fn due(&mut self, s: Status, now: Instant) -> bool {
        let due = match self.sent {
            None => true,
            Some((p, _)) if p == s => false,
            Some((p, at)) => {
                p.available != s.available
                    || p.retiring != s.retiring
                    || s.retiring
                    || (p.served == 0) != (s.served == 0)
                    || now.saturating_duration_since(at) >= REFRESH
            }
        };
        if due {
            self.sent = Some((s, now));
        }
        due
    }

    /// Whether master has been told something other than `s` (a refresh is owed).
    pub fn stale(&self, s: Status) -> bool {
        self.sent.is_some_and(|(p, _)| p != s)
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

    /// Accounting changes go at once; count-only changes at most once per REFRESH.
    #[test]
    fn reports_go_at_once_only_for_what_drives_accounting() {
        let st = |available, connections, served, retiring| Status {
            available,
            connections,
            served,
            retiring,
        };
        let t = Instant::now();
        let mut r = Reports::default();
        assert!(r.due(st(true, 0, 0, false), t), "the first report");
        assert!(!r.due(st(true, 0, 0, false), t), "nothing changed");
        assert!(r.due(st(true, 1, 1, false), t), "first connection, first served");
        assert!(!r.due(st(true, 2, 2, false), t), "counts only");
        assert!(
            !r.due(st(true, 1, 2, false), t + REFRESH / 2),
            "counts only, soon after"
        );
        assert!(r.due(st(true, 1, 3, false), t + REFRESH), "counts, a refresh later");
        assert!(r.due(st(false, 1, 3, false), t + REFRESH), "busy");
        assert!(r.due(st(true, 1, 3, false), t + REFRESH), "available again");
        assert!(
            !r.due(st(true, 0, 3, false), t + REFRESH),
            "no connection left: a count"
        );
        assert!(r.stale(st(true, 0, 3, false)), "owed");
        assert!(r.due(st(true, 0, 3, false), t + 2 * REFRESH), "refreshed");
        assert!(!r.stale(st(true, 0, 3, false)));
        assert!(r.due(st(false, 1, 4, true), t + 2 * REFRESH), "retiring");
        assert!(
            r.due(st(false, 2, 4, true), t + 2 * REFRESH),
            "any change while retiring"
        );
    }
}
