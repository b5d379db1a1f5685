//! A raw IMAP client for whole-system tests that check responses byte for byte: a
//! logged-in connection, commands written as given, answers read up to the tagged reply
//! with every literal (`{n}` or `~{n}`) taken whole, so binary bytes and CRLFs inside them
//! come back exactly as imapd sent them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A connection to imapd.
pub struct ImapRaw {
    /// The reading side.
    pub r: BufReader<TcpStream>,
    /// The writing side.
    pub w: TcpStream,
}

impl ImapRaw {
    /// Connects to `127.0.0.1:port`, reads the greeting and logs in with LOGIN.
    pub fn login(port: u16, user: &str, password: &str) -> ImapRaw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect imapd");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut c = ImapRaw {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let mut greeting = String::new();
        c.r.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        let out = c.cmd("l", &format!("LOGIN {user} {password}"));
        assert!(out.starts_with("l OK"), "{out}");
        c
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// Everything up to and including the tagged reply of `tag`, byte for byte.
    pub fn until_bytes(&mut self, tag: &str) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.r.read_until(b'\n', &mut line).unwrap();
            assert!(
                n > 0,
                "connection closed before {tag}'s reply: {}",
                String::from_utf8_lossy(&all)
            );
            all.extend_from_slice(&line);
            if line.starts_with(format!("{tag} ").as_bytes()) {
                return all;
            }
            if let Some(len) = line
                .strip_suffix(b"}\r\n")
                .and_then(|l| l.iter().rposition(|&b| b == b'{').map(|i| &l[i + 1..]))
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<usize>().ok())
            {
                let mut lit = vec![0; len];
                self.r.read_exact(&mut lit).unwrap();
                all.extend_from_slice(&lit);
            }
        }
    }

    /// Lets a read wait `limit` (60 s after [`ImapRaw::login`]).
    pub fn read_timeout(&self, limit: Duration) {
        self.w.set_read_timeout(Some(limit)).expect("set the read timeout");
    }

    /// Sends `line` and CRLF.
    pub fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\r\n").as_bytes());
    }

    /// One line as imapd sent it, without its CRLF (for answers without literals).
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        let n = self.r.read_line(&mut l).expect("read a line");
        assert!(n > 0, "connection closed");
        l.truncate(l.trim_end_matches("\r\n").len());
        l
    }

    /// Reads to the reply tagged `tag` (an answer without literals): the untagged lines and
    /// the tagged line, each without its CRLF.
    pub fn answer(&mut self, tag: &str) -> (Vec<String>, String) {
        let mut untagged = Vec::new();
        loop {
            let l = self.line();
            if l.starts_with(&format!("{tag} ")) {
                return (untagged, l);
            }
            untagged.push(l);
        }
    }

    /// Sends `line`, whose first word is its tag, reads to its tagged reply and asserts it
    /// is OK; the untagged lines, each without its CRLF.
    pub fn command(&mut self, line: &str) -> Vec<String> {
        let tag = line.split(' ').next().unwrap_or_default().to_string();
        self.send_line(line);
        let (untagged, done) = self.answer(&tag);
        assert!(done.starts_with(&format!("{tag} OK")), "{line}: {done}");
        untagged
    }

    /// Runs `tag line`; the whole answer (the tagged line included) as text.
    pub fn cmd(&mut self, tag: &str, line: &str) -> String {
        self.send(format!("{tag} {line}\r\n").as_bytes());
        String::from_utf8_lossy(&self.until_bytes(tag)).into_owned()
    }

    /// APPEND of `message` to `folder` with a synchronising literal (a literal8, `~{n}`,
    /// when `binary`); the answer as text.
    pub fn append(&mut self, tag: &str, folder: &str, message: &[u8], binary: bool) -> String {
        let tilde = if binary { "~" } else { "" };
        self.send(format!("{tag} APPEND {folder} {tilde}{{{}}}\r\n", message.len()).as_bytes());
        let mut cont = String::new();
        self.r.read_line(&mut cont).unwrap();
        assert!(cont.starts_with('+'), "{cont}");
        self.send(message);
        self.send(b"\r\n");
        String::from_utf8_lossy(&self.until_bytes(tag)).into_owned()
    }
}
