//! imapd with TLS under the real master: STARTTLS (advertised before login, not after;
//! LOGIN over the upgraded connection) and implicit TLS on an `imaps` service, driven by
//! Python's imaplib with a certificate made by openssl.

use postern_tests::{Instance, add_user, auth_service, daemon_service, free_port, owned_mail_base};
use std::process::Command;

const SCRIPT: &str = r#"
import imaplib, ssl, sys
port, tls_port = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4('127.0.0.1', port)
assert 'STARTTLS' in M.capabilities, M.capabilities
typ, _ = M.starttls(ssl_context=ctx)
assert typ == 'OK'
assert 'STARTTLS' not in M.capabilities, M.capabilities
M.login('alice', 'Alice-Imap-Pw1')
typ, data = M.select('INBOX')
assert typ == 'OK', data
M.append('INBOX', None, None, b'Subject: over tls\r\n\r\nsecret\r\n')
typ, data = M.fetch('1', '(BODY.PEEK[TEXT])')
assert data[0][1] == b'secret\r\n', data
M.logout()
S = imaplib.IMAP4_SSL('127.0.0.1', tls_port, ssl_context=ctx)
assert 'STARTTLS' not in S.capabilities, S.capabilities
S.login('alice', 'Alice-Imap-Pw1')
typ, data = S.select('INBOX')
assert data == [b'1'], data
typ, data = S.fetch('1', '(BODY[HEADER.FIELDS (SUBJECT)])')
assert data[0][1] == b'Subject: over tls\r\n\r\n', data
S.logout()
print('tls ok')
"#;

#[test]
fn starttls_and_implicit_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = postern_tests::self_signed_cert(dir.path());
    if postern_tests::is_root() {
        let _ = std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    let (port, tls_port) = (free_port(), free_port());
    let services = format!(
        "{}{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", ""),
        daemon_service(
            "imaps",
            "inet",
            &format!("127.0.0.1:{tls_port}"),
            "imapd",
            "args = [\"tls\"]"
        ),
    );
    let cert_set = format!("imapd_tls_cert_file={}", cert.display());
    let key_set = format!("imapd_tls_key_file={}", key.display());
    let mut inst = Instance::new(&services, &[&cert_set, &key_set]);
    add_user(&inst, "alice", "Alice-Imap-Pw1");
    owned_mail_base(&inst);
    inst.start();
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(port.to_string())
        .arg(tls_port.to_string())
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("tls ok"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    inst.stop();
}
