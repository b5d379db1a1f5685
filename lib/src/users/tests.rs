//! Tests of the users file: parsing with line numbers, edits that keep comments, and the
//! atomic 0600 rewrite.

use super::*;

const TEXT: &str =
    "# accounts\n\nalice:$6$salt$hash\nbob:$argon2id$x:1048576\n# trailing comment\ncarol:$y$j9T$s$h:0\n";

#[test]
fn parse_and_print_back() {
    let u = Users::parse(TEXT).unwrap();
    let names: Vec<_> = u.list().map(|u| (u.name.as_str(), u.quota)).collect();
    assert_eq!(names, [("alice", None), ("bob", Some(1_048_576)), ("carol", None)]);
    assert_eq!(u.get("bob").unwrap().hash, "$argon2id$x");
    // `:0` is written back as no quota; everything else is kept byte for byte.
    assert_eq!(u.to_text(), TEXT.replace(":0\n", "\n"));
}

#[test]
fn parse_errors_name_the_line() {
    for (text, line, what) in [
        ("alice\n", 1, "expected NAME:HASH"),
        ("# c\nAlice:$6$x\n", 2, "only a-z"),
        ("\n\n.x:$6$x\n", 3, "must not start"),
        ("alice:$6$x:1:2\n", 1, "too many"),
        ("alice:$6$x:lots\n", 1, "quota"),
        ("alice:\n", 1, "empty"),
        ("alice:$6$x y\n", 1, "white space"),
        ("alice:$6$x\nalice:$6$y\n", 2, "twice"),
    ] {
        let (l, reason) = Users::parse(text).unwrap_err();
        assert_eq!(l, line, "{text:?}");
        assert!(reason.contains(what), "{text:?}: {reason}");
    }
}

#[test]
fn names() {
    for ok in ["a", "alice", "a.b-c_d", "0day", &"x".repeat(64)] {
        assert!(check_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "-a", ".a", "Alice", "a b", "a:b", "a/b", "é", &"x".repeat(65)] {
        assert!(check_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn edits_keep_comments() {
    let mut u = Users::parse(TEXT).unwrap();
    assert!(matches!(u.add("alice", "$6$a", None), Err(UsersError::Exists(_))));
    assert!(matches!(
        u.add("Dave", "$6$a", None),
        Err(UsersError::InvalidName { .. })
    ));
    assert!(matches!(
        u.add("dave", "a:b", None),
        Err(UsersError::InvalidHash { .. })
    ));
    u.add("dave", "$6$d", Some(5)).unwrap();
    u.set_password("alice", "$6$new").unwrap();
    assert!(matches!(
        u.set_password("nobody", "$6$x"),
        Err(UsersError::NoSuchUser(_))
    ));
    u.set_quota("bob", None).unwrap();
    assert_eq!(u.remove("carol").unwrap().name, "carol");
    assert!(matches!(u.remove("carol"), Err(UsersError::NoSuchUser(_))));
    assert_eq!(
        u.to_text(),
        "# accounts\n\nalice:$6$new\nbob:$argon2id$x\n# trailing comment\ndave:$6$d:5\n"
    );
}

#[test]
fn save_is_0600_and_load_reads_it_back() {
    let d = tempfile::tempdir().unwrap();
    let p = path(d.path());
    assert_eq!(Users::load(&p).unwrap(), Users::default());
    std::fs::write(&p, TEXT).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut u = Users::load(&p).unwrap();
    u.add("dave", "$6$d", None).unwrap();
    u.save(&p).unwrap();
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert!(
        std::fs::read_to_string(&p)
            .unwrap()
            .ends_with("carol:$y$j9T$s$h\ndave:$6$d\n")
    );
    assert_eq!(Users::load(&p).unwrap(), u);
    // No temporary left behind.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
}

#[test]
fn load_refuses_symlinks_and_reports_lines() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real");
    std::fs::write(&real, "alice:$6$x\n").unwrap();
    let p = path(d.path());
    std::os::unix::fs::symlink(&real, &p).unwrap();
    let e = Users::load(&p).unwrap_err().to_string();
    assert!(e.contains("symbolic link"), "{e}");
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, "alice:$6$x\nbad line\n").unwrap();
    let e = Users::load(&p).unwrap_err().to_string();
    assert!(e.ends_with("users:2: expected NAME:HASH or NAME:HASH:QUOTA"), "{e}");
    std::fs::create_dir(d.path().join("dir")).unwrap();
    assert!(
        Users::load(&d.path().join("dir"))
            .unwrap_err()
            .to_string()
            .contains("not a regular file")
    );
}
