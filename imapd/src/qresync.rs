//! QRESYNC (RFC 7162 §3.2): what a client that knew a folder at some MODSEQ has missed.
//!
//! `SELECT mbox (QRESYNC (uidvalidity modseq [known-uids [(seq-match)]]))`, after `ENABLE
//! QRESYNC`, answers — when the UIDVALIDITY is still the folder's — `* VANISHED (EARLIER)`
//! with the known UIDs expunged since that MODSEQ, then `* n FETCH (UID FLAGS MODSEQ)` for
//! the known messages changed since ([`Session::resync_lines`]); `UID FETCH ... (CHANGEDSINCE
//! m VANISHED)` sends the same VANISHED (EARLIER) for its UID set. The expunges come from
//! the folder's expunge log by MODSEQ ([`postern_mailbox::Folder::expunged_since`]);
//! a MODSEQ older than the log remembers gets every known UID up to the last one given that
//! is not in the folder now, which is what the RFC allows (a client ignores UIDs it does
//! not have). The sequence-match data is checked for syntax and otherwise not needed: the
//! answer is exact either way. Once QRESYNC is on, expunges are told as `* VANISHED uids`
//! instead of `* n EXPUNGE` ([`Session::report`]).

use crate::cmd_message::Ranges;
use crate::parse::{Arg, STAR, SeqSet};
use crate::session::{Reply, Session};
use postern_mailbox::Folder;

/// The parameters of `SELECT mbox (QRESYNC (...))`.
pub(crate) struct Resync {
    /// The client's UIDVALIDITY: nothing is resynchronised unless it is the folder's.
    pub(crate) validity: u32,
    /// The client's last known MODSEQ.
    pub(crate) modseq: u64,
    /// The UIDs the client knows (all when not given).
    known: Option<SeqSet>,
    /// Sequence-match data was given (refused under UIDONLY: RFC 9586).
    pub(crate) seq_match: bool,
}

/// A positive number of at most 63 bits (RFC 7162 `mod-sequence-value`).
fn modseq_arg(a: &Arg) -> Option<u64> {
    a.text()?.parse::<u64>().ok().filter(|&n| n > 0 && n <= i64::MAX as u64)
}

impl Resync {
    /// Parses the list after the `QRESYNC` select parameter.
    pub(crate) fn parse(list: &[Arg]) -> Result<Resync, Reply> {
        let bad = || Reply::Bad("Invalid QRESYNC parameters".into());
        let validity = list
            .first()
            .and_then(Arg::text)
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|&v| v > 0)
            .ok_or_else(bad)?;
        let modseq = list.get(1).and_then(modseq_arg).ok_or_else(bad)?;
        let mut rest = list.get(2..).unwrap_or_default();
        let mut known = None;
        if let Some(Arg::Atom(set)) = rest.first() {
            known = Some(SeqSet::parse(set).filter(|s| !s.is_saved()).ok_or_else(bad)?);
            rest = &rest[1..];
        }
        let seq_match = match rest {
            [] => false,
            // (known-sequence-set known-uid-set): two sets of the same length
            [Arg::List(m)] if m.len() == 2 && m.iter().all(|s| s.text().and_then(|t| SeqSet::parse(&t)).is_some()) => {
                true
            }
            _ => return Err(bad()),
        };
        Ok(Resync {
            validity,
            modseq,
            known,
            seq_match,
        })
    }
}

/// `a:b,c` of UID ranges.
fn ranges_text(r: &[(u32, u32)]) -> String {
    let parts: Vec<String> = r
        .iter()
        .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}:{b}") })
        .collect();
    parts.join(",")
}

/// The UIDs of `known` expunged from `folder` after MODSEQ `since`, as a UID set (empty
/// when none).
pub(crate) fn vanished(folder: &Folder, since: u64, known: &Ranges) -> String {
    let last = folder.next_uid().saturating_sub(1);
    if let Some(log) = folder.expunged_since(since) {
        let mut uids: Vec<u32> = log
            .iter()
            .map(|&(_, u)| u)
            .filter(|&u| known.contains(u) && folder.get(u).is_none())
            .collect();
        uids.sort_unstable();
        uids.dedup();
        return crate::reply::uid_set(&uids);
    }
    // older than the log: every known UID given so far that is not in the folder
    let msgs = folder.messages();
    let mut out = Vec::new();
    for &(a, b) in known.spans() {
        let b = b.min(last);
        if a > b {
            continue;
        }
        let mut j = msgs.partition_point(|m| m.uid < a);
        let mut next = a;
        loop {
            match msgs.get(j).filter(|m| m.uid <= b) {
                Some(m) => {
                    if m.uid > next {
                        out.push((next, m.uid - 1));
                    }
                    j += 1;
                    match m.uid.checked_add(1) {
                        Some(n) if n <= b => next = n,
                        _ => break,
                    }
                }
                None => {
                    out.push((next, b));
                    break;
                }
            }
        }
    }
    ranges_text(&out)
}

impl Session {
    /// The untagged answers of a QRESYNC SELECT (after its HIGHESTMODSEQ line): VANISHED
    /// (EARLIER) of the known UIDs expunged since the client's MODSEQ, and a FETCH of each
    /// known message changed since. Nothing when the UIDVALIDITY is not the folder's.
    pub(crate) fn resync_lines(&self, r: &Resync) -> Vec<String> {
        let Some(sel) = self.sel.as_ref() else {
            return Vec::new();
        };
        let folder = &sel.folder;
        if r.validity != folder.uid_validity() {
            return Vec::new();
        }
        let last = folder.next_uid().saturating_sub(1);
        let known = Ranges::new(r.known.as_ref().unwrap_or(&SeqSet(vec![(1, STAR)])), last);
        let mut lines = Vec::new();
        let gone = vanished(folder, r.modseq, &known);
        if !gone.is_empty() {
            lines.push(format!("* VANISHED (EARLIER) {gone}"));
        }
        let keywords = folder.keywords();
        for (i, &(u, _)) in sel.view.iter().enumerate() {
            let Some(m) = folder.get(u) else { continue };
            if m.modseq > r.modseq && known.contains(u) {
                let names = crate::reply::flag_list(&sel.shown(u, m.flags).imap_names(keywords));
                lines.push(format!(
                    "{}UID {u} FLAGS {names} MODSEQ ({}))",
                    crate::uidonly::fetch_head(self.uidonly, i, u),
                    m.modseq
                ));
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_mailbox::flags::Flags;
    use postern_mailbox::index;

    fn set(text: &str, last: u32) -> Ranges {
        Ranges::new(&SeqSet::parse(text).unwrap(), last)
    }

    #[test]
    fn vanished_comes_from_the_expunge_log_or_else_from_the_uids_missing_now() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let mut f = Folder::open(dir.path()).unwrap();
        for i in 1..=5 {
            f.append(format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(), Flags::default(), None)
                .unwrap();
        }
        let before = f.highest_modseq();
        f.expunge(&[2, 3]).unwrap();
        // from the log: the known UIDs expunged after `before`, not those before it
        assert_eq!(vanished(&f, before, &set("1:*", 5)), "2:3");
        assert_eq!(vanished(&f, before, &set("3:4", 5)), "3");
        assert_eq!(vanished(&f, f.highest_modseq(), &set("1:*", 5)), "");
        f.expunge(&[5]).unwrap();
        // an index whose log forgot everything up to now ("vanished before" floor)
        let msgs: Vec<(u32, index::Record)> = f.messages().iter().map(|m| (m.uid, m.record())).collect();
        let bytes = index::format_snapshot(&index::Snapshot {
            uid_validity: f.uid_validity(),
            next_uid: f.next_uid(),
            highest_modseq: f.highest_modseq(),
            floor: f.highest_modseq(),
            messages: &msgs,
            expunged: &[],
            recent_from: f.next_uid(),
        });
        index::replace(dir.path(), &bytes).unwrap();
        let f = Folder::open(dir.path()).unwrap();
        assert!(f.expunged_since(before).is_none());
        // every known UID given so far that is not in the folder (1 and 4 are)
        assert_eq!(vanished(&f, before, &set("1:*", 5)), "2:3,5");
        assert_eq!(vanished(&f, before, &set("3:100", 5)), "3,5");
        assert_eq!(vanished(&f, before, &set("1,4", 5)), "");
        assert_eq!(vanished(&f, before, &set("6:9", 5)), "");
    }
}
