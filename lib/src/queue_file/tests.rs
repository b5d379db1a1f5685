use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Cursor, Read};

use proptest::prelude::*;

use super::write::LENGTH_PLACEHOLDER;
use super::*;

fn envelope() -> Envelope {
    let mut attributes = BTreeMap::new();
    attributes.insert(attr::CLIENT_ADDR.to_owned(), "192.0.2.7".to_owned());
    attributes.insert(attr::BODY.to_owned(), "8BITMIME".to_owned());
    Envelope {
        queue_id: QueueId::parse("0Rk3Xq1Z9a01b2c3").unwrap(),
        arrival: Arrival {
            secs: 1_790_000_000,
            micros: 123_456,
        },
        sender: "alice@example.test".to_owned(),
        attributes,
    }
}

fn rcpt(address: &str) -> RecipientSpec {
    RecipientSpec {
        address: address.to_owned(),
        orcpt: None,
        notify: Notify::UNSPECIFIED,
    }
}

fn build(env: &Envelope, before: &[RecipientSpec], content: &[&[u8]], after: &[RecipientSpec]) -> Vec<u8> {
    let mut w = QueueFileWriter::new(Cursor::new(Vec::new()), env).unwrap();
    for r in before {
        w.add_recipient(r).unwrap();
    }
    for c in content {
        w.write_content(c).unwrap();
    }
    for r in after {
        w.add_recipient(r).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn sample() -> Vec<u8> {
    build(
        &envelope(),
        &[rcpt("bob@example.test")],
        &[b"Subject: hi\n\nbody\n"],
        &[],
    )
}

fn parse(bytes: &[u8]) -> Result<(QueueFile, Vec<u8>), QueueFileError> {
    QueueFile::read_all(Cursor::new(bytes), &Limits::default())
}

/// A raw record, for hand-made files.
fn rec(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn header_rec(version: u16) -> Vec<u8> {
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&version.to_be_bytes());
    rec(b'H', &p)
}

fn rcpt_payload(status: u8, notify: u8, addr: &[u8], orcpt: &[u8]) -> Vec<u8> {
    let mut p = vec![status, notify];
    p.extend_from_slice(&(addr.len() as u32).to_be_bytes());
    p.extend_from_slice(addr);
    p.extend_from_slice(orcpt);
    p
}

/// A valid file assembled from raw records, with `edit` applied to the record list.
fn raw_file(edit: impl FnOnce(&mut Vec<Vec<u8>>)) -> Vec<u8> {
    let mut time = 1_790_000_000u64.to_be_bytes().to_vec();
    time.extend_from_slice(&5u32.to_be_bytes());
    let mut recs = vec![
        header_rec(1),
        rec(b'I', b"0Rk3Xq1Z9a01b2c3"),
        rec(b'T', &time),
        rec(b'S', b""),
        rec(b'R', &rcpt_payload(b'P', 0, b"bob@example.test", b"")),
        rec(b'M', b"content"),
        rec(b'E', b""),
    ];
    edit(&mut recs);
    recs.concat()
}

#[test]
fn round_trip_with_streamed_content_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let env = envelope();
    let file = File::create(&path).unwrap();
    let mut w = QueueFileWriter::new(BufWriter::new(file), &env).unwrap();
    w.add_recipient(&RecipientSpec {
        address: "bob@example.test".into(),
        orcpt: Some("rfc822;bob@example.test".into()),
        notify: Notify::new(true, true, false),
    })
    .unwrap();
    for _ in 0..1000 {
        w.write_content(b"line of text\n").unwrap();
    }
    w.write_content(b"\0binary\r\n").unwrap();
    w.add_recipient(&rcpt("carol@example.test")).unwrap();
    assert_eq!(w.recipient_count(), 2);
    w.finish().unwrap().into_inner().unwrap().sync_all().unwrap();

    let qf = QueueFile::read(File::open(&path).unwrap()).unwrap();
    assert_eq!(qf.version, FORMAT_VERSION);
    assert_eq!(qf.envelope, env);
    assert_eq!(qf.recipients.len(), 2);
    assert_eq!(qf.recipients[0].spec.orcpt.as_deref(), Some("rfc822;bob@example.test"));
    assert!(qf.recipients[0].spec.notify.success() && qf.recipients[0].spec.notify.failure());
    assert_eq!(qf.recipients[1].spec.address, "carol@example.test");
    assert_eq!(qf.recipients[1].handle.index(), 1);
    assert!(qf.recipients.iter().all(|r| r.status == RecipientStatus::Pending));
    assert_eq!(qf.content_len(), 13 * 1000 + 9);
    let mut content = Vec::new();
    qf.content_reader(File::open(&path).unwrap())
        .unwrap()
        .read_to_end(&mut content)
        .unwrap();
    assert_eq!(content.len() as u64, qf.content_len());
    assert!(content.ends_with(b"\0binary\r\n"));
    let range = qf.content_range();
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(&raw[range.start as usize..range.end as usize], &content[..]);
}

#[test]
fn mark_done_is_persisted_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let bytes = build(
        &envelope(),
        &[rcpt("a@x.test"), rcpt("b@x.test")],
        &[b"m\n"],
        &[rcpt("c@x.test")],
    );
    std::fs::write(&path, &bytes).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let qf = QueueFile::read(&file).unwrap();
    mark_done(&file, &qf.recipients[1].handle, RecipientStatus::Delivered).unwrap();
    mark_done(&file, &qf.recipients[2].handle, RecipientStatus::Bounced).unwrap();
    drop(file);

    let again = QueueFile::read(File::open(&path).unwrap()).unwrap();
    let statuses: Vec<_> = again.recipients.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![
            RecipientStatus::Pending,
            RecipientStatus::Delivered,
            RecipientStatus::Bounced
        ]
    );
    assert!(!again.all_done());
    let file = OpenOptions::new().write(true).read(true).open(&path).unwrap();
    mark_done(&file, &again.recipients[0].handle, RecipientStatus::Discarded).unwrap();
    assert!(QueueFile::read(&file).unwrap().all_done());
    // The file is the same length; only status bytes changed.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes.len() as u64);
}

#[test]
fn mark_done_refuses_stale_handles_and_append_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    std::fs::write(&path, sample()).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let qf = QueueFile::read(&file).unwrap();
    for offset in [0, 5, 9, 10, 1 << 40] {
        let h = RecipientHandle {
            index: 0,
            status_offset: offset,
        };
        assert!(
            matches!(
                mark_done(&file, &h, RecipientStatus::Delivered),
                Err(QueueFileError::StaleHandle { .. })
            ),
            "{offset}"
        );
    }
    let appending = OpenOptions::new().append(true).open(&path).unwrap();
    assert!(matches!(
        mark_done(&appending, &qf.recipients[0].handle, RecipientStatus::Delivered),
        Err(QueueFileError::InvalidInput(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), sample());
}

#[test]
fn envelope_only_file_has_empty_content() {
    let bytes = build(&envelope(), &[rcpt("a@x.test")], &[], &[]);
    let (qf, content) = parse(&bytes).unwrap();
    assert_eq!(qf.content_len(), 0);
    assert!(content.is_empty());
}

#[test]
fn writer_refuses_what_the_reader_would() {
    let mut env = envelope();
    env.sender = "evil\r\nRCPT TO:<x>".into();
    assert!(matches!(
        QueueFileWriter::new(Cursor::new(Vec::new()), &env),
        Err(QueueFileError::InvalidInput(_))
    ));
    let mut env = envelope();
    env.attributes.insert("Bad Key".into(), "v".into());
    assert!(matches!(
        QueueFileWriter::new(Cursor::new(Vec::new()), &env),
        Err(QueueFileError::InvalidInput(_))
    ));
    let mut env = envelope();
    env.arrival.micros = 1_000_000;
    assert!(QueueFileWriter::new(Cursor::new(Vec::new()), &env).is_err());

    let mut w = QueueFileWriter::new(Cursor::new(Vec::new()), &envelope()).unwrap();
    assert!(w.add_recipient(&rcpt("")).is_err());
    assert!(
        w.add_recipient(&RecipientSpec {
            orcpt: Some(String::new()),
            ..rcpt("a@x")
        })
        .is_err()
    );
    assert!(w.add_recipient(&rcpt(&"x".repeat(70_000))).is_err());
    w.write_content(b"body").unwrap();
    w.add_recipient(&rcpt("late@x.test")).unwrap();
    assert!(matches!(w.write_content(b"more"), Err(QueueFileError::InvalidInput(_))));

    let w = QueueFileWriter::new(Cursor::new(Vec::new()), &envelope()).unwrap();
    assert!(matches!(w.finish(), Err(QueueFileError::NoRecipients)));
}

#[test]
fn unfinished_file_is_rejected() {
    let mut w = QueueFileWriter::new(Cursor::new(Vec::new()), &envelope()).unwrap();
    w.add_recipient(&rcpt("a@x.test")).unwrap();
    // Content that looks like records, as an attacker would send it.
    let forged = [rec(b'R', &rcpt_payload(b'P', 0, b"victim@x.test", b"")), rec(b'E', b"")].concat();
    w.write_content(&forged).unwrap();
    // The writer "crashes" here: no finish().
    let bytes = w.w_for_tests();
    assert!(bytes.windows(8).any(|w| w == LENGTH_PLACEHOLDER.to_be_bytes()));
    assert!(matches!(parse(&bytes), Err(QueueFileError::Truncated { .. })));
}

#[test]
fn corrupt_files_are_rejected_with_the_right_error() {
    use QueueFileError as E;
    assert!(parse(&raw_file(|_| {})).is_ok());
    type Case = (&'static str, Vec<u8>, fn(&E) -> bool);
    let cases: Vec<Case> = vec![
        ("empty", vec![], |e| matches!(e, E::BadMagic)),
        ("bad magic", raw_file(|r| r[0][1] = b'X'), |e| matches!(e, E::BadMagic)),
        (
            "not a header",
            raw_file(|r| {
                r.remove(0);
            }),
            |e| matches!(e, E::BadMagic),
        ),
        ("version", raw_file(|r| r[0] = header_rec(2)), |e| {
            matches!(e, E::UnsupportedVersion(2))
        }),
        ("unknown type", raw_file(|r| r.insert(4, rec(b'Z', b""))), |e| {
            matches!(e, E::UnknownRecord { kind: b'Z', .. })
        }),
        (
            "no end",
            raw_file(|r| {
                r.pop();
            }),
            |e| matches!(e, E::Truncated { .. }),
        ),
        (
            "end not empty",
            raw_file(|r| *r.last_mut().unwrap() = rec(b'E', b"x")),
            |e| matches!(e, E::BadLength { kind: b'E', .. }),
        ),
        ("trailing", raw_file(|r| r.push(b"x".to_vec())), |e| {
            matches!(e, E::TrailingData { .. })
        }),
        ("length past end", raw_file(|r| r[5][8] = 200), |e| {
            matches!(e, E::Truncated { .. })
        }),
        ("duplicate sender", raw_file(|r| r.insert(4, rec(b'S', b"x@y"))), |e| {
            matches!(e, E::Duplicate { kind: b'S', .. })
        }),
        ("duplicate header", raw_file(|r| r.insert(1, header_rec(1))), |e| {
            matches!(e, E::Duplicate { kind: b'H', .. })
        }),
        ("duplicate content", raw_file(|r| r.insert(6, rec(b'M', b""))), |e| {
            matches!(e, E::Duplicate { kind: b'M', .. })
        }),
        ("sender after content", raw_file(|r| r.insert(6, rec(b'S', b""))), |e| {
            matches!(e, E::Misplaced { kind: b'S', .. })
        }),
        (
            "missing sender",
            raw_file(|r| {
                r.remove(3);
            }),
            |e| matches!(e, E::Missing { kind: b'S' }),
        ),
        (
            "missing content",
            raw_file(|r| {
                r.remove(5);
            }),
            |e| matches!(e, E::Missing { kind: b'M' }),
        ),
        (
            "no recipients",
            raw_file(|r| {
                r.remove(4);
            }),
            |e| matches!(e, E::NoRecipients),
        ),
        ("sender not UTF-8", raw_file(|r| r[3] = rec(b'S', b"\xff@x")), |e| {
            matches!(e, E::BadPayload { kind: b'S', .. })
        }),
        ("sender with NUL", raw_file(|r| r[3] = rec(b'S', b"a\0b")), |e| {
            matches!(e, E::BadPayload { kind: b'S', .. })
        }),
        (
            "bad queue id",
            raw_file(|r| r[1] = rec(b'I', b"../../etc/passwd")),
            |e| matches!(e, E::BadPayload { kind: b'I', .. }),
        ),
        ("short time", raw_file(|r| r[2] = rec(b'T', b"1234")), |e| {
            matches!(e, E::BadLength { kind: b'T', .. })
        }),
        (
            "bad status",
            raw_file(|r| r[4] = rec(b'R', &rcpt_payload(b'?', 0, b"a@x", b""))),
            |e| matches!(e, E::BadPayload { kind: b'R', .. }),
        ),
        (
            "bad notify",
            raw_file(|r| r[4] = rec(b'R', &rcpt_payload(b'P', 9, b"a@x", b""))),
            |e| matches!(e, E::BadPayload { kind: b'R', .. }),
        ),
        (
            "empty address",
            raw_file(|r| r[4] = rec(b'R', &rcpt_payload(b'P', 0, b"", b""))),
            |e| matches!(e, E::BadPayload { kind: b'R', .. }),
        ),
        (
            "address length past payload",
            raw_file(|r| r[4] = rec(b'R', &[b'P', 0, 0, 0, 0, 50, b'a'])),
            |e| matches!(e, E::BadPayload { kind: b'R', .. }),
        ),
        (
            "bad attribute key",
            raw_file(|r| r.insert(4, rec(b'A', &[0, 0, 0, 1, b'K', b'v']))),
            |e| matches!(e, E::BadPayload { kind: b'A', .. }),
        ),
        (
            "huge record",
            raw_file(|r| r.insert(4, rec(b'S', &vec![b'a'; 70_000]))),
            |e| matches!(e, E::BadLength { kind: b'S', .. }),
        ),
    ];
    for (name, bytes, expected) in cases {
        match parse(&bytes) {
            Err(e) => assert!(expected(&e), "{name}: got {e:?}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }
}

#[test]
fn limits_are_enforced() {
    let many: Vec<RecipientSpec> = (0..5).map(|i| rcpt(&format!("r{i}@x.test"))).collect();
    let bytes = build(&envelope(), &many, &[b"x"], &[]);
    let limits = Limits {
        max_recipients: 4,
        ..Limits::default()
    };
    assert!(matches!(
        QueueFile::read_with_limits(Cursor::new(&bytes), &limits),
        Err(QueueFileError::TooMany {
            what: "recipients",
            limit: 4
        })
    ));
    let limits = Limits {
        max_attributes: 1,
        ..Limits::default()
    };
    assert!(matches!(
        QueueFile::read_with_limits(Cursor::new(&bytes), &limits),
        Err(QueueFileError::TooMany {
            what: "attributes",
            limit: 1
        })
    ));
    let limits = Limits {
        max_content_in_memory: 0,
        ..Limits::default()
    };
    assert!(QueueFile::read_all(Cursor::new(&bytes), &limits).is_err());
    assert!(QueueFile::read(Cursor::new(&bytes)).is_ok());
}

fn text_strategy(min: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![any::<char>().prop_filter("text", |c| !c.is_ascii_control()), Just('@')],
        min..20,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn recipient_strategy() -> impl Strategy<Value = RecipientSpec> {
    (text_strategy(1), proptest::option::of(text_strategy(1)), 0u8..=8).prop_map(|(address, orcpt, n)| RecipientSpec {
        address,
        orcpt,
        notify: Notify::from_bits(n).unwrap(),
    })
}

prop_compose! {
    fn envelope_strategy()(micros in 0u64..(1u64 << 52), pid in any::<u32>(), secs in any::<u64>(), us in 0u32..1_000_000,
        sender in text_strategy(0),
        attributes in proptest::collection::btree_map("[a-z0-9_.-]{1,64}", text_strategy(0), 0..5)) -> Envelope {
        Envelope { queue_id: QueueId::from_parts(micros, pid, 0), arrival: Arrival { secs, micros: us }, sender, attributes }
    }
}

proptest! {
    #[test]
    fn prop_round_trip(env in envelope_strategy(),
        before in proptest::collection::vec(recipient_strategy(), 0..4),
        after in proptest::collection::vec(recipient_strategy(), 0..3),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..5)) {
        prop_assume!(!before.is_empty() || !after.is_empty());
        // Recipients "after" need content to come after; with no chunks they land before.
        let chunk_refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        let bytes = build(&env, &before, &chunk_refs, &after);
        let (qf, content) = parse(&bytes).unwrap();
        prop_assert_eq!(&qf.envelope, &env);
        let got: Vec<RecipientSpec> = qf.recipients.iter().map(|r| r.spec.clone()).collect();
        let want: Vec<RecipientSpec> = before.iter().chain(after.iter()).cloned().collect();
        prop_assert_eq!(got, want);
        for (i, r) in qf.recipients.iter().enumerate() {
            prop_assert_eq!(r.handle.index(), i);
            prop_assert_eq!(bytes[r.handle.status_offset() as usize], b'P');
        }
        prop_assert_eq!(content, chunks.concat());
    }

    #[test]
    fn prop_every_truncation_is_an_error(env in envelope_strategy(), r in recipient_strategy(), content in proptest::collection::vec(any::<u8>(), 0..64)) {
        let bytes = build(&env, &[r], &[&content], &[]);
        prop_assert!(parse(&bytes).is_ok());
        for len in 0..bytes.len() {
            prop_assert!(parse(&bytes[..len]).is_err(), "prefix of {} bytes accepted", len);
        }
    }

    #[test]
    fn prop_flipped_bytes_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = sample();
        for (i, v) in &flips {
            let at = i.index(bytes.len());
            bytes[at] ^= v | 1;
        }
        if let Ok((qf, content)) = parse(&bytes) {
            // Whatever parses must be internally consistent.
            prop_assert!(qf.content_range().end <= bytes.len() as u64);
            prop_assert_eq!(content.len() as u64, qf.content_len());
            prop_assert!(!qf.recipients.is_empty());
        }
    }

    #[test]
    fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&bytes);
        let mut prefixed = header_rec(1);
        prefixed.extend_from_slice(&bytes);
        let _ = parse(&prefixed);
    }
}

#[test]
fn routed_copies_read_back_each_with_its_own_done_mark() {
    let mut w = QueueFileWriter::new(Cursor::new(Vec::new()), &envelope()).unwrap();
    w.add_recipient(&rcpt("bob@example.test")).unwrap();
    w.add_routed_recipient(&rcpt("alice@example.test"), Some("smtp:[192.0.2.31]:25"))
        .unwrap();
    w.add_routed_recipient(&rcpt("alice@example.test"), Some("lmtp:[192.0.2.32]:24"))
        .unwrap();
    w.write_content(b"Subject: x\n\nbody\n").unwrap();
    assert!(matches!(
        w.add_routed_recipient(&rcpt("c@example.test"), Some("no route")),
        Err(QueueFileError::InvalidInput(_))
    ));
    let bytes = w.finish().unwrap().into_inner();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    std::fs::write(&path, &bytes).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let qf = QueueFile::read(&f).unwrap();
    let routes: Vec<Option<&str>> = qf.recipients.iter().map(|r| r.route.as_deref()).collect();
    assert_eq!(
        routes,
        [None, Some("smtp:[192.0.2.31]:25"), Some("lmtp:[192.0.2.32]:24")]
    );
    assert_eq!(qf.recipients[2].handle.index(), 2);
    mark_done(&f, &qf.recipients[2].handle, RecipientStatus::Delivered).unwrap();
    let qf = QueueFile::read(File::open(&path).unwrap()).unwrap();
    let status: Vec<RecipientStatus> = qf.recipients.iter().map(|r| r.status).collect();
    assert_eq!(
        status,
        [
            RecipientStatus::Pending,
            RecipientStatus::Pending,
            RecipientStatus::Delivered
        ]
    );
    assert_eq!(qf.recipients[2].route.as_deref(), Some("lmtp:[192.0.2.32]:24"));
    // A file from before routes (no N record) reads as it always did.
    let (old, _) = parse(&sample()).unwrap();
    assert!(old.recipients.iter().all(|r| r.route.is_none()));
}

#[test]
fn misplaced_or_bad_routes_are_refused() {
    use QueueFileError as E;
    let route = || rec(b'N', b"smtp:[192.0.2.31]:25");
    assert_eq!(
        parse(&raw_file(|r| r.insert(5, route()))).unwrap().0.recipients[0]
            .route
            .as_deref(),
        Some("smtp:[192.0.2.31]:25")
    );
    type Case = (&'static str, Vec<u8>, fn(&E) -> bool);
    let cases: Vec<Case> = vec![
        ("route first", raw_file(|r| r.insert(4, route())), |e| {
            matches!(e, E::Misplaced { kind: b'N', .. })
        }),
        (
            "two routes",
            raw_file(|r| {
                r.insert(5, route());
                r.insert(5, route());
            }),
            |e| matches!(e, E::Misplaced { kind: b'N', .. }),
        ),
        ("after content", raw_file(|r| r.insert(6, route())), |e| {
            matches!(e, E::Misplaced { kind: b'N', .. })
        }),
        ("no nexthop", raw_file(|r| r.insert(5, rec(b'N', b"smtp:"))), |e| {
            matches!(e, E::BadPayload { kind: b'N', .. })
        }),
        (
            "bad transport",
            raw_file(|r| r.insert(5, rec(b'N', b"../x:host"))),
            |e| matches!(e, E::BadPayload { kind: b'N', .. }),
        ),
        ("control", raw_file(|r| r.insert(5, rec(b'N', b"smtp:a\nb"))), |e| {
            matches!(e, E::BadPayload { kind: b'N', .. })
        }),
    ];
    for (name, bytes, ok) in cases {
        let e = parse(&bytes).unwrap_err();
        assert!(ok(&e), "{name}: {e:?}");
    }
    assert_eq!(parse_route("smtp:[198.18.0.31]:25"), Some(("smtp", "[198.18.0.31]:25")));
    assert_eq!(parse_route("smtp"), None);
    assert_eq!(parse_route("smtp:a b"), None);
}
