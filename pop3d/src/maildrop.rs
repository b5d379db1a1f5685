//! The maildrop of one POP3 session: the user's INBOX ([`postern_mailbox`]) as it
//! was at login, numbered 1..n, with deletion marks that take effect only at QUIT
//! (UPDATE state). One session per mailbox at a time: an exclusive `flock` on
//! `pop3.lock` in the Maildir, shared by every pop3d process and held until the session
//! ends (a dropped connection releases it with the descriptor, deleting nothing).
//!
//! UIDLs are the Maildir base names ([`uidl_of`]), the same key IMAP's UIDs hang on, so
//! they are stable forever and shared with IMAP's view.

use postern_mailbox::{Folder, Store};
use rustix::fs::{FlockOperation, flock};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The lock file in the Maildir.
pub const LOCK_FILE: &str = "pop3.lock";

/// Why a maildrop could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another POP3 session holds the lock.
    InUse,
    /// The mailbox could not be opened or read.
    Failed(String),
}

/// One message as the session sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The mailbox UID.
    pub uid: u32,
    /// The UIDL.
    pub uidl: String,
    /// Size in octets with CRLF line ends.
    pub size: u64,
    /// Marked by DELE.
    pub deleted: bool,
}

/// The UIDL of a message with Maildir base name `base`: the base name itself when RFC 1939
/// allows it (1 to 70 characters in 0x21..=0x7E), otherwise a fixed function of it (`H` and
/// the 64-bit FNV-1a hash in hex), so it is just as stable.
pub fn uidl_of(base: &str) -> String {
    if !base.is_empty() && base.len() <= 70 && base.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return base.to_string();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in base.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("H{h:016x}")
}

/// The locked maildrop.
pub struct Maildrop {
    folder: Folder,
    entries: Vec<Entry>,
    _lock: File,
}

impl Maildrop {
    /// Opens and locks `base/<user>/`.
    pub fn open(base: &Path, user: &str) -> Result<Maildrop, OpenError> {
        let store = Store::open(base, user).map_err(|e| OpenError::Failed(e.to_string()))?;
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(store.root().join(LOCK_FILE))
            .map_err(|e| OpenError::Failed(format!("lock file: {e}")))?;
        match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Err(OpenError::InUse),
            Err(e) => return Err(OpenError::Failed(format!("lock: {e}"))),
        }
        let folder = store.folder("INBOX").map_err(|e| OpenError::Failed(e.to_string()))?;
        let entries = folder
            .messages()
            .iter()
            .map(|m| Entry {
                uid: m.uid,
                uidl: uidl_of(&m.base),
                size: m.size,
                deleted: false,
            })
            .collect();
        Ok(Maildrop {
            folder,
            entries,
            _lock: lock,
        })
    }

    /// The messages, numbered from 1.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Message `n` (1-based) unless deleted.
    pub fn get(&self, n: usize) -> Option<&Entry> {
        n.checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .filter(|e| !e.deleted)
    }

    /// Marks message `n`; false when there is no such (undeleted) message.
    pub fn delete(&mut self, n: usize) -> bool {
        match n.checked_sub(1).and_then(|i| self.entries.get_mut(i)) {
            Some(e) if !e.deleted => {
                e.deleted = true;
                true
            }
            _ => false,
        }
    }

    /// Unmarks everything.
    pub fn reset(&mut self) {
        for e in &mut self.entries {
            e.deleted = false;
        }
    }

    /// The file of message `n`, open for reading (line ends as stored: the answer is
    /// converted as it is streamed, [`crate::retrieve`]); `None` if gone. Symbolic links
    /// and anything but a regular file are refused.
    pub fn open_message(&mut self, n: usize) -> Result<Option<File>, String> {
        let Some(uid) = self.get(n).map(|e| e.uid) else {
            return Ok(None);
        };
        self.folder.open_message(uid).map_err(|e| e.to_string())
    }

    /// UPDATE state: removes the marked messages; returns how many.
    pub fn commit(&mut self) -> Result<usize, String> {
        let uids: Vec<u32> = self.entries.iter().filter(|e| e.deleted).map(|e| e.uid).collect();
        if uids.is_empty() {
            return Ok(0);
        }
        self.folder
            .expunge(&uids)
            .map(|_| uids.len())
            .map_err(|e| e.to_string())
    }
}
