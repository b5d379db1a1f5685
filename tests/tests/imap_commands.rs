//! Every IMAP4rev1 command (RFC 3501) against the real imapd started by the real master,
//! with exact responses checked by tests/scripts/imap_commands.py (a raw client, plus
//! Python's imaplib): CAPABILITY, LOGIN, NAMESPACE, LIST, CREATE/RENAME/DELETE with
//! hierarchies, SUBSCRIBE/UNSUBSCRIBE/LSUB, APPEND with flags, dates, synchronising and
//! LITERAL+ literals (APPENDUID), STATUS, EXAMINE (read-only), SELECT, FETCH (sizes,
//! INTERNALDATE, BODYSTRUCTURE, MIME part sections, HEADER.FIELDS(.NOT), partials, \Seen
//! on BODY[]), SEARCH with every key and CHARSET UTF-8 (encoded words and 8-bit bodies),
//! STORE variants, COPY/MOVE (COPYUID), UID EXPUNGE, CHECK, CLOSE, UNSELECT, ENABLE, ID,
//! and BAD for malformed commands with the session going on.

use postern_tests::*;

#[test]
fn every_rfc3501_command_answers_as_specified() {
    let imap = free_port();
    let mut services = daemon_service("imap", "inet", &format!("127.0.0.1:{imap}"), "imapd", "");
    services.push_str(&auth_service());
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "alice", "alice-pw");
    inst.start();
    let out = std::process::Command::new("python3")
        .arg(repo_root().join("tests/scripts/imap_commands.py"))
        .args([&imap.to_string(), "alice", "alice-pw"])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("ALL OK\n"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        inst.log()
    );
    assert_eq!(stdout.matches("CHECK ").count(), 11, "{stdout}");
}
