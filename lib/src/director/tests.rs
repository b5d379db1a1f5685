//! The ring's promises: deterministic, balanced, about 1/(N+1) moved when a pair is
//! added (and only to it), independent of the list's order; pair entries checked; the
//! exceptions table read, written and reloaded.

use super::*;

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i:03}")).collect()
}

fn counts(ring: &Ring, names: usize, users: &[String]) -> Vec<usize> {
    let mut c = vec![0; names];
    for u in users {
        c[ring.locate(u).expect("a pair")] += 1;
    }
    c
}

#[test]
fn the_hash_is_fixed() {
    // (a change here moves users without their mailboxes)
    assert_eq!(hash64(b""), 0xefd0_1f60_ba99_2926);
    assert_eq!(hash64(b"alice"), 0x3507_d047_a67c_08f4);
    assert_ne!(hash64(b"alice"), hash64(b"alicf"));
    let r1 = Ring::new(&["p1", "p2", "p3"], 128);
    let r2 = Ring::new(&["p1", "p2", "p3"], 128);
    for u in users(300) {
        assert_eq!(r1.locate(&u), r2.locate(&u));
    }
}

#[test]
fn three_pairs_share_300_users_evenly() {
    let names = ["p1", "p2", "p3"];
    let c = counts(&Ring::new(&names, 128), 3, &users(300));
    for n in &c {
        assert!((60..=140).contains(n), "{c:?}");
    }
}

#[test]
fn a_fourth_pair_takes_about_a_quarter_and_nothing_else_moves() {
    let old = Ring::new(&["p1", "p2", "p3"], 128);
    let new = Ring::new(&["p1", "p2", "p3", "p4"], 128);
    let us = users(300);
    let mut moved = 0;
    for u in &us {
        let (a, b) = (old.locate(u), new.locate(u));
        if a != b {
            assert_eq!(b, Some(3), "{u} moved between old pairs");
            moved += 1;
        }
    }
    assert!((60..=90).contains(&moved), "{moved} of 300 moved");
    // and over many more users the share is close to 1/4
    let many = users(20_000);
    let m = many.iter().filter(|u| old.locate(u) != new.locate(u)).count();
    assert!((4_000..6_000).contains(&m), "{m} of 20000");
}

#[test]
fn the_order_of_the_list_does_not_matter() {
    let a = Ring::new(&["p1", "p2", "p3", "p4"], 100);
    let b = Ring::new(&["p3", "p1", "p4", "p2"], 100);
    let names_a = ["p1", "p2", "p3", "p4"];
    let names_b = ["p3", "p1", "p4", "p2"];
    for u in users(1000) {
        let x = names_a[a.locate(&u).expect("a")];
        let y = names_b[b.locate(&u).expect("b")];
        assert_eq!(x, y, "{u}");
    }
}

#[test]
fn pair_entries_are_checked() {
    let p = Pair::parse("p1 imap=127.0.0.1:1143,10.0.0.2:143 pop3=127.0.0.1:110 replicator=h:1190").expect("ok");
    assert_eq!(p.name, "p1");
    assert_eq!(p.imap, ["127.0.0.1:1143", "10.0.0.2:143"]);
    assert_eq!(p.pop3, ["127.0.0.1:110"]);
    assert_eq!(p.replicator, ["h:1190"]);
    for bad in [
        "",
        "p/1 imap=a:1",
        "p1",
        "p1 replicator=a:1",
        "p1 imap=a",
        "p1 imap=a:0",
        "p1 smtp=a:25",
        "p1 imap",
        "p1 imap=a:1,",
    ] {
        assert!(Pair::parse(bad).is_err(), "{bad:?}");
    }
    let twice = vec!["p1 imap=a:1".to_string(), "p1 imap=b:1".to_string()];
    assert!(check_pairs(&twice).is_err());
    assert!(check_pairs(&[]).is_ok());
}

#[test]
fn the_table_overrides_the_ring_and_is_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("director-map");
    let pairs = parse_pairs(&["p1 imap=a:1".into(), "p2 imap=b:1".into()]).expect("pairs");
    let d = Director::new(pairs, 64, Some(map.clone())).expect("director (no file yet)");
    let u = "alice";
    let (ring, src) = d.pair_of(u).expect("pair");
    assert_eq!(src, Source::Ring);
    let other = if ring == 0 { "p2" } else { "p1" };
    set_map_entry(&map, u, Some(other)).expect("set");
    set_map_entry(&map, "bob", Some("p1")).expect("set");
    std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
    assert_eq!(d.pair_of(u).expect("pair"), (1 - ring, Source::Map));
    assert_eq!(d.pair_of("BOB").expect("pair"), (0, Source::Map));
    set_map_entry(&map, "Alice", None).expect("remove");
    let text = std::fs::read_to_string(&map).expect("read");
    assert_eq!(text, "bob p1\n");
    std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
    assert_eq!(d.pair_of(u).expect("pair"), (ring, Source::Ring));
    // a pair that is not configured: an error, never the ring's pair
    std::fs::write(&map, "bob p9\n").expect("write");
    std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
    assert!(d.pair_of("bob").is_err());
    // a broken table keeps the old contents
    std::fs::write(&map, "bob\n").expect("write");
    std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
    assert!(d.pair_of("bob").is_err());
    assert!(
        set_map_entry(&map, "carol", Some("p1")).is_err(),
        "a broken table is not rewritten"
    );
}

#[test]
fn the_table_is_edited_in_batches_and_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("director-map");
    assert_eq!(map_entries(&map).expect("none"), Vec::<(String, String)>::new());
    std::fs::write(&map, "# exceptions\nalice p1\nbob p2\n  p3\ncarol p1\n").expect("write");
    edit_map(
        &map,
        &[
            ("bob".into(), None),
            ("dave".into(), Some("p2".into())),
            ("Carol".into(), Some("p3".into())),
        ],
    )
    .expect("edit");
    assert_eq!(
        std::fs::read_to_string(&map).expect("read"),
        "# exceptions\nalice p1\ndave p2\nCarol p3\n"
    );
    let e = map_entries(&map).expect("entries");
    assert_eq!(
        e,
        [("alice", "p1"), ("dave", "p2"), ("Carol", "p3")].map(|(u, p)| (u.to_string(), p.to_string()))
    );
    assert!(edit_map(&map, &[("eve".into(), Some("bad/name".into()))]).is_err());
    assert!(edit_map(&map, &[("e ve".into(), None)]).is_err());
}

#[test]
fn a_hub_sends_the_copies_to_the_users_pair() {
    let p = Pair::parse("p1 imap=a:1143 smtp=198.18.1.11:25,[2001:db8::1]:25").expect("ok");
    assert_eq!(p.relays(), ["smtp:[198.18.1.11]:25", "smtp:[2001:db8::1]:25"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("director-map");
    let m = crate::config::MainConfig {
        director_pairs: vec![
            "p1 imap=a:1 smtp=10.0.0.11:25,10.0.0.12:25".into(),
            "p2 imap=b:1 smtp=10.0.0.21:25,10.0.0.22:25".into(),
            "p3 imap=c:1".into(),
        ],
        director_user_map: crate::config::ConfigPath(map.display().to_string()),
        ..Default::default()
    };
    let ring = Ring::new(&["p1", "p2", "p3"], m.director_vnodes);
    let us = users(60);
    let on = |pair: usize| {
        us.iter()
            .find(|u| ring.locate(u) == Some(pair))
            .expect("a user")
            .clone()
    };
    let (u1, u3) = (on(0), on(2));
    assert_eq!(
        hub_relays(&m, &format!("{}@Example.test", u1.to_uppercase())).expect("p1"),
        ["smtp:[10.0.0.11]:25", "smtp:[10.0.0.12]:25"]
    );
    // a pair without smtp=: the caller's replica_relays
    assert_eq!(hub_relays(&m, &format!("{u3}@example.test")), None);
    // moved by the table: the new pair, once the table is read again
    set_map_entry(&map, &u1, Some("p2")).expect("set");
    std::thread::sleep(RELOAD_CHECK + std::time::Duration::from_millis(100));
    assert_eq!(
        hub_relays(&m, &format!("{u1}@example.test")).expect("p2"),
        ["smtp:[10.0.0.21]:25", "smtp:[10.0.0.22]:25"]
    );
    // an unknown pair in the table: replica_relays
    set_map_entry(&map, &u1, Some("p9")).expect("set");
    std::thread::sleep(RELOAD_CHECK + std::time::Duration::from_millis(100));
    assert_eq!(hub_relays(&m, &format!("{u1}@example.test")), None);
    // no director
    assert_eq!(
        hub_relays(&crate::config::MainConfig::default(), "x@example.test"),
        None
    );
}
