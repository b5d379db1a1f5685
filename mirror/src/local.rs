//! The local request protocol of the mirror daemon (socket `private/mirror`, lib's framed
//! IPC, protocol `mirror` version 1), and blocking clients for cleanup, qmgr and `postern`.
//!
//! - `Put { queue_id }` with the queue file's open descriptor attached → `Stored` once the
//!   peer has it durably, or `Failed { reason }`;
//! - `Drop { queue_ids }` → `Dropped` (the peer was told) or `Failed`;
//! - `Status` → `Status(MirrorStatus)`.

use postern_lib::ipc::IpcStream;
use serde::{Deserialize, Serialize};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Protocol name in the IPC hello.
pub const PROTOCOL: &str = "mirror";
/// Protocol version.
pub const VERSION: u32 = 1;
/// The socket, relative to the queue directory.
pub const SOCKET: &str = "private/mirror";
/// Most queue IDs in one drop request.
pub const MAX_DROP: usize = 1000;

/// A request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    /// Copy the queue file whose descriptor comes with this frame to the peer.
    Put {
        /// Its queue ID.
        queue_id: String,
    },
    /// The peer may drop these copies: the messages are finished here.
    Drop {
        /// Their queue IDs.
        queue_ids: Vec<String>,
    },
    /// How is the mirror?
    Status,
}

/// A reply.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Reply {
    /// The peer holds the copy durably.
    Stored,
    /// The peer was told.
    Dropped,
    /// It could not be done.
    Failed {
        /// Why, for the log.
        reason: String,
    },
    /// The mirror's state.
    Status(MirrorStatus),
}

/// What `postern status` shows about the mirror.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MirrorStatus {
    /// `queue_mirror_peer`.
    pub peer: String,
    /// The last exchange with the peer succeeded (None: none yet).
    pub reachable: Option<bool>,
    /// Unix seconds since the peer has been failing (None: it is not).
    pub failing_since: Option<u64>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Exchanges with the peer that succeeded since the daemon started.
    pub exchanges_ok: u64,
    /// Exchanges that failed since the daemon started.
    pub exchanges_failed: u64,
}

fn connect(queue_dir: &Path, timeout: Duration) -> Result<IpcStream, String> {
    let path = queue_dir.join(SOCKET);
    let sock =
        UnixStream::connect(&path).map_err(|e| format!("cannot reach the mirror daemon ({}): {e}", path.display()))?;
    IpcStream::client(sock, PROTOCOL, VERSION, Some(timeout)).map_err(|e| format!("mirror daemon: {e}"))
}

/// Has the peer store a durable copy of `file` (queue ID `queue_id`); waits at most about
/// `timeout` for the answer. `queue_dir` is "." in a daemon (which runs in it).
pub fn put(queue_dir: &Path, queue_id: &str, file: &std::fs::File, timeout: Duration) -> Result<(), String> {
    let mut ipc = connect(queue_dir, timeout)?;
    ipc.send_with_fds(
        &Request::Put {
            queue_id: queue_id.to_string(),
        },
        &[file.as_fd()],
    )
    .map_err(|e| format!("mirror daemon: {e}"))?;
    match ipc.recv::<Reply>().map_err(|e| format!("mirror daemon: {e}"))? {
        Reply::Stored => Ok(()),
        Reply::Failed { reason } => Err(reason),
        other => Err(format!("mirror daemon: unexpected reply {other:?}")),
    }
}

/// Tells the peer (through the local daemon) to drop the copies of `ids`.
pub fn drop_copies(queue_dir: &Path, ids: Vec<String>, timeout: Duration) -> Result<(), String> {
    let mut ipc = connect(queue_dir, timeout)?;
    ipc.send(&Request::Drop { queue_ids: ids })
        .map_err(|e| format!("mirror daemon: {e}"))?;
    match ipc.recv::<Reply>().map_err(|e| format!("mirror daemon: {e}"))? {
        Reply::Dropped => Ok(()),
        Reply::Failed { reason } => Err(reason),
        other => Err(format!("mirror daemon: unexpected reply {other:?}")),
    }
}

/// The mirror's state.
pub fn status(queue_dir: &Path, timeout: Duration) -> Result<MirrorStatus, String> {
    let mut ipc = connect(queue_dir, timeout)?;
    ipc.send(&Request::Status).map_err(|e| format!("mirror daemon: {e}"))?;
    match ipc.recv::<Reply>().map_err(|e| format!("mirror daemon: {e}"))? {
        Reply::Status(s) => Ok(s),
        Reply::Failed { reason } => Err(reason),
        other => Err(format!("mirror daemon: unexpected reply {other:?}")),
    }
}
