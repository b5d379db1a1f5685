//! Variants of issue 10's attacks found by attacking the fixed system again, each through
//! the real master and real sockets (Python for the clients):
//!
//! - one address opening many logins with wrong passwords at once filled auth's
//!   verification queue, and a right password from anywhere else was answered
//!   `NO [UNAVAILABLE]` at once: now each address has at most two checks in the pool, the
//!   rest wait (and pay the address's penalty), and others log in;
//! - forty SMTP clients that reach DATA and then send slowly held every cleanup process
//!   (one connection each, `maxproc = 32`), and nobody else's DATA got a `354`: cleanup
//!   now serves each connection on a thread of its own.

use postern_tests::{Instance, add_user, auth_service, daemon_service, free_port, pipeline_services, python};

/// 80 wrong LOGINs at once from 127.0.0.9 (more than auth's queue of 64 and its threads),
/// then bob's right password from 127.0.0.10 is accepted within seconds.
const BURST: &str = r#"
import socket, threading, time
IMAP = {imap}
def login(src, user, pw, out):
    try:
        s = socket.create_connection(('127.0.0.1', IMAP), 60, source_address=(src, 0))
        f = s.makefile('rb')
        f.readline()
        s.sendall(b'l LOGIN %s %s\r\n' % (user.encode(), pw.encode()))
        while True:
            line = f.readline()
            if not line or line.startswith(b'l '):
                out.append(line.decode().strip())
                return
    except Exception as e:
        out.append('error %r' % e)
wrong = []
for i in range(80):
    threading.Thread(target=login, args=('127.0.0.9', 'alice', 'wrong%d' % i, wrong), daemon=True).start()
time.sleep(1.0)
right = []
t = time.monotonic()
login('127.0.0.10', 'bob', 'Bob-Burst-2', right)
print('bob', right[0])
print('seconds %.2f' % (time.monotonic() - t))
"#;

#[test]
fn a_burst_of_guesses_from_one_address_does_not_refuse_anybody_else() {
    let imap = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{imap}"), "imapd", "maxproc = 1")
    );
    // No per-address cap on unauthenticated connections, so the burst reaches auth.
    let mut inst = Instance::new(&services, &["login_client_connection_count_limit=0"]);
    add_user(&inst, "alice", "Alice-Burst-1");
    add_user(&inst, "bob", "Bob-Burst-2");
    inst.start();
    let out = python(&BURST.replace("{imap}", &imap.to_string()));
    let bob = out.lines().find(|l| l.starts_with("bob ")).unwrap_or_default();
    assert!(
        bob.starts_with("bob l OK"),
        "bob's right password refused:\n{out}\n{}",
        inst.log()
    );
    let secs: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("seconds "))
        .and_then(|s| s.parse().ok())
        .expect("seconds");
    assert!(secs < 15.0, "bob waited {secs} s:\n{out}");
    assert_eq!(inst.log_count("verification queue full"), 0, "{}", inst.log());
    inst.stop();
}

/// Forty clients (two addresses) stop after DATA's first header line; then a client sends
/// a whole message.
const SLOW_DATA: &str = r#"
import socket, time
SMTP = {smtp}
def reply(f):
    while True:
        line = f.readline()
        if not line or line[3:4] != b'-':
            return line.decode().strip()
held = []
for i in range(40):
    s = socket.create_connection(('127.0.0.1', SMTP), 30, source_address=('127.0.2.%d' % (1 + i % 2), 0))
    f = s.makefile('rb')
    reply(f)
    for cmd in (b'EHLO slow\r\n', b'MAIL FROM:<slow@example.org>\r\n', b'RCPT TO:<alice@example.test>\r\n', b'DATA\r\n'):
        s.sendall(cmd)
        r = reply(f)
    s.sendall(b'Subject: slow\r\n')
    held.append((s, r))
print('held', sum(1 for _, r in held if r.startswith('354')))
s = socket.create_connection(('127.0.0.1', SMTP), 30)
s.settimeout(10)
f = s.makefile('rb')
reply(f)
for cmd in (b'EHLO quick\r\n', b'MAIL FROM:<quick@example.org>\r\n', b'RCPT TO:<alice@example.test>\r\n'):
    s.sendall(cmd)
    reply(f)
t = time.monotonic()
s.sendall(b'DATA\r\n')
try:
    print('data', reply(f))
    s.sendall(b'Subject: quick\r\n\r\nhello\r\n.\r\n')
    print('end', reply(f))
except Exception as e:
    print('error', repr(e))
print('seconds %.2f' % (time.monotonic() - t))
"#;

#[test]
fn clients_sending_data_slowly_do_not_hold_cleanup_from_others() {
    let smtp = free_port();
    let mut inst = Instance::new(&pipeline_services(smtp), &[]);
    add_user(&inst, "alice", "Alice-Slow-1");
    inst.start();
    let out = python(&SLOW_DATA.replace("{smtp}", &smtp.to_string()));
    assert!(
        out.contains("held 40"),
        "the slow clients did not all reach DATA:\n{out}"
    );
    assert!(out.contains("data 354 "), "no 354 for another client:\n{out}");
    assert!(out.contains("end 250 2.0.0 Ok: queued as "), "{out}");
    inst.stop();
}
