//! # postern-mailbox — the Maildir mailbox store shared by imapd, pop3d, local delivery and the replicator
//!
//! A crate of its own (issue 13) so that the programs that neither serve nor write
//! mailboxes (smtpd, qmgr, cleanup, …) do not link it. It builds on `postern-util`
//! (safe_open, parallel, percent) and `postern-lib` (replica_id); neither depends on it.
//! [`maildir_deliver`] is the delivery side: one message into a Maildir's `tmp/` → `new/`.
//!
//! # Layout (Maildir++, as Dovecot and Courier keep it)
//!
//! `virtual_mailbox_base/<user>/` is INBOX, with `tmp/ new/ cur/`. Folder `Sent` is the
//! Maildir `<user>/.Sent/`, folder `Lists.rust` is `<user>/.Lists.rust/`: the IMAP
//! hierarchy separator is `.` ([`SEPARATOR`]), the same character as on disk, as in
//! Dovecot's Maildir++ default. A new mailbox gets the special-use folders Sent, Drafts,
//! Trash, Junk and Archive ([`SPECIAL_USE`]). Subscriptions are the `subscriptions` file,
//! one folder name a line. In each folder:
//!
//! - message files are named `<time>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<size>:2,<flags>`;
//!   flags are letters in the name (see [`flags`]), keywords mapped by `dovecot-keywords`;
//! - `dovecot-uidlist` gives each base name its UID (see [`uidlist`]);
//! - `postern-cache` keeps sizes and dates (see [`cache`]);
//! - `postern-headers` keeps header blocks for SEARCH (see [`headers`]);
//! - `postern-index` keeps each message's GUID, MODSEQ, flags, size and dates, and the
//!   expunge log (see [`index`]); the mailbox root's `dovecot-uidvalidity` the last
//!   UIDVALIDITY given, so a folder deleted and created again gets a new one.
//!
//! These files are rewritten through temporary names beginning with `.` (`.<file>.tmp`,
//! `.<file>.<pid>.tmp`) in the folder's directory — INBOX's is the root, where the other
//! folders' directories `.<name>` are — so folder names that could collide with them
//! ([`reserved`]: `subscriptions.tmp`, `dovecot-keywords.tmp`, ...) are refused as
//! [`MailboxError::BadName`].
//!
//! # API
//!
//! ```no_run
//! use postern_mailbox::{Store, flags::{Flags, SEEN}};
//! # fn main() -> Result<(), postern_mailbox::MailboxError> {
//! let store = Store::open(std::path::Path::new("var/mail"), "alice")?; // creates on first use
//! let mut inbox = store.folder("INBOX")?;                              // synced view
//! for m in inbox.messages() { println!("{} {} {}", m.uid, m.base, m.size); }
//! let uid = inbox.append(b"Subject: hi\r\n\r\nhello\r\n", Flags { system: SEEN, keywords: 0 }, None)?;
//! let bytes = inbox.read(uid)?;              // CRLF line ends; None if expunged elsewhere
//! inbox.expunge(&[uid])?;
//! if inbox.changed() { inbox.sync()?; }      // cheap check, then rescan
//! # Ok(()) }
//! ```
//!
//! A POP3 UIDL is the message's base name (stable across flag changes and shared with
//! IMAP's view); POP3 deletions are [`Folder::expunge`].
//!
//! # Concurrency
//!
//! Any number of processes may hold views of one folder. New mail, flag changes (renames)
//! and expunges (unlinks) are atomic file-system operations; only the uidlist has a writer
//! lock. A view learns of others' changes at [`Folder::sync`].

pub mod cache;
pub mod flags;
pub mod folder;
mod folder_sync;
pub mod give_back;
pub mod headers;
pub mod index;
pub mod maildir_deliver;
pub mod replica;
pub mod shared;
pub mod spool;
pub mod stream;
pub mod uidlist;

#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod keep_tests;
#[cfg(test)]
mod tests;

pub use folder::{Folder, Message};

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The IMAP hierarchy separator.
pub const SEPARATOR: char = '.';
/// The folders a new mailbox gets, with their RFC 6154 special-use attribute.
pub const SPECIAL_USE: [(&str, &str); 5] = [
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
];
/// The special uses (RFC 6154) a folder may be given when it is created
/// (`CREATE x (USE (\\Archive))`); `\\All` and `\\Flagged`, which would need virtual
/// folders, are not among them.
pub const CREATE_SPECIAL_USE: [&str; 5] = ["\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"];
/// The file in a folder's directory with the special uses it was created with, separated by
/// spaces: it goes with the folder on RENAME and with it on DELETE.
pub const SPECIAL_USE_FILE: &str = "postern-special-use";
/// Longest folder name.
pub const MAX_NAME: usize = 200;
/// The subscriptions file in the mailbox root.
const SUBSCRIPTIONS: &str = "subscriptions";
/// The files the store keeps beside a folder's messages.
const STORE_FILES: [&str; 8] = [
    SUBSCRIPTIONS,
    SPECIAL_USE_FILE,
    flags::KEYWORDS_FILE,
    uidlist::FILE,
    cache::FILE,
    headers::FILE,
    index::FILE,
    folder_sync::UIDVALIDITY_FILE,
];

/// Whether a folder name is kept for the store's own temporary files: the folder's
/// directory `.<name>` would be one (`.subscriptions.tmp`, `.dovecot-keywords.tmp`,
/// `.postern-cache.<pid>.tmp`, ...). Compared without case, in case the file system
/// ignores it.
pub fn reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".tmp") && STORE_FILES.iter().any(|f| lower.starts_with(&format!("{f}.")))
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// The folder does not exist.
    #[error("no such folder: {0}")]
    NoSuchFolder(String),
    /// CREATE or RENAME onto an existing folder.
    #[error("folder exists: {0}")]
    Exists(String),
    /// A folder or keyword name that is not allowed (`/`, `..`, control characters, too long).
    #[error("bad name: {0:?}")]
    BadName(String),
    /// INBOX cannot be deleted.
    #[error("INBOX cannot be {0}")]
    Inbox(&'static str),
    /// The folder already uses all 26 keyword letters.
    #[error("too many keywords in this folder")]
    TooManyKeywords,
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, MailboxError>;

pub(crate) fn io_err(op: &'static str, path: &Path, source: io::Error) -> MailboxError {
    MailboxError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One user's mailbox: INBOX and its folders.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// The user's quota in bytes, when there is one.
    quota: Option<u64>,
}

/// Bytes of mail in the mailbox at `root`, all folders counted (as Dovecot's Maildir++
/// quota counts them): the sizes in the message file names (`S=`), in `new/` and `cur/`.
pub fn usage(root: &Path) -> io::Result<u64> {
    let mut total = crate::maildir_deliver::maildir_size(root)?;
    let entries = match fs::read_dir(root) {
        Ok(rd) => rd,
        // no mailbox yet: nothing used
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(total),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let is_folder = name
            .to_str()
            .is_some_and(|n| n.starts_with('.') && n != "." && n != "..");
        if is_folder && entry.path().join("cur").is_dir() {
            total = total.saturating_add(crate::maildir_deliver::maildir_size(&entry.path())?);
        }
    }
    Ok(total)
}

/// Creates a Maildir's `cur/ new/ tmp/` (mode 0700).
fn make_maildir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for sub in ["", "cur", "new", "tmp"] {
        let p = if sub.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(sub)
        };
        match fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("mkdir", &p, e)),
        }
    }
    Ok(())
}

/// Whether a user name can be a directory name.
fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && !user.starts_with('.')
        && user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b))
}

impl Store {
    /// Opens `base/<user>/`, creating it, and the special-use folders, when they are new.
    pub fn open(base: &Path, user: &str) -> Result<Store> {
        if !valid_user(user) {
            return Err(MailboxError::BadName(user.to_string()));
        }
        let root = base.join(user);
        // A mailbox first made by local delivery has no folders yet: the subscriptions
        // file marks that the special-use folders were set up once.
        let fresh = !root.join(SUBSCRIPTIONS).exists();
        make_maildir(&root)?;
        if fresh {
            for (name, _) in SPECIAL_USE {
                make_maildir(&root.join(format!(".{name}")))?;
            }
            let subs: String = SPECIAL_USE.iter().map(|(n, _)| format!("{n}\n")).collect();
            let _ = fs::write(root.join(SUBSCRIPTIONS), format!("INBOX\n{subs}"));
        }
        Ok(Store { root, quota: None })
    }

    /// Sets the quota (bytes; `None` or 0: none) that [`Store::room_for`] checks.
    pub fn set_quota(&mut self, quota: Option<u64>) {
        self.quota = quota.filter(|&q| q > 0);
    }

    /// The quota in bytes, when there is one.
    pub fn quota(&self) -> Option<u64> {
        self.quota
    }

    /// Whether `more` bytes of new messages stay within the quota (always without one).
    pub fn room_for(&self, more: u64) -> Result<bool> {
        let Some(q) = self.quota else { return Ok(true) };
        let used = usage(&self.root).map_err(|e| io_err("size", &self.root, e))?;
        Ok(used.saturating_add(more) <= q)
    }

    /// The mailbox root (INBOX).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The canonical form of a name: `INBOX` in any case becomes `INBOX`.
    pub fn canonical(name: &str) -> String {
        if name.eq_ignore_ascii_case("INBOX") {
            "INBOX".into()
        } else {
            name.to_string()
        }
    }

    /// The directory of folder `name` (checked, not required to exist).
    pub fn folder_path(&self, name: &str) -> Result<PathBuf> {
        let name = Store::canonical(name);
        if name == "INBOX" {
            return Ok(self.root.clone());
        }
        let bad = name.is_empty()
            || name.len() > MAX_NAME
            || name.starts_with(SEPARATOR)
            || name.ends_with(SEPARATOR)
            || name.contains("..")
            || name.contains('/')
            || name.chars().any(|c| c.is_control())
            || reserved(&name);
        if bad {
            return Err(MailboxError::BadName(name));
        }
        Ok(self.root.join(format!(".{name}")))
    }

    /// Opens a synced view of a folder.
    pub fn folder(&self, name: &str) -> Result<Folder> {
        let path = self.folder_path(name)?;
        if !path.join("cur").is_dir() {
            return Err(MailboxError::NoSuchFolder(name.to_string()));
        }
        Folder::open(&path)
    }

    /// Whether the folder exists.
    pub fn exists(&self, name: &str) -> bool {
        self.folder_path(name).map(|p| p.join("cur").is_dir()).unwrap_or(false)
    }

    /// Every folder, INBOX first, then by name.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(|e| io_err("read", &self.root, e))? {
            let Ok(entry) = entry else { continue };
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Some(folder) = name.strip_prefix('.')
                && !folder.is_empty()
                && folder != "."
                && entry.path().join("cur").is_dir()
            {
                out.push(folder.to_string());
            }
        }
        out.sort();
        out.insert(0, "INBOX".into());
        Ok(out)
    }

    /// Creates a folder (and, Maildir++ being flat, nothing for its parents).
    pub fn create(&self, name: &str) -> Result<()> {
        let path = self.folder_path(name)?;
        if path.join("cur").is_dir() {
            return Err(MailboxError::Exists(name.to_string()));
        }
        make_maildir(&path)
    }

    /// Creates a folder with special uses, each one of [`CREATE_SPECIAL_USE`] (checked by
    /// the caller; others are left out).
    pub fn create_special(&self, name: &str, uses: &[&str]) -> Result<()> {
        self.create(name)?;
        let uses: Vec<&str> = CREATE_SPECIAL_USE
            .iter()
            .copied()
            .filter(|u| uses.iter().any(|g| g.eq_ignore_ascii_case(u)))
            .collect();
        if uses.is_empty() {
            return Ok(());
        }
        let path = self.folder_path(name)?;
        let tmp = path.join(format!(".{SPECIAL_USE_FILE}.tmp"));
        fs::write(&tmp, format!("{}\n", uses.join(" ")))
            .and_then(|()| fs::rename(&tmp, path.join(SPECIAL_USE_FILE)))
            .map_err(|e| io_err("write special use", &path, e))
    }

    /// A folder's special uses: by its name ([`SPECIAL_USE`]), else those it was created
    /// with ([`Store::create_special`]; at most 256 bytes of the file are read).
    pub fn special_uses(&self, name: &str) -> Vec<&'static str> {
        if let Some(a) = Store::special_use(name) {
            return vec![a];
        }
        let Ok(path) = self.folder_path(name) else {
            return Vec::new();
        };
        let mut text = Vec::new();
        let read = fs::File::open(path.join(SPECIAL_USE_FILE)).and_then(|f| f.take(256).read_to_end(&mut text));
        if read.is_err() {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(&text);
        CREATE_SPECIAL_USE
            .iter()
            .copied()
            .filter(|u| text.split_ascii_whitespace().any(|w| w.eq_ignore_ascii_case(u)))
            .collect()
    }

    /// Deletes a folder and its messages (its children stay).
    pub fn delete(&self, name: &str) -> Result<()> {
        if Store::canonical(name) == "INBOX" {
            return Err(MailboxError::Inbox("deleted"));
        }
        let path = self.folder_path(name)?;
        if !path.join("cur").is_dir() {
            return Err(MailboxError::NoSuchFolder(name.to_string()));
        }
        fs::remove_dir_all(&path).map_err(|e| io_err("delete", &path, e))
    }

    /// Renames a folder and every folder below it. Renaming INBOX (RFC 3501 §6.3.5) moves
    /// its messages into the new folder, flags kept, and leaves INBOX empty.
    pub fn rename(&self, old: &str, new: &str) -> Result<()> {
        if Store::canonical(new) == "INBOX" {
            return Err(MailboxError::Exists(new.to_string()));
        }
        if Store::canonical(old) == "INBOX" {
            self.create(new)?;
            let mut inbox = self.folder("INBOX")?;
            let mut dest = self.folder(new)?;
            let uids: Vec<u32> = inbox.messages().iter().map(|m| m.uid).collect();
            inbox.move_to(&uids, &mut dest)?;
            return Ok(());
        }
        let from = self.folder_path(old)?;
        let to = self.folder_path(new)?;
        if !from.join("cur").is_dir() {
            return Err(MailboxError::NoSuchFolder(old.to_string()));
        }
        if to.exists() {
            return Err(MailboxError::Exists(new.to_string()));
        }
        let prefix = format!("{old}{SEPARATOR}");
        // every new name checked (length, reserved names) before anything moves
        let mut moves = Vec::new();
        for child in self.list()?.into_iter().filter(|n| n.starts_with(&prefix)) {
            let renamed = format!("{new}{}", &child[old.len()..]);
            moves.push((self.folder_path(&child)?, self.folder_path(&renamed)?));
        }
        fs::rename(&from, &to).map_err(|e| io_err("rename", &from, e))?;
        for (a, b) in moves {
            fs::rename(&a, &b).map_err(|e| io_err("rename", &a, e))?;
        }
        Ok(())
    }

    /// Subscribed folder names.
    pub fn subscriptions(&self) -> Vec<String> {
        fs::read_to_string(self.root.join(SUBSCRIPTIONS))
            .map(|t| {
                t.lines()
                    .filter(|l| !l.is_empty() && !l.starts_with("V\t"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds or removes a subscription.
    pub fn subscribe(&self, name: &str, on: bool) -> Result<()> {
        self.folder_path(name)?;
        let name = Store::canonical(name);
        let mut subs = self.subscriptions();
        subs.retain(|s| *s != name);
        if on {
            subs.push(name);
        }
        let text: String = subs.iter().map(|s| format!("{s}\n")).collect();
        let tmp = self.root.join(format!(".{SUBSCRIPTIONS}.tmp"));
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, self.root.join(SUBSCRIPTIONS)))
            .map_err(|e| io_err("write subscriptions", &self.root, e))
    }

    /// The RFC 6154 attribute of a folder, if it is one of [`SPECIAL_USE`].
    pub fn special_use(name: &str) -> Option<&'static str> {
        SPECIAL_USE.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
    }
}
