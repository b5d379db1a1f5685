//! `/file` alias targets: appending the message to a file in mbox format — a `From `
//! line, `Return-Path:`/`Delivered-To:`, the message with `From ` lines at the start of a
//! line escaped as `>From `, and a blank line — under an exclusive `flock`, with the file
//! opened through safe_open (no symlink, regular file, one link; created 0600 if missing).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use postern_lib::safe_open::{Expect, open_append};
use rustix::fs::FlockOperation;

use crate::delivery::Outcome;

/// Appends to the file at `path` (absolute).
pub fn append(path: &str, sender: &str, prefix: &[u8], message: &mut dyn Read) -> Outcome {
    if !path.starts_with('/') || path.contains("/../") || path.ends_with("/..") {
        return Outcome::perm("5.3.5", format!("alias file target {path:?} must be an absolute path"));
    }
    let file = match open_append(Path::new(path), &Expect::current_user(), Some(0o600)) {
        Ok(f) => f,
        Err(e) => return Outcome::temp("4.2.0", format!("cannot open file {path}: {e}")),
    };
    if let Err(e) = rustix::fs::flock(&file, FlockOperation::LockExclusive) {
        return Outcome::temp("4.2.0", format!("cannot lock file {path}: {e}"));
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let from = if sender.is_empty() { "MAILER-DAEMON" } else { sender };
    let result = (|| -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(&file);
        writeln!(
            w,
            "From {from}  {} {}",
            postern_lib::queue_scan::asctime(secs),
            year(secs)
        )?;
        w.write_all(prefix)?;
        let mut r = BufReader::new(message);
        let mut line = Vec::new();
        let mut last_nl = true;
        loop {
            line.clear();
            // Lines are bounded by the reader's buffer growth only; queue content lines are
            // already bounded by smtpd/cleanup.
            let n = r.by_ref().take(1 << 20).read_until(b'\n', &mut line)?;
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
    })();
    let _ = rustix::fs::flock(&file, FlockOperation::Unlock);
    match result {
        Ok(()) => Outcome::sent(&format!("delivered to file: {path}")),
        Err(e) => Outcome::temp("4.3.0", format!("cannot append to file {path}: {e}")),
    }
}

/// The year of a Unix time (for the `From ` line).
fn year(secs: u64) -> i64 {
    let (y, _, _) = postern_lib::log::civil_from_days((secs / 86400) as i64);
    y
}
