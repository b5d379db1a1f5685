//! The TRANSACTION state over a real Maildir in a temporary directory.

use crate::maildrop::{Maildrop, OpenError};
use crate::session::{Action, Security, Session};
use std::path::Path;

/// What the actions send, a streamed message included.
fn text(acts: &mut [Action]) -> String {
    acts.iter_mut()
        .filter_map(|a| match a {
            Action::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Action::Stream(r) => {
                let mut out = Vec::new();
                while !r.done() {
                    r.fill(&mut out).expect("read");
                }
                Some(String::from_utf8_lossy(&out).into_owned())
            }
            _ => None,
        })
        .collect()
}

fn deliver(base: &Path, user: &str, name: &str, bytes: &[u8]) {
    let md = base.join(user);
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(md.join(d)).expect("mkdir");
    }
    std::fs::write(md.join("new").join(name), bytes).expect("write");
}

fn login(base: &Path) -> Session {
    let mut s = Session::new(Security {
        tls: true,
        tls_available: false,
        plaintext_ok: true,
    });
    s.command(b"USER alice");
    s.command(b"PASS pw");
    let md = Maildrop::open(base, "alice").map_err(|_| ()).expect("open");
    let mut acts = s.auth_done(Ok(("alice".into(), md)));
    assert!(text(&mut acts).starts_with("+OK Logged in, 2 messages"));
    s
}

#[test]
fn retr_top_list_dele_rset_quit() {
    let dir = tempfile::tempdir().expect("tempdir");
    deliver(dir.path(), "alice", "1.M1.h", b"Subject: a\n\n.x\nb\n..y\n");
    deliver(dir.path(), "alice", "2.M2.h", b"Subject: b\r\n\r\nno final newline");
    let mut s = login(dir.path());
    assert_eq!(text(&mut s.command(b"STAT")), "+OK 2 56\r\n");
    assert_eq!(text(&mut s.command(b"LIST")), "+OK\r\n1 26\r\n2 30\r\n.\r\n");
    assert_eq!(text(&mut s.command(b"UIDL 2")), "+OK 2 2.M2.h\r\n");
    assert_eq!(
        text(&mut s.command(b"RETR 1")),
        "+OK 26 octets\r\nSubject: a\r\n\r\n..x\r\nb\r\n...y\r\n.\r\n"
    );
    assert_eq!(
        text(&mut s.command(b"TOP 1 1")),
        "+OK\r\nSubject: a\r\n\r\n..x\r\n.\r\n"
    );
    assert_eq!(
        text(&mut s.command(b"RETR 2")),
        "+OK 30 octets\r\nSubject: b\r\n\r\nno final newline\r\n.\r\n"
    );
    assert!(text(&mut s.command(b"RETR 0")).starts_with("-ERR"));
    assert!(text(&mut s.command(b"RETR x")).starts_with("-ERR"));
    assert!(text(&mut s.command(b"TOP 1")).starts_with("-ERR"));
    assert!(text(&mut s.command(b"USER bob")).starts_with("-ERR"));
    assert!(text(&mut s.command(b"DELE 1")).starts_with("+OK"));
    assert!(text(&mut s.command(b"DELE 1")).starts_with("-ERR"), "already deleted");
    assert!(text(&mut s.command(b"RETR 1")).starts_with("-ERR"));
    assert_eq!(text(&mut s.command(b"STAT")), "+OK 1 30\r\n");
    assert!(text(&mut s.command(b"RSET")).starts_with("+OK"));
    assert_eq!(text(&mut s.command(b"STAT")), "+OK 2 56\r\n");
    assert!(text(&mut s.command(b"DELE 2")).starts_with("+OK"));
    // A second session cannot lock the mailbox meanwhile.
    assert!(matches!(Maildrop::open(dir.path(), "alice"), Err(OpenError::InUse)));
    let mut acts = s.command(b"QUIT");
    assert_eq!(text(&mut acts), "+OK Bye (1 messages deleted)\r\n");
    assert!(acts.iter().any(|a| matches!(a, Action::Close)));
    drop(s);
    let md = Maildrop::open(dir.path(), "alice")
        .map_err(|_| ())
        .expect("reopen after the session");
    assert_eq!(md.entries().len(), 1);
    assert_eq!(md.entries()[0].uidl, "1.M1.h");
}

#[test]
fn uidl_is_the_base_name_or_a_stable_hash_of_it() {
    use crate::maildrop::uidl_of;
    assert_eq!(uidl_of("1700000000.M1P1.host,S=12"), "1700000000.M1P1.host,S=12");
    let long = format!("1700000000.M1P1.{},S=12", "h".repeat(80));
    let u = uidl_of(&long);
    assert_eq!(u.len(), 17);
    assert_eq!(u, uidl_of(&long));
    assert_ne!(uidl_of("a b"), "a b");
}
