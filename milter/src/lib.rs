//! The Sendmail Milter protocol (version 6), client side: how cleanup lets the filters
//! sites already run (clamav-milter, opendkim, rspamd, spamass-milter) see each message and
//! change or refuse it.
//!
//! [`run`] holds one whole conversation with one milter for one message, after the
//! content is complete, in the order the SMTP stages happened: option negotiation
//! (`SMFIC_OPTNEG`), connect, helo, mail, rcpt (each), data, the header fields, end of
//! header, the body in chunks of at most 64 KiB with CRLF line ends, end of message, quit.
//! Each stage is preceded by its macros (`SMFIC_MACRO`: `j`, `_`, `i`, `{daemon_name}`,
//! `{client_addr}`, `{client_name}`, `{client_port}`, `{auth_authen}`, `{auth_type}`,
//! `{mail_addr}`, `{rcpt_addr}`, `v`, whatever the caller supplies in [`Transaction`]).
//! Stages the milter asked to skip (`SMFIP_NO*`) are not sent and stages it will not answer
//! (`SMFIP_NR_*`) are not waited for.
//!
//! The outcome is a [`Verdict`] — continue, accept, reject (with the milter's SMTP reply,
//! `SMFIR_REPLYCODE`), tempfail, discard — and the list of [`Modification`]s the milter
//! asked for at end of message (add/insert/change header, add/delete recipient, change
//! sender, replace body, quarantine). Nothing is applied during the conversation:
//! [`Message::apply`] applies the modifications afterwards, all of them or (when the milter
//! failed half-way) none, so a message is never half-modified. `SMFIR_PROGRESS` restarts
//! the reply timer.
//!
//! Timeouts ([`Timeouts`], settings `milter_connect_timeout`, `milter_command_timeout`,
//! `milter_content_timeout`) bound every wait. A milter that cannot be reached, times out,
//! closes the connection or speaks garbage is an error ([`MilterError`]); the caller
//! applies `milter_default_action`.
//!
//! # Security stance
//!
//! A milter is a trusted local filter, but its replies are still parsed defensively: every
//! packet length is checked against [`wire::MAX_PACKET`] before allocation, the number of
//! modifications and the size of a replaced body are bounded ([`MAX_MODIFICATIONS`], the
//! caller's body limit), header names and values go through [`postern_lib::headers::Field`]'s
//! checks (no CR/LF smuggling), and anything unexpected ends the conversation as an error.

mod session;
pub mod wire;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use session::run;

use postern_lib::headers::{Field, Header};

/// Most modification requests accepted from one milter for one message.
pub const MAX_MODIFICATIONS: usize = 10_000;

/// Errors that end a milter conversation; the caller applies `milter_default_action`.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum MilterError {
    /// The milter specification is not `unix:/path`, `inet:host:port` or `inet6:host:port`.
    #[error("bad milter address {0:?}: expected unix:/path or inet:host:port")]
    BadAddress(String),
    /// Connecting failed.
    #[error("cannot connect to milter: {0}")]
    Connect(std::io::Error),
    /// Reading or writing failed.
    #[error("milter I/O: {0}")]
    Io(std::io::Error),
    /// No answer within the timeout.
    #[error("milter timed out")]
    Timeout,
    /// The milter closed the connection.
    #[error("milter closed the connection")]
    Closed,
    /// The milter sent something the protocol does not allow here.
    #[error("milter protocol error: {0}")]
    Protocol(String),
}

/// Where a milter listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket (`unix:/path`; a relative path is relative to the queue directory).
    Unix(PathBuf),
    /// A TCP socket (`inet:host:port`, `inet:[v6addr]:port`, `inet6:...`).
    Inet(String, u16),
}

impl Endpoint {
    /// Parses Postfix's milter address syntax (`unix:/path`, `inet:host:port`,
    /// `inet:port@host` as libmilter writes it, `inet6:...`).
    pub fn parse(spec: &str) -> Result<Endpoint, MilterError> {
        let bad = || MilterError::BadAddress(postern_lib::strbuf::printable_bounded(spec.as_bytes(), 200));
        let spec = spec.trim();
        if let Some(p) = spec.strip_prefix("unix:").or_else(|| spec.strip_prefix("local:")) {
            if p.is_empty() {
                return Err(bad());
            }
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        let rest = spec
            .strip_prefix("inet:")
            .or_else(|| spec.strip_prefix("inet6:"))
            .ok_or_else(bad)?;
        let (host, port) = if let Some((port, host)) = rest.split_once('@') {
            (host, port)
        } else {
            rest.rsplit_once(':').ok_or_else(bad)?
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Endpoint::Inet(host.to_owned(), port))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Inet(h, p) => write!(f, "inet:{h}:{p}"),
        }
    }
}

/// The time limits of one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting and option negotiation.
    pub connect: Duration,
    /// Each answer to connect, helo, mail, rcpt, data, header, end of header.
    pub command: Duration,
    /// Each answer to a body chunk and to end of message.
    pub content: Duration,
}

/// The SMTP facts of the message, as the milter would have seen them live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    /// Client host name (`unknown` when it has none); `localhost` for local submissions.
    pub client_name: String,
    /// Client address; `None` for a local submission (sent as 127.0.0.1).
    pub client_addr: Option<IpAddr>,
    /// Client port (0 when unknown).
    pub client_port: u16,
    /// The HELO/EHLO argument (empty: no helo stage).
    pub helo: String,
    /// ESMTP arguments of MAIL FROM (`SIZE=123`, `BODY=8BITMIME`).
    pub mail_args: Vec<String>,
    /// Macros: `(name, value)` with names as milters know them (`j`, `{auth_authen}`).
    /// `{mail_addr}` and `{rcpt_addr}` are added per stage by [`run`].
    pub macros: Vec<(String, String)>,
}

/// What one milter decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Went through every stage (apply its modifications).
    Continue,
    /// Accepted the message early (apply its modifications; skip the rest of its stages).
    Accept,
    /// Refused the message for good.
    Reject {
        /// SMTP code (5xx).
        code: u16,
        /// Enhanced status code.
        dsn: String,
        /// Text.
        text: String,
    },
    /// Refused this time.
    TempFail {
        /// SMTP code (4xx).
        code: u16,
        /// Enhanced status code.
        dsn: String,
        /// Text.
        text: String,
    },
    /// Accept and drop the message.
    Discard,
}

/// A change the milter asked for at end of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modification {
    /// Append a header field.
    AddHeader {
        /// Field name.
        name: String,
        /// Value.
        value: String,
    },
    /// Insert a header field at `index` (0: first).
    InsertHeader {
        /// Position.
        index: usize,
        /// Field name.
        name: String,
        /// Value.
        value: String,
    },
    /// Change the `index`-th (1-based) field `name`; an empty value deletes it.
    ChangeHeader {
        /// Occurrence.
        index: usize,
        /// Field name.
        name: String,
        /// New value.
        value: String,
    },
    /// Add an envelope recipient.
    AddRecipient(String),
    /// Delete an envelope recipient (also what a RCPT-stage reject does).
    DeleteRecipient(String),
    /// Change the envelope sender.
    ChangeSender(String),
    /// A chunk of the new body (chunks concatenate; CRLF line ends).
    ReplaceBody(Vec<u8>),
    /// Put the message on hold with this reason.
    Quarantine(String),
}

/// The result of [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub verdict: Verdict,
    /// The changes asked for, in order.
    pub modifications: Vec<Modification>,
}

/// A message as the milters see and change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The envelope sender (empty: `<>`).
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// The header block.
    pub header: Header,
    /// The body, LF line ends.
    pub body: Vec<u8>,
    /// Set by a quarantine request: hold the message, with this reason.
    pub quarantine: Option<String>,
}

impl Message {
    /// Applies `mods` in order. A replaced body has its CRLF turned into LF. Fails without
    /// changing anything when a header edit is invalid or the new body exceeds `max_body`.
    pub fn apply(&mut self, mods: &[Modification], max_body: usize) -> Result<(), MilterError> {
        let mut next = self.clone();
        let mut new_body: Option<Vec<u8>> = None;
        let bad = |e: postern_lib::headers::HeaderError| MilterError::Protocol(e.to_string());
        for m in mods {
            match m {
                Modification::AddHeader { name, value } => {
                    next.header.append(Field::new(name, value).map_err(bad)?).map_err(bad)?
                }
                Modification::InsertHeader { index, name, value } => next
                    .header
                    .insert(*index, Field::new(name, value).map_err(bad)?)
                    .map_err(bad)?,
                Modification::ChangeHeader { index, name, value } => {
                    next.header.change(name, (*index).max(1), value).map_err(bad)?
                }
                Modification::AddRecipient(r) => {
                    if !next.recipients.contains(r) {
                        next.recipients.push(r.clone());
                    }
                }
                Modification::DeleteRecipient(r) => next.recipients.retain(|x| !x.eq_ignore_ascii_case(r)),
                Modification::ChangeSender(s) => next.sender = s.clone(),
                Modification::ReplaceBody(chunk) => {
                    let b = new_body.get_or_insert_with(Vec::new);
                    if b.len() + chunk.len() > max_body {
                        return Err(MilterError::Protocol("replacement body too large".into()));
                    }
                    b.extend_from_slice(chunk);
                }
                Modification::Quarantine(reason) => next.quarantine = Some(reason.clone()),
            }
        }
        if let Some(b) = new_body {
            next.body = crlf_to_lf(&b);
        }
        *self = next;
        Ok(())
    }
}

/// Turns CRLF into LF (a lone CR stays).
pub fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Strips `<` and `>` around an address.
pub fn strip_brackets(a: &str) -> &str {
    let a = a.trim();
    a.strip_prefix('<').and_then(|x| x.strip_suffix('>')).unwrap_or(a)
}
