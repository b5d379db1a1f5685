//! The POP3 session on lib's connection driver ([`postern_lib::skeleton::conn`]): framing
//! of command lines, the actions of [`Session`] applied to the connection, the auth round
//! trip started on the driver's auxiliary token, and the last words of a connection the
//! driver ends. Sockets, TLS, buffers, back-pressure, streaming and deadlines are the
//! driver's.

use crate::session::{Action, MAX_LINE, Session, err};
use mio::Interest;
use postern_lib::anvil::gate::Ticket;
use postern_lib::proto::auth::{self, AuthRequest};
use postern_lib::proto::auth_client::AuthClient;
use postern_lib::skeleton::conn::{Ending, Io, Limits, Line, Protocol};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Unsent bytes above which the session stops reading commands until the client reads.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// The same before login: a client that sends CAPA after CAPA without reading the
/// answers makes the process hold no more than this (plus one reply).
pub const PRELOGIN_HIGH_WATER: usize = 16 * 1024;

/// One POP3 connection's protocol side.
pub struct Pop3Conn {
    pub(crate) session: Session,
    pub(crate) peer: Option<SocketAddr>,
    /// For STLS.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The auth request in flight, and the name it is for.
    pub(crate) auth: Option<(AuthClient, String)>,
    /// The per-address count of a connection not yet logged in, given back at login.
    pub(crate) ticket: Option<Ticket>,
    /// What is being streamed (RETR 3), for the log line of a read error.
    streaming: String,
    login_timeout: Duration,
}

impl Pop3Conn {
    /// A connection's protocol side.
    pub fn new(
        session: Session,
        peer: Option<SocketAddr>,
        tls: Option<Arc<rustls::ServerConfig>>,
        ticket: Option<Ticket>,
        login_timeout: Duration,
    ) -> Pop3Conn {
        Pop3Conn {
            session,
            peer,
            tls,
            auth: None,
            ticket,
            streaming: String::new(),
            login_timeout,
        }
    }

    fn addr(&self) -> String {
        self.peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "local".into())
    }

    /// Carries out the session's actions.
    pub fn apply(&mut self, io: &mut Io<'_>, acts: Vec<Action>) {
        for act in acts {
            match act {
                Action::Send(bytes) => io.send(&bytes),
                Action::Stream(r) => {
                    self.streaming.clone_from(&r.what);
                    io.hand_over(r);
                }
                Action::Close => io.close(),
                Action::StartTls => {
                    if self.tls.clone().is_some_and(|cfg| io.start_tls(cfg)) {
                        self.session.security.tls = true;
                        self.session.security.tls_available = false;
                    } else {
                        io.abort();
                    }
                }
                Action::Verify { user, password } => self.verify(io, user, password.to_string()),
            }
        }
    }

    fn verify(&mut self, io: &mut Io<'_>, user: String, password: String) {
        let req = AuthRequest::Verify {
            user: user.clone(),
            password,
            service: "pop3".into(),
            client: self.peer.map(|p| p.ip().to_string()),
        };
        let started = AuthClient::start(std::path::Path::new(auth::SOCKET), &req);
        if let AuthRequest::Verify { mut password, .. } = req {
            zeroize::Zeroize::zeroize(&mut password);
        }
        match started {
            Ok(mut client) => {
                let (registry, token) = io.aux();
                if registry
                    .register(client.source(), token, Interest::READABLE | Interest::WRITABLE)
                    .is_err()
                {
                    io.abort();
                } else {
                    self.auth = Some((client, user));
                }
            }
            Err(e) => {
                tracing::warn!("{e}");
                let acts = self.session.auth_done(Err(err(
                    "[SYS/TEMP] Authentication is not available now, try again later",
                )));
                self.apply(io, acts);
            }
        }
    }

    fn too_long(&mut self, io: &mut Io<'_>) {
        let when = if self.session.user.is_some() {
            ""
        } else {
            " before login"
        };
        tracing::info!("command line too long{when} from {}", self.addr());
        let acts = self.session.line_too_long();
        self.apply(io, acts);
    }
}

impl Protocol for Pop3Conn {
    fn greeting(&mut self, io: &mut Io<'_>) {
        let g = self.session.greeting();
        self.apply(io, vec![g]);
    }

    fn handle(&mut self, io: &mut Io<'_>) -> bool {
        if !self.session.ready() || self.auth.is_some() {
            return false;
        }
        match io.line(MAX_LINE) {
            Line::Partial => false,
            Line::TooLong => {
                self.too_long(io);
                false
            }
            Line::Line(mut line) => {
                let acts = self.session.command(&line);
                zeroize::Zeroize::zeroize(&mut line);
                self.apply(io, acts);
                true
            }
        }
    }

    fn limits(&self) -> Limits {
        let output = if self.session.user.is_some() {
            OUTPUT_HIGH_WATER
        } else {
            PRELOGIN_HIGH_WATER
        };
        Limits {
            input: MAX_LINE * 4,
            output,
        }
    }

    fn waiting(&self) -> bool {
        self.auth.is_some()
    }

    fn ending(&mut self, why: Ending, io: &mut Io<'_>) {
        let words: &[u8] = match why {
            Ending::Login => {
                tracing::info!(
                    "login timeout from {}: not logged in within {}s",
                    self.addr(),
                    self.login_timeout.as_secs()
                );
                b"-ERR Disconnected: no login in time\r\n"
            }
            Ending::Idle | Ending::Session | Ending::Phase => b"-ERR Autologout; idle for too long\r\n",
            // RFC 3206: a temporary condition; the client may come back
            Ending::Shutdown => b"-ERR [SYS/TEMP] Server shutting down, try again later\r\n",
        };
        io.send(words);
    }

    fn source_failed(&mut self, e: &std::io::Error) {
        tracing::warn!(
            "read {} for {}, user={}: {e}",
            self.streaming,
            self.addr(),
            self.session.user.as_deref().unwrap_or("-")
        );
    }
}
