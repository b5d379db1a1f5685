//! The whole path into an IMAP mailbox: a message sent with Python's smtplib to smtpd goes
//! through cleanup, qmgr, trivial-rewrite and local into alice's Maildir, and imapd's
//! BODY[] returns exactly the bytes smtpd accepted, after the headers the pipeline added.
//! The services are the shipped `etc/master.toml` with free ports.

use postern_tests::{Instance, add_user, free_port, owned_mail_base, repo_root};
use std::process::Command;

const SCRIPT: &str = r#"
import imaplib, smtplib, sys, time
smtp_port, imap_port = int(sys.argv[1]), int(sys.argv[2])
msg = (b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: round trip\r\n"
       b"Message-ID: <rt1@example.test>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n"
       b"line one\r\n.leading dot\r\n\r\nlast line\r\n")
with smtplib.SMTP('127.0.0.1', smtp_port) as s:
    s.sendmail('bob@example.test', ['alice@example.test'], msg)
M = imaplib.IMAP4('127.0.0.1', imap_port)
M.login('alice', 'Alice-Imap-Pw1')
for _ in range(300):
    typ, data = M.status('INBOX', '(MESSAGES)')
    if b'MESSAGES 1' in data[0]:
        break
    time.sleep(0.1)
else:
    raise SystemExit('not delivered: %r' % data)
M.select('INBOX')
typ, data = M.fetch('1', '(BODY.PEEK[] BODY.PEEK[TEXT])')
whole, text = data[0][1], data[1][1]
assert whole.endswith(msg), whole
added = whole[:-len(msg)]
assert b'Return-Path: <bob@example.test>\r\n' in added, added
assert b'Received: ' in added, added
assert text == b"line one\r\n.leading dot\r\n\r\nlast line\r\n", text
M.logout()
print('roundtrip ok')
"#;

#[test]
fn smtp_to_imap_is_byte_exact() {
    let mut services = std::fs::read_to_string(repo_root().join("etc/master.toml")).expect("master.toml");
    let (smtp, imap) = (free_port(), free_port());
    services = services.replace("127.0.0.1:2525", &format!("127.0.0.1:{smtp}"));
    services = services.replace("127.0.0.1:1143", &format!("127.0.0.1:{imap}"));
    for fixed in ["127.0.0.1:2587", "127.0.0.1:1110"] {
        services = services.replace(fixed, &format!("127.0.0.1:{}", free_port()));
    }
    let mut inst = Instance::new(&services, &["queue_run_delay=1s", "minimal_backoff_time=1s"]);
    add_user(&inst, "alice", "Alice-Imap-Pw1");
    owned_mail_base(&inst);
    inst.start();
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(smtp.to_string())
        .arg(imap.to_string())
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("roundtrip ok"),
        "{text}\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        inst.log()
    );
    inst.stop();
}
