//! DATA (RFC 5321 section 4.1.1.4) and BDAT (RFC 3030 CHUNKING): receiving the content,
//! streaming it to cleanup as it arrives, and the end of the message.
//!
//! DATA content is dot-unstuffed by [`DotDecoder`]. Bare LF (`smtpd_forbid_bare_newline`):
//! in the default `normalize` mode a bare LF ends a line and is stored as CRLF, but only
//! `<CR><LF>.<CR><LF>` — a `.` line ending in CRLF after a line that also ended in CRLF —
//! ends the data, so the SMTP smuggling sequences `<LF>.<LF>` and `<LF>.<CR><LF>` are
//! content (a `.` line), never an end; in `reject` mode a message with a bare LF is
//! refused (550 5.5.2) and a command line ending in bare LF ends the session (521).
//!
//! Limits: `message_size_limit` counts the content as received (after unstuffing); once
//! exceeded, the cleanup connection is dropped (nothing is queued), the rest is read and
//! discarded, and the end of the message gets `552 5.3.4`. `header_size_limit` likewise
//! refuses a header section that is too large. The whole-transfer deadline
//! (`smtpd_data_timeout`) is the event loop's.

use super::policy::{self, Stage, Verdict};
use super::received::{self, ReceivedFacts};
use super::reject_log::RejectStage;
use super::reply::{Reply, common};
use super::{Action, Phase, Session, Wait};
use postern_lib::dsn::{Class as DsnClass, Dsn};
use postern_lib::line::LineBuffer;
use postern_lib::proto::cleanup::{CleanupReply, Origin, Submission};
use postern_lib::queue_file::attr;
use std::collections::BTreeMap;

/// Dot-unstuffing of a DATA stream (chunks may split anything). Inside a line the input
/// is copied a run at a time up to the next LF (`memchr`); only line starts go byte by
/// byte.
#[derive(Debug, Clone)]
pub struct DotDecoder {
    line_start: bool,
    /// The line before this one ended in CRLF (true at the start of the data).
    prev_crlf: bool,
    /// 1: a `.` at line start is held; 2: `.` CR is held.
    held: u8,
    last_cr: bool,
    /// A bare LF was seen.
    pub bare_lf: bool,
}

impl Default for DotDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DotDecoder {
    /// A decoder at the start of the data.
    pub fn new() -> Self {
        DotDecoder {
            line_start: true,
            prev_crlf: true,
            held: 0,
            last_cr: false,
            bare_lf: false,
        }
    }

    fn normal(&mut self, b: u8, out: &mut Vec<u8>) {
        if b == b'\n' {
            if self.last_cr {
                self.prev_crlf = true;
            } else {
                self.bare_lf = true;
                self.prev_crlf = false;
                out.push(b'\r');
            }
            out.push(b'\n');
            self.line_start = true;
            self.last_cr = false;
        } else {
            out.push(b);
            self.last_cr = b == b'\r';
            self.line_start = false;
        }
    }

    /// Decodes `input` into `out`; returns how many bytes were consumed and whether the
    /// end-of-data line was reached (bytes after it are not consumed).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            if self.held == 0 && !self.line_start {
                // Inside a line: everything up to the next LF is content as it is.
                let rest = input.get(i..).unwrap_or_default();
                let Some(k) = memchr::memchr(b'\n', rest) else {
                    out.extend_from_slice(rest);
                    self.last_cr = rest.last() == Some(&b'\r');
                    return (input.len(), false);
                };
                let run = rest.get(..k).unwrap_or_default();
                if let Some(&last) = run.last() {
                    out.extend_from_slice(run);
                    self.last_cr = last == b'\r';
                }
                self.normal(b'\n', out);
                i += k + 1;
                continue;
            }
            i += 1;
            match self.held {
                1 => {
                    self.held = 0;
                    if b == b'\r' {
                        self.held = 2;
                    } else if b == b'\n' {
                        // `.` ended by a bare LF: content, never the end.
                        self.bare_lf = true;
                        out.extend_from_slice(b".\r\n");
                        self.line_start = true;
                        self.prev_crlf = false;
                        self.last_cr = false;
                    } else {
                        self.line_start = false;
                        self.normal(b, out);
                    }
                }
                2 => {
                    self.held = 0;
                    if b == b'\n' {
                        if self.prev_crlf {
                            return (i, true);
                        }
                        out.extend_from_slice(b".\r\n");
                        self.line_start = true;
                        self.prev_crlf = true;
                        self.last_cr = false;
                    } else {
                        out.push(b'\r');
                        self.last_cr = true;
                        self.line_start = false;
                        self.normal(b, out);
                    }
                }
                _ if self.line_start && b == b'.' => self.held = 1,
                _ => self.normal(b, out),
            }
        }
        (input.len(), false)
    }
}

/// Counts the header section (up to the first empty line).
#[derive(Debug, Clone, Default)]
struct HeaderCounter {
    done: bool,
    line_len: u64,
    bytes: u64,
}

impl HeaderCounter {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.done {
                return;
            }
            self.bytes += 1;
            if b == b'\n' {
                if self.line_len == 0 {
                    self.done = true;
                }
                self.line_len = 0;
            } else if b != b'\r' {
                self.line_len += 1;
            }
        }
    }
}

/// What the session does once cleanup has named the queue ID.
#[derive(Debug)]
pub enum AfterStart {
    /// Answer 354 and read DATA content.
    Data,
    /// Read the BDAT chunk.
    Bdat {
        /// Its size.
        remaining: u64,
        /// `LAST` was given.
        last: bool,
    },
}

/// A message being received.
#[derive(Debug, Default)]
pub struct MessageState {
    size: u64,
    too_big: bool,
    header: HeaderCounter,
    header_too_big: bool,
    bare_lf: bool,
    /// Cleanup failed (connection refused or broken).
    pub broken: bool,
    /// The cleanup connection was dropped on purpose.
    pub aborted: bool,
    chunked: bool,
}

impl Session {
    fn data_restrictions(&self) -> Option<Reply> {
        match policy::evaluate(&self.cfg.restrictions.data, Stage::Data, &self.facts(None, None)) {
            Verdict::Reject(r) => Some(r),
            Verdict::Permit => None,
        }
    }

    pub(super) fn data(&mut self) {
        let Some(tx) = &self.tx else {
            return self.send(common::sequence("need MAIL command"));
        };
        if tx.recipients.is_empty() {
            return self.send(Reply::new(554, Dsn::INVALID_COMMAND, "Error: no valid recipients"));
        }
        if tx.message.is_some() {
            return self.send(common::sequence("DATA after BDAT"));
        }
        if let Some(r) = self.data_restrictions() {
            return self.reject(RejectStage::Data, r, None, None);
        }
        self.begin_message(false);
        self.wait = Wait::Started(AfterStart::Data);
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool) {
        let error = match &self.tx {
            None => Some(common::sequence("need MAIL command")),
            Some(tx) if tx.recipients.is_empty() => {
                Some(Reply::new(554, Dsn::INVALID_COMMAND, "Error: no valid recipients"))
            }
            Some(tx) if tx.message.is_none() => {
                let refused = self.data_restrictions();
                if let Some(r) = &refused {
                    tracing::info!("{}", self.reject_line(RejectStage::Data, r, None, None));
                }
                refused
            }
            Some(_) => None,
        };
        if error.is_none() && self.tx.as_ref().is_some_and(|t| t.message.is_none()) {
            self.begin_message(true);
            self.wait = Wait::Started(AfterStart::Bdat { remaining: size, last });
            return;
        }
        self.phase = Phase::Bdat {
            remaining: size,
            last,
            error,
        };
    }

    /// cleanup named the queue ID (or failed: `None`, and the message is marked broken):
    /// the `Received:` header goes first, then the content the client sends.
    pub(super) fn message_started(&mut self, queue_id: Option<&str>, next: AfterStart) {
        let broken = self
            .tx
            .as_ref()
            .and_then(|t| t.message.as_ref())
            .is_none_or(|m| m.broken || m.aborted);
        if !broken {
            if let Some(id) = queue_id {
                let sasl = match &self.auth_user {
                    Some(u) => format!(", sasl_method={}, sasl_username={u}", self.sasl_method),
                    None => String::new(),
                };
                tracing::info!("{id}: client={}[{}]{sasl}", self.client.name, self.client.addr);
                if let Some(t) = self.tx.as_mut() {
                    t.id_logged = true;
                    t.queue_id = Some(id.to_string());
                }
            }
            let header = self.received_header(queue_id);
            self.out.push(Action::Data(header.into_bytes()));
        }
        match next {
            AfterStart::Data => {
                self.send(Reply::plain(354, vec!["End data with <CR><LF>.<CR><LF>".into()]));
                self.phase = Phase::Data(DotDecoder::new());
            }
            AfterStart::Bdat { remaining, last } => {
                self.phase = Phase::Bdat {
                    remaining,
                    last,
                    error: None,
                };
            }
        }
    }

    /// The `Received:` header for the message being begun.
    fn received_header(&self, queue_id: Option<&str>) -> String {
        let helo = self.helo.as_deref().unwrap_or_default();
        let single = self
            .tx
            .as_ref()
            .filter(|t| t.recipients.len() == 1)
            .and_then(|t| t.recipients.first())
            .map(|r| r.address.as_str());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let addr = self.client.addr.to_string();
        received::header(&ReceivedFacts {
            helo,
            client_name: &self.client.name,
            client_addr: &addr,
            tls: self.tls.as_ref(),
            sasl_user: self.auth_user.as_deref(),
            hostname: &self.cfg.hostname,
            protocol: self.protocol_name(),
            queue_id,
            single_rcpt: single,
            now,
        })
    }

    fn begin_message(&mut self, chunked: bool) {
        let protocol = self.protocol_name();
        let helo = self.helo.clone().unwrap_or_default();
        let Some(tx) = self.tx.as_mut() else { return };
        let m = &tx.mail;
        let mut attributes = BTreeMap::new();
        attributes.insert(attr::CLIENT_NAME.into(), self.client.name.clone());
        attributes.insert(attr::CLIENT_ADDR.into(), self.client.addr.to_string());
        attributes.insert(attr::HELO.into(), helo.clone());
        attributes.insert(attr::PROTOCOL.into(), protocol.into());
        if let Some(u) = &self.auth_user {
            attributes.insert(attr::SASL_USERNAME.into(), u.clone());
        }
        if let Some(s) = m.size {
            attributes.insert(attr::SIZE.into(), s.to_string());
        }
        if let Some(b) = m.body {
            let b = match b {
                super::command::Body::SevenBit => "7BIT",
                super::command::Body::EightBitMime => "8BITMIME",
            };
            attributes.insert(attr::BODY.into(), b.into());
        }
        if m.smtputf8 {
            attributes.insert(attr::SMTPUTF8.into(), "yes".into());
        }
        if let Some(r) = &m.ret {
            attributes.insert(attr::DSN_RET.into(), r.clone());
        }
        if let Some(e) = &m.envid {
            attributes.insert(attr::DSN_ENVID.into(), e.clone());
        }
        let sender = m.path.as_ref().map(|p| p.to_string()).unwrap_or_default();
        let submission = Submission {
            sender,
            recipients: tx.recipients.clone(),
            origin: Origin::Smtp,
            extract_recipients: false,
            hold: false,
            attributes,
        };
        tx.message = Some(MessageState {
            chunked,
            ..MessageState::default()
        });
        self.out.push(Action::Begin(Box::new(submission)));
    }

    /// Content received: count it, check limits, pass it on.
    fn content(&mut self, bytes: Vec<u8>) {
        let limit = self.cfg.message_size_limit;
        let hlimit = self.cfg.header_size_limit;
        let Some(m) = self.tx.as_mut().and_then(|t| t.message.as_mut()) else {
            return;
        };
        m.size = m.size.saturating_add(bytes.len() as u64);
        m.header.feed(&bytes);
        if m.size > limit {
            m.too_big = true;
        }
        if m.header.bytes > hlimit {
            m.header_too_big = true;
        }
        if m.broken || m.aborted {
            return;
        }
        if m.too_big || m.header_too_big {
            m.aborted = true;
            self.out.push(Action::Abort);
            return;
        }
        if !bytes.is_empty() {
            self.out.push(Action::Data(bytes));
        }
    }

    /// DATA input; returns whether anything was consumed.
    pub(super) fn data_input(&mut self, input: &mut LineBuffer) -> bool {
        let Phase::Data(dec) = &mut self.phase else {
            return false;
        };
        let mut out = Vec::with_capacity(input.pending_len());
        let (n, done) = dec.feed(input.pending(), &mut out);
        let bare = dec.bare_lf;
        input.take_up_to(n);
        if let Some(m) = self.tx.as_mut().and_then(|t| t.message.as_mut()) {
            m.bare_lf = bare;
        }
        self.content(out);
        if done {
            self.phase = Phase::Command;
            self.finish_message();
        }
        n > 0
    }

    /// BDAT input; returns whether progress was made.
    pub(super) fn bdat_input(&mut self, input: &mut LineBuffer) -> bool {
        let Phase::Bdat { remaining, error, .. } = &mut self.phase else {
            return false;
        };
        if *remaining > 0 {
            if input.pending_len() == 0 {
                return false;
            }
            let n = usize::try_from(*remaining).unwrap_or(usize::MAX);
            let chunk = input.take_up_to(n);
            *remaining -= chunk.len() as u64;
            let more = *remaining > 0;
            if error.is_none() {
                self.content(chunk);
            }
            if more {
                return true;
            }
        }
        let Phase::Bdat { last, error, .. } = std::mem::replace(&mut self.phase, Phase::Command) else {
            return false;
        };
        if let Some(e) = error {
            self.send(e);
            return true;
        }
        let too_big = self
            .tx
            .as_ref()
            .and_then(|t| t.message.as_ref())
            .is_some_and(|m| m.too_big || m.header_too_big);
        if last || too_big {
            self.finish_message();
        } else {
            self.send(Reply::new(250, Dsn::OK, "Ok: chunk received"));
        }
        true
    }

    /// The end of the message: refuse it, or ask cleanup to commit it.
    fn finish_message(&mut self) {
        let mut by_policy = false;
        let refusal = {
            let Some(m) = self.tx.as_ref().and_then(|t| t.message.as_ref()) else {
                return self.send(common::sequence("need MAIL command"));
            };
            if m.too_big {
                Some(Reply::new(552, Dsn::TOO_BIG, "Error: message file too big"))
            } else if m.header_too_big {
                Some(Reply::new(
                    552,
                    Dsn::TOO_BIG,
                    "Error: message header size exceeds limit",
                ))
            } else if m.bare_lf && !m.chunked && self.cfg.reject_bare_newline {
                Some(Reply::new(550, Dsn::SYNTAX_ERROR, "Error: bare <LF> received"))
            } else if m.broken {
                Some(common::local_error())
            } else {
                match policy::evaluate(&self.cfg.restrictions.end_of_data, Stage::Data, &self.facts(None, None)) {
                    Verdict::Reject(r) => {
                        by_policy = true;
                        Some(r)
                    }
                    Verdict::Permit => None,
                }
            }
        };
        match refusal {
            Some(r) => {
                if by_policy {
                    tracing::info!("{}", self.reject_line(RejectStage::EndOfMessage, &r, None, None));
                }
                self.abort_message();
                self.tx = None;
                self.send(r);
            }
            None => {
                self.out.push(Action::End);
                self.wait = Wait::Cleanup;
            }
        }
    }

    pub(super) fn message_result(&mut self, reply: Option<CleanupReply>) {
        let tx = self.tx.take();
        let r = match reply {
            Some(CleanupReply::Queued { queue_id }) | Some(CleanupReply::Discarded { queue_id }) => {
                // With a queue ID named at the start, the `client=` line was logged then.
                if let Some(tx) = tx.as_ref().filter(|t| !t.id_logged) {
                    tracing::info!(
                        "{queue_id}: client={}[{}]{}, from=<{}>, nrcpt={}",
                        self.client.name,
                        self.client.addr,
                        self.auth_user
                            .as_ref()
                            .map(|u| format!(", sasl_username={u}"))
                            .unwrap_or_default(),
                        tx.mail.path.as_ref().map(|p| p.to_string()).unwrap_or_default(),
                        tx.recipients.len()
                    );
                }
                Reply::new(250, Dsn::OK, format!("Ok: queued as {queue_id}"))
            }
            Some(CleanupReply::Rejected { code, dsn, text }) => {
                let code = if (500..600).contains(&code) { code } else { 554 };
                let dsn = dsn.or_if_not(DsnClass::Permanent, Dsn::NOT_AUTHORIZED);
                Reply::new(code, dsn, text)
            }
            Some(CleanupReply::TempFail { code, dsn, text }) => {
                let code = if (400..500).contains(&code) { code } else { 451 };
                let dsn = dsn.or_if_not(DsnClass::Transient, Dsn::MAIL_SYSTEM);
                Reply::new(code, dsn, text)
            }
            None => common::local_error(),
        };
        self.send(r);
    }

    /// Drops a message in progress (RSET, QUIT, timeout, disconnect, errors).
    pub(super) fn abort_message(&mut self) {
        if matches!(self.phase, Phase::Data(_) | Phase::Bdat { .. }) {
            self.phase = Phase::Command;
        }
        if let Some(tx) = self.tx.as_mut()
            && let Some(m) = tx.message.take()
            && !m.aborted
            && !m.broken
        {
            self.out.push(Action::Abort);
        }
        if matches!(self.wait, Wait::Cleanup | Wait::Started(_)) {
            self.wait = Wait::Nothing;
            self.tx = None;
        }
    }
}
