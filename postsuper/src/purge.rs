//! `postsuper -p`: purges the temporary files that processes killed while writing left in
//! the queue, as Postfix's `postsuper -p` ("purge old temporary files that are left over
//! after system or software crashes"); `postern start` runs it before master, as
//! `postfix start` runs postsuper.
//!
//! What is a temporary, and whose: every writer of the queue writes under a name no
//! daemon reads (it starts with `.`) and renames the file to its real name only once all
//! of it is durable, so a temporary is never a message that anyone acknowledged. Its name
//! carries the process ID of its writer:
//!
//! | name | writer | where |
//! | --- | --- | --- |
//! | `.cleanup.<QUEUEID>` | cleanup (the queue ID's process field, [`QueueId::pid`]) | `incoming/`, `hold/` |
//! | `.cleanup.spare.<PID>.<N>` | cleanup (a claimed spare, [`postern_lib::queue_spare`]) | `incoming/` |
//! | `.tmp.<PID>.<N>.<NAME>` | any `write_atomic` (postdrop, the mirror daemon, master) | `maildrop/`, `mirror/`, `pid/` |
//!
//! A temporary is removed when it is provably abandoned: its writer's process is gone (no
//! `/proc/PID` — a live cleanup's temporary is always kept, however long its peer node
//! or its disk takes), or, when that PID is alive again (reused by another process), the
//! file has not changed for [`MAX_TEMP_AGE`], far beyond any one message's write (bounded
//! by `ipc_timeout` and `queue_mirror_timeout`). Even a writer that survived that long
//! loses nothing: its rename fails and it answers a temporary error, so the client keeps
//! the message. When `/proc` does not show this process under its own PID (not mounted,
//! or another PID namespace), no PID can be trusted and only the age decides.
//!
//! Anything else is left alone: names of other shapes, files not regular, `corrupt/`
//! (kept for the administrator), `spare/` (spares are reused, not temporaries), the
//! sockets of `public/` and `private/`. Each removal is one line on standard error and in
//! the maillog (`postsuper: removed temporary file incoming/.cleanup.X left by process
//! 1234, which is gone`), then `Purged: N temporary files`. Besides the space, a stale
//! `.cleanup.<QUEUEID>` kept the peer of a queue mirror from ever dropping its copy of
//! that message (a message being written counts as queued, [`mirror::resync`]).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use postern_lib::queue_id::QueueId;

use crate::maillog::MailLog;

/// A temporary whose writer's PID is alive is still removed once unchanged this long.
pub const MAX_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// The queue directories that hold temporaries.
const DIRS: &[&str] = &["incoming", "hold", "maildrop", "mirror", "active", "deferred", "pid"];

/// Most names looked at per directory (a directory filled by someone else cannot hold
/// postsuper for ever).
const MAX_NAMES: usize = 1_000_000;

/// The process that wrote the temporary `name`, or `None` when `name` is not one.
pub fn writer(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix(".cleanup.spare.") {
        let (pid, n) = rest.split_once('.')?;
        n.parse::<u64>().ok()?;
        return pid.parse().ok();
    }
    if let Some(rest) = name.strip_prefix(".cleanup.") {
        return QueueId::parse(rest).ok().map(|id| id.pid());
    }
    let rest = name.strip_prefix(".tmp.")?;
    let mut parts = rest.splitn(3, '.');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    parts.next().filter(|n| !n.is_empty())?;
    Some(pid)
}

/// Whether PIDs seen in `/proc` are this PID namespace's (so a missing `/proc/PID` means
/// the process is gone).
fn pids_trusted() -> bool {
    std::fs::read_link("/proc/self").is_ok_and(|p| p.as_os_str() == std::process::id().to_string().as_str())
}

/// Why a temporary written by `pid`, last changed at `mtime`, is abandoned; `None`: keep it.
fn abandoned(pid: u32, mtime: SystemTime, now: SystemTime, trusted: bool) -> Option<String> {
    let alive = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
    if trusted && !alive {
        return Some(format!("left by process {pid}, which is gone"));
    }
    let age = now.duration_since(mtime).unwrap_or_default();
    (age >= MAX_TEMP_AGE).then(|| format!("unchanged for {} hours", age.as_secs() / 3600))
}

/// Removes the abandoned temporaries below `queue_dir`; returns how many.
pub fn purge(queue_dir: &Path, log: &mut MailLog) -> usize {
    let trusted = pids_trusted();
    if !trusted {
        eprintln!("postsuper: warning: /proc does not show this process: temporary files are judged by age alone");
    }
    let now = SystemTime::now();
    let mut removed = 0;
    for dir in DIRS {
        let Ok(entries) = std::fs::read_dir(queue_dir.join(dir)) else {
            continue;
        };
        for entry in entries.flatten().take(MAX_NAMES) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(pid) = writer(name) else { continue };
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if !meta.file_type().is_file() {
                continue;
            }
            let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.mtime()).unwrap_or(0));
            let Some(why) = abandoned(pid, mtime, now, trusted) else {
                continue;
            };
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed += 1;
                    let line = format!("removed temporary file {dir}/{name} {why}");
                    eprintln!("postsuper: {line}");
                    log.line(&line);
                }
                // Renamed into place or removed by its writer meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let line = format!("warning: cannot remove temporary file {dir}/{name}: {e}");
                    eprintln!("postsuper: {line}");
                    log.line(&line);
                }
            }
        }
    }
    if removed > 0 {
        let line = format!(
            "Purged: {removed} temporary file{}",
            if removed == 1 { "" } else { "s" }
        );
        eprintln!("postsuper: {line}");
        log.line(&line);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_of_temporary_names() {
        let id = QueueId::from_parts(1_700_000_000_000_000, 4321, 7);
        assert_eq!(writer(&format!(".cleanup.{id}")), Some(4321));
        assert_eq!(writer(".cleanup.spare.987.12"), Some(987));
        assert_eq!(writer(&format!(".tmp.55.0.{id}")), Some(55));
        assert_eq!(writer(".tmp.55.3.config.json"), Some(55));
        for not in [
            id.as_str(),
            ".cleanup.short",
            ".cleanup.spare.x.1",
            ".cleanup.spare.12",
            ".tmp.55.x.name",
            ".tmp.55.1.",
            ".tmp.55",
            "adopted",
            "queue-token",
        ] {
            assert_eq!(writer(not), None, "{not}");
        }
        assert_eq!(writer(&format!(".{id}")), None, "a spare is not a temporary");
    }

    #[test]
    fn gone_writers_and_old_files_are_abandoned_live_recent_ones_kept() {
        let now = SystemTime::now();
        let me = std::process::id();
        // a PID above any pid_max: no such process
        let gone = 1 << 23;
        assert!(abandoned(gone, now, now, true).is_some());
        assert!(abandoned(me, now, now, true).is_none());
        let old = now - MAX_TEMP_AGE - Duration::from_secs(60);
        assert!(abandoned(me, old, now, true).is_some(), "a reused PID");
        assert!(abandoned(gone, now, now, false).is_none(), "untrusted PIDs: age alone");
        assert!(abandoned(gone, old, now, false).is_some());
    }
}
