//! Issue 10, item 6: nobody can lock a user out by guessing. Through the real master,
//! smtpd (AUTH PLAIN), imapd (LOGIN) and pop3d (USER/PASS) ask the real auth daemon;
//! Python's smtplib, imaplib and poplib connect from chosen loopback addresses (the whole
//! of 127/8 is local).
//!
//! * Failures from one address get slower: the first wrong password is answered at once
//!   (`auth_failure_delay = 0s` here, to keep the test short; `auth_daemon.rs` checks that
//!   delay), the fifth only after the address's penalty (2 s here, `auth_penalty_max`).
//! * After eleven wrong passwords for alice from 127.0.0.1 (over all three protocols),
//!   her right password is accepted over each protocol from 127.0.0.2 at once (no slower
//!   than a baseline login) and from 127.0.0.1 too — slowed by the penalty, never
//!   refused (before issue 10 both were refused for 15 minutes) — and bob from 127.0.0.3
//!   is not slowed.

use postern_tests::{Instance, add_user, auth_service, daemon_service, free_port, owned_mail_base, python};

const SCRIPT: &str = r#"
import imaplib, poplib, smtplib, socket, threading, time
SMTP, IMAP, POP3 = {smtp}, {imap}, {pop3}

def sock(port, src, timeout):
    return socket.create_connection(('127.0.0.1', port), timeout, source_address=(src, 0))

class Imap(imaplib.IMAP4):
    def __init__(self, src):
        self.src = src
        super().__init__('127.0.0.1', IMAP, timeout=60)
    def _create_socket(self, timeout):
        return sock(self.port, self.src, timeout)

class Pop(poplib.POP3):
    def __init__(self, src):
        self.src = src
        super().__init__('127.0.0.1', POP3, timeout=60)
    def _create_socket(self, timeout):
        return sock(self.port, self.src, timeout)

# Each returns ('ok' | 'no ...', seconds from sending the password to the answer).
def smtp_login(src, user, pw):
    s = smtplib.SMTP('127.0.0.1', SMTP, timeout=60, source_address=(src, 0))
    s.ehlo('client.example')
    s.user, s.password = user, pw
    t = time.monotonic()
    try:
        # One mechanism only: smtplib's login() would try LOGIN after a failed PLAIN.
        s.auth('PLAIN', s.auth_plain)
        r = 'ok'
    except smtplib.SMTPAuthenticationError as e:
        r = 'no %d %s' % (e.smtp_code, e.smtp_error.decode())
    el = time.monotonic() - t
    s.quit()
    return r, el

def imap_login(src, user, pw):
    m = Imap(src)
    t = time.monotonic()
    try:
        m.login(user, pw)
        r = 'ok'
    except imaplib.IMAP4.error as e:
        r = 'no %s' % e
    el = time.monotonic() - t
    m.logout()
    return r, el

def pop3_login(src, user, pw):
    p = Pop(src)
    p.user(user)
    t = time.monotonic()
    try:
        p.pass_(pw)
        r = 'ok'
    except poplib.error_proto as e:
        r = 'no %s' % e
    el = time.monotonic() - t
    p.quit()
    return r, el

LOGIN = {'smtp': smtp_login, 'imap': imap_login, 'pop3': pop3_login}
PROTOS = ('smtp', 'imap', 'pop3')

def together(calls):
    out = [None] * len(calls)
    def one(i):
        proto, src, user, pw = calls[i]
        out[i] = (proto, LOGIN[proto](src, user, pw))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in ts: t.start()
    for t in ts: t.join()
    return out

base = smtp_login('127.0.0.3', 'bob', 'Bob-Penalty-2')
print('baseline', base[0], '%.3f' % base[1])

seq = [smtp_login('127.0.0.1', 'alice', 'wrong-seq-%d' % i) for i in range(5)]
print('sequential', ' '.join(r.split()[1] if r != 'ok' else r for r, _ in seq))
print('sequential-times', ' '.join('%.3f' % t for _, t in seq))

# Six more wrong passwords at once, two over each protocol: eleven in all.
burst = together([(p, '127.0.0.1', 'alice', 'wrong-%s-%d' % (p, i)) for p in PROTOS for i in range(2)])
print('burst', sum(1 for _, (r, _) in burst if r.startswith('no')))

for proto in PROTOS:
    r, t = LOGIN[proto]('127.0.0.2', 'alice', 'Alice-Penalty-1')
    print(proto, 'other-address', r, '%.3f' % t)
# The right password from the guessing address, over the three protocols at once: each
# waits out the penalty, none is refused.
for proto, (r, t) in together([(p, '127.0.0.1', 'alice', 'Alice-Penalty-1') for p in PROTOS]):
    print(proto, 'same-address', r, '%.3f' % t)
for proto in PROTOS:
    r, t = LOGIN[proto]('127.0.0.3', 'bob', 'Bob-Penalty-2')
    print(proto, 'bob', r, '%.3f' % t)
"#;

fn line<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"))
        .split(' ')
        .collect()
}

fn secs(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("not a time: {s:?}"))
}

#[test]
fn guessing_slows_the_guesser_but_never_locks_a_user_out() {
    let (smtp, imap, pop3) = (free_port(), free_port(), free_port());
    let mut services = String::new();
    services.push_str(&daemon_service(
        "smtp",
        "inet",
        &format!("127.0.0.1:{smtp}"),
        "smtpd",
        "options = { smtpd_sasl_auth_enable = true }",
    ));
    services.push_str(&daemon_service(
        "imap",
        "inet",
        &format!("127.0.0.1:{imap}"),
        "imapd",
        "",
    ));
    services.push_str(&daemon_service(
        "pop3",
        "inet",
        &format!("127.0.0.1:{pop3}"),
        "pop3d",
        "",
    ));
    services.push_str(&auth_service());
    let mut inst = Instance::new(&services, &["auth_failure_delay=0s", "auth_penalty_max=2s"]);
    add_user(&inst, "alice", "Alice-Penalty-1");
    add_user(&inst, "bob", "Bob-Penalty-2");
    let mail = inst.root.path().join("var/mail");
    for u in ["alice", "bob"] {
        for d in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(mail.join(u).join(d)).expect("mkdir maildir");
        }
    }
    owned_mail_base(&inst);
    inst.start();

    let script = SCRIPT
        .replace("{smtp}", &smtp.to_string())
        .replace("{imap}", &imap.to_string())
        .replace("{pop3}", &pop3.to_string());
    let out = python(&script);
    let log = inst.log();
    let ctx = format!("{out}\nlog:\n{log}");

    let base = line(&out, "baseline");
    assert_eq!(base[0], "ok", "{ctx}");
    let baseline = secs(base[1]);

    // Failures get slower: the first is answered as fast as a login, the fifth after 2 s
    // of penalty.
    assert_eq!(line(&out, "sequential"), ["535"; 5], "{ctx}");
    let times: Vec<f64> = line(&out, "sequential-times").into_iter().map(secs).collect();
    assert!(times[0] < baseline + 1.0, "first failure: {times:?}\n{ctx}");
    assert!(times[4] >= 1.9, "the fifth failure was not slowed: {times:?}\n{ctx}");

    assert_eq!(line(&out, "burst"), ["6"], "{ctx}");
    for proto in ["smtp", "imap", "pop3"] {
        let other = line(&out, &format!("{proto} other-address"));
        assert_eq!(other[0], "ok", "{proto}: refused from another address\n{ctx}");
        assert!(
            secs(other[1]) < baseline + 1.0,
            "{proto}: slowed from another address ({} s, baseline {baseline} s)\n{ctx}",
            other[1]
        );
        let same = line(&out, &format!("{proto} same-address"));
        assert_eq!(
            same[0], "ok",
            "{proto}: right password refused from the guessing address\n{ctx}"
        );
        assert!(
            secs(same[1]) >= 1.9,
            "{proto}: the guessing address was not slowed ({} s)\n{ctx}",
            same[1]
        );
        let bob = line(&out, &format!("{proto} bob"));
        assert_eq!(bob[0], "ok", "{ctx}");
        assert!(secs(bob[1]) < baseline + 1.0, "{proto}: bob slowed\n{ctx}");
    }
    assert!(
        log.contains("auth failure: user=alice, client=127.0.0.1, service=smtp, reason=wrong password"),
        "{ctx}"
    );
    assert!(log.contains("auth ok: user=alice, client=127.0.0.2"), "{ctx}");
    assert!(!log.contains("locked out"), "{ctx}");
    assert!(!log.contains("wrong-seq-0"), "a password in the log");
}
