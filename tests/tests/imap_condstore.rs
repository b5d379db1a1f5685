//! Issue 11: FETCH of messages another session expunged (RFC 2180 §4.1), CONDSTORE
//! (RFC 7162 §3.1) and QRESYNC (§3.2), each against the real imapd under the real
//! master, over a raw socket, with exact expected responses; and mbsync (Debian's isync,
//! when installed) resynchronising a local Maildir with it in both directions.

use postern_tests::imap_raw::ImapRaw;
use postern_tests::{Instance, add_user, auth_service, daemon_service, free_port, imap_instance};

/// A session of alice's.
fn login(port: u16) -> ImapRaw {
    ImapRaw::login(port, "alice", "alice-pw")
}

fn started() -> (Instance, u16) {
    let (mut inst, port) = imap_instance("alice", "alice-pw");
    inst.start();
    (inst, port)
}

/// Appends `n` small messages `m1`..`mn` to INBOX.
fn fill(c: &mut ImapRaw, n: usize) {
    for i in 1..=n {
        let msg = format!("Subject: m{i}\r\nMessage-ID: <m{i}@x>\r\n\r\nbody of m{i}\r\n");
        let out = c.append(&format!("a{i}"), "INBOX", msg.as_bytes(), false);
        assert!(out.contains(&format!("a{i} OK")), "{out}");
    }
}

/// The tagged line of an answer.
fn tagged(out: &str) -> &str {
    out.trim_end().rsplit("\r\n").next().unwrap_or("")
}

/// The message file in `cur/` of alice's INBOX whose content holds `needle`.
fn message_file(inst: &Instance, needle: &str) -> std::path::PathBuf {
    let cur = inst.root.path().join("var/mail/alice/cur");
    std::fs::read_dir(&cur)
        .expect("read cur/")
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(needle)))
        .unwrap_or_else(|| panic!("no message with {needle:?} in {}", cur.display()))
}

#[test]
fn fetch_of_a_message_expunged_by_another_session_returns_what_is_left() {
    // one imapd process, so both sessions share the folder state that keeps an expunged
    // message's file open
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", "maxproc = 1")
    );
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "alice", "alice-pw");
    inst.start();
    let mut a = login(port);
    fill(&mut a, 3);
    let out = a.cmd("s", "SELECT INBOX");
    assert!(out.contains("* 3 EXISTS\r\n"), "{out}");
    let mut b = login(port);
    let out = b.cmd("s", "SELECT INBOX");
    assert!(out.contains("* 3 EXISTS\r\n"), "{out}");
    assert_eq!(
        b.cmd("t", "STORE 2 +FLAGS.SILENT (\\Deleted)"),
        "t OK Store completed\r\n"
    );
    assert_eq!(b.cmd("e", "EXPUNGE"), "* 2 EXPUNGE\r\ne OK Expunge completed\r\n");
    // A has not been told: its sequence number 2 is still UID 2, answered from what the
    // folder state kept of it, its body from the file kept open
    assert_eq!(
        a.cmd("f", "FETCH 2 (FLAGS UID RFC822.SIZE)"),
        "* 2 FETCH (FLAGS (\\Deleted \\Recent) UID 2 RFC822.SIZE 47)\r\nf OK Fetch completed\r\n"
    );
    assert_eq!(
        a.cmd("g", "FETCH 1:3 (UID)"),
        "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\ng OK Fetch completed\r\n"
    );
    assert_eq!(
        a.cmd("h", "FETCH 2 BODY.PEEK[TEXT]"),
        "* 2 FETCH (BODY[TEXT] {12}\r\nbody of m2\r\n)\r\nh OK Fetch completed\r\n"
    );
    // message 3's file removed by another program: what the index has of it is still
    // answered, its body cannot be
    std::fs::remove_file(message_file(&inst, "Subject: m3")).unwrap();
    assert_eq!(
        a.cmd("i", "FETCH 3 (UID FLAGS)"),
        "* 3 FETCH (UID 3 FLAGS (\\Recent))\r\ni OK Fetch completed\r\n"
    );
    assert_eq!(
        a.cmd("j", "FETCH 2:3 BODY.PEEK[TEXT]"),
        "* 2 FETCH (BODY[TEXT] {12}\r\nbody of m2\r\n)\r\nj NO [EXPUNGEISSUED] Some messages were expunged\r\n"
    );
    // once told, sequence number 2 is message 3... which is gone too
    assert_eq!(a.cmd("n", "NOOP"), "* 3 EXPUNGE\r\n* 2 EXPUNGE\r\nn OK Completed\r\n");
    assert_eq!(
        a.cmd("k", "FETCH 1:* (UID)"),
        "* 1 FETCH (UID 1)\r\nk OK Fetch completed\r\n"
    );
    assert_eq!(tagged(&a.cmd("l", "LOGOUT")), "l OK Logout completed");
}

/// The number right after the first `pat` in `out`.
fn num_after(out: &str, pat: &str) -> u64 {
    let at = out.find(pat).unwrap_or_else(|| panic!("no {pat:?} in {out:?}")) + pat.len();
    let digits: String = out[at..].chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {pat:?} in {out:?}"))
}

/// The MAILBOXID (RFC 8474) a SELECT told.
fn mailbox_id(out: &str) -> String {
    let at = out
        .find("[MAILBOXID (")
        .unwrap_or_else(|| panic!("no MAILBOXID in {out:?}"))
        + 12;
    out[at..].chars().take_while(char::is_ascii_alphanumeric).collect()
}

#[test]
fn condstore_select_fetch_store_search_and_status_answer_as_rfc_7162_shows() {
    let (_inst, port) = started();
    let mut a = login(port);
    fill(&mut a, 3);
    let caps = a.cmd("c", "CAPABILITY");
    assert!(caps.contains(" CONDSTORE"), "{caps}");
    let mut b = login(port);
    let status = b.cmd("st", "STATUS INBOX (MESSAGES HIGHESTMODSEQ)");
    let h = num_after(&status, "HIGHESTMODSEQ ");
    assert_eq!(
        status,
        format!("* STATUS INBOX (MESSAGES 3 HIGHESTMODSEQ {h})\r\nst OK STATUS completed\r\n")
    );
    assert_eq!(
        a.cmd("e", "ENABLE CONDSTORE"),
        "* ENABLED CONDSTORE\r\ne OK Enabled\r\n"
    );
    let out = a.cmd("s", "SELECT INBOX (CONDSTORE)");
    let v = num_after(&out, "[UIDVALIDITY ");
    let mid = mailbox_id(&out);
    assert_eq!(
        out,
        format!(
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
             * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n\
             * 3 EXISTS\r\n* 3 RECENT\r\n* OK [UNSEEN 1] First unseen\r\n\
             * OK [UIDVALIDITY {v}] UIDs valid\r\n* OK [UIDNEXT 4] Predicted next UID\r\n\
             * OK [HIGHESTMODSEQ {h}] Highest\r\n* OK [MAILBOXID ({mid})] Ok\r\n\
             s OK [READ-WRITE] SELECT completed\r\n"
        )
    );
    // MODSEQ as a FETCH item; HIGHESTMODSEQ is the highest of them
    let out = a.cmd("f", "FETCH 1:3 (UID MODSEQ)");
    let m: Vec<u64> = (1..=3)
        .map(|i| num_after(&out, &format!("* {i} FETCH (UID {i} MODSEQ (")))
        .collect();
    assert_eq!(
        out,
        format!(
            "* 1 FETCH (UID 1 MODSEQ ({}))\r\n* 2 FETCH (UID 2 MODSEQ ({}))\r\n* 3 FETCH (UID 3 MODSEQ ({}))\r\nf OK Fetch completed\r\n",
            m[0], m[1], m[2]
        )
    );
    assert_eq!(m.iter().max(), Some(&h));
    // a STORE's FETCH carries the new MODSEQ once CONDSTORE is on
    let out = a.cmd("t1", "STORE 2 +FLAGS (\\Seen)");
    let m2 = num_after(&out, "MODSEQ (");
    assert!(m2 > h, "{out}");
    assert_eq!(
        out,
        format!("* 2 FETCH (FLAGS (\\Seen \\Recent) MODSEQ ({m2}))\r\nt1 OK Store completed\r\n")
    );
    // so does a FETCH of FLAGS
    assert_eq!(
        a.cmd("f2", "FETCH 2 (FLAGS)"),
        format!("* 2 FETCH (FLAGS (\\Seen \\Recent) MODSEQ ({m2}))\r\nf2 OK Fetch completed\r\n")
    );
    // CHANGEDSINCE: only what changed after it, MODSEQ after the UID (RFC 7162 §3.1.4.1)
    assert_eq!(
        a.cmd("f3", &format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h})")),
        format!("* 2 FETCH (UID 2 MODSEQ ({m2}) FLAGS (\\Seen \\Recent))\r\nf3 OK Fetch completed\r\n")
    );
    assert_eq!(
        a.cmd("f4", &format!("FETCH 1:* (UID) (CHANGEDSINCE {m2})")),
        "f4 OK Fetch completed\r\n"
    );
    // UNCHANGEDSINCE: message 2 changed after h and is left as it is; a .SILENT STORE
    // still tells the MODSEQ of what it changed (RFC 7162 §3.1.3)
    let out = a.cmd(
        "t2",
        &format!("STORE 1,2 (UNCHANGEDSINCE {h}) +FLAGS.SILENT (\\Flagged)"),
    );
    let m1 = num_after(&out, "* 1 FETCH (MODSEQ (");
    assert!(m1 > m2, "{out}");
    assert_eq!(
        out,
        format!("* 1 FETCH (MODSEQ ({m1}))\r\nt2 OK [MODIFIED 2] Conditional STORE failed\r\n")
    );
    assert_eq!(
        a.cmd("t3", "UID STORE 3 (UNCHANGEDSINCE 1) FLAGS (\\Answered)"),
        "t3 OK [MODIFIED 3] Conditional STORE failed\r\n"
    );
    assert_eq!(
        a.cmd("f5", "FETCH 1:3 (FLAGS)"),
        format!(
            "* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ ({m1}))\r\n* 2 FETCH (FLAGS (\\Seen \\Recent) MODSEQ ({m2}))\r\n\
             * 3 FETCH (FLAGS (\\Recent) MODSEQ ({}))\r\nf5 OK Fetch completed\r\n",
            m[2]
        )
    );
    // SEARCH MODSEQ, with the highest MODSEQ of the hits at the end (RFC 7162 §3.1.5)
    assert_eq!(
        a.cmd("q1", &format!("SEARCH MODSEQ {}", h + 1)),
        format!("* SEARCH 1 2 (MODSEQ {m1})\r\nq1 OK Search completed\r\n")
    );
    assert_eq!(
        a.cmd("q2", &format!("UID SEARCH MODSEQ \"/flags/\\\\draft\" all {m1} UNSEEN")),
        format!("* SEARCH 1 (MODSEQ {m1})\r\nq2 OK Search completed\r\n")
    );
    assert_eq!(
        a.cmd("q3", &format!("SEARCH MODSEQ {}", m1 + 1)),
        "* SEARCH\r\nq3 OK Search completed\r\n"
    );
    assert_eq!(
        a.cmd("q4", &format!("SEARCH RETURN (ALL) MODSEQ {}", h + 1)),
        format!("* ESEARCH (TAG \"q4\") ALL 1:2 MODSEQ {m1}\r\nq4 OK Search completed\r\n")
    );
    // another session's change is told with its MODSEQ
    assert!(b.cmd("bs", "SELECT INBOX").contains("bs OK"));
    assert!(b.cmd("bt", "STORE 3 +FLAGS.SILENT (\\Draft)").contains("bt OK"));
    let out = a.cmd("n", "NOOP");
    let m3 = num_after(&out, "MODSEQ (");
    assert!(m3 > m1, "{out}");
    assert_eq!(
        out,
        format!("* 3 FETCH (UID 3 FLAGS (\\Draft \\Recent) MODSEQ ({m3}))\r\nn OK Completed\r\n")
    );
    // b has CONDSTORE since its STATUS HIGHESTMODSEQ; c has not: no MODSEQ, until a
    // CONDSTORE-enabling command, which tells the mailbox's HIGHESTMODSEQ first
    let mut c = login(port);
    assert!(c.cmd("cs", "SELECT INBOX").contains("cs OK"));
    assert_eq!(
        c.cmd("cf", "FETCH 3 (FLAGS)"),
        "* 3 FETCH (FLAGS (\\Draft))\r\ncf OK Fetch completed\r\n"
    );
    assert_eq!(
        c.cmd("cm", "FETCH 3 (MODSEQ)"),
        format!("* OK [HIGHESTMODSEQ {m3}] Highest\r\n* 3 FETCH (MODSEQ ({m3}))\r\ncm OK Fetch completed\r\n")
    );
    assert_eq!(
        b.cmd("bf", "FETCH 3 (FLAGS)"),
        format!("* 3 FETCH (FLAGS (\\Draft) MODSEQ ({m3}))\r\nbf OK Fetch completed\r\n")
    );
    assert_eq!(
        b.cmd("bx", "STATUS INBOX (HIGHESTMODSEQ)"),
        format!("* STATUS INBOX (HIGHESTMODSEQ {m3})\r\nbx OK STATUS completed\r\n")
    );
    assert_eq!(
        a.cmd("bad", "FETCH 1 (FLAGS) (CHANGEDSINCE x)"),
        "bad BAD Invalid CHANGEDSINCE value\r\n"
    );
}

#[test]
fn qresync_select_and_uid_fetch_tell_what_vanished_and_what_changed() {
    let (_inst, port) = started();
    let mut a = login(port);
    fill(&mut a, 5);
    assert_eq!(a.cmd("e", "ENABLE QRESYNC"), "* ENABLED QRESYNC\r\ne OK Enabled\r\n");
    let out = a.cmd("s", "SELECT INBOX");
    let v = num_after(&out, "[UIDVALIDITY ");
    let h = num_after(&out, "[HIGHESTMODSEQ ");
    let mid = mailbox_id(&out);
    let m2 = num_after(&a.cmd("t1", "STORE 2 +FLAGS (\\Seen)"), "MODSEQ (");
    assert!(a.cmd("t2", "STORE 3:4 +FLAGS.SILENT (\\Deleted)").contains("t2 OK"));
    // once QRESYNC is on, expunges are told by UID
    assert_eq!(a.cmd("x", "EXPUNGE"), "* VANISHED 3:4\r\nx OK Expunge completed\r\n");
    let h2 = num_after(&a.cmd("st", "STATUS INBOX (HIGHESTMODSEQ)"), "HIGHESTMODSEQ ");
    assert!(h2 > m2);
    let head = |closed: bool, unseen: bool| {
        format!(
            "{}* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
             * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n\
             * 3 EXISTS\r\n* 0 RECENT\r\n{}* OK [UIDVALIDITY {v}] UIDs valid\r\n\
             * OK [UIDNEXT 6] Predicted next UID\r\n* OK [HIGHESTMODSEQ {h2}] Highest\r\n\
             * OK [MAILBOXID ({mid})] Ok\r\n",
            if closed {
                "* OK [CLOSED] Previous mailbox closed\r\n"
            } else {
                ""
            },
            if unseen { "* OK [UNSEEN 1] First unseen\r\n" } else { "" },
        )
    };
    // a client that knew the folder at h: what vanished since, then what changed
    let mut c = login(port);
    assert_eq!(
        c.cmd("q0", &format!("SELECT INBOX (QRESYNC ({v} {h}))")),
        "q0 BAD QRESYNC is not enabled\r\n"
    );
    assert_eq!(c.cmd("e", "ENABLE QRESYNC"), "* ENABLED QRESYNC\r\ne OK Enabled\r\n");
    assert_eq!(
        c.cmd("q1", &format!("EXAMINE INBOX (QRESYNC ({v} {h}))")),
        format!(
            "{}* VANISHED (EARLIER) 3:4\r\n* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ ({m2}))\r\n\
             q1 OK [READ-ONLY] EXAMINE completed\r\n",
            head(false, true)
        )
    );
    // only the UIDs it knows; the sequence-match data is accepted
    assert_eq!(
        c.cmd("q2", &format!("EXAMINE INBOX (QRESYNC ({v} {h} 1:2,4 (1:3 1:2,4)))")),
        format!(
            "{}* VANISHED (EARLIER) 4\r\n* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ ({m2}))\r\n\
             q2 OK [READ-ONLY] EXAMINE completed\r\n",
            head(true, true)
        )
    );
    // another UIDVALIDITY: nothing to resynchronise
    assert_eq!(
        c.cmd("q3", &format!("EXAMINE INBOX (QRESYNC ({} {h}))", v + 1)),
        format!("{}q3 OK [READ-ONLY] EXAMINE completed\r\n", head(true, true))
    );
    // UID FETCH (CHANGEDSINCE m VANISHED)
    assert_eq!(
        c.cmd("f1", &format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h} VANISHED)")),
        format!(
            "* VANISHED (EARLIER) 3:4\r\n* 2 FETCH (UID 2 MODSEQ ({m2}) FLAGS (\\Seen))\r\nf1 OK Fetch completed\r\n"
        )
    );
    assert_eq!(
        c.cmd("f2", &format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {h} VANISHED)")),
        "f2 BAD VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC enabled\r\n"
    );
    // an expunge by another session is told as VANISHED
    assert!(a.cmd("t3", "UID STORE 5 +FLAGS.SILENT (\\Deleted)").contains("t3 OK"));
    assert_eq!(
        a.cmd("x2", "UID EXPUNGE 5"),
        "* VANISHED 5\r\nx2 OK Expunge completed\r\n"
    );
    // a UID FETCH (VANISHED) before c is told: UID 5 is among the vanished, not fetched,
    // and the untagged VANISHED follows
    assert_eq!(
        c.cmd("f3", &format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h} VANISHED)")),
        format!(
            "* VANISHED (EARLIER) 3:5\r\n* 2 FETCH (UID 2 MODSEQ ({m2}) FLAGS (\\Seen))\r\n* VANISHED 5\r\n\
             f3 OK Fetch completed\r\n"
        )
    );
    assert_eq!(c.cmd("n", "NOOP"), "n OK Completed\r\n");
}

/// The message files of a local Maildir folder (`new/` and `cur/`).
fn local_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|s| std::fs::read_dir(dir.join(s)).into_iter().flatten())
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// Runs mbsync on the channel of `rc`; its output.
fn mbsync(home: &std::path::Path, rc: &std::path::Path) -> String {
    let out = std::process::Command::new("mbsync")
        .arg("-c")
        .arg(rc)
        .arg("-a")
        .env("HOME", home)
        .output()
        .expect("mbsync");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mbsync failed: {text}");
    text
}

#[test]
fn mbsync_resynchronises_new_mail_flag_changes_and_expunges_both_ways() {
    if !postern_tests::require_tool("mbsync", "isync") {
        return;
    }
    let (_inst, port) = started();
    let mut a = login(port);
    fill(&mut a, 3);
    let home = tempfile::tempdir().expect("home");
    let local = home.path().join("mail");
    std::fs::create_dir(&local).unwrap();
    let rc = home.path().join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount a\nHost 127.0.0.1\nPort {port}\nUser alice\nPass alice-pw\nSSLType None\n\n\
             IMAPStore remote\nAccount a\n\n\
             MaildirStore local\nPath {dir}/\nInbox {dir}/INBOX\n\n\
             Channel c\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nExpunge Both\nSyncState *\nSync All\n",
            dir = local.display()
        ),
    )
    .unwrap();
    mbsync(home.path(), &rc);
    let inbox = local.join("INBOX");
    assert_eq!(local_files(&inbox).len(), 3, "{:?}", local_files(&inbox));
    // on the server: message 1 flagged, message 2 expunged, a new message
    assert!(a.cmd("s", "SELECT INBOX").contains("s OK"));
    assert!(a.cmd("t", "STORE 1 +FLAGS (\\Flagged)").contains("t OK"));
    assert!(a.cmd("d", "STORE 2 +FLAGS (\\Deleted)").contains("d OK"));
    assert!(a.cmd("x", "EXPUNGE").contains("x OK"));
    let out = a.append("a9", "INBOX", b"Subject: m9\r\n\r\nbody of m9\r\n", false);
    assert!(out.contains("a9 OK"), "{out}");
    mbsync(home.path(), &rc);
    let files = local_files(&inbox);
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(files.iter().filter(|f| f.ends_with(":2,F")).count(), 1, "{files:?}");
    // locally: the flagged one read, the new one removed
    let cur = inbox.join("cur");
    let mut flagged = None;
    for f in local_files(&inbox) {
        let path = ["cur", "new"]
            .iter()
            .map(|s| inbox.join(s).join(&f))
            .find(|p| p.exists())
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        if f.ends_with(":2,F") {
            let to = cur.join(f.replace(":2,F", ":2,FS"));
            std::fs::rename(&path, &to).unwrap();
            flagged = Some(text);
        } else if text.contains("Subject: m9") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert!(flagged.unwrap().contains("Subject: m1"));
    mbsync(home.path(), &rc);
    // a is told of mbsync's changes: message 1 read, the new one (UID 4) expunged
    assert_eq!(
        a.cmd("n", "NOOP"),
        "* 3 EXPUNGE\r\n* 1 FETCH (UID 1 FLAGS (\\Seen \\Flagged))\r\nn OK Completed\r\n"
    );
    assert_eq!(
        a.cmd("f", "UID FETCH 1:* (FLAGS)"),
        "* 1 FETCH (UID 1 FLAGS (\\Seen \\Flagged))\r\n* 2 FETCH (UID 3 FLAGS ())\r\nf OK Fetch completed\r\n"
    );
    assert_eq!(local_files(&inbox).len(), 2, "{:?}", local_files(&inbox));
}
