use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

#[test]
fn new_ids_are_well_formed_and_decode_their_time() {
    let before = SystemTime::now();
    let id = QueueId::new();
    let after = SystemTime::now();
    assert_eq!(id.as_str().len(), QUEUE_ID_LEN);
    assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(QueueId::parse(id.as_str()), Ok(id));
    // The time field may run ahead of the clock by the number of IDs made in this
    // process within the same microseconds; allow a generous second.
    assert!(id.timestamp() + Duration::from_secs(1) >= before);
    assert!(id.timestamp() <= after + Duration::from_secs(1));
    assert_eq!(id.pid(), std::process::id());
}

#[test]
fn from_parts_layout() {
    let id = QueueId::from_parts(0, 0, 0);
    assert_eq!(id.as_str(), "0000000000000000");
    let id = QueueId::from_parts(61, 62, 63);
    assert_eq!(id.as_str(), "00000000z0010011");
    // from_parts reduces each field modulo its range.
    let id = QueueId::from_parts(1_000_000, 14_776_336 + 5, 238_328);
    assert_eq!(id.pid(), 5);
    assert_eq!(id.timestamp_micros(), 1_000_000);
}

#[test]
fn parse_rejects_bad_input() {
    assert_eq!(QueueId::parse(""), Err(QueueIdError::BadLength(0)));
    assert_eq!(QueueId::parse("0000000000000000a"), Err(QueueIdError::BadLength(17)));
    assert_eq!(QueueId::parse("00000000000000/0"), Err(QueueIdError::BadChar(14)));
    assert_eq!(QueueId::parse("000000000000000\n"), Err(QueueIdError::BadChar(15)));
    assert_eq!(QueueId::parse("..00000000000000"), Err(QueueIdError::BadChar(0)));
    // 16 bytes but not 16 ASCII characters.
    assert_eq!(QueueId::parse("éé000000000000"), Err(QueueIdError::BadChar(0)));
}

#[test]
fn serde_is_a_validated_string() {
    let id = QueueId::from_parts(123_456_789, 42, 7);
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, format!("\"{id}\""));
    assert_eq!(serde_json::from_str::<QueueId>(&json).unwrap(), id);
    assert!(serde_json::from_str::<QueueId>("\"../../etc/passwd\"").is_err());
    assert!(serde_json::from_str::<QueueId>("42").is_err());
}

#[test]
fn hash_dir_uses_fast_changing_digits() {
    let id = QueueId::parse("0123456789ABCDEF").unwrap();
    assert_eq!(id.hash_dir(0), "");
    assert_eq!(id.hash_dir(1), "8");
    assert_eq!(id.hash_dir(2), "8/7");
    assert_eq!(id.hash_dir(99), "8/7/6/5");
    // Consecutive microseconds land in different directories.
    let dirs: HashSet<String> = (0..62).map(|t| QueueId::from_parts(t, 1, 1).hash_dir(1)).collect();
    assert_eq!(dirs.len(), 62);
}

#[test]
fn ids_made_in_sequence_sort_in_order() {
    let ids: Vec<QueueId> = (0..10_000).map(|_| QueueId::new()).collect();
    for pair in ids.windows(2) {
        assert!(pair[0].as_str() < pair[1].as_str(), "{:?} !< {:?}", pair[0], pair[1]);
        assert!(pair[0].timestamp_micros() < pair[1].timestamp_micros());
    }
}

#[test]
fn ids_from_four_threads_are_distinct() {
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| (0..25_000).map(|_| QueueId::new()).collect::<Vec<_>>()))
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        for id in h.join().unwrap() {
            assert!(all.insert(id), "duplicate {id}");
        }
    }
    assert_eq!(all.len(), 100_000);
}

proptest! {
    #[test]
    fn prop_parse_display_round_trip(micros in 0u64..13_537_086_546_263_552, pid in 0u32..14_776_336, seq in 0u32..238_328) {
        let id = QueueId::from_parts(micros, pid, seq);
        let shown = format!("{id}");
        prop_assert_eq!(QueueId::parse(&shown), Ok(id));
        prop_assert_eq!(id.timestamp_micros(), micros);
        prop_assert_eq!(id.pid(), pid);
    }

    #[test]
    fn prop_string_order_is_time_order(a in 0u64..13_537_086_546_263_552, b in 0u64..13_537_086_546_263_552, pa in any::<u32>(), pb in any::<u32>()) {
        let (x, y) = (QueueId::from_parts(a, pa, 0), QueueId::from_parts(b, pb, 0));
        if a < b {
            prop_assert!(x.as_str() < y.as_str());
            prop_assert!(x < y);
        }
    }

    #[test]
    fn prop_parse_never_panics_and_accepts_only_valid(s in ".{0,20}") {
        match QueueId::parse(&s) {
            Ok(id) => {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert!(s.len() == QUEUE_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()));
            }
            Err(_) => prop_assert!(!(s.len() == QUEUE_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()))),
        }
    }
}
