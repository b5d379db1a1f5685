//! One SMTP (or LMTP) client session with one server: greeting, EHLO (HELO as fallback,
//! LHLO for LMTP), STARTTLS per the TLS level, then transactions: MAIL, RCPT per
//! recipient, DATA with the content dot-stuffed, LF turned into CRLF and lines longer than
//! `smtp_line_length_limit` broken ([`crate::fold`]), one reply per
//! transaction (SMTP) or per accepted recipient (LMTP, RFC 2033). Blocking I/O with a
//! timeout on every read and write (`smtp_helo_timeout` for the greeting and EHLO,
//! `smtp_timeout` after), so a server that hangs costs this one delivery process its
//! timeout and nothing else; the error says where, in Postfix's words (`conversation with
//! host[addr] timed out while receiving the initial server greeting`).
//!
//! Attacks that shaped it: a server sending data right after `220 Ready to start TLS`
//! (a command-injection attempt, CVE-2011-0411 style) ends the session; replies are
//! bounded in length and lines ([`crate::reply`]).

use crate::fold::LineFolder;
use crate::lookup::{Addr, Target};
use crate::reply::{MAX_LINE, Reply, read_reply};
use crate::tls::Policy;
use postern_lib::line::{DotStuffer, LineReader};
use rustls::pki_types::ServerName;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The byte stream, plain or TLS.
pub enum Conn {
    /// Cleartext.
    Plain(TcpStream),
    /// A Unix-domain socket (LMTP to a local server).
    Unix(UnixStream),
    /// After STARTTLS.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// Only while the stream moves into TLS.
    Closed,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Closed => Err(closed()),
        }
    }
}

impl Conn {
    /// Sets the read and write timeout.
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.set_read_timeout(Some(t)).and_then(|_| s.set_write_timeout(Some(t))),
            Conn::Unix(s) => s.set_read_timeout(Some(t)).and_then(|_| s.set_write_timeout(Some(t))),
            Conn::Tls(s) => s
                .sock
                .set_read_timeout(Some(t))
                .and_then(|_| s.sock.set_write_timeout(Some(t))),
            Conn::Closed => Err(closed()),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Closed => Err(closed()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Closed => Err(closed()),
        }
    }
}

/// Why a session could not be used (the next address may do better).
#[derive(Debug)]
pub enum SessionError {
    /// Network trouble: connect, timeout, reset, malformed replies.
    Io(String),
    /// The server refused us with this reply (greeting, EHLO, STARTTLS).
    Refused(Reply),
    /// TLS is required and failed or was not offered.
    Tls(String),
}

impl SessionError {
    /// Whether this is worth a retry later (everything but a 5xx refusal).
    pub fn is_temporary(&self) -> bool {
        !matches!(self, SessionError::Refused(r) if r.code >= 500)
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Io(e) => write!(f, "{e}"),
            SessionError::Refused(r) => write!(f, "host refused: {}", r.one_line()),
            SessionError::Tls(e) => write!(f, "{e}"),
        }
    }
}

/// Settings of a session.
#[derive(Clone)]
pub struct Params {
    /// Our name in EHLO.
    pub helo_name: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of each read and write.
    pub io_timeout: Duration,
    /// Timeout of the greeting and the EHLO exchange.
    pub helo_timeout: Duration,
    /// TLS configs.
    pub tls: crate::tls::Configs,
    /// Speak LMTP instead of SMTP.
    pub lmtp: bool,
    /// `smtp_line_length_limit`: longer lines are broken ([`crate::fold`]); 0: never.
    pub line_limit: usize,
}

/// An open session, ready for a transaction.
pub struct Session {
    reader: LineReader<Conn>,
    /// The server's EHLO keywords, upper-cased (`SIZE 1000`, `PIPELINING`, ...).
    pub extensions: Vec<String>,
    /// Whether the session is encrypted.
    pub tls: bool,
    /// Whether it already carried a transaction (it came from the connection cache).
    pub reused: bool,
    /// Who we talk to.
    pub target: Target,
    lmtp: bool,
    line_limit: usize,
    /// What the session is doing, for the error text of a timeout or a lost connection.
    stage: &'static str,
}

fn io_err(e: io::Error) -> SessionError {
    SessionError::Io(postern_lib::log::plain_error(&e))
}

/// Whether an I/O error is a timeout.
fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl Session {
    /// Connects and gets the session ready: greeting, EHLO, STARTTLS as `policy` asks
    /// (`nexthop` is the nexthop's domain or host, for certificate name matching).
    pub fn open(target: &Target, p: &Params, policy: &Policy, nexthop: &str) -> Result<Session, SessionError> {
        let refused = |e: io::Error| {
            let e = postern_lib::log::plain_error(&e);
            SessionError::Io(format!("connect to {}[{}]: {e}", target.host, target.addr))
        };
        let conn = match &target.addr {
            Addr::Inet(a) => {
                let tcp = TcpStream::connect_timeout(a, p.connect_timeout).map_err(refused)?;
                let _ = tcp.set_nodelay(true);
                Conn::Plain(tcp)
            }
            Addr::Unix(path) => Conn::Unix(UnixStream::connect(path).map_err(refused)?),
        };
        conn.set_timeout(p.helo_timeout).map_err(io_err)?;
        let mut s = Session {
            reader: LineReader::new(conn, MAX_LINE),
            extensions: Vec::new(),
            tls: false,
            reused: false,
            target: target.clone(),
            lmtp: p.lmtp,
            line_limit: p.line_limit,
            stage: "receiving the initial server greeting",
        };
        let greeting = s.reply()?;
        if greeting.code != 220 {
            return Err(SessionError::Refused(greeting));
        }
        s.hello(&p.helo_name)?;
        let offered = s.has("STARTTLS");
        let unix = matches!(target.addr, Addr::Unix(_));
        if policy.level != crate::tls::Level::None && offered && !unix {
            s.starttls(p, policy, nexthop)?;
            s.hello(&p.helo_name)?;
        } else if policy.level.required() {
            return Err(SessionError::Tls(format!(
                "TLS is required, but was not offered by host {}",
                target.name()
            )));
        }
        s.reader.get_ref().set_timeout(p.io_timeout).map_err(io_err)?;
        s.stage = "sending message";
        Ok(s)
    }

    /// Whether the server announced `keyword`.
    pub fn has(&self, keyword: &str) -> bool {
        self.extensions
            .iter()
            .any(|e| e.split_whitespace().next() == Some(keyword))
    }

    /// The server's SIZE limit, if announced with a value.
    pub fn size_limit(&self) -> Option<u64> {
        self.extensions
            .iter()
            .find_map(|e| e.strip_prefix("SIZE "))
            .and_then(|v| v.trim().parse().ok())
            .filter(|&v| v > 0)
    }

    fn hello(&mut self, name: &str) -> Result<(), SessionError> {
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        self.stage = "performing the EHLO handshake";
        let r = self.command(&format!("{verb} {name}"))?;
        if r.is_positive() {
            self.extensions = r.lines.iter().skip(1).map(|l| l.trim().to_ascii_uppercase()).collect();
            return Ok(());
        }
        if self.lmtp || r.code < 500 {
            return Err(SessionError::Refused(r));
        }
        let r = self.command(&format!("HELO {name}"))?;
        if !r.is_positive() {
            return Err(SessionError::Refused(r));
        }
        self.extensions.clear();
        Ok(())
    }

    fn starttls(&mut self, p: &Params, policy: &Policy, nexthop: &str) -> Result<(), SessionError> {
        self.stage = "performing the STARTTLS handshake";
        let r = self.command("STARTTLS")?;
        if r.code != 220 {
            return if policy.level.required() {
                Err(SessionError::Tls(format!(
                    "TLS is required, but host {} refused to start TLS: {}",
                    self.target.name(),
                    r.one_line()
                )))
            } else {
                Err(SessionError::Refused(r))
            };
        }
        if !self.reader.buffered().is_empty() {
            return Err(SessionError::Io(
                "server sent data after STARTTLS reply (possible injection)".into(),
            ));
        }
        let reader = std::mem::replace(&mut self.reader, LineReader::new(Conn::Closed, MAX_LINE));
        let Conn::Plain(tcp) = reader.into_inner() else {
            return Err(SessionError::Tls("STARTTLS inside TLS".into()));
        };
        let ip = match &self.target.addr {
            Addr::Inet(a) => a.ip().to_string(),
            Addr::Unix(_) => String::new(),
        };
        let name = ServerName::try_from(self.target.host.clone())
            .or_else(|_| ServerName::try_from(ip))
            .map_err(|e| SessionError::Tls(format!("bad server name: {e}")))?;
        let config = p
            .tls
            .for_policy(policy, &self.target.host, nexthop)
            .map_err(SessionError::Tls)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| SessionError::Tls(e.to_string()))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                let why = if policy.level.verified() && e.kind() == io::ErrorKind::InvalidData {
                    format!("Server certificate not verified: {e}")
                } else {
                    format!("Cannot start TLS: handshake failure: {e}")
                };
                return Err(SessionError::Tls(format!("{why} (host {})", self.target.name())));
            }
        }
        self.reader = LineReader::new(Conn::Tls(Box::new(stream)), MAX_LINE);
        self.tls = true;
        Ok(())
    }

    /// Sends one command line and reads its reply.
    pub fn command(&mut self, line: &str) -> Result<Reply, SessionError> {
        let w = self.reader.get_mut();
        let sent = w
            .write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\r\n"))
            .and_then(|_| w.flush());
        sent.map_err(|e| self.failed(e))?;
        self.reply()
    }

    fn reply(&mut self) -> Result<Reply, SessionError> {
        read_reply(&mut self.reader).map_err(|e| self.failed(e))
    }

    /// The error for a failed read or write, naming the stage of a timeout.
    fn failed(&self, e: io::Error) -> SessionError {
        if timed_out(&e) {
            SessionError::Io(format!(
                "conversation with {} timed out while {}",
                self.target.name(),
                self.stage
            ))
        } else {
            io_err(e)
        }
    }

    /// One mail transaction; each recipient is `(address, RCPT parameters)`. Returns the
    /// reply for each recipient, in order; `Err` when the session broke mid-way (the
    /// caller defers what has no final reply).
    pub fn transaction(
        &mut self,
        sender: &str,
        mail_params: &str,
        recipients: &[(String, String)],
        content: &mut dyn Read,
    ) -> Result<Vec<Reply>, SessionError> {
        if self.has("PIPELINING") {
            return self.pipelined(sender, mail_params, recipients, content);
        }
        self.stage = "sending MAIL FROM";
        let mail = self.command(&format!("MAIL FROM:<{sender}>{mail_params}"))?;
        if !mail.is_positive() {
            let _ = self.command("RSET");
            return Ok(vec![mail; recipients.len()]);
        }
        let mut replies = Vec::with_capacity(recipients.len());
        self.stage = "sending RCPT TO";
        for (r, params) in recipients {
            replies.push(self.command(&format!("RCPT TO:<{r}>{params}"))?);
        }
        let accepted: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_positive())
            .map(|(i, _)| i)
            .collect();
        if accepted.is_empty() {
            let _ = self.command("RSET");
            return Ok(replies);
        }
        self.stage = "sending DATA command";
        let data = self.command("DATA")?;
        self.after_data(data, &accepted, replies, content)
    }

    /// RFC 2920: MAIL, every RCPT and DATA go out in one write; the replies are read in
    /// order. A server that says 354 although it accepted no recipient gets an empty
    /// message end (`.`), whose reply is ignored.
    fn pipelined(
        &mut self,
        sender: &str,
        mail_params: &str,
        recipients: &[(String, String)],
        content: &mut dyn Read,
    ) -> Result<Vec<Reply>, SessionError> {
        let mut batch = format!("MAIL FROM:<{sender}>{mail_params}\r\n");
        for (r, params) in recipients {
            batch.push_str(&format!("RCPT TO:<{r}>{params}\r\n"));
        }
        batch.push_str("DATA\r\n");
        self.stage = "sending MAIL FROM";
        let w = self.reader.get_mut();
        let sent = w.write_all(batch.as_bytes()).and_then(|_| w.flush());
        sent.map_err(|e| self.failed(e))?;
        let mail = self.reply()?;
        let mut replies = Vec::with_capacity(recipients.len());
        for _ in recipients {
            replies.push(self.reply()?);
        }
        let data = self.reply()?;
        let accepted: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_positive())
            .map(|(i, _)| i)
            .collect();
        let usable = mail.is_positive() && !accepted.is_empty();
        if data.code == 354 && !usable {
            let w = self.reader.get_mut();
            w.write_all(b".\r\n").and_then(|_| w.flush()).map_err(io_err)?;
            let _ = self.reply()?;
        }
        if !mail.is_positive() {
            let _ = self.command("RSET");
            return Ok(vec![mail; recipients.len()]);
        }
        if !usable {
            let _ = self.command("RSET");
            return Ok(replies);
        }
        self.after_data(data, &accepted, replies, content)
    }

    /// After the reply to DATA: the content and the final reply (one per accepted
    /// recipient for LMTP), or the DATA refusal copied to every accepted recipient.
    fn after_data(
        &mut self,
        data: Reply,
        accepted: &[usize],
        mut replies: Vec<Reply>,
        content: &mut dyn Read,
    ) -> Result<Vec<Reply>, SessionError> {
        if data.code != 354 {
            for &i in accepted {
                replies[i] = data.clone();
            }
            let _ = self.command("RSET");
            return Ok(replies);
        }
        self.stage = "sending message body";
        self.send_content(content)?;
        self.stage = "sending end of data -- message may be sent more than once";
        if self.lmtp {
            for &i in accepted {
                replies[i] = self.reply()?;
            }
        } else {
            let end = self.reply()?;
            for &i in accepted {
                replies[i] = end.clone();
            }
        }
        Ok(replies)
    }

    /// Makes a cached session ready for another transaction (RSET answered 250).
    pub fn reset(&mut self) -> bool {
        self.command("RSET").is_ok_and(|r| r.is_positive())
    }

    fn send_content(&mut self, content: &mut dyn Read) -> Result<(), SessionError> {
        let mut folder = LineFolder::new(self.line_limit);
        let mut stuffer = DotStuffer::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut folded = Vec::with_capacity(80 * 1024);
        let mut out = Vec::with_capacity(80 * 1024);
        loop {
            let n = content
                .read(&mut buf)
                .map_err(|e| SessionError::Io(format!("reading queue file: {e}")))?;
            out.clear();
            if n == 0 {
                stuffer.finish(&mut out);
                let w = self.reader.get_mut();
                let sent = w.write_all(&out).and_then(|_| w.flush());
                sent.map_err(|e| self.failed(e))?;
                return Ok(());
            }
            folded.clear();
            folder.push(&buf[..n], &mut folded);
            stuffer.push(&folded, &mut out);
            let sent = self.reader.get_mut().write_all(&out);
            sent.map_err(|e| self.failed(e))?;
        }
    }

    /// Says goodbye.
    pub fn quit(mut self) {
        let _ = self.command("QUIT");
    }
}
