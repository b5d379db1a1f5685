//! # postern-tests — whole-system tests
//!
//! Each test builds a throwaway Postern instance in a temporary directory — a copy of the
//! shipped `etc/` edited with the real `postern config set`, ports chosen free on
//! loopback — starts the real `master` with the real `postern start`, talks to it over
//! real sockets, and stops it. [`Instance`] is that harness; dropping it stops master
//! (and kills it if it will not stop) so a failed test leaves nothing running.
//!
//! The binaries are the ones cargo built next to the test executable
//! (`target/<profile>/postern`, `master`, ...), which `cargo test --workspace` builds.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub mod imap_inbox;
pub mod imap_raw;
pub mod imap_script;
pub mod netns;
pub mod ports;
pub mod redundant;
pub mod skip;
pub mod vip_pair;
pub use ports::free_port;
pub use skip::{require_root, require_tool, skip};

/// `target/<profile>/` — where cargo put the binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The path of a built binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The repository root (for the shipped `etc/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
/// This waits for an outcome; it asserts nothing about how long it took.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The direct children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(
                    s.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok())
                        .filter(|&p| alive(p)),
                );
            }
        }
    }
    out
}

/// A Postern instance in a temporary directory.
pub struct Instance {
    /// The temporary root (`etc/`, `var/`).
    pub root: tempfile::TempDir,
    started: bool,
    /// The network namespace `postern` (and so master) runs in ([`Instance::set_netns`]).
    netns: Option<String>,
}

impl Instance {
    /// A copy of the shipped `etc/` with a fresh `master.toml` holding `services` (TOML
    /// text of `[[service]]` entries) and `settings` applied with `postern config set`.
    pub fn new(services: &str, settings: &[&str]) -> Instance {
        // As root the daemons run as mail_owner; make sure the account exists before a test
        // hands files to it (postern start would create it too, but later).
        if is_root() {
            postern_lib::accounts::ensure_mail_owner("postern").expect("create mail_owner postern");
        }
        let root = tempfile::Builder::new()
            .prefix("postern-test")
            .tempdir()
            .expect("tempdir");
        // Daemons dropped to mail_owner must be able to reach what lies below.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).expect("mkdir etc");
        for f in ["main.toml", "master.toml"] {
            std::fs::copy(repo_root().join("etc").join(f), etc.join(f)).expect("copy etc");
        }
        let master = format!("# test services\n{services}");
        std::fs::write(etc.join("master.toml"), master).expect("write master.toml");
        let inst = Instance {
            root,
            started: false,
            netns: None,
        };
        let mut all = vec!["service_throttle_time=60s", "shutdown_timeout=5s"];
        all.extend_from_slice(settings);
        let out = inst.postern(&[&["config", "set"][..], &all].concat());
        assert!(
            out.status.success(),
            "config set failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        inst
    }

    /// The config directory.
    pub fn etc(&self) -> PathBuf {
        self.root.path().join("etc")
    }

    /// The queue directory.
    pub fn queue(&self) -> PathBuf {
        self.root.path().join("var/spool")
    }

    /// The queue files still in incoming/, active/ and deferred/ (a drained queue has none).
    pub fn queue_left(&self) -> Vec<PathBuf> {
        ["incoming", "active", "deferred"]
            .iter()
            .flat_map(|d| files_below(&self.queue().join(d)))
            .collect()
    }

    /// Runs `postern` (so `start`, and master with it) inside network namespace `ns`
    /// (`ip netns exec NS postern ...`): listen addresses are that namespace's.
    pub fn set_netns(&mut self, ns: &str) {
        self.netns = Some(ns.to_string());
    }

    /// Runs `postern -c ETC ARGS...` (inside the namespace of [`Instance::set_netns`]).
    pub fn postern(&self, args: &[&str]) -> Output {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("postern"));
                c
            }
            None => Command::new(bin("postern")),
        };
        cmd.arg("-c").arg(self.etc()).args(args).output().expect("run postern")
    }

    /// `postern start`, asserting success.
    pub fn start(&mut self) {
        let out = self.postern(&["start"]);
        assert!(
            out.status.success(),
            "postern start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.started = true;
    }

    /// The pid of the running master.
    pub fn master_pid(&self) -> u32 {
        std::fs::read_to_string(self.queue().join("pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .expect("master pid file")
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("var/log/maillog")).unwrap_or_default()
    }

    /// Lines of the log containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// The columns of `postern status` for service `key` (`NAME/TYPE`): key, procs,
    /// busy, idle, conns, served, restarts, maxproc, state...
    pub fn status_row(&self, key: &str) -> Vec<String> {
        let out = String::from_utf8_lossy(&self.postern(&["status"]).stdout).into_owned();
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .map(|l| l.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    }

    /// Waits until service `key` has exactly `idle` idle and no busy children, as master
    /// sees them (so the next client is served by an existing child).
    pub fn wait_idle(&self, key: &str, idle: u32) -> bool {
        wait_for(Duration::from_secs(20), || {
            let row = self.status_row(key);
            row.get(2).map(String::as_str) == Some("0") && row.get(3).and_then(|v| v.parse().ok()) == Some(idle)
        })
    }

    /// `postern stop`.
    pub fn stop(&mut self) -> Output {
        self.started = false;
        self.postern(&["stop"])
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.started {
            let _ = self.postern(&["stop"]);
            if let Ok(pid) = std::fs::read_to_string(self.queue().join("pid/master.pid"))
                && let Ok(pid) = pid.trim().parse::<i32>()
                && alive(pid as u32)
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// A client of the test daemon: connects, reads the greeting `pid PID served N`.
pub struct EchoClient {
    /// The socket.
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The pid of the child serving us.
    pub pid: u32,
}

impl EchoClient {
    /// Connects to 127.0.0.1:`port` and waits for the greeting.
    pub fn connect(port: u16) -> std::io::Result<EchoClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let pid = line
            .strip_prefix("pid ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad greeting {line:?}")))?;
        Ok(EchoClient { stream, reader, pid })
    }

    /// Sends a line and returns the echo.
    pub fn echo(&mut self, text: &str) -> std::io::Result<String> {
        writeln!(self.stream, "{text}")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    }

    /// Ends the session politely.
    pub fn quit(mut self) {
        let _ = writeln!(self.stream, "quit");
        let mut rest = String::new();
        let _ = self.reader.read_line(&mut rest);
    }
}

/// A `[[service]]` entry for the test daemon on a TCP port.
pub fn testd_service(name: &str, mode: &str, port: u16, extra: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\ntype = \"inet\"\nlisten = \"127.0.0.1:{port}\"\ncommand = \"{}\"\nargs = [\"{mode}\"]\n{extra}\n",
        bin("postern-testd").display()
    )
}

/// Reads the `Key:` line of /proc/PID/status.
pub fn proc_status(pid: u32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")).map(|v| v.trim().to_string()))
}

/// Whether this test process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Path helper used in assertions.
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// A `[[service]]` entry for a built daemon: `kind` `inet` or `unix`, `listen` the address
/// or socket path (empty: the default), `extra` more TOML lines.
pub fn daemon_service(name: &str, kind: &str, listen: &str, program: &str, extra: &str) -> String {
    let listen = if listen.is_empty() {
        String::new()
    } else {
        format!("listen = \"{listen}\"\n")
    };
    format!(
        "[[service]]\nname = \"{name}\"\ntype = \"{kind}\"\n{listen}command = \"{}\"\n{extra}\n",
        bin(program).display()
    )
}

/// The replicator unix service of a director's host (issue 16): the steps of `postern user
/// move|rebalance` (no `replica_peers`, so no sweep); several moves at once.
pub fn director_replicator_service() -> String {
    daemon_service(
        "replicator",
        "unix",
        "",
        "replicator",
        "maxproc = 1\nmax_conns = 16\nmax_use = 1000000",
    )
}

/// The auth service as etc/master.toml has it (one process, so one throttle).
pub fn auth_service() -> String {
    daemon_service("auth", "unix", "", "auth", "maxproc = 1\nmax_use = 100000")
}

/// `postern user add NAME` with `password` on stdin, asserting success.
pub fn add_user(inst: &Instance, name: &str, password: &str) {
    let mut child = Command::new(bin("postern"))
        .arg("-c")
        .arg(inst.etc())
        .args(["user", "add", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run postern user add");
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{password}").expect("write password");
    }
    let out = child.wait_with_output().expect("wait postern user add");
    assert!(
        out.status.success(),
        "user add {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes master user `name` with `password` into `etc/FILE` (the format of `etc/users`,
/// the hash made by `postern user add`; for `auth_master_users_file`), and `password` into
/// `etc/PASSWORD_FILE` mode 0600 (for `proxy_master_password_file`).
pub fn add_master_user(inst: &Instance, name: &str, password: &str, file: &str, password_file: &str) {
    add_user(inst, name, password);
    let users = std::fs::read_to_string(inst.etc().join("users")).expect("read etc/users");
    let line = users
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .expect("the new user's line");
    std::fs::write(inst.etc().join(file), format!("{line}\n")).expect("write the master users file");
    let out = inst.postern(&["user", "del", name]);
    assert!(
        out.status.success(),
        "user del {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pw = inst.etc().join(password_file);
    std::fs::write(&pw, format!("{password}\n")).expect("write the master password file");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Runs `python3 -c SCRIPT ARGS...`; returns whether it succeeded, its standard output
/// and its standard error (for tests that check more than success).
pub fn python_args(script: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `python3 -c SCRIPT`, asserting success; returns its standard output.
pub fn python(script: &str) -> String {
    let out = Command::new("python3").arg("-c").arg(script).output().expect("python3");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Puts a message into `var/mail/USER/new/NAME` the way a delivery agent does (written in
/// tmp/, renamed into new/), owned by mail_owner when the test runs as root.
pub fn deliver_maildir(inst: &Instance, user: &str, name: &str, bytes: &[u8]) {
    let base = inst.root.path().join("var/mail");
    let md = base.join(user);
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(md.join(d)).expect("mkdir maildir");
    }
    std::fs::write(md.join("tmp").join(name), bytes).expect("write");
    std::fs::rename(md.join("tmp").join(name), md.join("new").join(name)).expect("rename");
    if is_root() {
        let st = Command::new("chown")
            .arg("-R")
            .arg("postern:")
            .arg(&base)
            .status()
            .expect("chown");
        assert!(st.success());
    }
}

/// Writes a complete queue file into `QUEUE/<dir>/<ID>` as cleanup (and qmgr, for
/// `active`) would leave it, owned by mail_owner when the tests run as root. Each
/// recipient is `(address, notify)`.
pub fn write_queue_file(
    inst: &Instance,
    dir: &str,
    sender: &str,
    rcpts: &[(&str, postern_lib::queue_file::Notify)],
    attributes: &[(&str, &str)],
    content: &[u8],
) -> (postern_lib::queue_id::QueueId, PathBuf) {
    write_queue_file_arrived(inst, dir, sender, rcpts, attributes, content, 1_700_000_000)
}

/// [`write_queue_file`] with the arrival time `arrival` (seconds since the epoch).
pub fn write_queue_file_arrived(
    inst: &Instance,
    dir: &str,
    sender: &str,
    rcpts: &[(&str, postern_lib::queue_file::Notify)],
    attributes: &[(&str, &str)],
    content: &[u8],
    arrival: u64,
) -> (postern_lib::queue_id::QueueId, PathBuf) {
    use postern_lib::queue_file::{Arrival, Envelope, QueueFileWriter, RecipientSpec};
    let id = postern_lib::queue_id::QueueId::new();
    let env = Envelope {
        queue_id: id,
        arrival: Arrival {
            secs: arrival,
            micros: 0,
        },
        sender: sender.into(),
        attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let path = inst.queue().join(dir).join(id.as_str());
    let f = std::fs::File::create_new(&path).expect("create queue file");
    let mut w = QueueFileWriter::new(f, &env).expect("writer");
    for (r, notify) in rcpts {
        w.add_recipient(&RecipientSpec {
            address: r.to_string(),
            orcpt: None,
            notify: *notify,
        })
        .expect("rcpt");
    }
    w.write_content(content).expect("content");
    let f = w.finish().expect("finish");
    f.sync_all().expect("fsync");
    if is_root() {
        let (u, g) = postern_lib::privs::lookup("postern").expect("mail_owner");
        std::os::unix::fs::chown(&path, Some(u.as_raw()), Some(g.as_raw())).expect("chown");
    }
    (id, path)
}

/// The whole mail pipeline as etc/master.toml ships it, with smtpd on 127.0.0.1:`smtp_port`:
/// smtpd, cleanup, trivial-rewrite, qmgr, local, the smtp client, bounce, anvil and auth.
pub fn pipeline_services(smtp_port: u16) -> String {
    let mut s = String::new();
    s.push_str(&daemon_service(
        "smtp",
        "inet",
        &format!("127.0.0.1:{smtp_port}"),
        "smtpd",
        "maxproc = 4",
    ));
    s.push_str(&daemon_service("cleanup", "unix", "", "cleanup", "maxproc = 32"));
    s.push_str(&daemon_service(
        "rewrite",
        "unix",
        "",
        "trivial-rewrite",
        "max_use = 100000",
    ));
    s.push_str(&daemon_service(
        "qmgr",
        "unix",
        "public/qmgr",
        "qmgr",
        "maxproc = 1\nmin_procs = 1\nwakeup = \"60s\"\nmax_use = 1000000000\nmax_idle = \"1000d\"",
    ));
    s.push_str(&daemon_service("local", "unix", "", "local", "maxproc = 8"));
    s.push_str(&daemon_service("smtp", "unix", "", "smtp", "maxproc = 8"));
    s.push_str(&daemon_service("bounce", "unix", "", "bounce", "maxproc = 2"));
    s.push_str(&daemon_service("anvil", "unix", "", "anvil", "maxproc = 1"));
    s.push_str(&auth_service());
    s
}

/// Sends one message with Python's smtplib to 127.0.0.1:`port`; returns smtplib's
/// send_message result (refused recipients) as text.
pub fn smtplib_send(port: u16, sender: &str, rcpts: &[&str], message: &str) -> String {
    let rcpts: Vec<String> = rcpts.iter().map(|r| format!("{r:?}")).collect();
    python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n\
         print(s.sendmail({sender:?}, [{}], {message:?}.encode()))\ns.quit()\n",
        rcpts.join(", ")
    ))
}

/// The files in a Maildir's new/ and cur/, read.
pub fn maildir_messages(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = ["new", "cur"]
        .iter()
        .filter_map(|d| std::fs::read_dir(dir.join(d)).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .collect();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// A background helper process (a test SMTP sink, a DNS server), killed when dropped.
pub struct Helper(pub std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tests/scripts/smtp_sink.py on 127.0.0.1:`port`, answering RCPT with `rcpt`, storing
/// messages as `dir/N.eml`; returns once it listens.
pub fn sink(dir: &Path, port: u16, rcpt: u16) -> Helper {
    let port_file = dir.join(format!("sink-{port}-{rcpt}.port"));
    let child = Command::new("python3")
        .arg(repo_root().join("tests/scripts/smtp_sink.py"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--rcpt",
            &rcpt.to_string(),
            "--port-file",
        ])
        .arg(&port_file)
        .arg("--dir")
        .arg(dir)
        .spawn()
        .expect("python3");
    let helper = Helper(child);
    assert!(
        wait_for(Duration::from_secs(60), || port_file.exists()),
        "sink did not start"
    );
    helper
}

/// A self-signed certificate and key for `localhost` (openssl), written into `dir` as
/// `cert.pem` and `key.pem`.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// xorshift64*: random choices in crash tests, reproducible from a printed seed.
pub struct Rng(pub u64);

impl Rng {
    /// A generator seeded from the environment variable `var` when it holds a number,
    /// else from the clock; the seed is returned too, to be printed.
    pub fn from_env(var: &str) -> (Rng, u64) {
        let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
        (Rng(seed), seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The direct children of `pid` whose program name is `name`.
pub fn children_named(pid: u32, name: &str) -> Vec<u32> {
    children_of(pid)
        .into_iter()
        .filter(|p| comm(*p).as_deref() == Some(name))
        .collect()
}

/// The program name (`/proc/PID/comm`) of a process, if it still exists.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// Sends SIGKILL to `pid`; true when the signal was delivered.
pub fn kill9(pid: u32) -> bool {
    i32::try_from(pid)
        .is_ok_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL).is_ok())
}

/// Files (not dot-files) below `dir`, recursively; a missing directory has none.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                out.push(p);
            }
        }
    }
    out
}

/// The values of header field `name` (case-insensitive, unfolded lines only) in the
/// header of `text` (CRLF or LF line ends).
pub fn header_values(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// (Message-ID, Delivered-To) → copies, over the messages of one Maildir.
pub fn maildir_index(dir: &Path) -> std::collections::HashMap<(String, String), usize> {
    let mut out = std::collections::HashMap::new();
    for m in maildir_messages(dir) {
        let text = String::from_utf8_lossy(&m);
        let id = header_values(&text, "message-id")
            .into_iter()
            .next()
            .unwrap_or_default();
        let to = header_values(&text, "delivered-to")
            .into_iter()
            .next()
            .unwrap_or_default();
        *out.entry((id, to)).or_insert(0) += 1;
    }
    out
}

/// (Message-ID, recipient) → copies, over the `N.eml` files a [`sink`] stored in `dir`
/// (its `X-Sink-To:` line lists the envelope recipients, comma-separated, in `<>`).
pub fn sink_index(dir: &Path) -> std::collections::HashMap<(String, String), usize> {
    let mut out = std::collections::HashMap::new();
    for p in files_below(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
    {
        let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
        let id = header_values(&text, "message-id")
            .into_iter()
            .next()
            .unwrap_or_default();
        for to in header_values(&text, "x-sink-to").iter().flat_map(|v| v.split(',')) {
            // `<addr>` possibly followed by ESMTP parameters.
            let to = to
                .trim()
                .split('>')
                .next()
                .unwrap_or("")
                .trim_start_matches('<')
                .to_string();
            *out.entry((id.clone(), to)).or_insert(0) += 1;
        }
    }
    out
}

/// tests/scripts/smtp_sink.py on a kernel-chosen loopback port with `args` (`--dsn`,
/// `--hang`, `--starttls CERT KEY`, ...), storing into `dir`; returns it and its port
/// once it listens.
pub fn sink_with_args(dir: &Path, args: &[&str]) -> (Helper, u16) {
    std::fs::create_dir_all(dir).expect("sink dir");
    let port_file = dir.join("port");
    let child = Command::new("python3")
        .arg(repo_root().join("tests/scripts/smtp_sink.py"))
        .arg("--port-file")
        .arg(&port_file)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .spawn()
        .expect("python3");
    let helper = Helper(child);
    assert!(
        wait_for(Duration::from_secs(60), || port_file.exists()),
        "sink did not start"
    );
    let port = std::fs::read_to_string(&port_file)
        .expect("port file")
        .trim()
        .parse()
        .expect("port");
    (helper, port)
}

/// Sends a delivery agent (`private/<service>`) one deliver request as qmgr would, for the
/// queue file `active/<id>` and its first recipients `rcpts` (indexes 0, 1, ...), and
/// returns its reply.
pub fn agent_deliver(
    inst: &Instance,
    service: &str,
    id: &postern_lib::queue_id::QueueId,
    nexthop: &str,
    rcpts: &[&str],
) -> postern_lib::proto::deliver::DeliverReply {
    use postern_lib::proto::deliver::{DeliverRecipient, DeliverRequest, PROTOCOL, VERSION};
    let sock = std::os::unix::net::UnixStream::connect(inst.queue().join("private").join(service))
        .expect("connect to the delivery agent");
    let mut ipc = postern_lib::ipc::IpcStream::client(sock, PROTOCOL, VERSION, Some(Duration::from_secs(60)))
        .expect("deliver handshake");
    let req = DeliverRequest {
        queue_id: *id,
        queue_file: format!("active/{id}"),
        sender: "a@example.test".into(),
        nexthop: nexthop.into(),
        recipients: rcpts
            .iter()
            .enumerate()
            .map(|(i, r)| DeliverRecipient {
                index: i,
                address: r.to_string(),
                original: r.to_string(),
                mark: true,
            })
            .collect(),
        arrival_micros: 0,
        active_micros: 0,
        dispatch_micros: 0,
    };
    ipc.send(&req).expect("send deliver request");
    ipc.recv().expect("deliver reply")
}

/// The messages (`N.eml`) a test sink (smtp_sink.py, lmtp_sink.py) stored in `dir`, as
/// text, in the order it stored them.
pub fn sink_messages(dir: &Path) -> Vec<String> {
    let mut files: Vec<(u64, PathBuf)> = files_below(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| {
            let n = p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok());
            (n.unwrap_or(u64::MAX), p)
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|(_, p)| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .collect()
}

/// An instance (not started) with auth and imapd on a free loopback port, and `user`
/// added with `password`; returns it and the port.
pub fn imap_instance(user: &str, password: &str) -> (Instance, u16) {
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", "")
    );
    let inst = Instance::new(&services, &[]);
    add_user(&inst, user, password);
    (inst, port)
}

/// The instance's `var/mail` (virtual_mailbox_base), created, and (as root) handed with
/// everything already below it to the `postern` account the daemons run as.
pub fn owned_mail_base(inst: &Instance) -> PathBuf {
    let mail = inst.root.path().join("var/mail");
    std::fs::create_dir_all(&mail).expect("mkdir var/mail");
    if is_root() {
        let st = Command::new("chown")
            .arg("-R")
            .arg("postern:")
            .arg(&mail)
            .status()
            .expect("chown");
        assert!(st.success(), "chown -R postern: {}", mail.display());
    }
    mail
}

/// A system account made by a test with `useradd` (home `parent/NAME`, mode 0755, owned by
/// it; shell `/bin/sh`), removed with `userdel` when dropped. Needs root.
pub struct SystemAccount {
    /// Login name: `pt<tag><pid>`.
    pub name: String,
    /// Home directory.
    pub home: PathBuf,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
}

impl SystemAccount {
    /// Creates the account `pt<tag><pid>` with its home below `parent`.
    pub fn new(tag: &str, parent: &Path) -> SystemAccount {
        let name = format!("pt{tag}{}", std::process::id() % 100_000);
        let home = parent.join(&name);
        // A leftover of a killed run of this test would make useradd fail.
        let _ = Command::new("userdel").arg(&name).output();
        let out = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", "-d"])
            .arg(&home)
            .arg(&name)
            .output()
            .expect("useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let user = nix::unistd::User::from_name(&name).expect("getpwnam").expect("account");
        let acct = SystemAccount {
            name,
            home: home.clone(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        };
        std::fs::create_dir_all(&home).expect("mkdir home");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).expect("chmod home");
        nix::unistd::chown(&home, Some(user.uid), Some(user.gid)).expect("chown home");
        acct
    }

    /// Writes `~/name` owned by the account, mode 0644.
    pub fn write(&self, name: &str, text: &str) {
        let p = self.home.join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(self.uid)), None).expect("chown");
    }
}

impl Drop for SystemAccount {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}
