//! Dropping the copies of the peer's messages that the peer no longer has queued, so the
//! copies this node holds converge with the peer's queue while both run (and at the
//! rejoin, [`crate::rejoin`]). Such a copy is an orphan an adoption would deliver again:
//!
//! - the peer gave up waiting for this node's acknowledgement (it came too late) and
//!   answered its client 451, after this node had written the copy: the client sends the
//!   message again, under another queue ID;
//! - the peer finished the message (delivered or bounced) while its drop notice could not
//!   reach this node (the link was cut, this node's mirror was down).
//!
//! The question goes to the peer's mirror service ([`crate::wire::kind::QUEUED`]): which
//! of these queue IDs are still queued, or being written by cleanup, at you? A message
//! answered 250 was renamed into the peer's queue before that 250 and stays there until it
//! is finished, so a copy the peer does not name is one of the two above — as long as the
//! peer's queue is the one that sent the copy. Hence the guards:
//!
//! - **the queue token**: each answer carries the peer's queue token, made with its queue
//!   directory ([`crate::store::queue_token`]); this node records it ([`crate::store::PEER_TOKEN`]).
//!   When it changes (the peer's queue directory was replaced: a new disk, a reinstall),
//!   the copies written before this node saw the change are never dropped on the new
//!   queue's word: they may be the only copies of the old queue's mail, for `postern
//!   mirror adopt`. A peer whose queue directories are missing answers nothing at all;
//! - **age**: only copies older than the peer's wait for an acknowledgement
//!   (`queue_mirror_timeout`) are asked about;
//! - **two checks**: in the running daemon a copy goes only when two checks in a row
//!   (`queue_mirror_check_interval` apart) found it gone at the peer, so a file that moved
//!   between the peer's queues at the wrong microsecond is not taken for a finished one.
//!   The rejoin (before this node delivers anything) drops after one answer.

use crate::store;
use crate::wire::MAX_ASK;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a check did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Copies dropped: not queued at the peer.
    pub dropped: usize,
    /// Copies kept: still queued at the peer (or gone there once only, for now).
    pub kept: usize,
    /// Copies kept because they came from the peer's previous queue (its token changed).
    pub old_queue: usize,
}

/// The peer's answer to one question: its queue token and the queue IDs it still has.
pub type Answer = (Option<String>, Vec<String>);

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Checks the peer's `token` against the one recorded in `dir`, recording it when it is
/// the first or a new one; returns the Unix second from which copies belong to this queue
/// of the peer (older ones came from a queue it no longer has).
fn since(dir: &Path, token: Option<&str>) -> Result<u64, String> {
    let token = token.ok_or("the peer's answer carries no queue token")?;
    match store::peer_token(dir) {
        Some((t, since)) if t == token => Ok(since),
        None => {
            store::set_peer_token(dir, token, 0)?;
            Ok(0)
        }
        Some((old, _)) => {
            let now = secs(SystemTime::now());
            store::set_peer_token(dir, token, now)?;
            tracing::warn!(
                "mirror: the peer's queue is not the one it was (queue token {old} is now {token}: its queue directory was replaced?); the copies held from before are kept: `postern mirror adopt` delivers them if that queue is lost"
            );
            Ok(now)
        }
    }
}

/// Asks `ask` (one [`crate::wire::kind::QUEUED`] question, at most [`MAX_ASK`] IDs) about
/// the copies in `dir` older than `min_age` and drops those the peer does not name: at once
/// when `suspects` is None, else only those `suspects` holds from the previous check (and
/// `suspects` becomes the set found gone this time).
pub fn run(
    dir: &Path,
    min_age: Duration,
    suspects: Option<&mut HashSet<String>>,
    mut ask: impl FnMut(&[String]) -> Result<Answer, String>,
) -> Result<Pruned, String> {
    let now = SystemTime::now();
    let candidates: Vec<(String, u64)> = store::copies(dir)
        .into_iter()
        .filter_map(|id| {
            let mtime = std::fs::symlink_metadata(dir.join(id.as_str())).ok()?.modified().ok()?;
            let old = now.duration_since(mtime).unwrap_or(Duration::ZERO) >= min_age;
            old.then(|| (id.as_str().to_string(), secs(mtime)))
        })
        .collect();
    let mut out = Pruned::default();
    let mut gone = HashSet::new();
    let mut token: Option<(Option<String>, u64)> = None;
    for batch in candidates.chunks(MAX_ASK) {
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        let (t, queued) = ask(&ids)?;
        let from = match &token {
            Some((first, from)) if *first == t => *from,
            Some(_) => return Err("the peer's queue token changed between two answers".into()),
            None => {
                let from = since(dir, t.as_deref())?;
                token = Some((t, from));
                from
            }
        };
        let queued: HashSet<String> = queued.into_iter().collect();
        for (id, mtime) in batch {
            if queued.contains(id) {
                out.kept += 1;
            } else if from > 0 && *mtime <= from {
                out.old_queue += 1;
            } else if suspects.as_deref().is_none_or(|s| s.contains(id)) {
                match postern_lib::queue_id::QueueId::parse(id) {
                    Ok(q) if store::drop_copy(dir, &q) => {
                        tracing::info!("{id}: mirror copy dropped: the peer no longer has it queued");
                        out.dropped += 1;
                    }
                    _ => {}
                }
            } else {
                gone.insert(id.clone());
                out.kept += 1;
            }
        }
    }
    if let Some(s) = suspects {
        *s = gone;
    }
    if out.dropped > 0 {
        let _ = postern_lib::safe_open::fsync_dir(dir);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::queue_id::QueueId;

    const T1: &str = "0123456789abcdef0123456789abcdef";
    const T2: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn two_checks_then_dropped_and_a_new_peer_queue_drops_nothing_old() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let (a, b) = (QueueId::new(), QueueId::new());
        store::keep(dir, &a, b"a").unwrap();
        store::keep(dir, &b, b"b").unwrap();
        let a_only = |_: &[String]| Ok((Some(T1.to_string()), vec![a.as_str().to_string()]));
        let mut suspects = HashSet::new();
        // Too young: not asked about.
        let r = run(
            dir,
            Duration::from_secs(3600),
            Some(&mut suspects),
            |_: &[String]| -> Result<Answer, String> { panic!("asked") },
        )
        .unwrap();
        assert_eq!(r, Pruned::default());
        // First check: b is gone there once: kept. Second: dropped.
        let r = run(dir, Duration::ZERO, Some(&mut suspects), a_only).unwrap();
        assert_eq!((r.dropped, r.kept), (0, 2));
        assert_eq!(store::copies(dir).len(), 2);
        let r = run(dir, Duration::ZERO, Some(&mut suspects), a_only).unwrap();
        assert_eq!((r.dropped, r.kept), (1, 1));
        assert_eq!(store::copies(dir), vec![a]);
        // No token in the answer: nothing dropped, an error.
        assert!(run(dir, Duration::ZERO, None, |_: &[String]| Ok((None, vec![]))).is_err());
        assert_eq!(store::copies(dir), vec![a]);
        // The peer's queue was replaced: a (written before) is kept even after two checks.
        std::thread::sleep(Duration::from_millis(1100));
        let none = |_: &[String]| Ok((Some(T2.to_string()), vec![]));
        for _ in 0..3 {
            let r = run(dir, Duration::ZERO, Some(&mut suspects), none).unwrap();
            assert_eq!((r.dropped, r.old_queue), (0, 1));
        }
        assert_eq!(store::copies(dir), vec![a]);
        assert_eq!(store::peer_token(dir).unwrap().0, T2);
        // A copy written after the change is judged: gone at once without suspects.
        let c = QueueId::new();
        std::thread::sleep(Duration::from_millis(1100));
        store::keep(dir, &c, b"c").unwrap();
        let r = run(dir, Duration::ZERO, None, none).unwrap();
        assert_eq!((r.dropped, r.old_queue), (1, 1));
        assert_eq!(store::copies(dir), vec![a]);
    }
}
