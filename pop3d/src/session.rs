//! The POP3 protocol core, sans-I/O: one command line in, replies and actions out. The
//! connection layer ([`crate::conn`]) does the sockets, TLS and the auth round trip.
//! Command families live in [`crate::authorization`] (CAPA, USER, PASS, AUTH, STLS) and
//! [`crate::transaction`] (STAT, LIST, RETR, TOP, DELE, UIDL, NOOP, RSET, QUIT).
//!
//! Every error is a `-ERR` reply, built here; the session goes on unless the reply says
//! it ends (QUIT, too many bad commands).

use crate::maildrop::Maildrop;
use zeroize::Zeroizing;

/// Longest command line, CRLF included (RFC 2449 allows 255 octets; AUTH responses are
/// longer).
pub const MAX_LINE: usize = 2048;
/// Bad commands before the connection is closed.
pub const MAX_ERRORS: u32 = 20;

/// What the connection layer must do.
pub enum Action {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Send a message (RETR, TOP) after what is queued, as the client reads it; no more
    /// commands are taken until it has all been sent.
    Stream(Box<crate::retrieve::Retrieval>),
    /// Start TLS now (the `+OK` before it has been queued).
    StartTls,
    /// Ask auth; answer with [`Session::auth_done`] (no more commands until then).
    Verify {
        /// The login name.
        user: String,
        /// The password.
        password: Zeroizing<String>,
    },
    /// Close after sending what is queued.
    Close,
}

/// Where the session is (RFC 1939 states, plus waiting for auth).
pub enum State {
    /// Before login; `user` from USER.
    Authorization {
        /// The name given by USER.
        user: Option<String>,
    },
    /// AUTH PLAIN sent without an initial response: the next line is the response.
    SaslContinue,
    /// Waiting for auth's answer.
    Verifying,
    /// Logged in.
    Transaction(Box<Maildrop>),
    /// QUIT seen.
    Done,
}

/// What the connection knows that the protocol needs.
#[derive(Debug, Clone, Copy)]
pub struct Security {
    /// TLS is active.
    pub tls: bool,
    /// STLS can be offered (a certificate is configured and TLS is not active).
    pub tls_available: bool,
    /// Cleartext passwords are allowed without TLS (trusted network or configuration).
    pub plaintext_ok: bool,
}

/// One session.
pub struct Session {
    /// The state.
    pub state: State,
    /// The connection's security.
    pub security: Security,
    /// The account logged in.
    pub user: Option<String>,
    /// The client sent UTF8 (RFC 6856).
    pub utf8: bool,
    errors: u32,
}

/// `+OK text\r\n`.
pub fn ok(text: &str) -> Action {
    Action::Send(format!("+OK {text}\r\n").into_bytes())
}

/// `-ERR text\r\n`.
pub fn err(text: &str) -> Action {
    Action::Send(format!("-ERR {text}\r\n").into_bytes())
}

impl Session {
    /// A new session; `greeting()` gives the first line.
    pub fn new(security: Security) -> Session {
        Session {
            state: State::Authorization { user: None },
            security,
            user: None,
            utf8: false,
            errors: 0,
        }
    }

    /// The greeting.
    pub fn greeting(&self) -> Action {
        ok("Postern POP3 server ready")
    }

    /// Whether the session accepts a command line now.
    pub fn ready(&self) -> bool {
        !matches!(self.state, State::Verifying | State::Done)
    }

    /// Handles one command line (CRLF or LF stripped).
    pub fn command(&mut self, line: &[u8]) -> Vec<Action> {
        if matches!(self.state, State::SaslContinue) {
            return crate::authorization::sasl_response(self, line);
        }
        // The line may hold a password (PASS, AUTH PLAIN): every copy is zeroed.
        let text = Zeroizing::new(String::from_utf8_lossy(line).into_owned());
        // names and passwords are UTF-8 (RFC 6856 `UTF8 USER`): other bytes are refused,
        // not replaced (a replaced password would be some other password)
        if std::str::from_utf8(line).is_err() {
            return vec![err("Command line is not UTF-8")];
        }
        let (verb, args) = match text.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), Zeroizing::new(a.to_string())),
            None => (text.to_ascii_uppercase(), Zeroizing::new(String::new())),
        };
        let args: Vec<&str> = args.split(' ').filter(|a| !a.is_empty()).collect();
        let out = match (&self.state, verb.as_str()) {
            (_, "CAPA") => vec![crate::authorization::capa(self)],
            (State::Authorization { .. }, _) => crate::authorization::command(self, &verb, &args, &text),
            (State::Transaction(_), _) => crate::transaction::command(self, &verb, &args),
            _ => vec![err("Command not allowed now")],
        };
        let bad = out
            .iter()
            .any(|a| matches!(a, Action::Send(b) if b.starts_with(b"-ERR")));
        if bad {
            self.errors += 1;
            if self.errors >= MAX_ERRORS {
                return vec![err("Too many bad commands"), Action::Close];
            }
        }
        out
    }

    /// A bad command counts.
    pub fn line_too_long(&mut self) -> Vec<Action> {
        vec![err("Command line too long"), Action::Close]
    }

    /// Auth answered: `Some(maildrop)` after a successful login and lock, or the error
    /// reply to send.
    pub fn auth_done(&mut self, result: Result<(String, Maildrop), Action>) -> Vec<Action> {
        match result {
            Ok((user, drop)) => {
                let n = drop.entries().len();
                let size: u64 = drop.entries().iter().map(|e| e.size).sum();
                self.user = Some(user);
                self.state = State::Transaction(Box::new(drop));
                vec![ok(&format!("Logged in, {n} messages ({size} octets)"))]
            }
            Err(reply) => {
                self.state = State::Authorization { user: None };
                self.errors += 1;
                if self.errors >= MAX_ERRORS {
                    return vec![reply, Action::Close];
                }
                vec![reply]
            }
        }
    }
}

#[cfg(test)]
mod tests;
