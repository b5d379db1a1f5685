//! The TCP protocol between the two nodes' mirror daemons.
//!
//! Frames both ways: `kind` (1 byte), `length` (4 bytes, big-endian, payload only), payload.
//! A receiver checks the length against the most it accepts for that kind before it
//! allocates anything, and every read and write has a timeout.
//!
//! | kind | from | payload |
//! | --- | --- | --- |
//! | `H` | server | 32 random bytes: the server's challenge |
//! | `A` | client | 32 random bytes (the client's challenge), then HMAC-SHA256(secret, `"postern-mirror client"` ‖ server challenge ‖ client challenge) |
//! | `K` | server | HMAC-SHA256(secret, `"postern-mirror server"` ‖ client challenge ‖ server challenge) |
//! | `P` | client | put: 1 byte n, n bytes queue ID, then the queue file |
//! | `D` | client | drop: queue IDs separated by `\n` |
//! | `I` | client | ping (empty) |
//! | `Q` | client | rejoin: queue IDs of the client's own queue, `\n`-separated: which did you adopt? |
//! | `S` | client | check or rejoin: queue IDs of the copies the client holds: which are still queued (or being written) at you? |
//! | `O` | server | done: the copy is durable / dropped / pong (empty); for `Q` and `S` the answer, queue IDs `\n`-separated, a subset of those asked; for `S` after a first line `token:` and the server's queue token |
//! | `F` | server | failed: a line of text |
//!
//! Both sides prove that they know the shared secret without sending it: a server that
//! cannot check the client's proof closes the connection (and logs the client address); a
//! client that gets a wrong proof from the server does not send it anything. Each side's
//! challenge is fresh per connection, so a recorded exchange cannot be replayed.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Largest payload of a frame other than a put.
pub const MAX_CONTROL: usize = 64 * 1024;
/// What a put may hold beyond `message_size_limit`: the envelope records of the queue
/// file (sender, recipients, attributes, done marks).
pub const ENVELOPE_ALLOWANCE: u64 = 4 * 1024 * 1024;
/// Most queue IDs in one rejoin question (16 characters and a newline each: 17 KB).
pub const MAX_ASK: usize = 1000;
/// The first line of the answer to [`kind::QUEUED`]: `token:` and the answering node's
/// queue token ([`crate::store::queue_token`]).
pub const TOKEN_LINE: &str = "token:";
/// Bytes of a challenge.
const CHALLENGE: usize = 32;
/// Bytes of an HMAC-SHA256 tag.
const TAG: usize = 32;
/// The longest a server waits for the next request on an idle connection.
pub const IDLE: Duration = Duration::from_secs(300);

/// Frame kinds.
pub mod kind {
    /// Server challenge.
    pub const HELLO: u8 = b'H';
    /// Client challenge and proof.
    pub const AUTH: u8 = b'A';
    /// Server proof.
    pub const AUTH_OK: u8 = b'K';
    /// A queue file to keep.
    pub const PUT: u8 = b'P';
    /// Queue IDs whose copies go.
    pub const DROP: u8 = b'D';
    /// Are you there?
    pub const PING: u8 = b'I';
    /// Which of these (my queue IDs) did you adopt while I was down?
    pub const ADOPTED: u8 = b'Q';
    /// Which of these (your queue IDs, copies I hold) are still queued at you?
    pub const QUEUED: u8 = b'S';
    /// Done.
    pub const OK: u8 = b'O';
    /// Failed, with a reason.
    pub const FAILED: u8 = b'F';
}

/// The shared secret as an HMAC key.
pub fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

/// Reads a secret file's content: trailing white space removed, at least 16 bytes.
pub fn parse_secret(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end < 16 {
        return Err("the shared secret must be at least 16 bytes".into());
    }
    Ok(bytes[..end].to_vec())
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, k: u8, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = k;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    for p in parts {
        w.write_all(p)?;
    }
    w.flush()
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The connection closed between frames.
    Closed,
    /// I/O error or timeout.
    Io(io::Error),
    /// The peer broke the protocol (unknown kind, length over the bound, short frame).
    Protocol(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => f.write_str("connection closed"),
            FrameError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                f.write_str("timed out")
            }
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::Protocol(s) => write!(f, "protocol error: {s}"),
        }
    }
}

/// Reads one frame whose payload may be at most `max(kind)` bytes.
pub fn read_frame(r: &mut impl Read, max: impl Fn(u8) -> Option<usize>) -> Result<(u8, Vec<u8>), FrameError> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Protocol("connection closed inside a frame header".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let k = head[0];
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let Some(most) = max(k) else {
        return Err(FrameError::Protocol(format!("unexpected frame kind 0x{k:02x}")));
    };
    if len > most {
        return Err(FrameError::Protocol(format!(
            "frame of kind {:?} announces {len} bytes, more than {most}",
            k as char
        )));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Protocol("connection closed inside a frame".into()),
        _ => FrameError::Io(e),
    })?;
    Ok((k, payload))
}

fn challenge() -> Result<[u8; CHALLENGE], String> {
    let mut c = [0u8; CHALLENGE];
    SystemRandom::new()
        .fill(&mut c)
        .map_err(|_| "no random numbers".to_string())?;
    Ok(c)
}

fn proof(key: &hmac::Key, label: &[u8], first: &[u8], second: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(label);
    ctx.update(first);
    ctx.update(second);
    ctx.sign()
}

const CLIENT_LABEL: &[u8] = b"postern-mirror client";
const SERVER_LABEL: &[u8] = b"postern-mirror server";

/// The server side of the handshake; `Err` is a line for the log (the caller closes).
pub fn server_handshake(s: &mut TcpStream, key: &hmac::Key) -> Result<(), String> {
    let ours = challenge()?;
    write_frame(s, kind::HELLO, &[&ours]).map_err(|e| format!("sending the challenge: {e}"))?;
    let (k, p) = read_frame(s, |k| (k == kind::AUTH).then_some(CHALLENGE + TAG))
        .map_err(|e| format!("reading the client's proof: {e}"))?;
    if k != kind::AUTH || p.len() != CHALLENGE + TAG {
        return Err("malformed proof".into());
    }
    let (theirs, tag) = p.split_at(CHALLENGE);
    let mut msg = Vec::with_capacity(CLIENT_LABEL.len() + 2 * CHALLENGE);
    msg.extend_from_slice(CLIENT_LABEL);
    msg.extend_from_slice(&ours);
    msg.extend_from_slice(theirs);
    hmac::verify(key, &msg, tag).map_err(|_| "wrong proof of the shared secret".to_string())?;
    let reply = proof(key, SERVER_LABEL, theirs, &ours);
    write_frame(s, kind::AUTH_OK, &[reply.as_ref()]).map_err(|e| format!("sending our proof: {e}"))
}

/// An authenticated connection to the peer's mirror daemon.
#[derive(Debug)]
pub struct PeerConn {
    stream: TcpStream,
    /// When it was last used (a pooled connection idle for long may have been closed).
    pub last_used: Instant,
}

impl PeerConn {
    /// Connects to `peer` (`host:port`) and authenticates both ways, each step waiting at
    /// most until `deadline`.
    pub fn connect(peer: &str, key: &hmac::Key, deadline: Instant) -> Result<PeerConn, String> {
        let addrs: Vec<_> = peer
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {peer}: {e}"))?
            .collect();
        let mut last = format!("{peer}: no address");
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, left(deadline)?) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = format!("connect to {a}: {e}"),
            }
        }
        let mut s = stream.ok_or(last)?;
        let _ = s.set_nodelay(true);
        set_deadline(&s, deadline)?;
        let (k, p) = read_frame(&mut s, |k| (k == kind::HELLO).then_some(CHALLENGE))
            .map_err(|e| format!("reading the peer's challenge: {e}"))?;
        if k != kind::HELLO || p.len() != CHALLENGE {
            return Err("malformed challenge from the peer".into());
        }
        let ours = challenge()?;
        let tag = proof(key, CLIENT_LABEL, &p, &ours);
        set_deadline(&s, deadline)?;
        write_frame(&mut s, kind::AUTH, &[&ours, tag.as_ref()]).map_err(|e| format!("sending our proof: {e}"))?;
        set_deadline(&s, deadline)?;
        let (k, reply) = read_frame(&mut s, |k| (k == kind::AUTH_OK).then_some(TAG))
            .map_err(|e| format!("reading the peer's proof: {e}"))?;
        let mut msg = Vec::with_capacity(SERVER_LABEL.len() + 2 * CHALLENGE);
        msg.extend_from_slice(SERVER_LABEL);
        msg.extend_from_slice(&ours);
        msg.extend_from_slice(&p);
        if k != kind::AUTH_OK || hmac::verify(key, &msg, &reply).is_err() {
            return Err("the peer's proof of the shared secret is wrong".into());
        }
        Ok(PeerConn {
            stream: s,
            last_used: Instant::now(),
        })
    }

    /// Sends queue file `data` of `queue_id`; Ok once the peer has it durably.
    pub fn put(&mut self, queue_id: &str, data: &[u8], deadline: Instant) -> Result<(), String> {
        let n = [u8::try_from(queue_id.len()).map_err(|_| "queue ID too long".to_string())?];
        self.request(kind::PUT, &[&n, queue_id.as_bytes(), data], deadline)
            .map(|_| ())
    }

    /// Asks the peer to drop its copies of `ids`.
    pub fn drop_copies(&mut self, ids: &[String], deadline: Instant) -> Result<(), String> {
        self.request(kind::DROP, &[ids.join("\n").as_bytes()], deadline)
            .map(|_| ())
    }

    /// Checks that the peer answers.
    pub fn ping(&mut self, deadline: Instant) -> Result<(), String> {
        self.request(kind::PING, &[], deadline).map(|_| ())
    }

    /// Asks the peer a rejoin question ([`kind::ADOPTED`] or [`kind::QUEUED`]) about `ids`
    /// (at most [`MAX_ASK`]); the answer is the subset of `ids` it names (anything else
    /// in its answer is ignored).
    pub fn ask(&mut self, k: u8, ids: &[String], deadline: Instant) -> Result<Vec<String>, String> {
        if ids.len() > MAX_ASK {
            return Err(format!("at most {MAX_ASK} queue IDs per question"));
        }
        let answer = self.request(k, &[ids.join("\n").as_bytes()], deadline)?;
        let named: std::collections::HashSet<&[u8]> = answer.split(|&b| b == b'\n').collect();
        Ok(ids.iter().filter(|id| named.contains(id.as_bytes())).cloned().collect())
    }

    /// Asks the peer which of `ids` (copies this node holds) are still queued there
    /// ([`kind::QUEUED`]): its queue token (the answer's first line, [`TOKEN_LINE`]; None
    /// when it sent none) and the subset of `ids` it names.
    pub fn ask_queued(&mut self, ids: &[String], deadline: Instant) -> Result<(Option<String>, Vec<String>), String> {
        if ids.len() > MAX_ASK {
            return Err(format!("at most {MAX_ASK} queue IDs per question"));
        }
        let answer = self.request(kind::QUEUED, &[ids.join("\n").as_bytes()], deadline)?;
        let token = answer
            .split(|&b| b == b'\n')
            .next()
            .and_then(|l| l.strip_prefix(TOKEN_LINE.as_bytes()))
            .and_then(|t| std::str::from_utf8(t).ok())
            .filter(|t| crate::store::valid_token(t))
            .map(str::to_string);
        let named: std::collections::HashSet<&[u8]> = answer.split(|&b| b == b'\n').collect();
        Ok((
            token,
            ids.iter().filter(|id| named.contains(id.as_bytes())).cloned().collect(),
        ))
    }

    fn request(&mut self, k: u8, parts: &[&[u8]], deadline: Instant) -> Result<Vec<u8>, String> {
        let result = self.exchange(k, parts, deadline);
        if result.is_err() {
            // The connection is given up: closed with a reset (SO_LINGER 0), so what is
            // still in its send buffer is discarded, not delivered when a cut link heals —
            // a put this node answered for without the peer (451 or degraded) must not
            // become a copy there that nobody will ever tell it to drop.
            let _ = rustix::net::sockopt::set_socket_linger(&self.stream, Some(Duration::ZERO));
        }
        result
    }

    fn exchange(&mut self, k: u8, parts: &[&[u8]], deadline: Instant) -> Result<Vec<u8>, String> {
        set_deadline(&self.stream, deadline)?;
        write_frame(&mut self.stream, k, parts).map_err(|e| format!("sending: {}", FrameError::Io(e)))?;
        self.last_used = Instant::now();
        // The whole wait for the answer is bounded by the deadline, however the peer
        // dribbles it.
        set_deadline(&self.stream, deadline)?;
        let (rk, p) = read_frame(&mut self.stream, |k| {
            matches!(k, kind::OK | kind::FAILED).then_some(MAX_CONTROL)
        })
        .map_err(|e| format!("waiting for the acknowledgement: {e}"))?;
        match rk {
            kind::OK => Ok(p),
            _ => Err(format!(
                "the peer failed: {}",
                postern_lib::strbuf::printable_bounded(&p, 300)
            )),
        }
    }
}

/// Time left until `deadline`, or an error when none is.
pub fn left(deadline: Instant) -> Result<Duration, String> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err("timed out".into());
    }
    Ok(d)
}

fn set_deadline(s: &TcpStream, deadline: Instant) -> Result<(), String> {
    let d = left(deadline)?;
    s.set_read_timeout(Some(d))
        .and_then(|()| s.set_write_timeout(Some(d)))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(server_secret: &'static [u8], client_secret: &'static [u8]) -> (Result<(), String>, Result<(), String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            server_handshake(&mut s, &key(server_secret))
        });
        let c = PeerConn::connect(&addr, &key(client_secret), Instant::now() + Duration::from_secs(5)).map(|_| ());
        (t.join().unwrap(), c)
    }

    #[test]
    fn same_secret_authenticates_both_ways() {
        let (s, c) = pair(b"0123456789abcdef!", b"0123456789abcdef!");
        assert_eq!(s, Ok(()));
        assert_eq!(c, Ok(()));
    }

    #[test]
    fn wrong_secret_is_refused() {
        let (s, c) = pair(b"0123456789abcdef!", b"0123456789abcdefX");
        assert_eq!(s, Err("wrong proof of the shared secret".into()));
        assert!(c.is_err());
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation() {
        let mut bytes = vec![kind::PUT];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = read_frame(&mut &bytes[..], |_| Some(1024)).unwrap_err();
        assert!(matches!(e, FrameError::Protocol(_)), "{e}");
        let e = read_frame(&mut &b"Z\0\0\0\0"[..], |k| (k == kind::PUT).then_some(10)).unwrap_err();
        assert!(e.to_string().contains("unexpected frame kind"), "{e}");
    }

    #[test]
    fn a_rejoin_answer_is_a_subset_of_the_question() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            server_handshake(&mut s, &key(b"0123456789abcdef!")).unwrap();
            let (k, p) = read_frame(&mut s, |_| Some(MAX_CONTROL)).unwrap();
            assert_eq!(k, kind::ADOPTED);
            assert_eq!(p, b"AAAAAAAAAAAAAAAA\nBBBBBBBBBBBBBBBB");
            // Names one asked and one never asked: only the first counts.
            write_frame(&mut s, kind::OK, &[b"BBBBBBBBBBBBBBBB\nZZZZZZZZZZZZZZZZ"]).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut c = PeerConn::connect(&addr, &key(b"0123456789abcdef!"), deadline).unwrap();
        let asked = vec!["AAAAAAAAAAAAAAAA".to_string(), "BBBBBBBBBBBBBBBB".to_string()];
        assert_eq!(c.ask(kind::ADOPTED, &asked, deadline).unwrap(), vec![asked[1].clone()]);
        t.join().unwrap();
        let too_many = vec![asked[0].clone(); MAX_ASK + 1];
        assert!(c.ask(kind::QUEUED, &too_many, deadline).is_err());
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(parse_secret(b"short\n").is_err());
        assert_eq!(parse_secret(b"0123456789abcdef\n").unwrap(), b"0123456789abcdef");
    }
}
