//! `postern user`: accounts in etc/users with argon2id hashes, the password read from stdin,
//! the file rewritten atomically with mode 0600.

mod common;

use common::{Site, entries, mode};
use postern_password as password;

fn hash_of(site: &Site, name: &str) -> String {
    let text = site.read("etc/users");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} not in {text}"));
    line.split(':').nth(1).unwrap().to_string()
}

#[test]
fn add_stores_an_argon2id_hash_in_a_0600_file() {
    let site = Site::new();
    let r = site.run(&["user", "add", "alice"], Some("alice-pw\n"));
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    let text = site.read("etc/users");
    assert!(text.starts_with("alice:$argon2id$"), "{text}");
    assert_eq!(text.lines().count(), 1);
    assert_eq!(mode(&site.path("etc/users")), 0o600);
    let hash = hash_of(&site, "alice");
    assert_eq!(password::verify(b"alice-pw", &hash), Ok(true));
    assert_eq!(password::verify(b"alice-pw\n", &hash), Ok(false));
    assert_eq!(password::verify(b"bob-pw", &hash), Ok(false));
    // The password never shows up anywhere but as a hash.
    assert!(!text.contains("alice-pw"));
    assert_eq!(entries(&site.etc()), ["aliases", "main.toml", "master.toml", "users"]);
}

#[test]
fn duplicate_add_fails_and_leaves_the_file_alone() {
    let site = Site::new();
    assert_eq!(site.run(&["user", "add", "alice"], Some("alice-pw\n")).code, 0);
    let before = site.read("etc/users");
    let r = site.run(&["user", "add", "alice"], Some("other-pw\n"));
    assert_eq!((r.code, r.stderr.as_str()), (1, "postern: user alice already exists\n"));
    assert_eq!(site.read("etc/users"), before);
}

#[test]
fn list_passwd_quota_and_del() {
    let site = Site::new();
    std::fs::write(site.path("etc/users"), "# mailbox accounts\n\n").unwrap();
    assert_eq!(site.run(&["user", "add", "alice"], Some("alice-pw\n")).code, 0);
    assert_eq!(site.run(&["user", "add", "bob", "1048576"], Some("bob-pw\r\n")).code, 0);
    let r = site.run(&["user", "list"], None);
    assert_eq!((r.code, r.stdout.as_str()), (0, "alice\nbob quota=1048576\n"));
    assert_eq!(password::verify(b"bob-pw", &hash_of(&site, "bob")), Ok(true));

    let r = site.run(&["user", "passwd", "alice"], Some("new-pw"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(password::verify(b"new-pw", &hash_of(&site, "alice")), Ok(true));
    assert_eq!(password::verify(b"alice-pw", &hash_of(&site, "alice")), Ok(false));
    let r = site.run(&["user", "passwd", "carol"], Some("x\n"));
    assert_eq!((r.code, r.stderr.as_str()), (1, "postern: no such user carol\n"));

    assert_eq!(site.run(&["user", "quota", "bob", "0"], None).code, 0);
    assert_eq!(site.run(&["user", "list"], None).stdout, "alice\nbob\n");

    let r = site.run(&["user", "del", "alice"], None);
    assert_eq!(r.code, 0, "{r:?}");
    let r = site.run(&["user", "del", "alice"], None);
    assert_eq!((r.code, r.stderr.as_str()), (1, "postern: no such user alice\n"));
    // The comment and blank line are kept.
    let text = site.read("etc/users");
    assert!(text.starts_with("# mailbox accounts\n\nbob:$argon2id$"), "{text}");
    assert_eq!(site.run(&["user", "list"], None).stdout, "bob\n");
    assert_eq!(mode(&site.path("etc/users")), 0o600);
}

#[test]
fn bad_input_is_refused_without_creating_the_file() {
    let site = Site::new();
    for (args, stdin, expect) in [
        (&["user", "add", "alice"][..], Some(""), "postern: empty password"),
        (&["user", "add", "alice"][..], Some("\n"), "postern: empty password"),
        (&["user", "add", "alice"][..], None, "postern: empty password"),
        (
            &["user", "add", "Alice"][..],
            Some("pw\n"),
            "postern: invalid user name \"Alice\"",
        ),
        (
            &["user", "add", ".x"][..],
            Some("pw\n"),
            "postern: invalid user name \".x\"",
        ),
        (
            &["user", "add", "alice", "lots"][..],
            Some("pw\n"),
            "postern: quota \"lots\" is not a number of bytes",
        ),
        (&["user", "add"][..], Some("pw\n"), "postern: usage: postern user"),
        (&["user", "frob", "alice"][..], None, "postern: usage: postern user"),
    ] {
        let r = site.run(args, stdin);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stderr.starts_with(expect), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
    }
    let long = "x".repeat(2000);
    let r = site.run(&["user", "add", "alice"], Some(&long));
    assert!(r.code == 1 && r.stderr.contains("longer than"), "{r:?}");
    assert!(!site.path("etc/users").exists());
    assert_eq!(site.run(&["user", "list"], None).stdout, "");
}

#[test]
fn a_malformed_users_file_is_reported_with_its_line() {
    let site = Site::new();
    std::fs::write(site.path("etc/users"), "# accounts\nalice\n").unwrap();
    let r = site.run(&["user", "list"], None);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        format!(
            "postern: {}:2: expected NAME:HASH or NAME:HASH:QUOTA\n",
            site.path("etc/users").display()
        )
    );
}
