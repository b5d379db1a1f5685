//! imapd with a real third-party IMAP client: fetchmail (when installed;
//! `.ci/install-packages` installs it for pop3d) fetches both messages of an INBOX over
//! IMAP through an MDA, marks them deleted and expunges them, leaving the Maildir empty.

use postern_tests::{Instance, add_user, auth_service, daemon_service, deliver_maildir, free_port};
use std::process::Command;

#[test]
fn fetchmail_fetches_and_expunges_over_imap() {
    if !postern_tests::require_tool("fetchmail", "fetchmail") {
        return;
    }
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", "")
    );
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "alice", "Alice-Imap-Pw1");
    inst.start();
    deliver_maildir(
        &inst,
        "alice",
        "1700000300.M1P1.test",
        b"From: x@example.test\nSubject: first\n\nfirst body\n",
    );
    deliver_maildir(
        &inst,
        "alice",
        "1700000301.M2P2.test",
        b"From: y@example.test\nSubject: second\n\nsecond body\n",
    );
    let home = tempfile::tempdir().expect("home");
    let out_dir = home.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir out");
    let rc = home.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no syslog\npoll 127.0.0.1 with protocol IMAP and port {port} and auth password:\n  user \"alice\" there with password \"Alice-Imap-Pw1\" is \"root\" here\n  sslproto '' mda \"/bin/sh -c 'cat > {}/msg.$$'\"\n",
            out_dir.display()
        ),
    )
    .expect("write rc");
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let out = Command::new("fetchmail")
        .arg("-f")
        .arg(&rc)
        .args(["--nodetach", "-v"])
        .env("HOME", home.path())
        .env("FETCHMAILHOME", home.path())
        .output()
        .expect("fetchmail");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fetchmail failed: {text}");
    let mut got: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("out dir")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    got.sort();
    assert_eq!(got.len(), 2, "{text}");
    assert!(
        got[0].contains("Subject: first") && got[0].contains("first body"),
        "{got:?}"
    );
    assert!(
        got[1].contains("Subject: second") && got[1].contains("second body"),
        "{got:?}"
    );
    let md = inst.root.path().join("var/mail/alice");
    let left: usize = ["new", "cur"]
        .iter()
        .map(|d| std::fs::read_dir(md.join(d)).map(|r| r.count()).unwrap_or(0))
        .sum();
    assert_eq!(left, 0, "fetchmail expunged what it fetched: {text}");
    inst.stop();
}
