//! COMPRESS=DEFLATE (RFC 4978) against the real imapd under master, with Python's zlib
//! as the client (raw deflate, wbits=-15): advertised only after login and not once
//! active, `OK` then both directions compressed, a second COMPRESS refused with
//! `NO [COMPRESSIONACTIVE]`, FETCH 1:* ENVELOPE over 300 messages decoded whole (bytes on
//! the wire against bytes inflated printed), and a zip bomb (64 MB of one line in about
//! 64 KB) refused with a BYE and a log line while the other session goes on; the same
//! session over implicit TLS (compression under TLS).

use postern_tests::{
    Instance, add_user, auth_service, daemon_service, free_port, imap_instance, owned_mail_base, repo_root,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

const MESSAGES: usize = 300;

fn client(port: u16, mode: &str) -> Command {
    let mut c = Command::new("python3");
    c.arg(repo_root().join("tests/scripts/imap_compress_client.py")).args([
        &port.to_string(),
        "alice",
        "Alice-Zip-Pw1",
        mode,
    ]);
    c
}

/// Writes the test's messages into alice's new/.
fn messages(inst: &Instance) {
    let new = inst.root.path().join("var/mail/alice/new");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(inst.root.path().join("var/mail/alice").join(d)).unwrap();
    }
    for i in 1..=MESSAGES {
        let msg = format!(
            "From: Sender {i} <sender{i}@example.test>\r\nTo: Alice <alice@example.test>\r\n\
             Date: Mon, 7 Dec 2026 07:{:02}:00 +0000\r\nSubject: Message number {i} of the test\r\n\
             Message-ID: <m{i}@example.test>\r\n\r\nbody {i}\r\n",
            i % 60
        );
        std::fs::write(new.join(format!("1700000{i:03}.M{i}P1.test")), msg).unwrap();
    }
}

/// The value of the first `KEY value` line.
fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn compress_deflate_both_ways_and_a_zip_bomb_is_refused() {
    let (mut inst, port) = imap_instance("alice", "Alice-Zip-Pw1");
    messages(&inst);
    owned_mail_base(&inst);
    inst.start();

    let mut session = client(port, "session")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(session.stdout.take().unwrap());
    let mut out = String::new();
    while !out.contains("READY") {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            session.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("client ended early:\n{out}\n{err}\n{}", inst.log());
        }
        out.push_str(&line);
    }
    assert!(!value(&out, "CAP_BEFORE").contains("COMPRESS"), "{out}");
    assert!(value(&out, "LOGIN").starts_with("a2 OK"), "{out}");
    assert!(value(&out, "CAP_AFTER").contains(" COMPRESS=DEFLATE"), "{out}");
    assert_eq!(value(&out, "COMPRESS"), "a4 OK DEFLATE active", "{out}");
    let caps = value(&out, "CAP_COMPRESSED");
    assert!(caps.starts_with("* CAPABILITY ") && !caps.contains("COMPRESS"), "{out}");
    assert_eq!(
        value(&out, "AGAIN"),
        "a6 NO [COMPRESSIONACTIVE] DEFLATE is already active",
        "{out}"
    );
    assert!(value(&out, "SELECT").contains(&format!("* {MESSAGES} EXISTS")), "{out}");
    assert_eq!(value(&out, "FETCHES"), MESSAGES.to_string(), "{out}");
    assert_eq!(value(&out, "SUBJECTS"), MESSAGES.to_string(), "{out}");
    assert!(value(&out, "FETCH_TAG").starts_with("a8 OK"), "{out}");
    let wire: usize = value(&out, "FETCH_WIRE").parse().unwrap();
    let plain: usize = value(&out, "FETCH_PLAIN").parse().unwrap();
    println!("FETCH 1:{MESSAGES} ENVELOPE: {wire} bytes on the wire, {plain} inflated");
    assert!(plain > 50_000 && wire * 4 < plain, "{wire} on the wire for {plain}");

    // a zip bomb: one line of 64 MB in about 64 KB
    let bomb = client(port, "bomb").output().unwrap();
    let bomb_out = String::from_utf8_lossy(&bomb.stdout);
    assert!(
        bomb.status.success(),
        "{bomb_out}\n{}",
        String::from_utf8_lossy(&bomb.stderr)
    );
    let sent: usize = value(&bomb_out, "BOMB").parse().unwrap();
    assert!(sent < 200 * 1024, "{bomb_out}");
    assert!(value(&bomb_out, "GOT").contains("* BYE [TOOBIG]"), "{bomb_out}");
    assert!(
        inst.log_count("command line too long from 127.0.0.1") >= 1,
        "{}",
        inst.log()
    );
    // the other session goes on
    let mut stdin = session.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(session.wait().unwrap().success(), "{rest}");
    assert!(value(&rest, "NOOP").starts_with("a9 OK"), "{rest}");
    assert!(value(&rest, "LOGOUT").starts_with("a10 OK"), "{rest}");
    assert!(
        postern_tests::wait_for(std::time::Duration::from_secs(5), || inst
            .log_count("compressed output: ")
            >= 2),
        "{}",
        inst.log()
    );
}

#[test]
fn compress_deflate_under_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = postern_tests::self_signed_cert(dir.path());
    if postern_tests::is_root() {
        let _ = std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service(
            "imaps",
            "inet",
            &format!("127.0.0.1:{port}"),
            "imapd",
            "args = [\"tls\"]"
        ),
    );
    let cert_set = format!("imapd_tls_cert_file={}", cert.display());
    let key_set = format!("imapd_tls_key_file={}", key.display());
    let mut inst = Instance::new(&services, &[&cert_set, &key_set]);
    add_user(&inst, "alice", "Alice-Zip-Pw1");
    messages(&inst);
    owned_mail_base(&inst);
    inst.start();
    let run = client(port, "tls").output().unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{out}\n{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(value(&out, "COMPRESS"), "a4 OK DEFLATE active", "{out}");
    assert_eq!(value(&out, "FETCHES"), MESSAGES.to_string(), "{out}");
    assert_eq!(value(&out, "SUBJECTS"), MESSAGES.to_string(), "{out}");
    assert!(value(&out, "LOGOUT").starts_with("a10 OK"), "{out}");
    let wire: usize = value(&out, "FETCH_WIRE").parse().unwrap();
    let plain: usize = value(&out, "FETCH_PLAIN").parse().unwrap();
    println!("under TLS, FETCH 1:{MESSAGES} ENVELOPE: {wire} compressed bytes for {plain} inflated");
    assert!(wire * 4 < plain, "{wire} compressed for {plain}");
}
