//! The ESMTP session without I/O: bytes from the client go in (through a
//! [`LineBuffer`]), and [`Action`]s come out — replies to send, a TLS handshake to start,
//! questions for auth, and the message to stream to cleanup. The event loop performs the
//! actions and reports their outcomes back ([`Session::lookup_done`],
//! [`Session::verify_done`], [`Session::cleanup_done`], [`Session::tls_started`]). While
//! an outcome is awaited the session reads nothing more, so pipelined commands wait in
//! the buffer in order.
//!
//! | file | commands |
//! | --- | --- |
//! | [`command`] | parsing any command line (the fuzz entry point) |
//! | [`greet`] | greeting, HELO/EHLO, STARTTLS, NOOP/RSET/VRFY/HELP/QUIT |
//! | [`mail`] | MAIL and RCPT, with the RCPT-time restrictions and recipient validation |
//! | [`data`] | DATA and BDAT: dot-unstuffing, size and header limits, end of message |
//! | [`auth`] | AUTH PLAIN and LOGIN |
//! | [`policy`] | restriction lists |
//! | [`sender_login`] | `smtpd_sender_login_maps` |
//! | [`received`] | the `Received:` header |
//! | [`reply`] | reply formatting |
//! | [`reject_log`] | Postfix's `NOQUEUE: reject:` log line for refusals |

pub mod auth;
pub mod command;
pub mod data;
pub mod greet;
pub mod mail;
pub mod policy;
pub mod received;
pub mod reject_log;
pub mod reply;
pub mod sender_login;

#[cfg(test)]
mod tests;

use crate::settings::Settings;
use data::MessageState;
use postern_lib::address::{Address, Class};
use postern_lib::dsn::Dsn;
use postern_lib::line::{LineBuffer, LineEnding, LineEvent};
use postern_lib::proto::cleanup::{CleanupReply, Recipient, Submission};
use reply::Reply;
use std::net::IpAddr;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Fuzz entry point for the whole session: feeds `bytes` (split at every 0xff byte, so a
/// fuzzer controls chunk boundaries) to a session from a client outside mynetworks, and
/// answers every question the session asks with a failure. Checks that nothing panics and
/// that every reply is well formed.
pub fn fuzz_session(bytes: &[u8]) {
    let cfg = Arc::new(Settings::for_tests());
    let client = ClientInfo {
        addr: IpAddr::from([192, 0, 2, 1]),
        name: "unknown".into(),
    };
    let mut s = Session::new(cfg.clone(), client, None);
    let mut input = LineBuffer::new(cfg.line_limit, 65536);
    let mut actions = s.start();
    for chunk in bytes.split(|&b| b == 0xff) {
        if s.is_closed() {
            break;
        }
        let n = chunk.len().min(input.free_space());
        if input.push(chunk.get(..n).unwrap_or_default()).is_err() {
            break;
        }
        actions.extend(s.process(&mut input));
        actions.extend(s.lookup_done(LookupResult::NoSuchUser));
        actions.extend(s.verify_done(VerifyResult::Fail));
        actions.extend(s.cleanup_started(Some("0Vxq3Yk9c0012345".into())));
        actions.extend(s.cleanup_done(None));
        actions.extend(s.tls_started(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
        }));
    }
    for a in actions {
        if let Action::Send(b) = a {
            assert!(b.ends_with(b"\r\n") && b.len() >= 5, "malformed reply");
        }
    }
}

/// The client, as the loop knows it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Its address.
    pub addr: IpAddr,
    /// Its reverse-DNS name; `unknown` (smtpd does no DNS look-ups).
    pub name: String,
}

/// The TLS session, for the `Received:` header and the protocol name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`.
    pub version: String,
    /// `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// What the loop must do.
#[derive(Debug)]
pub enum Action {
    /// Send these bytes to the client.
    Send(Vec<u8>),
    /// After what was sent so far, begin the TLS handshake; throw away anything the
    /// client sent after STARTTLS (it was sent in the clear).
    StartTls,
    /// After what was sent so far, close the connection.
    Close,
    /// Ask auth whether this local mailbox exists (`AuthRequest::Lookup`).
    Lookup(String),
    /// Ask auth to check a password (`AuthRequest::Verify`).
    Verify {
        /// Login name.
        user: String,
        /// Password.
        password: Zeroizing<String>,
    },
    /// Open a connection to cleanup and submit this envelope; the session waits for
    /// [`Session::cleanup_started`] (or [`Session::cleanup_done`] with `None`).
    Begin(Box<Submission>),
    /// Content for cleanup.
    Data(Vec<u8>),
    /// The content is complete: send the end frame and wait for cleanup's reply.
    End,
    /// Drop the cleanup connection: nothing must be queued.
    Abort,
}

/// The answer to [`Action::Lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// The mailbox exists.
    Exists,
    /// No such mailbox.
    NoSuchUser,
    /// Auth could not answer.
    TempFail,
}

/// The answer to [`Action::Verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyResult {
    /// Right password; the canonical account name.
    Ok(String),
    /// Wrong name or password.
    Fail,
    /// Auth could not answer (or is absent).
    TempFail,
}

/// What the session is waiting for.
#[derive(Debug)]
enum Wait {
    Nothing,
    Lookup(Box<mail::PendingRcpt>),
    Verify,
    /// cleanup's queue ID ([`Session::cleanup_started`]), then this.
    Started(data::AfterStart),
    Cleanup,
    Tls,
    Closed,
}

/// Where input goes.
#[derive(Debug)]
enum Phase {
    Command,
    Data(data::DotDecoder),
    Bdat {
        remaining: u64,
        last: bool,
        error: Option<Reply>,
    },
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass(String),
}

/// The envelope being collected.
#[derive(Debug, Default)]
struct Transaction {
    mail: command::MailArgs,
    recipients: Vec<Recipient>,
    message: Option<MessageState>,
    /// The `ID: client=` line was logged when cleanup named the queue ID.
    id_logged: bool,
    /// The queue ID cleanup named, for the log.
    queue_id: Option<String>,
}

/// One SMTP session.
#[derive(Debug)]
pub struct Session {
    cfg: Arc<Settings>,
    client: ClientInfo,
    mynetworks: bool,
    loopback: bool,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<TlsInfo>,
    auth_user: Option<String>,
    /// The SASL mechanism of the AUTH command in progress or done (`PLAIN`, `LOGIN`).
    sasl_method: &'static str,
    tx: Option<Transaction>,
    phase: Phase,
    wait: Wait,
    errors: u32,
    junk: u32,
    out: Vec<Action>,
}

impl Session {
    /// A new session. `tls` is set for implicit TLS (smtps), after the handshake.
    pub fn new(cfg: Arc<Settings>, client: ClientInfo, tls: Option<TlsInfo>) -> Session {
        let mynetworks = cfg.mynetworks.iter().any(|c| c.contains(client.addr));
        let loopback = match client.addr {
            IpAddr::V4(a) => a.is_loopback(),
            IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
        };
        Session {
            cfg,
            client,
            mynetworks,
            loopback,
            helo: None,
            esmtp: false,
            tls,
            auth_user: None,
            sasl_method: "",
            tx: None,
            phase: Phase::Command,
            wait: Wait::Nothing,
            errors: 0,
            junk: 0,
            out: Vec::new(),
        }
    }

    /// The greeting.
    pub fn start(&mut self) -> Vec<Action> {
        let banner = self.cfg.banner.clone();
        self.send(Reply::plain(220, vec![banner]));
        self.take()
    }

    /// Whether the session waits for an outcome (and reads no input meanwhile).
    pub fn is_waiting(&self) -> bool {
        !matches!(self.wait, Wait::Nothing)
    }

    /// Whether the session has ended (QUIT, fatal error, timeout).
    pub fn is_closed(&self) -> bool {
        matches!(self.wait, Wait::Closed)
    }

    /// Whether a message is being received (for the DATA deadline).
    pub fn in_message(&self) -> bool {
        matches!(self.phase, Phase::Data(_) | Phase::Bdat { .. })
            || self.tx.as_ref().is_some_and(|t| t.message.is_some())
    }

    /// Whether cleanup has been asked for (a connection to it should exist).
    pub fn cleanup_open(&self) -> bool {
        self.tx
            .as_ref()
            .and_then(|t| t.message.as_ref())
            .is_some_and(|m| !m.broken && !m.aborted)
    }

    /// Handles as much buffered input as possible.
    pub fn process(&mut self, input: &mut LineBuffer) -> Vec<Action> {
        while !self.is_waiting() {
            match &mut self.phase {
                Phase::Data(_) => {
                    if input.pending_len() == 0 || !self.data_input(input) {
                        break;
                    }
                }
                Phase::Bdat { .. } => {
                    if !self.bdat_input(input) {
                        break;
                    }
                }
                _ => match input.next_line() {
                    None => break,
                    Some(LineEvent::TooLong) => self.send(Reply::new(500, Dsn::SYNTAX_ERROR, "Error: line too long")),
                    Some(LineEvent::Line { line, ending }) => {
                        if ending == LineEnding::BareLf && self.cfg.reject_bare_newline {
                            self.send(Reply::new(
                                521,
                                Dsn::SYNTAX_ERROR,
                                format!("{} Error: bare <LF> received", self.cfg.hostname),
                            ));
                            self.close();
                        } else {
                            self.line(&line);
                        }
                    }
                },
            }
        }
        self.take()
    }

    /// The session timed out waiting for the client.
    pub fn timeout(&mut self) -> Vec<Action> {
        self.abort_message();
        self.send_raw(Reply::new(
            421,
            Dsn::BAD_CONNECTION,
            format!("{} Error: timeout exceeded", self.cfg.hostname),
        ));
        self.close();
        self.take()
    }

    /// The client closed or the connection failed: drop any message in progress.
    pub fn disconnected(&mut self) -> Vec<Action> {
        self.abort_message();
        self.wait = Wait::Closed;
        self.take()
    }

    /// The TLS handshake completed.
    pub fn tls_started(&mut self, info: TlsInfo) -> Vec<Action> {
        self.tls = Some(info);
        if matches!(self.wait, Wait::Tls) {
            self.wait = Wait::Nothing;
        }
        self.take()
    }

    /// The answer to [`Action::Lookup`].
    pub fn lookup_done(&mut self, result: LookupResult) -> Vec<Action> {
        if let Wait::Lookup(p) = std::mem::replace(&mut self.wait, Wait::Nothing) {
            self.finish_rcpt(*p, Some(result));
        }
        self.take()
    }

    /// The answer to [`Action::Verify`].
    pub fn verify_done(&mut self, result: VerifyResult) -> Vec<Action> {
        if matches!(self.wait, Wait::Verify) {
            self.wait = Wait::Nothing;
            self.auth_result(result);
        }
        self.take()
    }

    /// Cleanup's answer to [`Action::Begin`]: the queue ID the message will have (`None`
    /// when the sink names none, as for `sendmail -bs`). The `Received:` header and the
    /// `ID: client=` log line follow, then the `354` (DATA) or the chunk (BDAT).
    pub fn cleanup_started(&mut self, queue_id: Option<String>) -> Vec<Action> {
        if let Some(next) = self.take_started() {
            self.message_started(queue_id.as_deref(), next);
        }
        self.take()
    }

    /// Cleanup's reply to [`Action::End`], or `None` when the cleanup connection broke or
    /// could not be made (at any time).
    pub fn cleanup_done(&mut self, reply: Option<CleanupReply>) -> Vec<Action> {
        if let Some(next) = self.take_started() {
            // No queue ID comes: the message is read and refused at its end.
            if let Some(m) = self.tx.as_mut().and_then(|t| t.message.as_mut()) {
                m.broken = true;
            }
            self.message_started(None, next);
        } else if matches!(self.wait, Wait::Cleanup) {
            self.wait = Wait::Nothing;
            self.message_result(reply);
        } else if reply.is_none()
            && let Some(m) = self.tx.as_mut().and_then(|t| t.message.as_mut())
        {
            m.broken = true;
        }
        self.take()
    }

    /// Ends the wait for cleanup's queue ID, if the session is waiting for it.
    fn take_started(&mut self) -> Option<data::AfterStart> {
        if !matches!(self.wait, Wait::Started(_)) {
            return None;
        }
        match std::mem::replace(&mut self.wait, Wait::Nothing) {
            Wait::Started(next) => Some(next),
            _ => None,
        }
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// Queues a reply, counting errors; too many errors end the session.
    fn send(&mut self, r: Reply) {
        let error = r.is_error();
        self.send_raw(r);
        if error {
            self.errors += 1;
            if self.errors >= self.cfg.hard_error_limit && !self.is_closed() {
                self.abort_message();
                self.send_raw(Reply::new(
                    421,
                    Dsn::SECURITY.temporary(),
                    format!("{} Error: too many errors", self.cfg.hostname),
                ));
                self.close();
            }
        }
    }

    fn send_raw(&mut self, r: Reply) {
        let bytes = r.to_bytes();
        if let Some(Action::Send(prev)) = self.out.last_mut() {
            prev.extend_from_slice(&bytes);
        } else {
            self.out.push(Action::Send(bytes));
        }
    }

    fn close(&mut self) {
        self.out.push(Action::Close);
        self.wait = Wait::Closed;
    }

    /// Counts a command that is not part of a mail transaction.
    fn junk(&mut self) -> bool {
        self.junk += 1;
        if self.junk > self.cfg.junk_command_limit {
            self.send_raw(Reply::new(
                421,
                Dsn::SECURITY.temporary(),
                format!("{} Error: too many junk commands", self.cfg.hostname),
            ));
            self.close();
            return false;
        }
        true
    }

    fn line(&mut self, line: &[u8]) {
        match self.phase {
            Phase::AuthPlain | Phase::AuthLoginUser | Phase::AuthLoginPass(_) => return self.auth_line(line),
            _ => {}
        }
        match command::parse(line) {
            Err(r) => self.send(r),
            Ok(cmd) => self.command(cmd),
        }
    }

    fn command(&mut self, cmd: command::Command) {
        use command::Command as C;
        match cmd {
            C::Helo(h) => self.helo(h, false),
            C::Ehlo(h) => self.helo(h, true),
            C::StartTls => self.starttls(),
            C::Noop => {
                if self.junk() {
                    self.send(reply::common::ok())
                }
            }
            C::Rset => {
                if self.junk() {
                    self.abort_message();
                    self.tx = None;
                    self.send(reply::common::ok());
                }
            }
            C::Vrfy => {
                if self.junk() {
                    self.send(Reply::new(252, Dsn::OK, "Send some mail, I'll try my best"))
                }
            }
            C::Help => {
                if self.junk() {
                    self.send(Reply::new(214, Dsn::OK, "See RFC 5321"))
                }
            }
            C::Quit => {
                self.abort_message();
                self.send_raw(Reply::new(221, Dsn::OK, "Bye"));
                self.close();
            }
            C::Mail(m) => self.mail(m),
            C::Rcpt(r) => self.rcpt(r),
            C::Data => self.data(),
            C::Bdat { size, last } => self.bdat(size, last),
            C::Auth { mech, initial } => self.auth(mech, initial),
        }
    }

    /// The `Received:` protocol name (RFC 3848).
    fn protocol_name(&self) -> &'static str {
        match (self.esmtp, self.tls.is_some(), self.auth_user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    /// Whether STARTTLS is required before MAIL and AUTH and has not happened.
    fn tls_required(&self) -> bool {
        self.cfg.tls_level == crate::settings::TlsLevel::Encrypt && self.tls.is_none()
    }

    /// The facts the restriction rules look at.
    fn facts<'a>(&'a self, rcpt: Option<(&'a Address, Class)>, known: Option<bool>) -> policy::Facts<'a> {
        policy::Facts {
            client: self.client.addr,
            mynetworks: self.mynetworks,
            authenticated: self.auth_user.is_some(),
            sender: self.tx.as_ref().and_then(|t| t.mail.path.as_ref()),
            recipient: rcpt,
            known,
            login: self.auth_user.as_deref(),
            login_maps: &self.cfg.sender_login_maps,
        }
    }
}
