//! The symmetric merge of one user's mailbox on two replicas, keyed by message GUID and
//! made incremental by the pair's [`SyncState`]. Written against [`Replica`] only.
//!
//! # Rules
//!
//! Folders (matched by name, renames found by UIDVALIDITY):
//! - a folder the state knew (same name and UIDVALIDITY) that one side now has under
//!   another name, which the other side does not have, was renamed there: rename it here;
//! - a folder the state knew that one side lacks was deleted there: delete it on the other
//!   (never INBOX);
//! - a folder on one side only that the state did not know was created there: create it on
//!   the other with the same UIDVALIDITY, then merge its messages;
//! - the same name with different UIDVALIDITYs, one of them the state's: the folder was
//!   deleted and created again on the other side: there the old one (and its messages) is
//!   deleted and the new one created with its UIDVALIDITY, then its messages are merged;
//! - the same name with different UIDVALIDITYs otherwise (first contact: both created it
//!   on their own) takes the lower one on both, then its messages are merged by GUID
//!   without state;
//! - a folder's mailbox GUID (IMAP's MAILBOXID) and the special uses it was created with
//!   go with it when it is created on the other side; when the two differ, the winner's
//!   (see Conflicts) are given to the other.
//!
//! Messages of a folder (by UID, then GUID):
//! - same UID, same GUID on both: flags changed on one side only since the last merge
//!   (MODSEQ above the state's) → that side's flags win; changed on both, or no state →
//!   the union;
//! - on one side only, UID in the state's `known` set → it was expunged on the other side:
//!   expunge it here;
//! - on one side only, not known → new: copied to the other side under the same UID, base
//!   name, flags and date when that UID is free there (≥ its UIDNEXT); otherwise a
//!   CONFLICT, settled as below;
//! - on one side only, not known, but the other side's GUID expunge log lists that GUID
//!   (since the last merge; for a hub's copy, at any time) and it has no other copy → the
//!   other side expunged it (before any merge, or a hub's second copy arrived after):
//!   expunge it here;
//! - same UID, different GUIDs, and the same GUID new on both sides under different UIDs
//!   (the hubs' copies reached the two replicas in other orders): CONFLICTS too.
//!
//! Conflicts. Clients read one side: every proxy prefers the pair's *primary* (the lower
//! `replica_name`; examples/redundant lists it first in both proxies), unless it was
//! down: a replicator that cannot reach its peer marks each user it serves meanwhile
//! ([`postern_mailbox::replica::mark_alone`], cleared by the next completed merge).
//! The *winner* is the side marked alone, else the primary; it keeps every UID, so a
//! client's STORE or UID EXPUNGE by a UID it read still finds its message after the merge.
//! The loser adopts the winner's numbering: its copy of a GUID the winner has is moved to
//! the winner's UID (first out of the way to a fresh UID when its own UID is wanted), the
//! winner's messages it lacks are put there under the winner's UIDs even below its UIDNEXT
//! (`reuse`: its UIDs were read by no client), and its own messages keep their UIDs when
//! those are free on the winner, else get a fresh UID above both UIDNEXTs on both (a new
//! message to the winner's clients). When both were marked (a split: each side served
//! alone) no numbering can be kept for both: the messages in conflict are added again
//! under fresh UIDs on both sides, a pair of copies of one GUID once with the union of the
//! flags (clients see an expunge and a new message, never a UIDVALIDITY change).
//!
//! A message added again is never removed on the way: it is put on the other side under
//! the fresh UID (or the other side's copy of the same GUID is renumbered), and only then
//! renumbered on its own side (the file stays, the uidlist maps it to the fresh UID), so
//! it is on both replicas at every moment.
//!
//! A folder is merged in rounds: each lists both sides afresh and plans against the same
//! old state, until a round finds nothing to do (at most four). So a UID that a delivery
//! took between the listing and the write (the copy is `Taken`, a renumber refused, the
//! hub's copy of the same GUID arrived meanwhile) is finished as a conflict by the next
//! round instead of leaving the pair diverged until the next merge. A flag write is made
//! only if the message is unchanged since the listing (`unchanged_since`), so a client's
//! STORE made meanwhile is never overwritten (the next round unites both changes). The
//! state saved is from the listing of the last round, taken before its writes: a change a
//! client made while the merge wrote has a higher MODSEQ and counts as a change next
//! time.
//!
//! A folder whose merge did not complete (a peer gone, a placement still failing after the
//! last round) keeps its old state: the next merge repeats the comparison from there. Its
//! changes already made are safe to repeat from the old state: a message copied is then on
//! both; one the client deleted on either side since is in that side's expunge log above
//! the old state's MODSEQ, so it is expunged, not copied back.

use crate::replica::{FlagChange, Listing, Mailbox, Replica, Res};
use crate::state::{FolderState, SyncState, known_ranges};
use postern_mailbox::replica::{FolderInfo, MessageInfo, NewMessage, Placed, is_hub_copy};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Bounds of one merge.
#[derive(Clone, Debug)]
pub struct Options {
    /// Longest wait for a user's lock on either side.
    pub lock_wait: Duration,
    /// Bytes of messages moved in one batch.
    pub batch_bytes: u64,
    /// Messages moved in one batch.
    pub batch_count: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lock_wait: Duration::from_secs(30),
            batch_bytes: 8 << 20,
            batch_count: 256,
        }
    }
}

/// What a merge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Folders whose messages were compared (not skipped as unchanged).
    pub folders_merged: usize,
    /// Messages copied to the side that lacked them.
    pub copied: usize,
    /// Expunges carried over.
    pub expunged: usize,
    /// Flag changes carried over.
    pub flags: usize,
    /// Messages added again under a fresh UID.
    pub conflicts: usize,
    /// Folders created, renamed, deleted or given another UIDVALIDITY; subscriptions.
    pub folder_ops: usize,
    /// `folder: reason` of folders whose merge did not complete.
    pub failed: Vec<String>,
}

impl Report {
    /// Whether anything was changed on either side.
    pub fn changed(&self) -> bool {
        self.copied + self.expunged + self.flags + self.conflicts + self.folder_ops > 0
    }
}

/// Merges one user's mailbox on `a` (normally this server) and `b` (a peer). Takes both
/// user locks in node-name order, so two replicators merging the same user at once wait
/// for each other instead of deadlocking. `Err` when nothing could be done (a side
/// unreachable, a lock not had); per-folder failures are in [`Report::failed`].
pub fn sync_user(a: &mut dyn Replica, b: &mut dyn Replica, opt: &Options) -> Res<Report> {
    if a.node() == b.node() {
        return Err(format!("both replicas are named {:?}: set replica_name", a.node()));
    }
    let locked = if a.node() < b.node() {
        a.lock(opt.lock_wait).and_then(|()| b.lock(opt.lock_wait))
    } else {
        b.lock(opt.lock_wait).and_then(|()| a.lock(opt.lock_wait))
    };
    let r = locked.and_then(|()| sync_locked(a, b, opt));
    a.unlock();
    b.unlock();
    r
}

/// Which replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

fn pick<'x>(side: Side, a: &'x mut dyn Replica, b: &'x mut dyn Replica) -> (&'x mut dyn Replica, &'x mut dyn Replica) {
    match side {
        Side::A => (a, b),
        Side::B => (b, a),
    }
}

fn find<'m>(m: &'m Mailbox, name: &str) -> Option<&'m FolderInfo> {
    m.folders.iter().find(|f| f.name == name)
}

fn sync_locked(a: &mut dyn Replica, b: &mut dyn Replica, opt: &Options) -> Res<Report> {
    let (na, nb) = (a.node().to_string(), b.node().to_string());
    let sa = a.load_state(&nb)?;
    let sb = b.load_state(&na)?.map(|s| s.swapped());
    let mut st = match (sa, sb) {
        (Some(x), Some(y)) if y.generation > x.generation => y,
        (Some(x), _) => x,
        (None, Some(y)) => y,
        (None, None) => SyncState::default(),
    };
    let mut report = Report::default();
    let mut ma = a.mailbox()?;
    let mut mb = b.mailbox()?;
    // renames first, one at a time (a rename moves the folders below too)
    for _ in 0..64 {
        let Some((side, old, new)) = find_rename(&st, &ma, &mb) else {
            break;
        };
        let (here, _) = pick(side, a, b);
        if let Err(e) = here.rename_folder(&old, &new) {
            report.failed.push(format!("{old}: rename to {new}: {e}"));
            break;
        }
        report.folder_ops += 1;
        let prefix = format!("{old}.");
        let moved: Vec<String> = st
            .folders
            .keys()
            .filter(|k| **k == old || k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in moved {
            if let Some(f) = st.folders.remove(&k) {
                st.folders.insert(format!("{new}{}", &k[old.len()..]), f);
            }
        }
        ma = a.mailbox()?;
        mb = b.mailbox()?;
    }
    let winner = winner(a.node(), b.node(), ma.alone, mb.alone);
    let names: BTreeSet<String> = ma.folders.iter().chain(&mb.folders).map(|f| f.name.clone()).collect();
    let mut folders = BTreeMap::new();
    for name in names {
        let old = st.folders.get(&name);
        let (fa, fb) = (find(&ma, &name), find(&mb, &name));
        match folder_step(a, b, &name, fa, fb, old, winner, opt, &mut report) {
            Ok(Some(fs)) => {
                folders.insert(name, fs);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("{name}: merge with {nb} incomplete: {e}");
                report.failed.push(format!("{name}: {e}"));
                if let Some(o) = old {
                    folders.insert(name, o.clone());
                }
            }
        }
    }
    let subscriptions = merge_subscriptions(a, b, &st.subscriptions, &ma, &mb, &mut report);
    st.generation += 1;
    st.folders = folders;
    st.subscriptions = subscriptions;
    a.save_state(&nb, &st)?;
    b.save_state(&na, &st.swapped())?;
    Ok(report)
}

/// The side whose UIDs a conflict keeps (see the module doc): the one that served alone
/// since the last merge (its peer unreachable), else the pair's primary (the lower
/// `replica_name`, the backend every proxy prefers); `None` when both served alone (a
/// split: a conflict gets fresh UIDs on both).
fn winner(a: &str, b: &str, a_alone: bool, b_alone: bool) -> Option<Side> {
    match (a_alone, b_alone) {
        (true, true) => None,
        (true, false) => Some(Side::A),
        (false, true) => Some(Side::B),
        (false, false) if a < b => Some(Side::A),
        (false, false) => Some(Side::B),
    }
}

/// A folder the state knew, renamed on one side: `(side to rename on, old, new)`.
fn find_rename(st: &SyncState, ma: &Mailbox, mb: &Mailbox) -> Option<(Side, String, String)> {
    for (old, fs) in &st.folders {
        if old == "INBOX" {
            continue;
        }
        let has = |m: &Mailbox| find(m, old).is_some_and(|f| f.uid_validity == fs.uid_validity);
        for (side, here, there) in [(Side::A, ma, mb), (Side::B, mb, ma)] {
            if !has(here) || has(there) {
                continue;
            }
            let renamed = there.folders.iter().find(|f| {
                f.uid_validity == fs.uid_validity
                    && f.name != *old
                    && find(here, &f.name).is_none()
                    && st
                        .folders
                        .get(&f.name)
                        .is_none_or(|s| s.uid_validity != fs.uid_validity)
            });
            if let Some(f) = renamed {
                return Some((side, old.clone(), f.name.clone()));
            }
        }
    }
    None
}

/// One folder name: create, delete, first contact, then the messages. `Ok(None)`: the
/// folder is gone from both.
#[allow(clippy::too_many_arguments)]
fn folder_step(
    a: &mut dyn Replica,
    b: &mut dyn Replica,
    name: &str,
    fa: Option<&FolderInfo>,
    fb: Option<&FolderInfo>,
    old: Option<&FolderState>,
    winner: Option<Side>,
    opt: &Options,
    report: &mut Report,
) -> Res<Option<FolderState>> {
    let mut state = old.cloned();
    match (fa, fb) {
        (Some(x), Some(y)) => {
            // MAILBOXID and the created special uses: the winner's (a folder each side
            // created on its own, or one merged before these were carried)
            let known = old.map(|s| s.uid_validity).filter(|_| name != "INBOX");
            let renewed =
                x.uid_validity != y.uid_validity && known.is_some_and(|k| k == x.uid_validity || k == y.uid_validity);
            let src = winner.unwrap_or(Side::A);
            let (from, to) = if src == Side::A { (x, y) } else { (y, x) };
            if !renewed && ((!from.guid.is_empty() && from.guid != to.guid) || from.special_use != to.special_use) {
                let (_, there) = pick(src, a, b);
                there.set_folder_meta(name, &from.guid, &from.special_use)?;
                report.folder_ops += 1;
            }
            if renewed {
                // deleted and created again on the side whose UIDVALIDITY the state did
                // not know: that new folder wins on both, the old one's messages go
                let (renewed, side) = if known == Some(y.uid_validity) {
                    (x, Side::B)
                } else {
                    (y, Side::A)
                };
                let (stale, _) = pick(side, a, b);
                stale.delete_folder(name)?;
                stale.create_folder(name, renewed.uid_validity)?;
                stale.set_folder_meta(name, &renewed.guid, &renewed.special_use)?;
                report.folder_ops += 2;
                state = None;
            } else if x.uid_validity != y.uid_validity {
                let v = x.uid_validity.min(y.uid_validity);
                if x.uid_validity != v {
                    a.set_uid_validity(name, v)?;
                } else {
                    b.set_uid_validity(name, v)?;
                }
                report.folder_ops += 1;
                state = None;
            } else if let Some(s) = &state
                && s.uid_validity == x.uid_validity
                && s.modseq_mine == x.highest_modseq
                && s.modseq_theirs == y.highest_modseq
            {
                // nothing changed on either side since the last merge
                return Ok(state);
            }
        }
        (Some(x), None) | (None, Some(x)) => {
            let side = if fa.is_some() { Side::A } else { Side::B };
            let (here, there) = pick(side, a, b);
            let known = old.is_some_and(|s| s.uid_validity == x.uid_validity);
            if known && name != "INBOX" {
                here.delete_folder(name)?;
                report.folder_ops += 1;
                return Ok(None);
            }
            there.create_folder(name, x.uid_validity)?;
            if !x.guid.is_empty() || !x.special_use.is_empty() {
                there.set_folder_meta(name, &x.guid, &x.special_use)?;
            }
            report.folder_ops += 1;
            state = None;
        }
        (None, None) => return Ok(None),
    }
    let state = state.filter(|s| fa.is_some_and(|x| x.uid_validity == s.uid_validity));
    report.folders_merged += 1;
    merge_folder(a, b, name, state.as_ref(), winner, opt, report).map(Some)
}

/// Keywords compared without case.
fn same_flags(x: &MessageInfo, y: &MessageInfo) -> bool {
    let set = |m: &MessageInfo| {
        m.keywords
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect::<BTreeSet<_>>()
    };
    x.system == y.system && set(x) == set(y)
}

fn union_flags(x: &MessageInfo, y: &MessageInfo) -> (u8, Vec<String>) {
    let mut kw: Vec<String> = x.keywords.clone();
    for k in &y.keywords {
        if !kw.iter().any(|h| h.eq_ignore_ascii_case(k)) {
            kw.push(k.clone());
        }
    }
    (x.system | y.system, kw)
}

/// New flags for `uid` on a side whose copy had MODSEQ `was` when listed (not made if a
/// client changed it since).
fn change(uid: u32, (system, keywords): (u8, Vec<String>), was: u64) -> FlagChange {
    FlagChange {
        uid,
        system,
        keywords,
        unchanged_since: Some(was),
    }
}

/// A message added again under a fresh UID on both sides.
#[derive(Clone)]
struct ReAdd {
    /// The side whose copy is used.
    src: Side,
    /// Its UID there.
    uid: u32,
    /// The message (flags as wanted).
    msg: MessageInfo,
    /// The other side's copy of the same GUID, expunged there first.
    other_uid: Option<u32>,
    /// The fresh UID.
    fresh: u32,
}

#[derive(Default)]
struct Plan {
    to_b: Vec<MessageInfo>,
    to_a: Vec<MessageInfo>,
    readd: Vec<ReAdd>,
    expunge_a: Vec<u32>,
    expunge_b: Vec<u32>,
    flags_a: Vec<FlagChange>,
    flags_b: Vec<FlagChange>,
    /// UIDs both have and keep.
    common: Vec<u32>,
    /// The loser's adoption of the winner's UIDs.
    adopt: Option<Adopt>,
    /// Changes left for the next round (a UID the loser must first free).
    waiting: usize,
}

/// The side that adopts the other's numbering after a conflict (see [`winner`]): what it
/// changes in one round.
struct Adopt {
    /// The loser.
    side: Side,
    /// Its messages moved: to the winner's UID of the same GUID (`Some`), or out of the way
    /// to a fresh UID above both UIDNEXTs (`None`; moved down the next round).
    moves: Vec<(u32, Option<u32>)>,
    /// The winner's messages it gets under the winner's UIDs, even below its UIDNEXT.
    put: Vec<MessageInfo>,
}

fn other(s: Side) -> Side {
    match s {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

/// The new messages of a conflict planned for winner `w`: every message of the winner keeps
/// its UID, the loser's copy of the same GUID is moved to it (first out of the way when
/// its own UID is wanted, or waiting a round when the winner's UID is still held), the
/// winner's messages the loser lacks are put there under the same UIDs, and the loser's
/// own messages keep their UIDs when those are free on the winner (≥ its UIDNEXT), else
/// get fresh UIDs on both (a new message to the winner's clients).
fn adopt(
    p: &mut Plan,
    w: Side,
    a_new: Vec<MessageInfo>,
    b_new: Vec<MessageInfo>,
    (by_a, by_b): (&BTreeMap<u32, &MessageInfo>, &BTreeMap<u32, &MessageInfo>),
    (ia, ib): (&FolderInfo, &FolderInfo),
    next_fresh: &mut dyn FnMut() -> u32,
) {
    let (w_new, l_new, by_w, by_l, w_next) = match w {
        Side::A => (a_new, b_new, by_a, by_b, ia.next_uid),
        Side::B => (b_new, a_new, by_b, by_a, ib.next_uid),
    };
    let mut l_by_guid: HashMap<String, Vec<MessageInfo>> = HashMap::new();
    for y in l_new {
        l_by_guid.entry(y.guid.clone()).or_default().push(y);
    }
    let (mut pairs, mut w_rest) = (Vec::new(), Vec::new());
    for x in w_new {
        match l_by_guid
            .get_mut(&x.guid)
            .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
        {
            Some(y) => pairs.push((x, y)),
            None => w_rest.push(x),
        }
    }
    let mut l_rest: Vec<MessageInfo> = l_by_guid.into_values().flatten().collect();
    l_rest.sort_by_key(|m| m.uid);
    let wanted: BTreeSet<u32> = pairs
        .iter()
        .map(|(x, _)| x.uid)
        .chain(w_rest.iter().map(|x| x.uid))
        .collect();
    let mut ad = Adopt {
        side: other(w),
        moves: Vec::new(),
        put: Vec::new(),
    };
    for (x, y) in pairs {
        if !by_l.contains_key(&x.uid) {
            ad.moves.push((y.uid, Some(x.uid)));
        } else if wanted.contains(&y.uid) {
            ad.moves.push((y.uid, None));
            p.waiting += 1;
        } else {
            // the winner's UID is held there by a message that leaves this round
            p.waiting += 1;
        }
    }
    for x in w_rest {
        if by_l.contains_key(&x.uid) {
            p.waiting += 1;
        } else {
            ad.put.push(x);
        }
    }
    for y in l_rest {
        if !by_w.contains_key(&y.uid) && y.uid >= w_next {
            match w {
                Side::A => p.to_a.push(y),
                Side::B => p.to_b.push(y),
            }
        } else {
            p.readd.push(ReAdd {
                src: other(w),
                uid: y.uid,
                msg: y,
                other_uid: None,
                fresh: next_fresh(),
            });
        }
    }
    if !ad.moves.is_empty() || !ad.put.is_empty() {
        p.adopt = Some(ad);
    }
}

#[allow(clippy::too_many_arguments)]
fn plan(
    la: &[MessageInfo],
    lb: &[MessageInfo],
    ia: &FolderInfo,
    ib: &FolderInfo,
    st: Option<&FolderState>,
    gone_a: &[(String, u64)],
    gone_b: &[(String, u64)],
    winner: Option<Side>,
) -> Plan {
    let by_a: BTreeMap<u32, &MessageInfo> = la.iter().map(|m| (m.uid, m)).collect();
    let by_b: BTreeMap<u32, &MessageInfo> = lb.iter().map(|m| (m.uid, m)).collect();
    let knows = |u: u32| st.is_some_and(|s| s.knows(u));
    let mut p = Plan::default();
    let (mut a_new, mut b_new) = (Vec::new(), Vec::new());
    let uids: BTreeSet<u32> = by_a.keys().chain(by_b.keys()).copied().collect();
    for u in uids {
        match (by_a.get(&u), by_b.get(&u)) {
            (Some(x), Some(y)) if x.guid == y.guid => {
                p.common.push(u);
                if same_flags(x, y) {
                    continue;
                }
                let ca = st.is_none_or(|s| x.modseq > s.modseq_mine);
                let cb = st.is_none_or(|s| y.modseq > s.modseq_theirs);
                match (ca, cb) {
                    (true, false) => p.flags_b.push(change(u, (x.system, x.keywords.clone()), y.modseq)),
                    (false, true) => p.flags_a.push(change(u, (y.system, y.keywords.clone()), x.modseq)),
                    _ => {
                        let (sys, kw) = union_flags(x, y);
                        let want = MessageInfo {
                            system: sys,
                            keywords: kw.clone(),
                            ..(*x).clone()
                        };
                        if !same_flags(x, &want) {
                            p.flags_a.push(change(u, (sys, kw.clone()), x.modseq));
                        }
                        if !same_flags(y, &want) {
                            p.flags_b.push(change(u, (sys, kw), y.modseq));
                        }
                    }
                }
            }
            (Some(x), Some(y)) => {
                a_new.push((*x).clone());
                b_new.push((*y).clone());
            }
            (Some(x), None) if knows(u) => p.expunge_a.push(x.uid),
            (None, Some(y)) if knows(u) => p.expunge_b.push(y.uid),
            (Some(x), None) => a_new.push((*x).clone()),
            (None, Some(y)) => b_new.push((*y).clone()),
            (None, None) => {}
        }
    }
    // new on one side, but the other side expunged that very message (it was expunged
    // there before any merge, or a hub's second copy came late): expunge it here too. A
    // hub's copy counts whenever its expunge is in the log (no COPY or MOVE makes its
    // name); another message only when expunged since the last merge (an old expunge of
    // the same GUID may be a MOVE out of the folder that a COPY brought back since).
    let guids = |l: &[MessageInfo], going: &[u32]| {
        let going: BTreeSet<u32> = going.iter().copied().collect();
        l.iter()
            .filter(|m| !going.contains(&m.uid))
            .map(|m| m.guid.clone())
            .collect::<BTreeSet<String>>()
    };
    let (has_a, has_b) = (guids(la, &p.expunge_a), guids(lb, &p.expunge_b));
    let dead_in = |gone: &[(String, u64)], since: Option<u64>| -> (BTreeSet<String>, BTreeSet<String>) {
        let all = gone.iter().map(|(g, _)| g.clone()).collect();
        let recent = gone
            .iter()
            .filter(|(_, m)| since.is_none_or(|s| *m > s))
            .map(|(g, _)| g.clone())
            .collect();
        (all, recent)
    };
    let (all_a, recent_a) = dead_in(gone_a, st.map(|s| s.modseq_mine));
    let (all_b, recent_b) = dead_in(gone_b, st.map(|s| s.modseq_theirs));
    // a hub's copy that this same side expunged before is a late duplicate as well
    let dead = |m: &MessageInfo,
                all: &BTreeSet<String>,
                recent: &BTreeSet<String>,
                has: &BTreeSet<String>,
                own: &BTreeSet<String>| {
        !has.contains(&m.guid)
            && (recent.contains(&m.guid) || (is_hub_copy(&m.base) && (all.contains(&m.guid) || own.contains(&m.guid))))
    };
    a_new.retain(|x: &MessageInfo| {
        let d = dead(x, &all_b, &recent_b, &has_b, &all_a);
        if d {
            p.expunge_a.push(x.uid);
        }
        !d
    });
    b_new.retain(|y: &MessageInfo| {
        let d = dead(y, &all_a, &recent_a, &has_a, &all_b);
        if d {
            p.expunge_b.push(y.uid);
        }
        !d
    });
    let mut fresh = ia
        .next_uid
        .max(ib.next_uid)
        .max(la.last().map_or(0, |m| m.uid.saturating_add(1)))
        .max(lb.last().map_or(0, |m| m.uid.saturating_add(1)));
    let mut next_fresh = || {
        let f = fresh;
        fresh = fresh.saturating_add(1);
        f
    };
    if let Some(w) = winner {
        adopt(&mut p, w, a_new, b_new, (&by_a, &by_b), (ia, ib), &mut next_fresh);
        return p;
    }
    // the same GUID new on both sides under different UIDs: one fresh UID
    let mut b_by_guid: HashMap<String, Vec<MessageInfo>> = HashMap::new();
    for y in b_new {
        b_by_guid.entry(y.guid.clone()).or_default().push(y);
    }
    let mut a_rest = Vec::new();
    for x in a_new {
        match b_by_guid
            .get_mut(&x.guid)
            .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
        {
            Some(y) if y.uid != x.uid => {
                let (system, keywords) = union_flags(&x, &y);
                p.readd.push(ReAdd {
                    src: Side::A,
                    uid: x.uid,
                    msg: MessageInfo { system, keywords, ..x },
                    other_uid: Some(y.uid),
                    fresh: next_fresh(),
                });
            }
            Some(y) => {
                // same UID and GUID is handled above; cannot happen
                b_by_guid.entry(y.guid.clone()).or_default().push(y);
                a_rest.push(x);
            }
            None => a_rest.push(x),
        }
    }
    let mut b_rest: Vec<MessageInfo> = b_by_guid.into_values().flatten().collect();
    b_rest.sort_by_key(|m| m.uid);
    for (side, rest, there_next, there) in [
        (Side::A, a_rest, ib.next_uid, &by_b),
        (Side::B, b_rest, ia.next_uid, &by_a),
    ] {
        for m in rest {
            if m.uid >= there_next && !there.contains_key(&m.uid) {
                match side {
                    Side::A => p.to_b.push(m),
                    Side::B => p.to_a.push(m),
                }
            } else {
                p.readd.push(ReAdd {
                    src: side,
                    uid: m.uid,
                    msg: m,
                    other_uid: None,
                    fresh: next_fresh(),
                });
            }
        }
    }
    p
}

/// Splits messages into batches of at most `opt`'s count and bytes (one larger message is
/// a batch alone).
fn batches<T>(items: Vec<T>, size: impl Fn(&T) -> u64, opt: &Options) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut cur: Vec<T> = Vec::new();
    let mut bytes = 0u64;
    for it in items {
        let s = size(&it);
        if !cur.is_empty() && (cur.len() >= opt.batch_count || bytes + s > opt.batch_bytes) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += s;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether a put result means the message is there under `uid`.
fn placed_ok(p: &Placed, uid: u32) -> bool {
    match p {
        Placed::Placed => true,
        Placed::Exists { uid: Some(u) } => *u == uid,
        _ => false,
    }
}

/// Rounds of one folder's merge at most: the first makes the changes, the next ones find
/// what changed meanwhile (a delivery that took a planned UID, a client's flag change) and
/// finish it, until a round finds both sides alike.
const ROUNDS: usize = 6;

impl Plan {
    /// Whether it changes nothing.
    fn is_empty(&self) -> bool {
        self.to_a.is_empty()
            && self.to_b.is_empty()
            && self.readd.is_empty()
            && self.expunge_a.is_empty()
            && self.expunge_b.is_empty()
            && self.flags_a.is_empty()
            && self.flags_b.is_empty()
            && self.adopt.is_none()
            && self.waiting == 0
    }
}

/// Merges one folder in rounds (see [`ROUNDS`]). The state it returns is taken from a
/// listing made *before* the last round's changes (or from the listing that found both
/// alike): a client's change made while the merge wrote to that side has a higher MODSEQ
/// and is seen as a change by the next merge (an own change seen again is harmless: both
/// sides have it). A round whose changes did not all complete (a UID taken meanwhile, a
/// renumber refused) is followed by another, which plans again from fresh listings with the
/// same old state, so the pair is never left diverged by a placement conflict.
fn merge_folder(
    a: &mut dyn Replica,
    b: &mut dyn Replica,
    name: &str,
    st: Option<&FolderState>,
    winner: Option<Side>,
    opt: &Options,
    report: &mut Report,
) -> Res<FolderState> {
    let mut last_problem = None;
    let mut done: Option<FolderState> = None;
    for _ in 0..ROUNDS {
        let Listing {
            info: ia,
            messages: la,
            gone: gone_a,
        } = a.messages(name)?;
        let Listing {
            info: ib,
            messages: lb,
            gone: gone_b,
        } = b.messages(name)?;
        if ia.uid_validity != ib.uid_validity {
            return Err(format!(
                "UIDVALIDITY {} here, {} there",
                ia.uid_validity, ib.uid_validity
            ));
        }
        let st = st.filter(|s| s.uid_validity == ia.uid_validity);
        let p = plan(&la, &lb, &ia, &ib, st, &gone_a, &gone_b, winner);
        drop((la, lb, gone_a, gone_b));
        let state = |common: Vec<u32>| FolderState {
            uid_validity: ia.uid_validity,
            known: known_ranges(common, ia.next_uid.min(ib.next_uid)),
            modseq_mine: ia.highest_modseq,
            modseq_theirs: ib.highest_modseq,
        };
        if p.is_empty() {
            return Ok(state(p.common));
        }
        let (common, problems) = apply(a, b, name, p, opt, report)?;
        match problems.first() {
            None => {
                // complete: one more round only to see both alike (and take the state
                // from there, so the next merge can skip the folder)
                done = Some(state(common));
                last_problem = None;
            }
            Some(first) => {
                tracing::debug!("{name}: merge round incomplete: {first} ({} problems)", problems.len());
                last_problem = Some(format!("{first} ({} problems)", problems.len()));
                done = None;
            }
        }
    }
    match (done, last_problem) {
        (Some(s), _) => Ok(s),
        (None, Some(p)) => Err(p),
        (None, None) => Err("still changing".into()),
    }
}

/// A folder's UIDNEXT on a replica now.
fn next_uid(r: &mut dyn Replica, name: &str) -> Res<u32> {
    r.mailbox()?
        .folders
        .into_iter()
        .find(|f| f.name == name)
        .map(|f| f.next_uid)
        .ok_or_else(|| format!("{name} gone from {}", r.node()))
}

/// Makes the changes of a plan; the UIDs both sides then have, and the problems met.
fn apply(
    a: &mut dyn Replica,
    b: &mut dyn Replica,
    name: &str,
    p: Plan,
    opt: &Options,
    report: &mut Report,
) -> Res<(Vec<u32>, Vec<String>)> {
    let mut incomplete: Vec<String> = Vec::new();
    let mut common = p.common;
    if p.waiting > 0 {
        incomplete.push(format!("{} messages wait for a UID the loser frees", p.waiting));
    }
    let mut used = 0u32;
    // 0. the loser adopts the winner's UIDs: its copies moved (out of the way first when
    // their own UID is wanted), the winner's messages it lacks put under the same UIDs
    if let Some(ad) = p.adopt {
        let (here, there) = pick(ad.side, a, b);
        let mut moves = Vec::with_capacity(ad.moves.len());
        let up = ad.moves.iter().filter(|(_, to)| to.is_none()).count() as u32;
        if up > 0 {
            used = next_uid(here, name)?.max(next_uid(there, name)?);
        }
        for (from, to) in ad.moves {
            let to = to.unwrap_or_else(|| {
                let f = used;
                used = used.saturating_add(1);
                f
            });
            moves.push((from, to));
        }
        if !moves.is_empty() {
            let (done, _) = here.renumber(name, moves.clone(), true)?;
            for ((from, to), ok) in moves.into_iter().zip(done) {
                if ok {
                    report.conflicts += 1;
                } else {
                    incomplete.push(format!("UID {from} not moved to {to}"));
                }
            }
        }
        for batch in batches(ad.put, |m| m.size, opt) {
            let (here, there) = pick(ad.side, a, b);
            let uids: Vec<u32> = batch.iter().map(|m| m.uid).collect();
            let bodies = there.fetch(name, &uids)?;
            let mut msgs = Vec::with_capacity(batch.len());
            for (info, body) in batch.into_iter().zip(bodies) {
                match body {
                    Some(bytes) => msgs.push(NewMessage { info, bytes }),
                    None => incomplete.push(format!("UID {} vanished", info.uid)),
                }
            }
            let uids: Vec<u32> = msgs.iter().map(|m| m.info.uid).collect();
            let (res, _) = here.put(name, msgs, true)?;
            for (uid, r) in uids.into_iter().zip(&res) {
                if placed_ok(r, uid) {
                    common.push(uid);
                    report.copied += 1;
                } else {
                    incomplete.push(format!("UID {uid} not placed: {r:?}"));
                }
            }
        }
    }
    // 1. copies to the side that lacks them, same UID
    for (src, list) in [(Side::A, p.to_b), (Side::B, p.to_a)] {
        for batch in batches(list, |m| m.size, opt) {
            let (from, to) = pick(src, a, b);
            let uids: Vec<u32> = batch.iter().map(|m| m.uid).collect();
            let bodies = from.fetch(name, &uids)?;
            let mut msgs = Vec::with_capacity(batch.len());
            for (info, body) in batch.into_iter().zip(bodies) {
                match body {
                    Some(bytes) => msgs.push(NewMessage { info, bytes }),
                    None => incomplete.push(format!("UID {} vanished", info.uid)),
                }
            }
            let infos: Vec<MessageInfo> = msgs.iter().map(|m| m.info.clone()).collect();
            let (res, _) = to.put(name, msgs, false)?;
            for (info, r) in infos.iter().zip(&res) {
                if placed_ok(r, info.uid) {
                    common.push(info.uid);
                    report.copied += 1;
                } else {
                    incomplete.push(format!("UID {} not placed: {r:?}", info.uid));
                }
            }
        }
    }
    // 2. conflicts: the message is put on the other side under the fresh UID (or the
    // other side's copy of the same GUID is given it), then the source's copy is given it
    // too; no side loses the message on the way
    let mut readd = p.readd;
    readd.sort_by_key(|r| r.fresh);
    for src in [Side::A, Side::B] {
        let group: Vec<ReAdd> = readd.iter().filter(|r| r.src == src).cloned().collect();
        for mut batch in batches(group, |r| r.msg.size, opt) {
            // fresh UIDs from both sides' UIDNEXT as they are now, not as listed: a
            // delivery since the listing would make every planned one taken
            let now = next_uid(a, name)?.max(next_uid(b, name)?).max(used);
            for (r, u) in batch.iter_mut().zip(now..) {
                r.fresh = u;
            }
            used = now.saturating_add(batch.len() as u32);
            let (from, to) = pick(src, a, b);
            // the other side's own copies of the same GUIDs: renumbered there
            let moves: Vec<(u32, u32)> = batch.iter().filter_map(|r| r.other_uid.map(|o| (o, r.fresh))).collect();
            let mut there: BTreeMap<u32, bool> = BTreeMap::new();
            if !moves.is_empty() {
                let (done, _) = to.renumber(name, moves.clone(), false)?;
                for ((_, fresh), ok) in moves.iter().zip(done) {
                    there.insert(*fresh, ok);
                }
            }
            // the others: copied there from the source
            let need: Vec<&ReAdd> = batch.iter().filter(|r| r.other_uid.is_none()).collect();
            if !need.is_empty() {
                let uids: Vec<u32> = need.iter().map(|r| r.uid).collect();
                let bodies = from.fetch(name, &uids)?;
                let mut msgs = Vec::new();
                for (r, body) in need.iter().zip(bodies) {
                    match body {
                        Some(bytes) => msgs.push(NewMessage {
                            info: MessageInfo {
                                uid: r.fresh,
                                ..r.msg.clone()
                            },
                            bytes,
                        }),
                        None => incomplete.push(format!("UID {} vanished", r.uid)),
                    }
                }
                let fresh: Vec<u32> = msgs.iter().map(|n| n.info.uid).collect();
                let (res, _) = to.put(name, msgs, false)?;
                for (u, res) in fresh.into_iter().zip(res) {
                    there.insert(u, placed_ok(&res, u));
                }
            }
            // only what is safely on the other side is renumbered on the source
            let moves: Vec<(u32, u32)> = batch
                .iter()
                .filter(|r| there.get(&r.fresh) == Some(&true))
                .map(|r| (r.uid, r.fresh))
                .collect();
            for r in batch.iter().filter(|r| there.get(&r.fresh) != Some(&true)) {
                incomplete.push(format!("UID {} not placed as {} on the other side", r.uid, r.fresh));
            }
            if moves.is_empty() {
                continue;
            }
            let (done, _) = from.renumber(name, moves.clone(), false)?;
            for ((old, fresh), ok) in moves.into_iter().zip(done) {
                if ok {
                    common.push(fresh);
                    // a pair (the same GUID renumbered on both): the next round gives
                    // both copies the union of their flags, as they are then
                    report.conflicts += 1;
                } else {
                    incomplete.push(format!("UID {old} not renumbered to {fresh}"));
                }
            }
        }
    }
    // 3. expunges, 4. flags
    for (side, uids) in [(Side::A, p.expunge_a), (Side::B, p.expunge_b)] {
        if !uids.is_empty() {
            let (here, _) = pick(side, a, b);
            report.expunged += uids.len();
            here.expunge(name, uids)?;
        }
    }
    for (side, changes) in [(Side::A, p.flags_a), (Side::B, p.flags_b)] {
        for chunk in changes.chunks(2000) {
            let (here, _) = pick(side, a, b);
            report.flags += chunk.len();
            here.set_flags(name, chunk.to_vec())?;
        }
    }
    Ok((common, incomplete))
}

/// Three-way merge of the subscriptions; returns the set both have after.
fn merge_subscriptions(
    a: &mut dyn Replica,
    b: &mut dyn Replica,
    before: &[String],
    ma: &Mailbox,
    mb: &Mailbox,
    report: &mut Report,
) -> Vec<String> {
    let sa: BTreeSet<&String> = ma.subscriptions.iter().collect();
    let sb: BTreeSet<&String> = mb.subscriptions.iter().collect();
    let mut out = Vec::new();
    for n in sa.union(&sb) {
        let (in_a, in_b) = (sa.contains(n), sb.contains(n));
        let was = before.contains(n);
        let keep = if in_a == in_b {
            in_a
        } else {
            // one side changed it since the last merge: that side wins
            let want = !was;
            let r = if in_a != want {
                a.subscribe(n, want)
            } else {
                b.subscribe(n, want)
            };
            match r {
                Ok(()) => report.folder_ops += 1,
                Err(e) => report.failed.push(format!("subscription {n}: {e}")),
            }
            want
        };
        if keep {
            out.push((*n).clone());
        }
    }
    out
}
