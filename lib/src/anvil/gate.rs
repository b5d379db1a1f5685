//! The admission gate of a daemon that limits connections per client address: a new
//! connection waits (unanswered) while anvil counts it over all processes of the service
//! ([`super::client`]); when anvil is away the in-process counter ([`super::local`])
//! decides. Each admitted connection carries a [`Ticket`] that gives its count back when
//! released — at the end of the connection, or earlier when what is limited ends (imapd
//! and pop3d limit connections not yet logged in and release at login).

use super::client::{Answer, AnvilClient};
use super::local::{Anvil, Refusal};
use mio::{Registry, Token};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// How a connection was counted, so that its end is counted the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// Not counted (no limits, or anvil's table was full).
    No,
    /// By the in-process counter.
    Local,
    /// By anvil, over the connection of this generation.
    Anvil(u64),
}

/// An admitted connection's count, to give back once with [`Gate::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    ip: IpAddr,
    counted: Counted,
}

/// What became of a connection.
#[derive(Debug)]
pub enum Decision<T> {
    /// Serve it.
    Admit(T, Ticket),
    /// Refuse it (reply and close).
    Refuse(T, IpAddr, Refusal),
}

/// Connections waiting for anvil, and the counters.
#[derive(Debug)]
pub struct Gate<T> {
    client: AnvilClient,
    local: Anvil,
    pending: HashMap<u64, (T, IpAddr)>,
    next: u64,
    count_limit: u32,
    rate_limit: u32,
}

impl<T> Gate<T> {
    /// A gate for `service` (`imap/inet`) with its anvil connection on `token`; limits of
    /// 0 mean none (then every connection is admitted at once, uncounted).
    pub fn new(service: &str, token: Token, count_limit: u32, rate_limit: u32) -> Gate<T> {
        Gate {
            client: AnvilClient::with_token(service, token),
            local: Anvil::default(),
            pending: HashMap::new(),
            next: 0,
            count_limit,
            rate_limit,
        }
    }

    /// Whether `token` is the anvil connection's.
    pub fn owns(&self, token: Token) -> bool {
        token == self.client.token()
    }

    /// Connections waiting for anvil's answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Drops the waiting connections (the process is stopping).
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// A new connection from `ip`: decided at once when there is no limit or anvil is
    /// away, else when anvil answers (from [`Gate::ready`] or [`Gate::tick`]).
    pub fn arrive(&mut self, registry: &Registry, item: T, ip: IpAddr, now: Instant) -> Vec<Decision<T>> {
        if self.count_limit == 0 && self.rate_limit == 0 {
            return vec![Decision::Admit(
                item,
                Ticket {
                    ip,
                    counted: Counted::No,
                },
            )];
        }
        let key = self.next;
        self.next = self.next.wrapping_add(1);
        self.pending.insert(key, (item, ip));
        let mut out = Vec::new();
        if !self.client.ask(registry, key, ip, now) {
            self.count_locally(key, now, &mut out);
        }
        self.drain(registry, now, &mut out);
        out
    }

    /// A readiness event on the anvil connection.
    pub fn ready(&mut self, registry: &Registry, event: &mio::event::Event, now: Instant) -> Vec<Decision<T>> {
        self.client.ready(registry, event, now);
        let mut out = Vec::new();
        self.drain(registry, now, &mut out);
        out
    }

    /// Timeouts: an anvil that does not answer is given up on (its questions are counted
    /// in-process); old in-process entries are forgotten.
    pub fn tick(&mut self, registry: &Registry, now: Instant) -> Vec<Decision<T>> {
        self.local.expire(now);
        self.client.tick(registry, now);
        let mut out = Vec::new();
        self.drain(registry, now, &mut out);
        out
    }

    /// Gives an admitted connection's count back.
    pub fn release(&mut self, registry: &Registry, ticket: Ticket, now: Instant) {
        match ticket.counted {
            Counted::No => {}
            Counted::Local => self.local.disconnect(ticket.ip, now),
            Counted::Anvil(generation) => self.client.release(registry, generation, ticket.ip, now),
        }
    }

    fn count_locally(&mut self, key: u64, now: Instant, out: &mut Vec<Decision<T>>) {
        let Some((item, ip)) = self.pending.remove(&key) else {
            return;
        };
        match self.local.connect(ip, self.count_limit, self.rate_limit, now) {
            Ok(()) => out.push(Decision::Admit(
                item,
                Ticket {
                    ip,
                    counted: Counted::Local,
                },
            )),
            Err(why) => out.push(Decision::Refuse(item, ip, why)),
        }
    }

    /// Acts on anvil's answers, and counts locally the questions anvil can no longer answer.
    fn drain(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Decision<T>>) {
        // Bounded: each round may queue a disconnect whose pump brings more answers;
        // what is left waits for the next event or tick.
        for _ in 0..64 {
            let (answered, orphaned) = self.client.take();
            if answered.is_empty() && orphaned.is_empty() {
                break;
            }
            for (key, answer) in answered {
                let Some((item, ip)) = self.pending.remove(&key) else {
                    continue;
                };
                let (count, rate) = match answer {
                    Answer::Untracked => {
                        out.push(Decision::Admit(
                            item,
                            Ticket {
                                ip,
                                counted: Counted::No,
                            },
                        ));
                        continue;
                    }
                    Answer::Counts { count, rate } => (count, rate),
                };
                let generation = self.client.generation();
                match Refusal::judge(count, rate, self.count_limit, self.rate_limit) {
                    Some(why) => {
                        // anvil counted it: give the open count back (the rate keeps it).
                        self.client.release(registry, generation, ip, now);
                        out.push(Decision::Refuse(item, ip, why));
                    }
                    None => out.push(Decision::Admit(
                        item,
                        Ticket {
                            ip,
                            counted: Counted::Anvil(generation),
                        },
                    )),
                }
            }
            for key in orphaned {
                self.count_locally(key, now, out);
            }
        }
    }
}

/// Refuses a new connection of an event daemon over a per-address limit: logs
/// `WHY not logged in from ADDR (limit N): connection refused` and writes `reply` (one
/// line, CRLF added); the connection closes when `conn` is dropped.
pub fn refuse_login_client(conn: crate::skeleton::Accepted, ip: IpAddr, why: Refusal, limit: u32, reply: &str) {
    tracing::warn!(
        "{} not logged in from {ip} (limit {limit}): connection refused",
        why.text()
    );
    if let crate::skeleton::Stream::Tcp(mut sock) = conn.stream {
        // A new socket's send buffer is empty: one short write never blocks.
        let _ = sock.set_nonblocking(true);
        let _ = std::io::Write::write(&mut sock, format!("{reply}\r\n").as_bytes());
    }
}
