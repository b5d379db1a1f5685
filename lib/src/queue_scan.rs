//! Walking the queue directories and summarising what is in them: the queue listing of
//! `postqueue -p` / `mailq` / `sendmail -bp` and `postqueue -j`, and the file walk that
//! qmgr and postsuper can share.
//!
//! [`queue_files`] lists the message files of one queue (`incoming`, `active`, ...) in name
//! order, descending into hashed subdirectories (single-character names, at most
//! [`crate::queue_id::MAX_HASH_DEPTH`] levels) so a flat and a hashed layout both work.
//! Only names that are valid [`QueueId`]s count; temporary files (`.tmp.*`) and anything
//! else are skipped. [`summarise`] reads one queue file's envelope (never its content) and
//! its defer log; [`scan`] does both for every queue, calling back once per message, so
//! memory stays bounded by one directory's names whatever the queue holds.
//!
//! # Defer logs
//!
//! A deferred message may have a defer log `defer/<same relative path as the queue file>`
//! (or `defer/<ID>`), in Postfix's attribute format: blocks of `name=value` lines, one block
//! per recipient, blank line between blocks. This module reads the `recipient` and `reason`
//! attributes of each block (at most [`MAX_DEFER_LOG`] bytes of the file) and shows the
//! reason next to the recipient, as Postfix's showq does.
//!
//! # Security stance
//!
//! Queue files and logs are opened with [`crate::safe_open::open_read`] (no symlinks, no
//! hard links, regular files only) and parsed by [`QueueFile::read`], which bounds every
//! length; a file that cannot be read is reported as such, never a panic.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::queue_file::QueueFile;
use crate::queue_id::{MAX_HASH_DEPTH, QueueId};
use crate::safe_open::{Expect, open_read};

/// The queues a listing covers, in Postfix's order.
pub const LISTED_QUEUES: &[&str] = &["maildrop", "hold", "incoming", "active", "deferred"];

/// Most bytes of a defer log read.
pub const MAX_DEFER_LOG: u64 = 1 << 20;

/// Most recipients shown per message (the rest are counted).
pub const MAX_LISTED_RECIPIENTS: usize = 10_000;

/// One message file found in a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedFile {
    /// The queue (`incoming`, `deferred`, ...).
    pub queue: String,
    /// Its ID (the file name).
    pub id: QueueId,
    /// Path relative to the queue's directory (`ID` or `x/4/ID`).
    pub relative: PathBuf,
    /// Full path.
    pub path: PathBuf,
}

/// A recipient in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedRecipient {
    /// The address.
    pub address: String,
    /// Why delivery was deferred, from the defer log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_reason: Option<String>,
}

/// What a listing says about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Summary {
    /// A queue file, read.
    Message {
        /// Arrival time, seconds since the epoch.
        arrival: u64,
        /// The envelope sender (empty: the null sender).
        sender: String,
        /// Recipients that still need delivery.
        recipients: Vec<ListedRecipient>,
    },
    /// A maildrop file that could not be parsed: only its owner and time are shown.
    Maildrop {
        /// The file's owner.
        uid: u32,
        /// Its modification time.
        mtime: u64,
    },
    /// The file could not be read or parsed.
    Unreadable {
        /// Why.
        reason: String,
    },
}

/// One message in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is.
    pub file: QueuedFile,
    /// Size of the file in bytes.
    pub size: u64,
    /// What is in it.
    pub summary: Summary,
}

/// The message files of `queue` below `queue_dir`, sorted by name at each level.
/// A missing queue directory is an empty queue.
pub fn queue_files(queue_dir: &Path, queue: &str) -> std::io::Result<Vec<QueuedFile>> {
    let mut out = Vec::new();
    let base = queue_dir.join(queue);
    walk(&base, Path::new(""), 0, queue, &mut out)?;
    Ok(out)
}

fn walk(base: &Path, rel: &Path, depth: usize, queue: &str, out: &mut Vec<QueuedFile>) -> std::io::Result<()> {
    let dir = base.join(rel);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && depth == 0 => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<(String, bool)> = Vec::new();
    for ent in rd {
        let ent = ent?;
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
        names.push((name, is_dir));
    }
    names.sort();
    for (name, is_dir) in names {
        if is_dir {
            if depth < MAX_HASH_DEPTH && name.len() == 1 && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                walk(base, &rel.join(&name), depth + 1, queue, out)?;
            }
        } else if let Ok(id) = QueueId::parse(&name) {
            let relative = rel.join(&name);
            out.push(QueuedFile {
                queue: queue.to_string(),
                id,
                path: base.join(&relative),
                relative,
            });
        }
    }
    Ok(())
}

/// Summarises one file of [`queue_files`].
pub fn summarise(queue_dir: &Path, file: QueuedFile) -> Entry {
    let unreadable = |file: QueuedFile, size: u64, reason: String| Entry {
        file,
        size,
        summary: Summary::Unreadable { reason },
    };
    let f = match open_read(&file.path, &Expect::any()) {
        Ok(f) => f,
        Err(e) => return unreadable(file, 0, e.to_string()),
    };
    let meta = match f.metadata() {
        Ok(m) => m,
        Err(e) => return unreadable(file, 0, e.to_string()),
    };
    let size = meta.len();
    if file.queue == "maildrop" {
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        // The envelope as submitted (recipients of `sendmail -t` are still to be
        // extracted by cleanup); a file that cannot be parsed shows only its owner.
        let summary = match crate::maildrop::Reader::new(&f, u64::MAX) {
            Ok(r) => Summary::Message {
                arrival: mtime,
                sender: r.envelope().sender.clone(),
                recipients: r
                    .envelope()
                    .recipients
                    .iter()
                    .take(MAX_LISTED_RECIPIENTS)
                    .map(|a| ListedRecipient {
                        address: a.clone(),
                        delay_reason: None,
                    })
                    .collect(),
            },
            Err(_) => Summary::Maildrop { uid: meta.uid(), mtime },
        };
        return Entry { file, size, summary };
    }
    let qf = match QueueFile::read(f) {
        Ok(qf) => qf,
        Err(e) => return unreadable(file, size, e.to_string()),
    };
    let reasons = defer_reasons(queue_dir, &file);
    let recipients = qf
        .recipients
        .iter()
        .filter(|r| !r.status.is_final())
        .take(MAX_LISTED_RECIPIENTS)
        .map(|r| ListedRecipient {
            delay_reason: reasons
                .iter()
                .find(|(a, _)| *a == r.spec.address)
                .map(|(_, why)| why.clone()),
            address: r.spec.address.clone(),
        })
        .collect();
    Entry {
        file,
        size,
        summary: Summary::Message {
            arrival: qf.envelope.arrival.secs,
            sender: qf.envelope.sender,
            recipients,
        },
    }
}

/// Every message of every queue in `queues`, in order, one callback each.
pub fn scan(queue_dir: &Path, queues: &[&str], mut each: impl FnMut(Entry)) -> std::io::Result<()> {
    for q in queues {
        for file in queue_files(queue_dir, q)? {
            each(summarise(queue_dir, file));
        }
    }
    Ok(())
}

/// (recipient, reason) pairs of a message's defer log, if it has one.
pub fn defer_reasons(queue_dir: &Path, file: &QueuedFile) -> Vec<(String, String)> {
    let candidates = [
        queue_dir.join("defer").join(&file.relative),
        queue_dir.join("defer").join(file.id.as_str()),
    ];
    for path in candidates {
        if let Ok(f) = open_read(&path, &Expect::any()) {
            return parse_defer_log(f);
        }
    }
    Vec::new()
}

fn parse_defer_log(f: File) -> Vec<(String, String)> {
    let mut text = String::new();
    let mut bytes = Vec::new();
    if f.take(MAX_DEFER_LOG).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    text.push_str(&String::from_utf8_lossy(&bytes));
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut rcpt = None;
        let mut reason = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("recipient=") {
                rcpt = Some(v);
            } else if let Some(v) = line.strip_prefix("reason=") {
                reason = Some(v);
            }
        }
        if let (Some(r), Some(why)) = (rcpt, reason) {
            out.push((
                crate::strbuf::printable_bounded(r.as_bytes(), 1024),
                // Defer logs written before reasons were made plain may end "(os error N)".
                crate::log::plain_error(&crate::strbuf::printable_bounded(why.as_bytes(), 1024)),
            ));
        }
    }
    out
}

/// `Sun Nov 22 18:13:03` in UTC: the first 19 characters of C's `asctime`.
pub fn asctime(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let days = secs / 86400;
    let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    let stamp = crate::log::timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    format!("{weekday} {stamp}")
}

/// The `postqueue -p` listing, in Postfix's format, written to `out`.
#[derive(Debug, Default)]
pub struct Listing {
    count: u64,
    bytes: u64,
}

/// Width of the queue ID column.
const ID_WIDTH: usize = crate::queue_id::QUEUE_ID_LEN;

impl Listing {
    /// A new listing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Formats one entry (with the header before the first one).
    pub fn entry(&mut self, e: &Entry, out: &mut String) {
        use std::fmt::Write as _;
        if self.count == 0 {
            let _ = writeln!(
                out,
                "{:<w$} --Size-- ----Arrival Time---- -Sender/Recipient-------",
                "-Queue ID-",
                w = ID_WIDTH
            );
        } else {
            out.push('\n');
        }
        self.count += 1;
        self.bytes += e.size;
        let status = match e.file.queue.as_str() {
            "active" => '*',
            "hold" => '!',
            _ => ' ',
        };
        let id = e.file.id.as_str();
        let pad = " ".repeat(ID_WIDTH + 1 + 8 + 1 + 20 + 1);
        match &e.summary {
            Summary::Message {
                arrival,
                sender,
                recipients,
            } => {
                let sender = if sender.is_empty() { "MAILER-DAEMON" } else { sender };
                let _ = writeln!(out, "{id}{status}{:>8} {}  {sender}", e.size, asctime(*arrival));
                let mut last_reason: Option<&str> = None;
                for r in recipients {
                    if let Some(why) = r.delay_reason.as_deref()
                        && last_reason != Some(why)
                    {
                        let padding = 76usize.saturating_sub(why.len() + 2);
                        let _ = writeln!(out, "{}({why})", " ".repeat(padding));
                        last_reason = Some(why);
                    }
                    let _ = writeln!(out, "{pad}{}", r.address);
                }
            }
            Summary::Maildrop { uid, mtime } => {
                let _ = writeln!(
                    out,
                    "{id}{status}{:>8} {}  (maildrop queue, sender UID {uid})",
                    e.size,
                    asctime(*mtime)
                );
            }
            Summary::Unreadable { reason } => {
                let _ = writeln!(out, "{id}{status}{:>8} {:<20}  (unreadable: {reason})", e.size, "??");
            }
        }
    }

    /// The footer (or `Mail queue is empty`).
    pub fn finish(&self, out: &mut String) {
        use std::fmt::Write as _;
        if self.count == 0 {
            out.push_str("Mail queue is empty\n");
        } else {
            let _ = writeln!(
                out,
                "\n-- {} Kbytes in {} Request{}.",
                self.bytes / 1024,
                self.count,
                if self.count == 1 { "" } else { "s" }
            );
        }
    }
}

/// One `postqueue -j` line (Postfix's JSON fields).
#[derive(Debug, Serialize)]
pub struct JsonEntry<'a> {
    /// The queue.
    pub queue_name: &'a str,
    /// The ID.
    pub queue_id: &'a str,
    /// Arrival, seconds since the epoch.
    pub arrival_time: u64,
    /// Size in bytes.
    pub message_size: u64,
    /// Whether the message was forced to expire (Postern has no such state: false).
    pub forced_expire: bool,
    /// The sender (empty for the null sender).
    pub sender: &'a str,
    /// Recipients still to be delivered.
    pub recipients: &'a [ListedRecipient],
}

/// The JSON object of one entry, or `None` for a file that could not be parsed.
pub fn json_line(e: &Entry) -> Option<String> {
    let (arrival, sender, recipients): (u64, &str, &[ListedRecipient]) = match &e.summary {
        Summary::Message {
            arrival,
            sender,
            recipients,
        } => (*arrival, sender, recipients),
        Summary::Maildrop { .. } | Summary::Unreadable { .. } => return None,
    };
    serde_json::to_string(&JsonEntry {
        queue_name: &e.file.queue,
        queue_id: e.file.id.as_str(),
        arrival_time: arrival,
        message_size: e.size,
        forced_expire: false,
        sender,
        recipients,
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asctime_is_c_like() {
        // 2026-11-22 18:13:03 UTC was a Sunday.
        let t = 1_795_371_183;
        assert_eq!(asctime(t), "Sun Nov 22 18:13:03");
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00");
    }

    #[test]
    fn defer_log_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(
            &p,
            "recipient=a@x\nstatus=4.0.0\nreason=connect refused\n\nrecipient=b@y\nreason=busy\n",
        )
        .unwrap();
        let got = parse_defer_log(File::open(&p).unwrap());
        assert_eq!(
            got,
            vec![
                ("a@x".to_string(), "connect refused".to_string()),
                ("b@y".to_string(), "busy".to_string())
            ]
        );
    }

    #[test]
    fn empty_listing() {
        let mut s = String::new();
        Listing::new().finish(&mut s);
        assert_eq!(s, "Mail queue is empty\n");
    }
}
