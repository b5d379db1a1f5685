//! A daemon's side of the [`anvil`](crate::proto::anvil) protocol: one connection per
//! process to the anvil daemon, which counts connections per client address over all
//! processes of a service. Used by smtpd, imapd and pop3d. Non-blocking: a question is
//! queued and answered later from the event loop (the socket is registered under the
//! token given to [`AnvilClient::with_token`], [`TOKEN`] by default); requests are
//! pipelined and the replies come in order, so a queue of what each reply answers is all
//! the state needed.
//!
//! When anvil cannot be reached, does not answer within [`TIMEOUT`] or closes the
//! connection (it died), the questions in flight come back as *orphaned* for the caller to
//! count in-process ([`super::local`]), one warning is logged for the outage, and a new
//! connection is tried for the next client after a pause. Counts anvil held for a closed
//! connection are gone on its side too, so connections counted under an older
//! [generation](AnvilClient::generation) are never disconnected.

use crate::ipc::codec::{Decoder, Encoder, write_pending};
use crate::proto::anvil::{AnvilReply, AnvilRequest, PROTOCOL, SOCKET, VERSION};
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why the connection ended when anvil closed it.
const CLOSED: &str = "connection closed";
/// The default event-loop token of the anvil connection (smtpd's; daemons whose tokens
/// could collide with it choose another with [`AnvilClient::with_token`]).
pub const TOKEN: Token = Token(3);
/// Longest wait for a reply before anvil is given up on.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before a new connection after anvil could not be reached or did not answer.
const RETRY: Duration = Duration::from_secs(10);
/// Pause before a new connection after anvil closed ours (it died; master restarts it).
const RECONNECT: Duration = Duration::from_secs(1);
/// Most reply bytes held undecoded (a reply is a few dozen bytes).
const READ_SIZE: usize = 4096;

/// What anvil said about a new client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Open connections and connections in the rate window, this one included.
    Counts {
        /// Open now.
        count: u32,
        /// In the window.
        rate: u32,
    },
    /// Not counted (anvil's table is full).
    Untracked,
}

/// The socket to anvil with its buffers.
#[derive(Debug)]
struct Peer {
    sock: UnixStream,
    out: Vec<u8>,
    decoder: Decoder,
    hello_seen: bool,
    reply_due: Option<Instant>,
    write_interest: bool,
}

/// The connection to anvil and the questions in flight.
#[derive(Debug)]
pub struct AnvilClient {
    service: String,
    token: Token,
    peer: Option<Peer>,
    generation: u64,
    /// Per reply expected: the caller's key for a `Connect`, `None` for a `Disconnect`.
    waiting: VecDeque<Option<u64>>,
    retry_after: Option<Instant>,
    down_logged: bool,
    answered: Vec<(u64, Answer)>,
    orphaned: Vec<u64>,
}

impl AnvilClient {
    /// A client for `service` (`smtp/inet`: clients are counted per service), not yet
    /// connected, on [`TOKEN`].
    pub fn new(service: &str) -> AnvilClient {
        AnvilClient::with_token(service, TOKEN)
    }

    /// The same on another event-loop token.
    pub fn with_token(service: &str, token: Token) -> AnvilClient {
        AnvilClient {
            service: service.to_string(),
            token,
            peer: None,
            generation: 0,
            waiting: VecDeque::new(),
            retry_after: None,
            down_logged: false,
            answered: Vec::new(),
            orphaned: Vec::new(),
        }
    }

    /// The token its socket is registered under.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Which connection to anvil counts made now belong to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Asks about a new connection from `ip`, answered later under `key`. False when anvil
    /// cannot be asked now (count the connection in-process).
    pub fn ask(&mut self, registry: &Registry, key: u64, ip: IpAddr, now: Instant) -> bool {
        if self.peer.is_none() {
            if self.retry_after.is_some_and(|t| now < t) {
                return false;
            }
            if let Err(e) = self.connect(registry) {
                self.fail(registry, &e, RETRY, now);
                return false;
            }
        }
        let req = AnvilRequest::Connect {
            service: self.service.clone(),
            client: ip.to_string(),
        };
        if !self.send(registry, &req, Some(key), now) {
            return false;
        }
        self.pump(registry, now);
        // A failed write hands the question back as orphaned: the caller counts it.
        true
    }

    fn connect(&mut self, registry: &Registry) -> Result<(), String> {
        let path = Path::new(SOCKET);
        let mut sock = UnixStream::connect(path).map_err(|e| format!("connect to {}: {e}", path.display()))?;
        let mut out = Vec::new();
        Encoder::hello(PROTOCOL, VERSION, &mut out).map_err(|e| e.to_string())?;
        registry
            .register(&mut sock, self.token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("register: {e}"))?;
        self.peer = Some(Peer {
            sock,
            out,
            decoder: Decoder::new(),
            hello_seen: false,
            reply_due: None,
            write_interest: true,
        });
        Ok(())
    }

    /// A connection counted under `generation` ended: tell anvil (if that connection to
    /// anvil still stands; otherwise anvil has already forgotten it).
    pub fn release(&mut self, registry: &Registry, generation: u64, ip: IpAddr, now: Instant) {
        if generation != self.generation || self.peer.is_none() {
            return;
        }
        let req = AnvilRequest::Disconnect {
            service: self.service.clone(),
            client: ip.to_string(),
        };
        if self.send(registry, &req, None, now) {
            self.pump(registry, now);
        }
    }

    fn send(&mut self, registry: &Registry, req: &AnvilRequest, key: Option<u64>, now: Instant) -> bool {
        let Some(p) = self.peer.as_mut() else { return false };
        if let Err(e) = Encoder::message(req, &mut p.out) {
            self.fail(registry, &e.to_string(), RETRY, now);
            return false;
        }
        if p.reply_due.is_none() {
            p.reply_due = Some(now + TIMEOUT);
        }
        self.waiting.push_back(key);
        true
    }

    /// A readiness event for the client's token.
    pub fn ready(&mut self, registry: &Registry, _event: &mio::event::Event, now: Instant) {
        self.pump(registry, now);
    }

    /// Gives up on an anvil that does not answer.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        if let Some(p) = &self.peer
            && p.reply_due.is_some_and(|t| now >= t)
        {
            self.fail(registry, "no reply", RETRY, now);
        }
    }

    /// Answers and orphaned questions since the last call.
    pub fn take(&mut self) -> (Vec<(u64, Answer)>, Vec<u64>) {
        (std::mem::take(&mut self.answered), std::mem::take(&mut self.orphaned))
    }

    /// Writes what waits, reads what arrived (the socket is edge-triggered: to the end),
    /// files the replies.
    fn pump(&mut self, registry: &Registry, now: Instant) {
        let Some(p) = self.peer.as_mut() else { return };
        if let Err(e) = write_pending(&mut p.sock, &mut p.out) {
            return self.fail(registry, &format!("write: {e}"), RECONNECT, now);
        }
        let mut replies = Vec::new();
        let mut failed = None;
        let mut buf = [0u8; READ_SIZE];
        loop {
            match p.sock.read(&mut buf) {
                Ok(0) => {
                    failed = Some(CLOSED.to_string());
                    break;
                }
                Ok(n) => {
                    let mut bytes = buf.get(..n).unwrap_or_default();
                    while !bytes.is_empty() && failed.is_none() {
                        let (now_part, rest) = bytes.split_at(p.decoder.wants().min(bytes.len()));
                        bytes = rest;
                        p.decoder.push(now_part);
                        loop {
                            match p.decoder.next_frame() {
                                Ok(Some(f)) if p.hello_seen => match f.message::<AnvilReply>() {
                                    Ok(r) => replies.push(r),
                                    Err(e) => failed = Some(e.to_string()),
                                },
                                Ok(Some(f)) => match f.expect_hello(PROTOCOL, VERSION) {
                                    Ok(()) => p.hello_seen = true,
                                    Err(e) => failed = Some(e.to_string()),
                                },
                                Ok(None) => break,
                                Err(e) => failed = Some(e.to_string()),
                            }
                            if failed.is_some() {
                                break;
                            }
                        }
                    }
                    if failed.is_some() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(format!("read: {e}"));
                    break;
                }
            }
        }
        let got = !replies.is_empty();
        for reply in replies {
            let answer = match reply {
                AnvilReply::Counts { count, rate } => Some(Answer::Counts { count, rate }),
                AnvilReply::Untracked => Some(Answer::Untracked),
                AnvilReply::Ok => None,
            };
            match (self.waiting.pop_front(), answer) {
                (Some(Some(key)), Some(a)) => self.answered.push((key, a)),
                (Some(None), None) => {}
                _ => return self.fail(registry, "reply out of order", RETRY, now),
            }
            if self.down_logged {
                tracing::info!(
                    "anvil answers again: limits of {} are counted over all its processes",
                    self.service
                );
                self.down_logged = false;
            }
        }
        if let Some(why) = failed {
            return self.fail(registry, &why, RECONNECT, now);
        }
        let waiting = !self.waiting.is_empty();
        let token = self.token;
        let Some(p) = self.peer.as_mut() else { return };
        if got {
            p.reply_due = waiting.then_some(now + TIMEOUT);
        }
        let want = !p.out.is_empty();
        if want != p.write_interest {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry.reregister(&mut p.sock, token, interest).is_ok() {
                p.write_interest = want;
            }
        }
    }

    /// Drops the connection; questions in flight become orphaned.
    fn fail(&mut self, registry: &Registry, why: &str, pause: Duration, now: Instant) {
        if let Some(mut p) = self.peer.take() {
            let _ = registry.deregister(&mut p.sock);
            self.generation += 1;
        }
        self.orphaned.extend(self.waiting.drain(..).flatten());
        self.retry_after = Some(now + pause);
        if !self.down_logged {
            let why = crate::log::plain_error(&why);
            // anvil closing the connection is what a stop, reload or max_idle does (a crash
            // is master's to report): no warning for that.
            if why == CLOSED {
                tracing::info!(
                    "anvil: {why}: counting connection limits of {} in this process only",
                    self.service
                );
            } else {
                tracing::warn!(
                    "anvil: {why}: counting connection limits of {} in this process only",
                    self.service
                );
            }
            self.down_logged = true;
        }
    }
}
