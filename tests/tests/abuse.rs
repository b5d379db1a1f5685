//! Abuse on loopback, bounded: 300 concurrent connections (100 each to smtpd, imapd and
//! pop3d, from 100 different loopback addresses 127.0.2.1–100 so no per-client limit is
//! hit), half of them idle and half dribbling one byte a second without ever finishing a
//! line, all held open while:
//!
//! * a normal client (127.0.0.1) completes a whole SMTP transaction (the message then
//!   reaches the Maildir), an IMAP LOGIN + SELECT and a POP3 login + STAT — outcomes only,
//!   with generous deadlines, no timing assertions;
//! * smtpd's per-client limits still answer `421 4.7.0`: the 4th concurrent connection
//!   from 127.0.0.77 with `smtpd_client_connection_count_limit = 3`, the 6th connection
//!   in a minute from 127.0.0.78 with `smtpd_client_connection_rate_limit = 5` (smtpd runs
//!   as one process, `maxproc = 1`, which so holds all 100 abusive SMTP sessions itself:
//!   the limits are counted per process);
//! * auth's failure penalty slows but never locks out: after a burst of wrong IMAP
//!   passwords for carol from 127.0.0.66, carol's right password works from that address
//!   (after its penalty) and from 127.0.0.1, and so does dave's (issue 10: it used to lock
//!   carol out everywhere and everyone out of that address).
//!
//! `bench/abuse.py` is the benchmark version (1,000 connections, wait times reported).

use postern_tests::{
    Instance, add_user, auth_service, daemon_service, free_port, maildir_messages, owned_mail_base, wait_for,
};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);
/// Abusive connections per service.
const PER_SERVICE: usize = 100;

/// Holds `PER_SERVICE` connections to each port given, from 127.0.2.1–100; even-numbered
/// ones stay idle, odd ones send one byte a second (never a line end). Each connection
/// first reads the server's greeting. Prints `ready N` once N are open, then `open N`
/// (those still open) when its standard input closes, and exits.
const LOAD: &str = r#"
import asyncio, sys
per, ports = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
conns = []
async def one(port, i):
    r, w = await asyncio.wait_for(
        asyncio.open_connection('127.0.0.1', port, local_addr=('127.0.2.%d' % (i % 100 + 1), 0)), 60)
    greeting = await asyncio.wait_for(r.readline(), 60)
    if not (greeting.startswith(b'220') or greeting.startswith(b'* OK') or greeting.startswith(b'+OK')):
        raise SystemExit('bad greeting on %d: %r' % (port, greeting))
    conns.append((r, w, i % 2 == 1))
async def dribble():
    n = 0
    while True:
        for r, w, d in conns:
            if d and not w.is_closing():
                try:
                    w.write(b'NOOP'[n % 4:n % 4 + 1])
                except Exception:
                    pass
        n += 1
        await asyncio.sleep(1)
async def main():
    for port in ports:
        await asyncio.gather(*(one(port, i) for i in range(per)))
    print('ready', len(conns), flush=True)
    task = asyncio.create_task(dribble())
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    task.cancel()
    open_ = 0
    for r, w, d in conns:
        try:
            data = await asyncio.wait_for(r.read(1 << 16), 0.01)
            if data:
                open_ += 1
        except asyncio.TimeoutError:
            open_ += 1
        except Exception:
            pass
    print('open', open_, flush=True)
asyncio.run(main())
"#;

/// What a normal client does meanwhile, from 127.0.0.1.
const NORMAL: &str = r#"
import imaplib, poplib, smtplib, sys
smtp, imap, pop3 = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
msg = b"From: bob@example.test\r\nSubject: under load\r\nMessage-ID: <abuse1@example.test>\r\n\r\nstill served\r\n"
with smtplib.SMTP('127.0.0.1', smtp, timeout=60) as s:
    s.ehlo('normal.test')
    code, text = s.mail('bob@example.test')
    assert code == 250, (code, text)
    code, text = s.rcpt('alice@example.test')
    assert code == 250, (code, text)
    code, text = s.data(msg)
    assert code == 250 and text.startswith(b'2.0.0 Ok: queued as'), (code, text)
print('smtp ok')
M = imaplib.IMAP4('127.0.0.1', imap, timeout=60)
assert M.login('alice', 'Alice-Abuse-1')[0] == 'OK'
assert M.select('INBOX')[0] == 'OK'
M.logout()
print('imap ok')
P = poplib.POP3('127.0.0.1', pop3, timeout=60)
P.user('bob')
assert P.pass_('Bob-Abuse-1').startswith(b'+OK')
print('pop3', P.stat())
P.quit()
print('normal ok')
"#;

/// smtpd's per-client count and rate limits, from their own addresses.
const LIMITS: &str = r#"
import socket, sys
port = int(sys.argv[1])
def conn(src):
    s = socket.create_connection(('127.0.0.1', port), 60, source_address=(src, 0))
    f = s.makefile('rb')
    return s, f, f.readline()
held = [conn('127.0.0.77') for _ in range(4)]
print('count', [g.decode().strip() for _, _, g in held])
for s, f, _ in held:
    s.close()
rate = []
for _ in range(6):
    s, f, g = conn('127.0.0.78')
    rate.append(g.decode().strip())
    if g.startswith(b'220'):
        s.sendall(b'QUIT\r\n')
        f.readline()
    s.close()
print('rate', rate)
"#;

/// A burst of wrong passwords for carol from 127.0.0.66, then who may still log in.
const THROTTLE: &str = r#"
import imaplib, sys
port = int(sys.argv[1])
class From(imaplib.IMAP4):
    def __init__(self, src):
        self.src = src
        super().__init__('127.0.0.1', port, timeout=60)
    def _create_socket(self, timeout):
        import socket
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.src, 0))
def login(src, user, pw):
    M = From(src)
    try:
        M.login(user, pw)
        M.logout()
        return 'ok'
    except imaplib.IMAP4.error as e:
        return 'no'
burst = [login('127.0.0.66', 'carol', 'wrong-%d' % i) for i in range(3)]
print('burst', burst)
print('carol-right-same-addr', login('127.0.0.66', 'carol', 'Carol-Abuse-1'))
print('carol-right-other-addr', login('127.0.0.1', 'carol', 'Carol-Abuse-1'))
print('dave-same-addr', login('127.0.0.66', 'dave', 'Dave-Abuse-1'))
print('dave-other-addr', login('127.0.0.1', 'dave', 'Dave-Abuse-1'))
"#;

/// The load generator; killed (by its own pid) if the test fails before it ends.
struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_py(script: &str, args: &[String]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn line_of<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or("")
}

#[test]
fn normal_clients_served_and_limits_hold_under_300_abusive_connections() {
    let (smtp, imap, pop3) = (free_port(), free_port(), free_port());
    let mut services = String::new();
    services.push_str(&daemon_service(
        "smtp",
        "inet",
        &format!("127.0.0.1:{smtp}"),
        "smtpd",
        "maxproc = 1\nmax_conns = 400\nmax_use = 100000",
    ));
    services.push_str(&daemon_service("cleanup", "unix", "", "cleanup", "maxproc = 8"));
    services.push_str(&daemon_service(
        "rewrite",
        "unix",
        "",
        "trivial-rewrite",
        "max_use = 100000",
    ));
    services.push_str(&daemon_service(
        "qmgr",
        "unix",
        "public/qmgr",
        "qmgr",
        "maxproc = 1\nmin_procs = 1\nwakeup = \"60s\"\nmax_use = 1000000000\nmax_idle = \"1000d\"",
    ));
    services.push_str(&daemon_service("local", "unix", "", "local", "maxproc = 4"));
    services.push_str(&auth_service());
    services.push_str(&daemon_service(
        "imap",
        "inet",
        &format!("127.0.0.1:{imap}"),
        "imapd",
        "maxproc = 2\nmax_use = 100000",
    ));
    services.push_str(&daemon_service(
        "pop3",
        "inet",
        &format!("127.0.0.1:{pop3}"),
        "pop3d",
        "maxproc = 2\nmax_use = 100000",
    ));
    let mut inst = Instance::new(
        &services,
        &[
            "smtpd_client_connection_count_limit=3",
            "smtpd_client_connection_rate_limit=5",
            // Loopback is in mynetworks, which these limits exempt by default.
            "smtpd_client_event_limit_exceptions=[]",
            "auth_failure_delay=1s",
            "auth_penalty_max=2s",
            "queue_run_delay=1s",
            "minimal_backoff_time=1s",
        ],
    );
    for (u, p) in [
        ("alice", "Alice-Abuse-1"),
        ("bob", "Bob-Abuse-1"),
        ("carol", "Carol-Abuse-1"),
        ("dave", "Dave-Abuse-1"),
    ] {
        add_user(&inst, u, p);
    }
    let mail = inst.root.path().join("var/mail");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(mail.join("bob").join(d)).expect("mkdir");
    }
    owned_mail_base(&inst);
    inst.start();

    // The abusive connections, all open (each greeted) before anything else happens.
    let child = Command::new("python3")
        .arg("-c")
        .arg(LOAD)
        .arg(PER_SERVICE.to_string())
        .args([smtp.to_string(), imap.to_string(), pop3.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 load");
    let mut load = Load(child);
    let mut reader = BufReader::new(load.0.stdout.take().expect("stdout"));
    let mut ready = String::new();
    reader.read_line(&mut ready).expect("ready line");
    if ready.trim() != format!("ready {}", 3 * PER_SERVICE) {
        let _ = load.0.kill();
        let mut err = String::new();
        if let Some(mut e) = load.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("load generator: {ready:?}\n{err}\nlog:\n{}", inst.log());
    }

    // A normal client is served in full meanwhile.
    let args = [smtp.to_string(), imap.to_string(), pop3.to_string()];
    let out = run_py(NORMAL, &args);
    assert!(
        out.contains("smtp ok") && out.contains("imap ok") && out.contains("normal ok"),
        "{out}"
    );
    assert_eq!(line_of(&out, "pop3"), "(0, 0)", "{out}");
    let inbox = mail.join("alice");
    assert!(
        wait_for(LONG, || maildir_messages(&inbox)
            .iter()
            // Maildir files hold lines ending in LF.
            .any(|m| m.ends_with(b"\n\nstill served\n")
                && m.windows(34).any(|w| w == b"Message-ID: <abuse1@example.test>\n"))),
        "the message accepted under load reached alice: {:?}",
        maildir_messages(&inbox)
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect::<Vec<_>>()
    );

    // smtpd's per-client limits.
    let out = run_py(LIMITS, &[smtp.to_string()]);
    let count = line_of(&out, "count");
    assert_eq!(count.matches("'220 ").count(), 3, "{out}");
    assert!(
        count.contains("'421 4.7.0 mail.example.test Error: too many connections from 127.0.0.77'"),
        "{out}"
    );
    let rate = line_of(&out, "rate");
    assert_eq!(rate.matches("'220 ").count(), 5, "{out}");
    assert!(
        rate.ends_with("'421 4.7.0 mail.example.test Error: too many connections per minute from 127.0.0.78']"),
        "{out}"
    );

    // auth's failure penalty: guesses are slowed, but (issue 10) never lock anyone out —
    // the right password works from the guessing address and from any other.
    let out = run_py(THROTTLE, &[imap.to_string()]);
    assert_eq!(line_of(&out, "burst"), "['no', 'no', 'no']", "{out}");
    assert_eq!(line_of(&out, "carol-right-same-addr"), "ok", "{out}");
    assert_eq!(line_of(&out, "carol-right-other-addr"), "ok", "{out}");
    assert_eq!(line_of(&out, "dave-same-addr"), "ok", "{out}");
    assert_eq!(line_of(&out, "dave-other-addr"), "ok", "{out}");
    let log = inst.log();
    assert!(log.contains("auth failure: user=carol, client=127.0.0.66"), "{log}");
    assert!(!log.contains("locked out"), "{log}");
    assert!(!log.contains("wrong-0"), "no password in the log");

    // The abusive connections were held all along; end them.
    if let Some(stdin) = load.0.stdin.as_mut() {
        let _ = stdin.flush();
    }
    drop(load.0.stdin.take());
    let mut open = String::new();
    reader.read_line(&mut open).expect("open line");
    assert!(open.starts_with("open "), "{open:?}");
    eprintln!("abusive connections still open at the end: {}", open.trim());
    drop(load);
    inst.stop();
}
