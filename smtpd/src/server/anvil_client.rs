//! smtpd's side of the [`anvil`](postern_lib::proto::anvil) protocol: one connection per
//! smtpd process to the anvil daemon, which counts connections per client address over
//! all smtpd processes. Non-blocking: a question is queued and answered later from the
//! event loop (registered with [`TOKEN`]); requests are pipelined and the replies come in
//! order, so a queue of what each reply answers is all the state needed.
//!
//! When anvil cannot be reached, does not answer within [`TIMEOUT`] or closes the
//! connection (it died), the questions in flight come back as *orphaned* for the caller to
//! count in-process ([`super::anvil`]), one warning is logged for the outage, and a new
//! connection is tried for the next client after a pause. Counts anvil held for a closed
//! connection are gone on its side too, so connections counted under an older
//! [generation](AnvilClient::generation) are never disconnected.

use super::peer::PeerConn;
use mio::{Interest, Registry, Token};
use postern_lib::proto::anvil::{AnvilReply, AnvilRequest, PROTOCOL, SOCKET, VERSION};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The event-loop token of the anvil connection (client connections use `4*id + 0..=2`).
pub const TOKEN: Token = Token(3);
/// Longest wait for a reply before anvil is given up on.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before a new connection after anvil could not be reached or did not answer.
const RETRY: Duration = Duration::from_secs(10);
/// Pause before a new connection after anvil closed ours (it died; master restarts it).
const RECONNECT: Duration = Duration::from_secs(1);

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

/// The connection to anvil and the questions in flight.
#[derive(Debug)]
pub struct AnvilClient {
    service: String,
    peer: Option<PeerConn>,
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
    /// connected.
    pub fn new(service: &str) -> AnvilClient {
        AnvilClient {
            service: service.to_string(),
            peer: None,
            generation: 0,
            waiting: VecDeque::new(),
            retry_after: None,
            down_logged: false,
            answered: Vec::new(),
            orphaned: Vec::new(),
        }
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
            match PeerConn::connect(Path::new(SOCKET), PROTOCOL, VERSION) {
                Ok(mut p) => {
                    p.write_interest = true;
                    p.registered = registry
                        .register(&mut p.sock, TOKEN, Interest::READABLE | Interest::WRITABLE)
                        .is_ok();
                    if !p.registered {
                        self.fail(registry, "cannot register the socket", RETRY, now);
                        return false;
                    }
                    self.peer = Some(p);
                }
                Err(e) => {
                    self.fail(registry, &e, RETRY, now);
                    return false;
                }
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
        if let Err(e) = p.send(req) {
            self.fail(registry, &e.to_string(), RETRY, now);
            return false;
        }
        if p.reply_due.is_none() {
            p.reply_due = Some(now + TIMEOUT);
        }
        self.waiting.push_back(key);
        true
    }

    /// A readiness event for [`TOKEN`].
    pub fn ready(&mut self, registry: &Registry, event: &mio::event::Event, now: Instant) {
        if let Some(p) = self.peer.as_mut() {
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                p.readable = true;
                p.hup |= event.is_read_closed() || event.is_error();
            }
            self.pump(registry, now);
        }
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

    /// Writes what waits, reads what arrived, files the replies.
    fn pump(&mut self, registry: &Registry, now: Instant) {
        let Some(p) = self.peer.as_mut() else { return };
        let pumped = p.pump();
        for f in &pumped.frames {
            let reply: AnvilReply = match f.message() {
                Ok(r) => r,
                Err(e) => return self.fail(registry, &e.to_string(), RETRY, now),
            };
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
                tracing::info!("anvil answers again: connection limits are counted over all smtpd processes");
                self.down_logged = false;
            }
        }
        if let Some(why) = pumped.failed {
            return self.fail(registry, &why, RECONNECT, now);
        }
        let waiting = !self.waiting.is_empty();
        let Some(p) = self.peer.as_mut() else { return };
        if !pumped.frames.is_empty() {
            p.reply_due = waiting.then_some(now + TIMEOUT);
        }
        let want = !p.out.is_empty();
        if want != p.write_interest {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry.reregister(&mut p.sock, TOKEN, interest).is_ok() {
                p.write_interest = want;
            }
        }
    }

    /// Drops the connection; questions in flight become orphaned.
    fn fail(&mut self, registry: &Registry, why: &str, pause: Duration, now: Instant) {
        if let Some(mut p) = self.peer.take() {
            if p.registered {
                let _ = registry.deregister(&mut p.sock);
            }
            self.generation += 1;
        }
        self.orphaned.extend(self.waiting.drain(..).flatten());
        self.retry_after = Some(now + pause);
        if !self.down_logged {
            tracing::warn!("anvil: {why}: counting connection limits in this smtpd process only");
            self.down_logged = true;
        }
    }
}
