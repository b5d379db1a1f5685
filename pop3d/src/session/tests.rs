//! The protocol core without sockets.

use super::*;

fn text(acts: &[Action]) -> String {
    acts.iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

fn insecure() -> Session {
    Session::new(Security {
        tls: false,
        tls_available: true,
        plaintext_ok: false,
    })
}

#[test]
fn plaintext_refused_without_tls_and_capa_says_so() {
    let mut s = insecure();
    let capa = text(&s.command(b"CAPA"));
    assert!(capa.contains("STLS\r\n") && !capa.contains("USER\r\n") && capa.ends_with(".\r\n"));
    assert!(text(&s.command(b"USER alice")).starts_with("-ERR [AUTH] Plaintext authentication disallowed"));
    assert!(text(&s.command(b"AUTH PLAIN AGFsaWNlAHB3")).starts_with("-ERR [AUTH] Plaintext"));
    let acts = s.command(b"STLS");
    assert!(text(&acts).starts_with("+OK"));
    assert!(acts.iter().any(|a| matches!(a, Action::StartTls)));
}

#[test]
fn user_pass_and_auth_plain_ask_auth() {
    let mut s = Session::new(Security {
        tls: false,
        tls_available: false,
        plaintext_ok: true,
    });
    assert!(text(&s.command(b"PASS x")).starts_with("-ERR"));
    assert!(text(&s.command(b"USER alice")).starts_with("+OK"));
    let acts = s.command(b"PASS pass word");
    assert!(
        matches!(&acts[..], [Action::Verify { user, password }] if user == "alice" && password.as_str() == "pass word")
    );
    assert!(!s.ready());
    s.auth_done(Err(err("[AUTH] Authentication failed")));
    assert!(s.ready());
    // AUTH PLAIN in two steps: "\0bob\0pw"
    assert_eq!(text(&s.command(b"AUTH PLAIN")), "+ \r\n");
    let acts = s.command(b"AGJvYgBwdw==");
    assert!(matches!(&acts[..], [Action::Verify { user, password }] if user == "bob" && password.as_str() == "pw"));
    s.auth_done(Err(err("x")));
    assert!(text(&s.command(b"AUTH PLAIN !!!")).starts_with("-ERR [AUTH] Invalid base64"));
    assert!(text(&s.command(b"STAT")).starts_with("-ERR"));
    assert!(text(&s.command(b"FOO")).starts_with("-ERR"));
}

#[test]
fn too_many_errors_close() {
    let mut s = insecure();
    let mut closed = false;
    for _ in 0..MAX_ERRORS {
        closed = s.command(b"BOGUS").iter().any(|a| matches!(a, Action::Close));
    }
    assert!(closed);
}

proptest::proptest! {
    /// Any line, in any state before login, gets exactly one reply or one action, and never panics.
    #[test]
    fn arbitrary_lines_never_panic(lines in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 1..20)) {
        let mut s = Session::new(Security { tls: false, tls_available: true, plaintext_ok: true });
        for line in lines {
            if !s.ready() {
                s.auth_done(Err(err("[AUTH] Authentication failed")));
            }
            let acts = s.command(&line);
            proptest::prop_assert!(!acts.is_empty());
        }
    }
}

#[test]
fn utf8_command_capability_and_utf8_names() {
    let mut s = Session::new(Security {
        tls: false,
        tls_available: false,
        plaintext_ok: true,
    });
    let capa = text(&s.command(b"CAPA"));
    assert!(capa.contains("\r\nUTF8 USER\r\n"), "{capa}");
    assert_eq!(text(&s.command(b"UTF8 x")), "-ERR Usage: UTF8\r\n");
    assert_eq!(text(&s.command(b"utf8")), "+OK UTF8 enabled\r\n");
    assert!(s.utf8);
    // UTF-8 names and passwords go to auth as they are; other bytes are refused
    assert!(text(&s.command("USER jürgen".as_bytes())).starts_with("+OK"));
    let acts = s.command("PASS pässwörd ☃".as_bytes());
    assert!(
        matches!(&acts[..], [Action::Verify { user, password }] if user == "jürgen" && password.as_str() == "pässwörd ☃")
    );
    s.auth_done(Err(err("[AUTH] Authentication failed")));
    assert_eq!(
        text(&s.command(b"USER j\xfcrgen")),
        "-ERR Command line is not UTF-8\r\n"
    );
    // without USER (no cleartext here), UTF8 is offered without its USER argument
    let mut s = insecure();
    let capa = text(&s.command(b"CAPA"));
    assert!(capa.contains("\r\nUTF8\r\n") && !capa.contains("UTF8 USER"), "{capa}");
}
