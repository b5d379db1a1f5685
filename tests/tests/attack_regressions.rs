//! Variants of issue 10's attacks found by attacking the fixed system again, each through
//! the real master and real sockets (Python for the clients):
//!
//! - one address opening many logins with wrong passwords at once filled auth's
//!   verification queue, and a right password from anywhere else was answered
//!   `NO [UNAVAILABLE]` at once: now each address has at most two checks in the pool, the
//!   rest wait (and pay the address's penalty), and others log in;
//! - forty SMTP clients that reach DATA and then send slowly held every cleanup process
//!   (one connection each, `maxproc = 32`), and nobody else's DATA got a `354`: cleanup
//!   now serves each connection on a thread of its own, and the message content all of a
//!   process's threads hold is bounded by `cleanup_content_memory_limit` (a message that
//!   does not fit gets `451 4.3.2` and is sent again later);
//! - one IMAP SEARCH of 400 keys, or 16 KB of pipelined SEARCHes that answer nothing,
//!   over a few thousand messages held the one imapd process (every other session on it)
//!   for as long as they ran — tens of seconds: now a session works a slice of time
//!   (`WORK_SLICE`) at a stretch, a SEARCH goes on where it stopped, and another session's
//!   NOOP is answered within a second.

use postern_tests::{
    Instance, add_user, auth_service, daemon_service, free_port, owned_mail_base, pipeline_services, python,
};

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

/// Two clients stop after sending 700 KB of DATA each; then a third sends a whole 700 KB
/// message, a fourth a small one; then the two finish theirs, and the third tries again.
const HELD_CONTENT: &str = r#"
import socket, time
SMTP = {smtp}
def reply(f):
    while True:
        line = f.readline().decode()
        if len(line) < 4 or line[3] != '-':
            return line.strip()
def start(name):
    s = socket.create_connection(('127.0.0.1', SMTP), 30)
    f = s.makefile('rb')
    reply(f)
    for cmd in (b'EHLO %s\r\n' % name, b'MAIL FROM:<%s@example.org>\r\n' % name, b'RCPT TO:<alice@example.test>\r\n', b'DATA\r\n'):
        s.sendall(cmd)
        r = reply(f)
    assert r.startswith('354'), r
    return s, f
body = b'Subject: big\r\n\r\n' + (b'x' * 998 + b'\r\n') * 700
held = [start(b'holder%d' % i) for i in range(2)]
for s, f in held:
    s.sendall(body)
time.sleep(1.0)
def whole(name, content):
    s, f = start(name)
    s.sendall(content + b'.\r\n')
    r = reply(f)
    s.close()
    return r
print('third', whole(b'third', body))
print('small', whole(b'small', b'Subject: small\r\n\r\nhello\r\n'))
for s, f in held:
    s.sendall(b'.\r\n')
    print('holder', reply(f))
print('again', whole(b'again', body))
"#;

/// cleanup serves each connection on a thread, so its memory is bounded per process by
/// `cleanup_content_memory_limit`, not by connections × `message_size_limit`: a message that
/// does not fit is refused for now (`451 4.3.2`), small ones still pass, and the budget comes
/// back when the holders finish.
#[test]
fn clients_holding_message_content_cannot_grow_cleanup_past_its_budget() {
    let smtp = free_port();
    let services = pipeline_services(smtp).replace("maxproc = 32", "maxproc = 1");
    let mut inst = Instance::new(
        &services,
        &["message_size_limit=1000000", "cleanup_content_memory_limit=1600000"],
    );
    add_user(&inst, "alice", "Alice-Held-1");
    inst.start();
    let out = python(&HELD_CONTENT.replace("{smtp}", &smtp.to_string()));
    let line = |k: &str| out.lines().find(|l| l.starts_with(k)).unwrap_or_default().to_string();
    assert!(
        line("third ").starts_with("third 451 4.3.2 "),
        "a message past the budget was not refused for now:\n{out}\n{}",
        inst.log()
    );
    assert!(line("small ").starts_with("small 250 "), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("holder 250 ")).count(), 2, "{out}");
    assert!(
        line("again ").starts_with("again 250 "),
        "the budget did not come back:\n{out}"
    );
    assert_eq!(inst.log_count("(cleanup_content_memory_limit)"), 1, "{}", inst.log());
    inst.stop();
}

/// alice starts the heavy work `{attack}`; bob's NOOPs meanwhile; then alice's answers.
const HEAVY_IMAP: &str = r#"
import socket, time
IMAP = {imap}
def login(user, pw):
    s = socket.create_connection(('127.0.0.1', IMAP), 120)
    f = s.makefile('rb')
    f.readline()
    s.sendall(b'l LOGIN %s %s\r\ns SELECT INBOX\r\n' % (user.encode(), pw.encode()))
    until(f, b's ')
    return s, f
def until(f, tag):
    lines = []
    while True:
        line = f.readline()
        assert line, 'connection closed'
        lines.append(line)
        if line.startswith(tag):
            return lines
a, af = login('alice', 'Alice-Heavy-1')
b, bf = login('bob', 'Bob-Heavy-2')
attack = {attack}
a.sendall(attack)
time.sleep(0.5)
worst = 0.0
for i in range(3):
    t = time.monotonic()
    b.sendall(b'n%d NOOP\r\n' % i)
    until(bf, b'n%d ' % i)
    worst = max(worst, time.monotonic() - t)
    time.sleep(0.2)
print('noop worst %.2f' % worst)
t = time.monotonic()
tags = [l.split(b' ')[0] for l in attack.split(b'\r\n') if l]
done = 0
hits = 0
for tag in tags:
    lines = until(af, tag + b' ')
    done += lines[-1].startswith(tag + b' OK')
    hits += sum(len(l.split()) - 2 for l in lines if l.startswith(b'* SEARCH'))
print('attack ok %d of %d, hits %d, %.1f s after' % (done, len(tags), hits, time.monotonic() - t))
"#;

/// Runs [`HEAVY_IMAP`] with `attack` (Python bytes) against one imapd process holding
/// `messages` messages of alice; returns the script's output.
fn heavy_imap(messages: usize, attack: &str) -> String {
    let imap = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{imap}"), "imapd", "maxproc = 1")
    );
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "alice", "Alice-Heavy-1");
    add_user(&inst, "bob", "Bob-Heavy-2");
    let mail = inst.root.path().join("var/mail");
    for d in ["alice/cur", "alice/new", "alice/tmp", "bob/cur", "bob/new", "bob/tmp"] {
        std::fs::create_dir_all(mail.join(d)).expect("mkdir");
    }
    for i in 0..messages {
        let text = format!("From: a@example.org\r\nSubject: msg {i}\r\n\r\nbody {i}\r\n");
        std::fs::write(mail.join(format!("alice/cur/1700000000.M{i}P1.test:2,S")), text).expect("write");
    }
    owned_mail_base(&inst);
    inst.start();
    let out = python(
        &HEAVY_IMAP
            .replace("{imap}", &imap.to_string())
            .replace("{attack}", attack),
    );
    inst.stop();
    out
}

fn noop_worst(out: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix("noop worst "))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no noop line:\n{out}"))
}

#[test]
fn a_search_of_many_keys_does_not_hold_the_other_sessions() {
    // 400 keys that each match every message: each key is tested on each message.
    let out = heavy_imap(3000, "b'x SEARCH ' + b' '.join([b'SUBJECT msg'] * 400) + b'\\r\\n'");
    assert!(out.contains("attack ok 1 of 1, hits 3000,"), "{out}");
    assert!(noop_worst(&out) < 1.0, "another session waited:\n{out}");
}

#[test]
fn pipelined_searches_answering_nothing_do_not_hold_the_other_sessions() {
    // 16 KB of SEARCHes, none of which answers more than a line.
    let out = heavy_imap(
        2000,
        "b''.join(b'c%d SEARCH SUBJECT zzzz\\r\\n' % i for i in range(600))",
    );
    assert!(out.contains("attack ok 600 of 600, hits 0,"), "{out}");
    assert!(noop_worst(&out) < 1.0, "another session waited:\n{out}");
}
