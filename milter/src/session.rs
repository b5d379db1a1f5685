//! One conversation with one milter for one message.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::wire::{self, cmd, proto, reply};
use super::{Endpoint, Message, MilterError, Modification, Outcome, Timeouts, Transaction, Verdict, strip_brackets};

/// A connected socket of either family.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn set_timeout(&self, t: Duration) -> Result<(), MilterError> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Conn::Unix(s) => s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t)),
            Conn::Tcp(s) => s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t)),
        }
        .map_err(MilterError::Io)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn connect(ep: &Endpoint, timeout: Duration) -> Result<Conn, MilterError> {
    match ep {
        Endpoint::Unix(p) => UnixStream::connect(p).map(Conn::Unix).map_err(MilterError::Connect),
        Endpoint::Inet(host, port) => {
            let addrs = (host.as_str(), *port).to_socket_addrs().map_err(MilterError::Connect)?;
            let mut last = None;
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout.max(Duration::from_millis(1))) {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(Conn::Tcp(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(MilterError::Connect(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no address for milter host")
            })))
        }
    }
}

/// What a stage's reply said.
enum Step {
    /// Go on to the next stage.
    Continue,
    /// Stop sending body chunks (body stage only).
    Skip,
    /// The conversation is decided.
    Done(Verdict),
}

struct Session {
    conn: Conn,
    version: u32,
    flags: u32,
    timeouts: Timeouts,
    mods: Vec<Modification>,
}

/// Talks to the milter at `ep` about `msg`; see the module documentation.
pub fn run(ep: &Endpoint, timeouts: Timeouts, tx: &Transaction, msg: &Message) -> Result<Outcome, MilterError> {
    let conn = connect(ep, timeouts.connect)?;
    conn.set_timeout(timeouts.connect)?;
    let mut s = Session {
        conn,
        version: wire::VERSION,
        flags: 0,
        timeouts,
        mods: Vec::new(),
    };
    s.negotiate()?;
    let verdict = s.conversation(tx, msg)?;
    // Best effort: the outcome is known whatever happens to the goodbye.
    let _ = wire::send(&mut s.conn, cmd::QUIT, &[]);
    Ok(Outcome {
        verdict,
        modifications: s.mods,
    })
}

impl Session {
    fn negotiate(&mut self) -> Result<(), MilterError> {
        let mut data = Vec::with_capacity(12);
        data.extend_from_slice(&wire::VERSION.to_be_bytes());
        data.extend_from_slice(&wire::ALL_ACTIONS.to_be_bytes());
        data.extend_from_slice(&proto::SUPPORTED.to_be_bytes());
        wire::send(&mut self.conn, cmd::OPTNEG, &data)?;
        let (c, d) = wire::recv(&mut self.conn)?;
        if c != cmd::OPTNEG || d.len() < 12 {
            return Err(MilterError::Protocol(format!(
                "expected an option negotiation reply, got {:?} ({} bytes)",
                char::from(c),
                d.len()
            )));
        }
        let word = |i: usize| {
            d.get(i..i + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .unwrap_or(0)
        };
        let version = word(0);
        if !(2..=wire::VERSION).contains(&version) {
            return Err(MilterError::Protocol(format!("unsupported milter version {version}")));
        }
        let flags = word(8);
        if flags & !proto::SUPPORTED != 0 {
            return Err(MilterError::Protocol(format!(
                "milter asks for protocol flags {flags:#x}"
            )));
        }
        self.version = version;
        self.flags = flags;
        Ok(())
    }

    fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    fn macros(&mut self, stage: u8, list: &[(String, String)]) -> Result<(), MilterError> {
        if list.is_empty() {
            return Ok(());
        }
        let mut data = vec![stage];
        for (k, v) in list {
            wire::put_str(&mut data, k.as_bytes());
            wire::put_str(&mut data, v.as_bytes());
        }
        wire::send(&mut self.conn, cmd::MACRO, &data)
    }

    /// Sends a command and, unless `no_reply`, reads the reply.
    fn command(&mut self, c: u8, data: &[u8], no_reply: bool, timeout: Duration) -> Result<Step, MilterError> {
        self.conn.set_timeout(timeout)?;
        wire::send(&mut self.conn, c, data)?;
        if no_reply {
            return Ok(Step::Continue);
        }
        self.reply(c == cmd::BODYEOB, c == cmd::BODY)
    }

    fn reply(&mut self, eom: bool, body: bool) -> Result<Step, MilterError> {
        loop {
            let (r, d) = wire::recv(&mut self.conn)?;
            let strings = || wire::strings(&d);
            match r {
                reply::CONTINUE => return Ok(Step::Continue),
                reply::ACCEPT => return Ok(Step::Done(Verdict::Accept)),
                reply::DISCARD => return Ok(Step::Done(Verdict::Discard)),
                reply::REJECT => {
                    return Ok(Step::Done(Verdict::Reject {
                        code: 550,
                        dsn: "5.7.1".into(),
                        text: "Command rejected".into(),
                    }));
                }
                reply::TEMPFAIL | reply::CONN_FAIL | reply::SHUTDOWN => {
                    return Ok(Step::Done(Verdict::TempFail {
                        code: 451,
                        dsn: "4.7.1".into(),
                        text: "Service unavailable - try again later".into(),
                    }));
                }
                reply::REPLYCODE => return parse_replycode(&strings().join(" ")).map(Step::Done),
                reply::SKIP if body => return Ok(Step::Skip),
                reply::PROGRESS => continue,
                _ if !eom => {
                    return Err(MilterError::Protocol(format!("unexpected reply {:?}", char::from(r))));
                }
                _ => {
                    if self.mods.len() >= super::MAX_MODIFICATIONS {
                        return Err(MilterError::Protocol("too many modifications".into()));
                    }
                    let m = modification(r, &d)?;
                    self.mods.push(m);
                }
            }
        }
    }

    fn conversation(&mut self, tx: &Transaction, msg: &Message) -> Result<Verdict, MilterError> {
        let cmd_t = self.timeouts.command;
        let content_t = self.timeouts.content;
        macro_rules! step {
            ($e:expr) => {
                match $e? {
                    Step::Done(v) => return Ok(v),
                    Step::Continue | Step::Skip => {}
                }
            };
        }
        // connect
        if !self.has(proto::NOCONNECT) {
            self.macros(cmd::CONNECT, &tx.macros)?;
            let mut d = Vec::new();
            wire::put_str(&mut d, tx.client_name.as_bytes());
            let (fam, addr) = match tx.client_addr {
                Some(IpAddr::V4(a)) => (b'4', a.to_string()),
                Some(IpAddr::V6(a)) => (b'6', a.to_string()),
                None => (b'4', "127.0.0.1".to_string()),
            };
            d.push(fam);
            d.extend_from_slice(&tx.client_port.to_be_bytes());
            wire::put_str(&mut d, addr.as_bytes());
            step!(self.command(cmd::CONNECT, &d, self.has(proto::NR_CONN), cmd_t));
        }
        // helo
        if !self.has(proto::NOHELO) && !tx.helo.is_empty() {
            let mut d = Vec::new();
            wire::put_str(&mut d, tx.helo.as_bytes());
            step!(self.command(cmd::HELO, &d, self.has(proto::NR_HELO), cmd_t));
        }
        // mail
        if !self.has(proto::NOMAIL) {
            self.macros(cmd::MAIL, &[("{mail_addr}".into(), msg.sender.clone())])?;
            let mut d = Vec::new();
            wire::put_str(&mut d, format!("<{}>", msg.sender).as_bytes());
            for a in &tx.mail_args {
                wire::put_str(&mut d, a.as_bytes());
            }
            step!(self.command(cmd::MAIL, &d, self.has(proto::NR_MAIL), cmd_t));
        }
        // rcpt
        if !self.has(proto::NORCPT) {
            for r in &msg.recipients {
                self.macros(cmd::RCPT, &[("{rcpt_addr}".into(), r.clone())])?;
                let mut d = Vec::new();
                wire::put_str(&mut d, format!("<{r}>").as_bytes());
                match self.command(cmd::RCPT, &d, self.has(proto::NR_RCPT), cmd_t)? {
                    Step::Continue | Step::Skip => {}
                    Step::Done(Verdict::Reject { .. } | Verdict::TempFail { .. }) => {
                        // A refused recipient is dropped from the message, not the message.
                        self.mods.push(Modification::DeleteRecipient(r.clone()));
                    }
                    Step::Done(v) => return Ok(v),
                }
            }
        }
        // data (protocol version 4 and later)
        if self.version >= 4 && !self.has(proto::NODATA) {
            step!(self.command(cmd::DATA, &[], self.has(proto::NR_DATA), cmd_t));
        }
        // header fields
        if !self.has(proto::NOHDRS) {
            let leadspc = self.has(proto::HDR_LEADSPC);
            for f in msg.header.fields() {
                let mut d = Vec::new();
                wire::put_str(&mut d, f.name().as_bytes());
                let v = f.raw_value();
                let v = if leadspc { v } else { v.strip_prefix(b" ").unwrap_or(v) };
                let v: Vec<u8> = lf_to_crlf(v);
                wire::put_str(&mut d, &v);
                step!(self.command(cmd::HEADER, &d, self.has(proto::NR_HDR), cmd_t));
            }
        }
        if !self.has(proto::NOEOH) {
            step!(self.command(cmd::EOH, &[], self.has(proto::NR_EOH), cmd_t));
        }
        // body
        if !self.has(proto::NOBODY) {
            let body = lf_to_crlf(&msg.body);
            for chunk in body.chunks(wire::CHUNK) {
                match self.command(cmd::BODY, chunk, self.has(proto::NR_BODY), content_t)? {
                    Step::Continue => {}
                    Step::Skip => break,
                    Step::Done(v) => return Ok(v),
                }
            }
        }
        match self.command(cmd::BODYEOB, &[], false, content_t)? {
            Step::Done(v) => Ok(v),
            Step::Continue | Step::Skip => Ok(Verdict::Continue),
        }
    }
}

/// LF → CRLF (an existing CRLF stays).
fn lf_to_crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 32);
    let mut prev = 0u8;
    for &c in b {
        if c == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

fn parse_replycode(text: &str) -> Result<Verdict, MilterError> {
    // "550 5.7.1 Text" (possibly multi-line "550-5.7.1 a\r\n550 5.7.1 b": take the first line).
    let line = text.lines().next().unwrap_or("").trim();
    let code: u16 = line
        .get(..3)
        .and_then(|c| c.parse().ok())
        .filter(|c| (400..600).contains(c))
        .ok_or_else(|| {
            MilterError::Protocol(format!(
                "bad reply code {:?}",
                postern_lib::strbuf::printable_bounded(line.as_bytes(), 80)
            ))
        })?;
    let rest = line.get(4..).unwrap_or("").trim();
    let (dsn, text) = match rest.split_once(' ') {
        Some((d, t)) if is_dsn(d) => (d.to_owned(), t.trim().to_owned()),
        _ if is_dsn(rest) => (rest.to_owned(), String::new()),
        _ => (if code >= 500 { "5.7.1" } else { "4.7.1" }.to_owned(), rest.to_owned()),
    };
    let text = postern_lib::strbuf::printable_bounded(text.as_bytes(), 400);
    Ok(if code >= 500 {
        Verdict::Reject { code, dsn, text }
    } else {
        Verdict::TempFail { code, dsn, text }
    })
}

fn is_dsn(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts.first(), Some(&"2" | &"4" | &"5"))
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn modification(r: u8, d: &[u8]) -> Result<Modification, MilterError> {
    let bad = |what: &str| MilterError::Protocol(format!("malformed {what} request"));
    let index = || {
        d.get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_be_bytes(b) as usize)
    };
    Ok(match r {
        reply::ADDHEADER => {
            let s = wire::strings(d);
            match s.as_slice() {
                [n, v, ..] => Modification::AddHeader {
                    name: n.clone(),
                    value: v.clone(),
                },
                _ => return Err(bad("add header")),
            }
        }
        reply::INSHEADER | reply::CHGHEADER => {
            let i = index().ok_or_else(|| bad("header"))?;
            let s = wire::strings(d.get(4..).unwrap_or_default());
            let (n, v) = match s.as_slice() {
                [n, v, ..] => (n.clone(), v.clone()),
                [n] => (n.clone(), String::new()),
                _ => return Err(bad("header")),
            };
            if r == reply::INSHEADER {
                Modification::InsertHeader {
                    index: i,
                    name: n,
                    value: v,
                }
            } else {
                Modification::ChangeHeader {
                    index: i,
                    name: n,
                    value: v,
                }
            }
        }
        reply::ADDRCPT | reply::ADDRCPT_PAR => {
            let s = wire::strings(d);
            let a = s
                .first()
                .map(|a| strip_brackets(a).to_owned())
                .ok_or_else(|| bad("add recipient"))?;
            if a.is_empty() || a.bytes().any(|b| b < 0x20) {
                return Err(bad("add recipient"));
            }
            Modification::AddRecipient(a)
        }
        reply::DELRCPT => {
            let s = wire::strings(d);
            Modification::DeleteRecipient(
                s.first()
                    .map(|a| strip_brackets(a).to_owned())
                    .ok_or_else(|| bad("delete recipient"))?,
            )
        }
        reply::CHGFROM => {
            let s = wire::strings(d);
            let a = s
                .first()
                .map(|a| strip_brackets(a).to_owned())
                .ok_or_else(|| bad("change sender"))?;
            if a.bytes().any(|b| b < 0x20) {
                return Err(bad("change sender"));
            }
            Modification::ChangeSender(a)
        }
        reply::REPLBODY => Modification::ReplaceBody(d.to_vec()),
        reply::QUARANTINE => {
            let s = wire::strings(d);
            Modification::Quarantine(postern_lib::strbuf::printable_bounded(
                s.first().map(String::as_bytes).unwrap_or_default(),
                200,
            ))
        }
        other => {
            return Err(MilterError::Protocol(format!(
                "unexpected reply {:?}",
                char::from(other)
            )));
        }
    })
}

#[cfg(test)]
pub(super) fn test_parse_replycode(t: &str) -> Result<Verdict, MilterError> {
    parse_replycode(t)
}
