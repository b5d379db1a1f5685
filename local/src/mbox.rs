//! mbox delivery: `/file` alias targets, and virtual users' mailboxes when
//! `mailbox_format = "mbox"` (`mail_spool_directory/<user>`). One append is a `From `
//! line, `Return-Path:`/`Delivered-To:`, the message with every `From ` at the start of a
//! line escaped as `>From `, and a blank line, then fsync. The file is opened through
//! safe_open (no symlink, regular file, one link; created 0600 if missing) and held under
//! an `fcntl` write lock (what mutt, Dovecot and procmail take) and an exclusive `flock`
//! while it is written; a user's mailbox is also dot-locked (`<user>.lock`, created
//! `O_EXCL`, taken over when older than `stale_lock_time`). A write that fails half-way
//! is cut back to the old size, so a retry never leaves a torn message behind.
//!
//! An mbox append cannot be made once-only the way a Maildir name can: a local killed
//! after the fsync and before its done mark delivers that message again on the retry.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use postern_lib::safe_open::{Expect, create_excl, open_append};
use rustix::fs::FlockOperation;

use crate::delivery::Outcome;
use postern_lib::dsn::Dsn;

/// How many times a busy lock (dot-lock or fcntl) is tried before the delivery defers.
const LOCK_ATTEMPTS: u32 = 50;
/// Pause between lock attempts.
const LOCK_DELAY: Duration = Duration::from_millis(200);
/// Longest line copied at once (queue content lines are already bounded by smtpd/cleanup).
const MAX_LINE: u64 = 1 << 20;

/// Appends to the file at `path` (absolute): a `/file` alias target. `/dev/null` (the
/// one file that is no regular file yet a usual target: `user: /dev/null`) takes the
/// message without being opened, as Postfix lets it.
pub fn append(path: &str, sender: &str, prefix: &[u8], message: &mut dyn Read) -> Outcome {
    if !path.starts_with('/') || path.contains("/../") || path.ends_with("/..") {
        return Outcome::perm(
            Dsn::MISCONFIGURED.permanent(),
            format!("alias file target {path:?} must be an absolute path"),
        );
    }
    if path == "/dev/null" {
        return Outcome::sent("delivered to file: /dev/null");
    }
    match append_locked(Path::new(path), sender, None, prefix, message) {
        Ok(()) => Outcome::sent(&format!("delivered to file: {path}")),
        Err(o) => o,
    }
}

/// Delivers into the mbox `spool/user` under its dot-lock; `quota` (bytes) counts the
/// file's size plus this message.
#[allow(clippy::too_many_arguments)]
pub fn deliver_user(
    spool: &Path,
    user: &str,
    sender: &str,
    quota: Option<u64>,
    size: u64,
    prefix: &[u8],
    message: &mut dyn Read,
    stale: Duration,
) -> Outcome {
    if let Err(e) = std::fs::create_dir_all(spool) {
        return Outcome::temp(Dsn::MAIL_SYSTEM, format!("cannot create {}: {e}", spool.display()));
    }
    let lock = match DotLock::take(spool, user, stale) {
        Ok(l) => l,
        Err(o) => return o,
    };
    let path = spool.join(user);
    let limit = quota.map(|q| (q, size.saturating_add(prefix.len() as u64)));
    let result = append_locked(&path, sender, limit, prefix, message);
    drop(lock);
    match result {
        Ok(()) => Outcome::sent("delivered to mailbox"),
        Err(o) => o,
    }
}

/// A system account's mbox `spool/<name>` in a spool directory only root may write
/// (`/var/mail`, as Postfix's local does there): run as root, the file is created
/// owned by the account (`uid`, `gid`, mode 0600) and must be owned by it afterwards;
/// the dot-lock is root's.
pub fn deliver_spool_as_root(
    spool: &Path,
    name: &str,
    (uid, gid): (u32, u32),
    sender: &str,
    prefix: &[u8],
    message: &mut dyn Read,
    stale: Duration,
) -> Outcome {
    let path = spool.join(name);
    match create_excl(spool, name, 0o600) {
        Ok(f) => {
            let owner = (
                Some(rustix::process::Uid::from_raw(uid)),
                Some(rustix::process::Gid::from_raw(gid)),
            );
            if let Err(e) = rustix::fs::fchown(&f, owner.0, owner.1) {
                let _ = std::fs::remove_file(&path);
                return Outcome::temp(
                    Dsn::MAIL_SYSTEM,
                    format!("cannot give {} to {name}: {e}", path.display()),
                );
            }
        }
        // Already there (open_append below checks it is the account's plain file).
        Err(_) if path.symlink_metadata().is_ok() => {}
        Err(e) => {
            return Outcome::temp(
                Dsn::MAILBOX_STATUS,
                format!("cannot create mailbox {}: {e}", path.display()),
            );
        }
    }
    let lock = match DotLock::take(spool, name, stale) {
        Ok(l) => l,
        Err(o) => return o,
    };
    let result = append_expecting(&path, &Expect::owner(uid), None, sender, None, prefix, message);
    drop(lock);
    match result {
        Ok(()) => Outcome::sent("delivered to mailbox"),
        Err(o) => o,
    }
}

/// Opens, locks and appends; `limit` is (quota, size of this message).
fn append_locked(
    path: &Path,
    sender: &str,
    limit: Option<(u64, u64)>,
    prefix: &[u8],
    message: &mut dyn Read,
) -> Result<(), Outcome> {
    append_expecting(
        path,
        &Expect::current_user(),
        Some(0o600),
        sender,
        limit,
        prefix,
        message,
    )
}

/// [`append_locked`] for a file that must have the owner `expect` (created with
/// `create` mode when missing and `Some`).
fn append_expecting(
    path: &Path,
    expect: &Expect,
    create: Option<u32>,
    sender: &str,
    limit: Option<(u64, u64)>,
    prefix: &[u8],
    message: &mut dyn Read,
) -> Result<(), Outcome> {
    let shown = path.display();
    let file = open_append(path, expect, create)
        .map_err(|e| Outcome::temp(Dsn::MAILBOX_STATUS, format!("cannot open mailbox {shown}: {e}")))?;
    lock_file(&file).map_err(|e| Outcome::temp(Dsn::MAILBOX_STATUS, format!("cannot lock mailbox {shown}: {e}")))?;
    let result = (|| {
        let old = file
            .metadata()
            .map_err(|e| Outcome::temp(Dsn::MAIL_SYSTEM, format!("cannot stat mailbox {shown}: {e}")))?
            .len();
        if let Some((quota, size)) = limit
            && old.saturating_add(size) > quota
        {
            return Err(Outcome::temp(
                Dsn::MAILBOX_FULL,
                format!("mailbox full: quota {quota} bytes exceeded"),
            ));
        }
        if let Err(e) = write_message(&file, sender, prefix, message) {
            // Cut a torn append back off, so the mailbox stays well-formed.
            let _ = file.set_len(old);
            let _ = file.sync_all();
            let full = [rustix::io::Errno::NOSPC, rustix::io::Errno::DQUOT].map(|n| Some(n.raw_os_error()));
            let dsn = if full.contains(&e.raw_os_error()) {
                Dsn::MAIL_SYSTEM
            } else {
                Dsn::MAILBOX_STATUS
            };
            return Err(Outcome::temp(dsn, format!("cannot append to mailbox {shown}: {e}")));
        }
        Ok(())
    })();
    let _ = rustix::fs::fcntl_lock(&file, FlockOperation::NonBlockingUnlock);
    let _ = rustix::fs::flock(&file, FlockOperation::NonBlockingUnlock);
    result
}

/// The fcntl write lock, then the flock, each tried a bounded number of times.
fn lock_file(file: &File) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        let r = rustix::fs::fcntl_lock(file, FlockOperation::NonBlockingLockExclusive)
            .and_then(|()| rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive));
        match r {
            Ok(()) => return Ok(()),
            Err(e) if (e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS) && tries < LOCK_ATTEMPTS => {
                let _ = rustix::fs::fcntl_lock(file, FlockOperation::NonBlockingUnlock);
                tries += 1;
                std::thread::sleep(LOCK_DELAY);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The `From sender date` line (with its newline) that starts an mbox message and the
/// input of a `|command` delivery.
pub fn from_line(sender: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let from = if sender.is_empty() { "MAILER-DAEMON" } else { sender };
    format!(
        "From {from}  {} {}\n",
        postern_lib::queue_scan::asctime(secs),
        year(secs)
    )
}

/// The `From ` line, the prefix, the escaped message, the blank line; then fsync.
fn write_message(file: &File, sender: &str, prefix: &[u8], message: &mut dyn Read) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(file);
    w.write_all(from_line(sender).as_bytes())?;
    w.write_all(prefix)?;
    let mut r = BufReader::new(message);
    let mut line = Vec::new();
    let mut last_nl = true;
    loop {
        line.clear();
        let n = r.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if last_nl && line.starts_with(b"From ") {
            w.write_all(b">")?;
        }
        w.write_all(&line)?;
        last_nl = line.ends_with(b"\n");
    }
    if !last_nl {
        w.write_all(b"\n")?;
    }
    w.write_all(b"\n")?;
    w.flush()?;
    drop(w);
    file.sync_all()
}

/// A held dot-lock, `<dir>/<user>.lock`; removed when dropped.
struct DotLock {
    path: std::path::PathBuf,
}

impl DotLock {
    /// Creates the lock file `O_EXCL`; a lock older than `stale` is removed and retaken.
    fn take(dir: &Path, user: &str, stale: Duration) -> Result<DotLock, Outcome> {
        let name = format!("{user}.lock");
        let path = dir.join(&name);
        let mut last = String::new();
        for _ in 0..LOCK_ATTEMPTS {
            match create_excl(dir, &name, 0o600) {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(DotLock { path });
                }
                Err(e) => last = e.to_string(),
            }
            let age = std::fs::symlink_metadata(&path)
                .ok()
                .and_then(|m| m.modified().ok())
                .map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
            match age {
                Some(age) if age > stale => {
                    tracing::warn!("removing stale lock file {}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
                // Gone since (or never there: the error was another one): pause all the same.
                _ => std::thread::sleep(LOCK_DELAY),
            }
        }
        Err(Outcome::temp(
            Dsn::MAILBOX_STATUS,
            format!("mailbox {user} is locked: cannot create {}: {last}", path.display()),
        ))
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The year of a Unix time (for the `From ` line).
fn year(secs: u64) -> i64 {
    let (y, _, _) = postern_lib::log::civil_from_days((secs / 86400) as i64);
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(dir: &Path, body: &str, quota: Option<u64>) -> Outcome {
        let mut m = body.as_bytes();
        deliver_user(
            dir,
            "alice",
            "bob@example.test",
            quota,
            body.len() as u64,
            b"Return-Path: <bob@example.test>\n",
            &mut m,
            Duration::from_secs(500),
        )
    }

    #[test]
    fn appends_escaped_messages_with_blank_lines() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            deliver(d.path(), "Subject: a\n\nFrom here\n>From there\nend", None).code,
            250
        );
        assert_eq!(deliver(d.path(), "Subject: b\n\nbody\n", None).code, 250);
        let text = std::fs::read_to_string(d.path().join("alice")).unwrap();
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("From ")).collect();
        assert_eq!(froms.len(), 2);
        assert!(froms[0].starts_with("From bob@example.test  "));
        assert!(text.contains("\n>From here\n>From there\nend\n\nFrom bob@example.test  "));
        assert!(text.ends_with("Subject: b\n\nbody\n\n"));
        assert!(!d.path().join("alice.lock").exists());
    }

    #[test]
    fn fresh_lock_defers_and_stale_lock_is_taken_over() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("alice.lock"), "1\n").unwrap();
        let mut m: &[u8] = b"x\n";
        let o = deliver_user(d.path(), "alice", "", None, 2, b"", &mut m, Duration::from_secs(3600));
        assert_eq!(o.code, 450);
        assert!(o.text.contains("locked"), "{o:?}");
        let mut m: &[u8] = b"x\n";
        let o = deliver_user(d.path(), "alice", "", None, 2, b"", &mut m, Duration::ZERO);
        assert_eq!(o.code, 250, "{o:?}");
        assert!(
            std::fs::read_to_string(d.path().join("alice"))
                .unwrap()
                .starts_with("From MAILER-DAEMON  ")
        );
    }

    #[test]
    fn file_targets_refuse_fifos_at_once_and_take_dev_null() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let mut m: &[u8] = b"x\n";
        let start = std::time::Instant::now();
        let o = append(fifo.to_str().unwrap(), "", b"", &mut m);
        assert_eq!(o.code, 450, "{o:?}");
        assert!(o.text.contains("not a regular file (fifo)"), "{o:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "blocked on the FIFO");
        let mut m: &[u8] = b"x\n";
        assert_eq!(append("/dev/null", "", b"", &mut m).code, 250);
    }

    #[test]
    fn quota_counts_the_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(deliver(d.path(), "Subject: a\n\n0123456789\n", Some(200)).code, 250);
        let o = deliver(d.path(), "Subject: a\n\n0123456789\n", Some(120));
        assert_eq!((o.code, o.dsn), (450, Dsn::MAILBOX_FULL));
    }
}
