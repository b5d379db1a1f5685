//! Shared set-up for smtpd's whole-system tests: an instance with smtpd on a free port,
//! the real auth daemon (user alice, password `alice-pw`; aliases `postmaster` and
//! `root`), and the real cleanup writing queue files into `incoming/` — or, to make
//! cleanup refuse or fail on demand, `postern-test-cleanup` (which writes what it
//! receives to `test-received/`) — plus a raw SMTP client and a runner for Python's
//! smtplib.
#![allow(dead_code)]

use postern_lib::queue_file::{Limits, QueueFile};
pub use postern_tests::Instance;
use postern_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const LONG: Duration = Duration::from_secs(30);

/// A running instance with smtpd.
pub struct Smtpd {
    pub inst: Instance,
    pub port: u16,
}

/// Starts master with smtpd (`smtp_extra`: more TOML lines for its service entry, e.g.
/// `options = {...}`), auth, and cleanup: `cleanup_mode` `""` is the real cleanup,
/// `reject` / `tempfail` the test cleanup answering every message that way, `none` no
/// cleanup at all.
pub fn start(settings: &[&str], smtp_extra: &str, cleanup_mode: &str) -> Smtpd {
    start_full(settings, smtp_extra, cleanup_mode, true, &|_| {})
}

/// [`start`] with a choice of running auth, and `prepare` run on the instance before
/// master starts (to write certificates and tables into its etc/).
pub fn start_full(
    settings: &[&str],
    smtp_extra: &str,
    cleanup_mode: &str,
    with_auth: bool,
    prepare: &dyn Fn(&Instance),
) -> Smtpd {
    let port = free_port();
    let mut services = daemon_service("smtp", "inet", &format!("127.0.0.1:{port}"), "smtpd", smtp_extra);
    match cleanup_mode {
        "none" => {}
        "" => services.push_str(&daemon_service("cleanup", "unix", "", "cleanup", "")),
        mode => {
            // Unprivileged = false: it writes test-received/ in the root-owned queue directory.
            let args = format!("args = [\"{mode}\"]\nunprivileged = false");
            services.push_str(&daemon_service("cleanup", "unix", "", "postern-test-cleanup", &args));
        }
    }
    if with_auth {
        services.push_str(&auth_service());
    }
    let mut inst = Instance::new(&services, settings);
    std::fs::write(
        inst.etc().join("aliases"),
        "# test aliases\npostmaster: root\nroot: alice\n",
    )
    .unwrap();
    add_user(&inst, "alice", "alice-pw");
    prepare(&inst);
    inst.start();
    Smtpd { inst, port }
}

impl Smtpd {
    /// The messages queued in `incoming/` by the real cleanup: (envelope as text —
    /// `sender S`, `rcpt A notify=N orcpt=O` lines, `attr K=V` lines — and the content
    /// with its line ends turned back into CRLF), in queue-ID order.
    pub fn received(&self) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        walk(&self.inst.queue().join("incoming"), &mut files);
        files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
        let mut out = Vec::new();
        for p in files {
            let f = std::fs::File::open(&p).unwrap();
            let (qf, content) = QueueFile::read_all(f, &Limits::default()).unwrap();
            let mut env = format!("sender {}\n", qf.envelope.sender);
            for r in &qf.recipients {
                let n = r.spec.notify;
                let notify: Vec<&str> = if n.never() {
                    vec!["NEVER"]
                } else {
                    [(n.success(), "SUCCESS"), (n.failure(), "FAILURE"), (n.delay(), "DELAY")]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, w)| *w)
                        .collect()
                };
                env.push_str(&format!(
                    "rcpt {} notify={} orcpt={}\n",
                    r.spec.address,
                    notify.join(","),
                    r.spec.orcpt.clone().unwrap_or_default()
                ));
            }
            for (k, v) in &qf.envelope.attributes {
                env.push_str(&format!("attr {k}={v}\n"));
            }
            let mut crlf = Vec::with_capacity(content.len());
            for (i, &b) in content.iter().enumerate() {
                if b == b'\n' && (i == 0 || content.get(i - 1) != Some(&b'\r')) {
                    crlf.push(b'\r');
                }
                crlf.push(b);
            }
            out.push((env, crlf));
        }
        out
    }

    /// What the test cleanup received (same form as [`received`](Self::received)).
    pub fn test_received(&self) -> Vec<(String, Vec<u8>)> {
        let dir = self.inst.queue().join("test-received");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "env"));
        names.sort();
        names
            .iter()
            .map(|p| {
                let env = std::fs::read_to_string(p).unwrap();
                let msg = std::fs::read(p.with_extension("msg")).unwrap();
                (env, msg)
            })
            .collect()
    }

    /// A client connected to smtpd, greeting read.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }
}

fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')) {
            out.push(p);
        }
    }
}

/// A raw SMTP client: bytes out, replies in.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub greeting: String,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut c = Client {
            stream,
            reader,
            greeting: String::new(),
        };
        c.greeting = c.reply();
        c
    }

    /// Reads one (possibly multi-line) reply; empty at end of file.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends a command line and reads its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Whether the server has closed the connection (reads to end of file).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok()
    }
}

/// Writes a certificate for mail.example.test and 127.0.0.1 (made with rcgen) and its
/// key as `smtpd.crt` / `smtpd.key` in the instance's etc/; returns the certificate path
/// (a client's trust anchor).
pub fn write_cert(inst: &Instance) -> PathBuf {
    let ck =
        rcgen::generate_simple_self_signed(vec!["mail.example.test".to_string(), "127.0.0.1".to_string()]).unwrap();
    let crt = inst.etc().join("smtpd.crt");
    std::fs::write(&crt, ck.cert.pem()).unwrap();
    std::fs::write(inst.etc().join("smtpd.key"), ck.signing_key.serialize_pem()).unwrap();
    crt
}

/// The settings that point smtpd at [`write_cert`]'s files.
pub const TLS_SETTINGS: [&str; 2] = ["smtpd_tls_cert_file=smtpd.crt", "smtpd_tls_key_file=smtpd.key"];

/// Runs a Python script (smtplib is a real, independent SMTP client) with `args`;
/// returns its stdout, asserting success.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
