//! One connection driver for the network daemons: a sans-I/O [`Protocol`] core plus a
//! generic [`Connection`] that owns everything between it and the socket, and a [`Pool`]
//! that is the event-skeleton glue (one per process: tokens, fair turns, deadlines).
//!
//! What the driver owns, so that no daemon writes it again:
//! - the mio socket and the write loop (`OutBuf`: written from an offset, so a partial
//!   write of a large answer never moves the rest of it);
//! - TLS ([`crate::tls::TlsSession`]), implicit or started by the protocol
//!   ([`Io::start_tls`]): the reply before it is flushed in the clear and any plaintext the
//!   client pipelined after the command is **discarded** (the STARTTLS command-injection
//!   class, CVE-2011-0411);
//! - compression ([`Io::start_compress`], IMAP's COMPRESS=DEFLATE): raw deflate between
//!   the protocol and TLS (or the socket), output sync-flushed after each burst, input
//!   inflated only as far as [`Limits::input`] has room (no zip bomb held in memory);
//! - bounded input: the socket is not read while [`Limits::input`] bytes wait (plaintext,
//!   or ciphertext under TLS), nor while the protocol says it is [`blocked`]; input waits
//!   in a [`LineBuffer`] ([`Io::lines`], lines of at most [`Protocol::line_limit`] with
//!   raw takes for payloads), or is framed by [`Io::line`] up to a stated length;
//! - bounded output with back-pressure: the protocol is not called while more than
//!   [`Limits::output`] bytes wait to be sent, so a client that never reads makes the
//!   connection hold at most that plus one reply;
//! - hand-over ([`Io::hand_over`]): a [`Source`] (a message file being sent) fills the
//!   output as the client reads it, and the protocol is called again once it is done;
//! - deadlines ([`Deadlines`]): idle (from the last input the protocol used, paused while
//!   the protocol waits for an answer from elsewhere), a hard pre-authentication deadline
//!   from the connection's start that traffic does not extend ([`Io::authenticated`] ends
//!   it), an optional whole-session limit, and a deadline the protocol sets for a phase
//!   ([`Io::phase_deadline`]: SMTP's DATA); [`Protocol::timer`] for its own timers;
//! - write interest ([`Pool`]): a socket is registered for writability only while output
//!   waits for room, so the ACKs of a client that reads do not wake the process;
//! - side sockets: [`AUX`] tokens per connection for the protocol's own sockets (SMTP's
//!   cleanup and auth connections, [`Io::aux`]);
//! - lifecycle hooks: [`Protocol::secured`] once a TLS handshake is done (version and
//!   cipher from [`Io::tls`]), [`Protocol::may_stop`] to decline a stop while a
//!   transaction is in progress, [`Protocol::disconnected`] once the connection is gone;
//! - the service around the pool (postern-lib's `skeleton::conn::Gated`): the
//!   per-address gate before a session starts, the routing of events, a closed
//!   connection's count given back;
//! - the end of input (a client that sends its commands and shuts down its write side,
//!   `nc -q1`): the socket is not read again, but what is buffered is still handled and
//!   answered (within the usual bounds and deadlines); the connection closes once the
//!   protocol can do nothing more without input ([`Protocol::disconnected`], as for a
//!   client that went away — with a log line if it ended inside a command);
//! - fair turns: a connection gets [`ROUNDS_PER_TURN`] rounds of read–handle–write per
//!   event; with work left it goes behind the other connections (a waker requeue), at
//!   once when the protocol says it has work that needs no input ([`Protocol::more`]);
//! - notifications ([`Pool::notify`]): a change the daemon watches (IMAP's folder watch)
//!   reaches every connection's protocol ([`Protocol::notify`]), which may send at once;
//! - memory given back: a connection's buffers that grew for a burst (a large APPEND, a
//!   big answer) are freed once empty, so an idle connection holds little.
//!
//! [`blocked`]: Protocol::blocked

mod connection;
mod deflate;
pub mod memory;
mod outbuf;
mod pool;
#[cfg(test)]
mod tests;

pub use connection::{Connection, Turn};
pub use pool::{AUX, FIRST_FREE, Pool, write_interest};

/// Tokens at or above this value belong to the daemon skeleton's event loop (its signal,
/// status and listening sockets); a daemon and its [`Pool`] use those below.
pub const RESERVED_TOKENS: usize = usize::MAX - 1024;

use crate::line::LineBuffer;
use crate::tls::TlsSession;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rounds of reading, streaming, handling and writing one connection gets per turn.
pub const ROUNDS_PER_TURN: usize = 8;

/// The buffer bounds a protocol states (they may change, e.g. at login).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The socket is not read while this many input bytes wait.
    pub input: usize,
    /// The protocol (and a hand-over source) is not called while more than this many
    /// output bytes wait.
    pub output: usize,
}

/// A connection's deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Without input used for this long (and nothing awaited elsewhere): closed.
    pub idle: Duration,
    /// Not authenticated this long after connecting: closed, whatever the client sends.
    pub login: Option<Duration>,
    /// The whole connection at most this long.
    pub session: Option<Duration>,
}

/// Why the driver ends a connection; the protocol says its last words in
/// [`Protocol::ending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The pre-authentication deadline passed.
    Login,
    /// Idle too long.
    Idle,
    /// The whole-session limit passed.
    Session,
    /// The protocol's phase deadline ([`Io::phase_deadline`]) passed.
    Phase,
    /// The process is stopping.
    Shutdown,
}

/// One framed line from [`Io::line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// No complete line yet.
    Partial,
    /// A line without its LF or CRLF.
    Line(Vec<u8>),
    /// A line at least the stated length: the input is left as it is.
    TooLong,
}

/// Output produced as the client reads (a message file streamed in chunks).
pub trait Source {
    /// Appends the next part to `out`.
    fn fill(&mut self, out: &mut Vec<u8>) -> std::io::Result<()>;
    /// Whether everything has been appended.
    fn done(&self) -> bool;
}

/// A protocol core, sans-I/O: it reads input and writes output through [`Io`].
pub trait Protocol {
    /// The first output (the greeting); called once, before any input.
    fn greeting(&mut self, io: &mut Io<'_>);
    /// Uses buffered input (one command, say): returns false when nothing could be done
    /// now (no complete command, or the protocol waits for something else). Called again
    /// while it returns true, output is under [`Limits::output`], nothing is being handed
    /// over and the connection is not closing.
    fn handle(&mut self, io: &mut Io<'_>) -> bool;
    /// The current bounds.
    fn limits(&self) -> Limits;
    /// Whether an answer from elsewhere (an auth server) is awaited: the idle deadline
    /// does not run meanwhile.
    fn waiting(&self) -> bool {
        false
    }
    /// The driver closes the connection: the protocol's last words (sent if they can be
    /// at once) and log line.
    fn ending(&mut self, _why: Ending, _io: &mut Io<'_>) {}
    /// A hand-over source failed half way (nothing can be answered: the connection closes).
    fn source_failed(&mut self, _e: &std::io::Error) {}
    /// The longest line [`Io::lines`] frames (asked once, when the connection is made).
    fn line_limit(&self) -> usize {
        crate::line::MAX_LINE_LIMIT
    }
    /// Whether the protocol can take nothing now (its own side socket is full): the
    /// socket is not read and [`handle`](Self::handle) not called; the daemon drives the
    /// connection again when that changes.
    fn blocked(&self) -> bool {
        false
    }
    /// A TLS handshake has completed ([`Io::tls`] names version and cipher); called once
    /// per handshake, before any input that came with it is handled.
    fn secured(&mut self, _io: &mut Io<'_>) {}
    /// The process is stopping: whether this connection may be ended now (with
    /// [`Ending::Shutdown`]); one that declines goes on until it closes by itself.
    fn may_stop(&self) -> bool {
        true
    }
    /// Called for every connection on each of the process's ticks, for the protocol's
    /// own timers; returns whether the connection should be driven.
    fn timer(&mut self, _now: Instant, _io: &mut Io<'_>) -> bool {
        false
    }
    /// Something the daemon watches for its connections has changed (IMAP: a folder, from
    /// its inotify watch): the protocol may tell its client at once (untagged data during
    /// IDLE); returns whether the connection should be driven ([`Pool::notify`]).
    fn notify(&mut self, _io: &mut Io<'_>) -> bool {
        false
    }
    /// Whether work is left that needs no input (a command half done, pipelined commands
    /// held back): after a round that leaves it, the connection's turn ends and it goes on
    /// after the other connections (once its output is under [`Limits::output`]), so one
    /// client's long command delays the others by about one [`handle`](Self::handle) call.
    fn more(&self) -> bool {
        false
    }
    /// The connection has been removed (whatever the reason): release what the protocol
    /// holds, its side sockets first (`registry` to deregister them).
    fn disconnected(&mut self, _registry: &mio::Registry) {}
}

/// The connection state the protocol acts on (everything but the socket).
pub(crate) struct Link {
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) tls: Option<TlsSession>,
    /// Whether [`Protocol::secured`] has been called for the TLS session.
    pub(crate) secured: bool,
    /// Ciphertext read, not yet decrypted.
    pub(crate) raw: Vec<u8>,
    /// Decrypted, on its way into `input`.
    pub(crate) plain: Vec<u8>,
    pub(crate) input: LineBuffer,
    pub(crate) out: outbuf::OutBuf,
    pub(crate) source: Option<Box<dyn Source>>,
    pub(crate) closing: bool,
    pub(crate) dead: bool,
    pub(crate) authenticated: bool,
    pub(crate) last: Instant,
    pub(crate) phase: Option<Instant>,
    pub(crate) aux: mio::Token,
    /// Compression, once started.
    pub(crate) deflate: Option<Box<deflate::Deflate>>,
}

impl Link {
    /// The client's address, for log lines.
    pub(crate) fn from(&self) -> String {
        self.peer.map(|p| p.ip().to_string()).unwrap_or_default()
    }

    fn send(&mut self, bytes: &[u8]) {
        let compressed;
        let bytes = match &mut self.deflate {
            Some(_) if bytes.is_empty() => return,
            Some(d) => {
                let mut z = Vec::new();
                if let Err(e) = d.compress(bytes, &mut z) {
                    tracing::warn!("{}: compression failed: {e}", self.from());
                    self.dead = true;
                }
                compressed = z;
                &compressed[..]
            }
            None => bytes,
        };
        match &mut self.tls {
            Some(tls) => {
                if tls.send(bytes).is_err() {
                    self.dead = true;
                }
                tls.transmit(self.out.tail());
            }
            None => self.out.tail().extend_from_slice(bytes),
        }
    }
}

/// What a protocol can do to its connection.
pub struct Io<'a> {
    pub(crate) link: &'a mut Link,
    pub(crate) registry: &'a mio::Registry,
    pub(crate) sock: &'a mut dyn std::io::Write,
}

impl Io<'_> {
    /// The input received and not yet used (plaintext), framed in lines of at most
    /// [`Protocol::line_limit`]; a protocol may also take raw bytes from it (a payload).
    /// Call [`touch`](Self::touch) for input used.
    pub fn lines(&mut self) -> &mut LineBuffer {
        &mut self.link.input
    }

    /// Takes one line ending in LF (a CR before it is dropped too). Too long: a line of
    /// `max` bytes or more without its ending, or `max` bytes buffered without an LF (a
    /// too-long line is taken from the input).
    pub fn line(&mut self, max: usize) -> Line {
        let input = &mut self.link.input;
        let Some(pos) = memchr::memchr(b'\n', input.pending()) else {
            return if input.pending_len() >= max {
                Line::TooLong
            } else {
                Line::Partial
            };
        };
        let mut line = input.take_up_to(pos + 1);
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() >= max {
            return Line::TooLong;
        }
        self.link.last = Instant::now();
        Line::Line(line)
    }

    /// The protocol used input it took from [`lines`](Self::lines) itself: the idle
    /// deadline starts again ([`line`](Self::line) does this for a line).
    pub fn touch(&mut self) {
        self.link.last = Instant::now();
    }

    /// Queues bytes to send (encrypted under TLS).
    pub fn send(&mut self, bytes: &[u8]) {
        self.link.send(bytes);
    }

    /// Bytes queued and not yet sent.
    pub fn pending_output(&self) -> usize {
        self.link.out.len()
    }

    /// Starts TLS: what is queued goes out in the clear first, and input the client
    /// pipelined after the command is discarded (CVE-2011-0411). An error closes.
    pub fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> bool {
        match TlsSession::new(config) {
            Ok(t) => {
                let stale = self.link.input.take_pending().len() + self.link.raw.len();
                if stale > 0 {
                    let from = self.link.peer.map(|p| p.ip().to_string()).unwrap_or_default();
                    tracing::warn!("{from}: {stale} bytes pipelined after STARTTLS discarded");
                }
                self.link.raw.clear();
                self.link.secured = false;
                if self.link.out.write_to(self.sock).is_err() {
                    self.link.dead = true;
                }
                self.link.tls = Some(t);
                true
            }
            Err(_) => {
                self.link.dead = true;
                false
            }
        }
    }

    /// Starts compression (raw deflate both ways, RFC 4978): what is queued goes out as
    /// it is, everything sent from now on is compressed, and input not yet used is taken
    /// as compressed (the client compresses everything after the command).
    pub fn start_compress(&mut self) {
        let mut d = Box::new(deflate::Deflate::new());
        d.pending = self.link.input.take_pending();
        self.link.deflate = Some(d);
    }

    /// Whether compression is active.
    pub fn compressed(&self) -> bool {
        self.link.deflate.is_some()
    }

    /// Whether TLS is active.
    pub fn tls_active(&self) -> bool {
        self.link.tls.is_some()
    }

    /// The TLS session, for its [`version`](TlsSession::version) and
    /// [`cipher`](TlsSession::cipher).
    pub fn tls(&self) -> Option<&TlsSession> {
        self.link.tls.as_ref()
    }

    /// Sets (from now) or clears the deadline of a phase of the protocol; when it passes
    /// (and nothing is [`waiting`](Protocol::waiting)) the connection ends with
    /// [`Ending::Phase`], however busy the client is.
    pub fn phase_deadline(&mut self, after: Option<std::time::Duration>) {
        self.link.phase = after.map(|d| Instant::now() + d);
    }

    /// Closes once the output is sent (a TLS close_notify after it).
    pub fn close(&mut self) {
        let link = &mut *self.link;
        if let Some(tls) = &mut link.tls {
            tls.close();
            tls.transmit(link.out.tail());
        }
        link.closing = true;
    }

    /// Closes at once (output not yet sent is lost).
    pub fn abort(&mut self) {
        self.link.dead = true;
    }

    /// Sends `source` after what is queued, as the client reads it; the protocol is not
    /// called until it is done.
    pub fn hand_over(&mut self, source: Box<dyn Source>) {
        self.link.source = Some(source);
    }

    /// The client has authenticated: the pre-authentication deadline no longer applies.
    pub fn authenticated(&mut self) {
        self.link.authenticated = true;
    }

    /// The registry and this connection's first auxiliary token, for one socket of the
    /// protocol's own (an auth request); [`Pool::aux_id`] tells the daemon whose its
    /// events are.
    pub fn aux(&self) -> (&mio::Registry, mio::Token) {
        self.aux_nth(0)
    }

    /// The registry and this connection's auxiliary token `k` (below [`AUX`]), for more
    /// than one socket of the protocol's own; [`Pool::aux_slot`] maps its events back.
    pub fn aux_nth(&self, k: usize) -> (&mio::Registry, mio::Token) {
        debug_assert!(k < AUX);
        (self.registry, mio::Token(self.link.aux.0 + k.min(AUX - 1)))
    }
}
