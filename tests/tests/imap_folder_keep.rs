//! Issue 11, LOGIN+SELECT without a rescan: imapd keeps a folder's state for
//! `imapd_folder_keep_time` after its last session closed, and a change another process
//! makes meanwhile is still seen by the next session, exactly.
//!
//! One session selects an INBOX of three messages and logs out. While no session is open,
//! the test (another process) delivers a fourth into `new/`, flags the first by renaming
//! its file (as Dovecot or a user's `mv` would) and removes the second. The next session's
//! SELECT and FETCH answer exactly what the Maildir says. That the state was kept, and
//! freed after its time, is read from /proc: imapd's inotify instance holds the folder's two
//! watches (`new/`, `cur/`) while the state lives and none once it is gone.

use postern_tests::imap_raw::ImapRaw;
use postern_tests::*;
use std::io::Read;
use std::time::{Duration, Instant};

const KEEP_SECS: u64 = 30;

/// The inotify watches imapd `pid` holds (the `inotify wd:` lines of its inotify
/// descriptors' fdinfo).
fn watches(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:inotify"))
        .filter_map(|e| std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy())).ok())
        .map(|info| info.lines().filter(|l| l.starts_with("inotify wd:")).count())
        .sum()
}

/// The untagged lines of an answer, and whether its tagged line is OK.
fn untagged(answer: &str, tag: &str) -> Vec<String> {
    let (lines, last) = answer.trim_end().rsplit_once("\r\n").unwrap_or(("", answer.trim_end()));
    assert!(last.starts_with(&format!("{tag} OK")), "{answer}");
    lines
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// LOGOUT, then the connection's end: imapd has dropped the session.
fn logout(mut c: ImapRaw) {
    let out = c.cmd("z", "LOGOUT");
    assert!(out.contains("* BYE"), "{out}");
    let mut rest = Vec::new();
    let _ = c.r.read_to_end(&mut rest);
}

#[test]
fn a_change_made_while_no_session_is_open_is_seen_by_the_next_from_the_kept_state() {
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", "maxproc = 1")
    );
    let keep = format!("imapd_folder_keep_time={KEEP_SECS}s");
    let mut inst = Instance::new(&services, &[keep.as_str()]);
    add_user(&inst, "alice", "alice-pw");
    for i in 1..=3 {
        let name = format!("170000000{i}.M{i}P1.host");
        deliver_maildir(
            &inst,
            "alice",
            &name,
            format!("Subject: m{i}\r\n\r\nbody {i}\r\n").as_bytes(),
        );
    }
    owned_mail_base(&inst);
    inst.start();

    let mut a = ImapRaw::login(port, "alice", "alice-pw");
    let sel = untagged(&a.cmd("s", "SELECT INBOX"), "s");
    assert!(sel.contains(&"* 3 EXISTS".to_string()), "{sel:?}");
    assert!(sel.contains(&"* 3 RECENT".to_string()), "{sel:?}");
    assert!(
        sel.contains(&"* OK [UIDNEXT 4] Predicted next UID".to_string()),
        "{sel:?}"
    );
    let validity = sel
        .iter()
        .find(|l| l.starts_with("* OK [UIDVALIDITY "))
        .cloned()
        .expect("UIDVALIDITY");
    assert_eq!(
        untagged(&a.cmd("f", "FETCH 1:* (UID FLAGS)"), "f"),
        [
            "* 1 FETCH (UID 1 FLAGS (\\Recent))",
            "* 2 FETCH (UID 2 FLAGS (\\Recent))",
            "* 3 FETCH (UID 3 FLAGS (\\Recent))",
        ]
    );
    let imapd = children_named(inst.master_pid(), "imapd");
    assert_eq!(imapd.len(), 1, "one imapd (maxproc 1)");
    let pid = imapd[0];
    assert_eq!(watches(pid), 2, "INBOX's new/ and cur/ watched while selected");
    logout(a);
    let closed = Instant::now();

    // no session open: the state is kept with its watch
    assert_eq!(watches(pid), 2, "the state is kept after its last session closed");
    let md = inst.root.path().join("var/mail/alice");
    let cur = md.join("cur");
    let file_of = |prefix: &str| {
        std::fs::read_dir(&cur)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}* in cur/"))
    };
    let first = file_of("1700000001.");
    assert!(first.ends_with(":2,"), "{first}");
    std::fs::rename(cur.join(&first), cur.join(format!("{first}FS"))).unwrap();
    std::fs::remove_file(cur.join(file_of("1700000002."))).unwrap();
    deliver_maildir(&inst, "alice", "1700000004.M4P1.host", b"Subject: m4\r\n\r\nbody 4\r\n");

    let mut b = ImapRaw::login(port, "alice", "alice-pw");
    let sel = untagged(&b.cmd("s", "SELECT INBOX"), "s");
    assert!(
        closed.elapsed() < Duration::from_secs(KEEP_SECS),
        "the machine is too slow for this test: the state's keep time passed before the second SELECT"
    );
    for want in [
        "* 3 EXISTS",
        "* 1 RECENT",
        "* OK [UNSEEN 2] First unseen",
        "* OK [UIDNEXT 5] Predicted next UID",
        validity.as_str(),
    ] {
        assert!(sel.iter().any(|l| l == want), "{want} not in {sel:?}");
    }
    assert_eq!(
        untagged(&b.cmd("f", "FETCH 1:* (UID FLAGS)"), "f"),
        [
            "* 1 FETCH (UID 1 FLAGS (\\Seen \\Flagged))",
            "* 2 FETCH (UID 3 FLAGS ())",
            "* 3 FETCH (UID 4 FLAGS (\\Recent))",
        ]
    );
    assert_eq!(
        untagged(&b.cmd("g", "UID FETCH 4 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"), "g")
            .first()
            .map(String::as_str),
        Some("* 3 FETCH (UID 4 BODY[HEADER.FIELDS (SUBJECT)] {15}")
    );
    logout(b);

    // and the state goes when its time is up: no watch left
    assert!(
        wait_for(Duration::from_secs(KEEP_SECS + 20), || watches(pid) == 0),
        "imapd still holds {} watches {:?} after the last session closed",
        watches(pid),
        closed.elapsed()
    );
    assert!(alive(pid), "the same imapd");
}
