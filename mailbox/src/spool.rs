//! A message written into a folder's `tmp/` as it arrives (imapd's large APPEND
//! literals, as Dovecot does), so a message of any size costs its receiver a read
//! buffer, not its size in memory. Bare LFs become CRLF as the bytes are written, as
//! [`super::Folder::append`] stores them. [`super::Folder::append_spool`] makes it a
//! message (fsync, rename into `cur/`); a spool dropped before that — the command
//! refused, the connection gone — removes its file. Files a crash left in `tmp/` are
//! removed once older than [`STALE_TMP`] ([`clean_tmp`], run when a folder is opened),
//! as the Maildir specification says.

use super::stream::extend_crlf;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Files in `tmp/` older than this are left-overs (the Maildir specification's 36 hours).
pub const STALE_TMP: Duration = Duration::from_secs(36 * 3600);

/// A message being received into `tmp/`.
pub struct Spool {
    path: PathBuf,
    file: File,
    /// Bytes written (line ends converted).
    size: u64,
    prev_cr: bool,
    /// Made a message: the file is no longer ours to remove.
    kept: bool,
    buf: Vec<u8>,
}

impl Spool {
    /// A new file in `folder`'s `tmp/`: created exclusively (`O_EXCL`, no symbolic link
    /// followed), mode 0600.
    pub fn create(folder: &Path) -> io::Result<Spool> {
        let path = folder
            .join("tmp")
            .join(format!("{}.spool", super::folder::unique_base(0)));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)?;
        Ok(Spool {
            path,
            file,
            size: 0,
            prev_cr: false,
            kept: false,
            buf: Vec::new(),
        })
    }

    /// Writes the message's next bytes.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        extend_crlf(&mut self.buf, data, self.prev_cr);
        self.prev_cr = data.last() == Some(&b'\r');
        self.file.write_all(&self.buf)?;
        self.size += self.buf.len() as u64;
        // a chunk's worth is kept for the next, no more
        self.buf.shrink_to(super::stream::CHUNK * 2);
        Ok(())
    }

    /// Bytes written so far (the message's size once complete).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's path (in `tmp/`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the file's modification time (the message's internal date), makes it
    /// durable and renames it to `to`; the spool no longer removes it.
    pub(crate) fn finish(mut self, date: Option<SystemTime>, to: &Path) -> io::Result<()> {
        if let Some(t) = date {
            self.file.set_modified(t)?;
        }
        self.file.sync_all()?;
        fs::rename(&self.path, to)?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes files older than [`STALE_TMP`] from `folder`'s `tmp/`; how many.
pub fn clean_tmp(folder: &Path) -> usize {
    let Ok(dir) = fs::read_dir(folder.join("tmp")) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for e in dir.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > STALE_TMP);
        if old && !meta.is_dir() && fs::remove_file(e.path()).is_ok() {
            tracing::info!("removed stale {}", e.path().display());
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for s in ["cur", "new", "tmp"] {
            fs::create_dir(d.path().join(s)).unwrap();
        }
        d
    }

    #[test]
    fn a_spool_converts_line_ends_and_a_dropped_one_leaves_nothing() {
        let d = folder();
        let mut s = Spool::create(d.path()).unwrap();
        for part in [&b"Subject: x\n"[..], b"\r", b"\nbody\n"] {
            s.write(part).unwrap();
        }
        assert_eq!(fs::read(s.path()).unwrap(), b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(s.size(), 20);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(s.path()).unwrap().permissions().mode() & 0o777, 0o600);
        drop(s);
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn stale_tmp_files_are_removed_fresh_ones_kept() {
        let d = folder();
        let old = d.path().join("tmp/old");
        fs::write(&old, b"x").unwrap();
        let f = fs::File::options().write(true).open(&old).unwrap();
        f.set_modified(SystemTime::now() - STALE_TMP - Duration::from_secs(60))
            .unwrap();
        fs::write(d.path().join("tmp/new"), b"y").unwrap();
        assert_eq!(clean_tmp(d.path()), 1);
        assert!(!old.exists() && d.path().join("tmp/new").exists());
    }
}
