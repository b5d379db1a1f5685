//! imapd under the real master, with auth, driven by Python's imaplib: login, SELECT,
//! exact FETCH bytes of a delivered message (LF on disk, CRLF on the wire), APPEND with
//! APPENDUID, STORE/SEARCH/EXPUNGE, COPY/MOVE with COPYUID, UID stability across
//! sessions, two sessions seeing each other's changes, and IDLE woken by a file dropped
//! into new/ the way a delivery agent does.

use postern_tests::{Instance, add_user, auth_service, daemon_service, free_port};
use std::path::{Path, PathBuf};
use std::process::Command;

fn python(script: &str, port: u16) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn python_log(script: &str, port: u16, inst: &Instance) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        inst.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn maildir(inst: &Instance, user: &str) -> PathBuf {
    inst.root.path().join("var/mail").join(user)
}

fn chown_mail_owner(dir: &Path) {
    if !postern_tests::is_root() {
        return;
    }
    let st = Command::new("chown")
        .arg("-R")
        .arg("postern:")
        .arg(dir)
        .status()
        .expect("chown");
    assert!(st.success());
}

/// Delivers like a delivery agent: write in tmp/, rename into new/.
fn deliver(inst: &Instance, user: &str, name: &str, bytes: &[u8]) {
    let md = maildir(inst, user);
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(md.join(d)).expect("mkdir maildir");
    }
    std::fs::write(md.join("tmp").join(name), bytes).expect("write");
    chown_mail_owner(&inst.root.path().join("var/mail"));
    std::fs::rename(md.join("tmp").join(name), md.join("new").join(name)).expect("rename");
}

fn instance() -> (Instance, u16) {
    instance_with(&[], "")
}

fn instance_with(settings: &[&str], service_extra: &str) -> (Instance, u16) {
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", service_extra)
    );
    let mut inst = Instance::new(&services, settings);
    add_user(&inst, "alice", "Alice-Imap-Pw1");
    std::fs::create_dir_all(inst.root.path().join("var/mail")).expect("mkdir");
    deliver(
        &inst,
        "alice",
        "1700000000.M1P1.test",
        b"From: Bob <bob@example.test>\nTo: alice@example.test\nSubject: first\n\nhello imap\n",
    );
    inst.start();
    (inst, port)
}

const BASIC: &str = r#"
import imaplib, sys
port = int(sys.argv[1])
M = imaplib.IMAP4('127.0.0.1', port)
assert 'IDLE' in M.capabilities and 'UIDPLUS' in M.capabilities, M.capabilities
try:
    M.login('alice', 'wrong')
    raise SystemExit('bad password accepted')
except imaplib.IMAP4.error as e:
    assert 'AUTHENTICATIONFAILED' in str(e), e
typ, _ = M.login('alice', 'Alice-Imap-Pw1')
assert typ == 'OK'
typ, data = M.select('INBOX')
assert data == [b'1'], data
typ, data = M.uid('FETCH', '1', '(UID RFC822.SIZE BODY.PEEK[])')
body = data[0][1]
assert body == b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: first\r\n\r\nhello imap\r\n", body
assert b'RFC822.SIZE %d' % len(body) in data[0][0], data
typ, data = M.fetch('1', '(FLAGS ENVELOPE)')
assert b'"first"' in data[0] and b'("Bob" NIL "bob" "example.test")' in data[0], data
assert b'\\Seen' not in data[0], data
typ, data = M.fetch('1', '(BODY[TEXT])')
assert data[0][1] == b'hello imap\r\n', data
typ, data = M.fetch('1', '(FLAGS)')
assert b'\\Seen' in data[0], data
# APPEND with UIDPLUS
typ, data = M.append('INBOX', '(\\Flagged $Work)', None, b'Subject: second\r\n\r\nbody two\r\n')
assert typ == 'OK' and b'APPENDUID' in data[0], data
uid2 = int(data[0].split()[2].rstrip(b']'))
assert uid2 == 2, data
typ, data = M.uid('SEARCH', None, 'FLAGGED')
assert data == [b'2'], data
typ, data = M.search(None, 'SUBJECT', 'second')
assert data == [b'2'], data
typ, data = M.search(None, 'BODY', 'HELLO')
assert data == [b'1'], data
typ, data = M.search(None, 'KEYWORD', '$Work')
assert data == [b'2'], data
typ, data = M.search(None, 'OR', 'SEEN', 'FLAGGED', 'NOT', 'DELETED')
assert data == [b'1 2'], data
# COPY with COPYUID, then MOVE
typ, data = M.copy('1', 'Archive')
assert typ == 'OK' and b'COPYUID' in data[0], data
typ, data = M.uid('MOVE', '2', 'Trash')
assert typ == 'OK', data
typ, data = M.status('Trash', '(MESSAGES UIDNEXT)')
assert b'MESSAGES 1' in data[0] and b'UIDNEXT 2' in data[0], data
typ, data = M.select('INBOX')
assert data == [b'1'], data
# STORE, EXPUNGE
typ, data = M.store('1', '+FLAGS', '(\\Deleted)')
assert b'\\Deleted' in data[0], data
typ, data = M.expunge()
assert data == [b'1'], data
typ, data = M.list()
names = [l.decode() for l in data]
assert any('\\Sent' in l and '"Sent"' not in l or 'Sent' in l for l in names), names
assert any('\\Trash' in l for l in names), names
typ, data = M.create('Projects.rust')
assert typ == 'OK'
typ, data = M.list('""', 'Projects*')
assert len(data) == 1 and b'Projects.rust' in data[0], data
M.logout()
print('basic ok')
"#;

#[test]
fn imaplib_login_fetch_append_store_search_expunge() {
    let (mut inst, port) = instance();
    let out = python(BASIC, port);
    assert!(out.contains("basic ok"), "{out}");
    // the folder is Dovecot's layout: uidlist, keywords file, flags in names
    let md = maildir(&inst, "alice");
    let uidlist = std::fs::read_to_string(md.join("dovecot-uidlist")).expect("uidlist");
    assert!(uidlist.starts_with("3 V"), "{uidlist}");
    let kw = std::fs::read_to_string(md.join(".Trash/dovecot-keywords")).expect("keywords");
    assert_eq!(kw, "0 $Work\n");
    let trash: Vec<String> = std::fs::read_dir(md.join(".Trash/cur"))
        .expect("trash")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(trash.len(), 1);
    assert!(trash[0].ends_with(":2,Fa"), "{trash:?}");
    inst.stop();
}

const SHARED: &str = r#"
import imaplib, sys, os, time, threading
port = int(sys.argv[1])
newdir = sys.argv[2]
A = imaplib.IMAP4('127.0.0.1', port)
B = imaplib.IMAP4('127.0.0.1', port)
A.login('alice', 'Alice-Imap-Pw1'); B.login('alice', 'Alice-Imap-Pw1')
A.select('INBOX'); B.select('INBOX')
typ, data = A.uid('FETCH', '1:*', '(UID)')
uids_a = data
# A flags message 1; B learns it at its next NOOP
A.store('1', '+FLAGS', '(\\Flagged)')
typ, data = B.noop()
resp = B.untagged_responses.get('FETCH', [])
assert any(b'\\Flagged' in r for r in resp), B.untagged_responses
# A appends: B sees EXISTS
A.append('INBOX', None, None, b'Subject: from A\r\n\r\nx\r\n')
B.noop()
assert B.untagged_responses.get('EXISTS', [None])[-1] == b'2', B.untagged_responses
# B in IDLE is woken by a delivery into new/
tag = B._new_tag().decode()
B.send(('%s IDLE\r\n' % tag).encode())
line = B.readline()
assert line.startswith(b'+'), line
name = '1700000100.M2P2.test'
with open(os.path.join(newdir, '..', 'tmp', name), 'wb') as f:
    f.write(b'Subject: delivered\n\nwake up\n')
os.rename(os.path.join(newdir, '..', 'tmp', name), os.path.join(newdir, name))
line = B.readline()
assert line == b'* 3 EXISTS\r\n', line
line = B.readline()
assert line == b'* 1 RECENT\r\n', line
B.send(b'DONE\r\n')
line = B.readline()
assert line.startswith(tag.encode() + b' OK'), line
# A expunges message 1: B is told at its next command; UIDs of the others do not change
A.store('1', '+FLAGS', '(\\Deleted)'); A.expunge()
typ, data = B.noop()
assert B.untagged_responses.get('EXPUNGE', [None])[-1] == b'1', B.untagged_responses
typ, data = B.uid('SEARCH', None, 'ALL')
assert data == [b'2 3'], data
B.logout()
C = imaplib.IMAP4('127.0.0.1', port)
C.login('alice', 'Alice-Imap-Pw1'); C.select('INBOX')
typ, data = C.uid('SEARCH', None, 'ALL')
assert data == [b'2 3'], data
typ, data = C.uid('FETCH', '3', '(BODY.PEEK[])')
assert data[0][1] == b'Subject: delivered\r\n\r\nwake up\r\n', data
C.logout(); A.logout()
print('shared ok')
"#;

#[test]
fn two_sessions_see_each_other_and_idle_wakes_on_delivery() {
    let (mut inst, port) = instance();
    let newdir = maildir(&inst, "alice").join("new");
    let out = Command::new("python3")
        .arg("-c")
        .arg(SHARED)
        .arg(port.to_string())
        .arg(&newdir)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("shared ok"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    inst.stop();
}

const LIMITS: &str = r#"
import socket, sys
port = int(sys.argv[1])
s = socket.create_connection(('127.0.0.1', port))
f = s.makefile('rb')
assert f.readline().startswith(b'* OK')
s.sendall(b'a1 LOGIN alice Alice-Imap-Pw1\r\n')
l = f.readline(); assert l.startswith(b'a1 OK'), l
s.sendall(b'a2 FROB\r\n')
assert f.readline() == b'a2 BAD Unknown command\r\n'
s.sendall(b'a3 APPEND INBOX {999999999999}\r\n')
assert f.readline().startswith(b'a3 NO [TOOBIG]')
s.sendall(b'a4 APPEND INBOX {5}\r\n')
assert f.readline().startswith(b'+')
s.sendall(b'ab\r\n')
f.close()
s.close()
# a client that never logs in is closed after imapd_login_timeout
idle = socket.create_connection(('127.0.0.1', port), timeout=30)
g = idle.makefile('rb')
assert g.readline().startswith(b'* OK')
assert g.readline() == b'* BYE Login timeout: not authenticated in time\r\n'
# imapd_user_connection_limit = 2: the third session of alice is refused
conns = []
for i in range(3):
    c = socket.create_connection(('127.0.0.1', port))
    r = c.makefile('rb')
    assert r.readline().startswith(b'* OK')
    c.sendall(b'l LOGIN alice Alice-Imap-Pw1\r\n')
    conns.append((c, r.readline()))
assert conns[0][1].startswith(b'l OK') and conns[1][1].startswith(b'l OK'), conns
assert conns[2][1] == b'l NO [LIMIT] Too many sessions for this user\r\n', conns
print('limits ok')
"#;

#[test]
fn bad_commands_and_oversized_literals_are_refused() {
    let (mut inst, port) = instance_with(
        &["imapd_login_timeout=4s", "imapd_user_connection_limit=2"],
        "maxproc = 1",
    );
    let out = python_log(LIMITS, port, &inst);
    assert!(out.contains("limits ok"), "{out}");
    // the interrupted APPEND left nothing behind
    let md = maildir(&inst, "alice");
    assert_eq!(std::fs::read_dir(md.join("tmp")).expect("tmp").count(), 0);
    let cur = std::fs::read_dir(md.join("cur")).map(|d| d.count()).unwrap_or(0);
    let new = std::fs::read_dir(md.join("new")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(cur + new, 1, "only the delivered message");
    inst.stop();
}
