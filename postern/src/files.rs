//! File helpers of the `postern` command's editors (`config set`, `user`): replacing a file
//! atomically, and serialising editors of one config directory.
//!
//! Security stance: a file is never rewritten in place. The new text goes to a fresh
//! temporary file in the same directory (created exclusively, mode 0600 until it gets the
//! old file's mode), is fsynced, renamed over the old name, and the directory is fsynced
//! (`postern_lib::safe_open::write_atomic`): a crash leaves the old file or the new one.
//! The old file's mode and owner are kept.
//! A symlink at the name is resolved and its target replaced, so the link survives.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Replaces `path` with `data` through [`postern_lib::safe_open::write_atomic`], keeping
/// the mode and owner of the file it replaces (`new_mode` when there is none). Errors name
/// the file.
pub fn write_atomic(path: &Path, data: &[u8], new_mode: u32) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{}: cannot {what}: {e}", path.display());
    let target: PathBuf = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).map_err(|e| fail("resolve symlink", &e))?,
        _ => path.to_path_buf(),
    };
    let old = match std::fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail("stat", &e)),
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| fail("write", &"not a UTF-8 file name"))?;
    let mode = old.as_ref().map_or(new_mode, |m| m.permissions().mode() & 0o7777);
    postern_lib::safe_open::write_atomic(&dir, name, 0o600, |file| {
        if let Some(m) = &old {
            let now = file.metadata()?;
            if (now.uid(), now.gid()) != (m.uid(), m.gid()) {
                std::os::unix::fs::fchown(&*file, Some(m.uid()), Some(m.gid()))?;
            }
        }
        // After the chown, which may clear set-id bits; and whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(data)
    })
    .map_err(|e| fail("write", &e))
}

/// An exclusive lock on a config directory, held while a file in it is read, edited and
/// written back; released on drop.
pub struct DirLock {
    _dir: File,
}

impl DirLock {
    /// Waits for and takes the lock.
    pub fn exclusive(dir: &Path) -> Result<DirLock, String> {
        let f = File::open(dir).map_err(|e| format!("{}: cannot open config directory: {e}", dir.display()))?;
        loop {
            match rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(DirLock { _dir: f }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(format!("{}: cannot lock config directory: {e}", dir.display())),
            }
        }
    }
}

/// Writes `text` to standard output. A closed pipe (`postern config | head`) is not an
/// error; anything else is.
pub fn print(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write to standard output: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_mode_and_follows_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("main.toml");
        std::fs::write(&p, "old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"new\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new\n");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o640);
        let link = d.path().join("link.toml");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        write_atomic(&link, b"via link\n", 0o600).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&p).unwrap(), b"via link\n");
        let fresh = d.path().join("fresh");
        write_atomic(&fresh, b"x", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777, 0o600);
        // Nothing but the three names is left in the directory.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 3);
    }
}
