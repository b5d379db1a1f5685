//! Master users (issue 15: the proxy's login to the backends). Through the real master,
//! imapd and pop3d ask the real auth daemon; Python's imaplib and poplib log in from
//! chosen loopback addresses (each case its own address, so one case's penalty does not
//! slow the next).
//!
//! * `alice*proxy` with proxy's password (from `auth_master_users_file`) logs in as alice
//!   over IMAP (LOGIN, AUTHENTICATE PLAIN with authzid alice) and POP3 (USER/PASS, AUTH
//!   PLAIN with authzid): the session sees alice's mail, auth logs the master login.
//! * A wrong master password fails, and counts in the address's penalty like any
//!   failure: the next login from that address waits it out.
//! * An unknown target user fails; a normal user cannot become another with `*` or an
//!   authzid (bob is no master user).
//! * Without a master users file `alice*proxy` is just an unknown user.

use postern_tests::{
    Instance, add_master_user, add_user, auth_service, daemon_service, deliver_maildir, free_port, owned_mail_base,
    python,
};

const SCRIPT: &str = r#"
import base64, imaplib, poplib, socket, time
IMAP, POP3 = {imap}, {pop3}

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

def imap_login(src, user, pw):
    m = Imap(src)
    try:
        m.login(user, pw)
        typ, data = m.select('INBOX')
        r = 'ok %s' % data[0].decode()
    except imaplib.IMAP4.error as e:
        r = 'no'
    m.logout()
    return r

def imap_plain(src, authz, authc, pw):
    m = Imap(src)
    try:
        m.authenticate('PLAIN', lambda _: ('%s\0%s\0%s' % (authz, authc, pw)).encode())
        typ, data = m.select('INBOX')
        r = 'ok %s' % data[0].decode()
    except imaplib.IMAP4.error as e:
        r = 'no'
    m.logout()
    return r

def pop_login(src, user, pw):
    p = Pop(src)
    try:
        p.user(user)
        p.pass_(pw)
        r = 'ok %d' % p.stat()[0]
    except poplib.error_proto as e:
        r = 'no'
    p.quit()
    return r

def pop_plain(src, authz, authc, pw):
    p = Pop(src)
    try:
        tok = base64.b64encode(('%s\0%s\0%s' % (authz, authc, pw)).encode()).decode()
        p._shortcmd('AUTH PLAIN ' + tok)
        r = 'ok %d' % p.stat()[0]
    except poplib.error_proto as e:
        r = 'no'
    p.quit()
    return r

def timed(f, *a):
    t = time.monotonic()
    r = f(*a)
    return r, time.monotonic() - t

print('imap-login', imap_login('127.0.0.2', 'alice*proxy', 'Proxy-Master-9'))
print('imap-plain', imap_plain('127.0.0.2', 'alice', 'proxy', 'Proxy-Master-9'))
print('pop-login', pop_login('127.0.0.2', 'alice*proxy', 'Proxy-Master-9'))
print('pop-plain', pop_plain('127.0.0.2', 'alice', 'proxy', 'Proxy-Master-9'))
print('imap-wrong-master', imap_login('127.0.0.3', 'alice*proxy', 'wrong'))
r, t = timed(imap_login, '127.0.0.3', 'alice*proxy', 'Proxy-Master-9')
print('after-wrong', r.split()[0], '%.3f' % t)
print('pop-wrong-master', pop_login('127.0.0.4', 'alice*proxy', 'wrong'))
print('unknown-target', imap_login('127.0.0.5', 'nobody*proxy', 'Proxy-Master-9'))
print('pop-unknown-target', pop_login('127.0.0.5', 'nobody*proxy', 'Proxy-Master-9'))
print('user-as-master', imap_login('127.0.0.6', 'alice*bob', 'Bob-Plain-2'))
print('user-as-master-plain', imap_plain('127.0.0.6', 'alice', 'bob', 'Bob-Plain-2'))
print('pop-user-as-master', pop_plain('127.0.0.6', 'alice', 'bob', 'Bob-Plain-2'))
print('bob-own', pop_login('127.0.0.7', 'bob', 'Bob-Plain-2'))
"#;

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"))
}

/// An instance with imapd, pop3d and auth; alice has one message, bob none; with
/// `master` the master user proxy is in `etc/master-users`.
fn instance(master: bool) -> (Instance, u16, u16) {
    let (imap, pop3) = (free_port(), free_port());
    let mut services = auth_service();
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
    let mut settings = vec!["auth_failure_delay=0s", "auth_penalty_max=2s"];
    if master {
        settings.push("auth_master_users_file=master-users");
    }
    let mut inst = Instance::new(&services, &settings);
    add_user(&inst, "alice", "Alice-Plain-1");
    add_user(&inst, "bob", "Bob-Plain-2");
    if master {
        add_master_user(&inst, "proxy", "Proxy-Master-9", "master-users", "proxy-password");
    }
    deliver_maildir(&inst, "alice", "1.M1.test", b"Subject: for alice\r\n\r\nhello\r\n");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(inst.root.path().join("var/mail/bob").join(d)).expect("mkdir");
    }
    owned_mail_base(&inst);
    inst.start();
    (inst, imap, pop3)
}

#[test]
fn master_logins_over_imap_and_pop3() {
    let (inst, imap, pop3) = instance(true);
    let out = python(
        &SCRIPT
            .replace("{imap}", &imap.to_string())
            .replace("{pop3}", &pop3.to_string()),
    );
    let log = inst.log();
    let ctx = format!("{out}\nlog:\n{log}");
    // logged in as alice: her one message
    assert_eq!(field(&out, "imap-login"), "ok 1", "{ctx}");
    assert_eq!(field(&out, "imap-plain"), "ok 1", "{ctx}");
    assert_eq!(field(&out, "pop-login"), "ok 1", "{ctx}");
    assert_eq!(field(&out, "pop-plain"), "ok 1", "{ctx}");
    assert!(
        log.lines()
            .filter(|l| l.contains("master user proxy logged in as alice"))
            .count()
            >= 4,
        "{ctx}"
    );
    assert!(log.contains("user=alice, master=proxy"), "{ctx}");

    // a wrong master password fails and counts toward the address's penalty
    assert_eq!(field(&out, "imap-wrong-master"), "no", "{ctx}");
    assert_eq!(field(&out, "pop-wrong-master"), "no", "{ctx}");
    let after: Vec<&str> = field(&out, "after-wrong").split(' ').collect();
    assert_eq!(after[0], "ok", "the right master password is not refused\n{ctx}");
    let secs: f64 = after[1].parse().expect("seconds");
    assert!(
        secs >= 1.9,
        "the login after a wrong master password was not slowed ({secs} s)\n{ctx}"
    );
    assert!(log.contains("reason=wrong password"), "{ctx}");

    // an unknown target, and a user who is no master, fail
    assert_eq!(field(&out, "unknown-target"), "no", "{ctx}");
    assert_eq!(field(&out, "pop-unknown-target"), "no", "{ctx}");
    assert!(log.contains("reason=unknown target user"), "{ctx}");
    assert_eq!(field(&out, "user-as-master"), "no", "{ctx}");
    assert_eq!(field(&out, "user-as-master-plain"), "no", "{ctx}");
    assert_eq!(field(&out, "pop-user-as-master"), "no", "{ctx}");
    assert!(log.contains("master=bob, client=127.0.0.6"), "{ctx}");
    assert!(log.contains("reason=unknown master user"), "{ctx}");
    assert_eq!(field(&out, "bob-own"), "ok 0", "{ctx}");
    assert!(
        !log.contains("Proxy-Master-9") && !log.contains("Bob-Plain-2"),
        "a password in the log\n{log}"
    );
}

#[test]
fn without_a_master_file_the_separator_means_nothing() {
    let (inst, imap, pop3) = instance(false);
    let out = python(
        &SCRIPT
            .replace("{imap}", &imap.to_string())
            .replace("{pop3}", &pop3.to_string()),
    );
    let ctx = format!("{out}\nlog:\n{}", inst.log());
    for key in [
        "imap-login",
        "imap-plain",
        "pop-login",
        "pop-plain",
        "user-as-master-plain",
    ] {
        assert_eq!(field(&out, key), "no", "{key}\n{ctx}");
    }
    assert_eq!(field(&out, "bob-own"), "ok 0", "{ctx}");
    assert!(
        inst.log().contains("user=alice*proxy") && inst.log().contains("reason=unknown user"),
        "{ctx}"
    );
}
