//! The redundant cluster of issue 15, driven through examples/redundant/*.sh: the tests
//! build, stop, kill and remove it with the same scripts an operator uses, so the example
//! and the tests are one thing.
//!
//! A [`Cluster`] is `up.sh` run with its own work directory (`PST_DIR`, a temporary
//! directory), this build's binaries (`POSTERN_BIN`) and its own namespace prefix
//! (`PST_PREFIX`, e.g. `pst-rd-` gives `pst-rd-client`, `pst-rd-mh1`, ...), so tests
//! running in parallel never meet; the addresses inside (198.18.0.0/24) are the same in
//! each. Dropping it runs `down.sh --purge`, which kills every process of its namespaces
//! and removes them, their links and the files it made (with `REDUNDANT_KEEP` set, a
//! failed test's work directory stays, its path printed).
//!
//! Hosts are named as in the scripts: `client` (the sender and the DNS server), `mh1` and
//! `mh2` (hubs), `mba` and `mbb` (mailbox servers A and B).
//!
//! Needs root, iproute2, dnsmasq (Debian's dnsmasq-base), openssl and python3: see
//! [`Cluster::can_run`] (skipped with the reason recorded, failed under CI=true).

use crate::{bin_dir, files_below, header_values, repo_root, require_root, require_tool, wait_for};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The hosts of the cluster, as the scripts name them.
pub const HOSTS: [&str; 5] = ["client", "mh1", "mh2", "mba", "mbb"];
/// The hubs.
pub const HUBS: [&str; 2] = ["mh1", "mh2"];
/// The mailbox servers A and B.
pub const MAILBOX_SERVERS: [&str; 2] = ["mba", "mbb"];

/// The address of `host` inside the cluster.
pub fn addr_of(host: &str) -> &'static str {
    match host {
        "client" => "198.18.0.10",
        "mh1" => "198.18.0.21",
        "mh2" => "198.18.0.22",
        "mba" => "198.18.0.31",
        "mbb" => "198.18.0.32",
        _ => panic!("no host {host} in the cluster"),
    }
}

/// Whether this build's Postern knows main.toml setting `key` (the parts of issue 15
/// land one by one; up.sh configures what the build has): asked of the shipped etc/.
pub fn build_knows(key: &str) -> bool {
    Command::new(bin_dir().join("postern"))
        .arg("-c")
        .arg(repo_root().join("etc"))
        .args(["config", key])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The parts of issue 15 this build lacks among `parts` (`"hubs"`: the hubs' copies,
/// `"replicator"`, `"proxy"`), as text for a skip reason; `None` when it has them all.
pub fn missing_parts(parts: &[&str]) -> Option<String> {
    let missing: Vec<&str> = parts
        .iter()
        .copied()
        .filter(|p| match *p {
            "hubs" => !build_knows("replica_domains"),
            "replicator" => !bin_dir().join("replicator").exists() || !build_knows("replica_peers"),
            "proxy" => !bin_dir().join("proxy").exists() || !build_knows("proxy_master_password_file"),
            other => panic!("no part {other}"),
        })
        .collect();
    (!missing.is_empty()).then(|| format!("this build lacks issue 15's {}", missing.join(", ")))
}

/// Output's stdout and stderr as one text, for failure messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running cluster (see the module doc).
pub struct Cluster {
    dir: tempfile::TempDir,
    prefix: String,
}

impl Cluster {
    /// Whether this machine can build a cluster; false (the test skipped, the reason
    /// recorded) when something is missing.
    pub fn can_run() -> bool {
        require_root("network namespaces, ports 25/110/143")
            && require_tool("ip", "iproute2")
            && require_tool("dnsmasq", "dnsmasq-base")
            && require_tool("openssl", "openssl")
            && require_tool("python3", "python3")
    }

    /// Runs `up.sh` with namespace prefix `prefix` (`pst-XX-`) and a fresh work directory;
    /// panics with its output when it fails.
    pub fn up(prefix: &str) -> Cluster {
        assert!(prefix.starts_with("pst-") && prefix.ends_with('-'), "prefix {prefix:?}");
        let dir = tempfile::Builder::new()
            .prefix("postern-redundant")
            .tempdir()
            .expect("tempdir");
        // The daemons run as mail_owner and must reach their directories below.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let cluster = Cluster {
            dir,
            prefix: prefix.to_string(),
        };
        let out = cluster.script("up.sh", &[]);
        assert!(out.status.success(), "up.sh failed:\n{}", output_text(&out));
        cluster
    }

    /// The work directory (`PST_DIR`): one directory per host.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    /// Host `host`'s Postern root (`etc/`, `var/`).
    pub fn root(&self, host: &str) -> PathBuf {
        self.work_dir().join(host)
    }

    /// Host `host`'s namespace.
    pub fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// Runs `examples/redundant/SCRIPT ARGS` for this cluster; returns its output.
    pub fn script(&self, script: &str, args: &[&str]) -> Output {
        Command::new("sh")
            .arg(repo_root().join("examples/redundant").join(script))
            .args(args)
            .env("PST_DIR", self.work_dir())
            .env("PST_PREFIX", &self.prefix)
            .env("POSTERN_BIN", bin_dir())
            .stdin(Stdio::null())
            .output()
            .expect("run example script")
    }

    /// `node.sh NS CMD` (`start`, `stop`, `kill`), asserting success.
    pub fn node(&self, host: &str, cmd: &str) {
        let out = self.script("node.sh", &[&self.ns(host), cmd]);
        assert!(
            out.status.success(),
            "node.sh {} {cmd}:\n{}",
            self.ns(host),
            output_text(&out)
        );
    }

    /// `status.sh`'s output.
    pub fn status(&self) -> String {
        output_text(&self.script("status.sh", &[]))
    }

    /// A command running `program` inside host `host`'s namespace.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host)]).arg(program);
        c
    }

    /// Runs python3 `script` with `args` inside host `host`; returns its output.
    pub fn python(&self, host: &str, script: &str, args: &[&str]) -> Output {
        self.command(host, "python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("python3")
    }

    /// Runs tests/scripts/`script` (python3) with `args` inside host `host`; returns its
    /// output.
    pub fn script_py(&self, host: &str, script: &str, args: &[&str]) -> Output {
        self.command(host, "python3")
            .arg(repo_root().join("tests/scripts").join(script))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("python3")
    }

    /// Runs `postern -c ETC ARGS` for host `host` inside its namespace; returns its output.
    pub fn postern(&self, host: &str, args: &[&str]) -> Output {
        self.command(host, bin_dir().join("postern"))
            .arg("-c")
            .arg(self.root(host).join("etc"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run postern")
    }

    /// Host `host`'s mail log so far.
    pub fn log(&self, host: &str) -> String {
        std::fs::read_to_string(self.root(host).join("var/log/maillog")).unwrap_or_default()
    }

    /// Message-ID → the queue files both hubs' cleanup made for it (its `message-id=`
    /// lines): more than one when a hub died after making the message durable and before
    /// the sender read its 250, so the sender sent it again (SMTP's own duplicate: a new
    /// message with its own GUID, stored as such on the mailbox servers).
    pub fn hub_accepts(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for hub in HUBS {
            for l in self.log(hub).lines().filter(|l| l.contains("/cleanup[")) {
                if let Some(id) = l.split("message-id=<").nth(1).and_then(|r| r.split('>').next()) {
                    *out.entry(id.to_string()).or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// The number of queue files of host `host` (incoming, active, deferred).
    pub fn queued(&self, host: &str) -> usize {
        ["incoming", "active", "deferred"]
            .iter()
            .map(|q| files_below(&self.root(host).join("var/spool").join(q)).len())
            .sum()
    }

    /// Waits until host `host`'s queue is empty; whether it emptied within `limit`.
    pub fn wait_queue_empty(&self, host: &str, limit: Duration) -> bool {
        wait_for(limit, || self.queued(host) == 0)
    }

    /// The Maildir of `user`'s `folder` on mailbox server `host` (`INBOX` or a folder's
    /// name: Maildir++ `.NAME`).
    pub fn maildir(&self, host: &str, user: &str, folder: &str) -> PathBuf {
        let base = self.root(host).join("var/mail").join(user);
        if folder.eq_ignore_ascii_case("INBOX") {
            base
        } else {
            base.join(format!(".{folder}"))
        }
    }

    /// The uidlist locks (`dovecot-uidlist.lock`) present in any user's folder on mailbox
    /// server `host`, as `USER/FOLDER SIZE` (`INBOX`, or a folder's Maildir++ directory),
    /// sorted: what a kill left behind (a written one: killed between writing the new list
    /// and renaming it over the old).
    pub fn uidlist_locks(&self, host: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mail = self.root(host).join("var/mail");
        for user in std::fs::read_dir(&mail).into_iter().flatten().flatten() {
            let root = user.path();
            let name = user.file_name().to_string_lossy().into_owned();
            let folders = std::fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()));
            for (folder, dir) in std::iter::once(("INBOX".to_string(), root.clone())).chain(folders) {
                if let Ok(m) = std::fs::symlink_metadata(dir.join("dovecot-uidlist.lock")) {
                    out.push(format!("{name}/{folder} {}", m.len()));
                }
            }
        }
        out.sort();
        out
    }

    /// Message-ID (without `<>`) → how many files carry it, over `user`'s `folder` on
    /// mailbox server `host` (new/ and cur/, read from disk).
    pub fn message_ids(&self, host: &str, user: &str, folder: &str) -> HashMap<String, usize> {
        message_ids_in(&self.maildir(host, user, folder))
    }

    /// Sends `n` messages from `from` to `to` through the sender in the client's namespace
    /// (SMTP to its smtpd on 127.0.0.1:25, one session), with Message-IDs
    /// `<TAG-I@redundant.test>` for I in 0..n; returns the IDs it accepted.
    pub fn send(&self, tag: &str, n: usize, to: &str) -> Vec<String> {
        let out = self
            .sender(tag, n, to, 0.0)
            .wait_with_output()
            .expect("wait for the sending client");
        assert!(out.status.success(), "sending: {}", output_text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Sends `n` messages to `user@example.test` as [`Cluster::send`] does and waits until
    /// both mailbox servers hold every one of them in `user`'s INBOX (on disk); returns
    /// their Message-IDs.
    pub fn deliver_to_both(&self, tag: &str, n: usize, user: &str) -> Vec<String> {
        let ids = self.send(tag, n, &format!("{user}@example.test"));
        assert_eq!(ids.len(), n, "the sender accepted every message");
        let arrived = wait_for(Duration::from_secs(60), || {
            MAILBOX_SERVERS.iter().all(|h| {
                let got = self.message_ids(h, user, "INBOX");
                ids.iter().all(|id| got.contains_key(id))
            })
        });
        assert!(arrived, "{n} messages on both mailbox servers\n{}", self.status());
        ids
    }

    /// Starts a client in the client's namespace sending as [`Cluster::send`] does, one
    /// message every `pause` seconds, printing each accepted Message-ID (without `<>`)
    /// on its own line as it is accepted (flushed), for a test that acts as they go.
    pub fn sender(&self, tag: &str, n: usize, to: &str, pause: f64) -> std::process::Child {
        let script = "import smtplib, sys, time\n\
            tag, n, to, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])\n\
            s = smtplib.SMTP('127.0.0.1', 25, timeout=30)\n\
            for i in range(n):\n    \
                mid = '%s-%d@redundant.test' % (tag, i)\n    \
                msg = 'From: carol@client.test\\r\\nTo: %s\\r\\nSubject: %s %d\\r\\nMessage-ID: <%s>\\r\\n\\r\\nmessage %d of %s\\r\\n' % (to, tag, i, mid, i, tag)\n    \
                s.sendmail('carol@client.test', [to], msg)\n    \
                print(mid, flush=True)\n    \
                if pause: time.sleep(pause)\n\
            s.quit()\n";
        self.command("client", "python3")
            .args(["-c", script, tag, &n.to_string(), to, &pause.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3")
    }

    /// Makes the IMAP changes `ops` (see tests/scripts/imap_ops.py) as `user` from namespace `from` at
    /// `addr:port`, each answered OK; panics with the client's error otherwise.
    pub fn imap_ops(&self, from: &str, addr: &str, port: u16, user: &str, password: &str, ops: &[&str]) {
        let port = port.to_string();
        let args: Vec<&str> = [addr, port.as_str(), user, password]
            .into_iter()
            .chain(ops.iter().copied())
            .collect();
        let out = self.script_py(from, "imap_ops.py", &args);
        assert!(
            out.status.success(),
            "IMAP changes at {addr}:{port} from {from}: {}",
            output_text(&out)
        );
    }

    /// The IMAP state of `user` (tests/scripts/imap_state.py's lines) as a client in namespace
    /// `from` reads it at `addr:port`: a backend through loopback in its own namespace
    /// (`("mba", "127.0.0.1", 143)`), or the proxy from the client (`("client",
    /// "198.18.0.31", 1143)`). Panics with the client's error when it fails.
    pub fn imap_state(&self, from: &str, addr: &str, port: u16, user: &str, password: &str) -> Vec<String> {
        let out = self.script_py(from, "imap_state.py", &[addr, &port.to_string(), user, password]);
        assert!(
            out.status.success(),
            "IMAP {addr}:{port} from {from}: {}",
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `(UIDL, Message-ID)` of each of `user`'s messages over POP3, read as
    /// [`Cluster::imap_state`] reads.
    pub fn pop3_state(&self, from: &str, addr: &str, port: u16, user: &str, password: &str) -> Vec<(String, String)> {
        let out = self.script_py(from, "pop3_state.py", &[addr, &port.to_string(), user, password]);
        assert!(
            out.status.success(),
            "POP3 {addr}:{port} from {from}: {}",
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect()
    }

    /// Mailbox server `host`'s row for its peer in `postern status` (the replication
    /// table: peer, state, since, users behind, last success, last error), split on
    /// white space; empty when there is none.
    pub fn replica_peer_row(&self, host: &str) -> Vec<String> {
        let peer = match host {
            "mba" => "198.18.0.32:1190",
            "mbb" => "198.18.0.31:1190",
            _ => panic!("{host} is not a mailbox server"),
        };
        let out = self.postern(host, &["status"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(peer))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The IMAP state of `user` on mailbox server `host`'s own imapd (loopback, in its
    /// namespace).
    pub fn backend_imap(&self, host: &str, user: &str, password: &str) -> Vec<String> {
        self.imap_state(host, "127.0.0.1", 143, user, password)
    }

    /// The POP3 view of `user` on mailbox server `host`'s own pop3d.
    pub fn backend_pop3(&self, host: &str, user: &str, password: &str) -> Vec<(String, String)> {
        self.pop3_state(host, "127.0.0.1", 110, user, password)
    }
}

/// Set (to anything) to keep a failed test's work directory (logs, queues, Maildirs).
pub const KEEP_ENV: &str = "REDUNDANT_KEEP";

impl Drop for Cluster {
    fn drop(&mut self) {
        let keep = std::thread::panicking() && std::env::var_os(KEEP_ENV).is_some();
        let out = self.script("down.sh", if keep { &[][..] } else { &["--purge"][..] });
        if !out.status.success() {
            eprintln!("down.sh failed: {}", output_text(&out));
        }
        if keep {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("{KEEP_ENV}: the cluster's files stay in {}", dir.keep().display());
        }
    }
}

/// In an [`Cluster::imap_state`] dump: the flags of the message `mid` in `folder`
/// (`None` when it is not there; panics when it is there twice).
pub fn flags_in(dump: &[String], folder: &str, mid: &str) -> Option<String> {
    let prefix = format!("M {folder} ");
    let found: Vec<String> = dump
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let mut w = rest.splitn(3, ' ');
            let (_uid, id, flags) = (w.next()?, w.next()?, w.next().unwrap_or(""));
            (id == mid).then(|| flags.to_string())
        })
        .collect();
    assert!(found.len() <= 1, "{mid} twice in {folder}: {dump:?}");
    found.into_iter().next()
}

/// In an [`Cluster::imap_state`] dump: the folders, sorted.
pub fn folders_in(dump: &[String]) -> Vec<String> {
    dump.iter()
        .filter_map(|l| l.strip_prefix("F "))
        .filter_map(|r| r.rsplit_once(' ').map(|(name, _)| name.to_string()))
        .collect()
}

/// Message-ID (without `<>`) → files carrying it, over a Maildir's new/ and cur/.
pub fn message_ids_in(maildir: &Path) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(maildir.join(sub)).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let id = header_values(&text, "message-id")
                .into_iter()
                .next()
                .unwrap_or_default();
            *out.entry(id.trim_matches(['<', '>']).to_string()).or_insert(0) += 1;
        }
    }
    out
}
