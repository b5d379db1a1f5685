use super::*;

#[test]
fn parses_fields_folding_and_body() {
    let msg = b"From: a@b\r\nSubject: hello\r\n  world\r\nX-Y:z\r\n\r\nbody line\r\n";
    let (h, body) = parse(msg, Limits::default());
    assert_eq!(h.len(), 3);
    assert_eq!(h.fields()[1].name(), "Subject");
    assert_eq!(h.fields()[1].value(), "hello  world");
    assert_eq!(h.fields()[1].text(), "Subject: hello\n  world");
    assert_eq!(h.fields()[2].value(), "z");
    assert_eq!(&msg[body..], b"body line\r\n");
    let mut out = Vec::new();
    h.write_to(&mut out);
    assert_eq!(out, b"From: a@b\nSubject: hello\n  world\nX-Y:z\n");
}

#[test]
fn body_starts_at_a_non_header_line() {
    let (h, body) = parse(b"To: x\nnot a header\nmore\n", Limits::default());
    assert_eq!(h.len(), 1);
    assert_eq!(body, 6);
    let (h, body) = parse(b" leading continuation\n", Limits::default());
    assert!(h.is_empty());
    assert_eq!(body, 0);
    let (h, body) = parse(b"", Limits::default());
    assert!(h.is_empty());
    assert_eq!(body, 0);
    let (h, body) = parse(b"Subject: no newline", Limits::default());
    assert_eq!(h.get("subject").map(Field::value), Some("no newline".into()));
    assert_eq!(body, 19);
}

#[test]
fn too_long_field_becomes_body() {
    let limits = Limits {
        max_field_len: 20,
        max_fields: 3,
    };
    let msg = b"A: 1\nB: 0123456789\n 0123456789\nC: 3\n\nbody\n";
    let (h, body) = parse(msg, limits);
    assert_eq!(h.len(), 1);
    assert_eq!(&msg[body..body + 2], b"B:");
    let msg = b"A: 1\nB: 2\nC: 3\nD: 4\n\nx";
    let (h, body) = parse(msg, limits);
    assert_eq!(h.len(), 3);
    assert_eq!(&msg[body..body + 2], b"D:");
}

#[test]
fn edits() {
    let (mut h, _) = parse(b"To: a\nX: 1\nX: 2\n\n", Limits::default());
    h.change("x", 2, "two").unwrap();
    h.change("X", 1, "").unwrap();
    h.insert(0, Field::new("DKIM-Signature", "v=1;\r\n\tb=abc").unwrap())
        .unwrap();
    h.append(Field::new("Date", "now").unwrap()).unwrap();
    let mut out = Vec::new();
    h.write_to(&mut out);
    assert_eq!(out, b"DKIM-Signature: v=1;\n\tb=abc\nTo: a\nX: two\nDate: now\n");
    assert_eq!(h.size(), out.len());
    assert_eq!(h.remove_all("to"), 1);
    assert!(Field::new("Bad Name", "x").is_err());
    assert!(Field::new("X", "a\nB: smuggled").is_err());
    assert!(Field::new("X", "a\rb").is_err());
}

#[test]
fn a_full_header_still_takes_the_fields_the_mail_system_adds() {
    let limits = Limits {
        max_field_len: 100,
        max_fields: 3,
    };
    let (mut h, body) = parse(b"A: 1\nB: 2\nC: 3\nD: 4\n\nbody\n", limits);
    assert_eq!((h.len(), body), (3, 15), "parsing stops at max_fields; D: is body");
    for i in 0..EDIT_RESERVE {
        let f = Field::new("X-Added", &i.to_string()).expect("field");
        assert!(h.append(f).is_ok(), "edit {i} within the reserve");
    }
    let f = Field::new("X-Added", "one too many").expect("field");
    assert_eq!(h.append(f), Err(HeaderError::TooLarge));
}
