//! Tests of the queue layout: creation from nothing, repair of modes (and owners as root),
//! and refusal to follow or "repair" a symlink.

use super::*;

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn ensure_creates_everything_then_check_is_clean() {
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("var/spool/postern");
    let problems = check(&q, None);
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].to_string(),
        format!("queue directory {} does not exist", q.display())
    );
    ensure(&q, None).unwrap();
    assert_eq!(check(&q, None), []);
    for &(name, mode, _) in QUEUE_DIRS {
        assert_eq!(mode_of(&q.join(name)), mode, "{name}");
    }
    assert_eq!(mode_of(&q.join("maildrop")), 0o730);
    assert_eq!(mode_of(&q.join("public")), 0o710);
    assert_eq!(mode_of(&q.join("pid")), 0o755);
    // Idempotent.
    ensure(&q, None).unwrap();
    assert_eq!(check(&q, None), []);
}

#[test]
fn wrong_modes_are_reported_and_fixed() {
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("q");
    ensure(&q, None).unwrap();
    std::fs::set_permissions(q.join("incoming"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::remove_dir(q.join("hold")).unwrap();
    let lines: Vec<String> = check(&q, None).iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].contains("has mode 0777: it must not be writable by group or others"),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!("{} has mode 0755, should be 0700", q.join("incoming").display())
    );
    assert_eq!(
        lines[2],
        format!("queue directory {} does not exist", q.join("hold").display())
    );
    ensure(&q, None).unwrap();
    assert_eq!(check(&q, None), []);
    assert_eq!(mode_of(&q), 0o755);
}

#[test]
fn symlinks_are_reported_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("q");
    ensure(&q, None).unwrap();
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir(q.join("active")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, q.join("active")).unwrap();
    let problems = check(&q, None);
    assert_eq!(
        problems,
        [Problem {
            path: q.join("active"),
            kind: ProblemKind::NotADirectory
        }]
    );
    let e = ensure(&q, None).unwrap_err();
    assert!(matches!(e, QueueDirError::NotADirectory { .. }), "{e}");
    assert_eq!(mode_of(&elsewhere), 0o755, "the symlink target must be left alone");
}

#[test]
fn owners_are_enforced_as_root() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("q");
    let owner = QueueOwner {
        uid: Uid::from_raw(4242),
        gid: Gid::from_raw(4243),
        setgid_gid: Gid::from_raw(4244),
    };
    ensure(&q, None).unwrap();
    let problems = check(&q, Some(owner));
    // Every subdirectory but pid (root-owned already) has the wrong owner.
    assert_eq!(problems.len(), QUEUE_DIRS.len() - 1, "{problems:?}");
    ensure(&q, Some(owner)).unwrap();
    assert_eq!(check(&q, Some(owner)), []);
    let meta = |n: &str| std::fs::metadata(q.join(n)).unwrap();
    assert_eq!((meta("incoming").uid(), meta("incoming").gid()), (4242, 4243));
    assert_eq!((meta("maildrop").uid(), meta("maildrop").gid()), (4242, 4244));
    assert_eq!((meta("public").uid(), meta("public").gid()), (4242, 4244));
    assert_eq!((meta("pid").uid(), meta("pid").gid()), (0, 0));
    assert_eq!(mode_of(&q.join("maildrop")), 0o730);
}
