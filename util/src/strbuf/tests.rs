use std::fmt::Write as _;
use std::io::Write as _;

use proptest::prelude::*;

use super::*;

#[test]
fn bounded_buf_accepts_up_to_limit_and_refuses_past_it() {
    let mut b = BoundedBuf::new(5);
    b.extend(b"abc").unwrap();
    b.push(b'd').unwrap();
    assert_eq!(b.extend(b"ef"), Err(StrBufError::Overflow { limit: 5, needed: 6 }));
    assert_eq!(b.as_bytes(), b"abcd");
    b.push(b'e').unwrap();
    assert_eq!(b.push(b'f'), Err(StrBufError::Overflow { limit: 5, needed: 6 }));
    assert_eq!(b.as_bytes(), b"abcde");
    assert_eq!(b.remaining(), 0);
    b.clear();
    assert!(b.is_empty());
    assert_eq!(b.capacity_limit(), 5);
}

#[test]
fn bounded_buf_io_write_is_all_or_nothing() {
    let mut b = BoundedBuf::new(4);
    b.write_all(b"ab").unwrap();
    let err = b.write(b"cde").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
    assert_eq!(b.as_bytes(), b"ab");
}

#[test]
fn bounded_string_counts_bytes_not_chars() {
    let mut s = BoundedString::new(3);
    s.push('é').unwrap(); // 2 bytes
    assert_eq!(s.push('€'), Err(StrBufError::Overflow { limit: 3, needed: 5 }));
    s.push('x').unwrap();
    assert_eq!(s.as_str(), "éx");
    assert_eq!(s.len(), 3);
}

#[test]
fn bounded_string_fmt_write_stops_at_limit() {
    let mut s = BoundedString::new(8);
    write!(s, "{}-", 1234).unwrap();
    assert!(write!(s, "{}", 56789).is_err());
    assert_eq!(s.as_str(), "1234-");
    assert_eq!(s.to_string(), "1234-");
}

#[test]
fn printable_escapes_controls_and_non_ascii() {
    assert_eq!(printable(b"ab\\c"), "ab\\\\c");
    assert_eq!(printable(b"a\r\nb\tc"), "a\\r\\nb\\tc");
    assert_eq!(printable(b"\x00\x1b[31m\x7f"), "\\x00\\x1b[31m\\x7f");
    assert_eq!(printable("é".as_bytes()), "\\xc3\\xa9");
}

#[test]
fn printable_bounds_its_output() {
    assert_eq!(printable_bounded(b"abcde", 5), "abcde");
    assert_eq!(printable_bounded(b"abcdef", 5), "ab...");
    assert_eq!(printable_bounded(b"\x00\x00", 7), "\\x00...");
    assert_eq!(printable_bounded(b"\x00\x00", 6), "...");
    assert_eq!(printable_bounded(b"abc", 2), "ab");
    assert_eq!(printable_bounded(b"abc", 0), "");
    let long = vec![0u8; 10_000];
    assert!(printable(&long).len() <= PRINTABLE_MAX);
}

#[test]
fn prefix_and_trim_helpers() {
    assert!(starts_with_ignore_ascii_case(b"MAIL FROM:<a>", b"mail from:"));
    assert!(starts_with_ignore_ascii_case(b"x", b""));
    assert!(!starts_with_ignore_ascii_case(b"MAI", b"mail"));
    assert!(!starts_with_ignore_ascii_case("É".as_bytes(), "é".as_bytes()));
    assert_eq!(strip_prefix_ignore_ascii_case(b"EHLO x", b"ehlo "), Some(&b"x"[..]));
    assert_eq!(strip_prefix_ignore_ascii_case(b"HELO x", b"ehlo "), None);
    assert_eq!(trim_ascii_ws(b" \t a b \r\n"), b"a b");
    assert_eq!(trim_ascii_ws(b"   "), b"");
}

proptest! {
    #[test]
    fn prop_bounded_buf_never_exceeds_limit(limit in 0usize..64, chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..20)) {
        let mut b = BoundedBuf::new(limit);
        let mut model: Vec<u8> = Vec::new();
        for c in &chunks {
            let before = b.as_bytes().to_vec();
            match b.extend(c) {
                Ok(()) => model.extend_from_slice(c),
                Err(StrBufError::Overflow { needed, .. }) => {
                    prop_assert_eq!(needed, before.len() + c.len());
                    prop_assert_eq!(b.as_bytes(), &before[..]);
                }
            }
            prop_assert!(b.len() <= limit);
        }
        prop_assert_eq!(b.as_bytes(), &model[..]);
    }

    #[test]
    fn prop_printable_is_safe_and_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 0usize..400) {
        let p = printable_bounded(&bytes, max);
        prop_assert!(p.len() <= max);
        prop_assert!(p.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        // Without truncation the escaping is reversible.
        if max >= TRUNCATION_MARK.len() && !p.ends_with(TRUNCATION_MARK) {
            prop_assert_eq!(unescape(&p), bytes);
        }
    }
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            match b[i + 1] {
                b'\\' => out.push(b'\\'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b'x' => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                _ => panic!("bad escape"),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}
