//! The event-loop side of qmgr: trigger connections on `public/qmgr` (one byte each, or
//! one per message on a connection cleanup keeps open), the
//! waker through which job threads report, and the periodic tick.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use mio::{Interest, Token};
use postern_lib::skeleton::event::{EventLoop, EventService, RESERVED_TOKENS};
use postern_lib::skeleton::{Accepted, Context, Stream};

use crate::agent::JobDone;
use crate::schedule::Qmgr;
use crate::settings::Settings;

const WAKER: Token = Token(RESERVED_TOKENS - 1);
/// Most trigger connections held at once (the rest wait in the listen backlog).
const MAX_TRIGGERS: usize = 64;
/// Most reads of one trigger connection per readiness event (a writer that never stops
/// does not hold the loop).
const MAX_TRIGGER_READS: usize = 16;

/// qmgr as an event-loop service.
pub struct Service {
    qmgr: Qmgr,
    triggers: HashMap<usize, mio::net::UnixStream>,
    next: usize,
    done_tx: Sender<JobDone>,
    done_rx: Receiver<JobDone>,
    waker: Option<Arc<mio::Waker>>,
    stopping: bool,
}

impl Service {
    /// A new service.
    pub fn new(s: Settings) -> Service {
        let (done_tx, done_rx) = channel();
        Service {
            qmgr: Qmgr::new(s),
            triggers: HashMap::new(),
            next: 0,
            done_tx,
            done_rx,
            waker: None,
            stopping: false,
        }
    }

    fn pump(&mut self, lp: &EventLoop<'_>) {
        if self.waker.is_none() {
            match mio::Waker::new(lp.registry(), WAKER) {
                Ok(w) => self.waker = Some(Arc::new(w)),
                Err(e) => {
                    tracing::error!("cannot create the event loop waker: {e}");
                    return;
                }
            }
        }
        while let Ok((id, result)) = self.done_rx.try_recv() {
            self.qmgr.job_done(id, result);
        }
        if self.stopping {
            return;
        }
        if let Some(w) = &self.waker {
            self.qmgr.pump(&self.done_tx, w);
        }
    }

    /// Reads trigger bytes; false when the connection is finished.
    fn read_trigger(&mut self, id: usize) -> bool {
        let Some(sock) = self.triggers.get_mut(&id) else {
            return false;
        };
        let mut buf = [0u8; 256];
        for _ in 0..MAX_TRIGGER_READS {
            match sock.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    // The same byte many times (cleanup's `A` per message) is one trigger.
                    let mut seen = [false; 256];
                    for &b in buf.iter().take(n) {
                        if let Some(s) = seen.get_mut(usize::from(b))
                            && !*s
                        {
                            *s = true;
                            self.qmgr.trigger(b);
                        }
                    }
                    // One byte per connection from most writers (as Postfix's triggers);
                    // cleanup keeps its connection open and writes one per message: read
                    // on until the socket is empty (edge-triggered) or closed.
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        // A writer that never stops: what is left unread was written before this scan's
        // wakeup, and new bytes raise a new event.
        self.qmgr.trigger(postern_lib::proto::trigger::WAKEUP);
        true
    }

    fn close(&mut self, lp: &EventLoop<'_>, id: usize) {
        if let Some(mut s) = self.triggers.remove(&id) {
            let _ = lp.registry().deregister(&mut s);
        }
    }
}

impl EventService for Service {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        let Stream::Unix(s) = conn.stream else { return };
        if self.triggers.len() < MAX_TRIGGERS && s.set_nonblocking(true).is_ok() {
            let mut sock = mio::net::UnixStream::from_std(s);
            let id = self.next;
            self.next = (self.next + 1) % (RESERVED_TOKENS - 2);
            if lp.registry().register(&mut sock, Token(id), Interest::READABLE).is_ok() {
                self.triggers.insert(id, sock);
                if !self.read_trigger(id) {
                    self.close(lp, id);
                }
            }
        } else {
            // Too many at once: a connection is a wakeup in itself.
            self.qmgr.trigger(postern_lib::proto::trigger::WAKEUP);
        }
        self.pump(lp);
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        let t = event.token();
        if t != WAKER && !self.read_trigger(t.0) {
            self.close(lp, t.0);
        }
        self.pump(lp);
    }

    fn tick(&mut self, lp: &EventLoop<'_>, _ctx: &Context, _now: std::time::Instant) {
        if !self.stopping {
            self.qmgr.tick();
        }
        self.pump(lp);
    }

    fn connections(&self) -> usize {
        self.triggers.len() + self.qmgr.in_flight()
    }

    fn stop(&mut self, lp: &EventLoop<'_>, _ctx: &Context) {
        self.stopping = true;
        let ids: Vec<usize> = self.triggers.keys().copied().collect();
        for id in ids {
            self.close(lp, id);
        }
    }
}
