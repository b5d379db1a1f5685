use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};

use super::*;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write_file(path: &Path, content: &[u8]) {
    fs::write(path, content).unwrap();
}

fn mkfifo(path: &Path) {
    rfs::mknodat(rfs::CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn open_read_reads_a_plain_file() {
    let d = dir();
    let p = d.path().join("f");
    write_file(&p, b"hello");
    let mut s = String::new();
    open_read(&p, &Expect::current_user())
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "hello");
    // The descriptor is blocking again after the checks.
    let f = open_read(&p, &Expect::any()).unwrap();
    assert!(!rfs::fcntl_getfl(&f).unwrap().contains(OFlags::NONBLOCK));
}

#[test]
fn refuses_symlink_in_final_component() {
    let d = dir();
    let target = d.path().join("target");
    write_file(&target, b"secret");
    let link = d.path().join("link");
    symlink(&target, &link).unwrap();
    assert!(matches!(
        open_read(&link, &Expect::any()),
        Err(SafeOpenError::Symlink { .. })
    ));
    assert!(matches!(
        open_append(&link, &Expect::any(), None),
        Err(SafeOpenError::Symlink { .. })
    ));
    assert!(matches!(
        open_append(&link, &Expect::any(), Some(0o600)),
        Err(SafeOpenError::Symlink { .. })
    ));
    // A dangling symlink must not be followed to create its target either.
    let dangling = d.path().join("dangling");
    symlink(d.path().join("nowhere"), &dangling).unwrap();
    assert!(matches!(
        open_append(&dangling, &Expect::any(), Some(0o600)),
        Err(SafeOpenError::Symlink { .. })
    ));
    assert!(!d.path().join("nowhere").exists());
    assert_eq!(fs::read(&target).unwrap(), b"secret");
}

#[test]
fn refuses_hard_linked_file() {
    let d = dir();
    let a = d.path().join("a");
    write_file(&a, b"x");
    fs::hard_link(&a, d.path().join("b")).unwrap();
    assert!(matches!(
        open_read(&a, &Expect::any()),
        Err(SafeOpenError::HardLinked { nlink: 2, .. })
    ));
    assert!(matches!(
        open_append(&a, &Expect::any(), Some(0o600)),
        Err(SafeOpenError::HardLinked { nlink: 2, .. })
    ));
}

#[test]
fn refuses_directory_and_fifo() {
    let d = dir();
    assert!(matches!(
        open_read(d.path(), &Expect::any()),
        Err(SafeOpenError::NotRegular { kind: "directory", .. })
    ));
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    // Returns at once (no writer needed) and refuses.
    assert!(matches!(
        open_read(&fifo, &Expect::any()),
        Err(SafeOpenError::NotRegular { kind: "fifo", .. })
    ));
    assert!(matches!(
        open_append(&fifo, &Expect::any(), Some(0o600)),
        Err(SafeOpenError::NotRegular { kind: "fifo", .. })
    ));
    assert!(matches!(
        open_update(&fifo, &Expect::any()),
        Err(SafeOpenError::NotRegular { kind: "fifo", .. })
    ));
    // A symlink to a FIFO is refused as a symlink, before anything is opened.
    let link = d.path().join("to-fifo");
    symlink(&fifo, &link).unwrap();
    assert!(matches!(
        open_read(&link, &Expect::any()),
        Err(SafeOpenError::Symlink { .. })
    ));
}

#[test]
fn refuses_wrong_owner() {
    let d = dir();
    let p = d.path().join("f");
    write_file(&p, b"x");
    let me = rustix::process::geteuid().as_raw();
    let other = me.wrapping_add(1);
    match open_read(&p, &Expect::owner(other)) {
        Err(SafeOpenError::WrongOwner { expected, found, .. }) => {
            assert_eq!((expected, found), (other, me));
        }
        r => panic!("unexpected {r:?}"),
    }
    assert!(matches!(
        open_append(&p, &Expect::owner(other), None),
        Err(SafeOpenError::WrongOwner { .. })
    ));
    open_append(&p, &Expect::owner(me), None).unwrap();
}

#[test]
fn open_append_creates_then_appends() {
    let d = dir();
    let p = d.path().join("mbox");
    assert!(matches!(
        open_append(&p, &Expect::any(), None),
        Err(SafeOpenError::Io { op: "lstat", .. })
    ));
    open_append(&p, &Expect::current_user(), Some(0o600))
        .unwrap()
        .write_all(b"one\n")
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    open_append(&p, &Expect::current_user(), Some(0o600))
        .unwrap()
        .write_all(b"two\n")
        .unwrap();
    let mut f = open_append(&p, &Expect::any(), None).unwrap();
    f.write_all(b"three\n").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"one\ntwo\nthree\n");
}

#[test]
fn create_excl_never_reuses_a_name() {
    let d = dir();
    let mut f = create_excl(d.path(), "q1", 0o600).unwrap();
    f.write_all(b"data").unwrap();
    assert!(matches!(
        create_excl(d.path(), "q1", 0o600),
        Err(SafeOpenError::Io { .. })
    ));
    symlink(d.path().join("elsewhere"), d.path().join("q2")).unwrap();
    assert!(create_excl(d.path(), "q2", 0o600).is_err());
    assert!(!d.path().join("elsewhere").exists());
    for bad in ["", ".", "..", "a/b", "a\0b"] {
        assert!(
            matches!(create_excl(d.path(), bad, 0o600), Err(SafeOpenError::BadName { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        create_excl(d.path(), &"n".repeat(256), 0o600),
        Err(SafeOpenError::BadName { .. })
    ));
}

#[test]
fn write_atomic_success_and_replace() {
    let d = dir();
    write_atomic(d.path(), "conf", 0o600, |f| f.write_all(b"v1")).unwrap();
    assert_eq!(fs::read(d.path().join("conf")).unwrap(), b"v1");
    assert_eq!(
        fs::metadata(d.path().join("conf")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    write_atomic(d.path(), "conf", 0o600, |f| f.write_all(b"v2")).unwrap();
    assert_eq!(fs::read(d.path().join("conf")).unwrap(), b"v2");
    assert_eq!(names_in(d.path()), vec!["conf"]);
}

#[test]
fn write_atomic_failure_leaves_no_temp_and_old_content() {
    let d = dir();
    write_file(&d.path().join("conf"), b"old");
    let err = write_atomic(d.path(), "conf", 0o600, |f| {
        f.write_all(b"partial")?;
        Err(io::Error::other("disk on fire"))
    })
    .unwrap_err();
    assert!(matches!(err, SafeOpenError::Io { op: "write", .. }));
    assert_eq!(fs::read(d.path().join("conf")).unwrap(), b"old");
    assert_eq!(names_in(d.path()), vec!["conf"]);
    assert!(matches!(
        write_atomic(d.path(), "../x", 0o600, |_| Ok(())),
        Err(SafeOpenError::BadName { .. })
    ));
    assert!(matches!(
        write_atomic(&d.path().join("missing"), "x", 0o600, |_| Ok(())),
        Err(SafeOpenError::Io {
            op: "open directory",
            ..
        })
    ));
}

#[test]
fn rename_durable_and_fsync_dir() {
    let d = dir();
    fs::create_dir(d.path().join("incoming")).unwrap();
    fs::create_dir(d.path().join("active")).unwrap();
    let from = d.path().join("incoming/Q");
    write_file(&from, b"msg");
    rename_durable(&from, &d.path().join("active/Q")).unwrap();
    assert!(!from.exists());
    assert_eq!(fs::read(d.path().join("active/Q")).unwrap(), b"msg");
    fsync_dir(d.path()).unwrap();
    assert!(matches!(
        rename_durable(&from, &d.path().join("active/R")),
        Err(SafeOpenError::Io { op: "rename", .. })
    ));
}

fn beneath_fixture() -> (tempfile::TempDir, OwnedFd) {
    let d = dir();
    fs::create_dir_all(d.path().join("a/b")).unwrap();
    write_file(&d.path().join("a/b/file"), b"inside");
    write_file(&d.path().join("outside"), b"outside");
    symlink(d.path().join("a"), d.path().join("linkdir")).unwrap();
    symlink(d.path().join("outside"), d.path().join("a/linkfile")).unwrap();
    let fd = rfs::open(d.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    (d, fd)
}

#[test]
fn open_beneath_and_its_fallback_agree() {
    let (_d, root) = beneath_fixture();
    type Opener = fn(BorrowedFdRef<'_>, &Path, OFlags, u32) -> Result<OwnedFd>;
    let openers: [(&str, Opener); 2] = [
        ("openat2", |fd, p, f, m| open_beneath(fd, p, f, m)),
        ("walk", |fd, p, f, m| beneath::walk_beneath(fd, p, f, m)),
    ];
    for (name, open) in openers {
        let fd = open(root.as_fd(), Path::new("a/b/file"), OFlags::RDONLY, 0).unwrap();
        let mut s = String::new();
        File::from(fd).read_to_string(&mut s).unwrap();
        assert_eq!(s, "inside", "{name}");
        let new = format!("./a/./b/new-{name}");
        let fd = open(
            root.as_fd(),
            Path::new(&new),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            0o600,
        );
        assert!(fd.is_ok(), "{name}: {fd:?}");
        for (path, what) in [("linkdir/b/file", "symlinked dir"), ("a/linkfile", "symlinked file")] {
            assert!(
                matches!(
                    open(root.as_fd(), Path::new(path), OFlags::RDONLY, 0),
                    Err(SafeOpenError::Symlink { .. })
                ),
                "{name}: {what}"
            );
        }
        for path in ["../outside", "a/../../outside", "/etc/passwd", "", "."] {
            assert!(
                matches!(
                    open(root.as_fd(), Path::new(path), OFlags::RDONLY, 0),
                    Err(SafeOpenError::Escapes { .. })
                ),
                "{name}: {path}"
            );
        }
        assert!(matches!(
            open(root.as_fd(), Path::new("a/b/file/x"), OFlags::RDONLY, 0),
            Err(SafeOpenError::Io { .. })
        ));
    }
}

type BorrowedFdRef<'a> = std::os::fd::BorrowedFd<'a>;
