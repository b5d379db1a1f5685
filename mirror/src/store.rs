//! The `mirror/` directory of the queue: the peer's queue files this node keeps, one
//! file per message named by the peer's queue ID.
//!
//! A copy is written under a temporary name (`.tmp.*`), fsynced, renamed to its queue ID
//! and the directory fsynced ([`postern_lib::safe_open::write_atomic`]) before the peer
//! gets its acknowledgement; a second copy of the same queue ID (the peer sent it again
//! after a lost acknowledgement) replaces the first. Names that are not queue IDs are
//! never written or read, so nothing from the network chooses a path.
//!
//! Adoption ([`adopt`]) moves every copy into `incoming/` under the same queue ID (the
//! same file system, one rename each, both directories fsynced); a copy whose queue ID is
//! already in one of this node's queues is left where it is and reported (queue IDs carry
//! time, process ID and a counter, so this means the copy was adopted and re-queued before).
//!
//! Before the renames the adopted queue IDs are appended to `mirror/adopted` (fsynced, one
//! per line, the most recent [`ADOPTED_KEEP`] kept): the peer, when it comes back with its
//! disk intact, asks which of its queued messages were adopted here ([`adopted_of`]) and
//! removes them before it delivers anything (`postern mirror rejoin`), so nothing adopted
//! is delivered twice.
//!
//! Two more files: `queue-token`, this node's queue identity (made once per queue
//! directory, sent with every answer to "which are still queued?"), and `peer-token`, the
//! peer's as last seen, so copies are never dropped on the word of a queue that is not
//! the one that sent them ([`crate::prune`]).

use postern_lib::queue_id::QueueId;
use std::io::Write;
use std::path::Path;

/// The directory below `queue_directory`.
pub const MIRROR_DIR: &str = "mirror";

/// The queues a message of this node may be in; an adopted copy must be in none of them.
const QUEUES: [&str; 4] = ["incoming", "active", "deferred", "hold"];
/// The list of adopted queue IDs in `mirror/` (not a queue ID: never taken for a copy).
pub const ADOPTED_LOG: &str = "adopted";
/// Adopted queue IDs remembered (17 bytes each): the oldest go when there are more.
pub const ADOPTED_KEEP: usize = 200_000;
/// Most bytes of the adopted list read.
const ADOPTED_MAX_BYTES: u64 = (ADOPTED_KEEP as u64 + 1000) * 17 * 2;

/// This node's queue token in `mirror/` (not a queue ID): 32 random hex digits made the
/// first time the peer asks what is queued here, so a queue directory that is replaced
/// (a new disk) has another one ([`crate::prune`]).
pub const QUEUE_TOKEN: &str = "queue-token";
/// The peer's queue token as this node last saw it, and since when (`TOKEN SECS`).
pub const PEER_TOKEN: &str = "peer-token";

/// Whether `t` looks like a queue token.
pub fn valid_token(t: &str) -> bool {
    t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// This node's queue token (`dir` is its `mirror/`), made when there is none.
pub fn queue_token(dir: &Path) -> Result<String, String> {
    let path = dir.join(QUEUE_TOKEN);
    let read = || {
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    if !path.exists() {
        let mut bytes = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| "no random numbers".to_string())?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // O_EXCL: of two processes making one at once, one wins and both read its token.
        if let Ok(mut f) = postern_lib::safe_open::create_excl(dir, QUEUE_TOKEN, 0o600) {
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let _ = postern_lib::safe_open::fsync_dir(dir);
        }
    }
    let token = read()?;
    if valid_token(&token) {
        Ok(token)
    } else {
        Err(format!("{}: not a queue token", path.display()))
    }
}

/// The peer's queue token as last seen, and the Unix second since which it is the one.
pub fn peer_token(dir: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(dir.join(PEER_TOKEN)).ok()?;
    let mut w = text.split_whitespace();
    let token = w.next().filter(|t| valid_token(t))?.to_string();
    let since = w.next().and_then(|s| s.parse().ok())?;
    Some((token, since))
}

/// Records the peer's queue token, durably, owned like `dir`.
pub fn set_peer_token(dir: &Path, token: &str, since: u64) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    postern_lib::safe_open::write_atomic(dir, PEER_TOKEN, 0o600, |f| {
        f.write_all(format!("{token} {since}\n").as_bytes())
    })
    .map_err(|e| e.to_string())?;
    if let Ok(m) = std::fs::metadata(dir) {
        let _ = std::os::unix::fs::chown(dir.join(PEER_TOKEN), Some(m.uid()), Some(m.gid()));
    }
    Ok(())
}

/// Writes the copy of `id` durably.
pub fn keep(dir: &Path, id: &QueueId, data: &[u8]) -> Result<(), String> {
    postern_lib::safe_open::write_atomic(dir, id.as_str(), 0o600, |f| f.write_all(data)).map_err(|e| e.to_string())
}

/// Removes the copy of `id`; false when there was none.
pub fn drop_copy(dir: &Path, id: &QueueId) -> bool {
    std::fs::remove_file(dir.join(id.as_str())).is_ok()
}

/// The queue IDs of the copies in `dir` (temporary files and other names skipped).
pub fn copies(dir: &Path) -> Vec<QueueId> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<QueueId> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| QueueId::parse(n).ok()))
        .collect();
    out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    out
}

/// Copies held and their total size in bytes.
pub fn held(dir: &Path) -> (usize, u64) {
    let ids = copies(dir);
    let bytes = ids
        .iter()
        .filter_map(|id| std::fs::symlink_metadata(dir.join(id.as_str())).ok())
        .map(|m| m.len())
        .sum();
    (ids.len(), bytes)
}

/// Removes temporary files (`.tmp.*`) older than `age` from `dir`: a copy whose connection
/// broke while it was written, or a crash. Returns how many went.
pub fn remove_stale_temps(dir: &Path, age: std::time::Duration) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp."))
        .filter(|e| {
            e.metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a > age)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// What an adoption did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Moved into incoming/.
    pub moved: Vec<String>,
    /// Left in mirror/: the queue ID is already queued here.
    pub collisions: Vec<String>,
    /// Left in mirror/: the rename failed (with the reason).
    pub failed: Vec<(String, String)>,
}

/// The queue IDs in `dir`'s adopted list (bounded read; lines that are not queue IDs skipped).
pub fn adopted_list(dir: &Path) -> Vec<String> {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(dir.join(ADOPTED_LOG)) {
        let _ = f.take(ADOPTED_MAX_BYTES).read_to_string(&mut text);
    }
    text.lines()
        .filter(|l| QueueId::parse(l).is_ok())
        .map(str::to_string)
        .collect()
}

/// Appends `ids` to `dir`'s adopted list durably (rewritten with the newest
/// [`ADOPTED_KEEP`] when longer), owned like `dir` (the mirror daemon reads it).
pub fn record_adopted(dir: &Path, ids: &[QueueId]) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut all = adopted_list(dir);
    let start = (all.len() + ids.len()).saturating_sub(ADOPTED_KEEP);
    let path = dir.join(ADOPTED_LOG);
    if start > 0 || !path.exists() {
        all.extend(ids.iter().map(|id| id.as_str().to_string()));
        let keep = all.split_off(start.min(all.len()));
        let text: String = keep.iter().map(|id| format!("{id}\n")).collect();
        postern_lib::safe_open::write_atomic(dir, ADOPTED_LOG, 0o600, |f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    } else {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let text: String = ids.iter().map(|id| format!("{}\n", id.as_str())).collect();
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Ok(m) = std::fs::metadata(dir) {
        let _ = std::os::unix::fs::chown(&path, Some(m.uid()), Some(m.gid()));
    }
    Ok(())
}

/// Which of `asked` (the peer's queue IDs) were adopted here: in the adopted list and no
/// longer a copy in `dir` (a copy whose rename failed is still the peer's).
pub fn adopted_of(dir: &Path, asked: &[String]) -> Vec<String> {
    let list: std::collections::HashSet<String> = adopted_list(dir).into_iter().collect();
    asked
        .iter()
        .filter(|id| list.contains(*id) && !dir.join(id.as_str()).exists())
        .cloned()
        .collect()
}

/// Moves every copy in `queue_dir/mirror/` into `queue_dir/incoming/`, after recording
/// their queue IDs in the adopted list (nothing is moved when that fails).
pub fn adopt(queue_dir: &Path) -> Adopted {
    let dir = queue_dir.join(MIRROR_DIR);
    let incoming = queue_dir.join("incoming");
    let mut out = Adopted::default();
    let ids = copies(&dir);
    if ids.is_empty() {
        return out;
    }
    if let Err(e) = record_adopted(&dir, &ids) {
        out.failed = ids
            .iter()
            .map(|id| (id.as_str().to_string(), format!("cannot record the adoption: {e}")))
            .collect();
        return out;
    }
    for id in ids {
        let name = id.as_str();
        if QUEUES.iter().any(|q| queue_dir.join(q).join(name).exists()) {
            out.collisions.push(name.to_string());
            continue;
        }
        // A regular file only: a copy is never a link or a directory.
        match std::fs::symlink_metadata(dir.join(name)) {
            Ok(m) if m.file_type().is_file() => {}
            _ => {
                out.failed.push((name.to_string(), "not a regular file".into()));
                continue;
            }
        }
        match std::fs::rename(dir.join(name), incoming.join(name)) {
            Ok(()) => out.moved.push(name.to_string()),
            Err(e) => out.failed.push((name.to_string(), e.to_string())),
        }
    }
    if !out.moved.is_empty() {
        // The renames are durable before anybody is told they happened.
        let _ = postern_lib::safe_open::fsync_dir(&incoming);
        let _ = postern_lib::safe_open::fsync_dir(&dir);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_drop_and_adopt() {
        let q = tempfile::tempdir().unwrap();
        for d in ["mirror", "incoming", "active", "deferred", "hold"] {
            std::fs::create_dir(q.path().join(d)).unwrap();
        }
        let dir = q.path().join(MIRROR_DIR);
        let a = QueueId::new();
        let b = QueueId::new();
        let c = QueueId::new();
        keep(&dir, &a, b"first").unwrap();
        keep(&dir, &a, b"again").unwrap();
        keep(&dir, &b, b"second").unwrap();
        keep(&dir, &c, b"third").unwrap();
        std::fs::write(dir.join("../mirror/not-an-id"), b"x").unwrap();
        assert_eq!(held(&dir), (3, 5 + 6 + 5));
        assert!(drop_copy(&dir, &c));
        assert!(!drop_copy(&dir, &c));
        // b is queued here already: left alone.
        std::fs::write(q.path().join("deferred").join(b.as_str()), b"mine").unwrap();
        let r = adopt(q.path());
        assert_eq!(r.moved, vec![a.as_str().to_string()]);
        assert_eq!(r.collisions, vec![b.as_str().to_string()]);
        assert_eq!(
            std::fs::read(q.path().join("incoming").join(a.as_str())).unwrap(),
            b"again"
        );
        assert_eq!(copies(&dir), vec![b]);
        // a was adopted; b (left as a copy) and c (dropped) were not.
        let asked: Vec<String> = [a, b, c].iter().map(|i| i.as_str().to_string()).collect();
        assert_eq!(adopted_of(&dir, &asked), vec![a.as_str().to_string()]);
        assert_eq!(adopted_list(&dir).len(), 2, "a and b were recorded");
        std::fs::write(dir.join(".tmp.1.2.x"), b"partial").unwrap();
        assert_eq!(remove_stale_temps(&dir, std::time::Duration::from_secs(3600)), 0);
        assert_eq!(remove_stale_temps(&dir, std::time::Duration::ZERO), 1);
        assert_eq!(copies(&dir), vec![b]);
    }
}
