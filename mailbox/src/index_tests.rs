//! Tests of the folder index through [`Folder`]: rebuilds keep UIDs and GUIDs, MODSEQs only
//! grow, GUIDs follow COPY and MOVE, UIDVALIDITY is new per incarnation, and any
//! interleaving of two processes' changes leaves the index agreeing with the Maildir.

use super::flags::{DELETED, FLAGGED, Flags, SEEN};
use super::*;
use super::{index, shared};
use proptest::prelude::*;
use std::fs;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "alice").unwrap();
    (dir, store)
}

fn seen() -> Flags {
    Flags {
        system: SEEN,
        keywords: 0,
    }
}

/// What a client can see of a folder: (uid, base, flags, guid).
fn facts(f: &Folder) -> Vec<(u32, String, Flags, u128)> {
    f.messages()
        .iter()
        .map(|m| (m.uid, m.base.clone(), m.flags, m.guid))
        .collect()
}

#[test]
fn modseqs_grow_and_expunges_are_logged() {
    let (_d, store) = store();
    let mut a = store.folder("INBOX").unwrap();
    let u1 = a.append(b"one\r\n", Flags::default(), None).unwrap();
    let u2 = a.append(b"two\r\n", Flags::default(), None).unwrap();
    let m0 = a.highest_modseq();
    assert!(m0 > 0);
    a.set_flags(u1, seen()).unwrap();
    let m1 = a.get(u1).unwrap().modseq;
    assert!(m1 > m0 && a.highest_modseq() == m1);
    assert!(a.get(u2).unwrap().modseq < m1);
    a.expunge(&[u2]).unwrap();
    let log = a.expunged_since(m1).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].1, u2);
    assert!(log[0].0 > m1);
    // a second process reads the same from the index
    let b = store.folder("INBOX").unwrap();
    assert_eq!(b.highest_modseq(), a.highest_modseq());
    assert_eq!(b.get(u1).unwrap().modseq, m1);
    assert_eq!(b.expunged_since(m1).unwrap(), a.expunged_since(m1).unwrap());
}

#[test]
fn a_lost_truncated_or_old_index_is_rebuilt_with_the_same_uids_and_guids() {
    let (_d, store) = store();
    let mut a = store.folder("INBOX").unwrap();
    for i in 0..20 {
        a.append(format!("m{i}\r\n").as_bytes(), Flags::default(), None)
            .unwrap();
    }
    a.set_flags(3, seen()).unwrap();
    a.expunge(&[5]).unwrap();
    let truth = facts(&a);
    let high = a.highest_modseq();
    let path = store.root().join(index::FILE);
    let full = fs::read(&path).unwrap();
    // truncated mid-record
    fs::write(&path, &full[..full.len() / 2 + 3]).unwrap();
    let b = store.folder("INBOX").unwrap();
    assert_eq!(facts(&b), truth);
    assert!(b.highest_modseq() > high, "MODSEQs go on from above");
    assert_eq!(b.uid_validity(), a.uid_validity());
    // missing
    fs::remove_file(&path).unwrap();
    let c = store.folder("INBOX").unwrap();
    assert_eq!(facts(&c), truth);
    assert!(c.highest_modseq() > high);
    // an older format version
    fs::write(&path, "postern-index 0 V1\nwhatever\n").unwrap();
    let d = store.folder("INBOX").unwrap();
    assert_eq!(facts(&d), truth);
    // bad checksum in the middle
    let mut bad = fs::read(&path).unwrap();
    let at = bad.len() / 2;
    bad[at] = if bad[at] == b'7' { b'8' } else { b'7' };
    fs::write(&path, bad).unwrap();
    let e = store.folder("INBOX").unwrap();
    assert_eq!(facts(&e), truth);
    // and the rewritten index is whole again
    assert!(!index::read(store.root(), e.uid_validity()).unwrap().damaged);
}

#[test]
fn guids_follow_copy_and_move_and_survive_the_index() {
    let (_d, store) = store();
    let mut inbox = store.folder("INBOX").unwrap();
    let u1 = inbox.append(b"one\r\n", Flags::default(), None).unwrap();
    let u2 = inbox.append(b"two\r\n", Flags::default(), None).unwrap();
    let g1 = inbox.get(u1).unwrap().guid;
    let g2 = inbox.get(u2).unwrap().guid;
    assert_ne!(g1, g2);
    let mut trash = store.folder("Trash").unwrap();
    let c = inbox.copy_to(&[u1], &mut trash).unwrap();
    let m = inbox.move_to(&[u2], &mut trash).unwrap();
    assert_eq!(trash.get(c[0].1).unwrap().guid, g1);
    assert_eq!(trash.get(m[0].1).unwrap().guid, g2);
    assert_ne!(trash.get(c[0].1).unwrap().base, inbox.get(u1).unwrap().base);
    // the uidlist holds them (Dovecot's G field): kept when the index is lost
    let trash_dir = store.folder_path("Trash").unwrap();
    let list = fs::read_to_string(trash_dir.join(uidlist::FILE)).unwrap();
    assert!(list.contains(&format!(" G{}", index::guid_hex(g1))), "{list}");
    fs::remove_file(trash_dir.join(index::FILE)).unwrap();
    let again = store.folder("Trash").unwrap();
    assert_eq!(again.get(c[0].1).unwrap().guid, g1);
    assert_eq!(again.get(m[0].1).unwrap().guid, g2);
}

#[test]
fn delete_and_create_within_a_second_gives_a_new_uidvalidity() {
    let (_d, store) = store();
    store.create("Box").unwrap();
    let v1 = store.folder("Box").unwrap().uid_validity();
    store.delete("Box").unwrap();
    store.create("Box").unwrap();
    let v2 = store.folder("Box").unwrap().uid_validity();
    assert_ne!(v1, v2);
    assert!(v2 > v1);
}

#[test]
fn another_programs_rename_gets_a_new_modseq() {
    let (_d, store) = store();
    let mut a = store.folder("INBOX").unwrap();
    let u = a.append(b"x\r\n", Flags::default(), None).unwrap();
    let before = a.highest_modseq();
    let cur = store.root().join("cur");
    let file = a.get(u).unwrap().file.clone();
    let (base, _) = flags::split_name(&file);
    fs::rename(cur.join(&file), cur.join(format!("{base}:2,FS"))).unwrap();
    std::thread::sleep(folder::CLOCK_TICK);
    assert!(a.changed());
    a.sync().unwrap();
    assert_eq!(a.get(u).unwrap().flags.system, SEEN | FLAGGED);
    assert!(a.get(u).unwrap().modseq > before);
    let generation = a.generation();
    // nothing changed: nothing to do, no new generation
    std::thread::sleep(folder::CLOCK_TICK * 2);
    a.sync().unwrap();
    assert!(!a.changed());
    assert_eq!(a.generation(), generation);
}

#[derive(Clone, Debug)]
enum Op {
    Deliver,
    Flag(bool, usize, u8),
    Expunge(bool, usize),
    Sync(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Deliver),
        (any::<bool>(), 0usize..8, 0u8..16).prop_map(|(w, i, f)| Op::Flag(w, i, f)),
        (any::<bool>(), 0usize..8).prop_map(|(w, i)| Op::Expunge(w, i)),
        any::<bool>().prop_map(Op::Sync),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Two folder states (as two processes hold them) deliver, change flags and expunge
    /// in any order; afterwards both, a fresh state reading the index, and a state that
    /// rebuilt the index from the Maildir alone agree on every message.
    #[test]
    fn two_processes_agree_with_the_maildir(ops in proptest::collection::vec(op(), 1..40)) {
        let (_d, store) = store();
        let mut a = store.folder("INBOX").unwrap();
        let mut b = store.folder("INBOX").unwrap();
        let mut n = 0;
        let mut seen_modseqs: Vec<u64> = Vec::new();
        for op in ops {
            match op {
                Op::Deliver => {
                    n += 1;
                    fs::write(store.root().join("new").join(format!("{}.M{n}P1.host", 1000 + n)), b"x\n").unwrap();
                }
                Op::Flag(w, i, f) => {
                    let s = if w { &mut a } else { &mut b };
                    if let Some(uid) = s.messages().get(i).map(|m| m.uid) {
                        let fl = Flags { system: [0, SEEN, FLAGGED, DELETED][usize::from(f % 4)], keywords: u32::from(f / 4) };
                        s.set_flags(uid, fl).unwrap();
                    }
                }
                Op::Expunge(w, i) => {
                    let s = if w { &mut a } else { &mut b };
                    if let Some(uid) = s.messages().get(i).map(|m| m.uid) {
                        s.expunge(&[uid]).unwrap();
                    }
                }
                Op::Sync(w) => {
                    let s = if w { &mut a } else { &mut b };
                    s.sync().unwrap();
                }
            }
            seen_modseqs.push(a.highest_modseq().max(b.highest_modseq()));
        }
        a.sync().unwrap();
        b.sync().unwrap();
        let fresh = store.folder("INBOX").unwrap();
        prop_assert_eq!(facts(&a), facts(&fresh));
        prop_assert_eq!(facts(&b), facts(&fresh));
        prop_assert_eq!(a.messages(), fresh.messages());
        // MODSEQs never went backwards
        prop_assert!(seen_modseqs.windows(2).all(|w| w[0] <= w[1]));
        fs::remove_file(store.root().join(index::FILE)).unwrap();
        let rebuilt = store.folder("INBOX").unwrap();
        prop_assert_eq!(facts(&rebuilt), facts(&fresh));
        prop_assert!(rebuilt.highest_modseq() > fresh.highest_modseq());
    }
}

#[test]
fn one_shared_state_per_folder_freed_with_its_last_handle() {
    let (_d, store) = store();
    let path = store.folder_path("INBOX").unwrap();
    let (h1, f1) = shared::Handle::open(&path).unwrap();
    h1.put(f1);
    let (h2, f2) = shared::Handle::open(&path).unwrap();
    h2.put(f2);
    assert_eq!(shared::states(), 1);
    let g0 = h1.refresh().unwrap();
    // without a watch: the stamps, once per round
    fs::write(store.root().join("new").join("1000.M1P1.host"), b"x\n").unwrap();
    shared::new_round();
    let g1 = h1.refresh().unwrap();
    assert_ne!(g0, g1);
    assert_eq!(h2.refresh(), Some(g1));
    let f = h2.take().unwrap();
    assert_eq!(f.messages().len(), 1);
    h2.put(f);
    drop(h1);
    assert_eq!(shared::states(), 1);
    drop(h2);
    assert_eq!(shared::states(), 0);
}

#[test]
fn the_watch_marks_a_changed_folder_and_one_sync_serves_all() {
    let (_d, store) = store();
    assert!(shared::enable_watching().is_some());
    let path = store.folder_path("INBOX").unwrap();
    let (h, f) = shared::Handle::open(&path).unwrap();
    h.put(f);
    let g0 = h.refresh().unwrap();
    std::thread::sleep(folder::CLOCK_TICK * 2);
    assert_eq!(h.refresh(), Some(g0), "nothing changed, nothing done");
    assert!(!shared::watch_events());
    fs::write(store.root().join("new").join("1000.M1P1.host"), b"x\n").unwrap();
    assert!(shared::watch_events());
    assert_ne!(h.refresh(), Some(g0));
}

#[test]
fn own_changes_of_a_watched_state_are_not_news_and_others_are() {
    let (_d, store) = store();
    assert!(shared::enable_watching().is_some());
    let path = store.folder_path("INBOX").unwrap();
    fs::write(store.root().join("new").join("1000.M1P1.host"), b"Subject: a\n\nx\n").unwrap();
    let (h, f) = shared::Handle::open(&path).unwrap();
    h.put(f);
    shared::watch_events();
    h.refresh().unwrap();
    // APPEND, a flag change and an expunge by the state itself: no event marks it
    let mut f = h.take().unwrap();
    let a = f.append(b"Subject: b\n\ny\n", Flags::default(), None).unwrap();
    let b = f.append(b"Subject: c\n\nz\n", seen(), Some(1_000_000)).unwrap();
    assert_eq!((a, b), (2, 3));
    assert!(f.set_flags(1, seen()).unwrap());
    assert_eq!(f.expunge(&[a]).unwrap(), vec![a]);
    h.put(f);
    assert!(!shared::watch_events(), "the state's own changes");
    let f = h.take().unwrap();
    assert!(!f.changed());
    let fresh = store.folder("INBOX").unwrap();
    assert_eq!(facts(&f), facts(&fresh));
    assert_eq!(f.highest_modseq(), fresh.highest_modseq());
    let sizes = |f: &Folder| f.messages().iter().map(|m| (m.size, m.date)).collect::<Vec<_>>();
    assert_eq!(sizes(&f), sizes(&fresh));
    assert_eq!(f.get(b).unwrap().date, 1_000_000);
    h.put(f);
    drop(fresh);
    // another state's APPEND (no watch of its own) and a user's rename are news
    let mut other = store.folder("INBOX").unwrap();
    let c = other.append(b"Subject: d\n\nw\n", Flags::default(), None).unwrap();
    assert!(shared::watch_events());
    let mut f = h.take().unwrap();
    assert!(f.changed());
    // the state's next APPEND sees that the uidlist moved on and syncs first
    let d = f.append(b"Subject: e\n\nv\n", Flags::default(), None).unwrap();
    assert_eq!((c, d), (4, 5));
    let file = f.get(1).unwrap().file.clone();
    h.put(f);
    shared::watch_events();
    h.refresh().unwrap();
    let cur = store.root().join("cur");
    fs::rename(cur.join(&file), cur.join(file.replace(":2,S", ":2,FS"))).unwrap();
    assert!(shared::watch_events());
    h.refresh().unwrap();
    let f = h.take().unwrap();
    assert_eq!(f.get(1).unwrap().flags.system, SEEN | FLAGGED);
    let fresh = store.folder("INBOX").unwrap();
    assert_eq!(facts(&f), facts(&fresh));
    h.put(f);
}
