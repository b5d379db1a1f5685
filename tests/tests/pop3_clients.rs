//! pop3d with more clients: a large message over plaintext and over implicit TLS (the
//! pop3s service, Python's POP3_SSL), UIDLs the same over both and after IMAP-side
//! numbering, and fetchmail (when installed; `.ci/install-packages` installs it) fetching
//! and deleting through a real MDA.

use postern_tests::{Instance, add_user, auth_service, daemon_service, deliver_maildir, free_port, python};
use std::process::Command;

fn cert(dir: &std::path::Path) -> (String, String) {
    let (cert, key) = postern_tests::self_signed_cert(dir);
    (
        format!("pop3d_tls_cert_file={}", cert.display()),
        format!("pop3d_tls_key_file={}", key.display()),
    )
}

/// A message of about `n` bytes whose lines include dot-leading ones.
fn big_message(n: usize) -> Vec<u8> {
    let mut m = b"From: big@example.test\r\nSubject: big\r\n\r\n".to_vec();
    let mut i = 0usize;
    while m.len() < n {
        if i.is_multiple_of(7) {
            m.extend_from_slice(format!(".line {i} starts with a dot\r\n").as_bytes());
        } else {
            m.extend_from_slice(format!("line {i} of the big message, some filler text here\r\n").as_bytes());
        }
        i += 1;
    }
    m
}

#[test]
fn large_message_over_plaintext_and_pop3s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_set, key_set) = cert(dir.path());
    let port = free_port();
    let sport = free_port();
    let services = format!(
        "{}{}{}",
        auth_service(),
        daemon_service("pop3", "inet", &format!("127.0.0.1:{port}"), "pop3d", ""),
        daemon_service(
            "pop3s",
            "inet",
            &format!("127.0.0.1:{sport}"),
            "pop3d",
            "args = [\"tls\"]"
        )
    );
    let mut inst = Instance::new(&services, &[&cert_set, &key_set]);
    add_user(&inst, "alice", "Alice-Pop-Pw1");
    inst.start();
    let msg = big_message(3 << 20);
    deliver_maildir(&inst, "alice", "1700000100.M1P1.test", &msg);
    let expect_md5 = {
        let out = Command::new("md5sum")
            .arg(inst.root.path().join("var/mail/alice/new/1700000100.M1P1.test"))
            .output()
            .expect("md5sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let script = |ssl: bool, p: u16| {
        format!(
            r#"
import poplib, ssl, hashlib
if {ssl}:
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    p = poplib.POP3_SSL('127.0.0.1', {p}, context=ctx, timeout=60)
else:
    p = poplib.POP3('127.0.0.1', {p}, timeout=60)
p.user('alice'); p.pass_('Alice-Pop-Pw1')
print('UIDL', p.uidl()[1])
r = p.retr(1)
print('MD5', hashlib.md5(b''.join(l + b'\r\n' for l in r[1])).hexdigest(), r[2])
p.quit()
"#,
            ssl = if ssl { "True" } else { "False" }
        )
    };
    let plain = python(&script(false, port));
    let tls = python(&script(true, sport));
    for out in [&plain, &tls] {
        assert!(out.contains("UIDL [b'1 1700000100.M1P1.test']"), "{out}");
        assert!(out.contains(&format!("MD5 {expect_md5} {}", msg.len())), "{out}");
    }
    assert!(inst.log().contains("login: user=alice, client=127.0.0.1, tls=true"));
    inst.stop();
}

#[test]
fn fetchmail_fetches_and_deletes() {
    if !postern_tests::require_tool("fetchmail", "fetchmail") {
        return;
    }
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("pop3", "inet", &format!("127.0.0.1:{port}"), "pop3d", "")
    );
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "alice", "Alice-Pop-Pw1");
    inst.start();
    deliver_maildir(
        &inst,
        "alice",
        "1700000200.M1P1.test",
        b"From: x@example.test\nSubject: first\n\nfirst body\n",
    );
    deliver_maildir(
        &inst,
        "alice",
        "1700000201.M2P2.test",
        b"From: y@example.test\nSubject: second\n\n.dotted\n",
    );
    let home = tempfile::tempdir().expect("home");
    let out_dir = home.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir out");
    let rc = home.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no syslog\npoll 127.0.0.1 with protocol POP3 and port {port} and auth password:\n  user \"alice\" there with password \"Alice-Pop-Pw1\" is \"root\" here\n  sslproto '' mda \"/bin/sh -c 'cat > {}/msg.$$'\"\n",
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
        got.iter()
            .any(|m| m.contains("Subject: first") && m.contains("first body")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|m| m.contains("Subject: second") && m.contains("\n.dotted")),
        "{got:?}"
    );
    let md = inst.root.path().join("var/mail/alice");
    let left: usize = ["new", "cur"]
        .iter()
        .map(|d| std::fs::read_dir(md.join(d)).map(|r| r.count()).unwrap_or(0))
        .sum();
    assert_eq!(left, 0, "fetchmail deleted what it fetched: {text}");
    inst.stop();
}
