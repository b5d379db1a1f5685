//! The local replication protocol: how the POP3/IMAP proxy, `postern status` and tools ask
//! the replicator on this mailbox server to bring a user's mailbox in step with the other
//! replicas (the replicator's peer protocol between servers is documented in the
//! `replicator` crate).
//!
//! Protocol name `replica`, version 1, on `private/replicator` (relative to the queue
//! directory), on [`crate::ipc`] framing: JSON messages only, no data frames, no
//! descriptors. Requests and replies alternate on one connection; every request gets
//! exactly one reply. A client may keep the connection open for more requests.
//!
//! ```text
//! -> {"protocol":"replica","version":1}
//! <- {"protocol":"replica","version":1}
//! -> {"type":"sync","user":"alice"}
//! <- {"type":"synced","in_step":["mbb.example.test"],"unreachable":[]}
//! -> {"type":"status"}
//! <- {"type":"status","peers":[{"peer":"198.18.0.32:1190","state":"in_step",...}]}
//! ```
//!
//! `Sync` returns once the user's mailbox (every folder, subscriptions) has been merged
//! with every peer that could be reached, so a change made on this server before the
//! request is on every peer in `in_step` when the reply comes. A peer that could not be
//! reached (or whose merge failed) is listed in `unreachable` with the reason; the
//! background sweep brings it in step later. `Failed` means the local store could not be
//! used (the change may be nowhere else). With replication off (no `replica_peers`) the
//! reply is `Synced` with both lists empty.
//!
//! Two clients are provided: [`request`] (blocking, for tools and tests) and
//! [`ReplicaClient`] (non-blocking, for an event loop such as the proxy's connection
//! driver: register [`ReplicaClient::source`], call [`ReplicaClient::progress`] on every
//! readiness event). [`encode_request`] and [`ReplyDecoder`] are the bare wire format for a
//! client that drives its own socket.

use crate::ipc::codec::{Decoder, Encoder, write_pending};
use crate::ipc::{IpcError, IpcStream};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Protocol name.
pub const PROTOCOL: &str = "replica";
/// Version.
pub const VERSION: u32 = 1;
/// The socket, relative to the queue directory.
pub const SOCKET: &str = "private/replicator";
/// Largest reply a client accepts (a status of many peers with long error texts).
pub const MAX_REPLY: usize = 256 * 1024;
/// Largest request the replicator accepts.
pub const MAX_REQUEST: usize = 4 * 1024;

/// A request to the replicator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplicaRequest {
    /// Merge `user`'s mailbox with every reachable peer now; answered when done.
    Sync {
        /// The mailbox (account name as auth returns it).
        user: String,
    },
    /// The replication state per peer.
    Status,
}

/// The replicator's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplicaReply {
    /// After `Sync`: the peers now in step with this server for the user, and those that
    /// could not be brought in step, each with the reason (for the log).
    Synced {
        /// Peer names (as configured in `replica_peers`) merged successfully.
        in_step: Vec<String>,
        /// `(peer, reason)` for the others.
        unreachable: Vec<(String, String)>,
    },
    /// After `Sync`: the local mailbox could not be used (bad user name, I/O error).
    Failed {
        /// Why.
        reason: String,
    },
    /// After `Status`.
    Status {
        /// One entry per configured peer, in `replica_peers` order.
        peers: Vec<PeerStatus>,
    },
}

/// How far a peer is from this server.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// The last sweep and every sync since reached it, and no user waits.
    InStep,
    /// Reachable, but users changed since the last sweep are still to be merged.
    CatchingUp,
    /// The last attempt failed (see `last_error`).
    Unreachable,
    /// Not contacted yet since the replicator started.
    Unknown,
}

impl PeerState {
    /// The words `postern status` prints.
    pub fn text(self) -> &'static str {
        match self {
            PeerState::InStep => "in step",
            PeerState::CatchingUp => "catching up",
            PeerState::Unreachable => "unreachable",
            PeerState::Unknown => "unknown",
        }
    }
}

/// One peer's replication state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer as configured (`host:port`).
    pub peer: String,
    /// Its state.
    pub state: PeerState,
    /// Since when (seconds since the epoch) it has been in this state.
    pub since: i64,
    /// When the last merge with it succeeded (seconds since the epoch).
    pub last_success: Option<i64>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Users with changes not yet merged into this peer.
    pub users_pending: u64,
}

/// Appends the hello and `req` to `out` (the bytes a client sends on a new connection).
pub fn encode_request(req: &ReplicaRequest, out: &mut Vec<u8>) -> Result<(), IpcError> {
    Encoder::hello(PROTOCOL, VERSION, out)?;
    Encoder::message(req, out)
}

/// Decodes the replicator's side of a connection: its hello, then replies.
#[derive(Debug)]
pub struct ReplyDecoder {
    dec: Decoder,
    greeted: bool,
}

impl Default for ReplyDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplyDecoder {
    /// A decoder for a new connection.
    pub fn new() -> Self {
        ReplyDecoder {
            dec: Decoder::with_limit(MAX_REPLY),
            greeted: false,
        }
    }

    /// How many bytes to read next (pass at most this many to [`push`](Self::push)).
    pub fn wants(&self) -> usize {
        self.dec.wants()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.dec.push(bytes);
    }

    /// The next reply once complete (`Ok(None)`: more bytes needed); a wrong hello or a
    /// bad frame is an error (drop the connection).
    pub fn next_reply(&mut self) -> Result<Option<ReplicaReply>, IpcError> {
        loop {
            let Some(frame) = self.dec.next_frame()? else {
                return Ok(None);
            };
            if !self.greeted {
                frame.expect_hello(PROTOCOL, VERSION)?;
                self.greeted = true;
                continue;
            }
            return frame.message().map(Some);
        }
    }
}

/// Asks the replicator at `socket` (normally [`SOCKET`] under the queue directory) one
/// question, waiting at most `timeout` for each read and write (a `Sync` may take as long
/// as the merge: give it the replica timeout and some).
pub fn request(socket: &Path, req: &ReplicaRequest, timeout: Duration) -> Result<ReplicaReply, IpcError> {
    let sock = std::os::unix::net::UnixStream::connect(socket)?;
    let mut s = IpcStream::client(sock, PROTOCOL, VERSION, Some(timeout))?;
    s.send(req)?;
    s.recv()
}

/// One request in progress from an event loop (see the module doc).
#[derive(Debug)]
pub struct ReplicaClient {
    sock: mio::net::UnixStream,
    dec: ReplyDecoder,
    out: Vec<u8>,
}

impl ReplicaClient {
    /// Connects (non-blocking) to `socket` and queues the hello and `req`.
    pub fn start(socket: &Path, req: &ReplicaRequest) -> Result<ReplicaClient, String> {
        let sock = mio::net::UnixStream::connect(socket).map_err(|e| format!("connect to replicator: {e}"))?;
        let mut out = Vec::new();
        encode_request(req, &mut out).map_err(|e| e.to_string())?;
        Ok(ReplicaClient {
            sock,
            dec: ReplyDecoder::new(),
            out,
        })
    }

    /// The socket, to register with the event loop (readable and writable).
    pub fn source(&mut self) -> &mut mio::net::UnixStream {
        &mut self.sock
    }

    /// Writes what is pending and reads what arrived: `Ok(Some(reply))` when done,
    /// `Ok(None)` to wait for the next event, `Err` when the replicator could not be asked.
    pub fn progress(&mut self) -> Result<Option<ReplicaReply>, String> {
        match write_pending(&mut self.sock, &mut self.out) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {}
            Err(e) => return Err(format!("write to replicator: {e}")),
        }
        let mut buf = [0u8; 4096];
        loop {
            if let Some(r) = self.dec.next_reply().map_err(|e| format!("replicator: {e}"))? {
                return Ok(Some(r));
            }
            let want = self.dec.wants().min(buf.len());
            let Some(chunk) = buf.get_mut(..want) else {
                return Ok(None);
            };
            match self.sock.read(chunk) {
                Ok(0) => return Err("replicator closed the connection".into()),
                Ok(n) => self.dec.push(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read from replicator: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_have_the_documented_json() {
        let j = serde_json::to_string(&ReplicaRequest::Sync { user: "alice".into() }).unwrap();
        assert_eq!(j, r#"{"type":"sync","user":"alice"}"#);
        let r = ReplicaReply::Synced {
            in_step: vec!["b:1190".into()],
            unreachable: vec![("c:1190".into(), "connection refused".into())],
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"{"type":"synced","in_step":["b:1190"],"unreachable":[["c:1190","connection refused"]]}"#
        );
        assert_eq!(serde_json::from_str::<ReplicaReply>(&j).unwrap(), r);
    }

    #[test]
    fn blocking_and_event_clients_talk_to_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replicator");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            for _ in 0..2 {
                let (s, _) = l.accept().unwrap();
                let mut s = IpcStream::server(s, PROTOCOL, VERSION, Some(Duration::from_secs(5))).unwrap();
                let req: ReplicaRequest = s.recv().unwrap();
                let ReplicaRequest::Sync { user } = req else { panic!() };
                s.send(&ReplicaReply::Failed { reason: user }).unwrap();
            }
        });
        let r = request(
            &path,
            &ReplicaRequest::Sync { user: "bob".into() },
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r, ReplicaReply::Failed { reason: "bob".into() });
        let mut c = ReplicaClient::start(&path, &ReplicaRequest::Sync { user: "eve".into() }).unwrap();
        let started = std::time::Instant::now();
        let reply = loop {
            if let Some(r) = c.progress().unwrap() {
                break r;
            }
            assert!(started.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(reply, ReplicaReply::Failed { reason: "eve".into() });
        t.join().unwrap();
    }

    #[test]
    fn the_decoder_refuses_a_wrong_hello_and_huge_frames() {
        let mut out = Vec::new();
        Encoder::hello("auth", 1, &mut out).unwrap();
        let mut d = ReplyDecoder::new();
        d.push(&out);
        assert!(d.next_reply().is_err());
        let mut d = ReplyDecoder::new();
        d.push(&[0x7f, 0xff, 0xff, 0xff, b'M']);
        assert!(d.next_reply().is_err());
    }
}
