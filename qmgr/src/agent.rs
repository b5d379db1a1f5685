//! Talking to other daemons: the resolve client (trivial-rewrite, blocking, one kept
//! connection) and delivery jobs, each run on its own thread so the event loop never waits
//! for a delivery agent; a finished job comes back through a channel and wakes the loop.
//! A job is one deliver request or a batch of them on one connection.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use postern_lib::ipc::IpcStream;
use postern_lib::proto::deliver::{self, DeliverBatch, DeliverBatchReply, DeliverReply, DeliverRequest};
use postern_lib::proto::resolve::{self, ResolveReply, ResolveRequest, Route};

mod pool;

/// How long a resolve request may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The resolve client.
#[derive(Default)]
pub struct Resolver {
    conn: Option<IpcStream>,
}

impl Resolver {
    /// Routes of `address`, or why trivial-rewrite could not be asked.
    pub fn resolve(&mut self, address: &str) -> Result<Vec<Route>, String> {
        // One retry on a fresh connection: trivial-rewrite may have exited (max_idle, max_use).
        for attempt in 0..2 {
            if self.conn.is_none() {
                let sock =
                    UnixStream::connect(resolve::SOCKET).map_err(|e| format!("connect to {}: {e}", resolve::SOCKET))?;
                let c = IpcStream::client(sock, resolve::PROTOCOL, resolve::VERSION, Some(RESOLVE_TIMEOUT))
                    .map_err(|e| format!("{}: {e}", resolve::SOCKET))?;
                self.conn = Some(c);
            }
            let Some(c) = self.conn.as_mut() else { continue };
            let req = ResolveRequest::Resolve {
                address: address.to_string(),
            };
            let answer = c.send(&req).and_then(|()| c.recv::<ResolveReply>());
            match answer {
                Ok(ResolveReply::Resolved { routes }) if !routes.is_empty() => {
                    return Ok(routes.into_iter().take(resolve::MAX_ROUTES).collect());
                }
                Ok(ResolveReply::TempFail { reason }) => return Err(reason),
                Ok(other) => return Err(format!("unexpected reply from trivial-rewrite: {other:?}")),
                Err(e) => {
                    self.conn = None;
                    if attempt == 1 {
                        return Err(format!("trivial-rewrite: {e}"));
                    }
                }
            }
        }
        Err("trivial-rewrite unavailable".into())
    }
}

/// A finished job: its id and the agent's replies (one per request, in order), or why
/// there are none.
pub type JobDone = (u64, Result<Vec<DeliverReply>, String>);

/// Runs one delivery job — one request, or a batch of several for one destination
/// ([`deliver::DeliverBatch`]) — on a thread of its own: a job thread left idle by an
/// earlier job ([`pool`]), else a new one.
pub fn spawn_job(
    id: u64,
    transport: &str,
    reqs: Vec<DeliverRequest>,
    timeout: Duration,
    done: Sender<JobDone>,
    waker: Arc<mio::Waker>,
) {
    let socket = deliver::socket(transport);
    let spawned = pool::run({
        let done = done.clone();
        let waker = waker.clone();
        Box::new(move || {
            let result = run_job(&socket, reqs, timeout);
            let _ = done.send((id, result));
            let _ = waker.wake();
        })
    });
    if let Err(e) = spawned {
        let _ = done.send((id, Err(format!("cannot start a job thread: {e}"))));
        let _ = waker.wake();
    }
}

fn run_job(socket: &str, mut reqs: Vec<DeliverRequest>, timeout: Duration) -> Result<Vec<DeliverReply>, String> {
    let sock =
        UnixStream::connect(Path::new(socket)).map_err(|e| format!("delivery agent {socket} unavailable: {e}"))?;
    let mut c = IpcStream::client(sock, deliver::PROTOCOL, deliver::VERSION, Some(timeout))
        .map_err(|e| format!("delivery agent {socket}: {e}"))?;
    let failed = |e| format!("delivery agent {socket} failed: {e}");
    if reqs.len() == 1
        && let Some(req) = reqs.pop()
    {
        c.send(&req).map_err(|e| format!("delivery agent {socket}: {e}"))?;
        return c.recv::<DeliverReply>().map(|r| vec![r]).map_err(failed);
    }
    let n = reqs.len();
    c.send(&DeliverBatch { batch: reqs })
        .map_err(|e| format!("delivery agent {socket}: {e}"))?;
    let reply = c.recv::<DeliverBatchReply>().map_err(failed)?;
    if reply.replies.len() != n {
        return Err(format!(
            "delivery agent {socket} answered {} of a batch of {n} jobs",
            reply.replies.len()
        ));
    }
    Ok(reply.replies)
}
