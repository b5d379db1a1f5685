//! A message's header block: parsing it out of the content, reading and editing header
//! fields, and writing it back — with bounded sizes.
//!
//! cleanup uses it to add missing `Date:`/`Message-ID:`/`From:`, remove `Bcc:`, apply
//! header_checks and milter header edits; local and bounce will use it to read and prepend
//! headers. The content is stored with LF line ends (see [`crate::queue_file`]); this module
//! accepts LF or CRLF on input and writes LF.
//!
//! A header field is kept as its raw bytes (name, colon, value and any continuation lines,
//! each line ending in LF), so an untouched field is written back byte for byte.
//!
//! **Where the header ends** (RFC 5322 §2.1, as Postfix's cleanup decides it): at the first
//! empty line (which is dropped and written back as the separator), or at the first line
//! that is neither a header field (`name:` where the name is 1-998 printable ASCII
//! characters other than `:` and space) nor a continuation line (leading space or tab); that
//! line starts the body.
//!
//! # Security stance
//!
//! The header comes from the network. A logical header field longer than
//! [`Limits::max_field_len`] or beyond [`Limits::max_fields`] ends the header block: it and
//! everything after it are kept as body, byte for byte, so memory stays bounded and nothing
//! is lost. Values added by callers are checked ([`HeaderError`]) so that a CR/LF cannot
//! smuggle a new header field.

#[cfg(test)]
mod tests;

use thiserror::Error;

/// Bounds on a parsed header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest logical field (all its lines), in bytes. Default 102,400 (Postfix's
    /// `header_size_limit`).
    pub max_field_len: usize,
    /// Most fields. Default 10,000.
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_field_len: 102_400,
            max_fields: 10_000,
        }
    }
}

/// Fields that edits may add beyond [`Limits::max_fields`]: parsing stops at the limit, so
/// a header that fills it still has room for what the mail system itself adds (`Date:`,
/// `Message-ID:`, `From:`, milter additions) instead of failing for ever.
pub const EDIT_RESERVE: usize = 64;

/// Errors from editing a header block.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// A field name that is empty, too long, or holds a byte outside printable ASCII or a `:`.
    #[error("bad header field name {0:?}")]
    BadName(String),
    /// A value with NUL, a bare CR, or a line break not followed by a space or tab.
    #[error("bad header field value for {0}")]
    BadValue(String),
    /// The edit would exceed [`Limits`].
    #[error("header block too large")]
    TooLarge,
}

/// One header field: its raw lines, each ending in LF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    raw: Vec<u8>,
    name_len: usize,
}

impl Field {
    /// Builds a field from a name and a value. The value is what follows the colon; one
    /// space is put after the colon unless the value starts with a space or tab. A value may
    /// be folded: line breaks (LF or CRLF) must be followed by a space or tab.
    pub fn new(name: &str, value: &str) -> Result<Field, HeaderError> {
        if !is_field_name(name.as_bytes()) {
            return Err(HeaderError::BadName(crate::strbuf::printable_bounded(
                name.as_bytes(),
                80,
            )));
        }
        let value = value.replace("\r\n", "\n");
        let bytes = value.as_bytes();
        let bad = bytes
            .iter()
            .enumerate()
            .any(|(i, &b)| b == 0 || b == b'\r' || (b == b'\n' && !matches!(bytes.get(i + 1), Some(b' ' | b'\t'))));
        if bad {
            return Err(HeaderError::BadValue(name.to_owned()));
        }
        let mut raw = Vec::with_capacity(name.len() + value.len() + 3);
        raw.extend_from_slice(name.as_bytes());
        raw.push(b':');
        if !value.starts_with([' ', '\t']) {
            raw.push(b' ');
        }
        raw.extend_from_slice(bytes);
        raw.push(b'\n');
        Ok(Field {
            raw,
            name_len: name.len(),
        })
    }

    /// The field name as written.
    pub fn name(&self) -> &str {
        // The name was checked to be printable ASCII when the field was made.
        std::str::from_utf8(self.raw.get(..self.name_len).unwrap_or_default()).unwrap_or_default()
    }

    /// Whether the name is `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name)
    }

    /// The raw value: everything after the colon, continuation lines included, without the
    /// final LF.
    pub fn raw_value(&self) -> &[u8] {
        let v = self.raw.get(self.name_len + 1..).unwrap_or_default();
        v.strip_suffix(b"\n").unwrap_or(v)
    }

    /// The value unfolded (line breaks removed, RFC 5322 §2.2.3) with leading and trailing
    /// white space trimmed; invalid UTF-8 is replaced.
    pub fn value(&self) -> String {
        let unfolded: Vec<u8> = self.raw_value().iter().copied().filter(|&b| b != b'\n').collect();
        String::from_utf8_lossy(&unfolded).trim().to_owned()
    }

    /// The whole field as stored, `Name: value` with inner line breaks as LF and no final
    /// LF: what header_checks match against.
    pub fn text(&self) -> String {
        let r = self.raw.strip_suffix(b"\n").unwrap_or(&self.raw);
        String::from_utf8_lossy(r).into_owned()
    }

    /// The raw bytes, ending in LF.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Length of the raw bytes.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Always false: a field has at least a name and a colon.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// A parsed header block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    fields: Vec<Field>,
    limits: Limits,
    size: usize,
}

/// Whether `name` is a valid field name (RFC 5322 ftext, at most 998 bytes).
pub fn is_field_name(name: &[u8]) -> bool {
    (1..=998).contains(&name.len()) && name.iter().all(|&b| (33..=126).contains(&b) && b != b':')
}

/// Splits `content` into its header block and the offset where the body starts (after
/// the empty separator line, if there is one). Line ends may be LF or CRLF; fields are
/// stored with LF.
pub fn parse(content: &[u8], limits: Limits) -> (Header, usize) {
    let mut header = Header {
        fields: Vec::new(),
        limits,
        size: 0,
    };
    let mut pos = 0;
    // The current field: its start offset in `content` and its normalised bytes.
    let mut current: Option<(usize, Vec<u8>, usize)> = None;
    loop {
        let rest = content.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            break;
        }
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (rest.get(..i).unwrap_or_default(), pos + i + 1),
            None => (rest, content.len()),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if let Some((_, raw, name_len)) = current.take() {
                header.fields.push(Field { raw, name_len });
            }
            return (header, next);
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some((start, raw, _)) = current.as_mut() {
                if raw.len() + line.len() + 1 > limits.max_field_len {
                    // Too long: this field and all that follows is body.
                    let start = *start;
                    header.size -= raw.len();
                    return (header, start);
                }
                raw.extend_from_slice(line);
                raw.push(b'\n');
                header.size += line.len() + 1;
                pos = next;
                continue;
            }
            // A continuation line with nothing to continue: the body starts here.
            return (header, pos);
        }
        let name_len = match memchr::memchr(b':', line) {
            Some(i) if is_field_name(line.get(..i).unwrap_or_default()) => i,
            _ => {
                if let Some((_, raw, name_len)) = current.take() {
                    header.fields.push(Field { raw, name_len });
                }
                return (header, pos);
            }
        };
        if let Some((_, raw, name_len)) = current.take() {
            header.fields.push(Field { raw, name_len });
        }
        if header.fields.len() >= limits.max_fields || line.len() + 1 > limits.max_field_len {
            return (header, pos);
        }
        let mut raw = Vec::with_capacity(line.len() + 1);
        raw.extend_from_slice(line);
        raw.push(b'\n');
        header.size += raw.len();
        current = Some((pos, raw, name_len));
        pos = next;
    }
    if let Some((_, raw, name_len)) = current.take() {
        header.fields.push(Field { raw, name_len });
    }
    (header, content.len())
}

impl Header {
    /// An empty header block with the given limits.
    pub fn new(limits: Limits) -> Header {
        Header {
            fields: Vec::new(),
            limits,
            size: 0,
        }
    }

    /// The fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Total bytes of all fields.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether a field named `name` exists (ASCII case ignored).
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.is(name))
    }

    /// The first field named `name`.
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.is(name))
    }

    /// Every field named `name`.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Field> + 'a {
        self.fields.iter().filter(move |f| f.is(name))
    }

    fn check_room(&self, extra: usize) -> Result<(), HeaderError> {
        if self.fields.len() >= self.limits.max_fields + EDIT_RESERVE || extra > self.limits.max_field_len {
            return Err(HeaderError::TooLarge);
        }
        Ok(())
    }

    /// Appends a field at the end.
    pub fn append(&mut self, field: Field) -> Result<(), HeaderError> {
        self.insert(self.fields.len(), field)
    }

    /// Inserts a field before position `index` (0: first; past the end: appended).
    pub fn insert(&mut self, index: usize, field: Field) -> Result<(), HeaderError> {
        self.check_room(field.len())?;
        self.size += field.len();
        let at = index.min(self.fields.len());
        self.fields.insert(at, field);
        Ok(())
    }

    /// Removes and returns the field at `index`.
    pub fn remove(&mut self, index: usize) -> Option<Field> {
        if index < self.fields.len() {
            let f = self.fields.remove(index);
            self.size -= f.len();
            Some(f)
        } else {
            None
        }
    }

    /// Removes every field named `name`; returns how many.
    pub fn remove_all(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| !f.is(name));
        self.size = self.fields.iter().map(Field::len).sum();
        before - self.fields.len()
    }

    /// The position of the `occurrence`-th (1-based) field named `name`.
    pub fn position(&self, name: &str, occurrence: usize) -> Option<usize> {
        self.fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is(name))
            .nth(occurrence.checked_sub(1)?)
            .map(|(i, _)| i)
    }

    /// Replaces the `occurrence`-th (1-based) field named `name` with `value`, or deletes it
    /// when `value` is empty (the Milter `chgheader` rule). A missing occurrence with a
    /// non-empty value appends a new field, as sendmail does.
    pub fn change(&mut self, name: &str, occurrence: usize, value: &str) -> Result<(), HeaderError> {
        match self.position(name, occurrence) {
            Some(i) if value.is_empty() => {
                self.remove(i);
                Ok(())
            }
            Some(i) => {
                // Keep the field's own spelling of its name.
                let own = self
                    .fields
                    .get(i)
                    .map(|f| f.name().to_owned())
                    .unwrap_or_else(|| name.to_owned());
                let f = Field::new(&own, value)?;
                self.remove(i);
                self.insert(i, f)
            }
            None if value.is_empty() => Ok(()),
            None => self.append(Field::new(name, value)?),
        }
    }

    /// Keeps only the fields for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(usize, &Field) -> bool) {
        let mut i = 0;
        self.fields.retain(|f| {
            let k = keep(i, f);
            i += 1;
            k
        });
        self.size = self.fields.iter().map(Field::len).sum();
    }

    /// Writes the fields, each ending in LF, without the separator line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for f in &self.fields {
            out.extend_from_slice(&f.raw);
        }
    }
}
