//! pop3d under the real master, with auth, driven by Python's poplib: exact LIST, UIDL,
//! RETR and TOP output over a Maildir filled the way a delivery agent fills it, DELE
//! applied at QUIT only, one session per mailbox ([IN-USE]), STLS with a certificate made
//! by openssl, and cleartext passwords refused where the client is not trusted.

use postern_tests::{Instance, add_user, auth_service, daemon_service, deliver_maildir, free_port, python};
use std::path::{Path, PathBuf};

const MSG1: &[u8] = b"From: a@example.test\r\nSubject: one\r\n\r\nline1\r\n.dot line\r\nline3\r\n";
const MSG2: &[u8] = b"From: b@example.test\nSubject: two\n\nbody two\n";

fn maildir(inst: &Instance, user: &str) -> PathBuf {
    inst.root.path().join("var/mail").join(user)
}

fn deliver(inst: &Instance, user: &str, name: &str, bytes: &[u8]) {
    deliver_maildir(inst, user, name, bytes);
}

fn instance(settings: &[&str]) -> (Instance, u16) {
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("pop3", "inet", &format!("127.0.0.1:{port}"), "pop3d", "")
    );
    let mut inst = Instance::new(&services, settings);
    add_user(&inst, "alice", "Alice-Pop-Pw1");
    inst.start();
    (inst, port)
}

fn count(dir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|d| std::fs::read_dir(dir.join(d)).map(|r| r.count()).unwrap_or(0))
        .sum()
}

#[test]
fn list_uidl_retr_top_and_dele_at_quit_only() {
    let (inst, port) = instance(&[]);
    deliver(&inst, "alice", "1700000000.M1P1.test", MSG1);
    deliver(&inst, "alice", "1700000001.M2P2.test", MSG2);
    let out = python(&format!(
        r#"
import poplib
p = poplib.POP3('127.0.0.1', {port}, timeout=30)
p.user('alice'); p.pass_('Alice-Pop-Pw1')
print('STAT', p.stat())
print('LIST', p.list()[1])
print('UIDL', p.uidl()[1])
print('UIDL1', p.uidl(1))
r = p.retr(1); print('RETR1', r[0], r[1], r[2])
r = p.retr(2); print('RETR2', r[0], r[1], r[2])
print('TOP', p.top(2, 0)[1])
print('TOP1', p.top(1, 1)[1])
try:
    q = poplib.POP3('127.0.0.1', {port}, timeout=30); q.user('alice'); q.pass_('Alice-Pop-Pw1'); print('SECOND ok')
except poplib.error_proto as e:
    print('SECOND', e)
try:
    p.retr(9)
except poplib.error_proto as e:
    print('RETR9', e)
print('DELE', p.dele(1))
p.sock.close()  # dropped: nothing deleted
"#
    ));
    assert!(out.contains("STAT (2, 111)"), "{out}");
    assert!(out.contains("LIST [b'1 63', b'2 48']"), "{out}");
    assert!(
        out.contains("UIDL [b'1 1700000000.M1P1.test', b'2 1700000001.M2P2.test']"),
        "{out}"
    );
    assert!(out.contains("UIDL1 b'+OK 1 1700000000.M1P1.test'"), "{out}");
    assert!(
        out.contains(
            "RETR1 b'+OK 63 octets' [b'From: a@example.test', b'Subject: one', b'', b'line1', b'.dot line', b'line3'] 63"
        ),
        "{out}"
    );
    assert!(
        out.contains("RETR2 b'+OK 48 octets' [b'From: b@example.test', b'Subject: two', b'', b'body two'] 48"),
        "{out}"
    );
    assert!(
        out.contains("TOP [b'From: b@example.test', b'Subject: two', b'']"),
        "{out}"
    );
    assert!(
        out.contains("TOP1 [b'From: a@example.test', b'Subject: one', b'', b'line1']"),
        "{out}"
    );
    assert!(out.contains("SECOND b'-ERR [IN-USE]"), "{out}");
    assert!(out.contains("RETR9 b'-ERR No such message'"), "{out}");
    assert!(out.contains("DELE b'+OK"), "{out}");
    let md = maildir(&inst, "alice");
    assert_eq!(count(&md), 2, "a dropped connection deletes nothing");
    // The lock went with the dropped connection; this time QUIT commits the DELE.
    let out = python(&format!(
        r#"
import poplib, time
for i in range(100):
    try:
        p = poplib.POP3('127.0.0.1', {port}, timeout=30); p.user('alice'); p.pass_('Alice-Pop-Pw1'); break
    except poplib.error_proto as e:
        if b'IN-USE' not in e.args[0]: raise
        time.sleep(0.1)
print('UIDL', p.uidl()[1])
print('DELE', p.dele(1))
print('STAT', p.stat())
print('QUIT', p.quit())
p = poplib.POP3('127.0.0.1', {port}, timeout=30); p.user('alice'); p.pass_('Alice-Pop-Pw1')
print('AFTER', p.uidl()[1])
p.quit()
"#
    ));
    assert!(out.contains("STAT (1, 48)"), "{out}");
    assert!(out.contains("QUIT b'+OK Bye (1 messages deleted)'"), "{out}");
    assert!(out.contains("AFTER [b'1 1700000001.M2P2.test']"), "{out}");
    assert_eq!(count(&md), 1);
    let log = inst.log();
    assert!(log.contains("login: user=alice, client=127.0.0.1"), "{log}");
    assert!(!log.contains("Alice-Pop-Pw1"));
}

#[test]
fn stls_and_plaintext_refused_from_untrusted_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = postern_tests::self_signed_cert(dir.path());
    if postern_tests::is_root() {
        // pop3d reads them before dropping privileges, but the test dir must be reachable.
        let _ = std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    let cert_set = format!("pop3d_tls_cert_file={}", cert.display());
    let key_set = format!("pop3d_tls_key_file={}", key.display());
    let (inst, port) = instance(&[&cert_set, &key_set, "pop3d_secure_networks=[\"192.0.2.0/24\"]"]);
    deliver(&inst, "alice", "1700000000.M1P1.test", MSG1);
    let out = python(&format!(
        r#"
import poplib, ssl, base64
p = poplib.POP3('127.0.0.1', {port}, timeout=30)
print('CAPA', sorted(p.capa().keys()))
try:
    p.user('alice')
except poplib.error_proto as e:
    print('USER', e)
try:
    p._shortcmd('AUTH PLAIN ' + base64.b64encode(b'\0alice\0Alice-Pop-Pw1').decode())
except poplib.error_proto as e:
    print('AUTH', e)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
print('STLS', p.stls(ctx))
print('CAPA2', sorted(p.capa().keys()))
print('AUTH2', p._shortcmd('AUTH PLAIN ' + base64.b64encode(b'\0alice\0Alice-Pop-Pw1').decode()))
print('STAT', p.stat())
print('RETR', p.retr(1)[1])
p.quit()
"#
    ));
    assert!(
        out.contains(
            "CAPA ['AUTH-RESP-CODE', 'IMPLEMENTATION', 'PIPELINING', 'RESP-CODES', 'STLS', 'TOP', 'UIDL', 'UTF8']"
        ),
        "{out}"
    );
    assert!(
        out.contains("USER b'-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections'"),
        "{out}"
    );
    assert!(out.contains("AUTH b'-ERR [AUTH] Plaintext"), "{out}");
    assert!(out.contains("STLS b'+OK Begin TLS negotiation now'"), "{out}");
    assert!(
        out.contains(
            "CAPA2 ['AUTH-RESP-CODE', 'IMPLEMENTATION', 'PIPELINING', 'RESP-CODES', 'SASL', 'TOP', 'UIDL', 'USER', 'UTF8']"
        ),
        "{out}"
    );
    assert!(out.contains("AUTH2 b'+OK Logged in"), "{out}");
    assert!(out.contains("STAT (1, 63)"), "{out}");
    assert!(
        out.contains("RETR [b'From: a@example.test', b'Subject: one', b'', b'line1', b'.dot line', b'line3']"),
        "{out}"
    );
}

fn greeted(port: u16) -> std::net::TcpStream {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let mut greeting = [0u8; 64];
    let n = s.read(&mut greeting).expect("greeting");
    assert!(
        greeting[..n].starts_with(b"+OK"),
        "{:?}",
        String::from_utf8_lossy(&greeting[..n])
    );
    s
}

fn rest(mut s: std::net::TcpStream) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn pipelined_commands_long_lines_and_autologout() {
    use std::io::Write;
    let (inst, port) = instance(&["pop3d_timeout=10s"]);
    deliver(&inst, "alice", "1700000000.M1P1.test", MSG1);
    // RFC 2449 PIPELINING: everything in one write, answers in order.
    let mut s = greeted(port);
    s.write_all(b"USER alice\r\nPASS Alice-Pop-Pw1\r\nSTAT\r\nUIDL 1\r\nLIST 1\r\nQUIT\r\n")
        .expect("write");
    assert_eq!(
        rest(s),
        "+OK Send your password\r\n+OK Logged in, 1 messages (63 octets)\r\n+OK 1 63\r\n\
         +OK 1 1700000000.M1P1.test\r\n+OK 1 63\r\n+OK Bye (0 messages deleted)\r\n"
    );
    // A command line over the limit is refused and the connection closed.
    let mut s = greeted(port);
    let mut long = vec![b'A'; 5000];
    long.extend_from_slice(b"\r\nNOOP\r\n");
    s.write_all(&long).expect("write");
    assert_eq!(rest(s), "-ERR Command line too long\r\n");
    // A client that never logs in is logged out.
    let s = greeted(port);
    assert_eq!(rest(s), "-ERR Autologout; idle for too long\r\n");
}

/// pop3d writes "+OK" and then streams the message in a second write; with Nagle's
/// algorithm on, that write waited for poplib's delayed ACK, about 40 ms per RETR (100
/// RETRs took 4.4 s, found by the session-end A/B benchmark). The driver sets TCP_NODELAY.
#[test]
fn retr_is_not_held_back_by_delayed_acks() {
    let (inst, port) = instance(&[]);
    for i in 0..100 {
        deliver(&inst, "alice", &format!("17000001{i:02}.M{i}P1.test"), MSG1);
    }
    let out = python(&format!(
        r#"
import poplib, time
p = poplib.POP3('127.0.0.1', {port}, timeout=30)
p.user('alice'); p.pass_('Alice-Pop-Pw1')
t = time.monotonic()
ok = sum(1 for i in range(1, 101) if p.retr(i)[0].startswith(b'+OK'))
print('retr %d in %.2f s' % (ok, time.monotonic() - t))
p.quit()
"#
    ));
    let secs: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("retr 100 in "))
        .and_then(|s| s.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("not every RETR answered:\n{out}"));
    assert!(secs < 2.0, "100 RETRs took {secs} s (delayed ACKs?)");
}
