use super::flags::{self, DELETED, FLAGGED, Flags, SEEN};
use super::uidlist::{self, UidList};
use super::*;
use std::fs;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "alice").unwrap();
    (dir, store)
}

fn deliver(store: &Store, name: &str, body: &[u8]) {
    let p = store.root().join("new").join(name);
    fs::write(p, body).unwrap();
}

#[test]
fn new_mailbox_has_special_folders_and_subscriptions() {
    let (_d, store) = store();
    assert_eq!(
        store.list().unwrap(),
        vec!["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
    );
    assert!(store.subscriptions().contains(&"Sent".to_string()));
    assert_eq!(Store::special_use("Trash"), Some("\\Trash"));
}

#[test]
fn flags_round_trip_through_names() {
    let f = Flags::from_info("FSab");
    assert_eq!(f.system, FLAGGED | SEEN);
    assert_eq!(f.keywords, 3);
    assert_eq!(f.to_info(), "FSab");
    assert_eq!(
        flags::split_name("123.M1P2.h,S=5:2,ST"),
        ("123.M1P2.h,S=5", Flags::from_info("ST"))
    );
    assert_eq!(flags::split_name("123.M1P2.h").0, "123.M1P2.h");
}

#[test]
fn uidlist_parses_dovecot_format() {
    let text =
        "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n25020 :a.host,S=1\n25021 W4210 :b.host\nbad line\n";
    let l = UidList::parse(text).unwrap();
    assert_eq!(l.uid_validity, 1275660208);
    assert_eq!(l.next_uid, 25022);
    assert_eq!(
        l.entries,
        vec![(25020, "a.host,S=1".to_string()), (25021, "b.host".to_string())]
    );
    assert!(UidList::parse("garbage\n").is_none());
    assert_eq!(UidList::parse(&l.format()).unwrap(), l);
}

#[test]
fn uidlist_records_appended_past_the_header_count_and_a_cut_last_line_does_not() {
    // Dovecot (and Postern's APPEND) append records without rewriting the header's N
    let text = "3 V7 N3 G00\n1 :a\n2 :b\n3 :c\n4 G0123 :d\n5 :e";
    let l = UidList::parse(text).unwrap();
    let uids: Vec<u32> = l.entries.iter().map(|e| e.0).collect();
    assert_eq!(uids, vec![1, 2, 3, 4], "the line without its end is being written");
    assert_eq!(l.next_uid, 5);
    assert_eq!(l.record_line(4, "d"), "4 G0123 :d\n");
    assert_eq!(UidList::parse(&l.format()).unwrap(), l);
}

#[test]
fn delivery_is_moved_to_cur_and_gets_stable_uids() {
    let (_d, store) = store();
    deliver(&store, "1000.M1P1.host,S=6", b"a\nb\n");
    deliver(&store, "1001.M1P1.host", b"c\r\n");
    let inbox = store.folder("INBOX").unwrap();
    let uids: Vec<u32> = inbox.messages().iter().map(|m| m.uid).collect();
    assert_eq!(uids, vec![1, 2]);
    assert_eq!(inbox.messages()[0].size, 6, "CRLF size of a LF file");
    assert!(fs::read_dir(store.root().join("new")).unwrap().next().is_none());
    let v = inbox.uid_validity();
    drop(inbox);
    let mut again = store.folder("INBOX").unwrap();
    assert_eq!(again.uid_validity(), v);
    assert_eq!(again.messages().iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(again.read(1).unwrap().unwrap(), b"a\r\nb\r\n");
}

#[test]
fn two_views_see_each_others_changes() {
    let (_d, store) = store();
    let mut a = store.folder("INBOX").unwrap();
    let mut b = store.folder("INBOX").unwrap();
    let uid = a
        .append(b"Subject: x\r\n\r\nhi\r\n", Flags::default(), Some(1_000_000_000))
        .unwrap();
    assert_eq!(uid, 1);
    assert!(b.changed());
    b.sync().unwrap();
    assert_eq!(b.messages().len(), 1);
    assert_eq!(b.messages()[0].date, 1_000_000_000);
    b.set_flags(
        uid,
        Flags {
            system: SEEN | DELETED,
            keywords: 0,
        },
    )
    .unwrap();
    a.sync().unwrap();
    assert_eq!(a.get(uid).unwrap().flags.system, SEEN | DELETED);
    // a's stale file name is followed after b renamed it
    assert_eq!(a.expunge(&[uid]).unwrap(), vec![uid]);
    b.sync().unwrap();
    assert!(b.messages().is_empty());
    let uid2 = b.append(b"x\r\n", Flags::default(), None).unwrap();
    assert_eq!(uid2, 2, "UIDs are never reused");
}

#[test]
fn keywords_are_stored_in_dovecot_keywords() {
    let (_d, store) = store();
    let mut a = store.folder("INBOX").unwrap();
    let uid = a.append(b"x\r\n", Flags::default(), None).unwrap();
    let bit = a.keyword_bit("$Junk", true).unwrap().unwrap();
    a.set_flags(
        uid,
        Flags {
            system: 0,
            keywords: bit,
        },
    )
    .unwrap();
    let text = fs::read_to_string(store.root().join("dovecot-keywords")).unwrap();
    assert_eq!(text, "0 $Junk\n");
    let b = store.folder("INBOX").unwrap();
    assert_eq!(b.get(uid).unwrap().flags.imap_names(b.keywords()), vec!["$Junk"]);
    assert!(b.get(uid).unwrap().file.ends_with(":2,a"));
}

#[test]
fn corrupt_uidlist_and_cache_are_rebuilt_without_losing_mail() {
    let (_d, store) = store();
    let mut a = store.folder("INBOX").unwrap();
    for i in 0..5 {
        a.append(format!("m{i}\r\n").as_bytes(), Flags::default(), None)
            .unwrap();
    }
    let v = a.uid_validity();
    fs::write(store.root().join(uidlist::FILE), b"\xff\xfe nonsense").unwrap();
    fs::write(store.root().join(cache::FILE), b"postern-cache 1 V1\nx y z\n").unwrap();
    let b = store.folder("INBOX").unwrap();
    assert_eq!(b.messages().len(), 5);
    assert_ne!(b.uid_validity(), v, "UIDs reassigned: UIDVALIDITY changes");
    assert!(b.messages().iter().all(|m| m.size == 4));
    // a partly damaged list keeps the lines that parse
    let list = uidlist::read(store.root()).unwrap().unwrap();
    let mut text = list.format();
    text.push_str("garbage\n");
    fs::write(store.root().join(uidlist::FILE), text).unwrap();
    let c = store.folder("INBOX").unwrap();
    assert_eq!(c.uid_validity(), b.uid_validity());
    assert_eq!(c.messages().len(), 5);
}

#[test]
fn stale_lock_is_broken() {
    let (_d, store) = store();
    let lock = store.root().join(uidlist::LOCK);
    fs::write(&lock, b"").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    fs::File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    deliver(&store, "1.M1P1.h", b"x\n");
    let f = store.folder("INBOX").unwrap();
    assert_eq!(f.messages().len(), 1);
    assert!(!lock.exists());
}

#[test]
fn copy_and_move_between_folders() {
    let (_d, store) = store();
    let mut inbox = store.folder("INBOX").unwrap();
    let u1 = inbox
        .append(
            b"one\r\n",
            Flags {
                system: SEEN,
                keywords: 0,
            },
            None,
        )
        .unwrap();
    let u2 = inbox.append(b"two\r\n", Flags::default(), None).unwrap();
    let mut trash = store.folder("Trash").unwrap();
    let copied = inbox.copy_to(&[u1], &mut trash).unwrap();
    assert_eq!(copied, vec![(u1, 1)]);
    let moved = inbox.move_to(&[u2], &mut trash).unwrap();
    assert_eq!(moved, vec![(u2, 2)]);
    assert_eq!(inbox.messages().len(), 1);
    assert_eq!(trash.read(1).unwrap().unwrap(), b"one\r\n");
    assert_eq!(trash.read(2).unwrap().unwrap(), b"two\r\n");
    assert!(trash.get(1).unwrap().flags.seen());
}

#[test]
fn folders_create_rename_delete() {
    let (_d, store) = store();
    store.create("Lists").unwrap();
    store.create("Lists.rust").unwrap();
    assert!(matches!(store.create("Lists"), Err(MailboxError::Exists(_))));
    assert!(matches!(store.create("../x"), Err(MailboxError::BadName(_))));
    store.rename("Lists", "Groups").unwrap();
    assert!(store.exists("Groups.rust"));
    assert!(!store.exists("Lists"));
    store.delete("Groups.rust").unwrap();
    assert!(!store.exists("Groups.rust"));
    assert!(matches!(store.delete("inbox"), Err(MailboxError::Inbox(_))));
    store.subscribe("Groups", true).unwrap();
    assert!(store.subscriptions().contains(&"Groups".to_string()));
}

#[test]
fn envelope_cache_survives_reopen_and_headers_read_alone() {
    let (_d, store) = store();
    deliver(&store, "1000.M1P1.host", b"Subject: a b\nX: y\n\nbody\n");
    let mut a = store.folder("INBOX").unwrap();
    assert_eq!(a.read_header(1).unwrap().unwrap(), b"Subject: a b\r\nX: y\r\n\r\n");
    assert!(a.envelopes().is_empty());
    a.set_envelope(1, b"(NIL \"a b\" %\r\n)");
    a.save_cache();
    let mut b = store.folder("INBOX").unwrap();
    assert_eq!(b.envelopes()[&1], b"(NIL \"a b\" %\r\n)");
    // a later save by another view (new mail measured) keeps the envelope on file
    deliver(&store, "1001.M1P1.host", b"Subject: c\n\nx\n");
    b.sync().unwrap();
    assert_eq!(b.envelopes()[&1], b"(NIL \"a b\" %\r\n)");
    // a damaged line is dropped and computed again, the others stay
    let text = fs::read_to_string(store.root().join(cache::FILE)).unwrap();
    fs::write(store.root().join(cache::FILE), format!("{text}7 x E%zz\n")).unwrap();
    let c = store.folder("INBOX").unwrap();
    assert_eq!(c.messages()[0].size, 28);
    assert_eq!(c.envelopes()[&1], b"(NIL \"a b\" %\r\n)");
}

#[test]
fn rename_inbox_moves_its_messages_and_inbox_stays() {
    let (_d, store) = store();
    deliver(&store, "1000.M1P1.host", b"Subject: one\n\nx\n");
    deliver(&store, "1001.M1P1.host:2,S", b"Subject: two\n\ny\n");
    store.folder("INBOX").unwrap();
    store.rename("INBOX", "Old").unwrap();
    assert!(store.folder("INBOX").unwrap().messages().is_empty());
    let old = store.folder("Old").unwrap();
    let flags: Vec<bool> = old.messages().iter().map(|m| m.flags.seen()).collect();
    assert_eq!(flags, [false, true]);
    assert!(matches!(store.rename("INBOX", "Old"), Err(MailboxError::Exists(_))));
    assert!(matches!(store.rename("Old", "inbox"), Err(MailboxError::Exists(_))));
}

#[test]
fn header_cache_answers_like_the_files_and_learns_new_mail() {
    let (_d, store) = store();
    deliver(&store, "1000.M1P1.host", b"Subject: a\nFrom: x@y\n\nbody\n");
    let mut f = store.folder("INBOX").unwrap();
    let mut hc = f.header_cache();
    let h = f.cached_header(&mut hc, 1).unwrap().unwrap().into_owned();
    assert_eq!(h, f.read_header(1).unwrap().unwrap());
    f.save_header_cache(&hc);
    deliver(&store, "1001.M1P1.host", b"Subject: b\n\nbody\n");
    f.sync().unwrap();
    let mut hc = f.header_cache();
    assert!(hc.contains(1) && !hc.contains(2));
    let h2 = f.cached_header(&mut hc, 2).unwrap().unwrap().into_owned();
    assert_eq!(h2, b"Subject: b\r\n\r\n");
    assert!(f.cached_header(&mut hc, 9).unwrap().is_none());
}

#[test]
fn crlf_conversion_on_output_matches_to_crlf() {
    use super::folder::{extend_crlf, to_crlf};
    for src in [&b"a\nb\r\nc\n"[..], b"\n\n", b"", b"no end", b"\r\n\r\n", b"x\r\r\n\n"] {
        let mut out = b"pre".to_vec();
        extend_crlf(&mut out, src);
        assert_eq!(&out[3..], &to_crlf(src.to_vec())[..]);
        assert_eq!(out.len() as u64 - 3, cache::crlf_size(src));
    }
}

#[test]
fn names_of_the_stores_own_files_are_refused() {
    let (_d, store) = store();
    for name in [
        "subscriptions.tmp",
        "dovecot-keywords.tmp",
        "Dovecot-Keywords.TMP",
        "postern-cache.123.tmp",
        "postern-headers.9.tmp",
        "dovecot-uidlist.tmp",
    ] {
        assert!(reserved(name), "{name}");
        assert!(matches!(store.create(name), Err(MailboxError::BadName(_))), "{name}");
        assert!(!store.root().join(format!(".{name}")).exists(), "{name}");
    }
    for name in ["subscriptions", "tmp", "Projects.tmp", "subscriptions.x"] {
        assert!(!reserved(name), "{name}");
    }
    // RENAME checks every new name, children's too, before it moves anything
    store.create("a").unwrap();
    store.create("a.tmp").unwrap();
    assert!(matches!(
        store.rename("a", "subscriptions"),
        Err(MailboxError::BadName(_))
    ));
    assert!(store.exists("a") && store.exists("a.tmp") && !store.exists("subscriptions"));
    // and SUBSCRIBE and new keywords still work
    store.subscribe("a", true).unwrap();
    assert!(store.subscriptions().contains(&"a".to_string()));
    let mut inbox = store.folder("INBOX").unwrap();
    assert_eq!(inbox.keyword_bit("$Label1", true).unwrap(), Some(1));
}

#[test]
fn usage_counts_every_folder_and_the_quota_is_checked() {
    let (_d, mut store) = store();
    deliver(&store, "1.M1P1.h,S=100", &[b'x'; 100]);
    let mut sent = store.folder("Sent").unwrap();
    sent.append(&[b'y'; 50], Flags::default(), None).unwrap();
    assert_eq!(usage(store.root()).unwrap(), 150);
    assert!(store.room_for(1 << 40).unwrap(), "no quota, always room");
    store.set_quota(Some(200));
    assert_eq!(store.quota(), Some(200));
    assert!(store.room_for(50).unwrap());
    assert!(!store.room_for(51).unwrap());
    store.set_quota(Some(0));
    assert_eq!(store.quota(), None);
    assert_eq!(usage(&store.root().join("nobody")).unwrap(), 0, "no mailbox yet");
}
