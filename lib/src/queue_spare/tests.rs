//! Spares: given, taken once, rewritten safely; the pool bound; a planted symlink refused.

use super::*;
use std::io::Write;

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let spare = t.path().join("spare");
    let incoming = t.path().join("incoming");
    std::fs::create_dir(&spare).expect("spare");
    std::fs::create_dir(&incoming).expect("incoming");
    (t, spare, incoming)
}

fn queue_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create");
    f.write_all(&vec![b'x'; len]).expect("write");
    p
}

#[test]
fn a_given_file_is_taken_once_under_the_temporary_name() {
    let (_t, spare, incoming) = dirs();
    let mut g = Giver::new(&spare);
    let p = queue_file(&incoming, "ID1", 5000);
    g.dispose(&p, "ID1").expect("dispose");
    assert!(!p.exists());
    assert!(spare.join(".ID1").exists());
    let (_f, len) = take(&spare, &incoming, ".cleanup.ID2").expect("a spare");
    assert_eq!(len, 5000);
    assert!(incoming.join(".cleanup.ID2").exists());
    assert!(!spare.join(".ID1").exists());
    // None left: a new file is made instead.
    assert!(take(&spare, &incoming, ".cleanup.ID3").is_none());
}

#[test]
fn large_files_and_a_full_pool_are_unlinked() {
    let (_t, spare, incoming) = dirs();
    let mut g = Giver::new(&spare);
    let big = queue_file(&incoming, "BIG", (MAX_SPARE_SIZE + 1) as usize);
    g.dispose(&big, "BIG").expect("dispose");
    assert!(!big.exists());
    assert_eq!(std::fs::read_dir(&spare).expect("list").count(), 0);
    for i in 0..MAX_SPARES + 10 {
        let name = format!("M{i}");
        let p = queue_file(&incoming, &name, 10);
        g.dispose(&p, &name).expect("dispose");
        assert!(!p.exists());
    }
    assert_eq!(std::fs::read_dir(&spare).expect("list").count(), MAX_SPARES);
}

#[test]
fn a_symlink_in_the_pool_is_not_followed() {
    let (t, spare, incoming) = dirs();
    let victim = queue_file(t.path(), "victim", 10);
    std::os::unix::fs::symlink(&victim, spare.join(".EVIL")).expect("symlink");
    assert!(take(&spare, &incoming, ".cleanup.X").is_none());
    assert!(!incoming.join(".cleanup.X").exists());
    assert_eq!(std::fs::read(&victim).expect("victim"), b"xxxxxxxxxx");
}
