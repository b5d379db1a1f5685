//! [`QueueFileWriter`]: writing a queue file record by record, content streamed.

use std::io::{Seek, SeekFrom, Write};

use super::{
    Envelope, FORMAT_VERSION, Limits, MAGIC, QueueFileError, RECORD_HEADER_LEN, RecipientSpec, RecipientStatus,
    is_attr_key, is_text, record,
};

/// The content length written until the real one is known: a file left with it is
/// recognisably incomplete.
pub(super) const LENGTH_PLACEHOLDER: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Envelope records may still be added; no content yet.
    Envelope,
    /// Content is being streamed; `M` length not yet patched.
    Content,
    /// Content closed; only recipients may follow.
    Extracted,
}

/// Writes one queue file: the envelope at creation, then recipients and content, then
/// [`finish`](Self::finish).
///
/// The writer needs `Seek` to patch the content length when the content is complete (it
/// works on a `File` or a `BufWriter<File>`); it does not create, fsync or rename the file
/// — that is the caller's job, with [`crate::safe_open`]. It refuses any value the reader
/// would refuse, so whatever it writes reads back.
#[derive(Debug)]
pub struct QueueFileWriter<W: Write + Seek> {
    w: W,
    limits: Limits,
    section: Section,
    /// Offset of the next byte to write.
    pos: u64,
    /// Offset of the `M` record's length field.
    content_len_at: u64,
    content_len: u64,
    recipients: usize,
}

impl<W: Write + Seek> QueueFileWriter<W> {
    /// Starts a queue file at `w`'s current position with the default [`Limits`], writing
    /// the header and envelope records.
    pub fn new(w: W, envelope: &Envelope) -> Result<Self, QueueFileError> {
        Self::with_limits(w, envelope, Limits::default())
    }

    /// [`new`](Self::new) with explicit limits.
    pub fn with_limits(mut w: W, envelope: &Envelope, limits: Limits) -> Result<Self, QueueFileError> {
        if !is_text(&envelope.sender) {
            return Err(QueueFileError::InvalidInput("sender is not text"));
        }
        if envelope.arrival.micros >= 1_000_000 {
            return Err(QueueFileError::InvalidInput("arrival micros out of range"));
        }
        if envelope.attributes.len() > limits.max_attributes {
            return Err(QueueFileError::TooMany {
                what: "attributes",
                limit: limits.max_attributes,
            });
        }
        for (key, value) in &envelope.attributes {
            if !is_attr_key(key) {
                return Err(QueueFileError::InvalidInput("bad attribute key"));
            }
            if !is_text(value) {
                return Err(QueueFileError::InvalidInput("attribute value is not text"));
            }
        }
        let pos = w.stream_position()?;
        let mut this = Self {
            w,
            limits,
            section: Section::Envelope,
            pos,
            content_len_at: 0,
            content_len: 0,
            recipients: 0,
        };
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        this.record(record::HEADER, &[&header])?;
        this.record(record::QUEUE_ID, &[envelope.queue_id.as_str().as_bytes()])?;
        let time = [
            &envelope.arrival.secs.to_be_bytes()[..],
            &envelope.arrival.micros.to_be_bytes()[..],
        ];
        this.record(record::TIME, &time)?;
        this.record(record::SENDER, &[envelope.sender.as_bytes()])?;
        for (key, value) in &envelope.attributes {
            let key_len = len_u32(key.len())?;
            this.record(record::ATTRIBUTE, &[&key_len, key.as_bytes(), value.as_bytes()])?;
        }
        Ok(this)
    }

    /// Adds a recipient, pending. Before any content it goes in the envelope; after
    /// content it closes the content and goes after it.
    pub fn add_recipient(&mut self, r: &RecipientSpec) -> Result<(), QueueFileError> {
        self.add_routed_recipient(r, None)
    }

    /// [`add_recipient`](Self::add_recipient) with a fixed route (`transport:nexthop`,
    /// see [`super::parse_route`]): this copy goes there, whatever the resolver says of its
    /// address.
    pub fn add_routed_recipient(&mut self, r: &RecipientSpec, route: Option<&str>) -> Result<(), QueueFileError> {
        if route.is_some_and(|t| super::parse_route(t).is_none()) {
            return Err(QueueFileError::InvalidInput("route is not transport:nexthop"));
        }
        if r.address.is_empty() || !is_text(&r.address) {
            return Err(QueueFileError::InvalidInput("recipient address is empty or not text"));
        }
        let orcpt = r.orcpt.as_deref().unwrap_or("");
        if r.orcpt.is_some() && (orcpt.is_empty() || !is_text(orcpt)) {
            return Err(QueueFileError::InvalidInput("ORCPT is empty or not text"));
        }
        if self.recipients >= self.limits.max_recipients {
            return Err(QueueFileError::TooMany {
                what: "recipients",
                limit: self.limits.max_recipients,
            });
        }
        if self.section == Section::Content {
            self.close_content()?;
        }
        let flags = [RecipientStatus::Pending.to_byte(), r.notify.bits()];
        let addr_len = len_u32(r.address.len())?;
        self.record(
            record::RECIPIENT,
            &[&flags, &addr_len, r.address.as_bytes(), orcpt.as_bytes()],
        )?;
        if let Some(route) = route {
            self.record(record::ROUTE, &[route.as_bytes()])?;
        }
        self.recipients += 1;
        Ok(())
    }

    /// Appends a piece of the message content. Content is stored verbatim; see the module
    /// documentation for the line-ending convention.
    pub fn write_content(&mut self, chunk: &[u8]) -> Result<(), QueueFileError> {
        match self.section {
            Section::Envelope => self.open_content()?,
            Section::Content => {}
            Section::Extracted => {
                return Err(QueueFileError::InvalidInput("content after extracted recipients"));
            }
        }
        self.w.write_all(chunk)?;
        let n = chunk.len() as u64;
        self.pos += n;
        self.content_len += n;
        Ok(())
    }

    /// Completes the file: closes the content (empty if none was written), writes the end
    /// record and flushes. Returns the underlying writer, for the caller to fsync.
    pub fn finish(mut self) -> Result<W, QueueFileError> {
        if self.recipients == 0 {
            return Err(QueueFileError::NoRecipients);
        }
        match self.section {
            Section::Envelope => {
                self.open_content()?;
                self.close_content()?;
            }
            Section::Content => self.close_content()?,
            Section::Extracted => {}
        }
        self.record(record::END, &[])?;
        self.w.flush()?;
        Ok(self.w)
    }

    /// Number of recipients added so far.
    pub fn recipient_count(&self) -> usize {
        self.recipients
    }

    fn open_content(&mut self) -> Result<(), QueueFileError> {
        self.w.write_all(&[record::CONTENT])?;
        self.w.write_all(&LENGTH_PLACEHOLDER.to_be_bytes())?;
        self.content_len_at = self.pos + 1;
        self.pos += RECORD_HEADER_LEN;
        self.section = Section::Content;
        Ok(())
    }

    fn close_content(&mut self) -> Result<(), QueueFileError> {
        self.w.seek(SeekFrom::Start(self.content_len_at))?;
        self.w.write_all(&self.content_len.to_be_bytes())?;
        self.w.seek(SeekFrom::Start(self.pos))?;
        self.section = Section::Extracted;
        Ok(())
    }

    /// Writes one non-content record whose payload is the concatenation of `parts`.
    fn record(&mut self, kind: u8, parts: &[&[u8]]) -> Result<(), QueueFileError> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len > self.limits.max_record_len {
            return Err(QueueFileError::InvalidInput("record longer than the limit"));
        }
        self.w.write_all(&[kind])?;
        self.w.write_all(&len.to_be_bytes())?;
        for p in parts {
            self.w.write_all(p)?;
        }
        self.pos += RECORD_HEADER_LEN + len;
        Ok(())
    }
}

fn len_u32(len: usize) -> Result<[u8; 4], QueueFileError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| QueueFileError::InvalidInput("field longer than 4 GiB"))
}

#[cfg(test)]
impl QueueFileWriter<std::io::Cursor<Vec<u8>>> {
    /// The bytes written so far, without finishing: what a crash would leave.
    pub(super) fn w_for_tests(self) -> Vec<u8> {
        self.w.into_inner()
    }
}
