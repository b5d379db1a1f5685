//! The shared replica secret: read once at start-up, before privileges are dropped.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Largest secret file read.
pub const MAX_SECRET: u64 = 4096;
/// Shortest secret accepted (bytes, after trimming the line end).
pub const MIN_SECRET: usize = 16;

/// Reads the secret: a regular file (not a symlink), not readable or writable by group
/// or others, at least [`MIN_SECRET`] bytes; a final line end is not part of it.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let f = postern_lib::safe_open::open_read(path, &postern_lib::safe_open::Expect::any())
        .map_err(|e| format!("replica_secret_file: {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("replica_secret_file {}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "replica_secret_file {}: mode {:o}: must not be accessible to group or others (chmod 600)",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    let mut bytes = Vec::new();
    f.take(MAX_SECRET + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("replica_secret_file {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_SECRET {
        return Err(format!(
            "replica_secret_file {}: larger than {MAX_SECRET} bytes",
            path.display()
        ));
    }
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.len() < MIN_SECRET {
        return Err(format!(
            "replica_secret_file {}: shorter than {MIN_SECRET} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}
