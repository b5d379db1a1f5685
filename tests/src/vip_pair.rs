//! The active-standby pair of issue 16 for the tests: two Postern nodes sharing the service
//! address 198.18.1.100 through keepalived (VRRP) with the shipped template
//! (etc/keepalived/), `postern status --health` as its health check and the notify hook,
//! and a client on the same bridge (tests/active_standby*.rs).
//!
//! A [`Pair`] builds its own LAN of network namespaces ([`crate::netns::Lan`], prefix
//! `pst-XX-`, so tests running in parallel never meet) with node 1 at 198.18.1.1, node 2 at
//! 198.18.1.2 and the client at 198.18.1.10, and removes it when dropped. Both nodes
//! listen on the service address whether they hold it or not
//! (`net.ipv4.ip_nonlocal_bind=1` in their namespaces) and on loopback for the health
//! check; holding the address is what makes a node serve.
//!
//! [`Pair::new`] is the address alone: SMTP and POP3, each node its own queue and
//! mailboxes. [`Pair::full`] is the pair as examples/active-standby builds it plus the
//! replicated mailboxes: SMTP, submission (SASL), POP3 and IMAP on the address, the queue
//! mirror (`queue_mirror_peer`, degraded when the peer is unreachable — [`Pair::full_with`]
//! chooses —, checked every second) and the replicator
//! between the nodes (`replica_peers`, swept every second), so either node serves the
//! same mailbox state.

use crate::netns::{Lan, pids_in};
use crate::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The service address.
pub const VIP: &str = "198.18.1.100";
/// The nodes' host names in the LAN (namespace `PREFIX` + name).
pub const NODES: [&str; 2] = ["n1", "n2"];

/// Everything a test needs present; false (skipped) when something is missing.
pub fn can_run() -> bool {
    require_root("network namespaces, keepalived")
        && require_tool("ip", "iproute2")
        && require_tool("keepalived", "keepalived")
        && require_tool("python3", "python3")
}

/// One node: a Postern instance in its namespace and its keepalived.
pub struct Node {
    pub name: &'static str,
    pub keepalived: Option<Helper>,
    pub inst: Instance,
}

impl Node {
    pub fn root(&self) -> PathBuf {
        self.inst.root.path().to_path_buf()
    }

    /// Message-ID → copies in alice's Maildir on this node's disk.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for ((id, _), n) in maildir_index(&self.root().join("var/mail/alice")) {
            *out.entry(id.trim_matches(['<', '>']).to_string()).or_insert(0) += n;
        }
        out
    }

    /// The copies of the peer's queue files this node holds (`mirror/`).
    pub fn mirror_copies(&self) -> usize {
        files_below(&self.inst.queue().join("mirror"))
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| postern_lib::queue_id::QueueId::parse(n).is_ok())
            .count()
    }

    /// The names of the files in this node's queue (every queue directory).
    pub fn queued(&self) -> Vec<String> {
        ["incoming", "active", "deferred"]
            .iter()
            .flat_map(|q| files_below(&self.inst.queue().join(q)))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }
}

/// The pair. `lan` is dropped first: it kills every process of every namespace.
pub struct Pair {
    pub lan: Lan,
    pub nodes: Vec<Node>,
}

impl Pair {
    /// Builds the LAN and both nodes' Postern (started), keepalived not yet started.
    /// `mode` and `alternate` are render.sh's `--mode` and `--alternate-seconds`.
    pub fn new(prefix: &str, mode: &str, alternate: u32) -> Pair {
        Pair::build(prefix, mode, alternate, None)
    }

    /// [`Pair::new`] with the queue mirror, the replicator, submission and IMAP (see the
    /// module doc), in fail-back mode.
    pub fn full(prefix: &str) -> Pair {
        Pair::build(prefix, "failback", 60, Some("degraded"))
    }

    /// [`Pair::full`] with `queue_mirror_unreachable = unreachable` (`defer` or `degraded`).
    pub fn full_with(prefix: &str, unreachable: &str) -> Pair {
        Pair::build(prefix, "failback", 60, Some(unreachable))
    }

    fn build(prefix: &str, mode: &str, alternate: u32, full: Option<&str>) -> Pair {
        let mut lan = Lan::new(prefix);
        lan.add_host("n1", &["198.18.1.1/24"]);
        lan.add_host("n2", &["198.18.1.2/24"]);
        lan.add_host("c", &["198.18.1.10/24"]);
        let mut nodes = Vec::new();
        for (i, name) in NODES.iter().enumerate() {
            lan.sysctl(name, "net.ipv4.ip_nonlocal_bind=1");
            let services = pipeline_services(25).replace(
                "listen = \"127.0.0.1:25\"",
                &format!("listen = [\"{VIP}:25\", \"127.0.0.1:25\"]"),
            ) + &daemon_service("pop3", "inet", "", "pop3d", "maxproc = 2").replace(
                "type = \"inet\"\n",
                &format!("type = \"inet\"\nlisten = [\"{VIP}:110\", \"127.0.0.1:110\"]\n"),
            );
            let host = format!("myhostname=n{}.example.test", i + 1);
            let mut settings = vec![host, "pop3d_secure_networks=127.0.0.0/8, 198.18.1.0/24".to_string()];
            let services = if let Some(unreachable) = full {
                settings.extend(full_settings(i, unreachable));
                full_services(i)
            } else {
                services
            };
            let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
            let mut inst = Instance::new(&services, &settings);
            if full.is_some() {
                for (file, secret) in [
                    ("mirror-secret", "the-pair-mirror-secret-0123456789\n"),
                    ("replica-secret", "the-pair-replica-secret-0123456789\n"),
                ] {
                    let p = inst.etc().join(file);
                    std::fs::write(&p, secret).expect("write secret");
                    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                        .expect("chmod secret");
                }
            }
            add_user(&inst, "alice", "alice-pw");
            owned_mail_base(&inst);
            inst.set_netns(&lan.ns(name));
            inst.start();
            let conf = render(&inst, i + 1, mode, alternate);
            std::fs::write(inst.root.path().join("keepalived.conf"), conf).expect("write keepalived.conf");
            nodes.push(Node {
                name,
                keepalived: None,
                inst,
            });
        }
        Pair { lan, nodes }
    }

    /// Starts node `i`'s keepalived (logging to ROOT/keepalived.log).
    pub fn start_keepalived(&mut self, i: usize) {
        let n = &self.nodes[i];
        let root = n.root();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("keepalived.log"))
            .expect("keepalived log");
        let child = self
            .lan
            .command(n.name, "keepalived")
            .args([
                "--vrrp",
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
                "--use-file",
            ])
            .arg(root.join("keepalived.conf"))
            .arg("--pid")
            .arg(root.join("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(root.join("vrrp.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start keepalived");
        self.nodes[i].keepalived = Some(Helper(child));
    }

    /// SIGKILL to every process of node `i`, keepalived included, and the service address
    /// off its interface: a machine that dies answers no ARP for it either, while a
    /// namespace's kernel outlives its processes (examples' `node.sh NS kill` does the same).
    pub fn kill_node(&mut self, i: usize) -> usize {
        let killed = self.lan.kill_all(self.nodes[i].name);
        let _ = self.lan.exec(
            self.nodes[i].name,
            "ip",
            &["addr", "del", &format!("{VIP}/24"), "dev", "eth0"],
        );
        if let Some(mut k) = self.nodes[i].keepalived.take() {
            let _ = k.0.wait();
        }
        killed
    }

    /// Starts node `i` again after a kill: Postern, then keepalived.
    pub fn restart_node(&mut self, i: usize) {
        self.nodes[i].inst.start();
        self.start_keepalived(i);
    }

    /// Which nodes hold the service address now.
    pub fn holders(&self) -> Vec<&'static str> {
        self.nodes
            .iter()
            .filter(|n| self.lan.holds(n.name, VIP))
            .map(|n| n.name)
            .collect()
    }

    /// Waits until exactly node `name` holds the address; returns how long it took.
    pub fn wait_holder(&self, name: &str, limit: Duration) -> Duration {
        let t0 = Instant::now();
        assert!(
            wait_for(limit, || self.holders() == [name]),
            "{name} did not become the only holder of {VIP} within {limit:?}: holders {:?}\n{}",
            self.holders(),
            self.keepalived_logs()
        );
        t0.elapsed()
    }

    /// The ends of both keepalived logs, for failure messages.
    pub fn keepalived_logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(n.root().join("keepalived.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {} keepalived.log (last lines)\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs python3 `script` in the client's namespace.
    pub fn client(&self, script: &str) -> Output {
        self.lan.exec("c", "python3", &["-c", script])
    }

    /// Sends one message with Message-ID `<ID@as.test>` to alice through the service address.
    pub fn send(&self, id: &str) -> Output {
        self.client(&format!(
            "import smtplib\ns = smtplib.SMTP('{VIP}', 25, timeout=10)\n\
             print(s.sendmail('bob@example.test', ['alice@example.test'], \
             'Subject: {id}\\r\\nMessage-ID: <{id}@as.test>\\r\\n\\r\\nhello\\r\\n'))\ns.quit()\n"
        ))
    }

    /// Sends, asserting 250.
    pub fn send_ok(&self, id: &str) {
        let out = self.send(id);
        assert!(
            out.status.success(),
            "sending {id} through {VIP}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The Message-IDs alice reads over POP3 through the service address.
    pub fn read(&self) -> Vec<String> {
        let out = self.client(&format!(
            "import poplib\np = poplib.POP3('{VIP}', 110, timeout=10)\np.user('alice')\np.pass_('alice-pw')\n\
             for i in range(1, p.stat()[0] + 1):\n    for l in p.top(i, 0)[1]:\n        \
             if l.lower().startswith(b'message-id:'):\n            print(l.split(b':', 1)[1].strip().decode())\np.quit()\n"
        ));
        assert!(
            out.status.success(),
            "POP3 through {VIP}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_matches(['<', '>']).trim_end_matches("@as.test").to_string())
            .collect();
        ids.sort();
        ids
    }

    /// An SMTP session from the client through the address, greeted and past EHLO,
    /// waiting for [`OpenSession::next_command`].
    pub fn open_session(&self) -> OpenSession {
        let script = format!(
            "import smtplib, sys\ns = smtplib.SMTP('{VIP}', 25, timeout=5)\ns.ehlo()\nprint('ready', flush=True)\n\
             sys.stdin.readline()\ntry:\n    print('answered', s.noop())\n\
             except Exception as e:\n    print('cut', type(e).__name__, e)\n"
        );
        let mut child = self
            .lan
            .command("c", "python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).expect("read");
        assert_eq!(line.trim(), "ready", "SMTP session through {VIP}");
        OpenSession {
            stdin: child.stdin.take(),
            out,
            _child: Helper(child),
        }
    }

    /// The pid of node `i`'s qmgr.
    pub fn qmgr(&self, i: usize) -> u32 {
        let ns = self.lan.ns(self.nodes[i].name);
        let mut found = None;
        wait_for(Duration::from_secs(10), || {
            found = pids_in(&ns).into_iter().find(|&p| comm(p).as_deref() == Some("qmgr"));
            found.is_some()
        });
        found.expect("qmgr running in the node")
    }
}

/// Node `i`'s own address (198.18.1.1 or .2).
pub fn node_addr(i: usize) -> String {
    format!("198.18.1.{}", i + 1)
}

/// A `[[service]]` of `program` listening on each of `addrs`.
fn inet_on(name: &str, program: &str, addrs: &[String], extra: &str) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[service]]\nname = \"{name}\"\ntype = \"inet\"\nlisten = [{}]\ncommand = \"{}\"\n{extra}\n",
        list.join(", "),
        bin(program).display()
    )
}

/// Node `i`'s services in a [`Pair::full`]: SMTP also on its own address (to reach each
/// node directly), submission, POP3, IMAP, the queue mirror and the replicator.
fn full_services(i: usize) -> String {
    let own = node_addr(i);
    let on = |port: u16| vec![format!("{VIP}:{port}"), format!("127.0.0.1:{port}")];
    let mut smtp = on(25);
    smtp.push(format!("{own}:25"));
    let mut s = pipeline_services(25).replace(
        "listen = \"127.0.0.1:25\"",
        &format!(
            "listen = [{}]",
            smtp.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ")
        ),
    );
    s.push_str(&inet_on(
        "submission",
        "smtpd",
        &on(587),
        "maxproc = 4\noptions = { syslog_name = \"postern/submission\", smtpd_sasl_auth_enable = true, \
         smtpd_client_restrictions = [\"permit_sasl_authenticated\", \"reject\"] }",
    ));
    s.push_str(&inet_on("pop3", "pop3d", &on(110), "maxproc = 4"));
    s.push_str(&inet_on("imap", "imapd", &on(143), ""));
    s.push_str(&mirror_services(&format!("{own}:1191")));
    s.push_str(&daemon_service(
        "replicator",
        "inet",
        &format!("{own}:1190"),
        "replicator",
        "maxproc = 4",
    ));
    s.push_str(&daemon_service(
        "replicator",
        "unix",
        "",
        "replicator",
        "maxproc = 1\nmin_procs = 1\nmax_use = 1000000000\nmax_idle = \"1000d\"\nwakeup = \"1s\"\nmax_conns = 64",
    ));
    s
}

/// The queue mirror's services: inet on `listen` (empty: none, a node that only sends
/// copies), unix on private/mirror.
pub fn mirror_services(listen: &str) -> String {
    let mut s = String::new();
    if !listen.is_empty() {
        s.push_str(&daemon_service(
            "mirror",
            "inet",
            listen,
            "mirror",
            "maxproc = 1\nmax_conns = 64\nmax_use = 1000000\nmax_idle = \"1d\"",
        ));
    }
    // One long-lived process (its watch thread checks with the peer), woken every second.
    s.push_str(&daemon_service(
        "mirror",
        "unix",
        "",
        "mirror",
        "maxproc = 1\nmin_procs = 1\nmax_conns = 256\nmax_use = 1000000\nmax_idle = \"1000d\"\nwakeup = \"1s\"",
    ));
    s
}

/// Node `i`'s settings in a [`Pair::full`] beside its host name.
fn full_settings(i: usize, unreachable: &str) -> Vec<String> {
    let peer = node_addr(1 - i);
    vec![
        "imapd_secure_networks=127.0.0.0/8, 198.18.1.0/24".into(),
        "smtpd_tls_auth_only=false".into(),
        "auth_failure_delay=0s".into(),
        format!("queue_mirror_peer={peer}:1191"),
        "queue_mirror_secret_file=mirror-secret".into(),
        format!("queue_mirror_unreachable={unreachable}"),
        "queue_mirror_timeout=2s".into(),
        "queue_mirror_check_interval=1s".into(),
        format!("replica_peers=[\"{peer}:1190\"]"),
        format!("replica_name=n{}", i + 1),
        "replica_secret_file=replica-secret".into(),
        "replica_sync_interval=1s".into(),
        "replica_timeout=3s".into(),
    ]
}

impl Pair {
    /// After node 1 went at `t0`: waits until node 2 alone holds the address and accepts
    /// `after-1` through it as MASTER; prints both times (`what` names how node 1 went)
    /// and asserts the take-over took a few advert intervals. Returns (held, first 250).
    pub fn measure_take_over(&self, t0: Instant, what: &str) -> (Duration, Duration) {
        self.wait_holder("n2", Duration::from_secs(15));
        let holds = t0.elapsed();
        assert!(
            wait_for(Duration::from_secs(15), || self.send("after-1").status.success()),
            "node 2 accepts through {VIP}"
        );
        let serves = t0.elapsed();
        println!(
            "take-over: node 2 holds {VIP} {:.2} s after {what} (advert_int 1 s), first 250 after {:.2} s",
            holds.as_secs_f64(),
            serves.as_secs_f64()
        );
        assert!(
            holds < Duration::from_secs(10),
            "take-over within a few advert intervals: {holds:?}"
        );
        assert!(wait_for(Duration::from_secs(10), || hook_state(self, 1) == "MASTER"));
        (holds, serves)
    }
}

/// One message as an IMAP client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its UID.
    pub uid: u32,
    /// Its Message-ID without `<>`.
    pub id: String,
    /// Its flags as FETCH FLAGS gave them.
    pub flags: String,
}

/// What a reader sees of alice's INBOX over IMAP: UIDVALIDITY and the messages by UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapState {
    /// The folder's UIDVALIDITY.
    pub uidvalidity: u64,
    /// The messages in UID order.
    pub messages: Vec<Seen>,
}

impl ImapState {
    /// The message with Message-ID `id` (without `<>`).
    pub fn get(&self, id: &str) -> Option<&Seen> {
        self.messages.iter().find(|m| m.id == id)
    }
}

impl Pair {
    /// Runs python3 `script` in host `host`'s namespace, asserting success; its stdout.
    pub fn python(&self, host: &str, script: &str) -> String {
        let out = self.lan.exec(host, "python3", &["-c", script]);
        assert!(
            out.status.success(),
            "python3 in {host}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.keepalived_logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Submits one message (Message-ID `<ID@as.test>`) to alice on port 587 through the
    /// service address as alice (SASL PLAIN).
    pub fn submit(&self, id: &str) -> Output {
        self.client(&format!(
            "import smtplib\ns = smtplib.SMTP('{VIP}', 587, timeout=10)\ns.login('alice', 'alice-pw')\n\
             s.sendmail('alice@example.test', ['alice@example.test'], \
             'From: alice@example.test\\r\\nSubject: {id}\\r\\nMessage-ID: <{id}@as.test>\\r\\n\\r\\nsubmitted\\r\\n')\ns.quit()\n"
        ))
    }

    /// Alice's INBOX over IMAP at `host_addr` from namespace `from` (`c` and [`VIP`] for a
    /// client of the service; a node and `127.0.0.1` for one node's own view).
    pub fn imap_state(&self, from: &str, host_addr: &str) -> ImapState {
        let text = self.python(
            from,
            &format!(
                "import imaplib, re\nM = imaplib.IMAP4('{host_addr}', 143, timeout=10)\nM.login('alice', 'alice-pw')\n\
                 M.select('INBOX')\nprint('UIDVALIDITY', M.response('UIDVALIDITY')[1][0].decode())\n\
                 typ, data = M.uid('FETCH', '1:*', '(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')\n\
                 recs = []\nfor item in data:\n    if isinstance(item, tuple):\n        \
                 recs.append([item[0].decode(), item[1].decode()])\n    elif item and recs:\n        \
                 recs[-1][0] += item.decode()\n\
                 for meta, hdr in recs:\n    uid = re.search(r'UID (\\d+)', meta).group(1)\n    \
                 flags = re.search(r'FLAGS \\(([^)]*)\\)', meta).group(1)\n    \
                 mid = hdr.split(':', 1)[1].strip().strip('<>') if ':' in hdr else ''\n    \
                 print(uid, mid, flags)\nM.logout()\n"
            ),
        );
        let mut lines = text.lines();
        let uidvalidity = lines
            .next()
            .and_then(|l| l.strip_prefix("UIDVALIDITY "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no UIDVALIDITY in {text}"));
        let messages = lines
            .map(|l| {
                let mut w = l.splitn(3, ' ');
                Seen {
                    uid: w.next().and_then(|u| u.parse().ok()).expect("uid"),
                    id: w.next().unwrap_or_default().to_string(),
                    flags: w.next().unwrap_or_default().to_string(),
                }
            })
            .collect();
        ImapState { uidvalidity, messages }
    }

    /// Sets \Seen on UID `uid` of alice's INBOX over IMAP through the service address.
    pub fn imap_see(&self, uid: u32) {
        self.python(
            "c",
            &format!(
                "import imaplib\nM = imaplib.IMAP4('{VIP}', 143, timeout=10)\nM.login('alice', 'alice-pw')\n\
                 M.select('INBOX')\nprint(M.uid('STORE', '{uid}', '+FLAGS', '(\\\\Seen)'))\nM.logout()\n"
            ),
        );
    }

    /// (UIDL, Message-ID) of alice's messages over POP3 through the service address.
    pub fn pop3_uidls(&self) -> Vec<(String, String)> {
        let text = self.python(
            "c",
            &format!(
                "import poplib\np = poplib.POP3('{VIP}', 110, timeout=10)\np.user('alice')\np.pass_('alice-pw')\n\
                 for l in p.uidl()[1]:\n    n, u = l.decode().split()\n    \
                 mid = [h for h in p.top(int(n), 0)[1] if h.lower().startswith(b'message-id:')]\n    \
                 print(u, mid[0].split(b':', 1)[1].strip().decode().strip('<>') if mid else '')\np.quit()\n"
            ),
        );
        let mut out: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(u, m)| (u.to_string(), m.to_string())))
            .collect();
        out.sort();
        out
    }
}

/// A client session held open across an address move.
pub struct OpenSession {
    stdin: Option<std::process::ChildStdin>,
    out: std::io::BufReader<std::process::ChildStdout>,
    _child: Helper,
}

impl OpenSession {
    /// Sends NOOP on the held session; `answered ...` or `cut ERROR`.
    pub fn next_command(&mut self) -> String {
        use std::io::Write;
        if let Some(mut i) = self.stdin.take() {
            let _ = writeln!(i, "go");
        }
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut self.out, &mut line);
        line.trim().to_string()
    }
}

/// etc/keepalived/render.sh's configuration for node `node` (1 or 2) of `inst`.
pub fn render(inst: &Instance, node: usize, mode: &str, alternate: u32) -> String {
    let hooks = repo_root().join("etc/keepalived");
    let out = Command::new("sh")
        .arg(hooks.join("render.sh"))
        .args(["--node", &node.to_string(), "--mode", mode])
        .args(["--alternate-seconds", &alternate.to_string()])
        .args(["--vip", &format!("{VIP}/24"), "--iface", "eth0", "--advert", "1"])
        .arg("--postern")
        .arg(bin("postern"))
        .arg("--config")
        .arg(inst.etc())
        .arg("--hooks")
        .arg(&hooks)
        .arg("--state-file")
        .arg(inst.root.path().join("vrrp.state"))
        .output()
        .expect("run render.sh");
    assert!(
        out.status.success(),
        "render.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 config")
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal");
}

/// The state the notify hook recorded for node `i` (`MASTER`, `BACKUP`, `FAULT`).
pub fn hook_state(pair: &Pair, i: usize) -> String {
    std::fs::read_to_string(pair.nodes[i].root().join("vrrp.state"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}
