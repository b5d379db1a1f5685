//! Spares: given, taken once, rewritten safely; the pool bound; a planted symlink refused.

use super::*;
use std::io::Write;

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let spare = t.path().join("spare");
    let incoming = t.path().join("incoming");
    std::fs::create_dir(&spare).expect("spare");
    std::fs::create_dir(&incoming).expect("incoming");
    std::fs::create_dir(t.path().join(GIVEN_FROM)).expect("active");
    (t, spare, incoming)
}

/// Where finished files are given from: `active/` beside `spare/`.
fn active(spare: &Path) -> PathBuf {
    given_from(spare)
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
    let p = queue_file(&active(&spare), "ID1", 5000);
    g.dispose(&p, "ID1").expect("dispose");
    assert!(!p.exists());
    assert!(spare.join(".ID1").exists());
    let (_f, len, path) = take_durable(&spare, &incoming, ".cleanup.spare.").expect("a spare");
    assert_eq!(len, 5000);
    assert_eq!(path.parent(), Some(incoming.as_path()));
    assert!(
        path.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".cleanup.spare."))
    );
    assert!(path.exists());
    assert!(!spare.join(".ID1").exists());
    // None left: a new file is made instead.
    assert!(take_durable(&spare, &incoming, ".cleanup.spare.").is_none());
}

/// Spares are claimed in batches (one fsync of spare/ each): the rest of a batch waits,
/// claimed, for the next messages; what is left when the process ends is removed.
#[test]
fn spares_are_claimed_in_batches_and_released() {
    let (_t, spare, incoming) = dirs();
    let mut g = Giver::new(&spare);
    for i in 0..3 {
        let name = format!("B{i}");
        let p = queue_file(&active(&spare), &name, 100);
        g.dispose(&p, &name).expect("dispose");
    }
    let (_f, _, first) = take_durable(&spare, &incoming, ".cleanup.spare.").expect("a spare");
    // All three left spare/ with the first take.
    assert_eq!(std::fs::read_dir(&spare).expect("list").count(), 0);
    let claimed = |dir: &Path| {
        std::fs::read_dir(dir)
            .expect("list")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".cleanup.spare."))
            .count()
    };
    assert_eq!(claimed(&incoming), 3);
    let (_f, _, second) = take_durable(&spare, &incoming, ".cleanup.spare.").expect("a claimed spare");
    assert_ne!(first, second);
    std::fs::remove_file(&first).expect("used");
    std::fs::remove_file(&second).expect("used");
    release_claimed();
    assert_eq!(claimed(&incoming), 0, "the unused claim is removed");
}

#[test]
fn large_files_and_a_full_pool_are_unlinked() {
    let (_t, spare, _incoming) = dirs();
    let mut g = Giver::new(&spare);
    let big = queue_file(&active(&spare), "BIG", (MAX_SPARE_SIZE + 1) as usize);
    g.dispose(&big, "BIG").expect("dispose");
    assert!(!big.exists());
    assert_eq!(std::fs::read_dir(&spare).expect("list").count(), 0);
    for i in 0..MAX_SPARES + 10 {
        let name = format!("M{i}");
        let p = queue_file(&active(&spare), &name, 10);
        g.dispose(&p, &name).expect("dispose");
        assert!(!p.exists());
    }
    assert_eq!(std::fs::read_dir(&spare).expect("list").count(), MAX_SPARES);
}

/// A claim fsyncs the directory a spare left (see the module doc), which it knows only as
/// `active/`: a file from anywhere else is unlinked, never given.
#[test]
fn only_files_from_active_become_spares() {
    let (_t, spare, incoming) = dirs();
    let mut g = Giver::new(&spare);
    let p = queue_file(&incoming, "ELSEWHERE", 10);
    g.dispose(&p, "ELSEWHERE").expect("dispose");
    assert!(!p.exists());
    assert_eq!(std::fs::read_dir(&spare).expect("list").count(), 0);
    let q = queue_file(&active(&spare), "FROMACTIVE", 10);
    g.dispose(&q, "FROMACTIVE").expect("dispose");
    assert!(spare.join(".FROMACTIVE").exists());
}

#[test]
fn a_symlink_in_the_pool_is_not_followed() {
    let (t, spare, incoming) = dirs();
    let victim = queue_file(t.path(), "victim", 10);
    std::os::unix::fs::symlink(&victim, spare.join(".EVIL")).expect("symlink");
    assert!(take_durable(&spare, &incoming, ".cleanup.spare.").is_none());
    assert!(
        std::fs::read_dir(&incoming).expect("list").next().is_none(),
        "nothing claimed is left"
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), b"xxxxxxxxxx");
}

#[test]
fn claims_of_a_process_that_is_gone_are_removed_and_live_ones_kept() {
    let (_t, _spare, incoming) = dirs();
    // A PID that was a process and is gone now.
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    let me = std::process::id();
    let gone = queue_file(&incoming, &format!(".cleanup.spare.{dead}.3"), 10);
    let mine = queue_file(&incoming, &format!(".cleanup.spare.{me}.1"), 10);
    let init = queue_file(&incoming, ".cleanup.spare.1.0", 10);
    let other = queue_file(&incoming, &format!(".cleanup.{dead}XYZ"), 10);
    let odd = queue_file(&incoming, ".cleanup.spare.notapid.1", 10);
    assert_eq!(remove_abandoned_claims(&incoming, ".cleanup.spare."), 1);
    assert!(!gone.exists());
    for kept in [&mine, &init, &other, &odd] {
        assert!(kept.exists(), "{}", kept.display());
    }
}
