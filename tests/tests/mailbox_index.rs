//! Issue 11, the mailbox store's index (`postern-index`) and change notification, under the
//! real master with imapd and Python clients:
//!
//! - imapd killed with SIGKILL in the middle of STOREs and EXPUNGEs, then the index cut in
//!   half, then replaced by one of an older format: each time the next session sees exactly
//!   the Maildir's truth (UIDs from `dovecot-uidlist`, flags from the file names) under
//!   the same UIDVALIDITY;
//! - DELETE then CREATE of a folder within one second gives a new UIDVALIDITY;
//! - a session in IDLE is told of a delivery, of another program's rename (a flag change)
//!   and of another program's unlink (an expunge) within a second each.

use postern_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Logs in, prints `V <uidvalidity>` and `<uid> <flags>` per message of INBOX.
const LIST: &str = r#"
import imaplib, re, sys
M = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
M.login('alice', 'alice-pw')
typ, data = M.select('INBOX')
assert typ == 'OK', data
print('V', M.untagged_responses['UIDVALIDITY'][0].decode())
typ, data = M.uid('FETCH', '1:*', '(FLAGS)')
assert typ == 'OK', data
for d in data:
    if d is None:
        continue
    m = re.search(rb'UID (\d+) FLAGS \(([^)]*)\)', d) or re.search(rb'FLAGS \(([^)]*)\) UID (\d+)', d)
    assert m, d
    uid, flags = (m.group(1), m.group(2)) if m.re.pattern.startswith(b'UID') else (m.group(2), m.group(1))
    fl = sorted(f for f in flags.decode().split() if f != '\\Recent')
    print(uid.decode(), ' '.join(fl))
M.logout()
"#;

/// STOREs and EXPUNGEs as fast as imapd answers, until the connection dies.
const CHURN: &str = r#"
import socket, sys, random
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
f = s.makefile('rb')
f.readline()
def cmd(tag, text):
    s.sendall(b'%s %s\r\n' % (tag, text))
    while True:
        l = f.readline()
        if not l:
            sys.exit(0)
        if l.startswith(tag + b' '):
            return l
cmd(b'a', b'LOGIN alice alice-pw')
cmd(b'b', b'SELECT INBOX')
print('churning', flush=True)
n = 0
while True:
    n += 1
    r = random.randrange(1, 40)
    flag = random.choice([b'\\Seen', b'\\Flagged', b'\\Answered'])
    op = random.choice([b'+', b'-', b'+'])
    cmd(b's%d' % n, b'STORE %d:%d %sFLAGS (%s)' % (r, r + 30, op, flag))
    if n % 5 == 0:
        cmd(b'd%d' % n, b'STORE %d +FLAGS (\\Deleted)' % random.randrange(1, 100))
        cmd(b'e%d' % n, b'EXPUNGE')
"#;

fn maildir(inst: &Instance) -> std::path::PathBuf {
    inst.root.path().join("var/mail/alice")
}

/// What the Maildir says: UIDVALIDITY, and UID → IMAP flags (sorted, space-separated).
fn truth(md: &Path) -> (String, BTreeMap<u32, String>) {
    let list = std::fs::read_to_string(md.join("dovecot-uidlist")).expect("uidlist");
    let mut lines = list.lines();
    let header = lines.next().expect("header");
    let validity = header
        .split(' ')
        .find_map(|f| f.strip_prefix('V'))
        .expect("V")
        .to_string();
    let mut by_base = BTreeMap::new();
    for l in lines {
        let (head, base) = l.split_once(':').expect("record");
        let uid: u32 = head.split(' ').next().unwrap().parse().unwrap();
        by_base.insert(base.to_string(), uid);
    }
    let mut out = BTreeMap::new();
    for sub in ["cur", "new"] {
        for e in std::fs::read_dir(md.join(sub)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let (base, info) = name.split_once(":2,").unwrap_or((&name, ""));
            let uid = *by_base.get(base).unwrap_or_else(|| panic!("{base} has no UID"));
            let mut fl: Vec<&str> = info
                .chars()
                .filter_map(|c| match c {
                    'S' => Some("\\Seen"),
                    'R' => Some("\\Answered"),
                    'F' => Some("\\Flagged"),
                    'T' => Some("\\Deleted"),
                    'D' => Some("\\Draft"),
                    _ => None,
                })
                .collect();
            fl.sort_unstable();
            out.insert(uid, fl.join(" "));
        }
    }
    (validity, out)
}

/// What a new IMAP session sees.
fn listed(port: u16) -> (String, BTreeMap<u32, String>) {
    let text = run_python(LIST, &[&port.to_string()], "", None);
    let mut validity = String::new();
    let mut map = BTreeMap::new();
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("V ") {
            validity = v.to_string();
        } else {
            let (uid, flags) = l.split_once(' ').unwrap_or((l, ""));
            map.insert(uid.parse().unwrap(), flags.to_string());
        }
    }
    (validity, map)
}

use std::process::Command;

/// Runs `python3 -c script args...`; asserts it succeeded and printed `done` (when not
/// empty), with its output and the instance's log if not; returns its standard output.
fn run_python(script: &str, args: &[&str], done: &str, inst: Option<&Instance>) -> String {
    let (ok, text, err) = python_args(script, args);
    assert!(
        ok && text.contains(done),
        "{text}\n{err}\n{}",
        inst.map(Instance::log).unwrap_or_default()
    );
    text
}

fn imapd_pids(inst: &Instance) -> Vec<u32> {
    children_of(inst.master_pid())
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some("imapd"))
        .collect()
}

#[test]
fn after_kill9_a_cut_index_and_an_old_format_the_next_session_sees_the_maildir() {
    let (mut inst, port) = imap_instance("alice", "alice-pw");
    for i in 0..150 {
        let body = format!("Subject: m{i}\r\nMessage-ID: <m{i}@x>\r\n\r\nbody {i}\r\n");
        deliver_maildir_quiet(&inst, &format!("{}.M{i}P1.host", 1_700_000_000 + i), body.as_bytes());
    }
    chown_mail(&inst);
    inst.start();
    let (v0, first) = listed(port);
    assert_eq!(first.len(), 150);
    let index = maildir(&inst).join("postern-index");
    assert!(index.exists(), "imapd wrote an index");
    // STOREs and EXPUNGEs in flight, then SIGKILL
    let mut churn = Command::new("python3")
        .arg("-c")
        .arg(CHURN)
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(churn.stdout.take().expect("stdout"));
    let mut first_line = String::new();
    std::io::BufRead::read_line(&mut out, &mut first_line).expect("churn output");
    assert_eq!(first_line, "churning\n");
    // until a few EXPUNGEs went through
    let md = maildir(&inst);
    let count = || std::fs::read_dir(md.join("cur")).map(|d| d.count()).unwrap_or(0);
    assert!(
        wait_for(Duration::from_secs(10), || count() < 140),
        "the churn expunges"
    );
    let pids = imapd_pids(&inst);
    assert!(!pids.is_empty());
    for p in pids {
        kill9(p);
    }
    let _ = churn.kill();
    let _ = churn.wait();
    let (v, want) = truth(&maildir(&inst));
    assert_eq!(v, v0, "UIDVALIDITY kept");
    assert!(want.len() < 150, "the churn expunged some");
    assert!(want.values().any(|f| !f.is_empty()), "and set flags");
    assert_eq!(listed(port), (v0.clone(), want.clone()), "after SIGKILL");
    // the index cut in the middle of a record
    let bytes = std::fs::read(&index).unwrap();
    std::fs::write(&index, &bytes[..bytes.len() / 2 + 7]).unwrap();
    assert_eq!(listed(port), (v0.clone(), want.clone()), "after truncation");
    // an index from an older format
    std::fs::write(&index, b"postern-index 0 V1\n1 2 3\n").unwrap();
    assert_eq!(listed(port), (v0.clone(), want.clone()), "after an old format");
    // the index is whole again, in this version
    let text = std::fs::read_to_string(&index).unwrap();
    assert!(
        text.starts_with(&format!("postern-index 1 V{v0}\n")),
        "{}",
        &text[..60.min(text.len())]
    );
    inst.stop();
}

/// Writes a message into new/ (no chown: [`chown_mail`] once for all).
fn deliver_maildir_quiet(inst: &Instance, name: &str, bytes: &[u8]) {
    let md = maildir(inst);
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(md.join(d)).unwrap();
    }
    std::fs::write(md.join("tmp").join(name), bytes).unwrap();
    std::fs::rename(md.join("tmp").join(name), md.join("new").join(name)).unwrap();
}

fn chown_mail(inst: &Instance) {
    owned_mail_base(inst);
}

const RECREATE: &str = r#"
import imaplib, sys, time
M = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
M.login('alice', 'alice-pw')
t0 = time.time()
assert M.create('Box')[0] == 'OK'
assert M.select('Box')[0] == 'OK'
v1 = M.untagged_responses['UIDVALIDITY'][0]
M.close()
assert M.delete('Box')[0] == 'OK'
assert M.create('Box')[0] == 'OK'
assert M.select('Box')[0] == 'OK'
v2 = M.untagged_responses['UIDVALIDITY'][0]
took = time.time() - t0
print('V', v1, v2, took)
assert took < 1.0, took
assert v1 != v2, (v1, v2)
M.logout()
print('recreate ok')
"#;

#[test]
fn delete_and_create_within_a_second_gives_a_new_uidvalidity() {
    let (mut inst, port) = imap_instance("alice", "alice-pw");
    inst.start();
    run_python(RECREATE, &[&port.to_string()], "recreate ok", Some(&inst));
    inst.stop();
}

/// A session in IDLE; this script itself delivers, renames and unlinks as another
/// program would, and times each untagged report.
const IDLE: &str = r#"
import socket, sys, os, time, select
port, md = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(('127.0.0.1', port))
buf = b''
def line(deadline):
    global buf
    while b'\r\n' not in buf:
        left = deadline - time.time()
        if left <= 0:
            return None
        r, _, _ = select.select([s], [], [], left)
        if r:
            d = s.recv(65536)
            if not d:
                return None
            buf += d
    l, buf = buf.split(b'\r\n', 1)
    return l
def cmd(tag, text):
    s.sendall(b'%s %s\r\n' % (tag, text))
    out = []
    while True:
        l = line(time.time() + 10)
        assert l is not None, (text, out)
        if l.startswith(tag + b' '):
            assert l.startswith(tag + b' OK'), l
            return out
        out.append(l)
def expect(what, start):
    while True:
        l = line(start + 1.0)
        assert l is not None, ('not told within 1 s', what)
        if what in l:
            return time.time() - start, l
line(time.time() + 5)
cmd(b'a', b'LOGIN alice alice-pw')
cmd(b'b', b'SELECT INBOX')
s.sendall(b'c IDLE\r\n')
assert line(time.time() + 5).startswith(b'+')
time.sleep(0.3)
# a delivery (a delivery agent writes tmp/, renames into new/)
t = time.time()
name = '%d.M1P%d.testhost' % (int(t), os.getpid())
with open(os.path.join(md, 'tmp', name), 'wb') as f:
    f.write(b'Subject: new\r\n\r\nhi\r\n')
os.rename(os.path.join(md, 'tmp', name), os.path.join(md, 'new', name))
took, l = expect(b'EXISTS', t)
print('delivery', round(took, 3), l)
assert l == b'* 3 EXISTS', l
time.sleep(0.3)
# another program's rename: message 1 gets \Flagged and \Seen
cur = os.path.join(md, 'cur')
first = sorted(os.listdir(cur))[0]
base = first.split(':2,')[0]
t = time.time()
os.rename(os.path.join(cur, first), os.path.join(cur, base + ':2,FS'))
took, l = expect(b'FETCH', t)
print('rename', round(took, 3), l)
assert l.startswith(b'* 1 FETCH') and b'\\Flagged' in l and b'\\Seen' in l, l
time.sleep(0.3)
# another program's unlink: message 2 is expunged
second = [n for n in sorted(os.listdir(cur)) if not n.startswith(base)][0]
t = time.time()
os.unlink(os.path.join(cur, second))
took, l = expect(b'EXPUNGE', t)
print('unlink', round(took, 3), l)
assert l == b'* 2 EXPUNGE', l
s.sendall(b'DONE\r\n')
print('idle ok')
"#;

#[test]
fn idle_is_told_of_delivery_rename_and_unlink_within_a_second() {
    let (mut inst, port) = imap_instance("alice", "alice-pw");
    deliver_maildir_quiet(&inst, "1700000000.M1P1.host", b"Subject: one\r\n\r\n1\r\n");
    deliver_maildir_quiet(&inst, "1700000001.M2P1.host", b"Subject: two\r\n\r\n2\r\n");
    chown_mail(&inst);
    inst.start();
    let md = maildir(&inst).display().to_string();
    run_python(IDLE, &[&port.to_string(), &md], "idle ok", Some(&inst));
    inst.stop();
}
