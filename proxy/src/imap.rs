//! The IMAP side of the proxy (RFC 3501 / RFC 9051 framing).
//!
//! Before login the proxy answers CAPABILITY, NOOP, ID, LOGOUT, STARTTLS (when a
//! certificate is configured), LOGIN and AUTHENTICATE PLAIN (with SASL-IR, RFC 4959)
//! itself; command arguments may be atoms, quoted strings or literals (synchronising or
//! LITERAL+) of at most [`PRELOGIN_MAX_LITERAL`] bytes. The backend login is
//! `tag LOGIN "USER*MASTER" "password"`; its tagged OK (with its `[CAPABILITY ...]`) is
//! the client's answer, under the client's tag.
//!
//! After login everything is relayed. Client commands are framed only as far as needed:
//! the tag and command name of each command (to recognise a changing command's tagged
//! answer, IDLE and LOGOUT), and literals (`{n}`, `{n+}`, `~{n}`), whose bytes are passed
//! on without being read as commands and are bounded by `imapd_max_literal` (a larger
//! synchronising literal gets `BAD [TOOBIG]` and is not sent; a larger non-synchronising
//! one ends the connection with `* BYE`). Backend responses are framed by line and
//! literal the same way, so a FETCH of a message streams through in chunks.
//!
//! Changing commands (their tagged OK waits for the sync): STORE, COPY, MOVE, EXPUNGE,
//! APPEND, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, CLOSE, the UID forms, and a
//! FETCH of a body part that is not `.PEEK` (it sets `\Seen`).

use crate::dialect::{Dialect, LastWords, Login, Pre, Security, Step, chomp, literal_at_end, shown, take_line};
use postern_lib::skeleton::conn::{Io, Line};
use std::collections::VecDeque;
use zeroize::Zeroizing;

/// The longest command line before login.
pub const PRELOGIN_MAX_LINE: usize = 8 * 1024;
/// The largest literal before login.
pub const PRELOGIN_MAX_LITERAL: usize = 8 * 1024;
/// The longest response line from a backend (without its literals).
const MAX_RESPONSE_LINE: usize = 1024 * 1024;
/// The tag of the proxy's own LOGIN on the backend.
const LOGIN_TAG: &str = "P1";
/// What the proxy advertises before login (the backend's list comes with the login OK).
const CAPABILITIES: &str = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE";

/// A command the backend has not yet answered.
struct Pending {
    tag: Vec<u8>,
    changing: bool,
    idle: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Req {
    /// Reading a command line.
    Line,
    /// Passing on this many bytes of a literal.
    Literal(u64),
    /// After IDLE: the next line is the client's DONE.
    IdleDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BLogin {
    Greeting,
    Sent,
}

/// The IMAP dialect.
pub struct Imap {
    max_line: usize,
    max_literal: u64,
    // before login
    parts: Vec<Part>,
    want_literal: Option<usize>,
    sasl_tag: Option<String>,
    login_tag: String,
    // the backend login
    blogin: BLogin,
    // relay, client side
    req: Req,
    mid_command: bool,
    pending: VecDeque<Pending>,
    idling: bool,
    /// A synchronising literal has been announced and the backend's `+` not yet seen (a
    /// tagged NO instead means the client will not send it).
    await_cont: bool,
    // relay, backend side
    resp_line: Vec<u8>,
    resp_literal: u64,
    resp_mid: bool,
    held: Vec<u8>,
    quitting: bool,
}

enum Part {
    Text(Vec<u8>),
    Literal(Zeroizing<Vec<u8>>),
}

impl Imap {
    /// The dialect for a connection: client lines up to `max_line`, literals up to
    /// `max_literal` after login.
    pub fn new(max_line: usize, max_literal: u64) -> Imap {
        Imap {
            max_line,
            max_literal,
            parts: Vec::new(),
            want_literal: None,
            sasl_tag: None,
            login_tag: String::new(),
            blogin: BLogin::Greeting,
            req: Req::Line,
            mid_command: false,
            pending: VecDeque::new(),
            idling: false,
            await_cont: false,
            resp_line: Vec::new(),
            resp_literal: 0,
            resp_mid: false,
            held: Vec::new(),
            quitting: false,
        }
    }

    fn capabilities(sec: &Security) -> String {
        let mut c = String::from(CAPABILITIES);
        if sec.tls_available && !sec.tls {
            c.push_str(" STARTTLS");
        }
        if sec.cleartext_ok() {
            c.push_str(" AUTH=PLAIN");
        } else {
            c.push_str(" LOGINDISABLED");
        }
        c
    }

    fn command(&mut self, io: &mut Io<'_>, sec: &Security, parts: Vec<Part>) -> Pre {
        let mut words = tokens(&parts);
        drop(parts);
        let tag = words
            .first()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .unwrap_or_default();
        if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_graphic() && !b"(){%*\"\\+".contains(&b)) {
            io.send(b"* BAD Invalid tag\r\n");
            return Pre::Done;
        }
        let cmd = words
            .get(1)
            .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
            .unwrap_or_default();
        let args = words.get(2..).unwrap_or_default();
        let reply = |text: &str| format!("{tag} {text}\r\n").into_bytes();
        let out = match cmd.as_str() {
            "CAPABILITY" => format!(
                "* CAPABILITY {}\r\n{tag} OK Capability completed\r\n",
                Self::capabilities(sec)
            )
            .into_bytes(),
            "NOOP" => reply("OK NOOP completed"),
            "ID" => format!("* ID NIL\r\n{tag} OK ID completed\r\n").into_bytes(),
            "LOGOUT" => {
                io.send(format!("* BYE Logging out\r\n{tag} OK Logout completed\r\n").as_bytes());
                io.close();
                return Pre::Done;
            }
            "STARTTLS" if sec.tls => reply("BAD TLS is already active"),
            "STARTTLS" if !sec.tls_available => reply("BAD STARTTLS is not available"),
            "STARTTLS" => {
                io.send(&reply("OK Begin TLS negotiation now"));
                return Pre::StartTls;
            }
            "LOGIN" | "AUTHENTICATE" if !sec.cleartext_ok() => {
                reply("NO [PRIVACYREQUIRED] Use TLS (STARTTLS) before logging in")
            }
            "LOGIN" => match args {
                [user, pass] => {
                    self.login_tag = tag;
                    let login = String::from_utf8_lossy(user).into_owned();
                    let password = Zeroizing::new(String::from_utf8_lossy(pass).into_owned());
                    zero(&mut words);
                    return Pre::Verify { login, password };
                }
                _ => reply("BAD LOGIN needs a user name and a password"),
            },
            "AUTHENTICATE" => match args {
                [mech] if mech.eq_ignore_ascii_case(b"PLAIN") => {
                    self.sasl_tag = Some(tag);
                    b"+ \r\n".to_vec()
                }
                [mech, ir] if mech.eq_ignore_ascii_case(b"PLAIN") => {
                    let ir = Zeroizing::new(ir.clone());
                    zero(&mut words);
                    return self.plain(io, tag, &ir);
                }
                _ => reply("NO [CANNOT] Unsupported authentication mechanism"),
            },
            "" => reply("BAD Missing command"),
            _ => reply("BAD Command not valid before login"),
        };
        zero(&mut words);
        io.send(&out);
        Pre::Done
    }

    /// AUTHENTICATE PLAIN's response (base64 of authzid NUL authcid NUL password).
    fn plain(&mut self, io: &mut Io<'_>, tag: String, b64: &[u8]) -> Pre {
        if b64 == b"*" {
            io.send(format!("{tag} BAD Authentication cancelled\r\n").as_bytes());
            return Pre::Done;
        }
        let parsed = crate::dialect::sasl_plain(b64);
        match parsed {
            Some(Pre::Verify { login, password }) => {
                self.login_tag = tag;
                Pre::Verify { login, password }
            }
            _ => {
                io.send(format!("{tag} BAD Invalid SASL PLAIN response\r\n").as_bytes());
                Pre::Done
            }
        }
    }

    /// Records a client command starting with `line` (tag, name; UID's sub-command).
    pub(crate) fn classify(&mut self, line: &[u8]) {
        let mut words = line.split(|&b| b == b' ');
        let tag = words.next().unwrap_or_default().to_vec();
        let mut cmd = words.next().unwrap_or_default().to_ascii_uppercase();
        if cmd == b"UID" {
            cmd = words.next().unwrap_or_default().to_ascii_uppercase();
        }
        let changing = match cmd.as_slice() {
            b"STORE" | b"COPY" | b"MOVE" | b"EXPUNGE" | b"APPEND" | b"CREATE" | b"DELETE" | b"RENAME"
            | b"SUBSCRIBE" | b"UNSUBSCRIBE" | b"CLOSE" => true,
            b"FETCH" => sets_seen(line),
            _ => false,
        };
        let idle = cmd == b"IDLE";
        if cmd == b"LOGOUT" {
            self.quitting = true;
        }
        // (no tag: the backend answers untagged, nothing to wait for)
        if !tag.is_empty() {
            self.pending.push_back(Pending { tag, changing, idle });
        }
        if idle {
            self.req = Req::IdleDone;
        }
    }

    /// A complete response line that starts a response: what to do with it. `Some(true)`:
    /// hold it.
    fn response(&mut self, line: &[u8]) -> Result<bool, String> {
        let l = chomp(line);
        if l.starts_with(b"* ") || l == b"*" {
            if l.len() >= 5 && l[2..5].eq_ignore_ascii_case(b"BYE") {
                self.quitting = true;
            }
            return Ok(false);
        }
        if l.starts_with(b"+") {
            if self.pending.back().is_some_and(|p| p.idle) {
                self.idling = true;
            }
            self.await_cont = false;
            return Ok(false);
        }
        let (tag, rest) = match memchr::memchr(b' ', l) {
            Some(i) => (&l[..i], &l[i + 1..]),
            None => (l, &b""[..]),
        };
        let Some(i) = self.pending.iter().position(|p| p.tag == tag) else {
            return Err(format!("response to no command: {}", shown(line)));
        };
        let p = self.pending.remove(i).unwrap_or(Pending {
            tag: Vec::new(),
            changing: false,
            idle: false,
        });
        if p.idle {
            self.idling = false;
        }
        if self.await_cont && i == self.pending.len() {
            // refused before its literal came: the client sends no literal
            self.await_cont = false;
            self.mid_command = false;
            self.req = Req::Line;
        }
        let ok = rest.len() >= 2 && rest[..2].eq_ignore_ascii_case(b"OK");
        Ok(ok && p.changing)
    }
}

/// Whether a FETCH sets `\Seen`: a body section without `.PEEK`, RFC822 or RFC822.TEXT.
fn sets_seen(line: &[u8]) -> bool {
    let up = line.to_ascii_uppercase();
    let has = |pat: &[u8]| memchr::memmem::find_iter(&up, pat).collect::<Vec<_>>();
    if !has(b"BODY[").is_empty() || !has(b"BINARY[").is_empty() {
        return true;
    }
    has(b"RFC822")
        .into_iter()
        .any(|i| !matches!(up.get(i + 6..i + 8), Some(b".H") | Some(b".S")))
}

/// The words of a command: atoms, quoted strings (unescaped), literals; a parenthesised
/// list counts as atoms.
fn tokens(parts: &[Part]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for part in parts {
        match part {
            Part::Literal(bytes) => out.push(bytes.to_vec()),
            Part::Text(text) => {
                let mut t = text.as_slice();
                // a literal marker at the end belongs to the next part
                if let Some(open) = literal_at_end(t).and_then(|_| memchr::memrchr(b'{', t)) {
                    let cut = if open > 0 && t.get(open - 1) == Some(&b'~') {
                        open - 1
                    } else {
                        open
                    };
                    t = t.get(..cut).unwrap_or_default();
                }
                let mut i = 0;
                while i < t.len() {
                    match t[i] {
                        b' ' => i += 1,
                        b'"' => {
                            let mut w = Vec::new();
                            i += 1;
                            while i < t.len() && t[i] != b'"' {
                                if t[i] == b'\\' && i + 1 < t.len() {
                                    i += 1;
                                }
                                w.push(t[i]);
                                i += 1;
                            }
                            i += 1;
                            out.push(w);
                        }
                        _ => {
                            let start = i;
                            while i < t.len() && t[i] != b' ' {
                                i += 1;
                            }
                            out.push(t[start..i].to_vec());
                        }
                    }
                }
            }
        }
    }
    out
}

fn zero(words: &mut [Vec<u8>]) {
    for w in words {
        zeroize::Zeroize::zeroize(w);
    }
}

/// `s` as an IMAP string: quoted when it can be, else a LITERAL+ literal.
fn astring(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.push(b'"');
        for b in s.bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}+}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s.as_bytes());
    }
}

/// IMAP's last words.
const LAST_WORDS: LastWords = LastWords {
    lost: b"* BYE [UNAVAILABLE] The connection to the mailbox server was lost\r\n",
    backend_timeout: b"* BYE [UNAVAILABLE] The mailbox server did not answer in time\r\n",
    login: b"* BYE Disconnected: no login in time\r\n",
    shutdown: b"* BYE [UNAVAILABLE] Server shutting down, try again later\r\n",
    idle: b"* BYE Autologout; idle for too long\r\n",
};

impl Dialect for Imap {
    fn greeting(&mut self, sec: &Security) -> Vec<u8> {
        format!("* OK [CAPABILITY {}] Postern proxy ready\r\n", Self::capabilities(sec)).into_bytes()
    }

    fn preauth(&mut self, io: &mut Io<'_>, sec: &Security) -> Pre {
        loop {
            if let Some(n) = self.want_literal {
                let Some(bytes) = io.lines().take_exact(n) else {
                    return Pre::Wait;
                };
                io.touch();
                self.parts.push(Part::Literal(Zeroizing::new(bytes)));
                self.want_literal = None;
                continue;
            }
            let mut line = match io.line(PRELOGIN_MAX_LINE) {
                Line::Partial => return Pre::Wait,
                Line::TooLong => {
                    io.send(b"* BYE Command line too long\r\n");
                    io.close();
                    return Pre::Done;
                }
                Line::Line(l) => Zeroizing::new(l),
            };
            if let Some(tag) = self.sasl_tag.take() {
                return self.plain(io, tag, &line);
            }
            if let Some((n, sync)) = literal_at_end(&line) {
                if n > PRELOGIN_MAX_LITERAL as u64 {
                    self.parts.clear();
                    if sync {
                        let tag = line.split(|&b| b == b' ').next().unwrap_or_default();
                        io.send(&[tag, b" BAD [TOOBIG] Literal too large before login\r\n"].concat());
                    } else {
                        io.send(b"* BYE [TOOBIG] Literal too large before login\r\n");
                        io.close();
                    }
                    return Pre::Done;
                }
                if sync {
                    io.send(b"+ OK\r\n");
                }
                self.want_literal = usize::try_from(n).ok();
                self.parts.push(Part::Text(std::mem::take(&mut *line)));
                continue;
            }
            self.parts.push(Part::Text(std::mem::take(&mut *line)));
            let parts = std::mem::take(&mut self.parts);
            return self.command(io, sec, parts);
        }
    }

    fn reset_login(&mut self) {
        self.blogin = BLogin::Greeting;
    }

    fn auth_failed(&mut self) -> Vec<u8> {
        format!(
            "{} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            self.login_tag
        )
        .into_bytes()
    }

    fn unavailable(&mut self, text: &str) -> Vec<u8> {
        format!("{} NO [UNAVAILABLE] {text}\r\n", self.login_tag).into_bytes()
    }

    fn backend_login(&mut self, inp: &mut Vec<u8>, out: &mut Vec<u8>, login: &str, password: &str) -> Login {
        loop {
            let line = match take_line(inp, MAX_RESPONSE_LINE) {
                Ok(Some(l)) => l,
                Ok(None) => return Login::Wait,
                Err(e) => return Login::Failed(e),
            };
            let l = chomp(&line);
            match self.blogin {
                BLogin::Greeting if l.starts_with(b"* OK") => {
                    out.extend_from_slice(format!("{LOGIN_TAG} LOGIN ").as_bytes());
                    astring(login, out);
                    out.push(b' ');
                    astring(password, out);
                    out.extend_from_slice(b"\r\n");
                    self.blogin = BLogin::Sent;
                }
                BLogin::Greeting => return Login::Failed(format!("greeting: {}", shown(&line))),
                BLogin::Sent if l.starts_with(b"* ") => {}
                BLogin::Sent => {
                    let Some(rest) = l.strip_prefix(format!("{LOGIN_TAG} ").as_bytes()) else {
                        return Login::Failed(format!("unexpected: {}", shown(&line)));
                    };
                    if !rest.get(..3).is_some_and(|r| r.eq_ignore_ascii_case(b"OK ")) {
                        return Login::Failed(format!("master login refused: {}", shown(&line)));
                    }
                    let text = String::from_utf8_lossy(&without_compress(l.to_vec()))
                        .get(LOGIN_TAG.len() + 4..)
                        .unwrap_or_default()
                        .to_string();
                    let reply = if text.starts_with("[CAPABILITY ") {
                        format!("{} OK {text}\r\n", self.login_tag)
                    } else {
                        format!("{} OK Logged in\r\n", self.login_tag)
                    };
                    return Login::Done(reply.into_bytes());
                }
            }
        }
    }

    fn client_input(&mut self, io: &mut Io<'_>, to_backend: &mut Vec<u8>, max: usize) -> Result<bool, Vec<u8>> {
        let mut progress = false;
        while to_backend.len() < max {
            if let Req::Literal(n) = self.req {
                let avail = io.lines().pending_len();
                if avail == 0 {
                    break;
                }
                let k = (n.min(avail as u64) as usize).min(max - to_backend.len());
                to_backend.extend_from_slice(&io.lines().take_up_to(k));
                io.touch();
                progress = true;
                let left = n - k as u64;
                self.req = if left == 0 { Req::Line } else { Req::Literal(left) };
                continue;
            }
            let line = match io.line(self.max_line) {
                Line::Partial => break,
                Line::TooLong => return Err(b"* BYE [TOOBIG] Command line too long\r\n".to_vec()),
                Line::Line(l) => l,
            };
            progress = true;
            if self.req == Req::IdleDone {
                // the DONE that ends an IDLE (the backend judges what it is)
                self.req = Req::Line;
                self.idling = false;
                to_backend.extend_from_slice(&line);
                to_backend.extend_from_slice(b"\r\n");
                continue;
            }
            let start = !self.mid_command;
            // COMPRESS is not proxied (the backend's answers are framed here): the backend
            // is asked for a mechanism nobody has, so it refuses, in the commands' order
            let line = if start && is_compress(&line) {
                let tag = line.split(|&b| b == b' ').next().unwrap_or_default();
                [tag, b" COMPRESS X-NOT-PROXIED"].concat()
            } else {
                line
            };
            if start {
                self.classify(&line);
            }
            match literal_at_end(&line) {
                Some((n, sync)) if n > self.max_literal => {
                    if sync && start {
                        let p = self.pending.pop_back();
                        let tag = p.map(|p| p.tag).unwrap_or_default();
                        io.send(&[&tag[..], b" BAD [TOOBIG] Literal too large\r\n"].concat());
                        continue;
                    }
                    return Err(b"* BYE [TOOBIG] Literal too large\r\n".to_vec());
                }
                Some((n, sync)) => {
                    self.mid_command = true;
                    self.await_cont = sync;
                    self.req = if n == 0 { Req::Line } else { Req::Literal(n) };
                }
                None => self.mid_command = false,
            }
            to_backend.extend_from_slice(&line);
            to_backend.extend_from_slice(b"\r\n");
        }
        Ok(progress)
    }

    /// One step of the framing of the backend's responses: a literal's bytes, a line
    /// (kept until it is whole), or a changing command's success to hold.
    fn response_step(&mut self, rest: &[u8], left: usize, out: &mut Vec<u8>) -> Step {
        if self.resp_literal > 0 {
            let k = (self.resp_literal.min(rest.len() as u64) as usize).min(left);
            out.extend_from_slice(&rest[..k]);
            self.resp_literal -= k as u64;
            return Step::Used(k);
        }
        let Some(p) = memchr::memchr(b'\n', rest) else {
            if self.resp_line.len() + rest.len() > MAX_RESPONSE_LINE {
                return Step::Bad("response line too long".into());
            }
            self.resp_line.extend_from_slice(rest);
            return Step::Used(rest.len());
        };
        self.resp_line.extend_from_slice(&rest[..=p]);
        let line = std::mem::take(&mut self.resp_line);
        if let Some((n, _)) = literal_at_end(chomp(&line)) {
            if !self.resp_mid && !line.starts_with(b"* ") {
                return Step::Bad(format!("literal outside an untagged response: {}", shown(&line)));
            }
            self.resp_mid = true;
            self.resp_literal = n;
            out.extend_from_slice(&line);
            return Step::Used(p + 1);
        }
        let start = !self.resp_mid;
        self.resp_mid = false;
        let line = if start { without_compress(line) } else { line };
        if start {
            match self.response(&line) {
                Ok(true) => return Step::Hold(p + 1, line),
                Ok(false) => {}
                Err(e) => return Step::Bad(e),
            }
        }
        out.extend_from_slice(&line);
        Step::Used(p + 1)
    }

    fn held(&mut self) -> &mut Vec<u8> {
        &mut self.held
    }

    fn outstanding(&self) -> bool {
        !self.pending.is_empty() && !self.idling
    }

    fn quitting(&self) -> bool {
        self.quitting
    }

    fn last_words(&self) -> &'static LastWords {
        &LAST_WORDS
    }
}

/// A backend's capability list (`* CAPABILITY ...`, or `[CAPABILITY ...]` after a
/// status word) without its COMPRESS=... entries: COMPRESS is not proxied, so it is not
/// offered. Any other line is returned as it came.
fn without_compress(line: Vec<u8>) -> Vec<u8> {
    let words: Vec<&[u8]> = line.splitn(3, |&b| b == b' ').collect();
    let listed = match words.as_slice() {
        [_, w, ..] if w.eq_ignore_ascii_case(b"CAPABILITY") && words[0] == b"*" => true,
        [_, w, rest] => {
            (w.eq_ignore_ascii_case(b"OK") || w.eq_ignore_ascii_case(b"PREAUTH"))
                && rest.get(..12).is_some_and(|r| r.eq_ignore_ascii_case(b"[CAPABILITY "))
        }
        _ => false,
    };
    if !listed {
        return line;
    }
    let mut out = Vec::with_capacity(line.len());
    for (i, tok) in line.split(|&b| b == b' ').enumerate() {
        let end = tok
            .iter()
            .position(|&b| matches!(b, b']' | b'\r' | b'\n'))
            .unwrap_or(tok.len());
        let (core, suffix) = tok.split_at(end);
        if core.get(..9).is_some_and(|c| c.eq_ignore_ascii_case(b"COMPRESS=")) {
            out.extend_from_slice(suffix);
            continue;
        }
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(tok);
    }
    out
}

/// Whether a command line is COMPRESS (any mechanism).
fn is_compress(line: &[u8]) -> bool {
    line.split(|&b| b == b' ')
        .nth(1)
        .is_some_and(|c| c.eq_ignore_ascii_case(b"COMPRESS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Part {
        Part::Text(t.as_bytes().to_vec())
    }

    #[test]
    fn words_of_a_command() {
        let w = tokens(&[
            text(r#"a LOGIN "al\"ice" {3}"#),
            Part::Literal(Zeroizing::new(b"p w".to_vec())),
            text(""),
        ]);
        assert_eq!(
            w,
            vec![b"a".to_vec(), b"LOGIN".to_vec(), b"al\"ice".to_vec(), b"p w".to_vec()]
        );
    }

    #[test]
    fn fetches_that_set_seen() {
        assert!(sets_seen(b"a FETCH 1 BODY[]"));
        assert!(sets_seen(b"a UID FETCH 1 (RFC822)"));
        assert!(!sets_seen(b"a FETCH 1 BODY.PEEK[]"));
        assert!(!sets_seen(b"a FETCH 1 (RFC822.SIZE RFC822.HEADER FLAGS)"));
    }

    #[test]
    fn responses_are_framed_by_line_and_literal() {
        let mut d = Imap::new(1000, 1000);
        d.classify(b"a FETCH 1 BODY.PEEK[]");
        d.classify(b"b STORE 1 +FLAGS (\\Seen)");
        d.classify(b"c NOOP");
        let mut inp = b"* 1 FETCH (BODY[] {13}\r\na OK b\r\nxyz\r\n)\r\na OK done\r\n* 1 FETCH (FLAGS (\\Seen))\r\nb OK stored\r\nc OK noop\r\n".to_vec();
        let mut out = Vec::new();
        let r = d.backend_input(&mut inp, 1 << 20, &mut out);
        assert!(r.hold && r.bad.is_none());
        assert_eq!(
            out,
            b"* 1 FETCH (BODY[] {13}\r\na OK b\r\nxyz\r\n)\r\na OK done\r\n* 1 FETCH (FLAGS (\\Seen))\r\n"
        );
        assert_eq!(d.release(), b"b OK stored\r\n");
        out.clear();
        let r = d.backend_input(&mut inp, 1 << 20, &mut out);
        assert!(!r.hold);
        assert_eq!(out, b"c OK noop\r\n");
        assert!(!d.outstanding());
        let mut bad = b"zz OK what\r\n".to_vec();
        assert!(d.backend_input(&mut bad, 1 << 20, &mut out).bad.is_some());
    }

    #[test]
    fn framing_does_not_depend_on_how_the_bytes_arrive() {
        let stream: &[u8] =
            b"* 3 EXISTS\r\n* 1 FETCH (UID 7 BODY[] {13}\r\nb OK b\r\nxyz\r\n BINARY[1] ~{4}\r\n{1}\n)\r\n\
a OK done\r\n+ idling\r\n* 4 EXISTS\r\ni OK idle done\r\nb OK [COPYUID 1 1 9] copied\r\nc OK noop\r\n";
        for chunk in 1..48 {
            let mut d = Imap::new(1000, 1000);
            d.classify(b"a UID FETCH 7 (BODY.PEEK[] BINARY.PEEK[1])");
            d.classify(b"i IDLE");
            d.classify(b"b COPY 1 Saved");
            d.classify(b"c NOOP");
            let (mut inp, mut out, mut held) = (Vec::new(), Vec::new(), Vec::new());
            for part in stream.chunks(chunk) {
                inp.extend_from_slice(part);
                loop {
                    // (room for little output per call: literals go in pieces)
                    let mut o = Vec::new();
                    let r = d.backend_input(&mut inp, 1 + chunk % 7, &mut o);
                    out.extend_from_slice(&o);
                    assert!(r.bad.is_none(), "chunk {chunk}: {:?}", r.bad);
                    if r.hold {
                        held = d.release();
                        out.extend_from_slice(&held);
                    }
                    if !r.progress {
                        break;
                    }
                }
            }
            assert_eq!(out, stream, "chunk {chunk}");
            assert_eq!(held, b"b OK [COPYUID 1 1 9] copied\r\n", "chunk {chunk}");
            assert!(d.pending.is_empty(), "chunk {chunk}");
        }
    }

    #[test]
    fn compress_is_taken_out_of_capability_lists_only() {
        let w = |l: &[u8]| String::from_utf8(without_compress(l.to_vec())).unwrap();
        assert_eq!(
            w(b"* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n"),
            "* CAPABILITY IMAP4rev1 IDLE\r\n"
        );
        assert_eq!(
            w(b"* capability IMAP4rev1 compress=deflate\r\n"),
            "* capability IMAP4rev1\r\n"
        );
        assert_eq!(
            w(b"a OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] Logged in"),
            "a OK [CAPABILITY IMAP4rev1] Logged in"
        );
        assert_eq!(
            w(b"* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE MOVE]\r\n"),
            "* OK [CAPABILITY IMAP4rev1 MOVE]\r\n"
        );
        let other = b"* 1 FETCH (ENVELOPE (NIL \"CAPABILITY COMPRESS=DEFLATE\"))\r\n";
        assert_eq!(w(other).as_bytes(), other);
        assert_eq!(w(b"* OK COMPRESS=DEFLATE\r\n"), "* OK COMPRESS=DEFLATE\r\n");
    }

    #[test]
    fn the_master_login_is_quoted() {
        let mut out = Vec::new();
        astring(r#"pa"ss\"#, &mut out);
        assert_eq!(out, br#""pa\"ss\\""#);
    }
}
