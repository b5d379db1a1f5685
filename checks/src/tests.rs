use super::*;

fn table(text: &str) -> Table {
    Table::parse(Path::new("t"), text).unwrap()
}

#[test]
fn first_match_wins_case_insensitive_by_default() {
    let t = table(
        "# comment\n\n/^Subject: .*(viagra)/ REJECT no $1 here\n/^subject:/ WARN subject seen\n/^X-Case: A/i HOLD\n",
    );
    assert_eq!(t.len(), 3);
    assert_eq!(
        t.check("Subject: buy VIAGRA now").action,
        Action::Reject("no VIAGRA here".into())
    );
    assert_eq!(t.check("Subject: buy VIAGRA now").line, 3);
    assert_eq!(t.check("SUBJECT: hi").action, Action::Warn("subject seen".into()));
    assert_eq!(t.check("X-Case: a").action, Action::Dunno);
    assert_eq!(t.check("X-Case: A").action, Action::Hold(String::new()));
    assert_eq!(t.check("To: x").line, 0);
}

#[test]
fn negation_other_delimiters_continuations() {
    let t = table("!/^From: .*@good\\.test/ DISCARD\n  not from good\n#x\n|a/b| IGNORE\n/^X:/ OK\n");
    assert_eq!(
        t.check("From: a@bad.test").action,
        Action::Discard("not from good".into())
    );
    assert_eq!(t.check("From: a@good.test").action, Action::Dunno);
    let t = table("|a/b| IGNORE\n");
    assert_eq!(t.check("xa/by").action, Action::Ignore);
}

#[test]
fn errors_name_file_and_line() {
    for (text, line) in [
        ("/ok/ DUNNO\n/unclosed REJECT\n", 2),
        ("\n\n/x/ FROB\n", 3),
        ("/x/ PREPEND X: y\n", 1),
        ("/(/ REJECT\n", 1),
        ("/x/q REJECT\n", 1),
        ("  continuation first\n", 1),
        ("/x/\n", 1),
    ] {
        match Table::parse(Path::new("/etc/hc"), text) {
            Err(ChecksError::Syntax { path, line: l, reason }) => {
                assert_eq!(path, Path::new("/etc/hc"));
                assert_eq!(l, line, "{text:?}: {reason}");
                let msg = Table::parse(Path::new("/etc/hc"), text).unwrap_err().to_string();
                assert!(msg.starts_with(&format!("/etc/hc, line {line}: ")), "{msg}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn cached_reloads_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hc");
    std::fs::write(&p, "/a/ REJECT\n").unwrap();
    let mut c = Cached::new();
    assert_eq!(
        c.get(&p).unwrap().unwrap().check("a").action,
        Action::Reject(String::new())
    );
    std::fs::write(&p, "/a/ HOLD held\n/b/ DUNNO\n").unwrap();
    assert_eq!(
        c.get(&p).unwrap().unwrap().check("a").action,
        Action::Hold("held".into())
    );
    assert!(c.get(Path::new("")).unwrap().is_none());
    assert!(c.get(&dir.path().join("missing")).is_err());
}
