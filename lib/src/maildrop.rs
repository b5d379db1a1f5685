//! Maildrop files: the one format `sendmail` writes to `postdrop`'s standard input, that
//! `postdrop` writes into `maildrop/`, and that `pickup` reads back to hand to cleanup.
//!
//! A locally submitted message is not a queue file yet (cleanup makes it one), and it may
//! legitimately have no envelope recipient at all (`sendmail -t`: cleanup extracts them
//! from the headers), which [`crate::queue_file`] refuses. So the maildrop has its own
//! small record format, framed the same way (type byte, big-endian length, payload).
//!
//! # Format (version 1)
//!
//! ```text
//! magic      8 bytes "POSTDROP", then the version: u16 big-endian = 1
//! records    type: 1 byte, length: u32 big-endian, payload: `length` bytes
//! ```
//!
//! | type | name | payload | occurs |
//! | --- | --- | --- | --- |
//! | `E` | envelope | one JSON object, [`Envelope`] (at most [`MAX_ENVELOPE_LEN`]) | first record, once |
//! | `D` | content | raw message bytes (at most [`MAX_CHUNK`] per record) | any number |
//! | `Z` | end | empty | last record, once; nothing may follow |
//!
//! The content is the message as submitted: header and body, lines ending in LF (sendmail
//! turns CRLF into LF, as Postfix's `sendmail_fix_line_endings = always` does), no
//! dot-stuffing. A stream that ends before its `Z` record is incomplete and is refused:
//! a sendmail killed half-way leaves nothing in the maildrop.
//!
//! # Security stance
//!
//! `postdrop` is set-gid to the maildrop group when installed and reads this format from
//! any local user; `pickup` reads files in a directory that group can write. Both treat the
//! bytes as hostile: every length is checked against its limit before anything is
//! allocated, the envelope is parsed by serde into a typed struct with unknown fields
//! refused, every address and name must be text without control characters (so nothing
//! can smuggle a CR/LF into a header or a log line), and the content size is bounded by
//! the caller ([`Reader::new`]). The submitting user is never taken from the file: postdrop
//! records its real uid, and pickup believes only the file's owner.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The magic at the start of every maildrop stream.
pub const MAGIC: &[u8; 8] = b"POSTDROP";
/// The format version written and read.
pub const VERSION: u16 = 1;
/// Largest envelope record.
pub const MAX_ENVELOPE_LEN: u32 = 1 << 20;
/// Largest content record.
pub const MAX_CHUNK: u32 = 64 * 1024;
/// Most envelope recipients.
pub const MAX_RECIPIENTS: usize = 10_000;
/// Longest address or full name.
pub const MAX_FIELD_LEN: usize = 2048;

/// Record type bytes.
pub mod record {
    /// The envelope (JSON).
    pub const ENVELOPE: u8 = b'E';
    /// A piece of content.
    pub const DATA: u8 = b'D';
    /// The end.
    pub const END: u8 = b'Z';
}

/// Attribute keys pickup passes to cleanup in [`crate::proto::cleanup::Submission`]
/// `attributes` for a local submission.
pub mod attr {
    /// The submitting user's uid (decimal), from the maildrop file's owner.
    pub const UID: &str = "uid";
    /// The submitting user's login name, when the passwd database knows the uid.
    pub const LOGIN: &str = "login";
    /// `sendmail -F NAME`: the full name for a `From:` header cleanup generates.
    pub const FULL_NAME: &str = "full_name";
}

/// The envelope of a locally submitted message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The envelope sender as given (`-f`) or the login name; empty for the null sender.
    pub sender: String,
    /// Recipients from the command line (cleanup canonicalises them).
    #[serde(default)]
    pub recipients: Vec<String>,
    /// `sendmail -t`: cleanup takes recipients from To/Cc/Bcc too.
    #[serde(default)]
    pub extract_recipients: bool,
    /// `sendmail -F NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    /// The submitting uid as postdrop saw it (informational; pickup uses the file owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

impl Envelope {
    /// Checks every field: text without control characters, lengths, recipient count,
    /// and at least one recipient unless recipients are to be extracted.
    pub fn validate(&self) -> Result<(), MaildropError> {
        let bad = |why: String| Err(MaildropError::BadEnvelope(why));
        if !is_field(&self.sender) {
            return bad("sender is not a printable address".into());
        }
        if self.recipients.len() > MAX_RECIPIENTS {
            return bad(format!("more than {MAX_RECIPIENTS} recipients"));
        }
        if let Some(r) = self.recipients.iter().find(|r| r.is_empty() || !is_field(r)) {
            return bad(format!(
                "recipient {:?} is not a printable address",
                crate::strbuf::printable_bounded(r.as_bytes(), 80)
            ));
        }
        if self.recipients.is_empty() && !self.extract_recipients {
            return bad("no recipients".into());
        }
        if let Some(name) = &self.full_name
            && !is_field(name)
        {
            return bad("full name is not printable text".into());
        }
        Ok(())
    }
}

/// Text without control characters, not too long.
fn is_field(s: &str) -> bool {
    s.len() <= MAX_FIELD_LEN && !s.chars().any(char::is_control)
}

/// Errors reading or writing a maildrop stream.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum MaildropError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The stream does not start with the magic.
    #[error("not a maildrop file (bad magic)")]
    BadMagic,
    /// Another format version.
    #[error("unsupported maildrop format version {0}")]
    UnsupportedVersion(u16),
    /// A record of the wrong type or length at this point.
    #[error("malformed record {:?} at offset {offset}: {reason}", char::from(*kind))]
    BadRecord {
        /// The type byte.
        kind: u8,
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The envelope is not valid.
    #[error("bad envelope: {0}")]
    BadEnvelope(String),
    /// The stream ends before its end record.
    #[error("premature end of input (offset {offset})")]
    Truncated {
        /// Bytes read.
        offset: u64,
    },
    /// Bytes follow the end record.
    #[error("data after the end record at offset {offset}")]
    TrailingData {
        /// Offset of the first extra byte.
        offset: u64,
    },
    /// The content exceeds the size limit.
    #[error("message file too big: more than {limit} bytes")]
    TooBig {
        /// The limit.
        limit: u64,
    },
}

/// Writes a maildrop stream: [`new`](Self::new) writes the magic and the envelope,
/// [`write_content`](Self::write_content) the message, [`finish`](Self::finish) the end.
#[derive(Debug)]
pub struct Writer<W: Write> {
    w: W,
}

impl<W: Write> Writer<W> {
    /// Validates `env` and writes the magic and envelope record.
    pub fn new(mut w: W, env: &Envelope) -> Result<Self, MaildropError> {
        env.validate()?;
        let json = serde_json::to_vec(env).map_err(|e| MaildropError::BadEnvelope(e.to_string()))?;
        let len = u32::try_from(json.len())
            .ok()
            .filter(|&l| l <= MAX_ENVELOPE_LEN)
            .ok_or_else(|| MaildropError::BadEnvelope("envelope too large".into()))?;
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_be_bytes())?;
        w.write_all(&[record::ENVELOPE])?;
        w.write_all(&len.to_be_bytes())?;
        w.write_all(&json)?;
        Ok(Self { w })
    }

    /// Appends message content (split into records of at most [`MAX_CHUNK`]).
    pub fn write_content(&mut self, bytes: &[u8]) -> Result<(), MaildropError> {
        for chunk in bytes.chunks(MAX_CHUNK as usize) {
            self.w.write_all(&[record::DATA])?;
            self.w.write_all(&(chunk.len() as u32).to_be_bytes())?;
            self.w.write_all(chunk)?;
        }
        Ok(())
    }

    /// Writes the end record, flushes, and returns the writer.
    pub fn finish(mut self) -> Result<W, MaildropError> {
        self.w.write_all(&[record::END])?;
        self.w.write_all(&0u32.to_be_bytes())?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Reads a maildrop stream: the envelope at [`new`](Self::new), then the content through
/// [`Read`], which fails with an `InvalidData` error wrapping a [`MaildropError`] on any
/// malformation, including a missing end record or bytes after it.
#[derive(Debug)]
pub struct Reader<R: Read> {
    r: R,
    envelope: Envelope,
    /// Bytes of the current content record not yet returned.
    left_in_record: u32,
    offset: u64,
    content: u64,
    max_content: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Reads the magic and the envelope; content beyond `max_content` bytes is an error
    /// ([`MaildropError::TooBig`]).
    pub fn new(mut r: R, max_content: u64) -> Result<Self, MaildropError> {
        let mut head = [0u8; 10];
        read_exact_or(&mut r, &mut head, 0)?;
        if head.get(..8) != Some(&MAGIC[..]) {
            return Err(MaildropError::BadMagic);
        }
        let version = u16::from_be_bytes([head[8], head[9]]);
        if version != VERSION {
            return Err(MaildropError::UnsupportedVersion(version));
        }
        let mut this = Self {
            r,
            envelope: Envelope::default(),
            left_in_record: 0,
            offset: 10,
            content: 0,
            max_content,
            done: false,
        };
        let at = this.offset;
        let (kind, len) = this.record_header()?;
        if kind != record::ENVELOPE {
            return Err(bad(kind, at, "the first record must be the envelope"));
        }
        if len > MAX_ENVELOPE_LEN {
            return Err(bad(kind, at, "envelope too large"));
        }
        let mut json = vec![0u8; len as usize];
        read_exact_or(&mut this.r, &mut json, this.offset)?;
        this.offset += u64::from(len);
        let env: Envelope = serde_json::from_slice(&json).map_err(|e| MaildropError::BadEnvelope(e.to_string()))?;
        env.validate()?;
        this.envelope = env;
        Ok(this)
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Content bytes returned so far.
    pub fn content_len(&self) -> u64 {
        self.content
    }

    /// Reads (and checks) the rest of the stream, discarding content; returns the total
    /// content length. Fails on anything a full read would fail on.
    pub fn verify(mut self) -> Result<u64, MaildropError> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.read_inner(&mut buf)? {
                0 => return Ok(self.content),
                _ => continue,
            }
        }
    }

    fn record_header(&mut self) -> Result<(u8, u32), MaildropError> {
        let mut h = [0u8; 5];
        read_exact_or(&mut self.r, &mut h, self.offset)?;
        self.offset += 5;
        Ok((h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]])))
    }

    fn read_inner(&mut self, out: &mut [u8]) -> Result<usize, MaildropError> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.left_in_record == 0 {
            if self.done {
                return Ok(0);
            }
            let at = self.offset;
            let (kind, len) = self.record_header()?;
            match kind {
                record::DATA if len == 0 || len > MAX_CHUNK => {
                    return Err(bad(kind, at, "content record length out of range"));
                }
                record::DATA => {
                    if self.content.saturating_add(u64::from(len)) > self.max_content {
                        return Err(MaildropError::TooBig {
                            limit: self.max_content,
                        });
                    }
                    self.left_in_record = len;
                }
                record::END if len != 0 => return Err(bad(kind, at, "end record with a payload")),
                record::END => {
                    let mut extra = [0u8; 1];
                    loop {
                        match self.r.read(&mut extra) {
                            Ok(0) => break,
                            Ok(_) => return Err(MaildropError::TrailingData { offset: self.offset }),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    self.done = true;
                    return Ok(0);
                }
                other => return Err(bad(other, at, "unexpected record type")),
            }
        }
        let want = out.len().min(self.left_in_record as usize);
        let dst = out.get_mut(..want).unwrap_or_default();
        let n = loop {
            match self.r.read(dst) {
                Ok(0) => return Err(MaildropError::Truncated { offset: self.offset }),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        };
        self.left_in_record -= n as u32;
        self.offset += n as u64;
        self.content += n as u64;
        Ok(n)
    }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.read_inner(out).map_err(|e| match e {
            MaildropError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        })
    }
}

/// The [`MaildropError`] inside an `io::Error` from [`Reader`]'s `Read`, if any.
pub fn unwrap_io_error(e: io::Error) -> MaildropError {
    if e.get_ref().is_some_and(|inner| inner.is::<MaildropError>()) {
        match e.into_inner().map(|b| b.downcast::<MaildropError>()) {
            Some(Ok(inner)) => *inner,
            Some(Err(other)) => MaildropError::Io(io::Error::other(other)),
            None => MaildropError::Io(io::Error::other("unknown error")),
        }
    } else {
        MaildropError::Io(e)
    }
}

fn bad(kind: u8, offset: u64, reason: &'static str) -> MaildropError {
    MaildropError::BadRecord { kind, offset, reason }
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<(), MaildropError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(MaildropError::Truncated { offset }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            sender: "alice".into(),
            recipients: vec!["bob@example.test".into()],
            extract_recipients: false,
            full_name: Some("Alice A.".into()),
            uid: Some(1000),
        }
    }

    fn stream(content: &[u8]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &env()).unwrap();
        w.write_content(content).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trip() {
        let content = vec![b'x'; 200_000];
        let bytes = stream(&content);
        let mut r = Reader::new(&bytes[..], 1 << 20).unwrap();
        assert_eq!(r.envelope(), &env());
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, content);
        assert!(Reader::new(&bytes[..], 1 << 20).unwrap().verify().is_ok());
    }

    #[test]
    fn truncation_anywhere_is_refused() {
        let bytes = stream(b"Subject: x\n\nbody\n");
        for cut in 0..bytes.len() {
            let res = Reader::new(&bytes[..cut], 1 << 20).and_then(|r| r.verify());
            assert!(res.is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn trailing_data_and_size_limit() {
        let mut bytes = stream(b"hello\n");
        assert!(
            Reader::new(&bytes[..], 5)
                .unwrap()
                .verify()
                .is_err_and(|e| matches!(e, MaildropError::TooBig { .. }))
        );
        bytes.push(0);
        assert!(matches!(
            Reader::new(&bytes[..], 100).unwrap().verify(),
            Err(MaildropError::TrailingData { .. })
        ));
    }

    #[test]
    fn bad_envelopes() {
        let mut e = env();
        e.recipients = vec!["bob\r\nRCPT TO:<x>".into()];
        assert!(Writer::new(Vec::new(), &e).is_err());
        e.recipients.clear();
        assert!(Writer::new(Vec::new(), &e).is_err());
        e.extract_recipients = true;
        assert!(Writer::new(Vec::new(), &e).is_ok());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_be_bytes());
        bytes.push(record::ENVELOPE);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Reader::new(&bytes[..], 100),
            Err(MaildropError::BadRecord { .. })
        ));
        assert!(matches!(
            Reader::new(&b"garbage!!!xx"[..], 100),
            Err(MaildropError::BadMagic)
        ));
    }
}
