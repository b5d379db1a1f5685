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
//! `Move` is one step of moving a user's mailbox between two pairs of mailbox servers
//! (`postern user move|rebalance` asks it of the replicator on the director's host, which
//! finds the pairs' replicators in its own `director_pairs`): `copy` merges the mailbox
//! from the old pair into the new one and checks it (`{"type":"copied","messages":N}`),
//! `remove` empties the old copy once `director_user_map` sends the user to the new pair
//! (`{"type":"removed"}`); either may be `failed` with the reason. Both take as long as
//! the merge: the client waits accordingly.
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
//! readiness event).

use crate::ipc::request::{OneRequest, Peer};
use crate::ipc::{IpcError, IpcStream};
use serde::{Deserialize, Serialize};
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
    /// One step of moving `user`'s mailbox from pair `from` to pair `to` (names in the
    /// replicator's `director_pairs`); answered when done.
    Move {
        /// The mailbox.
        user: String,
        /// The pair it is on.
        from: String,
        /// The pair it goes to.
        to: String,
        /// Which step.
        step: MoveStep,
    },
}

/// The steps of a move (see the module doc).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MoveStep {
    /// Merge from the old pair into the new one, then check the new one.
    Copy,
    /// Empty the old copy (only once the table sends the user to the new pair).
    Remove,
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
    /// After `Sync`: the local mailbox could not be used (bad user name, I/O error);
    /// after `Move`: the step failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// After `Status`.
    Status {
        /// One entry per configured peer, in `replica_peers` order.
        peers: Vec<PeerStatus>,
    },
    /// After a `Move` copy: the new pair holds every message of the old one.
    Copied {
        /// Messages checked on each new replicator.
        messages: u64,
    },
    /// After a `Move` removal: the old copy is empty.
    Removed,
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

/// Asks the replicator at `socket` (normally [`SOCKET`] under the queue directory) one
/// question, waiting at most `timeout` for each read and write (a `Sync` may take as long
/// as the merge: give it the replica timeout and some).
pub fn request(socket: &Path, req: &ReplicaRequest, timeout: Duration) -> Result<ReplicaReply, IpcError> {
    let sock = std::os::unix::net::UnixStream::connect(socket)?;
    let mut s = IpcStream::client(sock, PROTOCOL, VERSION, Some(timeout))?;
    s.send(req)?;
    s.recv()
}

/// The replicator, in this protocol.
const REPLICATOR: Peer = Peer {
    name: "replicator",
    protocol: PROTOCOL,
    version: VERSION,
    max_reply: MAX_REPLY,
};

/// One request in progress from an event loop (see the module doc), on lib's one-request
/// client ([`OneRequest`]).
#[derive(Debug)]
pub struct ReplicaClient(OneRequest<ReplicaReply>);

impl ReplicaClient {
    /// Connects (non-blocking) to `socket` and queues the hello and `req`.
    pub fn start(socket: &Path, req: &ReplicaRequest) -> Result<ReplicaClient, String> {
        OneRequest::start(socket, REPLICATOR, req).map(ReplicaClient)
    }

    /// The socket, to register with the event loop (readable and writable).
    pub fn source(&mut self) -> &mut mio::net::UnixStream {
        self.0.source()
    }

    /// Writes what is pending and reads what arrived: `Ok(Some(reply))` when done,
    /// `Ok(None)` to wait for the next event, `Err` when the replicator could not be asked.
    pub fn progress(&mut self) -> Result<Option<ReplicaReply>, String> {
        self.0.progress()
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
        let m = ReplicaRequest::Move {
            user: "alice".into(),
            from: "p1".into(),
            to: "p2".into(),
            step: MoveStep::Copy,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"move","user":"alice","from":"p1","to":"p2","step":"copy"}"#
        );
        assert_eq!(
            serde_json::to_string(&ReplicaReply::Copied { messages: 3 }).unwrap(),
            r#"{"type":"copied","messages":3}"#
        );
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
}
