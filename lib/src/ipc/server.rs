//! The one framed-IPC server for event daemons (anvil, trivial-rewrite, auth): it takes
//! the connections the event skeleton ([`crate::skeleton::event`]) accepts on the
//! daemon's listeners, does the hello of [`super`], decodes request frames with
//! [`codec`](super::codec), hands each request to a [`Handler`] and writes the replies with
//! the non-blocking write loop. The daemon is only its handler.
//!
//! Duties, per client:
//! * **One request at a time, replies in order.** A handler answers a request at once
//!   ([`Answer::Reply`]) or later ([`Answer::Deferred`], then [`Outbox::reply`] from a
//!   tick, a worker's wake-up or another request); until then nothing more is decoded from
//!   that client (its next request waits in the socket), while other clients are served.
//! * **Bounded buffers, back-pressure.** Input: the decoder holds at most one frame of
//!   [`Config::max_request`] bytes; a larger announced frame is refused, logged and the
//!   client dropped. Output: once [`Config::max_output`] bytes of replies wait unread, the
//!   client's requests are no longer read until it reads. So a client that never reads
//!   makes the server hold at most `max_output` + one reply + one request for it.
//! * **Lifecycle.** [`Handler::connected`] / [`Handler::disconnected`] bracket each client
//!   (anvil ties its counts to them); a client idle longer than [`Config::idle_timeout`]
//!   with nothing pending is closed; on stop, clients with nothing pending or unsent are
//!   closed at once and the others when they are done.
//! * **Wake-ups.** [`Outbox::waker`] is a mio waker into this loop for worker threads;
//!   when it fires, [`Handler::woken`] runs (auth's password checks).
//!
//! Security stance: every client is hostile: sizes are bounded before allocation, a bad
//! frame, a wrong hello or a request that does not decode ends that client with a log
//! line, never the process; request bytes are zeroed after decoding.

use super::codec::{Decoder, Encoder, write_pending};
use crate::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use crate::skeleton::{Accepted, Context, Stream};
use mio::net::UnixStream;
use mio::{Interest, Registry, Token, Waker};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// A client of the server. Ids are never reused while the process lives, so a late reply
/// to a client that has gone is dropped, never sent to another.
pub type ClientId = usize;

const WAKER_TOKEN: Token = Token(RESERVED_TOKENS - 1);

/// What a server speaks and its bounds.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name in log lines (`anvil client: ...`).
    pub name: &'static str,
    /// Protocol name of the hello.
    pub protocol: &'static str,
    /// Protocol version of the hello.
    pub version: u32,
    /// Largest request frame payload accepted.
    pub max_request: usize,
    /// Unsent reply bytes past which a client's requests are no longer read.
    pub max_output: usize,
    /// A client idle this long with nothing pending is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
}

/// A handler's answer to one request.
#[derive(Debug)]
pub enum Answer<R> {
    /// The reply, sent now.
    Reply(R),
    /// The reply comes later through [`Outbox::reply`].
    Deferred,
    /// The request is refused: the reason is logged and the client dropped.
    Refuse(String),
}

/// Replies given outside [`Handler::request`]'s return value, and the loop's waker.
pub struct Outbox<R> {
    replies: Vec<(ClientId, R)>,
    waker: Option<Arc<Waker>>,
}

impl<R> Outbox<R> {
    /// Sends `reply` to `client` as the answer to its deferred request (dropped if the
    /// client has gone).
    pub fn reply(&mut self, client: ClientId, reply: R) {
        self.replies.push((client, reply));
    }

    /// A waker that makes the loop call [`Handler::woken`] (for worker threads); `None`
    /// before the first client connected.
    pub fn waker(&self) -> Option<Arc<Waker>> {
        self.waker.clone()
    }
}

/// A daemon's side of the server.
pub trait Handler {
    /// One request.
    type Request: DeserializeOwned;
    /// One reply.
    type Reply: Serialize;
    /// A client connected (after the skeleton accepted it).
    fn connected(&mut self, _out: &mut Outbox<Self::Reply>, _client: ClientId) {}
    /// A request of `client`.
    fn request(&mut self, out: &mut Outbox<Self::Reply>, client: ClientId, req: Self::Request) -> Answer<Self::Reply>;
    /// `client` is gone (closed, dropped, or the process stops); a deferred reply for it
    /// will be dropped.
    fn disconnected(&mut self, _out: &mut Outbox<Self::Reply>, _client: ClientId) {}
    /// About every [`crate::skeleton::event::TICK`].
    fn tick(&mut self, _out: &mut Outbox<Self::Reply>, _now: Instant) {}
    /// The [`Outbox::waker`] fired.
    fn woken(&mut self, _out: &mut Outbox<Self::Reply>, _now: Instant) {}
}

struct Client {
    sock: UnixStream,
    dec: Decoder,
    out: Vec<u8>,
    greeted: bool,
    /// A deferred request awaits its reply.
    pending: bool,
    /// The peer closed its end.
    eof: bool,
    last: Instant,
}

/// The server: an [`EventService`] for [`crate::skeleton::event::event_server`].
pub struct Server<H: Handler> {
    config: Config,
    handler: H,
    clients: HashMap<ClientId, Client>,
    next: ClientId,
    outbox: Outbox<H::Reply>,
    stopping: bool,
}

impl<H: Handler> Server<H> {
    /// A server of `handler` with no clients yet.
    pub fn new(config: Config, handler: H) -> Self {
        Server {
            config,
            handler,
            clients: HashMap::new(),
            next: 0,
            outbox: Outbox {
                replies: Vec::new(),
                waker: None,
            },
            stopping: false,
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// The bytes held for `client`: request bytes in its decoder and unsent replies.
    pub fn buffered(&self, client: ClientId) -> Option<(usize, usize)> {
        self.clients.get(&client).map(|c| (c.dec.buffered(), c.out.len()))
    }

    /// Takes an accepted client socket (blocking or not); returns its id, or `None` when
    /// it could not be set up.
    pub fn add_client(&mut self, registry: &Registry, sock: std::os::unix::net::UnixStream) -> Option<ClientId> {
        if self.outbox.waker.is_none() {
            match Waker::new(registry, WAKER_TOKEN) {
                Ok(w) => self.outbox.waker = Some(Arc::new(w)),
                Err(e) => tracing::warn!("{}: cannot create waker: {e}", self.config.name),
            }
        }
        sock.set_nonblocking(true).ok()?;
        let mut sock = UnixStream::from_std(sock);
        let id = self.next_id();
        registry
            .register(&mut sock, Token(id), Interest::READABLE | Interest::WRITABLE)
            .ok()?;
        let mut out = Vec::new();
        Encoder::hello(self.config.protocol, self.config.version, &mut out).ok()?;
        self.clients.insert(
            id,
            Client {
                sock,
                dec: Decoder::with_limit(self.config.max_request),
                out,
                greeted: false,
                pending: false,
                eof: false,
                last: Instant::now(),
            },
        );
        self.handler.connected(&mut self.outbox, id);
        self.drive(registry, id);
        self.deliver(registry);
        Some(id)
    }

    /// Readiness of `token` (a client's or the waker's).
    pub fn on_ready(&mut self, registry: &Registry, token: Token) {
        if token == WAKER_TOKEN {
            self.handler.woken(&mut self.outbox, Instant::now());
        } else {
            self.drive(registry, token.0);
        }
        self.deliver(registry);
    }

    /// The periodic tick: the handler's timers, then idle clients.
    pub fn on_tick(&mut self, registry: &Registry, now: Instant) {
        self.handler.tick(&mut self.outbox, now);
        self.deliver(registry);
        if let Some(idle) = self.config.idle_timeout {
            let stale: Vec<ClientId> = self
                .clients
                .iter()
                .filter(|(_, c)| !c.pending && now.saturating_duration_since(c.last) > idle)
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                self.close(registry, id);
            }
        }
    }

    /// The process stops: clients with nothing pending or unsent are closed now, the
    /// others once they are done.
    pub fn on_stop(&mut self, registry: &Registry) {
        self.stopping = true;
        let done: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.pending && c.out.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.close(registry, id);
        }
    }

    fn next_id(&mut self) -> ClientId {
        loop {
            let id = self.next;
            self.next = (self.next + 1) % (RESERVED_TOKENS - 1);
            if !self.clients.contains_key(&id) {
                return id;
            }
        }
    }

    /// Sends the replies given through the outbox, then goes on with those clients.
    fn deliver(&mut self, registry: &Registry) {
        while !self.outbox.replies.is_empty() {
            let replies = std::mem::take(&mut self.outbox.replies);
            for (id, reply) in replies {
                let Some(c) = self.clients.get_mut(&id) else { continue };
                c.pending = false;
                if let Err(e) = Encoder::message(&reply, &mut c.out) {
                    tracing::warn!("{} reply: {e}", self.config.name);
                    self.close(registry, id);
                    continue;
                }
                self.drive(registry, id);
            }
        }
    }

    /// Writes what is pending, reads and answers what it may, writes again; closes the
    /// client when it is finished.
    fn drive(&mut self, registry: &Registry, id: ClientId) {
        let Some(mut c) = self.clients.remove(&id) else { return };
        let alive = self.drive_client(&mut c, id);
        self.clients.insert(id, c);
        if !alive {
            self.close(registry, id);
        }
    }

    fn drive_client(&mut self, c: &mut Client, id: ClientId) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if write_pending(&mut c.sock, &mut c.out).is_err() {
                return false;
            }
            // Frames left buffered while the output was full go first.
            if !c.pending && !self.frames(c, id) {
                return false;
            }
            let mut blocked = false;
            while !c.eof && c.out.len() < self.config.max_output && !(c.pending && c.dec.has_frame()) {
                let want = c.dec.wants().min(buf.len());
                let Some(slice) = buf.get_mut(..want) else { break };
                match c.sock.read(slice) {
                    Ok(0) => c.eof = true,
                    Ok(n) => {
                        c.last = Instant::now();
                        c.dec.push(slice.get(..n).unwrap_or_default());
                        slice.zeroize();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
                if !c.pending && !self.frames(c, id) {
                    return false;
                }
            }
            if !c.pending && !self.frames(c, id) {
                return false;
            }
            let before = c.out.len();
            if write_pending(&mut c.sock, &mut c.out).is_err() {
                return false;
            }
            // Room again after a write, with requests possibly unread: go on.
            let resumed = before >= self.config.max_output && c.out.len() < self.config.max_output;
            if blocked || c.eof || c.pending || !resumed {
                break;
            }
        }
        if c.eof {
            // A client that closed gets no late reply; answered ones are still flushed.
            return !c.pending && !c.out.is_empty();
        }
        !(self.stopping && !c.pending && c.out.is_empty())
    }

    /// Handles the complete frames buffered for `c` until one is deferred; false when the
    /// client must be dropped.
    fn frames(&mut self, c: &mut Client, id: ClientId) -> bool {
        while !c.pending && c.out.len() < self.config.max_output {
            let mut frame = match c.dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return true,
                Err(e) => {
                    tracing::warn!("{} client: {e}", self.config.name);
                    return false;
                }
            };
            if !c.greeted {
                if let Err(e) = frame.expect_hello(self.config.protocol, self.config.version) {
                    tracing::warn!("{} client: {e}", self.config.name);
                    return false;
                }
                c.greeted = true;
                continue;
            }
            let req = frame.message::<H::Request>();
            frame.payload.zeroize();
            let req = match req {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("{} client: {e}", self.config.name);
                    return false;
                }
            };
            match self.handler.request(&mut self.outbox, id, req) {
                Answer::Reply(r) => {
                    if let Err(e) = Encoder::message(&r, &mut c.out) {
                        tracing::warn!("{} reply: {e}", self.config.name);
                        return false;
                    }
                }
                Answer::Deferred => c.pending = true,
                Answer::Refuse(why) => {
                    tracing::warn!("{} client: {why}", self.config.name);
                    return false;
                }
            }
        }
        true
    }

    fn close(&mut self, registry: &Registry, id: ClientId) {
        if let Some(mut c) = self.clients.remove(&id) {
            let _ = registry.deregister(&mut c.sock);
            self.handler.disconnected(&mut self.outbox, id);
        }
    }
}

impl<H: Handler> EventService for Server<H> {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        match conn.stream {
            Stream::Unix(s) => {
                self.add_client(lp.registry(), s);
            }
            Stream::Tcp(_) => tracing::warn!("{}: TCP listener not supported; closed", self.config.name),
        }
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        self.on_ready(lp.registry(), event.token());
    }

    fn tick(&mut self, lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        self.on_tick(lp.registry(), now);
    }

    fn connections(&self) -> usize {
        self.clients.len()
    }

    fn stop(&mut self, lp: &EventLoop<'_>, _ctx: &Context) {
        self.on_stop(lp.registry());
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
