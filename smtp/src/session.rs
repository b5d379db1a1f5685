//! One SMTP (or LMTP) client session with one server: greeting, EHLO (HELO as fallback,
//! LHLO for LMTP), STARTTLS per the TLS level, then transactions: MAIL, RCPT per
//! recipient, DATA with the content dot-stuffed and LF turned into CRLF, one reply per
//! transaction (SMTP) or per accepted recipient (LMTP, RFC 2033). Blocking I/O with a
//! timeout on every read and write, so a server that hangs costs this one delivery
//! process its timeout and nothing else.
//!
//! Attacks that shaped it: a server sending data right after `220 Ready to start TLS`
//! (a command-injection attempt, CVE-2011-0411 style) ends the session; replies are
//! bounded in length and lines ([`crate::reply`]).

use crate::lookup::Target;
use crate::reply::{MAX_LINE, Reply, read_reply};
use crate::tls::Level;
use postern_lib::line::{DotStuffer, LineReader};
use rustls::pki_types::ServerName;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The byte stream, plain or TLS.
pub enum Conn {
    /// Cleartext.
    Plain(TcpStream),
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
            Conn::Tls(s) => s.read(buf),
            Conn::Closed => Err(closed()),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Closed => Err(closed()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
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
            SessionError::Tls(e) => write!(f, "TLS is required, but {e}"),
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
    /// TLS level.
    pub tls_level: Level,
    /// TLS configs.
    pub tls: crate::tls::Configs,
    /// Speak LMTP instead of SMTP.
    pub lmtp: bool,
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
}

fn io_err(e: io::Error) -> SessionError {
    SessionError::Io(e.to_string())
}

impl Session {
    /// Connects and gets the session ready: greeting, EHLO, STARTTLS when the level asks.
    pub fn open(target: &Target, p: &Params) -> Result<Session, SessionError> {
        let tcp = TcpStream::connect_timeout(&target.addr, p.connect_timeout)
            .map_err(|e| SessionError::Io(format!("connect to {}[{}]: {e}", target.host, target.addr)))?;
        tcp.set_read_timeout(Some(p.io_timeout)).map_err(io_err)?;
        tcp.set_write_timeout(Some(p.io_timeout)).map_err(io_err)?;
        let _ = tcp.set_nodelay(true);
        let mut s = Session {
            reader: LineReader::new(Conn::Plain(tcp), MAX_LINE),
            extensions: Vec::new(),
            tls: false,
            reused: false,
            target: target.clone(),
            lmtp: p.lmtp,
        };
        let greeting = s.reply()?;
        if greeting.code != 220 {
            return Err(SessionError::Refused(greeting));
        }
        s.hello(&p.helo_name)?;
        let offered = s.has("STARTTLS");
        if p.tls_level != Level::None && offered {
            s.starttls(p)?;
            s.hello(&p.helo_name)?;
        } else if p.tls_level.required() {
            return Err(SessionError::Tls(format!(
                "was not offered by host {}[{}]",
                target.host, target.addr
            )));
        }
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

    fn starttls(&mut self, p: &Params) -> Result<(), SessionError> {
        let r = self.command("STARTTLS")?;
        if r.code != 220 {
            return if p.tls_level.required() {
                Err(SessionError::Tls(format!("STARTTLS was refused: {}", r.one_line())))
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
        let name = ServerName::try_from(self.target.host.clone())
            .or_else(|_| ServerName::try_from(self.target.addr.ip().to_string()))
            .map_err(|e| SessionError::Tls(format!("bad server name: {e}")))?;
        let conn = rustls::ClientConnection::new(p.tls.for_level(p.tls_level), name)
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| SessionError::Tls(format!("handshake failed: {e}")))?;
        }
        self.reader = LineReader::new(Conn::Tls(Box::new(stream)), MAX_LINE);
        self.tls = true;
        Ok(())
    }

    /// Sends one command line and reads its reply.
    pub fn command(&mut self, line: &str) -> Result<Reply, SessionError> {
        let w = self.reader.get_mut();
        w.write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\r\n"))
            .and_then(|_| w.flush())
            .map_err(io_err)?;
        self.reply()
    }

    fn reply(&mut self) -> Result<Reply, SessionError> {
        read_reply(&mut self.reader).map_err(io_err)
    }

    /// One mail transaction. Returns the reply for each recipient, in order; `Err` when
    /// the session broke mid-way (the caller defers what has no final reply).
    pub fn transaction(
        &mut self,
        sender: &str,
        mail_params: &str,
        recipients: &[String],
        content: &mut dyn Read,
    ) -> Result<Vec<Reply>, SessionError> {
        if self.has("PIPELINING") {
            return self.pipelined(sender, mail_params, recipients, content);
        }
        let mail = self.command(&format!("MAIL FROM:<{sender}>{mail_params}"))?;
        if !mail.is_positive() {
            let _ = self.command("RSET");
            return Ok(vec![mail; recipients.len()]);
        }
        let mut replies = Vec::with_capacity(recipients.len());
        for r in recipients {
            replies.push(self.command(&format!("RCPT TO:<{r}>"))?);
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
        recipients: &[String],
        content: &mut dyn Read,
    ) -> Result<Vec<Reply>, SessionError> {
        let mut batch = format!("MAIL FROM:<{sender}>{mail_params}\r\n");
        for r in recipients {
            batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        batch.push_str("DATA\r\n");
        let w = self.reader.get_mut();
        w.write_all(batch.as_bytes()).and_then(|_| w.flush()).map_err(io_err)?;
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
        self.send_content(content)?;
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
        let mut stuffer = DotStuffer::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(80 * 1024);
        loop {
            let n = content
                .read(&mut buf)
                .map_err(|e| SessionError::Io(format!("reading queue file: {e}")))?;
            out.clear();
            if n == 0 {
                stuffer.finish(&mut out);
                self.reader
                    .get_mut()
                    .write_all(&out)
                    .and_then(|_| self.reader.get_mut().flush())
                    .map_err(io_err)?;
                return Ok(());
            }
            stuffer.push(&buf[..n], &mut out);
            self.reader.get_mut().write_all(&out).map_err(io_err)?;
        }
    }

    /// Says goodbye.
    pub fn quit(mut self) {
        let _ = self.command("QUIT");
    }
}
