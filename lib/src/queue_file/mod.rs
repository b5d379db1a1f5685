//! The queue file: one file per message, holding its envelope, its content and the
//! per-recipient completion marks.
//!
//! cleanup writes a queue file with [`QueueFileWriter`] under a temporary name, fsyncs it
//! and renames it into `incoming/` (see [`crate::safe_open::write_atomic`] and
//! [`crate::safe_open::rename_durable`]); qmgr and the delivery agents read it with
//! [`QueueFile::read`], which parses the envelope and notes where the content is without
//! loading it; a delivery agent streams the content with [`QueueFile::content_reader`]; and
//! qmgr records each finished recipient in place with [`mark_done`], so that a restart
//! never delivers to that recipient again.
//!
//! # Format (version 1)
//!
//! A queue file is a sequence of records. Every record is
//!
//! ```text
//! +------+----------------------------+-------------------+
//! | type | length                     | payload           |
//! | 1 B  | 8 B, unsigned, big-endian  | `length` bytes    |
//! +------+----------------------------+-------------------+
//! ```
//!
//! Everything is length-prefixed: there are no delimiters and nothing is escaped, so any
//! payload may contain any byte. Integers are unsigned big-endian. "Text" is UTF-8 with no
//! ASCII control character (0x00-0x1f, 0x7f). Record types are ASCII letters:
//!
//! | type | name | payload | occurs |
//! | --- | --- | --- | --- |
//! | `H` | header | the 8 bytes `POSTERNQ`, then the format version: u16 = 1 | first record, once |
//! | `I` | queue ID | the 16-character queue ID ([`QueueId`]) | once, before `M` |
//! | `T` | arrival time | seconds since the Unix epoch: u64, then microseconds: u32 (< 1,000,000) | once, before `M` |
//! | `S` | sender | the envelope sender as text; empty for the null sender `<>` | once, before `M` |
//! | `A` | attribute | key length: u32, key, value (the rest of the payload). Key: 1-64 bytes of `a-z 0-9 _ . -`; value: text | any number, before `M`, keys unique |
//! | `R` | recipient | status: u8, DSN NOTIFY: u8, address length: u32, address (text, non-empty), then ORCPT (the rest of the payload, text; empty = none) | at least one in the file, before or after `M` |
//! | `N` | route | `transport:nexthop` as text ([`parse_route`]) | at most once, right after the `R` it belongs to |
//! | `M` | message content | the message (header and body) | once |
//! | `E` | end | empty | last record, once; nothing may follow |
//!
//! The records `I`, `T`, `S`, `A` and `R` before `M` may come in any order. Recipient
//! records after `M` are recipients added once the content had been written (as Postfix's
//! "extracted" segment). Recipient indexes count recipient records in file order.
//!
//! **Routes** (`N`, added for replicated mailboxes; files written before have none and
//! read as they always did): a recipient record followed by a route record is delivered
//! through that transport and nexthop as written, not where the resolver would send its
//! address. cleanup writes one recipient record with a route per `replica_relays` entry
//! for a recipient in `replica_domains`, so each copy has its own status byte (done mark)
//! and its own delivery; qmgr never merges recipients with different routes. A reader
//! older than routes refuses a file that has them (unknown record type `N`) and moves it
//! to `corrupt/`, from where `postsuper -r` brings it back once a current version runs.
//!
//! **Recipient status** (the first payload byte of `R`, at the fixed offset "record start
//! plus 9"): `P` pending, `D` delivered, `B` bounced (failed permanently; the DSN is the bounce
//! daemon's business), `X` discarded. Anything but `P` is final. [`mark_done`] overwrites
//! this one byte in place with `pwrite` and `fdatasync`s the file.
//!
//! **DSN NOTIFY** (second payload byte of `R`, RFC 3461): bit 0 SUCCESS, bit 1 FAILURE,
//! bit 2 DELAY, bit 3 NEVER; 0 means NOTIFY was not given. NEVER excludes the others; other
//! bits must be zero.
//!
//! **Attributes** hold what else the envelope carries; keys Postern uses are in [`attr`].
//!
//! **Content** is stored byte for byte as handed to the writer, so it may hold any byte
//! including NUL. By Postern convention cleanup stores lines terminated by LF alone (it
//! strips the CR of each received CRLF, as Postfix does), and agents that send the message
//! over SMTP turn LF back into CRLF ([`crate::line::DotStuffer`]). A reader must not assume
//! the content ends with LF.
//!
//! **Completeness.** The writer emits the `M` length as `0xFFFF_FFFF_FFFF_FFFF` and patches
//! the real length when the content is complete, then writes `E` last. A file cut short
//! anywhere (crash, full disk) lacks its `E` record or has the impossible length, and is
//! rejected as incomplete, never half-read.
//!
//! # Security stance
//!
//! Queue files are written only by cleanup, but a reader treats them as untrusted anyway (a
//! bug, a full disk, a hostile local user with queue access, bit rot): every length is
//! checked against the space left and against [`Limits`] *before* anything is allocated,
//! every record type and field is validated, and any violation is an error value — the file
//! goes to `corrupt/` — never a panic or an out-of-bounds read. Text fields refuse control
//! characters, so an envelope value can never smuggle a CR/LF into a header, a log line or
//! an SMTP command. The content is never parsed here.

mod read;
mod write;

#[cfg(test)]
mod tests;

pub use read::mark_done;
pub use write::QueueFileWriter;

use std::collections::BTreeMap;
use std::io;

use thiserror::Error;

use crate::queue_id::QueueId;

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// The magic at the start of the header record's payload.
pub const MAGIC: &[u8; 8] = b"POSTERNQ";

/// Bytes in a record header (type and length).
pub const RECORD_HEADER_LEN: u64 = 9;

/// Record type bytes.
pub mod record {
    /// Header: magic and version.
    pub const HEADER: u8 = b'H';
    /// Queue ID.
    pub const QUEUE_ID: u8 = b'I';
    /// Arrival time.
    pub const TIME: u8 = b'T';
    /// Envelope sender.
    pub const SENDER: u8 = b'S';
    /// Envelope attribute.
    pub const ATTRIBUTE: u8 = b'A';
    /// Recipient.
    pub const RECIPIENT: u8 = b'R';
    /// Route of the recipient before it.
    pub const ROUTE: u8 = b'N';
    /// Message content.
    pub const CONTENT: u8 = b'M';
    /// End of file.
    pub const END: u8 = b'E';
}

/// Attribute keys Postern uses (others may be added by a site; see the format rules).
pub mod attr {
    /// Reverse-DNS name of the SMTP client, or `unknown`.
    pub const CLIENT_NAME: &str = "client_name";
    /// IP address of the SMTP client.
    pub const CLIENT_ADDR: &str = "client_addr";
    /// The HELO/EHLO argument.
    pub const HELO: &str = "helo";
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPSA`, `LMTP`, `local` ...
    pub const PROTOCOL: &str = "protocol";
    /// The SASL-authenticated user name.
    pub const SASL_USERNAME: &str = "sasl_username";
    /// The `SIZE=` value the client declared.
    pub const SIZE: &str = "size";
    /// `7BIT`, `8BITMIME` or `BINARYMIME` (the `BODY=` parameter).
    pub const BODY: &str = "body";
    /// `yes` when the message was received with `SMTPUTF8`.
    pub const SMTPUTF8: &str = "smtputf8";
    /// DSN `RET=`: `FULL` or `HDRS`.
    pub const DSN_RET: &str = "ret";
    /// DSN `ENVID=` (xtext-decoded).
    pub const DSN_ENVID: &str = "envid";
}

/// Errors from reading, writing and marking queue files.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum QueueFileError {
    /// Reading or writing the file failed.
    #[error("queue file I/O: {0}")]
    Io(#[from] io::Error),
    /// The file ends inside a record, or before its end record: it is incomplete.
    #[error("queue file truncated at offset {offset}")]
    Truncated {
        /// Offset at which more bytes were expected.
        offset: u64,
    },
    /// The file does not start with a header record carrying the magic.
    #[error("not a Postern queue file (bad magic)")]
    BadMagic,
    /// The header names a format version this code does not read.
    #[error("unsupported queue file version {0}")]
    UnsupportedVersion(u16),
    /// A record type byte that the format does not define.
    #[error("unknown record type {kind:#04x} at offset {offset}")]
    UnknownRecord {
        /// The type byte.
        kind: u8,
        /// Offset of the record.
        offset: u64,
    },
    /// A known record where the format does not allow it (e.g. a sender after the content).
    #[error("record {:?} not allowed at offset {offset}", char::from(*kind))]
    Misplaced {
        /// The type byte.
        kind: u8,
        /// Offset of the record.
        offset: u64,
    },
    /// A record that may occur once occurred again.
    #[error("duplicate record {:?} at offset {offset}", char::from(*kind))]
    Duplicate {
        /// The type byte.
        kind: u8,
        /// Offset of the second occurrence.
        offset: u64,
    },
    /// A required record is absent.
    #[error("missing record {:?}", char::from(*kind))]
    Missing {
        /// The type byte.
        kind: u8,
    },
    /// A record's length is wrong for its type or exceeds [`Limits`].
    #[error("record {:?} at offset {offset} has bad length {len}", char::from(*kind))]
    BadLength {
        /// The type byte.
        kind: u8,
        /// Offset of the record.
        offset: u64,
        /// The length found.
        len: u64,
    },
    /// A record's payload is malformed.
    #[error("record {:?} at offset {offset}: {reason}", char::from(*kind))]
    BadPayload {
        /// The type byte.
        kind: u8,
        /// Offset of the record.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More recipients or attributes than [`Limits`] allow.
    #[error("too many {what} (limit {limit})")]
    TooMany {
        /// `"recipients"` or `"attributes"`.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The file has no recipient record (or the writer was given none).
    #[error("queue file has no recipients")]
    NoRecipients,
    /// Bytes follow the end record.
    #[error("data after the end record at offset {offset}")]
    TrailingData {
        /// Offset of the first extra byte.
        offset: u64,
    },
    /// The writer was asked for something the format cannot hold: a value that is not
    /// valid text, an empty recipient, a bad attribute key, content after extracted
    /// recipients, a record over the limit.
    #[error("cannot write queue file: {0}")]
    InvalidInput(&'static str),
    /// [`mark_done`] found no recipient record at the handle's offset (wrong file?).
    #[error("no recipient record at offset {offset}")]
    StaleHandle {
        /// The status byte offset from the handle.
        offset: u64,
    },
}

/// Bounds the reader (and writer) enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of any record but the content (default 64 KiB).
    pub max_record_len: u64,
    /// Most recipients in one file (default 50,000).
    pub max_recipients: usize,
    /// Most attributes (default 256).
    pub max_attributes: usize,
    /// Largest content [`QueueFile::read_all`] loads into memory (default 64 MiB); the
    /// streaming reader has no content limit.
    pub max_content_in_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_len: 64 * 1024,
            max_recipients: 50_000,
            max_attributes: 256,
            max_content_in_memory: 64 * 1024 * 1024,
        }
    }
}

/// Arrival time: seconds and microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Arrival {
    /// Whole seconds.
    pub secs: u64,
    /// Microseconds, below 1,000,000.
    pub micros: u32,
}

/// The message envelope apart from its recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The message's queue ID.
    pub queue_id: QueueId,
    /// When the message arrived.
    pub arrival: Arrival,
    /// The envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// Other envelope data (see [`attr`]).
    pub attributes: BTreeMap<String, String>,
}

/// DSN NOTIFY flags of one recipient (RFC 3461); see the format description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Notify(u8);

impl Notify {
    /// NOTIFY was not given.
    pub const UNSPECIFIED: Notify = Notify(0);
    /// NOTIFY=NEVER.
    pub const NEVER: Notify = Notify(8);
    const SUCCESS: u8 = 1;
    const FAILURE: u8 = 2;
    const DELAY: u8 = 4;

    /// NOTIFY with the given subset of SUCCESS, FAILURE and DELAY (all false gives
    /// [`Notify::UNSPECIFIED`]).
    pub fn new(success: bool, failure: bool, delay: bool) -> Self {
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        Notify(bit(success, Self::SUCCESS) | bit(failure, Self::FAILURE) | bit(delay, Self::DELAY))
    }

    /// Validates a stored byte: only the four defined bits, NEVER alone.
    pub fn from_bits(bits: u8) -> Option<Self> {
        // 0-7: any subset of SUCCESS, FAILURE, DELAY; 8: NEVER alone.
        (bits <= Self::NEVER.0).then_some(Notify(bits))
    }

    /// The stored byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// SUCCESS requested.
    pub fn success(self) -> bool {
        self.0 & Self::SUCCESS != 0
    }

    /// FAILURE requested.
    pub fn failure(self) -> bool {
        self.0 & Self::FAILURE != 0
    }

    /// DELAY requested.
    pub fn delay(self) -> bool {
        self.0 & Self::DELAY != 0
    }

    /// NEVER requested.
    pub fn never(self) -> bool {
        self.0 == Self::NEVER.0
    }
}

/// Where a recipient stands; stored as one byte that [`mark_done`] overwrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientStatus {
    /// Not finished: deliver (or retry).
    Pending,
    /// Delivered successfully.
    Delivered,
    /// Failed permanently (or expired); no further attempts.
    Bounced,
    /// Dropped on purpose (discard transport, postsuper); no further attempts.
    Discarded,
}

impl RecipientStatus {
    /// The stored byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Pending => b'P',
            Self::Delivered => b'D',
            Self::Bounced => b'B',
            Self::Discarded => b'X',
        }
    }

    /// Decodes a stored byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'P' => Some(Self::Pending),
            b'D' => Some(Self::Delivered),
            b'B' => Some(Self::Bounced),
            b'X' => Some(Self::Discarded),
            _ => None,
        }
    }

    /// Whether the recipient needs no further delivery attempt.
    pub fn is_final(self) -> bool {
        self != Self::Pending
    }
}

/// A recipient to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientSpec {
    /// The envelope recipient address (non-empty text).
    pub address: String,
    /// The DSN ORCPT parameter as received (`rfc822;user@example.org`), if any.
    pub orcpt: Option<String>,
    /// DSN NOTIFY flags.
    pub notify: Notify,
}

/// A recipient as read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Address, ORCPT and NOTIFY.
    pub spec: RecipientSpec,
    /// Status when the file was read.
    pub status: RecipientStatus,
    /// The fixed route (`transport:nexthop`) of this copy, from an `N` record; `None`:
    /// resolve the address as usual.
    pub route: Option<String>,
    /// Where to mark it done.
    pub handle: RecipientHandle,
}

/// Locates one recipient's status byte in one queue file, for [`mark_done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecipientHandle {
    index: usize,
    status_offset: u64,
}

impl RecipientHandle {
    /// The recipient's index (recipient records in file order, from 0).
    pub fn index(&self) -> usize {
        self.index
    }

    /// File offset of the status byte.
    pub fn status_offset(&self) -> u64 {
        self.status_offset
    }
}

/// A parsed queue file: the envelope, the recipients and where the content is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFile {
    /// Format version of the file.
    pub version: u16,
    /// Queue ID, arrival, sender and attributes.
    pub envelope: Envelope,
    /// Every recipient, in file order.
    pub recipients: Vec<Recipient>,
    content_offset: u64,
    content_len: u64,
}

impl QueueFile {
    /// Byte offset and length of the content in the file.
    pub fn content_range(&self) -> std::ops::Range<u64> {
        self.content_offset..self.content_offset.saturating_add(self.content_len)
    }

    /// Length of the content in bytes.
    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// Whether every recipient is finished (the file can be retired).
    pub fn all_done(&self) -> bool {
        self.recipients.iter().all(|r| r.status.is_final())
    }
}

/// Longest route text.
pub const MAX_ROUTE_LEN: usize = 300;

/// Splits a route `transport:nexthop` (the form of a transport_maps value with both parts
/// given): the transport a valid agent name ([`crate::proto::deliver::valid_transport`]),
/// the nexthop non-empty, printable, without spaces, the whole at most [`MAX_ROUTE_LEN`]
/// bytes. `None` for anything else.
pub fn parse_route(route: &str) -> Option<(&str, &str)> {
    if route.len() > MAX_ROUTE_LEN {
        return None;
    }
    let (transport, nexthop) = route.split_once(':')?;
    let printable = nexthop.bytes().all(|b| b.is_ascii_graphic());
    (crate::proto::deliver::valid_transport(transport) && !nexthop.is_empty() && printable)
        .then_some((transport, nexthop))
}

/// Whether `s` is text in the format's sense: no ASCII control characters.
fn is_text(s: &str) -> bool {
    !s.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// Whether `key` is a valid attribute key.
fn is_attr_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}
