//! The POP3 proxy (issue 15) on loopback in front of the same instance's pop3d: a real
//! master, auth, pop3d and proxy; raw sockets and Python's poplib as clients.
//!
//! * Through the proxy a session's answers are byte for byte what pop3d says directly
//!   (STAT, LIST, UIDL, RETR with dot-stuffed lines, TOP, pipelined in one write, order
//!   kept); DELE and QUIT through the proxy delete on the backend.
//! * The backend sees the master login (auth: `master user proxy logged in as alice`,
//!   service pop3); the client's password is checked once (service pop3-proxy) and never
//!   reaches the backend: every backend login of alice is the master's.
//! * The first backend in the list is down (a closed port): the next one is used.
//! * A backend that hangs after login (pop3d stopped with SIGSTOP): the client gets
//!   `-ERR [SYS/TEMP]` within proxy_backend_timeout, and the connection closes.
//! * A backend killed mid-session: `-ERR [SYS/TEMP] ... lost` and the connection closes;
//!   one that answers garbage: the same, the garbage never reaching the client.
//! * An over-long command line gets `-ERR` and the connection closes.
//! * With TLS configured and the client outside proxy_secure_networks, USER is refused
//!   until STLS (IMAP: LOGINDISABLED until STARTTLS); after it the login works.

mod proxy_common;

use postern_tests::{deliver_maildir, free_port, python};
use proxy_common::{ALICE_PW, Raw, contains, daemon_pids, maildir_count, message, start, text};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn login(port: u16, user: &str, pw: &str) -> Raw {
    let mut c = Raw::connect(port);
    let g = c.take_until(b"\r\n", T);
    assert!(g.starts_with(b"+OK"), "greeting: {}", text(&g));
    c.send(format!("USER {user}\r\nPASS {pw}\r\n").as_bytes());
    let r = c.until(T, |g| g.iter().filter(|&&b| b == b'\n').count() >= 2);
    assert!(
        r.starts_with(b"+OK") && contains(&r, b"\r\n+OK"),
        "login of {user}: {}",
        text(&r)
    );
    c.got.clear();
    c
}

const READS: &[u8] = b"STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 3\r\nLIST 3\r\nNOOP\r\nRETR 3\r\nQUIT\r\n";

#[test]
fn pop3_through_the_proxy() {
    let dead = free_port();
    let b = start(&[dead], &[], &[]);
    for i in 1..=4 {
        deliver_maildir(&b.inst, "alice", &format!("100{i}.M{i}.test"), &message(i, 40 * i));
    }

    // the same pipelined session directly and through the proxy
    let mut direct = login(b.pop3, "alice", ALICE_PW);
    direct.send(READS);
    let want = direct.read_to_close(T);
    let mut proxied = login(b.pop3_proxy, "alice", ALICE_PW);
    proxied.send(READS);
    let got = proxied.read_to_close(T);
    assert!(
        want.ends_with(b"+OK Bye\r\n") || contains(&want, b"\r\n+OK"),
        "{}",
        text(&want)
    );
    assert!(want.len() > 4000, "{}", text(&want));
    assert_eq!(text(&got), text(&want), "the proxy changed the answers");

    // DELE through the proxy, QUIT: gone on the backend
    let mut p = login(b.pop3_proxy, "alice", ALICE_PW);
    p.send(b"DELE 1\r\nDELE 3\r\nQUIT\r\n");
    let r = p.read_to_close(T);
    assert_eq!(r.iter().filter(|&&c| c == b'\n').count(), 3, "{}", text(&r));
    assert!(!contains(&r, b"-ERR"), "{}", text(&r));
    assert_eq!(maildir_count(&b, "alice"), 2);

    // Python's poplib through the proxy
    let out = python(&format!(
        r#"
import poplib
p = poplib.POP3('127.0.0.1', {port}, timeout=30)
p.user('alice'); p.pass_('{ALICE_PW}')
n, size = p.stat()
lines = p.retr(1)[1]
print('stat', n, 'first', lines[1].decode())
p.quit()
"#,
        port = b.pop3_proxy
    ));
    assert!(out.contains("stat 2 first Subject: message 2"), "{out}");

    let log = b.inst.log();
    // the backend saw the master login only
    assert!(log.contains("master user proxy logged in as alice"), "{log}");
    assert!(
        log.contains("connect: Connection refused") && log.contains(&format!("127.0.0.1:{dead}")),
        "the dead first backend is not logged\n{log}"
    );
    assert!(log.contains(&format!("backend=127.0.0.1:{}", b.pop3)), "{log}");
    let proxied_logins = log.matches("service=pop3-proxy").count();
    let backend_plain = log
        .lines()
        .filter(|l| l.contains("auth ok: user=alice, client=") && l.ends_with("service=pop3"))
        .count();
    // alice logged in directly once (the comparison): every other backend login is the master's
    assert_eq!(backend_plain, 1, "{log}");
    assert!(proxied_logins >= 3, "{log}");
    assert!(
        !log.contains(ALICE_PW) && !log.contains(proxy_common::MASTER_PW),
        "a password in the log"
    );
}

#[test]
fn pop3_proxy_limits_and_a_hanging_backend() {
    let b = start(&[], &[], &["proxy_backend_timeout=2s"]);
    deliver_maildir(&b.inst, "alice", "1.M1.test", &message(1, 5));

    // an over-long line
    let mut c = login(b.pop3_proxy, "alice", ALICE_PW);
    let mut long = vec![b'N'; 5000];
    long.extend_from_slice(b"\r\nSTAT\r\n");
    c.send(&long);
    let r = c.read_to_close(T);
    assert!(r.starts_with(b"-ERR"), "{}", text(&r));
    assert!(
        !contains(&r, b"+OK"),
        "a command after the long line was run: {}",
        text(&r)
    );

    // the backend hangs mid-session
    let mut c = login(b.pop3_proxy, "alice", ALICE_PW);
    let pids = daemon_pids(&b, "pop3d");
    assert!(!pids.is_empty());
    for p in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p as i32), nix::sys::signal::Signal::SIGSTOP);
    }
    let t = Instant::now();
    c.send(b"STAT\r\n");
    let r = c.read_to_close(T);
    let took = t.elapsed();
    for p in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p as i32), nix::sys::signal::Signal::SIGCONT);
    }
    assert!(
        text(&r).starts_with("-ERR [SYS/TEMP] The mailbox server did not answer in time"),
        "{}",
        text(&r)
    );
    assert!(
        took < Duration::from_secs(10),
        "told after {took:?} (proxy_backend_timeout 2 s)"
    );
    assert!(b.inst.log().contains("did not answer in 2s"), "{}", b.inst.log());

    // the backend dies mid-session (kill -9 of pop3d)
    let mut c = login(b.pop3_proxy, "alice", ALICE_PW);
    for p in daemon_pids(&b, "pop3d") {
        postern_tests::kill9(p);
    }
    c.send(b"STAT\r\n");
    let r = text(&c.read_to_close(T));
    assert!(
        r.starts_with("-ERR [SYS/TEMP] The connection to the mailbox server was lost"),
        "{r}"
    );
    assert!(
        b.inst.log().contains("lost: the backend closed the connection"),
        "{}",
        b.inst.log()
    );
}

#[test]
fn outside_proxy_secure_networks_tls_comes_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = postern_tests::self_signed_cert(dir.path());
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let settings = [
        "proxy_secure_networks=[]".to_string(),
        format!("pop3d_tls_cert_file={}", cert.display()),
        format!("pop3d_tls_key_file={}", key.display()),
        format!("imapd_tls_cert_file={}", cert.display()),
        format!("imapd_tls_key_file={}", key.display()),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let b = start(&[], &[], &settings);
    deliver_maildir(&b.inst, "alice", "1.M1.test", &message(1, 5));
    let out = python(&format!(
        r#"
import imaplib, poplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3('127.0.0.1', {pop3}, timeout=30)
print('pop-capa-before', 'STLS' in p.capa(), 'USER' in p.capa())
try:
    p.user('alice'); print('pop-plain', 'accepted')
except poplib.error_proto as e:
    print('pop-plain', e.args[0].decode().split(' ')[1])
p.stls(ctx)
p.user('alice'); p.pass_('{ALICE_PW}')
print('pop-tls', p.stat()[0])
p.quit()
m = imaplib.IMAP4('127.0.0.1', {imap}, timeout=30)
print('imap-caps-before', 'STARTTLS' in m.capabilities, 'LOGINDISABLED' in m.capabilities)
try:
    m.login('alice', '{ALICE_PW}'); print('imap-plain', 'accepted')
except imaplib.IMAP4.error as e:
    print('imap-plain', 'refused')
m.starttls(ctx)
m.login('alice', '{ALICE_PW}')
print('imap-tls', m.select('INBOX')[1][0].decode())
m.logout()
"#,
        pop3 = b.pop3_proxy,
        imap = b.imap_proxy
    ));
    for want in [
        "pop-capa-before True False",
        "pop-plain [AUTH]",
        "pop-tls 1",
        "imap-caps-before True True",
        "imap-plain refused",
        "imap-tls 1",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}\n{}", b.inst.log());
    }
    let log = b.inst.log();
    assert!(
        log.contains("proxy: login: user=alice, client=127.0.0.1, backend=") && log.contains("tls=true"),
        "{log}"
    );
}

/// Issue 15's bad input, POP3's side of proxy_imap's: a backend that takes the master
/// login and then answers a command with garbage. The garbage never reaches the client:
/// it gets `-ERR [SYS/TEMP]` and the connection closes; the log names the backend.
#[test]
fn a_backend_that_answers_garbage_ends_the_session_clearly() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake = l.local_addr().expect("addr").port();
    let seen = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let (s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut w = s.try_clone().expect("clone");
        let mut r = std::io::BufReader::new(s);
        let mut got = Vec::new();
        w.write_all(b"+OK fake ready\r\n").expect("greet");
        for answer in [&b"+OK\r\n"[..], b"+OK fake logged in\r\n", b"complete garbage\r\n"] {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).expect("command");
            got.extend_from_slice(&line);
            w.write_all(answer).expect("answer");
        }
        std::thread::sleep(Duration::from_secs(1));
        got
    });
    let b = start(&[fake], &[], &[]);
    let mut c = login(b.pop3_proxy, "alice", ALICE_PW);
    c.send(b"STAT\r\n");
    let r = text(&c.read_to_close(T));
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    assert!(!r.contains("garbage"), "{r}");
    let got = text(&seen.join().expect("fake backend"));
    // the backend got the master login, never alice's password, then the command
    assert!(got.starts_with("USER alice*proxy\r\nPASS "), "{got}");
    assert!(!got.contains(ALICE_PW), "{got}");
    assert!(got.ends_with("STAT\r\n"), "{got}");
    let log = b.inst.log();
    assert!(log.contains(&format!("backend 127.0.0.1:{fake} lost")), "{log}");
}
