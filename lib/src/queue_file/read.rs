//! Parsing queue files, streaming their content, and marking recipients done in place.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use super::{
    Arrival, Envelope, FORMAT_VERSION, Limits, MAGIC, Notify, QueueFile, QueueFileError, RECORD_HEADER_LEN, Recipient,
    RecipientHandle, RecipientSpec, RecipientStatus, is_attr_key, is_text, parse_route, record,
};
use crate::queue_id::QueueId;

type Result<T> = std::result::Result<T, QueueFileError>;

impl QueueFile {
    /// Parses a queue file from the current position of `r` with the default [`Limits`].
    /// The content is skipped, not read; offsets are positions in `r`.
    pub fn read<R: Read + Seek>(r: R) -> Result<QueueFile> {
        Self::read_with_limits(r, &Limits::default())
    }

    /// [`read`](Self::read) with explicit limits.
    pub fn read_with_limits<R: Read + Seek>(mut r: R, limits: &Limits) -> Result<QueueFile> {
        let start = r.stream_position()?;
        let end = r.seek(SeekFrom::End(0))?;
        r.seek(SeekFrom::Start(start))?;
        let mut p = Parser {
            r: BufReader::new(r),
            pos: start,
            end,
            limits: *limits,
        };
        p.parse()
    }

    /// Parses a queue file and loads its content too (at most
    /// [`Limits::max_content_in_memory`] bytes), for small files and tests.
    pub fn read_all<R: Read + Seek>(mut r: R, limits: &Limits) -> Result<(QueueFile, Vec<u8>)> {
        let qf = Self::read_with_limits(&mut r, limits)?;
        if qf.content_len() > limits.max_content_in_memory {
            return Err(QueueFileError::BadLength {
                kind: record::CONTENT,
                offset: qf.content_offset.saturating_sub(RECORD_HEADER_LEN),
                len: qf.content_len(),
            });
        }
        let mut content = Vec::new();
        qf.content_reader(&mut r)?.read_to_end(&mut content)?;
        if content.len() as u64 != qf.content_len() {
            return Err(QueueFileError::Truncated {
                offset: qf.content_range().end,
            });
        }
        Ok((qf, content))
    }

    /// The content of this file, read from `r` (the same file), as a stream.
    pub fn content_reader<R: Read + Seek>(&self, mut r: R) -> io::Result<io::Take<R>> {
        r.seek(SeekFrom::Start(self.content_offset))?;
        Ok(r.take(self.content_len))
    }
}

/// Records the status of one recipient in place: one `pwrite` of the status byte, then
/// `fdatasync`.
///
/// `file` must be the queue file the handle came from, opened for writing without
/// `O_APPEND` (with which Linux would append the byte instead). The record at the handle
/// is checked to be a recipient record before anything is written.
pub fn mark_done(file: &File, handle: &RecipientHandle, status: RecipientStatus) -> Result<()> {
    let offset = handle.status_offset;
    let stale = || QueueFileError::StaleHandle { offset };
    if rustix::fs::fcntl_getfl(file)
        .map_err(io::Error::from)?
        .contains(rustix::fs::OFlags::APPEND)
    {
        return Err(QueueFileError::InvalidInput("queue file opened with O_APPEND"));
    }
    let record_start = offset.checked_sub(RECORD_HEADER_LEN).ok_or_else(stale)?;
    let mut head = [0u8; RECORD_HEADER_LEN as usize + 1];
    match file.read_exact_at(&mut head, record_start) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(stale()),
        Err(e) => return Err(e.into()),
    }
    let [kind, l0, l1, l2, l3, l4, l5, l6, l7, current] = head;
    let len = u64::from_be_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
    if kind != record::RECIPIENT || len < 6 || RecipientStatus::from_byte(current).is_none() {
        return Err(stale());
    }
    file.write_all_at(&[status.to_byte()], offset)?;
    file.sync_data()?;
    Ok(())
}

struct Parser<R> {
    r: BufReader<R>,
    /// Offset of the next byte.
    pos: u64,
    /// Offset of the end of the file.
    end: u64,
    limits: Limits,
}

/// The envelope as it is assembled.
#[derive(Default)]
struct Parts {
    queue_id: Option<QueueId>,
    arrival: Option<Arrival>,
    sender: Option<String>,
    attributes: BTreeMap<String, String>,
    recipients: Vec<Recipient>,
    content: Option<(u64, u64)>,
    /// The record just read was a recipient (a route may follow it).
    after_recipient: bool,
}

impl<R: Read + Seek> Parser<R> {
    fn parse(&mut self) -> Result<QueueFile> {
        let (kind, len) = match self.header() {
            Ok((kind, len, _)) => (kind, len),
            Err(QueueFileError::Io(e)) => return Err(QueueFileError::Io(e)),
            Err(_) => return Err(QueueFileError::BadMagic),
        };
        if kind != record::HEADER || len != 10 {
            return Err(QueueFileError::BadMagic);
        }
        let payload = self.payload(kind, len, self.pos)?;
        let (magic, version) = payload.split_at_checked(8).ok_or(QueueFileError::BadMagic)?;
        if magic != MAGIC {
            return Err(QueueFileError::BadMagic);
        }
        let version = u16::from_be_bytes(version.try_into().map_err(|_| QueueFileError::BadMagic)?);
        if version != FORMAT_VERSION {
            return Err(QueueFileError::UnsupportedVersion(version));
        }
        let mut parts = Parts::default();
        loop {
            let (kind, len, offset) = self.header()?;
            if kind == record::END {
                self.end_record(len, offset)?;
                break;
            }
            self.record(&mut parts, kind, len, offset)?;
        }
        let missing = |kind| QueueFileError::Missing { kind };
        let (content_offset, content_len) = parts.content.ok_or(missing(record::CONTENT))?;
        if parts.recipients.is_empty() {
            return Err(QueueFileError::NoRecipients);
        }
        Ok(QueueFile {
            version,
            envelope: Envelope {
                queue_id: parts.queue_id.ok_or(missing(record::QUEUE_ID))?,
                arrival: parts.arrival.ok_or(missing(record::TIME))?,
                sender: parts.sender.ok_or(missing(record::SENDER))?,
                attributes: parts.attributes,
            },
            recipients: parts.recipients,
            content_offset,
            content_len,
        })
    }

    fn record(&mut self, parts: &mut Parts, kind: u8, len: u64, offset: u64) -> Result<()> {
        let dup = || QueueFileError::Duplicate { kind, offset };
        let in_envelope = parts.content.is_none();
        let after_recipient = std::mem::take(&mut parts.after_recipient);
        match kind {
            record::ROUTE => {
                let last = parts.recipients.last_mut().filter(|_| after_recipient);
                let Some(last) = last else {
                    return Err(QueueFileError::Misplaced { kind, offset });
                };
                let payload = self.payload(kind, len, offset)?;
                let route = text(&payload, kind, offset)?;
                if parse_route(&route).is_none() {
                    return Err(bad(kind, offset, "not transport:nexthop"));
                }
                last.route = Some(route);
                Ok(())
            }
            record::CONTENT => {
                if !in_envelope {
                    return Err(dup());
                }
                for required in [record::QUEUE_ID, record::TIME, record::SENDER] {
                    let present = match required {
                        record::QUEUE_ID => parts.queue_id.is_some(),
                        record::TIME => parts.arrival.is_some(),
                        _ => parts.sender.is_some(),
                    };
                    if !present {
                        return Err(QueueFileError::Missing { kind: required });
                    }
                }
                parts.content = Some((self.pos, len));
                let skip = i64::try_from(len).map_err(|_| QueueFileError::Truncated { offset: self.end })?;
                self.r.seek_relative(skip)?;
                self.pos += len;
                Ok(())
            }
            record::RECIPIENT => {
                if parts.recipients.len() >= self.limits.max_recipients {
                    return Err(QueueFileError::TooMany {
                        what: "recipients",
                        limit: self.limits.max_recipients,
                    });
                }
                let status_offset = self.pos;
                let payload = self.payload(kind, len, offset)?;
                let (spec, status) = parse_recipient(&payload, offset)?;
                let handle = RecipientHandle {
                    index: parts.recipients.len(),
                    status_offset,
                };
                parts.recipients.push(Recipient {
                    spec,
                    status,
                    route: None,
                    handle,
                });
                parts.after_recipient = true;
                Ok(())
            }
            record::QUEUE_ID | record::TIME | record::SENDER | record::ATTRIBUTE if !in_envelope => {
                Err(QueueFileError::Misplaced { kind, offset })
            }
            record::QUEUE_ID => {
                let payload = self.payload(kind, len, offset)?;
                let text = std::str::from_utf8(&payload).map_err(|_| bad(kind, offset, "not UTF-8"))?;
                let id = QueueId::parse(text).map_err(|_| bad(kind, offset, "invalid queue ID"))?;
                parts.queue_id.replace(id).map_or(Ok(()), |_| Err(dup()))
            }
            record::TIME => {
                if len != 12 {
                    return Err(QueueFileError::BadLength { kind, offset, len });
                }
                let payload = self.payload(kind, len, offset)?;
                let mut f = Fields(&payload);
                let secs = f.u64().ok_or(bad(kind, offset, "short"))?;
                let micros = f.u32().ok_or(bad(kind, offset, "short"))?;
                if micros >= 1_000_000 {
                    return Err(bad(kind, offset, "microseconds out of range"));
                }
                parts
                    .arrival
                    .replace(Arrival { secs, micros })
                    .map_or(Ok(()), |_| Err(dup()))
            }
            record::SENDER => {
                let payload = self.payload(kind, len, offset)?;
                let sender = text(&payload, kind, offset)?;
                parts.sender.replace(sender).map_or(Ok(()), |_| Err(dup()))
            }
            record::ATTRIBUTE => {
                if parts.attributes.len() >= self.limits.max_attributes {
                    return Err(QueueFileError::TooMany {
                        what: "attributes",
                        limit: self.limits.max_attributes,
                    });
                }
                let payload = self.payload(kind, len, offset)?;
                let (key, value) = parse_attribute(&payload, offset)?;
                match parts.attributes.insert(key, value) {
                    Some(_) => Err(dup()),
                    None => Ok(()),
                }
            }
            record::HEADER => Err(dup()),
            _ => Err(QueueFileError::UnknownRecord { kind, offset }),
        }
    }

    fn end_record(&mut self, len: u64, offset: u64) -> Result<()> {
        if len != 0 {
            return Err(QueueFileError::BadLength {
                kind: record::END,
                offset,
                len,
            });
        }
        let mut extra = [0u8; 1];
        loop {
            match self.r.read(&mut extra) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(QueueFileError::TrailingData { offset: self.pos }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads a record header, checking that the record fits in the file.
    fn header(&mut self) -> Result<(u8, u64, u64)> {
        let offset = self.pos;
        let mut head = [0u8; RECORD_HEADER_LEN as usize];
        self.read_exact(&mut head)?;
        let [kind, l0, l1, l2, l3, l4, l5, l6, l7] = head;
        let len = u64::from_be_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
        match self.pos.checked_add(len) {
            Some(record_end) if record_end <= self.end => Ok((kind, len, offset)),
            _ => Err(QueueFileError::Truncated { offset: self.end }),
        }
    }

    /// Reads a non-content payload of at most `max_record_len` bytes.
    fn payload(&mut self, kind: u8, len: u64, offset: u64) -> Result<Vec<u8>> {
        if len > self.limits.max_record_len {
            return Err(QueueFileError::BadLength { kind, offset, len });
        }
        let n = usize::try_from(len).map_err(|_| QueueFileError::BadLength { kind, offset, len })?;
        let mut buf = vec![0u8; n];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(QueueFileError::Truncated { offset: self.pos }),
            Err(e) => Err(e.into()),
        }
    }
}

fn bad(kind: u8, offset: u64, reason: &'static str) -> QueueFileError {
    QueueFileError::BadPayload { kind, offset, reason }
}

fn text(bytes: &[u8], kind: u8, offset: u64) -> Result<String> {
    let s = std::str::from_utf8(bytes).map_err(|_| bad(kind, offset, "not UTF-8"))?;
    if !is_text(s) {
        return Err(bad(kind, offset, "control character in text"));
    }
    Ok(s.to_owned())
}

fn parse_recipient(payload: &[u8], offset: u64) -> Result<(RecipientSpec, RecipientStatus)> {
    let kind = record::RECIPIENT;
    let short = || bad(kind, offset, "short");
    let mut f = Fields(payload);
    let status = RecipientStatus::from_byte(f.u8().ok_or_else(short)?).ok_or(bad(kind, offset, "unknown status"))?;
    let notify = Notify::from_bits(f.u8().ok_or_else(short)?).ok_or(bad(kind, offset, "invalid NOTIFY flags"))?;
    let addr_len = f.u32().ok_or_else(short)?;
    let addr = f
        .take(usize::try_from(addr_len).unwrap_or(usize::MAX))
        .ok_or_else(short)?;
    let address = text(addr, kind, offset)?;
    if address.is_empty() {
        return Err(bad(kind, offset, "empty address"));
    }
    let orcpt = f.rest();
    let orcpt = if orcpt.is_empty() {
        None
    } else {
        Some(text(orcpt, kind, offset)?)
    };
    Ok((RecipientSpec { address, orcpt, notify }, status))
}

fn parse_attribute(payload: &[u8], offset: u64) -> Result<(String, String)> {
    let kind = record::ATTRIBUTE;
    let mut f = Fields(payload);
    let key_len = f.u32().ok_or(bad(kind, offset, "short"))?;
    let key = f
        .take(usize::try_from(key_len).unwrap_or(usize::MAX))
        .ok_or(bad(kind, offset, "short"))?;
    let key = text(key, kind, offset)?;
    if !is_attr_key(&key) {
        return Err(bad(kind, offset, "invalid key"));
    }
    let value = text(f.rest(), kind, offset)?;
    Ok((key, value))
}

/// A cursor over a payload.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}
