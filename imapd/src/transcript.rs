//! Transcripts of chosen users' IMAP sessions, for debugging a client (Dovecot's rawlog,
//! in one file): with `imapd_transcript_users` and `imapd_transcript_directory` set, a
//! session that logs in as one of those users is written to a file of its own in the
//! directory, every line the client sent as `C: ...` and every line the server answered
//! as `S: ...`, in the order they passed, with their CRLFs. What a session saw before login is kept in
//! memory (at most [`PRELOGIN_KEEP`] bytes) and written once the login succeeds; a
//! session of another user writes nothing.
//!
//! Passwords never reach the file: what follows `LOGIN` and the mechanism of
//! `AUTHENTICATE` is written as `***`, and so is each client line of the SASL exchange
//! until the server's tagged answer. Before login only the commands a client may send
//! then (CAPABILITY, NOOP, LOGOUT, STARTTLS, ID, ENABLE) are written as they are, without
//! their literals, anything else as `***`. After login everything is written (the
//! user's mail included: that is what the transcript is for), a command line at most
//! [`SEGMENT_KEEP`] bytes of it, a file at most [`MAX_FILE`] bytes. A synchronizing
//! literal the server refused is not sent by the client, but is taken here as if it
//! followed: what comes next reads as literal data (hidden before login).
//!
//! A file is created new (never through an existing name or a link), mode 0600, named
//! `USER.SECONDS.PID.N.imap`; one that cannot be created is a warning and the session
//! goes on untranscribed. The hook is the sans-I/O session's boundary:
//! [`Transcript::client`] on the bytes `Session::input` takes, [`Transcript::server`] on
//! those `Session::take_output` gives, [`Transcript::login`] at a login.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Transcript bytes of a session kept in memory until its login.
pub const PRELOGIN_KEEP: usize = 16 * 1024;
/// Largest transcript file; then it says so and ends.
pub const MAX_FILE: u64 = 64 * 1024 * 1024;
/// Bytes of one client line (or the part of it before a literal) written; the rest is
/// counted.
pub const SEGMENT_KEEP: usize = 8 * 1024;
/// Bytes at the end of a client line kept to find a literal's `{N}` there.
const TAIL: usize = 24;
/// Commands written as they are before login.
const PRELOGIN_SHOWN: &[&[u8]] = &[b"CAPABILITY", b"NOOP", b"LOGOUT", b"STARTTLS", b"ID", b"ENABLE"];

struct Config {
    users: Vec<String>,
    dir: PathBuf,
}

static CONFIG: OnceLock<Config> = OnceLock::new();
/// Files this process made, for unique names.
static FILES: AtomicU64 = AtomicU64::new(0);

/// Sets the process's users and directory (`imapd_transcript_users`,
/// `imapd_transcript_directory`) once, at start; without both no session is transcribed.
pub fn configure(users: &[String], dir: &Path) {
    if users.is_empty() || dir.as_os_str().is_empty() {
        return;
    }
    let _ = CONFIG.set(Config {
        users: users.to_vec(),
        dir: dir.to_path_buf(),
    });
}

enum Sink {
    Off,
    /// Before login: the transcript so far, and the bytes not kept.
    Memory(Vec<u8>, u64),
    File(File, u64),
}

/// How the client's current command is written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Show {
    /// As it is (after login: its literals too).
    Verbatim,
    /// Its first this many bytes, then ` ***`; nothing of its literals and later lines.
    Masked(usize),
    /// As `***`.
    Hidden,
}

/// One session's transcript.
pub struct Transcript {
    sink: Sink,
    logged_in: bool,
    /// The client line being received (up to [`SEGMENT_KEEP`] bytes), the bytes past
    /// that, and its last [`TAIL`] bytes.
    seg: Vec<u8>,
    seg_more: u64,
    tail: Vec<u8>,
    /// Literal bytes still to come from the client.
    literal: u64,
    /// The command being received across literals.
    command: Option<Show>,
    /// The tag of an AUTHENTICATE not yet answered: client lines are SASL responses.
    sasl: Option<Vec<u8>>,
    /// The side whose line in the transcript is not finished.
    open_line: Option<u8>,
    /// While [`Transcript::sasl`]: the start of the server's current line.
    server_head: Vec<u8>,
}

impl Default for Transcript {
    fn default() -> Self {
        Transcript::new()
    }
}

impl Transcript {
    /// A session's transcript: kept in memory until login when the process transcribes
    /// anyone, else off (and costing nothing).
    pub fn new() -> Transcript {
        let on = CONFIG.get().is_some();
        Transcript::with_sink(if on { Sink::Memory(Vec::new(), 0) } else { Sink::Off })
    }

    fn with_sink(sink: Sink) -> Transcript {
        Transcript {
            sink,
            logged_in: false,
            seg: Vec::new(),
            seg_more: 0,
            tail: Vec::new(),
            literal: 0,
            command: None,
            sasl: None,
            open_line: None,
            server_head: Vec::new(),
        }
    }

    fn off(&self) -> bool {
        matches!(self.sink, Sink::Off)
    }

    /// Bytes from the client.
    pub fn client(&mut self, mut data: &[u8]) {
        if self.off() {
            return;
        }
        let mut out = Vec::new();
        while !data.is_empty() {
            if self.literal > 0 {
                let n = data.len().min(usize::try_from(self.literal).unwrap_or(usize::MAX));
                if self.logged_in && self.command == Some(Show::Verbatim) {
                    self.raw(&mut out, b'C', &data[..n]);
                }
                self.literal -= n as u64;
                data = &data[n..];
                continue;
            }
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    self.take(&data[..i]);
                    data = &data[i + 1..];
                    self.end_line(&mut out);
                }
                None => {
                    self.take(data);
                    data = &[];
                }
            }
        }
        self.emit(&out);
    }

    /// Bytes to the client.
    pub fn server(&mut self, data: &[u8]) {
        if self.off() || data.is_empty() {
            return;
        }
        if let Some(tag) = self.sasl.take() {
            let mut answered = false;
            for &b in data {
                if b == b'\n' {
                    self.server_head.clear();
                } else if self.server_head.len() <= tag.len() {
                    self.server_head.push(b);
                    answered |= tagged(&self.server_head, &tag);
                }
            }
            if !answered {
                self.sasl = Some(tag);
            }
        }
        let mut out = Vec::new();
        self.raw(&mut out, b'S', data);
        self.emit(&out);
    }

    /// A login as `user` from `peer` succeeded: a user to transcribe gets a file with
    /// what came before; any other, nothing more.
    pub fn login(&mut self, user: &str, peer: &str) {
        self.logged_in = true;
        let Sink::Memory(before, dropped) = std::mem::replace(&mut self.sink, Sink::Off) else {
            return;
        };
        let Some(cfg) = CONFIG.get() else { return };
        if !cfg.users.iter().any(|u| u == user) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let path = cfg
            .dir
            .join(format!("{}.{now}.{}.{n}.imap", file_name(user), std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        let mut file = match file {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("transcript of user={user}: {}: {e}", path.display());
                return;
            }
        };
        tracing::info!("transcript: user={user} file={}", path.display());
        let mut head = format!("# imapd transcript: user={user} client={peer} time={now}\r\n");
        if dropped > 0 {
            head.push_str(&format!("# {dropped} bytes before login not kept\r\n"));
        }
        let written = file.write_all(head.as_bytes()).and_then(|()| file.write_all(&before));
        match written {
            Ok(()) => self.sink = Sink::File(file, (head.len() + before.len()) as u64),
            Err(e) => tracing::warn!("transcript of user={user}: {}: {e}", path.display()),
        }
    }

    /// Adds client bytes (no newline among them) to the line being received.
    fn take(&mut self, data: &[u8]) {
        let room = SEGMENT_KEEP.saturating_sub(self.seg.len()).min(data.len());
        self.seg.extend_from_slice(&data[..room]);
        self.seg_more += (data.len() - room) as u64;
        self.tail.extend_from_slice(&data[data.len().saturating_sub(TAIL)..]);
        let extra = self.tail.len().saturating_sub(TAIL);
        self.tail.drain(..extra);
    }

    /// A client line (or the part of a command up to a literal) is complete.
    fn end_line(&mut self, out: &mut Vec<u8>) {
        if self.seg_more == 0 && self.seg.last() == Some(&b'\r') {
            self.seg.pop();
        }
        if self.tail.last() == Some(&b'\r') {
            self.tail.pop();
        }
        let literal = crate::session::literal_at_end(&self.tail).map(|(n, _)| n);
        let seg = std::mem::take(&mut self.seg);
        let more = std::mem::replace(&mut self.seg_more, 0);
        self.tail.clear();
        let first = self.command.is_none();
        let show = match self.command {
            Some(show) => show,
            None if self.sasl.is_some() => Show::Hidden,
            None => self.classify(&seg),
        };
        match show {
            Show::Verbatim if first || self.logged_in => {
                let mut text = seg;
                if more > 0 {
                    text.extend_from_slice(format!(" [... {more} bytes more]").as_bytes());
                }
                self.line(out, &text);
            }
            Show::Masked(n) if first => {
                let mut text = seg[..n].to_vec();
                if seg.len() > n || more > 0 || literal.is_some() {
                    text.extend_from_slice(b" ***");
                }
                self.line(out, &text);
            }
            Show::Hidden if first => self.line(out, b"***"),
            _ => {}
        }
        self.literal = literal.unwrap_or(0);
        self.command = literal.map(|_| show);
    }

    /// How a new command line is written; notes an AUTHENTICATE's tag.
    fn classify(&mut self, line: &[u8]) -> Show {
        let mut words = line.split(|&b| b == b' ');
        let (Some(tag), Some(verb)) = (words.next(), words.next()) else {
            return if self.logged_in { Show::Verbatim } else { Show::Hidden };
        };
        let upto_verb = tag.len() + 1 + verb.len();
        if verb.eq_ignore_ascii_case(b"LOGIN") {
            return Show::Masked(upto_verb);
        }
        if verb.eq_ignore_ascii_case(b"AUTHENTICATE") {
            self.sasl = Some(tag.to_vec());
            self.server_head.clear();
            let mechanism = words.next().map_or(0, |m| 1 + m.len());
            return Show::Masked(upto_verb + mechanism);
        }
        if self.logged_in || PRELOGIN_SHOWN.iter().any(|c| verb.eq_ignore_ascii_case(c)) {
            Show::Verbatim
        } else {
            Show::Hidden
        }
    }

    /// Writes a whole line of the client's (its CRLF added).
    fn line(&mut self, out: &mut Vec<u8>, text: &[u8]) {
        if self.open_line == Some(b'S') {
            out.extend_from_slice(b"\r\n");
        }
        if self.open_line != Some(b'C') {
            out.extend_from_slice(b"C: ");
        }
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
        self.open_line = None;
    }

    /// Writes bytes as they passed, each line after `SIDE: `.
    fn raw(&mut self, out: &mut Vec<u8>, side: u8, mut data: &[u8]) {
        while !data.is_empty() {
            if self.open_line != Some(side) {
                if self.open_line.is_some() {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(&[side, b':', b' ']);
                self.open_line = Some(side);
            }
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    out.extend_from_slice(&data[..=i]);
                    self.open_line = None;
                    data = &data[i + 1..];
                }
                None => {
                    out.extend_from_slice(data);
                    data = &[];
                }
            }
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match &mut self.sink {
            Sink::Off => {}
            Sink::Memory(kept, dropped) => {
                if kept.len() + bytes.len() <= PRELOGIN_KEEP {
                    kept.extend_from_slice(bytes);
                } else {
                    *dropped += bytes.len() as u64;
                }
            }
            Sink::File(file, written) => {
                if *written + bytes.len() as u64 > MAX_FILE {
                    let end = format!("\r\n# transcript ends: {MAX_FILE} bytes written\r\n");
                    let _ = file.write_all(end.as_bytes());
                    self.sink = Sink::Off;
                } else if let Err(e) = file.write_all(bytes) {
                    tracing::warn!("transcript: {e}; the session goes on untranscribed");
                    self.sink = Sink::Off;
                } else {
                    *written += bytes.len() as u64;
                }
            }
        }
    }
}

/// Whether `line` begins with `tag` and a space (the tagged answer to the command).
fn tagged(line: &[u8], tag: &[u8]) -> bool {
    line.len() > tag.len() && line.starts_with(tag) && line[tag.len()] == b' '
}

/// A user name as a file name: letters, digits and `.@+-_`, others as `_`, no leading dot.
fn file_name(user: &str) -> String {
    let mut name: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with('.') || name.is_empty() {
        name.insert(0, '_');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transcript kept in memory, fed `steps` (`C`lient or `S`erver bytes) whole and
    /// then byte by byte; both must read the same; returns the text.
    fn run(logged_in: bool, steps: &[(u8, &[u8])]) -> String {
        let mut texts = Vec::new();
        for bytewise in [false, true] {
            let mut t = Transcript::with_sink(Sink::Memory(Vec::new(), 0));
            t.logged_in = logged_in;
            for (side, data) in steps {
                let pieces: Vec<&[u8]> = if bytewise { data.chunks(1).collect() } else { vec![data] };
                for p in pieces {
                    match side {
                        b'C' => t.client(p),
                        _ => t.server(p),
                    }
                }
            }
            let Sink::Memory(kept, _) = t.sink else {
                panic!("not in memory")
            };
            texts.push(String::from_utf8(kept).unwrap());
        }
        assert_eq!(texts[0], texts[1], "whole and byte by byte differ");
        texts.remove(0)
    }

    #[test]
    fn login_password_is_masked() {
        let text = run(
            false,
            &[
                (b'S', b"* OK ready\r\n"),
                (b'C', b"a CAPABILITY\r\n"),
                (b'S', b"* CAPABILITY IMAP4rev1\r\na OK done\r\n"),
                (b'C', b"b LOGIN alice s3cret\r\n"),
                (b'S', b"b OK Logged in\r\n"),
            ],
        );
        assert_eq!(
            text,
            "S: * OK ready\r\nC: a CAPABILITY\r\nS: * CAPABILITY IMAP4rev1\r\nS: a OK done\r\n\
             C: b LOGIN ***\r\nS: b OK Logged in\r\n"
        );
    }

    #[test]
    fn login_literals_are_masked() {
        let text = run(
            false,
            &[
                (b'C', b"a login {5}\r\n"),
                (b'S', b"+ go\r\n"),
                (b'C', b"alice {6+}\r\ns3cret\r\nb NOOP\r\n"),
                (b'S', b"a OK x\r\nb OK y\r\n"),
            ],
        );
        assert!(!text.contains("s3cret") && !text.contains("alice"), "{text}");
        assert_eq!(
            text,
            "C: a login ***\r\nS: + go\r\nC: b NOOP\r\nS: a OK x\r\nS: b OK y\r\n"
        );
    }

    #[test]
    fn sasl_exchange_is_masked_until_the_tagged_answer() {
        let text = run(
            false,
            &[
                (b'C', b"A1 AUTHENTICATE PLAIN\r\n"),
                (b'S', b"+ \r\n"),
                (b'C', b"AGFsaWNlAHMzY3JldA==\r\n"),
                (b'S', b"A1 OK done\r\n"),
                (b'C', b"A2 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==\r\n"),
                (b'S', b"A2 NO no\r\n"),
                (b'C', b"A3 ID NIL\r\n"),
            ],
        );
        assert!(!text.contains("AGFs"), "{text}");
        assert_eq!(
            text,
            "C: A1 AUTHENTICATE PLAIN\r\nS: + \r\nC: ***\r\nS: A1 OK done\r\n\
             C: A2 AUTHENTICATE PLAIN ***\r\nS: A2 NO no\r\nC: A3 ID NIL\r\n"
        );
    }

    #[test]
    fn before_login_other_commands_and_literals_are_hidden() {
        let text = run(
            false,
            &[(b'C', b"x SELECT INBOX\r\ny ID ({4}\r\nname NIL)\r\njunk\r\n")],
        );
        assert_eq!(text, "C: ***\r\nC: y ID ({4}\r\nC: ***\r\n");
    }

    #[test]
    fn after_login_commands_and_literals_are_written() {
        let text = run(
            true,
            &[
                (b'C', b"c APPEND INBOX {12+}\r\nSubject: x\r\n"),
                (b'C', b" {3+}\r\nabc\r\n"),
                (b'S', b"c OK [APPENDUID 1 2] done\r\n"),
                (b'C', b"d LOGIN alice s3cret\r\nDONE\r\n"),
            ],
        );
        assert_eq!(
            text,
            "C: c APPEND INBOX {12+}\r\nC: Subject: x\r\nC:  {3+}\r\nC: abc\r\n\
             S: c OK [APPENDUID 1 2] done\r\nC: d LOGIN ***\r\nC: DONE\r\n"
        );
    }

    #[test]
    fn a_long_line_is_cut_and_its_literal_still_found() {
        let mut line = b"e SEARCH TEXT ".to_vec();
        line.extend(std::iter::repeat_n(b'x', SEGMENT_KEEP));
        line.extend_from_slice(b" {2}\r\nab\r\n");
        let text = run(true, &[(b'C', &line)]);
        assert!(
            text.ends_with("x [... 19 bytes more]\r\nC: ab\r\n"),
            "{}",
            &text[text.len() - 60..]
        );
    }

    #[test]
    fn memory_before_login_is_bounded() {
        let mut t = Transcript::with_sink(Sink::Memory(Vec::new(), 0));
        for _ in 0..2000 {
            t.client(b"a NOOP\r\n");
        }
        let Sink::Memory(kept, dropped) = t.sink else { panic!() };
        assert!(kept.len() <= PRELOGIN_KEEP && dropped > 0);
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name("../etc/x"), "_.._etc_x");
        assert_eq!(file_name("alice@example.test"), "alice@example.test");
    }
}
