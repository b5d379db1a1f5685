//! Reading the mail log: splitting a line into its process, program, queue ID and text,
//! and [`Tail`], which reads a log file line by line from where it left off and notices
//! rotation and truncation. `postern log` (one message's timeline) and the metrics daemon
//! (counters from log lines) both read the log this way.
//!
//! Lines are the format of [`crate::log`] (`Dec  6 20:54:14 host postern/smtpd[4711]:
//! 8E9yuY6e204jL000: client=...`) or any syslog form with another timestamp; the queue ID
//! may be Postern's or Postfix's. Lines are untrusted text: each is bounded to
//! [`MAX_LINE`] bytes (the rest of a longer line is skipped), decoded lossily, and a line
//! that does not parse is simply not matched.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Longest line taken; the rest of a longer line is skipped.
pub const MAX_LINE: usize = 8192;

/// One log line, split.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// `postern/smtpd[4711]`.
    pub process: &'a str,
    /// `postern/smtpd`.
    pub program: &'a str,
    /// The queue ID the text starts with, if any.
    pub queue_id: Option<&'a str>,
    /// The text after `program[pid]: `.
    pub text: &'a str,
}

/// Splits a log line (`STAMP HOST program[pid]: text`, any timestamp form).
pub fn parse(line: &str) -> Option<Parsed<'_>> {
    let close = line.find("]: ")?;
    let start = line[..close].rfind(' ').map_or(0, |i| i + 1);
    let process = &line[start..=close];
    let open = process.find('[')?;
    let program = &process[..open];
    let text = &line[close + 3..];
    let queue_id = text
        .split_once(": ")
        .map(|(id, _)| id)
        .filter(|id| looks_like_queue_id(id));
    Some(Parsed {
        process,
        program,
        queue_id,
        text,
    })
}

/// A Postern queue ID, or a Postfix one (short hex or long form): 6 to 20 letters and
/// digits with at least one digit or capital, and not `NOQUEUE`.
pub fn looks_like_queue_id(s: &str) -> bool {
    (6..=20).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
        && s.bytes().any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        && s != "NOQUEUE"
}

/// Reads a log file line by line from where it left off; notices rotation and truncation.
pub struct Tail {
    reader: BufReader<File>,
    offset: u64,
    inode: u64,
    resets: u64,
}

impl Tail {
    /// Opens `path` for reading from its start.
    pub fn open(path: &Path) -> Result<Tail, String> {
        let f = crate::safe_open::open_read(path, &crate::safe_open::Expect::any())
            .map_err(|e| format!("cannot read the log {}: {e}", path.display()))?;
        Ok(Tail::from_file(f))
    }

    /// Reads an already open file (opened while privileged) from its start.
    pub fn from_file(f: File) -> Tail {
        let inode = f.metadata().map(|m| m.ino()).unwrap_or(0);
        Tail {
            reader: BufReader::with_capacity(1 << 16, f),
            offset: 0,
            inode,
            resets: 0,
        }
    }

    /// A new file at `path` (rotation: the path names another inode, which we can open)
    /// is read from its start, and so is the same file once truncated below what was
    /// read. Returns whether it started over.
    pub fn reopen_if_rotated(&mut self, path: &Path) -> bool {
        let rotated = std::fs::metadata(path).is_ok_and(|m| m.ino() != self.inode);
        if rotated && let Ok(mut r) = Tail::open(path) {
            r.resets = self.resets + 1;
            *self = r;
            return true;
        }
        let len = self.reader.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset && self.reader.seek(SeekFrom::Start(0)).is_ok() {
            self.offset = 0;
            self.resets += 1;
            return true;
        }
        false
    }

    /// Whether `path` now names another file than the one being read (rotated, and the
    /// new file could not be opened).
    pub fn replaced(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.ino() != self.inode)
    }

    /// Bytes of the current file not read yet.
    pub fn unread(&self) -> u64 {
        self.reader
            .get_ref()
            .metadata()
            .map_or(0, |m| m.len().saturating_sub(self.offset))
    }

    /// Bytes read so far from the current file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many times reading started over (rotation or truncation).
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Calls `each` for every complete line from the current offset to the end.
    pub fn each_line(&mut self, each: impl FnMut(&str)) -> Result<(), String> {
        self.each_line_upto(u64::MAX, each).map(|_| ())
    }

    /// [`Tail::each_line`], stopping once about `budget` bytes were read; returns whether
    /// it stopped for the budget (more may be waiting).
    pub fn each_line_upto(&mut self, budget: u64, mut each: impl FnMut(&str)) -> Result<bool, String> {
        let mut buf = Vec::with_capacity(256);
        let start = self.offset;
        loop {
            if self.offset - start >= budget {
                return Ok(true);
            }
            buf.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
                .map_err(|e| format!("read the log: {e}"))?;
            if n == 0 {
                return Ok(false);
            }
            if buf.last() != Some(&b'\n') {
                if n < MAX_LINE {
                    // A partial last line: read it again once complete.
                    self.reader
                        .seek(SeekFrom::Current(-(n as i64)))
                        .map_err(|e| format!("read the log: {e}"))?;
                    return Ok(false);
                }
                // Over-long: skip to the end of the line, a bounded piece at a time.
                let mut rest = Vec::with_capacity(MAX_LINE);
                loop {
                    rest.clear();
                    let k = (&mut self.reader)
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut rest)
                        .map_err(|e| format!("read the log: {e}"))?;
                    self.offset += k as u64;
                    if k == 0 || rest.last() == Some(&b'\n') {
                        break;
                    }
                }
            }
            self.offset += n as u64;
            let line = String::from_utf8_lossy(&buf);
            each(line.trim_end_matches(['\n', '\r']));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lines() {
        let p = parse("Dec  6 20:54:14 vm postern/smtpd[100]: AAAA11111: client=x").unwrap();
        assert_eq!(p.process, "postern/smtpd[100]");
        assert_eq!(p.program, "postern/smtpd");
        assert_eq!(p.queue_id, Some("AAAA11111"));
        let p = parse("2026-12-06T20:54:14.1+00:00 vm postern/qmgr[5]: warning: x: y").unwrap();
        assert_eq!(p.queue_id, None);
        assert_eq!(p.text, "warning: x: y");
        assert_eq!(parse("Dec  6 vm x[1]: NOQUEUE: reject: RCPT").unwrap().queue_id, None);
        assert!(parse("garbage").is_none());
        assert!(looks_like_queue_id("8E9yuY6e204jL000"));
        assert!(!looks_like_queue_id("warning"));
    }

    #[test]
    fn tail_rereads_a_partial_line_and_follows_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a x[1]: AAAA11111: one\na x[1]: AAAA11111: tw").unwrap();
        let mut r = Tail::open(&p).unwrap();
        let mut got = Vec::new();
        r.each_line(|l| got.push(l.to_string())).unwrap();
        assert_eq!(got, vec!["a x[1]: AAAA11111: one"]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"o\n"))
            .unwrap();
        r.each_line(|l| got.push(l.to_string())).unwrap();
        assert_eq!(got[1], "a x[1]: AAAA11111: two");
        std::fs::write(&p, "b\n").unwrap();
        assert!(r.reopen_if_rotated(&p));
        r.each_line(|l| got.push(l.to_string())).unwrap();
        assert_eq!(got[2], "b");
        assert_eq!(r.resets(), 1);
        // Rotation: a new file under the same name.
        std::fs::rename(&p, dir.path().join("log.1")).unwrap();
        std::fs::write(&p, "c\n").unwrap();
        assert!(r.reopen_if_rotated(&p));
        r.each_line(|l| got.push(l.to_string())).unwrap();
        assert_eq!(got[3], "c");
        assert_eq!(r.resets(), 2);
        // A budget stops early; the rest comes next time.
        std::fs::write(&p, "c\nd\ne\n").unwrap();
        let mut seen = Vec::new();
        assert!(r.each_line_upto(1, |l| seen.push(l.to_string())).unwrap());
        assert_eq!(r.unread(), 2);
        assert!(!r.each_line_upto(100, |l| seen.push(l.to_string())).unwrap());
        assert_eq!(seen, vec!["d", "e"]);
        // An over-long line is skipped whole.
        let long = "x".repeat(MAX_LINE * 2);
        std::fs::write(&p, format!("c\n{long}\nd\n")).unwrap();
        r.each_line(|l| got.push(l.to_string())).unwrap();
        assert_eq!(got.last().unwrap(), "d");
    }
}
