use super::*;
use proptest::prelude::*;

fn addr(s: &str) -> Address {
    match parse_path(s.as_bytes(), false, true) {
        Ok((Path::Addr(a), rest)) => {
            assert!(rest.is_empty());
            a
        }
        other => panic!("{s}: {other:?}"),
    }
}

fn dest() -> Destinations {
    Destinations::new(&["example.test".into(), "localhost".into()], &["relay.test".into()])
}

#[test]
fn plain_paths() {
    let a = addr("<Bob@Example.TEST.>");
    assert_eq!(a.local, "Bob");
    assert_eq!(a.domain, "example.test");
    assert_eq!(a.to_string(), "Bob@example.test");
    assert_eq!(
        parse_path(b"<> SIZE=10", false, true),
        Ok((Path::Null, &b" SIZE=10"[..]))
    );
    assert_eq!(parse_path(b"<>", false, false), Err(AddressError::NoDomain));
    assert_eq!(parse_path(b"bob@x.test", false, true), Err(AddressError::NoBrackets));
    assert_eq!(parse_path(b"<bob@x.test", false, true), Err(AddressError::NoBrackets));
    assert_eq!(parse_path(b"<bob>", false, true), Err(AddressError::NoDomain));
    assert_eq!(parse_path(b"<a..b@x.test>", false, true), Err(AddressError::BadLocal));
    assert_eq!(parse_path(b"<a b@x.test>", false, true), Err(AddressError::BadLocal));
    assert_eq!(parse_path(b"<a@x..test>", false, true), Err(AddressError::BadDomain));
    assert_eq!(parse_path(b"<a@-x.test>", false, true), Err(AddressError::BadDomain));
}

#[test]
fn quoted_and_literal() {
    let a = addr("<\"john doe\\\"x\"@example.test>");
    assert_eq!(a.local, "john doe\"x");
    assert_eq!(a.to_string(), "\"john doe\\\"x\"@example.test");
    let a = addr("<\"a>b\"@x.test>");
    assert_eq!(a.local, "a>b");
    assert_eq!(addr("<u@[192.0.2.1]>").domain, "[192.0.2.1]");
    assert_eq!(addr("<u@[IPv6:2001:DB8::1]>").domain, "[IPv6:2001:db8::1]");
    assert!(parse_path(b"<u@[300.1.1.1]>", false, true).is_err());
}

#[test]
fn utf8_needs_smtputf8() {
    assert_eq!(
        parse_path("<jörg@bücher.test>".as_bytes(), false, true),
        Err(AddressError::NonAscii)
    );
    let (p, _) = parse_path("<jörg@Bücher.test>".as_bytes(), true, true).unwrap();
    let Path::Addr(a) = p else { panic!() };
    assert_eq!(a.domain, "bücher.test");
    assert!(a.is_utf8());
    assert!(parse_path(b"<\xff@x.test>", true, true).is_err());
}

#[test]
fn limits() {
    let long_local = format!("<{}@x.test>", "a".repeat(65));
    assert_eq!(
        parse_path(long_local.as_bytes(), false, true),
        Err(AddressError::TooLong)
    );
    let long_path = format!("<a@{}.test>", "b".repeat(300));
    assert_eq!(
        parse_path(long_path.as_bytes(), false, true),
        Err(AddressError::TooLong)
    );
}

#[test]
fn relay_tricks_are_not_ours() {
    let d = dest();
    assert_eq!(d.classify(&addr("<bob@example.test>")), Class::Local);
    assert_eq!(d.classify(&addr("<bob@EXAMPLE.test.>")), Class::Local);
    assert_eq!(d.classify(&addr("<bob@relay.test>")), Class::RelayDomain);
    assert_eq!(d.classify(&addr("<bob@foreign.test>")), Class::Foreign);
    assert_eq!(d.classify(&addr("<user%foreign.test@example.test>")), Class::Routed);
    assert_eq!(d.classify(&addr("<foreign.test!user@example.test>")), Class::Routed);
    assert_eq!(d.classify(&addr("<\"user@foreign.test\"@example.test>")), Class::Routed);
    assert_eq!(d.classify(&addr("<\"user%foreign.test\"@Example.Test>")), Class::Routed);
    // Source route: the real destination is the last part.
    let a = addr("<@example.test:user@foreign.test>");
    assert_eq!(a.domain, "foreign.test");
    assert_eq!(d.classify(&a), Class::Foreign);
    let a = addr("<@example.test,@localhost:user@foreign.test>");
    assert_eq!(d.classify(&a), Class::Foreign);
    assert_eq!(
        parse_path(b"<@:user@foreign.test>", false, true),
        Err(AddressError::BadRoute)
    );
    assert_eq!(parse_path(b"<@example.test>", false, true), Err(AddressError::BadRoute));
}

#[test]
fn fqdn() {
    assert!(addr("<a@b.c>").is_fqdn());
    assert!(!addr("<a@localhost>").is_fqdn());
    assert!(addr("<a@[10.0.0.1]>").is_fqdn());
}

proptest! {
    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), utf8: bool, null_ok: bool) {
        let _ = parse_path(&bytes, utf8, null_ok);
        let mut b = b"<".to_vec();
        b.extend_from_slice(&bytes);
        b.push(b'>');
        if let Ok((Path::Addr(a), _)) = parse_path(&b, utf8, null_ok) {
            // Whatever parsed re-parses to the same address.
            let again = format!("<{a}>");
            let (p2, _) = parse_path(again.as_bytes(), true, false).expect("reparse");
            prop_assert_eq!(p2, Path::Addr(a.clone()));
            let _ = dest().classify(&a);
        }
    }

    #[test]
    fn routing_operators_never_local(user in "[a-z]{1,8}", foreign in "[a-z]{1,8}\\.test", op in prop::sample::select(vec!['%', '!', '@']), case in any::<bool>(), dot in any::<bool>()) {
        let local = match op {
            '%' => format!("{user}%{foreign}"),
            '!' => format!("{foreign}!{user}"),
            _ => format!("\"{user}@{foreign}\""),
        };
        let dom = if case { "EXAMPLE.Test" } else { "example.test" };
        let path = format!("<{local}@{dom}{}>", if dot { "." } else { "" });
        let a = addr(&path);
        prop_assert_eq!(dest().classify(&a), Class::Routed);
    }
}

#[test]
fn postmaster_stays_local() {
    let d = Destinations::new(&["example.test".into(), "localhost".into()], &[]);
    assert_eq!(d.postmaster_domain("mail.example.test"), "example.test");
    assert_eq!(d.postmaster_domain("Example.TEST."), "example.test");
    let d = Destinations::new(&["mail.example.test".into(), "example.test".into()], &[]);
    assert_eq!(d.postmaster_domain("mail.example.test"), "mail.example.test");
    let none = Destinations::new(&[], &["relay.test".into()]);
    assert_eq!(none.postmaster_domain("mail.example.test"), "mail.example.test");
}
