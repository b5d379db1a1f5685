//! The sync state of one user between this replica and one peer: what both had in common
//! when they were last merged. It is what makes the merge tell "new here" from "expunged
//! there", and "changed here" from "changed there".
//!
//! Kept in the user's mailbox root as `postern-replica-<peer>` (JSON), on BOTH replicas
//! (the one that drove the merge writes it to the other too, from the other's point of
//! view), with a generation number: whichever side drives the next merge uses the copy with
//! the higher generation, so a merge driven from either side sees the latest state.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One user's state with one peer, from the point of view of the replica that keeps it
/// ("mine" is that replica, "theirs" the peer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// Incremented by every completed merge.
    pub generation: u64,
    /// The folders both had, by name.
    pub folders: BTreeMap<String, FolderState>,
    /// The subscriptions both had.
    pub subscriptions: Vec<String>,
}

/// One folder's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderState {
    /// The UIDVALIDITY both had.
    pub uid_validity: u32,
    /// The UIDs whose messages both had (ranges `[from, to]`, inclusive, ascending), plus
    /// every UID below both UIDNEXTs: a message on one side only with a UID in here was
    /// expunged on the other.
    pub known: Vec<(u32, u32)>,
    /// HIGHESTMODSEQ of mine after the merge: a message with a higher MODSEQ changed since.
    pub modseq_mine: u64,
    /// HIGHESTMODSEQ of theirs after the merge.
    pub modseq_theirs: u64,
}

impl SyncState {
    /// The same state from the peer's point of view.
    pub fn swapped(&self) -> SyncState {
        SyncState {
            generation: self.generation,
            folders: self
                .folders
                .iter()
                .map(|(n, f)| {
                    (
                        n.clone(),
                        FolderState {
                            modseq_mine: f.modseq_theirs,
                            modseq_theirs: f.modseq_mine,
                            ..f.clone()
                        },
                    )
                })
                .collect(),
            subscriptions: self.subscriptions.clone(),
        }
    }
}

impl FolderState {
    /// Whether `uid` is in [`FolderState::known`].
    pub fn knows(&self, uid: u32) -> bool {
        let i = self.known.partition_point(|&(_, to)| to < uid);
        self.known.get(i).is_some_and(|&(from, _)| from <= uid)
    }
}

/// Ranges from UIDs (any order, duplicates allowed).
pub fn ranges(mut uids: Vec<u32>) -> Vec<(u32, u32)> {
    uids.sort_unstable();
    uids.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for u in uids {
        match out.last_mut() {
            Some((_, to)) if to.checked_add(1) == Some(u) => *to = u,
            _ => out.push((u, u)),
        }
    }
    out
}

/// Ranges of `uids` joined with `1..below`.
pub fn known_ranges(uids: Vec<u32>, below: u32) -> Vec<(u32, u32)> {
    let mut r = ranges(uids);
    if below > 1 {
        // everything below `below` joins the first range(s)
        let cut = r.partition_point(|&(from, _)| from <= below);
        let to = r[..cut].iter().map(|&(_, t)| t).max().unwrap_or(0).max(below - 1);
        r.drain(..cut);
        r.insert(0, (1, to));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_membership() {
        let f = FolderState {
            known: known_ranges(vec![9, 12, 13, 14, 20, 5], 7),
            ..FolderState::default()
        };
        assert_eq!(f.known, vec![(1, 6), (9, 9), (12, 14), (20, 20)]);
        for (u, k) in [
            (1, true),
            (6, true),
            (7, false),
            (9, true),
            (11, false),
            (13, true),
            (20, true),
            (21, false),
        ] {
            assert_eq!(f.knows(u), k, "{u}");
        }
        assert_eq!(known_ranges(vec![3, 4, 8], 5), vec![(1, 4), (8, 8)]);
        assert_eq!(known_ranges(vec![], 1), vec![]);
        assert_eq!(ranges(vec![u32::MAX, u32::MAX - 1]), vec![(u32::MAX - 1, u32::MAX)]);
    }

    #[test]
    fn swapping_twice_is_the_same() {
        let mut s = SyncState::default();
        s.folders.insert(
            "INBOX".into(),
            FolderState {
                uid_validity: 3,
                known: vec![(1, 4)],
                modseq_mine: 10,
                modseq_theirs: 20,
            },
        );
        assert_eq!(s.swapped().folders["INBOX"].modseq_mine, 20);
        assert_eq!(s.swapped().swapped(), s);
    }
}
