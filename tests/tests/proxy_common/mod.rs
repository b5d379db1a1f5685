//! The proxy tests' instance: one Postern with auth, pop3d and imapd (the backends) and
//! the POP3 and IMAP proxies in front of them, the master user `proxy` in
//! `etc/master-users` and its password in `etc/proxy-password`; users alice and bob.

#![allow(dead_code)]

use postern_tests::{Instance, add_master_user, add_user, auth_service, daemon_service, free_port, owned_mail_base};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const ALICE_PW: &str = "Alice-Proxy-Pw1";
pub const BOB_PW: &str = "Bob-Proxy-Pw2";
pub const MASTER_PW: &str = "Master-Proxy-Pw9";

/// The instance and its ports.
pub struct Box {
    pub inst: Instance,
    pub pop3: u16,
    pub imap: u16,
    pub pop3_proxy: u16,
    pub imap_proxy: u16,
}

/// Ports for the backends lists: `pop3` and `imap` are the list entries placed before the
/// real backend (a dead port, a hanging listener).
pub fn start(pop3_before: &[u16], imap_before: &[u16], settings: &[&str]) -> Box {
    let (pop3, imap, pop3_proxy, imap_proxy) = (free_port(), free_port(), free_port(), free_port());
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
    services.push_str(&daemon_service(
        "pop3-proxy",
        "inet",
        &format!("127.0.0.1:{pop3_proxy}"),
        "proxy",
        "args = [\"pop3\"]",
    ));
    services.push_str(&daemon_service(
        "imap-proxy",
        "inet",
        &format!("127.0.0.1:{imap_proxy}"),
        "proxy",
        "args = [\"imap\"]",
    ));
    let list = |before: &[u16], real: u16| {
        let mut v: Vec<String> = before.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        v.push(format!("\"127.0.0.1:{real}\""));
        format!("[{}]", v.join(","))
    };
    let pop3_list = format!("proxy_pop3_backends={}", list(pop3_before, pop3));
    let imap_list = format!("proxy_imap_backends={}", list(imap_before, imap));
    let mut all = vec![
        "auth_failure_delay=0s",
        "auth_master_users_file=master-users",
        "proxy_master_password_file=proxy-password",
        pop3_list.as_str(),
        imap_list.as_str(),
    ];
    all.extend_from_slice(settings);
    let mut inst = Instance::new(&services, &all);
    add_user(&inst, "alice", ALICE_PW);
    add_user(&inst, "bob", BOB_PW);
    add_master_user(&inst, "proxy", MASTER_PW, "master-users", "proxy-password");
    let mail = inst.root.path().join("var/mail");
    for u in ["alice", "bob"] {
        for d in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(mail.join(u).join(d)).expect("mkdir maildir");
        }
    }
    owned_mail_base(&inst);
    inst.start();
    Box {
        inst,
        pop3,
        imap,
        pop3_proxy,
        imap_proxy,
    }
}

/// A message of `n` lines, numbered, for `user`.
pub fn message(i: usize, lines: usize) -> Vec<u8> {
    let mut m = format!("From: sender@example.test\r\nSubject: message {i}\r\nMessage-ID: <m{i}@example.test>\r\n\r\n")
        .into_bytes();
    for l in 0..lines {
        m.extend_from_slice(format!("line {l} of message {i} .\r\n").as_bytes());
        if l % 7 == 3 {
            m.extend_from_slice(b".a line that starts with a dot\r\n");
        }
    }
    m
}

/// A raw client connection.
pub struct Raw {
    pub s: TcpStream,
    pub got: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        Raw { s, got: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    /// Reads until `done(received)` or `limit` passes or the peer closes; returns all
    /// received so far (kept).
    pub fn until(&mut self, limit: Duration, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let start = Instant::now();
        let mut buf = [0u8; 65536];
        while !done(&self.got) && start.elapsed() < limit {
            match self.s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        self.got.clone()
    }

    /// Reads until `needle` has come (after what was taken), then takes everything.
    pub fn take_until(&mut self, needle: &[u8], limit: Duration) -> Vec<u8> {
        self.until(limit, |g| contains(g, needle));
        std::mem::take(&mut self.got)
    }

    /// Reads until the peer closes (or `limit`).
    pub fn read_to_close(&mut self, limit: Duration) -> Vec<u8> {
        let start = Instant::now();
        let mut buf = [0u8; 65536];
        while start.elapsed() < limit {
            match self.s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        std::mem::take(&mut self.got)
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Files in a Maildir's new/ and cur/.
pub fn maildir_count(b: &Box, user: &str) -> usize {
    let md = b.inst.root.path().join("var/mail").join(user);
    ["new", "cur"]
        .iter()
        .map(|d| std::fs::read_dir(md.join(d)).map(|r| r.count()).unwrap_or(0))
        .sum()
}

/// The pids of the running processes whose command name is `comm`, children of master.
pub fn daemon_pids(b: &Box, comm: &str) -> Vec<u32> {
    postern_tests::children_of(b.inst.master_pid())
        .into_iter()
        .filter(|p| postern_tests::comm(*p).as_deref() == Some(comm))
        .collect()
}
