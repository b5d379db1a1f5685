//! Issue 5, "concurrent EXPUNGE and FETCH never return another message's data": two
//! imaplib sessions on one INBOX (in one imapd process and, with `maxproc = 2`, possibly
//! two); B expunges message 2 while A still has it as sequence number 2. A's FETCH of 2
//! before A has been told of the expunge returns message 2's own data or nothing — never
//! message 3's; after a NOOP, A hears `* 2 EXPUNGE` and sequence number 2 is message 3.

use postern_tests::*;

const SCRIPT: &str = r#"
import imaplib, re, sys
port = int(sys.argv[1])
def connect():
    M = imaplib.IMAP4('127.0.0.1', port)
    M.login('alice', 'alice-pw')
    return M
A = connect()
for i in (1, 2, 3):
    A.append('INBOX', None, None, ('Subject: m%d\r\nMessage-ID: <m%d@x>\r\n\r\nbody of m%d\r\n' % (i, i, i)).encode())
A.select('INBOX')
B = connect()
B.select('INBOX')
B.store('2', '+FLAGS', '(\\Deleted)')
B.expunge()
B.logout()
# A has not been told: sequence number 2 is still message 2 for it.
typ, data = A.fetch('2', '(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] BODY.PEEK[TEXT])')
got = b''.join(x[1] for x in data if isinstance(x, tuple))
print('BEFORE', typ, got)
assert b'm3' not in got, ('another message\'s data', data)
assert typ == 'NO' or got == b'' or (b'<m2@x>' in got and b'body of m2' in got), data
typ, data = A.noop()
print('NOOP', A.untagged_responses.get('EXPUNGE'))
typ, data = A.fetch('2', '(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
assert typ == 'OK' and b'<m3@x>' in data[0][1], data
typ, data = A.search(None, 'ALL')
assert data == [b'1 2'], data
A.logout()
print('expunge ok')
"#;

#[test]
fn fetch_after_another_sessions_expunge_never_returns_the_wrong_message() {
    let (mut inst, port) = imap_instance("alice", "alice-pw");
    inst.start();
    let script = inst.root.path().join("expunge.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("expunge ok"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        inst.log()
    );
    assert!(stdout.contains("NOOP [b'2']"), "A was told of the expunge: {stdout}");
}
