//! The mirror daemon's two services, one program (like the replicator):
//!
//! - `mirror` **inet** (the internal address, e.g. `198.18.1.2:1191`): serves the peer
//!   node — authenticates it ([`crate::wire`]), then stores its queue files under
//!   `mirror/` and drops them when told ([`crate::store`]);
//! - `mirror` **unix** (`private/mirror`): serves this node — cleanup's `Put` of a queue
//!   file (its descriptor passed over the socket), qmgr's `Drop` notices, `postern
//!   status`'s `Status` ([`crate::local`]) — over connections to the peer it keeps open
//!   for the next message; its first connection (master's wakeup, when nothing else)
//!   starts the watch thread ([`crate::watch`]: checks with the peer, freezes, returns).
//!
//! The secret (`queue_mirror_secret_file`) is read before privileges are dropped. Every
//! wait for the peer is bounded by `queue_mirror_timeout` (one deadline for connect,
//! send and acknowledgement together); a put larger than `message_size_limit` plus
//! [`crate::wire::ENVELOPE_ALLOWANCE`] is refused on both sides; a peer that sends garbage
//! gets its connection closed and a log line naming its address.
//!
//! **Settings read**: `queue_mirror_peer`, `queue_mirror_secret_file`,
//! `queue_mirror_timeout`, `queue_mirror_check_interval`, `message_size_limit`.

use crate::local::{MirrorStatus, PROTOCOL, Reply, Request, VERSION};
use crate::store::{self, MIRROR_DIR};
use crate::wire::{self, FrameError, PeerConn, kind};
use postern_lib::ipc::IpcStream;
use postern_lib::queue_id::QueueId;
use postern_lib::skeleton::{Accepted, Context, Peer, Stream};
use ring::hmac;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Connections to the peer kept open for the next request.
const POOL: usize = 16;
/// A pooled connection idle longer than this is not used (the peer may have closed it).
const POOL_IDLE: Duration = Duration::from_secs(240);
/// The wait for a local client's request.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(30);
/// `Status` waits at most this long for the peer's answer to a ping.
const STATUS_PING: Duration = Duration::from_secs(3);

/// What the threads of one process share.
pub struct Shared {
    inner: Arc<Inner>,
    /// The watch thread ([`crate::watch`]) is started (the unix service's process only).
    watch: Once,
}

/// The part the watch thread shares too.
pub(crate) struct Inner {
    key: Option<hmac::Key>,
    pool: Mutex<Vec<PeerConn>>,
    health: Mutex<MirrorStatus>,
    /// The peer came back: a resync is due ([`crate::resync`]).
    pub(crate) resync_due: AtomicBool,
    /// A resync runs.
    resyncing: AtomicBool,
    /// The peer came back, or this node did not run for a while: ask the peer what it
    /// adopted meanwhile ([`crate::rejoin::live`]).
    pub(crate) rejoin_due: AtomicBool,
}

/// Reads the secret (as root, before the privilege drop).
pub fn init(ctx: &Context) -> Result<Shared, String> {
    let file = &ctx.main.queue_mirror_secret_file;
    let key = if file.as_str().is_empty() {
        None
    } else {
        let path = file.path();
        let bytes = std::fs::read(path).map_err(|e| format!("queue_mirror_secret_file {}: {e}", path.display()))?;
        let secret =
            wire::parse_secret(&bytes).map_err(|e| format!("queue_mirror_secret_file {}: {e}", path.display()))?;
        Some(wire::key(&secret))
    };
    // Runs in the queue directory: copies half-written when a connection broke or the
    // daemon died are removed once nothing can still be writing them.
    let stale = store::remove_stale_temps(Path::new(MIRROR_DIR), Duration::from_secs(3600));
    if stale > 0 {
        tracing::info!("mirror: removed {stale} unfinished copies older than an hour");
    }
    Ok(Shared {
        inner: Arc::new(Inner {
            key,
            pool: Mutex::new(Vec::new()),
            health: Mutex::new(MirrorStatus::default()),
            resync_due: AtomicBool::new(false),
            resyncing: AtomicBool::new(false),
            rejoin_due: AtomicBool::new(false),
        }),
        watch: Once::new(),
    })
}

/// Serves one connection: the peer (TCP) or a local client (Unix).
pub fn serve(shared: &Shared, ctx: &Context, conn: Accepted) {
    match (conn.stream, conn.peer) {
        (Stream::Tcp(s), Peer::Inet(addr)) => serve_peer(shared, ctx, s, addr),
        (Stream::Unix(s), _) => serve_local(shared, ctx, s),
        _ => tracing::warn!("mirror: unexpected connection type"),
    }
}

fn max_put(ctx: &Context) -> usize {
    usize::try_from(ctx.main.message_size_limit.saturating_add(wire::ENVELOPE_ALLOWANCE)).unwrap_or(usize::MAX)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---- the peer's side: keeping its copies ----

fn serve_peer(shared: &Shared, ctx: &Context, mut s: TcpStream, addr: SocketAddr) {
    let Some(key) = &shared.inner.key else {
        tracing::warn!("mirror: connection from {addr} refused: queue_mirror_secret_file is not set");
        return;
    };
    let timeout = ctx.main.queue_mirror_timeout.duration();
    if s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .is_err()
    {
        return;
    }
    let _ = s.set_nodelay(true);
    if let Err(why) = wire::server_handshake(&mut s, key) {
        tracing::warn!("mirror: authentication of {addr} failed: {why}");
        return;
    }
    let most = max_put(ctx) + 256;
    let dir = Path::new(MIRROR_DIR);
    loop {
        // Idle between requests for up to wire::IDLE; a request, once begun, within the timeout.
        let _ = s.set_read_timeout(Some(wire::IDLE));
        // A read with a timeout fails with EINTR when this process was stopped and
        // continued (SIGSTOP, a paused VM: signal(7)); the connection and what the peer
        // sent meanwhile are still there.
        loop {
            match s.peek(&mut [0u8; 1]) {
                Ok(1..) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
        let _ = s.set_read_timeout(Some(timeout));
        let (k, p) = match wire::read_frame(&mut s, |k| match k {
            kind::PUT => Some(most),
            kind::DROP | kind::PING | kind::ADOPTED | kind::QUEUED => Some(wire::MAX_CONTROL),
            _ => None,
        }) {
            Ok(f) => f,
            Err(FrameError::Closed) => return,
            Err(e) => {
                tracing::warn!("mirror: from {addr}: {e}; connection closed");
                return;
            }
        };
        let answer = match k {
            kind::PUT => put(dir, &p, addr).map(|()| Vec::new()),
            kind::DROP => drop_copies(dir, &p, addr).map(|()| Vec::new()),
            kind::ADOPTED | kind::QUEUED => rejoin_answer(dir, k, &p, addr),
            _ => Ok(Vec::new()),
        };
        let sent = match &answer {
            Ok(a) => wire::write_frame(&mut s, kind::OK, &[a]),
            Err(why) => wire::write_frame(&mut s, kind::FAILED, &[why.as_bytes()]),
        };
        if let Err(e) = sent {
            tracing::warn!("mirror: cannot answer {addr}: {e}");
            return;
        }
        if answer.is_err() {
            return;
        }
    }
}

fn put(dir: &Path, p: &[u8], addr: SocketAddr) -> Result<(), String> {
    let id = p
        .split_first()
        .and_then(|(&n, rest)| rest.get(..n as usize).map(|id| (id, &rest[n as usize..])))
        .and_then(|(id, data)| std::str::from_utf8(id).ok().map(|id| (id, data)))
        .and_then(|(id, data)| QueueId::parse(id).ok().map(|id| (id, data)));
    let Some((id, data)) = id else {
        tracing::warn!("mirror: from {addr}: put without a valid queue ID; connection closed");
        return Err("bad queue ID".into());
    };
    match store::keep(dir, &id, data) {
        Ok(()) => {
            tracing::info!("{}: mirror copy from {addr} kept, size={}", id.as_str(), data.len());
            Ok(())
        }
        Err(e) => {
            tracing::error!("{}: cannot keep the mirror copy from {addr}: {e}", id.as_str());
            Err(format!("cannot write the copy: {e}"))
        }
    }
}

/// The peer rejoins after being down ([`crate::rejoin`]): which of the queue IDs it sends
/// were adopted here ([`kind::ADOPTED`]), or are still queued here ([`kind::QUEUED`]).
fn rejoin_answer(dir: &Path, k: u8, p: &[u8], addr: SocketAddr) -> Result<Vec<u8>, String> {
    let mut asked = Vec::new();
    for word in p.split(|&b| b == b'\n').filter(|w| !w.is_empty()).take(wire::MAX_ASK) {
        match std::str::from_utf8(word).ok().and_then(|w| QueueId::parse(w).ok()) {
            Some(id) => asked.push(id.as_str().to_string()),
            None => {
                tracing::warn!("mirror: from {addr}: rejoin question with an invalid queue ID; connection closed");
                return Err("bad queue ID".into());
            }
        }
    }
    let named = if k == kind::ADOPTED {
        let adopted = store::adopted_of(dir, &asked);
        if !adopted.is_empty() {
            tracing::info!(
                "mirror: {addr} rejoins: {} of the {} queued message(s) it asked about were adopted and delivered here; it drops them",
                adopted.len(),
                asked.len()
            );
        }
        adopted
    } else {
        // Nothing is answered when the queue is not all there: "not queued" would have the
        // peer drop its copies (crate::prune).
        let token = store::queue_token(dir).map_err(|e| {
            tracing::warn!("mirror: cannot answer {addr} which messages are queued here: {e}");
            format!("no queue token: {e}")
        })?;
        let queued = crate::resync::still_queued(Path::new("."), &asked).map_err(|e| {
            tracing::warn!("mirror: cannot answer {addr} which messages are queued here: {e}");
            e
        })?;
        let mut lines = vec![format!("{}{token}", wire::TOKEN_LINE)];
        lines.extend(asked.into_iter().filter(|id| queued.contains(id)));
        lines
    };
    Ok(named.join("\n").into_bytes())
}

fn drop_copies(dir: &Path, p: &[u8], addr: SocketAddr) -> Result<(), String> {
    let mut dropped = 0;
    for word in p.split(|&b| b == b'\n').filter(|w| !w.is_empty()) {
        match std::str::from_utf8(word).ok().and_then(|w| QueueId::parse(w).ok()) {
            Some(id) => dropped += usize::from(store::drop_copy(dir, &id)),
            None => {
                tracing::warn!("mirror: from {addr}: drop of an invalid queue ID; connection closed");
                return Err("bad queue ID".into());
            }
        }
    }
    tracing::debug!("mirror: {addr} finished {dropped} message(s); copies dropped");
    Ok(())
}

// ---- this node's side: sending copies ----

fn serve_local(shared: &Shared, ctx: &Context, sock: std::os::unix::net::UnixStream) {
    // Master's wakeup (one byte, then closed) keeps this process and its watch thread
    // alive; a client's first byte is its hello's.
    let _ = sock.set_read_timeout(Some(LOCAL_TIMEOUT));
    let mut first = [0u8; 1];
    let peeked = loop {
        match rustix::net::recv(&sock, &mut first[..], rustix::net::RecvFlags::PEEK) {
            Err(rustix::io::Errno::INTR) => {}
            other => break other,
        }
    };
    if !matches!(peeked, Ok((1, _))) {
        return;
    }
    if !ctx.main.queue_mirror_peer.is_empty() {
        shared
            .watch
            .call_once(|| crate::watch::start(Arc::clone(&shared.inner), Settings::of(ctx)));
    }
    if first[0] == postern_lib::proto::trigger::WAKEUP {
        let _ = rustix::net::recv(&sock, &mut first[..], rustix::net::RecvFlags::empty());
        return;
    }
    let inner = &*shared.inner;
    let peer = ctx.main.queue_mirror_peer.as_str();
    let timeout = ctx.main.queue_mirror_timeout.duration();
    let mut ipc = match IpcStream::server(sock, PROTOCOL, VERSION, Some(LOCAL_TIMEOUT)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("mirror: local handshake: {e}");
            return;
        }
    };
    let (req, mut fds) = match ipc.recv_with_fds::<Request>() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("mirror: local request: {e}");
            return;
        }
    };
    let reply = match req {
        Request::Put { queue_id } => match (fds.pop(), fds.is_empty()) {
            (Some(fd), true) => match read_copy(ctx, std::fs::File::from(fd)) {
                Ok(data) => match with_peer(inner, peer, timeout, |c, d| c.put(&queue_id, &data, d)) {
                    Ok(()) => Reply::Stored,
                    Err(reason) => Reply::Failed { reason },
                },
                Err(reason) => Reply::Failed { reason },
            },
            _ => Reply::Failed {
                reason: "a put carries exactly one descriptor".into(),
            },
        },
        Request::Drop { queue_ids } if peer.is_empty() => {
            let _ = queue_ids;
            Reply::Dropped
        }
        Request::Drop { queue_ids } => {
            let ids: Vec<String> = queue_ids.into_iter().take(crate::local::MAX_DROP).collect();
            match with_peer(inner, peer, timeout, |c, d| c.drop_copies(&ids, d)) {
                Ok(()) => Reply::Dropped,
                Err(reason) => Reply::Failed { reason },
            }
        }
        Request::Status => {
            if !peer.is_empty() {
                let _ = with_peer(inner, peer, STATUS_PING.min(timeout), |c, d| c.ping(d));
            }
            let mut st = inner.health.lock().unwrap_or_else(|p| p.into_inner()).clone();
            st.peer = peer.to_string();
            Reply::Status(st)
        }
    };
    if let Err(e) = ipc.send(&reply) {
        tracing::warn!("mirror: cannot answer a local client: {e}");
    }
}

/// The settings the watch thread works with (read once: a reload starts new processes).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `queue_mirror_peer`.
    pub peer: String,
    /// `queue_mirror_timeout`.
    pub timeout: Duration,
    /// `queue_mirror_check_interval`.
    pub interval: Duration,
    /// The largest copy.
    pub max_put: usize,
}

impl Settings {
    fn of(ctx: &Context) -> Settings {
        Settings {
            peer: ctx.main.queue_mirror_peer.clone(),
            timeout: ctx.main.queue_mirror_timeout.duration(),
            interval: ctx.main.queue_mirror_check_interval.duration(),
            max_put: max_put(ctx),
        }
    }
}

/// Copies everything queued here to the returned peer, once at a time.
pub(crate) fn resync(inner: &Inner, s: &Settings) {
    if inner
        .resyncing
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    inner.resync_due.store(false, Ordering::Release);
    let (peer, budget) = (s.peer.as_str(), s.timeout);
    let result = crate::resync::run(
        s.max_put,
        |id, data| with_peer(inner, peer, budget, |c, d| c.put(id, data, d)),
        |ids| with_peer(inner, peer, budget, |c, d| c.drop_copies(ids, d)),
    );
    match result {
        Ok((copied, dropped)) => tracing::info!(
            "mirror: resync: {copied} queued message(s) copied to {peer} ({dropped} finished meanwhile, dropped)"
        ),
        Err(why) => tracing::warn!("mirror: resync with {peer} stopped: {why}; it starts over when the peer is back"),
    }
    inner.resyncing.store(false, Ordering::Release);
}

/// The queue file behind `file`, bounded.
fn read_copy(ctx: &Context, file: std::fs::File) -> Result<Vec<u8>, String> {
    let len = file.metadata().map_err(|e| format!("fstat: {e}"))?.len();
    let most = max_put(ctx);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > most {
        return Err(format!(
            "queue file of {len} bytes is larger than the {most} a copy may be"
        ));
    }
    let mut data = vec![0u8; len];
    file.read_exact_at(&mut data, 0).map_err(|e| format!("read: {e}"))?;
    Ok(data)
}

/// Runs `f` on a connection to the peer `peer` (a pooled one first, a new one when that
/// fails), all within `budget`; records the outcome for `Status` and notices the peer
/// coming back after failures (a resync and a rejoin become due).
pub(crate) fn with_peer<T>(
    inner: &Inner,
    peer: &str,
    budget: Duration,
    f: impl Fn(&mut PeerConn, Instant) -> Result<T, String>,
) -> Result<T, String> {
    let result = (|| {
        if peer.is_empty() {
            return Err("queue_mirror_peer is not set".to_string());
        }
        let key = inner
            .key
            .as_ref()
            .ok_or_else(|| "queue_mirror_secret_file is not set".to_string())?;
        let deadline = Instant::now() + budget;
        let pooled = inner.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut c) = pooled.filter(|c| c.last_used.elapsed() < POOL_IDLE)
            && let Ok(v) = f(&mut c, deadline)
        {
            return Ok((c, v));
        }
        let mut c = PeerConn::connect(peer, key, deadline)?;
        let v = f(&mut c, deadline)?;
        Ok((c, v))
    })();
    let mut h = inner.health.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok((c, v)) => {
            let mut pool = inner.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < POOL {
                pool.push(c);
            }
            if let Some(since) = h.failing_since.take() {
                tracing::info!(
                    "mirror: peer {peer} reachable again after {} s; asking what it adopted meanwhile and copying what is queued here to it",
                    now_secs().saturating_sub(since)
                );
                inner.rejoin_due.store(true, Ordering::Release);
                inner.resync_due.store(true, Ordering::Release);
            }
            h.reachable = Some(true);
            h.exchanges_ok += 1;
            Ok(v)
        }
        Err(why) => {
            if h.failing_since.is_none() {
                h.failing_since = Some(now_secs());
                tracing::warn!("mirror: peer {peer} unreachable: {why}");
            }
            h.reachable = Some(false);
            h.last_error = Some(why.clone());
            h.exchanges_failed += 1;
            Err(format!("peer {peer}: {why}"))
        }
    }
}
