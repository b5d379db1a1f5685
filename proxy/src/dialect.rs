//! What differs between the POP3 and the IMAP proxy, as one trait the connection
//! ([`crate::conn`]) drives: the client's side before login, the backend login as the
//! master user, and the framing of the relayed traffic in both directions (commands and
//! their literals from the client; responses, literals and multi-line answers from the
//! backend), so that the proxy knows when a changing command has been answered.

use postern_lib::skeleton::conn::{Ending, Io};
use zeroize::Zeroizing;

/// What the client may do before login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Security {
    /// TLS is active.
    pub tls: bool,
    /// STLS/STARTTLS can be offered.
    pub tls_available: bool,
    /// Cleartext passwords are taken (TLS, or a client in `proxy_secure_networks`).
    pub plaintext_ok: bool,
}

impl Security {
    /// Whether a password may be sent now.
    pub fn cleartext_ok(&self) -> bool {
        self.tls || self.plaintext_ok
    }
}

/// The outcome of one step before login.
pub enum Pre {
    /// No complete command yet.
    Wait,
    /// A command was answered (or the connection is closing).
    Done,
    /// Check this login with auth (the reply waits for the outcome).
    Verify {
        /// The login name.
        login: String,
        /// The password.
        password: Zeroizing<String>,
    },
    /// Start TLS (the go-ahead has been queued).
    StartTls,
}

/// The outcome of the backend login so far.
pub enum Login {
    /// More from the backend is needed.
    Wait,
    /// Logged in: the reply for the client.
    Done(Vec<u8>),
    /// The backend refused or said something unexpected (for the log).
    Failed(String),
}

/// What one pass over the backend's output did.
#[derive(Debug, Default)]
pub struct FromBackend {
    /// Bytes were used.
    pub progress: bool,
    /// A changing command's success was held back ([`Dialect::release`] gives it).
    pub hold: bool,
    /// The backend sent something that is not the protocol (for the log).
    pub bad: Option<String>,
}

/// One step of a dialect's framing of the backend's output ([`Dialect::backend_input`]).
pub enum Step {
    /// This many bytes were used (relayed, or kept by the dialect for later).
    Used(usize),
    /// Nothing more can be done until more comes.
    Wait,
    /// This many bytes were used, the last of them a changing command's success: held
    /// back (the line).
    Hold(usize, Vec<u8>),
    /// The backend sent something that is not the protocol (for the log).
    Bad(String),
}

/// One protocol's side of a proxied connection.
pub trait Dialect {
    /// The greeting.
    fn greeting(&mut self, sec: &Security) -> Vec<u8>;
    /// One command before login, from the client's input.
    fn preauth(&mut self, io: &mut Io<'_>, sec: &Security) -> Pre;
    /// A new backend connection: its login starts from the greeting.
    fn reset_login(&mut self);
    /// The reply to a login auth refused.
    fn auth_failed(&mut self) -> Vec<u8>;
    /// The reply to a login that cannot be completed now (`text` says why).
    fn unavailable(&mut self, text: &str) -> Vec<u8>;
    /// Goes on with the backend login as `login` with `password`: reads the backend's
    /// lines from `inp`, writes the commands to `out`.
    fn backend_login(&mut self, inp: &mut Vec<u8>, out: &mut Vec<u8>, login: &str, password: &str) -> Login;
    /// Relays client input to `to_backend` while it holds fewer than `max` bytes;
    /// whether bytes were used, or the last words for a client that broke the protocol.
    fn client_input(&mut self, io: &mut Io<'_>, to_backend: &mut Vec<u8>, max: usize) -> Result<bool, Vec<u8>>;
    /// One step of the framing of the backend's output: `rest` is the input not yet
    /// used, `left` the room left in `out` (more than 0).
    fn response_step(&mut self, rest: &[u8], left: usize, out: &mut Vec<u8>) -> Step;
    /// Where the held response is kept.
    fn held(&mut self) -> &mut Vec<u8>;
    /// Relays backend output from `inp` to `out` (at most about `room` bytes) a
    /// [`response_step`](Self::response_step) at a time, stopping at a changing command's
    /// success (held). The bytes used are taken from `inp`, unless the backend broke the
    /// protocol.
    fn backend_input(&mut self, inp: &mut Vec<u8>, room: usize, out: &mut Vec<u8>) -> FromBackend {
        let mut r = FromBackend::default();
        let mut used = 0;
        while used < inp.len() && out.len() < room {
            let left = room - out.len();
            match self.response_step(&inp[used..], left, out) {
                Step::Used(n) => used += n,
                Step::Wait => break,
                Step::Hold(n, line) => {
                    *self.held() = line;
                    inp.drain(..used + n);
                    r.progress = true;
                    r.hold = true;
                    return r;
                }
                Step::Bad(e) => {
                    r.bad = Some(e);
                    return r;
                }
            }
        }
        r.progress = used > 0;
        inp.drain(..used);
        r
    }
    /// The held response.
    fn release(&mut self) -> Vec<u8> {
        std::mem::take(self.held())
    }
    /// Whether the client has sent a command the backend has not yet answered (an IDLE
    /// the backend has accepted does not count).
    fn outstanding(&self) -> bool;
    /// Whether the session has ended normally (QUIT, LOGOUT, a BYE): the backend closing
    /// is expected.
    fn quitting(&self) -> bool;
    /// The protocol's last words.
    fn last_words(&self) -> &'static LastWords;
    /// Last words when the backend connection is lost.
    fn lost(&self) -> &'static [u8] {
        self.last_words().lost
    }
    /// Last words when the backend did not answer in time.
    fn backend_timeout(&self) -> &'static [u8] {
        self.last_words().backend_timeout
    }
    /// Last words when the driver ends the connection.
    fn ending(&self, why: Ending) -> &'static [u8] {
        let w = self.last_words();
        match why {
            Ending::Login => w.login,
            Ending::Shutdown => w.shutdown,
            Ending::Idle | Ending::Session | Ending::Phase => w.idle,
        }
    }
}

/// A protocol's last words before the proxy closes a connection (whole lines).
pub struct LastWords {
    /// The backend connection was lost.
    pub lost: &'static [u8],
    /// The backend did not answer in time.
    pub backend_timeout: &'static [u8],
    /// No login before the login deadline.
    pub login: &'static [u8],
    /// The process is stopping.
    pub shutdown: &'static [u8],
    /// Idle too long (or the whole session, or a phase).
    pub idle: &'static [u8],
}

/// Decodes a SASL PLAIN response (base64 of authzid NUL authcid NUL password, RFC 4616)
/// into the login to verify ([`postern_lib::proto::auth::plain_login`]: an authzid other
/// than the authcid asks for a master-user login); `None` when it is not one.
pub fn sasl_plain(b64: &[u8]) -> Option<Pre> {
    use base64::Engine;
    let decoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(b64).ok()?);
    let mut fields = decoded.split(|&b| b == 0);
    let (Some(z), Some(c), Some(p), None) = (fields.next(), fields.next(), fields.next(), fields.next()) else {
        return None;
    };
    let (Ok(z), Ok(c), Ok(p)) = (std::str::from_utf8(z), std::str::from_utf8(c), std::str::from_utf8(p)) else {
        return None;
    };
    if c.is_empty() {
        return None;
    }
    Some(Pre::Verify {
        login: postern_lib::proto::auth::plain_login(z, c),
        password: Zeroizing::new(p.to_string()),
    })
}

/// The size of a literal ending `line` (`{n}`, `{n+}`, `~{n}`; the CRLF already taken
/// off): `(n, synchronising)`. `None` when the line does not end in one or `n` does not
/// fit.
pub fn literal_at_end(line: &[u8]) -> Option<(u64, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = memchr::memrchr(b'{', inner)?;
    let (num, sync) = match inner.get(open + 1..)? {
        [n @ .., b'+'] => (n, false),
        n => (n, true),
    };
    if num.is_empty() || num.len() > 19 || !num.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(num).ok()?.parse().ok()?;
    Some((n, sync))
}

/// `line` without its line ending (LF or CRLF).
pub fn chomp(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// Takes one complete line (with its ending) from the front of `inp`; `Err` when more
/// than `max` bytes come without one.
pub fn take_line(inp: &mut Vec<u8>, max: usize) -> Result<Option<Vec<u8>>, String> {
    match memchr::memchr(b'\n', inp) {
        Some(p) if p < max => Ok(Some(inp.drain(..=p).collect())),
        Some(_) => Err("line too long".into()),
        None if inp.len() >= max => Err("line too long".into()),
        None => Ok(None),
    }
}

/// A line as it may appear in a log.
pub fn shown(line: &[u8]) -> String {
    postern_lib::strbuf::printable_bounded(chomp(line), 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_at_the_end_of_a_line() {
        assert_eq!(literal_at_end(b"a APPEND INBOX {12}"), Some((12, true)));
        assert_eq!(literal_at_end(b"a APPEND INBOX {12+}"), Some((12, false)));
        assert_eq!(literal_at_end(b"* 1 FETCH (BINARY[] ~{7}"), Some((7, true)));
        assert_eq!(literal_at_end(b"a LOGIN {x}"), None);
        assert_eq!(literal_at_end(b"a LOGIN {}"), None);
        assert_eq!(literal_at_end(b"a LOGIN {99999999999999999999}"), None);
        assert_eq!(literal_at_end(b"a NOOP"), None);
    }

    /// Hostile backend output (random bytes from a few alphabets, in random pieces, with
    /// little room) never panics either dialect, and what it forwards never exceeds what
    /// came in.
    #[test]
    fn garbage_from_a_backend_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: &[u8] = b"* +OK-ERR{}~0123456789 a.\r\n\r\n\n\"()";
        for round in 0..300 {
            let mut imap = crate::imap::Imap::new(100, 100);
            let mut pop3 = crate::pop3::Pop3::new();
            for (i, tag) in ["a", "0", "+", "*", "OK", "a"].iter().enumerate() {
                imap.classify(format!("{tag} {} 1 BODY[]", ["FETCH", "STORE", "IDLE"][i % 3]).as_bytes());
                pop3.expect(i % 2 == 0, i == 5);
            }
            let len = (next() % 400) as usize;
            let stream: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 5 == 0 {
                        (r >> 8) as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            for d in [&mut imap as &mut dyn Dialect, &mut pop3 as &mut dyn Dialect] {
                let (mut inp, mut total) = (Vec::new(), 0);
                for piece in stream.chunks(1 + round % 17) {
                    inp.extend_from_slice(piece);
                    let mut out = Vec::new();
                    let r = d.backend_input(&mut inp, 1 + (next() % 64) as usize, &mut out);
                    total += out.len() + d.release().len();
                    if r.bad.is_some() {
                        break;
                    }
                }
                assert!(total <= stream.len());
            }
        }
    }

    #[test]
    fn lines_are_taken_whole_and_bounded() {
        let mut v = b"one\r\ntwo".to_vec();
        assert_eq!(take_line(&mut v, 10).unwrap(), Some(b"one\r\n".to_vec()));
        assert_eq!(take_line(&mut v, 10).unwrap(), None);
        let mut long = vec![b'x'; 20];
        assert!(take_line(&mut long, 10).is_err());
    }
}
