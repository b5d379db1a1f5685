//! Queue IDs: the name of a message in every queue directory and in every log line.
//!
//! A queue ID is 16 characters from the alphabet `0-9A-Za-z`, in three fixed-width base-62
//! fields, most significant digit first:
//!
//! | chars | field | range |
//! | --- | --- | --- |
//! | 0..9 | arrival time, microseconds since the Unix epoch | 62⁹ µs ≈ 428 years: good until about 2398 |
//! | 9..13 | process ID | 62⁴ = 14,776,336 > Linux's `pid_max` limit of 2²² |
//! | 13..16 | per-process sequence counter | 62³ = 238,328, wrapping |
//!
//! Digits are `0-9`, then `A-Z`, then `a-z`, which is also their ASCII order, so comparing
//! two IDs as strings (or as file names, as `ls` sorts them) compares arrival times.
//!
//! **Uniqueness.** Within one process the time field is strictly increasing: an ID made in
//! the same microsecond as the previous one (or after the clock stepped back) takes the
//! previous time plus one microsecond. Two processes alive at once differ in the PID field.
//! A process that reuses an earlier process's PID would have to do so within the same
//! microsecond of its predecessor's last ID. The counter separates IDs further should the
//! wall clock be stepped back across a restart. Queue files are still created with `O_EXCL`,
//! so a collision could only ever fail a create, never overwrite a message.
//!
//! **Hashed directories.** The leading characters are nearly constant (they change every
//! few years), so [`QueueId::hash_dir`] hashes on the *least* significant digits of the time
//! field, which change every microsecond and are evenly spread over all 62 values, as
//! Postfix hashes on the fast-changing low bits of its IDs.
//!
//! # Security stance
//!
//! Queue IDs become file names and log fields, and some arrive from outside (`postsuper -d
//! ID`, IPC messages). [`QueueId::parse`] accepts exactly 16 alphanumeric ASCII characters,
//! so a parsed ID can never contain `/`, `..`, NUL, whitespace or a log-forging newline, and
//! deserialisation goes through the same check.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[cfg(test)]
mod tests;

/// Length of every queue ID, in characters.
pub const QUEUE_ID_LEN: usize = 16;

/// The deepest [`QueueId::hash_dir`] hashing supported.
pub const MAX_HASH_DEPTH: usize = 4;

const TIME_DIGITS: usize = 9;
const PID_DIGITS: usize = 4;
const SEQ_DIGITS: usize = 3;
const TIME_END: usize = TIME_DIGITS;
const PID_END: usize = TIME_DIGITS + PID_DIGITS;
const _: () = assert!(TIME_DIGITS + PID_DIGITS + SEQ_DIGITS == QUEUE_ID_LEN);
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Errors from parsing a queue ID.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueueIdError {
    /// The text is not exactly [`QUEUE_ID_LEN`] bytes long.
    #[error("queue ID must be {QUEUE_ID_LEN} characters, got {0}")]
    BadLength(usize),
    /// The text contains a byte outside `0-9A-Za-z`, at the given offset.
    #[error("queue ID has an invalid character at offset {0}")]
    BadChar(usize),
}

/// A message's queue ID; see the module documentation for its layout.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId([u8; QUEUE_ID_LEN]);

/// Last time field handed out by this process (microseconds).
static LAST_MICROS: AtomicU64 = AtomicU64::new(0);
/// Sequence counter of this process.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl QueueId {
    /// A new ID for a message arriving now, unique on this host.
    pub fn new() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let micros = next_micros(now);
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        Self::from_parts(micros, std::process::id(), seq)
    }

    /// The ID with the given fields, each reduced modulo its field's range.
    pub fn from_parts(micros: u64, pid: u32, seq: u32) -> Self {
        let mut id = [b'0'; QUEUE_ID_LEN];
        let (time, rest) = id.split_at_mut(TIME_END);
        let (pid_part, seq_part) = rest.split_at_mut(PID_DIGITS);
        encode(micros, time);
        encode(u64::from(pid), pid_part);
        encode(u64::from(seq), seq_part);
        Self(id)
    }

    /// Parses an ID, accepting exactly 16 characters from `0-9A-Za-z`.
    pub fn parse(text: &str) -> Result<Self, QueueIdError> {
        let bytes: [u8; QUEUE_ID_LEN] = text
            .as_bytes()
            .try_into()
            .map_err(|_| QueueIdError::BadLength(text.len()))?;
        if let Some(pos) = bytes.iter().position(|b| !b.is_ascii_alphanumeric()) {
            return Err(QueueIdError::BadChar(pos));
        }
        Ok(Self(bytes))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        // Always ASCII alphanumeric by construction.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The arrival time field, in microseconds since the Unix epoch.
    pub fn timestamp_micros(&self) -> u64 {
        decode(self.0.get(..TIME_END).unwrap_or_default())
    }

    /// The arrival time encoded in the ID.
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.timestamp_micros())
    }

    /// The process ID field.
    pub fn pid(&self) -> u32 {
        let v = decode(self.0.get(TIME_END..PID_END).unwrap_or_default());
        u32::try_from(v).unwrap_or(u32::MAX)
    }

    /// The hashed subdirectory path for this ID, `depth` levels deep (clamped to
    /// [`MAX_HASH_DEPTH`]): one character per level, taken from the least significant
    /// digits of the time field, e.g. `"x/4"` for depth 2. Depth 0 is the empty string.
    pub fn hash_dir(&self, depth: usize) -> String {
        let depth = depth.min(MAX_HASH_DEPTH);
        let mut out = String::with_capacity(depth * 2);
        for level in 0..depth {
            if level > 0 {
                out.push('/');
            }
            let idx = TIME_END - 1 - level;
            out.push(char::from(self.0.get(idx).copied().unwrap_or(b'0')));
        }
        out
    }
}

impl Default for QueueId {
    fn default() -> Self {
        Self::new()
    }
}

/// The time field for a new ID: `now`, or one more than the last one handed out if that is
/// not earlier, so that IDs from one process are strictly increasing.
fn next_micros(now: u64) -> u64 {
    let mut last = LAST_MICROS.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST_MICROS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Writes `value` modulo 62^len into `out` as fixed-width base 62, most significant first.
fn encode(mut value: u64, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        let digit = usize::try_from(value % 62).unwrap_or(0);
        *slot = ALPHABET.get(digit).copied().unwrap_or(b'0');
        value /= 62;
    }
}

fn digit_value(c: u8) -> u64 {
    match c {
        b'0'..=b'9' => u64::from(c - b'0'),
        b'A'..=b'Z' => u64::from(c - b'A') + 10,
        b'a'..=b'z' => u64::from(c - b'a') + 36,
        _ => 0,
    }
}

fn decode(digits: &[u8]) -> u64 {
    digits
        .iter()
        .fold(0u64, |acc, &c| acc.saturating_mul(62).saturating_add(digit_value(c)))
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

impl FromStr for QueueId {
    type Err = QueueIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl TryFrom<String> for QueueId {
    type Error = QueueIdError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> Self {
        id.as_str().to_owned()
    }
}

/// Deserialises a `String` field that must hold a queue ID when it arrives from another
/// process (`#[serde(deserialize_with = "crate::queue_id::checked")]`): refused unless it
/// parses as a [`QueueId`].
pub fn checked<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    QueueId::deserialize(d).map(String::from)
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}
