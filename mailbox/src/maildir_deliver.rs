//! Delivering one message into a Maildir, the way Maildir is specified (D. J. Bernstein's
//! maildir(5)) and the way Dovecot and Courier read it.
//!
//! [`deliver`]:
//! 1. opens the Maildir (creating it and its `tmp/ new/ cur/` on first delivery, mode
//!    0700), every directory with `O_DIRECTORY | O_NOFOLLOW` relative to its parent's
//!    descriptor, so no symlink anywhere below the base is followed;
//! 2. creates a unique name in `tmp/` with `O_CREAT | O_EXCL | O_NOFOLLOW`
//!    ([`postern_util::safe_open::create_excl_at`]): `SECS.M<micros>P<pid>Q<seq>.<host>`, the
//!    form Dovecot and qmail use, with `/` and `:` in the host name escaped as `\057` and
//!    `\072`;
//! 3. writes the prefix (e.g. `Return-Path:` and `Delivered-To:`) and the message,
//!    `fdatasync`s the file;
//! 4. moves it into `new/` as `<unique>,S=<size>` (Dovecot's size field, which its quota
//!    code and ours read instead of `stat`) with `renameat2(RENAME_NOREPLACE)`, which never
//!    replaces a file already there (where the file system refuses that flag: `link(2)`,
//!    then `unlink` of the name in `tmp/`), then `fsync`s `new/`. Only then is the
//!    delivery complete. If anything fails before the move, the file in `tmp/` is removed.
//!
//! [`deliver_once`] takes the unique name from the caller ([`once_name`]: queue ID and
//! recipient); the move finds a file of that name in `new/` and leaves it, so delivering
//! the same recipient of the same message again after a crash finds the first copy and
//! adds none.
//!
//! [`deliver_once_deferred`] does steps 1–3 without the file's `fdatasync` and leaves the
//! rest to a [`DirSyncs`]: the caller calls [`DirSyncs::sync`] for a whole batch of
//! deliveries before it calls any of them complete, and it `fdatasync`s every file of the
//! batch (several at once on threads kept between batches, [`postern_util::parallel`]:
//! concurrent syncs share the disk's flushes), then moves each into `new/` — only a file
//! already durable gets a name there, as in step 4 — then `fsync`s each distinct `new/`
//! once. A failed sync or move poisons the set: that and every later [`DirSyncs::sync`]
//! fails, so nothing of the batch is called durable (a retried `fsync` can report success
//! for data the failed one lost); files not moved are removed from `tmp/`. A [`DirSyncs`]
//! keeps the Maildirs it opened (their `tmp/` and `new/` descriptors) for its life — a
//! batch of deliveries — so a batch opens each Maildir once, not once per message.
//!
//! [`maildir_size`] sums the sizes of the messages in `new/` and `cur/` for quota checks.
//!
//! Security stance: the caller runs as the mailbox owner (or the virtual mailbox owner),
//! never root; the mailbox name comes from a validated user name; no path component is
//! followed through a symlink, a FIFO or device in place of a directory is refused
//! without blocking (`O_DIRECTORY`), and no existing file is ever opened for writing.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use postern_util::parallel::{MAX_THREADS, for_each_kept};
use postern_util::safe_open::{SafeOpenError, create_excl_at};

/// Most files counted by [`maildir_size`] per directory (a bound on the work, not a limit
/// on the mailbox).
pub const MAX_SCAN: usize = 1_000_000;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Most Maildirs a [`DirSyncs`] holds open; the next one syncs and closes those first.
pub const MAX_PENDING_DIRS: usize = 64;
/// Most files a [`DirSyncs`] holds; the next delivery syncs those first.
pub const MAX_PENDING_FILES: usize = 128;

/// Bytes read from the message and written to the file at a time.
const CHUNK: usize = 64 * 1024;

/// Set once a file system refused `RENAME_NOREPLACE`: link and unlink from then on.
static NO_RENAME2: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The copy buffer of [`write_all`], kept for the thread's life (no 64 KB allocated
    /// and zeroed per message).
    static COPY_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A Maildir opened by a [`DirSyncs`], kept open for its life.
#[derive(Debug)]
struct OpenDir {
    /// The `base` and mailbox name it was opened as.
    base: PathBuf,
    user: String,
    tmp: OwnedFd,
    /// Shared with the thread that `fsync`s it.
    new: Arc<OwnedFd>,
    /// The Maildir's path, for messages.
    path: PathBuf,
    /// `new/`'s (device, inode): each Maildir is held once.
    key: (u64, u64),
    /// Something may have been placed in `new/` since its last `fsync`.
    dirty: bool,
}

/// A file written in `tmp/` whose `fdatasync` and move into `new/` wait for the sync.
#[derive(Debug)]
struct PendingFile {
    file: File,
    /// Index in `DirSyncs::dirs`.
    dir: usize,
    name: String,
    final_name: String,
    /// Once-only name: a file of that name in `new/` means delivered (else a collision,
    /// an error).
    once: bool,
}

/// How [`place`] put a file into `new/`.
enum Placed {
    /// Moved: nothing is left in `tmp/`.
    Moved,
    /// Linked: the name in `tmp/` is to be removed.
    Linked,
    /// The name was taken in `new/`; nothing was replaced, the file is still in `tmp/`.
    Taken,
}

/// Deliveries written but not yet durable, and the Maildirs they go to (see the module
/// doc).
#[derive(Debug, Default)]
pub struct DirSyncs {
    dirs: Vec<OpenDir>,
    files: Vec<PendingFile>,
    /// Deliveries added in all (a caller tells whether a delivery added one).
    added: u64,
    /// Why an earlier step failed: nothing since is called durable.
    poisoned: Option<String>,
    /// Names the last sync found in `new/` already (a repeated once-only delivery).
    found: Vec<String>,
}

impl DirSyncs {
    /// How many times a delivery was added so far.
    pub fn added(&self) -> u64 {
        self.added
    }

    /// Whether nothing waits for the sync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && !self.dirs.iter().any(|d| d.dirty)
    }

    /// The index of the Maildir `base/user_dir`, opened (and created) unless this set
    /// holds it already. When it holds [`MAX_PENDING_DIRS`], those are synced and closed
    /// first.
    fn open(&mut self, base: &Path, user_dir: &str) -> Result<usize, MaildirError> {
        if let Some(at) = self.dirs.iter().position(|d| d.user == user_dir && d.base == base) {
            return Ok(at);
        }
        if self.dirs.len() >= MAX_PENDING_DIRS {
            self.sync()?;
            self.dirs.clear();
        }
        let path = base.join(user_dir);
        let (tmp, new) = open_maildir(base, user_dir)?;
        let key = dir_key(&new, &path.join("new"))?;
        // The same Maildir by another path: held once, its fsync done once.
        if let Some(at) = self.dirs.iter().position(|d| d.key == key) {
            return Ok(at);
        }
        self.dirs.push(OpenDir {
            base: base.to_owned(),
            user: user_dir.to_owned(),
            tmp,
            new: Arc::new(new),
            path,
            key,
            dirty: false,
        });
        Ok(self.dirs.len() - 1)
    }

    /// Notes a delivery to the Maildir at `dir`: its `new/` is synced by the next sync.
    fn note(&mut self, dir: usize) {
        self.added += 1;
        if let Some(d) = self.dirs.get_mut(dir) {
            d.dirty = true;
        }
    }

    /// Makes everything held durable: every file `fdatasync`ed (several at once), moved
    /// into `new/`, every `new/` touched `fsync`ed once; then forgets the files (the
    /// Maildirs stay open). Fails if any step of this or an earlier sync of this set
    /// failed.
    pub fn sync(&mut self) -> Result<(), MaildirError> {
        self.found.clear();
        let files: Vec<(PendingFile, Option<io::Error>)> = self.files.drain(..).map(|f| (f, None)).collect();
        let sent = files.len();
        let files = for_each_kept(files, MAX_THREADS, |(f, err)| *err = f.file.sync_data().err());
        if files.len() != sent {
            // Only a panic on a sync thread loses an item: what it held is not durable.
            poison(&mut self.poisoned, "a sync thread failed".into());
        }
        for (f, err) in files {
            let Some(d) = self.dirs.get(f.dir) else { continue };
            if let Some(e) = err {
                let tmp_file = d.path.join("tmp").join(&f.name);
                poison(
                    &mut self.poisoned,
                    MaildirError::io("fdatasync", &tmp_file, e).to_string(),
                );
            }
            let mut left = true;
            if self.poisoned.is_none() {
                match place(d, &f) {
                    Ok(Placed::Moved) => left = false,
                    Ok(Placed::Linked) => {}
                    Ok(Placed::Taken) if f.once => self.found.push(f.final_name),
                    Ok(Placed::Taken) => {
                        let to = d.path.join("new").join(&f.final_name);
                        poison(
                            &mut self.poisoned,
                            MaildirError::io("rename", &to, Errno::EXIST).to_string(),
                        );
                    }
                    Err(e) => {
                        let tmp_file = d.path.join("tmp").join(&f.name);
                        poison(&mut self.poisoned, MaildirError::io("rename", &tmp_file, e).to_string());
                    }
                }
            }
            if left {
                let _ = rfs::unlinkat(&d.tmp, f.name.as_str(), AtFlags::empty());
            }
        }
        let dirty: Vec<(Arc<OwnedFd>, usize, Option<Errno>)> = self
            .dirs
            .iter_mut()
            .enumerate()
            .filter(|(_, d)| d.dirty)
            .map(|(i, d)| {
                d.dirty = false;
                (d.new.clone(), i, None)
            })
            .collect();
        let sent = dirty.len();
        let dirty = for_each_kept(dirty, MAX_THREADS, |(new, _, err)| *err = rfs::fsync(&**new).err());
        if dirty.len() != sent {
            poison(&mut self.poisoned, "a sync thread failed".into());
        }
        for (_, i, err) in dirty {
            if let (Some(e), Some(d)) = (err, self.dirs.get(i)) {
                poison(
                    &mut self.poisoned,
                    MaildirError::io("fsync", &d.path.join("new"), e).to_string(),
                );
            }
        }
        match &self.poisoned {
            None => Ok(()),
            Some(why) => Err(MaildirError::Io {
                op: "sync",
                path: PathBuf::from("Maildir"),
                source: io::Error::other(why.clone()),
            }),
        }
    }
}

/// Puts the durable file `f` from `tmp/` into `new/` under its final name, never
/// replacing a file there: `renameat2(RENAME_NOREPLACE)` (one directory change less than
/// link and unlink), or `link(2)` where the file system refuses that flag.
fn place(d: &OpenDir, f: &PendingFile) -> Result<Placed, Errno> {
    let (from, to) = (f.name.as_str(), f.final_name.as_str());
    if !NO_RENAME2.load(Ordering::Relaxed) {
        match rfs::renameat_with(&d.tmp, from, &*d.new, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(Placed::Moved),
            Err(Errno::EXIST) => return Ok(Placed::Taken),
            Err(Errno::INVAL | Errno::NOSYS) => {
                tracing::info!(
                    "{}: no renameat2(RENAME_NOREPLACE) here, link and unlink",
                    d.path.display()
                );
                NO_RENAME2.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    match rfs::linkat(&d.tmp, from, &*d.new, to, AtFlags::empty()) {
        Ok(()) => Ok(Placed::Linked),
        Err(Errno::EXIST) => Ok(Placed::Taken),
        Err(e) => Err(e),
    }
}

/// A directory's (device, inode).
fn dir_key(dir: &OwnedFd, path: &Path) -> Result<(u64, u64), MaildirError> {
    let st = rfs::fstat(dir).map_err(|e| MaildirError::io("stat", path, e))?;
    Ok((st.st_dev, st.st_ino))
}

/// Keeps the first reason a [`DirSyncs`] failed.
fn poison(slot: &mut Option<String>, why: String) {
    if slot.is_none() {
        *slot = Some(why);
    }
}

/// Errors of a Maildir delivery.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    /// A system call failed on `path`.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading the message to deliver failed.
    #[error("reading the message: {0}")]
    Source(io::Error),
}

impl MaildirError {
    fn io(op: &'static str, path: &Path, e: impl Into<io::Error>) -> Self {
        MaildirError::Io {
            op,
            path: path.to_owned(),
            source: e.into(),
        }
    }

    /// Whether the failure is lack of space or quota on the file system (a temporary
    /// failure in mail terms, `4.3.0`/`4.2.2`).
    pub fn is_no_space(&self) -> bool {
        match self {
            MaildirError::Io { source, .. } => matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)),
            MaildirError::Source(_) => false,
        }
    }
}

/// A finished delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The file name in `new/`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The same delivery was already in `new/` ([`deliver_once`]); nothing was added.
    pub already: bool,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens (creating when missing) the directory `name` below `parent`; says whether it was
/// made now.
fn open_subdir(parent: impl AsFd, parent_path: &Path, name: &str) -> Result<(OwnedFd, bool), MaildirError> {
    let path = parent_path.join(name);
    match rfs::openat(&parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok((fd, false)),
        Err(Errno::NOENT) => {
            let made = match rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(MaildirError::io("mkdir", &path, e)),
            };
            let fd = rfs::openat(&parent, name, dir_flags(), Mode::empty())
                .map_err(|e| MaildirError::io("open", &path, e))?;
            Ok((fd, made))
        }
        Err(e) => Err(MaildirError::io("open", &path, e)),
    }
}

/// The host part of a unique name: the host name with `/` and `:` escaped.
/// Read once per process (no `uname` per message).
fn host_part() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let host = if host.is_empty() { "localhost".to_string() } else { host };
        host.replace('/', "\\057").replace(':', "\\072")
    })
}

/// A unique base name: `SECS.M<micros>P<pid>Q<seq>.<host>`.
pub fn unique_name() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        seq,
        host_part()
    )
}

/// Opens the Maildir `mailbox` — `base/<user>` style: `base` must exist, the last
/// component is created when missing — and its `tmp/ new/ cur/`; what it creates is
/// `fsync`ed into its parent.
fn open_maildir(base: &Path, user_dir: &str) -> Result<(OwnedFd, OwnedFd), MaildirError> {
    let base_fd = rfs::open(
        base,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| MaildirError::io("open", base, e))?;
    let md_path = base.join(user_dir);
    let (md, md_made) = open_subdir(&base_fd, base, user_dir)?;
    let (tmp, tmp_made) = open_subdir(&md, &md_path, "tmp")?;
    let (new, new_made) = open_subdir(&md, &md_path, "new")?;
    let (_, cur_made) = open_subdir(&md, &md_path, "cur")?;
    // Directories made now are durable before anything is filed in them (the fsync of
    // new/ covers only new/'s own entries): on a Maildir's first delivery only.
    if tmp_made || new_made || cur_made {
        rfs::fsync(&md).map_err(|e| MaildirError::io("fsync", &md_path, e))?;
    }
    if md_made {
        rfs::fsync(&base_fd).map_err(|e| MaildirError::io("fsync", base, e))?;
    }
    Ok((tmp, new))
}

/// Delivers `prefix` followed by `message` into the Maildir `base/user_dir` (see the
/// module doc). `user_dir` is one path component (a validated user name).
pub fn deliver(base: &Path, user_dir: &str, prefix: &[u8], message: &mut dyn Read) -> Result<Delivered, MaildirError> {
    deliver_once(base, user_dir, None, prefix, message)
}

/// [`deliver`] with a caller-chosen unique base name (see [`once_name`]) that makes a
/// repeated delivery of the same thing a no-op: the file is linked into `new/` with
/// `link(2)`, which fails if `new/` already holds that name, and then the earlier copy
/// stands (`Delivered::already` is true). This closes the window in which a delivery agent
/// killed after the Maildir write but before its done mark would deliver twice — unless
/// the user's client moved the first copy to `cur/` in between.
pub fn deliver_once(
    base: &Path,
    user_dir: &str,
    unique: Option<&str>,
    prefix: &[u8],
    message: &mut dyn Read,
) -> Result<Delivered, MaildirError> {
    let mut syncs = DirSyncs::default();
    let mut d = deliver_once_deferred(base, user_dir, unique, prefix, message, &mut syncs)?;
    syncs.sync()?;
    d.already |= syncs.found.contains(&d.name);
    Ok(d)
}

/// [`deliver_once`] whose file `fdatasync`, move into `new/` and `fsync` of `new/` are left
/// to `syncs` (see the module doc): the delivery is durable only once [`DirSyncs::sync`]
/// succeeded.
pub fn deliver_once_deferred(
    base: &Path,
    user_dir: &str,
    unique: Option<&str>,
    prefix: &[u8],
    message: &mut dyn Read,
    syncs: &mut DirSyncs,
) -> Result<Delivered, MaildirError> {
    if user_dir.is_empty() || user_dir.contains('/') || user_dir == "." || user_dir == ".." {
        return Err(MaildirError::io(
            "check",
            &base.join(user_dir),
            io::Error::new(io::ErrorKind::InvalidInput, "bad mailbox name"),
        ));
    }
    if syncs.files.len() >= MAX_PENDING_FILES {
        syncs.sync()?;
    }
    let dir = syncs.open(base, user_dir)?;
    let Some(d) = syncs.dirs.get(dir) else {
        return Err(MaildirError::io("open", &base.join(user_dir), Errno::BADF));
    };
    if let Some(existing) = unique.and_then(|u| replica_copy(&d.path, u)) {
        // Found, perhaps linked by an attempt killed before its fsync of new/: synced too.
        syncs.note(dir);
        return Ok(Delivered {
            size: size_from_name(&existing).unwrap_or(0),
            name: existing,
            already: true,
        });
    }
    // A hub's late second copy of a message this mailbox had and expunged (its GUID in
    // INBOX's expunge log, crate::replica): delivered already, it must not come
    // back.
    if let Some(u) = unique.filter(|u| crate::replica::hub_copy_expunged(&d.path, u)) {
        return Ok(Delivered {
            size: 0,
            name: u.to_string(),
            already: true,
        });
    }
    // A replica name may be delivered by two queue files at once (a hub's retry while its
    // first attempt is still in flight): each writes its own temporary file.
    let replica = unique.filter(|u| valid_unique(u) && postern_lib::replica_id::is_replica_base(u));
    let (name, once_tmp) = match unique {
        Some(u) if valid_unique(u) && replica.is_none() => (u.to_string(), true),
        _ => (unique_name(), false),
    };
    let mut file = match create_excl_at(&d.tmp, &d.path, &name, 0o600) {
        // A leftover of an interrupted attempt with the same name is ours: replace it.
        Err(e) if once_tmp && is_exists(&e) => {
            let _ = rfs::unlinkat(&d.tmp, name.as_str(), AtFlags::empty());
            create_excl_at(&d.tmp, &d.path, &name, 0o600)
        }
        r => r,
    }
    .map_err(|e| {
        MaildirError::io(
            "create",
            &d.path.join("tmp").join(&name),
            io::Error::other(e.to_string()),
        )
    })?;
    let size = match write_all(&mut file, prefix, message) {
        Ok(size) => size,
        Err(e) => {
            drop(file);
            let _ = rfs::unlinkat(&d.tmp, name.as_str(), AtFlags::empty());
            return Err(e.at(&d.path.join("tmp").join(&name)));
        }
    };
    let final_name = format!("{},S={size}", replica.unwrap_or(&name));
    // The file's fdatasync, its move into new/ and new/'s fsync: in the sync.
    syncs.note(dir);
    syncs.files.push(PendingFile {
        file,
        dir,
        name,
        final_name: final_name.clone(),
        once: unique.is_some(),
    });
    Ok(Delivered {
        name: final_name,
        size,
        already: false,
    })
}

/// Whether creating a file failed because the name exists.
fn is_exists(e: &SafeOpenError) -> bool {
    matches!(e, SafeOpenError::Io { source, .. } if source.raw_os_error() == Some(libc::EEXIST))
}

/// For a replica base name ([`postern_lib::replica_id`]: a message from a mail hub, filed under
/// the same name on every mailbox server), the file in `new/` or `cur/` that already holds
/// it, whatever its size field and flags: such a message is filed once, even after the
/// user's client moved it to `cur/`. (A scan of both directories, for these names only.)
fn replica_copy(md_path: &Path, unique: &str) -> Option<String> {
    if !postern_lib::replica_id::is_replica_base(unique) {
        return None;
    }
    // Names compared as bytes straight from getdents (no allocation per entry): this runs
    // for every replica delivery, over the whole of new/ and cur/.
    for sub in ["new", "cur"] {
        let Ok(fd) = rfs::open(md_path.join(sub), dir_flags(), Mode::empty()) else {
            continue;
        };
        let Ok(dir) = rfs::Dir::read_from(&fd) else {
            continue;
        };
        for ent in dir.take(MAX_SCAN) {
            let Ok(ent) = ent else { break };
            let name = ent.file_name().to_bytes();
            let same = name
                .strip_prefix(unique.as_bytes())
                .is_some_and(|rest| matches!(rest.first(), None | Some(b',' | b':')));
            if same {
                return Some(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    None
}

/// A unique name must be a plain Maildir base name: no `/`, `:` or `,`, no leading dot.
fn valid_unique(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 200
        && !u.starts_with('.')
        && u.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b','))
}

/// The deterministic base name of one delivery of one queued message to one recipient:
/// `ARRIVALSECS.M<micros>Q<queue id>R<tag>.<host>`, still in the `SECS.UNIQUE.HOST` form
/// Maildir readers expect. `tag` tells deliveries of one message apart (recipient index and
/// address); only `[A-Za-z0-9]` of it are kept.
pub fn once_name(arrival_secs: u64, arrival_micros: u32, queue_id: &str, tag: &str) -> String {
    let tag: String = tag.chars().filter(char::is_ascii_alphanumeric).take(64).collect();
    format!("{arrival_secs}.M{arrival_micros}Q{queue_id}R{tag}.{}", host_part())
}

/// Why [`write_all`] failed: writing the file, or reading the message.
enum WriteError {
    Write(io::Error),
    Source(io::Error),
}

impl WriteError {
    /// The [`MaildirError`], a write failure naming the file at `path`.
    fn at(self, path: &Path) -> MaildirError {
        match self {
            WriteError::Write(e) => MaildirError::io("write", path, e),
            WriteError::Source(e) => MaildirError::Source(e),
        }
    }
}

/// Writes `prefix` and `message` to `file` (the `fdatasync` is the [`DirSyncs`]'s): the
/// prefix and the message's first bytes in one buffer, kept for the thread's life, so a
/// small message is one `write`.
fn write_all(file: &mut File, prefix: &[u8], message: &mut dyn Read) -> Result<u64, WriteError> {
    COPY_BUF.with_borrow_mut(|buf| {
        if buf.len() < CHUNK {
            buf.resize(CHUNK, 0);
        }
        let mut size = prefix.len() as u64;
        let mut fill = match buf.get_mut(..prefix.len()).filter(|_| prefix.len() <= CHUNK / 2) {
            Some(head) => {
                head.copy_from_slice(prefix);
                prefix.len()
            }
            None => {
                file.write_all(prefix).map_err(WriteError::Write)?;
                0
            }
        };
        loop {
            if fill >= buf.len() {
                file.write_all(buf).map_err(WriteError::Write)?;
                fill = 0;
            }
            let n = match message.read(buf.get_mut(fill..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WriteError::Source(e)),
            };
            fill += n;
            size += n as u64;
        }
        file.write_all(buf.get(..fill).unwrap_or_default())
            .map_err(WriteError::Write)?;
        Ok(size)
    })
}

/// The size of a message file from its name's `,S=<size>` field.
pub fn size_from_name(name: &str) -> Option<u64> {
    let at = name.find(",S=")?;
    let digits: String = name.get(at + 3..)?.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Total size of the messages in `new/` and `cur/` of the Maildir at `path` (0 when it
/// does not exist yet). Sizes come from `S=` in names when present, else from `lstat`.
pub fn maildir_size(path: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    for sub in ["new", "cur"] {
        let dir = path.join(sub);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for ent in rd.take(MAX_SCAN) {
            let ent = ent?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let size = match size_from_name(&name) {
                Some(s) => s,
                None => ent.metadata().map(|m| m.len()).unwrap_or(0),
            };
            total = total.saturating_add(size);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_into_new_with_size() {
        let base = tempfile::tempdir().unwrap();
        let d = deliver(
            base.path(),
            "alice",
            b"Return-Path: <a@b>\n",
            &mut &b"Subject: x\n\nhi\n"[..],
        )
        .unwrap();
        let p = base.path().join("alice/new").join(&d.name);
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(bytes, b"Return-Path: <a@b>\nSubject: x\n\nhi\n");
        assert_eq!(d.size, bytes.len() as u64);
        assert_eq!(size_from_name(&d.name), Some(d.size));
        assert!(base.path().join("alice/cur").is_dir());
        assert_eq!(std::fs::read_dir(base.path().join("alice/tmp")).unwrap().count(), 0);
        let d2 = deliver(base.path(), "alice", b"", &mut &b"x\n"[..]).unwrap();
        assert_ne!(d.name, d2.name);
        assert_eq!(maildir_size(&base.path().join("alice")).unwrap(), d.size + 2);
    }

    #[test]
    fn deliver_once_does_not_duplicate() {
        let base = tempfile::tempdir().unwrap();
        let name = once_name(1_700_000_000, 42, "0123456789ABCDEF", "3x1f");
        let a = deliver_once(base.path(), "eve", Some(&name), b"", &mut &b"same\n"[..]).unwrap();
        assert!(!a.already);
        let b = deliver_once(base.path(), "eve", Some(&name), b"", &mut &b"same\n"[..]).unwrap();
        assert!(b.already);
        assert_eq!(a.name, b.name);
        assert_eq!(std::fs::read_dir(base.path().join("eve/new")).unwrap().count(), 1);
        assert_eq!(std::fs::read_dir(base.path().join("eve/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn deferred_deliveries_share_one_sync_per_directory() {
        let base = tempfile::tempdir().unwrap();
        let mut syncs = DirSyncs::default();
        for (i, user) in ["ann", "ann", "ben", "ann"].iter().enumerate() {
            let name = once_name(1_700_000_000, 42, "0123456789ABCDEF", &format!("{i}x0"));
            let d = deliver_once_deferred(base.path(), user, Some(&name), b"", &mut &b"m\n"[..], &mut syncs).unwrap();
            assert!(!d.already);
            assert!(
                !base.path().join(user).join("new").join(&d.name).exists(),
                "linked only once durable"
            );
        }
        assert_eq!(syncs.added(), 4);
        assert_eq!(syncs.dirs.len(), 2, "one entry per distinct Maildir");
        assert_eq!(syncs.files.len(), 4);
        syncs.sync().unwrap();
        assert!(syncs.is_empty());
        assert_eq!(std::fs::read_dir(base.path().join("ann/new")).unwrap().count(), 3);
        assert_eq!(std::fs::read_dir(base.path().join("ben/new")).unwrap().count(), 1);
        assert_eq!(std::fs::read_dir(base.path().join("ann/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_batch_keeps_its_maildirs_open_across_syncs() {
        let base = tempfile::tempdir().unwrap();
        let mut syncs = DirSyncs::default();
        for i in 0..5 {
            let name = once_name(1_700_000_000, 7, "0123456789ABCDEF", &format!("{i}x0"));
            deliver_once_deferred(base.path(), "fay", Some(&name), b"", &mut &b"m\n"[..], &mut syncs).unwrap();
            if i % 2 == 1 {
                syncs.sync().unwrap();
            }
        }
        syncs.sync().unwrap();
        assert_eq!(syncs.dirs.len(), 1, "opened once");
        assert!(syncs.is_empty());
        assert_eq!(std::fs::read_dir(base.path().join("fay/new")).unwrap().count(), 5);
        assert_eq!(std::fs::read_dir(base.path().join("fay/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_name_taken_in_new_is_never_replaced() {
        let base = tempfile::tempdir().unwrap();
        let name = once_name(1_700_000_000, 9, "0123456789ABCDEF", "1x2");
        std::fs::create_dir_all(base.path().join("gus/new")).unwrap();
        // Same name and size field, other bytes: the first copy stands.
        let taken = base.path().join("gus/new").join(format!("{name},S=4"));
        std::fs::write(&taken, b"old\n").unwrap();
        let d = deliver_once(base.path(), "gus", Some(&name), b"", &mut &b"new\n"[..]).unwrap();
        assert!(d.already);
        assert_eq!(std::fs::read(&taken).unwrap(), b"old\n");
        assert_eq!(std::fs::read_dir(base.path().join("gus/tmp")).unwrap().count(), 0);
        // Under a unique name a taken name is an error, not an overwrite.
        let mut syncs = DirSyncs::default();
        let dir = syncs.open(base.path(), "gus").unwrap();
        let file = create_excl_at(&syncs.dirs[dir].tmp, base.path(), "t1", 0o600).unwrap();
        syncs.note(dir);
        syncs.files.push(PendingFile {
            file,
            dir,
            name: "t1".into(),
            final_name: format!("{name},S=4"),
            once: false,
        });
        assert!(syncs.sync().is_err());
        assert_eq!(std::fs::read(&taken).unwrap(), b"old\n");
        assert_eq!(std::fs::read_dir(base.path().join("gus/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_leftover_in_tmp_is_replaced_and_link_still_works() {
        let base = tempfile::tempdir().unwrap();
        let name = once_name(1_700_000_000, 11, "0123456789ABCDEF", "0x3");
        std::fs::create_dir_all(base.path().join("hal/tmp")).unwrap();
        std::fs::write(base.path().join("hal/tmp").join(&name), b"half a mess").unwrap();
        let d = deliver_once(base.path(), "hal", Some(&name), b"P: 1\n", &mut &b"body\n"[..]).unwrap();
        assert!(!d.already);
        assert_eq!(
            std::fs::read(base.path().join("hal/new").join(&d.name)).unwrap(),
            b"P: 1\nbody\n"
        );
        assert_eq!(std::fs::read_dir(base.path().join("hal/tmp")).unwrap().count(), 0);
        // The link-and-unlink way, for file systems without RENAME_NOREPLACE (the other
        // tests pass either way).
        NO_RENAME2.store(true, Ordering::Relaxed);
        let again = deliver_once(base.path(), "hal", Some(&name), b"P: 1\n", &mut &b"body\n"[..]);
        let other = deliver(base.path(), "hal", b"", &mut &b"x\n"[..]);
        NO_RENAME2.store(false, Ordering::Relaxed);
        assert!(again.unwrap().already);
        other.unwrap();
        assert_eq!(std::fs::read_dir(base.path().join("hal/new")).unwrap().count(), 2);
        assert_eq!(std::fs::read_dir(base.path().join("hal/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn big_prefixes_and_messages_are_copied_whole() {
        let base = tempfile::tempdir().unwrap();
        let prefix: Vec<u8> = (0..CHUNK / 2 + 10).map(|i| b'a' + (i % 26) as u8).collect();
        let body: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        for p in [&prefix[..], b"R: x\n"] {
            let d = deliver(base.path(), "ivy", p, &mut &body[..]).unwrap();
            let got = std::fs::read(base.path().join("ivy/new").join(&d.name)).unwrap();
            assert_eq!(got.len() as u64, d.size);
            assert_eq!(&got[..p.len()], p);
            assert_eq!(&got[p.len()..], &body[..]);
        }
    }

    #[test]
    fn a_poisoned_set_never_syncs_again() {
        let mut syncs = DirSyncs {
            poisoned: Some("fsync x: EIO".into()),
            ..DirSyncs::default()
        };
        assert!(syncs.sync().is_err());
        assert!(syncs.sync().is_err());
    }

    #[test]
    fn a_replica_name_is_filed_once_even_from_cur() {
        let base = tempfile::tempdir().unwrap();
        let name = postern_lib::replica_id::base_name("6a0c2f4e0123456789abcdef01234567").unwrap();
        let a = deliver_once(base.path(), "amy", Some(&name), b"", &mut &b"same\n"[..]).unwrap();
        assert!(!a.already);
        assert!(a.name.starts_with(&format!("{name},S=")));
        let new = base.path().join("amy/new");
        let cur = base.path().join("amy/cur");
        std::fs::rename(new.join(&a.name), cur.join(format!("{}:2,S", a.name))).unwrap();
        let b = deliver_once(base.path(), "amy", Some(&name), b"", &mut &b"same\n"[..]).unwrap();
        assert!(b.already);
        assert_eq!(std::fs::read_dir(&new).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&cur).unwrap().count(), 1);
        assert_eq!(std::fs::read_dir(base.path().join("amy/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_fifo_in_place_of_a_maildir_directory_is_refused_at_once() {
        let base = tempfile::tempdir().unwrap();
        let fifo = |p: &Path| {
            rfs::mknodat(rfs::CWD, p, rfs::FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        };
        fifo(&base.path().join("carol"));
        let start = std::time::Instant::now();
        assert!(deliver(base.path(), "carol", b"", &mut &b"x"[..]).is_err());
        std::fs::create_dir_all(base.path().join("dave")).unwrap();
        fifo(&base.path().join("dave/tmp"));
        assert!(deliver(base.path(), "dave", b"", &mut &b"x"[..]).is_err());
        assert_eq!(maildir_size(&base.path().join("carol")).unwrap_or(0), 0);
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "blocked on a FIFO");
    }

    #[test]
    fn refuses_symlinked_mailbox() {
        let base = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), base.path().join("bob")).unwrap();
        assert!(deliver(base.path(), "bob", b"", &mut &b"x"[..]).is_err());
        assert!(deliver(base.path(), "../x", b"", &mut &b"x"[..]).is_err());
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }
}
