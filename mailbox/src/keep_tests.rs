//! Tests of the folder states kept warm after their last handle ([`shared::set_keep`]):
//! a kept state is reused, what another process changed meanwhile is seen when it is
//! opened again (with the inotify watch and with the stamps), and the bounds and the time
//! free it.

use super::flags::{FLAGGED, Flags, SEEN};
use super::shared::{self, Keep};
use super::*;
use std::fs;
use std::time::Duration;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "alice").unwrap();
    (dir, store)
}

/// (uid, flags) of the folder's messages.
fn view(f: &Folder) -> Vec<(u32, Flags)> {
    f.messages().iter().map(|m| (m.uid, m.flags)).collect()
}

fn flags(system: u8) -> Flags {
    Flags { system, keywords: 0 }
}

/// Three messages, a state opened and closed (kept); then another process delivers one,
/// flags one (a rename) and removes one while no handle is open: the next open sees it all,
/// from the kept state.
fn changes_while_kept_are_seen(watched: bool) {
    let (_d, store) = store();
    if watched {
        assert!(shared::enable_watching().is_some());
    }
    shared::set_keep(Keep::for_time(Duration::from_secs(60)));
    let path = store.folder_path("INBOX").unwrap();
    let mut other = store.folder("INBOX").unwrap();
    for i in 0..3 {
        other
            .append(format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(), Flags::default(), None)
            .unwrap();
    }
    drop(other);
    let (h, f) = shared::Handle::open(&path).unwrap();
    assert_eq!(view(&f).len(), 3);
    let generation = f.generation();
    h.put(f);
    drop(h);
    assert_eq!((shared::states(), shared::kept()), (1, 1), "kept, not freed");

    // nothing changed: the same state comes back as it was
    let (h, f) = shared::Handle::open(&path).unwrap();
    assert_eq!(f.generation(), generation);
    assert_eq!(
        (shared::states(), shared::kept()),
        (1, 0),
        "the kept state, in use again"
    );
    h.put(f);
    drop(h);
    // the stamps cannot tell a change within the file system's clock tick
    std::thread::sleep(folder::CLOCK_TICK * 2);

    // another process (a state of its own, not in the registry) and a user's mv
    let mut other = store.folder("INBOX").unwrap();
    let new = other
        .append(b"Subject: 3\r\n\r\ny\r\n", Flags::default(), None)
        .unwrap();
    assert_eq!(other.expunge(&[2]).unwrap(), vec![2]);
    let file = other.get(1).unwrap().file.clone();
    drop(other);
    let cur = store.root().join("cur");
    fs::rename(cur.join(&file), cur.join(file.replace(":2,", ":2,FS"))).unwrap();
    assert_eq!(shared::kept(), 1);

    let (h, f) = shared::Handle::open(&path).unwrap();
    assert_eq!(
        view(&f),
        vec![
            (1, flags(FLAGGED | SEEN)),
            (3, Flags::default()),
            (new, Flags::default())
        ]
    );
    assert_ne!(f.generation(), generation);
    let fresh = store.folder("INBOX").unwrap();
    assert_eq!(view(&f), view(&fresh));
    assert_eq!(f.highest_modseq(), fresh.highest_modseq());
    assert_eq!(
        f.expunged_since(0).map(|e| e.iter().map(|x| x.1).collect::<Vec<_>>()),
        Some(vec![2])
    );
    h.put(f);
}

#[test]
fn changes_made_while_a_state_is_kept_are_seen_by_its_watch() {
    changes_while_kept_are_seen(true);
}

#[test]
fn changes_made_while_a_state_is_kept_are_seen_by_its_stamps() {
    changes_while_kept_are_seen(false);
}

#[test]
fn kept_states_go_after_their_time_and_within_their_bounds() {
    let (d, store) = store();
    store.create("A").unwrap();
    store.create("B").unwrap();
    store.create("C").unwrap();
    let paths: Vec<_> = ["A", "B", "C"].iter().map(|n| store.folder_path(n).unwrap()).collect();
    let open_close = |p: &std::path::Path| {
        let (h, f) = shared::Handle::open(p).unwrap();
        h.put(f);
    };
    // at most two states kept: the oldest goes
    shared::set_keep(Keep {
        states: 2,
        ..Keep::for_time(Duration::from_secs(1))
    });
    for p in &paths {
        open_close(p);
    }
    assert_eq!((shared::states(), shared::kept()), (2, 2));
    // A was the one freed: opening it makes a new state beside the two kept
    let (h, f) = shared::Handle::open(&paths[0]).unwrap();
    assert_eq!((shared::states(), shared::kept()), (3, 2));
    h.put(f);
    drop(h);
    assert_eq!((shared::states(), shared::kept()), (2, 2), "B went for A");
    // a state held by a handle is never freed by time; the kept ones go after it
    let (h, f) = shared::Handle::open(&paths[2]).unwrap();
    h.put(f);
    assert_eq!(shared::expire(), 0, "not yet");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(shared::expire(), 1);
    assert_eq!((shared::states(), shared::kept()), (1, 0));
    drop(h);
    assert_eq!(shared::kept(), 1);
    // by size: a state larger than the bound is not kept
    shared::set_keep(Keep {
        bytes: 1,
        ..Keep::for_time(Duration::from_secs(60))
    });
    assert_eq!(shared::states(), 0, "the new bounds apply at once");
    let mut f = store.folder("INBOX").unwrap();
    f.append(b"Subject: x\r\n\r\nx\r\n", Flags::default(), None).unwrap();
    drop(f);
    open_close(&store.folder_path("INBOX").unwrap());
    assert_eq!(shared::states(), 0);
    // off: freed at once
    shared::set_keep(Keep::default());
    open_close(&paths[1]);
    assert_eq!(shared::states(), 0);
    drop(d);
}

#[test]
fn a_kept_state_is_not_taken_for_another_folder_at_its_path() {
    let (_d, store) = store();
    assert!(shared::enable_watching().is_some());
    shared::set_keep(Keep::for_time(Duration::from_secs(60)));
    store.create("A").unwrap();
    let mut a = store.folder("A").unwrap();
    a.append(b"Subject: a\r\n\r\nx\r\n", Flags::default(), None).unwrap();
    drop(a);
    let path = store.folder_path("A").unwrap();
    let (h, f) = shared::Handle::open(&path).unwrap();
    assert_eq!(f.messages().len(), 1);
    let validity = f.uid_validity();
    h.put(f);
    drop(h);
    assert_eq!(shared::kept(), 1);
    // renamed away and made anew: the state kept for A's path is B's
    store.rename("A", "B").unwrap();
    store.create("A").unwrap();
    let (h, f) = shared::Handle::open(&path).unwrap();
    assert_eq!(f.messages().len(), 0, "the new A is empty");
    assert_ne!(f.uid_validity(), validity);
    h.put(f);
    drop(h);
    // and its watch is the new A's: a message delivered to it is seen
    fs::write(path.join("new").join("1000.M1P1.host"), b"Subject: n\r\n\r\nn\r\n").unwrap();
    let (h, f) = shared::Handle::open(&path).unwrap();
    assert_eq!(f.messages().len(), 1);
    h.put(f);
}
