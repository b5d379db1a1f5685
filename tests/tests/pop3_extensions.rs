//! pop3d's RFC 2449 / 3206 / 6856 extensions under the real master, from raw sockets
//! (exact bytes) and Python's poplib: CAPA, PIPELINING (a whole session in one write,
//! answered in order across the auth round trip and a streamed RETR), the response
//! codes `[AUTH]`, `[IN-USE]` and `[SYS/TEMP]` (auth unreachable, the server stopping)
//! where they apply, and UTF8 with a UTF-8 password.

use postern_tests::{Instance, add_user, auth_service, daemon_service, deliver_maildir, free_port, python};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const MSG: &[u8] = b"From: a@example.test\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\nline1\r\n.dot\r\n";
/// A password with non-ASCII characters (RFC 6856 `UTF8 USER`).
const PASSWORD: &str = "Pässwörd-☃-1";

fn instance(with_auth: bool) -> (Instance, u16) {
    let port = free_port();
    let auth = if with_auth { auth_service() } else { String::new() };
    let services = format!(
        "{auth}{}",
        daemon_service("pop3", "inet", &format!("127.0.0.1:{port}"), "pop3d", "")
    );
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "alice", PASSWORD);
    deliver_maildir(&inst, "alice", "1700000000.M1P1.test", MSG);
    inst.start();
    (inst, port)
}

fn greeted(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        assert_eq!(s.read(&mut b).expect("greeting"), 1);
        line.push(b[0]);
    }
    assert!(line.starts_with(b"+OK"), "{:?}", String::from_utf8_lossy(&line));
    s
}

/// Everything the server sends until it closes.
fn rest(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn capa_utf8_and_a_pipelined_session_in_one_write() {
    let (inst, port) = instance(true);
    let out = python(&format!(
        r#"
import poplib
p = poplib.POP3('127.0.0.1', {port}, timeout=30)
caps = p.capa()
print('CAPA', sorted(caps.items()))
print('UTF8', p._shortcmd('UTF8'))
p.user('alice')
print('PASS', p.pass_({PASSWORD:?}))
print('RETR', p.retr(1)[1])
try:
    p._shortcmd('UTF8')
except poplib.error_proto as e:
    print('UTF8-AFTER', e)
p.quit()
"#
    ));
    assert!(
        out.contains(
            "CAPA [('AUTH-RESP-CODE', []), ('IMPLEMENTATION', ['Postern']), ('PIPELINING', []), \
             ('RESP-CODES', []), ('SASL', ['PLAIN']), ('TOP', []), ('UIDL', []), ('USER', []), \
             ('UTF8', ['USER'])]"
        ),
        "{out}"
    );
    assert!(out.contains("UTF8 b'+OK UTF8 enabled'"), "{out}");
    assert!(out.contains("PASS b'+OK Logged in, 1 messages (75 octets)'"), "{out}");
    assert!(
        out.contains("RETR [b'From: a@example.test', b'Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=', b'', b'line1', b'.dot']"),
        "{out}"
    );
    assert!(
        out.contains("UTF8-AFTER b'-ERR UTF8 is allowed before login only'"),
        "{out}"
    );

    // RFC 2449 PIPELINING: a wrong password, the right one (UTF-8), then the whole
    // transaction, in one write; every answer comes in order, the RETR streamed from
    // the file in the middle (dot-stuffed), nothing after QUIT
    let mut s = greeted(port);
    let mut burst = Vec::new();
    burst.extend_from_slice(b"UTF8\r\nUSER alice\r\nPASS wrong\r\nUSER alice\r\n");
    burst.extend_from_slice(format!("PASS {PASSWORD}\r\n").as_bytes());
    burst.extend_from_slice(b"STAT\r\nRETR 1\r\nTOP 1 0\r\nUIDL\r\nDELE 1\r\nLIST\r\nRSET\r\nQUIT\r\nNOOP\r\n");
    s.write_all(&burst).expect("write");
    assert_eq!(
        rest(s),
        "+OK UTF8 enabled\r\n\
         +OK Send your password\r\n\
         -ERR [AUTH] Authentication failed\r\n\
         +OK Send your password\r\n\
         +OK Logged in, 1 messages (75 octets)\r\n\
         +OK 1 75\r\n\
         +OK 75 octets\r\nFrom: a@example.test\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\nline1\r\n..dot\r\n.\r\n\
         +OK\r\nFrom: a@example.test\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\n.\r\n\
         +OK\r\n1 1700000000.M1P1.test\r\n.\r\n\
         +OK Marked to be deleted\r\n\
         +OK\r\n.\r\n\
         +OK 1 messages\r\n\
         +OK Bye (0 messages deleted)\r\n"
    );
    // a line that is not UTF-8 is refused, not guessed at
    let mut s = greeted(port);
    s.write_all(b"USER j\xfcrgen\r\nQUIT\r\n").expect("write");
    assert_eq!(rest(s), "-ERR Command line is not UTF-8\r\n+OK Bye\r\n");
    drop(inst);
}

#[test]
fn response_codes_in_use_and_sys_temp() {
    let (inst, port) = instance(true);
    // [IN-USE]: the mailbox is held by the first session
    let mut first = greeted(port);
    first
        .write_all(format!("USER alice\r\nPASS {PASSWORD}\r\nNOOP\r\n").as_bytes())
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains("+OK \r\n") {
        let n = first.read(&mut buf).expect("read");
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let mut second = greeted(port);
    second
        .write_all(format!("USER alice\r\nPASS {PASSWORD}\r\nQUIT\r\n").as_bytes())
        .expect("write");
    assert_eq!(
        rest(second),
        "+OK Send your password\r\n-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n+OK Bye\r\n"
    );
    first.write_all(b"QUIT\r\n").expect("write");
    assert!(rest(first).ends_with("+OK Bye (0 messages deleted)\r\n"));
    // [SYS/TEMP]: the server stops under a session
    let idle = greeted(port);
    let mut inst = inst;
    inst.stop();
    assert_eq!(rest(idle), "-ERR [SYS/TEMP] Server shutting down, try again later\r\n");

    // [SYS/TEMP]: the auth service is not there, the password cannot be checked
    let (inst, port) = instance(false);
    let mut s = greeted(port);
    s.write_all(format!("USER alice\r\nPASS {PASSWORD}\r\nQUIT\r\n").as_bytes())
        .expect("write");
    assert_eq!(
        rest(s),
        "+OK Send your password\r\n\
         -ERR [SYS/TEMP] Authentication is not available now, try again later\r\n+OK Bye\r\n"
    );
    assert!(inst.log().contains("auth"), "{}", inst.log());
}
