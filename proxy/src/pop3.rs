//! The POP3 side of the proxy (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH PLAIN, RFC 2595
//! STLS).
//!
//! Before login the proxy answers CAPA, USER, PASS, AUTH PLAIN (initial response or
//! after `+ `), STLS (when a certificate is configured), NOOP and QUIT itself. The
//! backend login is `USER name*master` / `PASS password`.
//!
//! After login every command line is relayed; the backend's answers are framed (one
//! line, or a multi-line answer up to its `.` line for RETR, TOP, CAPA and LIST/UIDL
//! without an argument), so that the `+OK` to QUIT — where the backend commits the DELEs
//! — is held until the user is synced when the session deleted something.

use crate::dialect::{Dialect, LastWords, Login, Pre, Security, Step, chomp, shown, take_line};
use postern_lib::skeleton::conn::{Io, Line};
use std::collections::VecDeque;
use zeroize::Zeroizing;

/// The longest command line (pop3d's).
pub const MAX_LINE: usize = 2048;
/// The longest status line from a backend.
const MAX_STATUS_LINE: usize = 4096;

/// A command the backend has not yet answered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// A `+OK` answer has more lines, up to `.`.
    multi: bool,
    /// QUIT after a DELE: its `+OK` waits for the sync.
    commit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resp {
    /// The status line of the next answer.
    Status,
    /// The lines of a multi-line answer; whether at the start of a line.
    Body(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BLogin {
    Greeting,
    User,
    Pass,
}

/// The POP3 dialect.
pub struct Pop3 {
    user: Option<String>,
    sasl: bool,
    blogin: BLogin,
    pending: VecDeque<Pending>,
    resp: Resp,
    deleted: bool,
    quitting: bool,
    held: Vec<u8>,
}

#[cfg(test)]
impl Pop3 {
    /// Expects the answer to a command (`multi`: a multi-line one).
    pub(crate) fn expect(&mut self, multi: bool, commit: bool) {
        self.pending.push_back(Pending { multi, commit });
    }
}

impl Default for Pop3 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pop3 {
    /// A new connection's dialect.
    pub fn new() -> Pop3 {
        Pop3 {
            user: None,
            sasl: false,
            blogin: BLogin::Greeting,
            pending: VecDeque::new(),
            resp: Resp::Status,
            deleted: false,
            quitting: false,
            held: Vec::new(),
        }
    }

    fn plain(&mut self, io: &mut Io<'_>, b64: &[u8]) -> Pre {
        if b64 == b"*" {
            io.send(b"-ERR [AUTH] Authentication cancelled\r\n");
            return Pre::Done;
        }
        if let Some(verify) = crate::dialect::sasl_plain(b64) {
            return verify;
        }
        io.send(b"-ERR [AUTH] Invalid PLAIN response\r\n");
        Pre::Done
    }
}

/// `+OK` at the start of a status line.
fn is_ok(line: &[u8]) -> bool {
    line.get(..3).is_some_and(|p| p.eq_ignore_ascii_case(b"+OK"))
}

/// POP3's last words.
const LAST_WORDS: LastWords = LastWords {
    lost: b"-ERR [SYS/TEMP] The connection to the mailbox server was lost\r\n",
    backend_timeout: b"-ERR [SYS/TEMP] The mailbox server did not answer in time\r\n",
    login: b"-ERR Disconnected: no login in time\r\n",
    shutdown: b"-ERR [SYS/TEMP] Server shutting down, try again later\r\n",
    idle: b"-ERR Autologout; idle for too long\r\n",
};

impl Dialect for Pop3 {
    fn greeting(&mut self, _sec: &Security) -> Vec<u8> {
        b"+OK Postern proxy ready\r\n".to_vec()
    }

    fn preauth(&mut self, io: &mut Io<'_>, sec: &Security) -> Pre {
        let line = match io.line(MAX_LINE) {
            Line::Partial => return Pre::Wait,
            Line::TooLong => {
                io.send(b"-ERR Command line too long\r\n");
                io.close();
                return Pre::Done;
            }
            Line::Line(l) => Zeroizing::new(l),
        };
        if self.sasl {
            self.sasl = false;
            return self.plain(io, &line);
        }
        let text = String::from_utf8_lossy(&line);
        let mut words = text.split(' ');
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let args: Vec<&str> = words.collect();
        let reply: &[u8] = match (verb.as_str(), args.as_slice()) {
            ("CAPA", _) => {
                let mut c = String::from(
                    "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n",
                );
                if sec.cleartext_ok() {
                    c.push_str("USER\r\nSASL PLAIN\r\n");
                }
                if sec.tls_available && !sec.tls {
                    c.push_str("STLS\r\n");
                }
                c.push_str("IMPLEMENTATION Postern proxy\r\n.\r\n");
                io.send(c.as_bytes());
                return Pre::Done;
            }
            ("USER" | "PASS" | "AUTH", _) if !sec.cleartext_ok() => {
                b"-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections\r\n"
            }
            ("USER", [name]) => {
                self.user = Some(name.chars().take(256).collect());
                b"+OK Send your password\r\n"
            }
            ("USER", _) => b"-ERR Usage: USER name\r\n",
            ("PASS", _) => match self.user.take() {
                Some(login) => {
                    let password = Zeroizing::new(
                        line.get(5..)
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .unwrap_or_default(),
                    );
                    return Pre::Verify { login, password };
                }
                None => b"-ERR USER first\r\n",
            },
            ("AUTH", []) => b"+OK\r\nPLAIN\r\n.\r\n",
            ("AUTH", [mech]) if mech.eq_ignore_ascii_case("PLAIN") => {
                self.sasl = true;
                b"+ \r\n"
            }
            ("AUTH", [mech, ir]) if mech.eq_ignore_ascii_case("PLAIN") => {
                let ir = Zeroizing::new(ir.as_bytes().to_vec());
                return self.plain(io, &ir);
            }
            ("AUTH", _) => b"-ERR Unsupported authentication mechanism\r\n",
            ("STLS", _) if sec.tls => b"-ERR TLS is already active\r\n",
            ("STLS", _) if !sec.tls_available => b"-ERR TLS is not available\r\n",
            ("STLS", []) => {
                io.send(b"+OK Begin TLS negotiation now\r\n");
                return Pre::StartTls;
            }
            ("STLS", _) => b"-ERR Usage: STLS\r\n",
            ("NOOP", []) => b"+OK\r\n",
            ("QUIT", _) => {
                io.send(b"+OK Bye\r\n");
                io.close();
                return Pre::Done;
            }
            ("STAT" | "LIST" | "RETR" | "DELE" | "RSET" | "TOP" | "UIDL" | "NOOP", _) => b"-ERR Log in first\r\n",
            _ => b"-ERR Unknown command\r\n",
        };
        io.send(reply);
        Pre::Done
    }

    fn reset_login(&mut self) {
        self.blogin = BLogin::Greeting;
    }

    fn auth_failed(&mut self) -> Vec<u8> {
        b"-ERR [AUTH] Authentication failed\r\n".to_vec()
    }

    fn unavailable(&mut self, text: &str) -> Vec<u8> {
        format!("-ERR [SYS/TEMP] {text}\r\n").into_bytes()
    }

    fn backend_login(&mut self, inp: &mut Vec<u8>, out: &mut Vec<u8>, login: &str, password: &str) -> Login {
        loop {
            let line = match take_line(inp, MAX_STATUS_LINE) {
                Ok(Some(l)) => l,
                Ok(None) => return Login::Wait,
                Err(e) => return Login::Failed(e),
            };
            if !is_ok(&line) {
                let what = match self.blogin {
                    BLogin::Greeting => "greeting",
                    BLogin::User => "USER",
                    BLogin::Pass => "master login refused",
                };
                return Login::Failed(format!("{what}: {}", shown(&line)));
            }
            match self.blogin {
                BLogin::Greeting => {
                    out.extend_from_slice(format!("USER {login}\r\n").as_bytes());
                    self.blogin = BLogin::User;
                }
                BLogin::User => {
                    out.extend_from_slice(b"PASS ");
                    out.extend_from_slice(password.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    self.blogin = BLogin::Pass;
                }
                BLogin::Pass => return Login::Done(b"+OK Logged in.\r\n".to_vec()),
            }
        }
    }

    fn client_input(&mut self, io: &mut Io<'_>, to_backend: &mut Vec<u8>, max: usize) -> Result<bool, Vec<u8>> {
        let mut progress = false;
        while to_backend.len() < max {
            let line = match io.line(MAX_LINE) {
                Line::Partial => break,
                Line::TooLong => return Err(b"-ERR Command line too long\r\n".to_vec()),
                Line::Line(l) => l,
            };
            progress = true;
            let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
            let verb = words.next().unwrap_or_default().to_ascii_uppercase();
            let has_arg = words.next().is_some();
            let multi = match verb.as_slice() {
                b"RETR" | b"TOP" | b"CAPA" => true,
                b"LIST" | b"UIDL" => !has_arg,
                _ => false,
            };
            if verb == b"DELE" {
                self.deleted = true;
            }
            let quit = verb == b"QUIT";
            if quit {
                self.quitting = true;
            }
            self.pending.push_back(Pending {
                multi,
                commit: quit && self.deleted,
            });
            to_backend.extend_from_slice(&line);
            to_backend.extend_from_slice(b"\r\n");
        }
        Ok(progress)
    }

    /// One step of the framing of the backend's answers: a status line (whole), a
    /// multi-line answer's line or part of one, or a changing command's success to hold.
    fn response_step(&mut self, rest: &[u8], left: usize, out: &mut Vec<u8>) -> Step {
        let Resp::Body(at_start) = self.resp else {
            let Some(p) = memchr::memchr(b'\n', rest) else {
                if rest.len() > MAX_STATUS_LINE {
                    return Step::Bad("status line too long".into());
                }
                return Step::Wait;
            };
            let line = &rest[..=p];
            let Some(cmd) = self.pending.pop_front() else {
                return Step::Bad(format!("unsolicited: {}", shown(line)));
            };
            let ok = is_ok(line);
            if !ok && !line.starts_with(b"-ERR") {
                return Step::Bad(format!("not a status line: {}", shown(line)));
            }
            if ok && cmd.multi {
                self.resp = Resp::Body(true);
            } else if ok && cmd.commit {
                return Step::Hold(p + 1, line.to_vec());
            }
            out.extend_from_slice(line);
            return Step::Used(p + 1);
        };
        let lf = memchr::memchr(b'\n', rest);
        if at_start && rest.first() == Some(&b'.') {
            let Some(p) = lf else {
                // a line starting with "." may be the end: wait for all of it
                if rest.len() > MAX_STATUS_LINE {
                    out.extend_from_slice(rest);
                    self.resp = Resp::Body(false);
                    return Step::Used(rest.len());
                }
                return Step::Wait;
            };
            let line = &rest[..=p];
            out.extend_from_slice(line);
            if chomp(line) == b"." {
                self.resp = Resp::Status;
            }
            return Step::Used(p + 1);
        }
        match lf {
            Some(p) if p < left => {
                out.extend_from_slice(&rest[..=p]);
                self.resp = Resp::Body(true);
                Step::Used(p + 1)
            }
            _ => {
                let k = rest.len().min(left);
                out.extend_from_slice(&rest[..k]);
                self.resp = Resp::Body(false);
                Step::Used(k)
            }
        }
    }

    fn held(&mut self) -> &mut Vec<u8> {
        &mut self.held
    }

    fn outstanding(&self) -> bool {
        !self.pending.is_empty()
    }

    fn quitting(&self) -> bool {
        self.quitting
    }

    fn last_words(&self) -> &'static LastWords {
        &LAST_WORDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_answers_end_at_the_dot_and_quit_after_dele_is_held() {
        let mut d = Pop3::new();
        d.pending.push_back(Pending {
            multi: true,
            commit: false,
        });
        d.pending.push_back(Pending {
            multi: false,
            commit: false,
        });
        d.pending.push_back(Pending {
            multi: false,
            commit: true,
        });
        let body = b"+OK 20 octets\r\n..dot\r\n.x\r\nline\r\n.\r\n+OK deleted\r\n+OK bye\r\n";
        let mut out = Vec::new();
        // fed a byte at a time: the framing never depends on how the bytes arrive
        let mut inp = Vec::new();
        let mut held = false;
        for b in body {
            inp.push(*b);
            let r = d.backend_input(&mut inp, 1 << 20, &mut out);
            assert!(r.bad.is_none());
            held |= r.hold;
        }
        assert!(held);
        assert_eq!(out, b"+OK 20 octets\r\n..dot\r\n.x\r\nline\r\n.\r\n+OK deleted\r\n");
        assert_eq!(d.release(), b"+OK bye\r\n");
        let mut junk = b"+OK nobody asked\r\n".to_vec();
        assert!(d.backend_input(&mut junk, 1 << 20, &mut out).bad.is_some());
    }
}
