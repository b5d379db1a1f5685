//! The director's fleet for tests/director_pairs.rs (issue 16): M pairs of replicated
//! mailbox servers, a director and a client, each host its own network namespace on one
//! bridge ([`postern_tests::netns::Lan`]), addresses from 198.18.1.0/24 only inside them.
//!
//! - Pair `pK` is two nodes, `pKa` at 198.18.1.K1 and `pKb` at 198.18.1.K2, each a whole
//!   mailbox server of the redundant-mail design: pop3d (110) and imapd (143), the POP3
//!   and IMAP proxies (1100, 1143: they sync the user with the other node before the
//!   login and before every OK to a change) and the replicator (1190, `replica_peers` the
//!   other node, swept every second). Both nodes' proxies prefer node a, as the examples'
//!   pair does (the lower replica name: its UIDs win a conflict).
//! - The director (`dir`, 198.18.1.5) is auth and the IMAP (143) and POP3 (110) proxies
//!   with `director_pairs` (each pair's proxies and replicators), `director_user_map`
//!   (`etc/director-map`), the replica secret and the replicator's unix service (which
//!   does the steps of a move), so `postern user move|pin|rebalance` runs there. It routes each user to the user's pair as `USER*proxy`; that pair's
//!   proxy logs in to its imapd/pop3d as `USER*proxy` again.
//! - The client (`c`, 198.18.1.10) runs the Python clients.
//! - With mail on ([`Fleet::new`]'s `hub`): every node also runs the mail pipeline
//!   (smtpd on its address, local delivery of example.test into the Maildirs, the hub's
//!   `X-Postern-GUID` trusted), the pairs' entries name their nodes' SMTP (`smtp=`), and a
//!   hub (`hub`, 198.18.1.50) relays example.test with `replica_domains`, the same
//!   `director_pairs` and the director's own `director_user_map` file (the namespaces
//!   share the file system): its copies go to the user's pair.
//!
//! Every host has the same users (one password) and the master user `proxy`.
//! Dropping the fleet kills every process of its namespaces and removes them.

#![allow(dead_code)]

use postern_tests::netns::Lan;
use postern_tests::{Instance, auth_service, bin, daemon_service, owned_mail_base, pipeline_services, wait_for};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

/// Every user's password.
pub const PW: &str = "Fleet-User-Pw1";
/// The master user `proxy`'s password.
pub const MASTER_PW: &str = "Fleet-Master-Pw2";
const SECRET: &str = "the-fleet-wide-replica-secret-of-this-test\n";
/// The director's address.
pub const DIRECTOR: &str = "198.18.1.5";
/// The hub's address.
pub const HUB: &str = "198.18.1.50";

/// One mailbox server.
pub struct Node {
    /// Host name in the LAN (`p1a`).
    pub host: String,
    /// Its address.
    pub addr: String,
    pub inst: Instance,
}

impl Node {
    /// `user`'s Maildir (INBOX) on this node.
    pub fn mailbox(&self, user: &str) -> PathBuf {
        self.inst.root.path().join("var/mail").join(user)
    }

    /// Messages (new/ and cur/) of `user`'s `folder` ("" for INBOX) on disk.
    pub fn files(&self, user: &str, folder: &str) -> usize {
        let d = if folder.is_empty() {
            self.mailbox(user)
        } else {
            self.mailbox(user).join(format!(".{folder}"))
        };
        ["new", "cur"]
            .iter()
            .map(|s| std::fs::read_dir(d.join(s)).map(|r| r.count()).unwrap_or(0))
            .sum()
    }
}

/// One pair: two nodes.
pub struct Pair {
    /// `p1`.
    pub name: String,
    pub nodes: [Node; 2],
    /// Whether its nodes take mail over SMTP (its entry names them as `smtp=`).
    pub mail: bool,
}

impl Pair {
    /// Its `director_pairs` entry.
    pub fn entry(&self) -> String {
        let list = |port: u16| {
            self.nodes
                .iter()
                .map(|n| format!("{}:{port}", n.addr))
                .collect::<Vec<_>>()
                .join(",")
        };
        let smtp = if self.mail {
            format!(" smtp={}", list(25))
        } else {
            String::new()
        };
        format!(
            "{} imap={} pop3={} replicator={}{smtp}",
            self.name,
            list(1143),
            list(1100),
            list(1190)
        )
    }
}

/// The fleet. `lan` is dropped first: it kills every process of every namespace.
pub struct Fleet {
    pub lan: Lan,
    pub pairs: Vec<Pair>,
    pub director: Instance,
    /// The hub, when mail is on.
    pub hub: Option<Instance>,
    pub users: Vec<String>,
}

fn write_private(path: PathBuf, text: &str) {
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// One sha512-crypt hash of `pw`: with the fewest rounds (cheap to check in a debug
/// build: hundreds of logins on every host) where Python still has `crypt` (removed in
/// 3.13), else openssl's (5,000 rounds).
pub fn hash(pw: &str) -> String {
    let script = "import crypt,sys; print(crypt.crypt(sys.argv[1], '$6$rounds=1000$fleettest'))";
    let py = std::process::Command::new("python3")
        .args(["-W", "ignore", "-c", script, pw])
        .output();
    if let Ok(out) = py
        && out.status.success()
    {
        return String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    let out = std::process::Command::new("openssl")
        .args(["passwd", "-6", "-salt", "fleettest", pw])
        .output()
        .expect("openssl passwd");
    assert!(out.status.success(), "openssl passwd -6");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `etc/users`, `etc/master-users` (`proxy`), `etc/proxy-password`, `etc/replica-secret`.
fn accounts(inst: &Instance, users_text: &str, master_text: &str) {
    write_private(inst.etc().join("users"), users_text);
    write_private(inst.etc().join("master-users"), master_text);
    write_private(inst.etc().join("proxy-password"), &format!("{MASTER_PW}\n"));
    write_private(inst.etc().join("replica-secret"), SECRET);
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

/// The mail pipeline (auth included) with smtpd on `addr:25` and loopback.
fn pipeline_on(addr: &str) -> String {
    pipeline_services(25).replace(
        "listen = \"127.0.0.1:25\"",
        &format!("listen = [\"{addr}:25\", \"127.0.0.1:25\"]"),
    )
}

/// A mailbox server's services (see the module doc).
fn node_services(addr: &str, mail: bool) -> String {
    let both = |port: u16| vec![format!("{addr}:{port}"), format!("127.0.0.1:{port}")];
    let own = |port: u16| vec![format!("{addr}:{port}")];
    let mut s = if mail { pipeline_on(addr) } else { auth_service() };
    s.push_str(&inet_on("pop3", "pop3d", &both(110), "maxproc = 4"));
    s.push_str(&inet_on("imap", "imapd", &both(143), "maxproc = 4"));
    s.push_str(&inet_on(
        "pop3-proxy",
        "proxy",
        &own(1100),
        "args = [\"pop3\"]\nmaxproc = 4",
    ));
    s.push_str(&inet_on(
        "imap-proxy",
        "proxy",
        &own(1143),
        "args = [\"imap\"]\nmaxproc = 4",
    ));
    s.push_str(&inet_on("replicator", "replicator", &own(1190), "maxproc = 4"));
    s.push_str(&daemon_service(
        "replicator",
        "unix",
        "",
        "replicator",
        "maxproc = 1\nmin_procs = 1\nmax_use = 1000000000\nmax_idle = \"1000d\"\nwakeup = \"1s\"\nmax_conns = 64",
    ));
    s
}

const LAN_NETS: &str = "127.0.0.0/8, 198.18.1.0/24";

/// Node `host` at `addr` of a pair whose nodes are `a` and `b`.
fn node(host: &str, addr: &str, a: &str, b: &str, peer: &str, mail: bool) -> Instance {
    let mut settings = vec![
        format!("myhostname={host}.example.test"),
        "auth_failure_delay=0s".into(),
        "auth_master_users_file=master-users".into(),
        format!("pop3d_secure_networks={LAN_NETS}"),
        format!("imapd_secure_networks={LAN_NETS}"),
        format!("proxy_secure_networks={LAN_NETS}"),
        "proxy_master_password_file=proxy-password".into(),
        format!("proxy_imap_backends=[\"{a}:143\", \"{b}:143\"]"),
        format!("proxy_pop3_backends=[\"{a}:110\", \"{b}:110\"]"),
        "proxy_connect_timeout=2s".into(),
        format!("replica_peers=[\"{peer}:1190\"]"),
        format!("replica_name={host}"),
        "replica_secret_file=replica-secret".into(),
        "replica_sync_interval=1s".into(),
        "replica_timeout=5s".into(),
    ];
    if mail {
        settings.extend([
            "mydestination=[\"example.test\", \"localhost\"]".to_string(),
            "relayhost=".into(),
            format!("replica_hub_networks=[\"{HUB}/32\"]"),
        ]);
    }
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    Instance::new(&node_services(addr, mail), &settings)
}

/// `director_pairs=[...]` over `pairs`.
pub fn pairs_setting(pairs: &[&Pair]) -> String {
    let list: Vec<String> = pairs.iter().map(|p| format!("\"{}\"", p.entry())).collect();
    format!("director_pairs=[{}]", list.join(", "))
}

/// The address of node `j` (0 = a, 1 = b) of pair `k` (1-based).
pub fn node_addr(k: usize, j: usize) -> String {
    format!("198.18.1.{}", 10 * k + 1 + j)
}

impl Fleet {
    /// Builds the LAN and `npairs` pairs with `users` on every host; the director routes
    /// over the first `routed` pairs; `hub`: mail on (see the module doc).
    /// `seed(pair index, user) -> messages` says what to put into node a's Maildirs before
    /// anything starts (node b gets it by replication). Everything is started.
    pub fn new(
        prefix: &str,
        npairs: usize,
        routed: usize,
        users: &[String],
        hub: bool,
        seed: impl Fn(usize, &str) -> usize,
    ) -> Fleet {
        let mut lan = Lan::new(prefix);
        lan.add_host("c", &["198.18.1.10/24"]);
        lan.add_host("dir", &[&format!("{DIRECTOR}/24")]);
        let h = hash(PW);
        let users_text: String = users.iter().map(|u| format!("{u}:{h}\n")).collect();
        let master_text = format!("proxy:{}\n", hash(MASTER_PW));
        let mut pairs = Vec::new();
        for k in 1..=npairs {
            let (a, b) = (node_addr(k, 0), node_addr(k, 1));
            let nodes = [0, 1].map(|j| {
                let host = format!("p{k}{}", if j == 0 { 'a' } else { 'b' });
                let addr = if j == 0 { a.clone() } else { b.clone() };
                let peer = if j == 0 { &b } else { &a };
                lan.add_host(&host, &[&format!("{addr}/24")]);
                let mut inst = node(&host, &addr, &a, &b, peer, hub);
                accounts(&inst, &users_text, &master_text);
                inst.set_netns(&lan.ns(&host));
                Node { host, addr, inst }
            });
            pairs.push(Pair {
                name: format!("p{k}"),
                nodes,
                mail: hub,
            });
        }
        for (i, p) in pairs.iter().enumerate() {
            for u in users {
                let n = seed(i, u);
                if n > 0 {
                    put_messages(&p.nodes[0], u, n);
                }
            }
        }
        let routed: Vec<&Pair> = pairs.iter().take(routed).collect();
        let mut director = director(&routed);
        accounts(&director, &users_text, &master_text);
        director.set_netns(&lan.ns("dir"));
        let mut hub = hub.then(|| {
            lan.add_host("hub", &[&format!("{HUB}/24")]);
            let map = director.etc().join("director-map");
            let mut h = hub_instance(&routed, &pairs[0], &map);
            accounts(&h, &users_text, &master_text);
            h.set_netns(&lan.ns("hub"));
            h
        });
        // (start everything at once: each start waits for its master)
        std::thread::scope(|s| {
            for p in pairs.iter_mut() {
                for n in p.nodes.iter_mut() {
                    owned_mail_base(&n.inst);
                    s.spawn(move || n.inst.start());
                }
            }
            s.spawn(|| director.start());
            if let Some(h) = hub.as_mut() {
                s.spawn(move || h.start());
            }
        });
        Fleet {
            lan,
            pairs,
            director,
            hub,
            users: users.to_vec(),
        }
    }

    /// Runs `postern ARGS` on the director (in its namespace), asserting success; its
    /// output.
    pub fn postern_ok(&self, args: &[&str]) -> String {
        let out = self.director.postern(args);
        let text = output_text(&out);
        assert!(out.status.success(), "postern {args:?} on the director failed:\n{text}");
        text
    }

    /// Runs python3 `script ARGS` in host `host`'s namespace.
    pub fn python(&self, host: &str, script: &str, args: &[&str]) -> Output {
        self.lan
            .command(host, "python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("python3")
    }

    /// Waits until node b of every pair holds as many messages in each user's INBOX as
    /// node a (the replicators' sweep), within `limit`.
    pub fn wait_replicated(&self, limit: Duration) -> bool {
        wait_for(limit, || {
            self.pairs.iter().all(|p| {
                self.users
                    .iter()
                    .all(|u| p.nodes[1].files(u, "") == p.nodes[0].files(u, ""))
            })
        })
    }

    /// The pair named `name`.
    pub fn pair(&self, name: &str) -> &Pair {
        self.pairs.iter().find(|p| p.name == name).expect("pair")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // every host killed at once (one after the other takes most of a test's time);
        // then the LAN removes the namespaces
        let t = std::time::Instant::now();
        let mut hosts: Vec<String> = ["c", "dir", "hub"].iter().map(|h| h.to_string()).collect();
        hosts.extend(self.pairs.iter().flat_map(|p| p.nodes.iter().map(|n| n.host.clone())));
        let lan = &self.lan;
        std::thread::scope(|s| {
            for h in &hosts {
                s.spawn(move || lan.kill_all(h));
            }
        });
        eprintln!("fleet: every process killed in {:.1} s", t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        let pairs = std::mem::take(&mut self.pairs);
        let hub = self.hub.take();
        std::thread::scope(|s| {
            for p in pairs {
                for n in p.nodes {
                    s.spawn(move || drop(n));
                }
            }
            s.spawn(move || drop(hub));
        });
        eprintln!("fleet: instances dropped in {:.1} s", t.elapsed().as_secs_f64());
    }
}

/// Stdout and stderr as one text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The hub: the mail pipeline relaying example.test, one copy per node of the user's pair
/// (`director_pairs` over `pairs`, the director's table at `map`); `replica_relays` (for a
/// user the director cannot place) is `fallback`'s nodes.
fn hub_instance(pairs: &[&Pair], fallback: &Pair, map: &Path) -> Instance {
    let relays: Vec<String> = fallback
        .nodes
        .iter()
        .map(|n| format!("\"smtp:[{}]:25\"", n.addr))
        .collect();
    let settings = [
        "myhostname=hub.example.test".to_string(),
        "mydomain=example.test".into(),
        "mydestination=[\"hub.example.test\", \"localhost\"]".into(),
        "relay_domains=[\"example.test\"]".into(),
        "relayhost=".into(),
        "replica_domains=[\"example.test\"]".into(),
        format!("replica_relays=[{}]", relays.join(", ")),
        pairs_setting(pairs),
        format!("director_user_map={}", map.display()),
        "smtp_connect_timeout=5s".into(),
        "minimal_backoff_time=5s".into(),
        "maximal_backoff_time=10s".into(),
        "queue_run_delay=5s".into(),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    Instance::new(&pipeline_on(HUB), &settings)
}

impl Fleet {
    /// Sends `n` messages to `user@example.test` through the hub from the client, with
    /// Message-IDs `<TAG-I@hub.test>`; panics unless each is accepted.
    pub fn send_through_hub(&self, tag: &str, n: usize, user: &str) {
        let script = "import smtplib, sys\n\
            tag, n, to = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n\
            s = smtplib.SMTP(sys.argv[4], 25, timeout=30)\n\
            for i in range(n):\n    \
                msg = 'From: carol@client.test\\r\\nTo: %s\\r\\nSubject: %s %d\\r\\nMessage-ID: <%s-%d@hub.test>\\r\\n\\r\\nhub message\\r\\n' % (to, tag, i, tag, i)\n    \
                s.sendmail('carol@client.test', [to], msg)\n\
            s.quit()\n";
        let to = format!("{user}@example.test");
        let out = self.python("c", script, &[tag, &n.to_string(), &to, HUB]);
        assert!(out.status.success(), "sending through the hub: {}", output_text(&out));
    }
}

/// The director: auth and both proxies over `pairs`.
fn director(pairs: &[&Pair]) -> Instance {
    let mut services = auth_service();
    services.push_str(&inet_on(
        "imap-proxy",
        "proxy",
        &[format!("{DIRECTOR}:143")],
        "args = [\"imap\"]\nmaxproc = 4",
    ));
    services.push_str(&inet_on(
        "pop3-proxy",
        "proxy",
        &[format!("{DIRECTOR}:110")],
        "args = [\"pop3\"]\nmaxproc = 4",
    ));
    services.push_str(&postern_tests::director_replicator_service());
    let ps = pairs_setting(pairs);
    let settings = [
        "myhostname=dir.example.test".to_string(),
        "auth_failure_delay=0s".into(),
        format!("proxy_secure_networks={LAN_NETS}"),
        "proxy_master_password_file=proxy-password".into(),
        "proxy_connect_timeout=2s".into(),
        ps,
        "director_user_map=director-map".into(),
        "replica_secret_file=replica-secret".into(),
        "replica_timeout=10s".into(),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    Instance::new(&services, &settings)
}

/// Puts a mailbox with state into `user`'s Maildir on `node` (files written in tmp/ and
/// renamed, as a delivery does): `n` messages in INBOX, Message-IDs
/// `<USER.K@example.test>`, K from 1, message 1 flagged (`cur/...:2,F`), the others in
/// new/; folder Kept holding a copy of message 2.
pub fn put_messages(node: &Node, user: &str, n: usize) {
    let md = node.mailbox(user);
    let kept = md.join(".Kept");
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(md.join(d)).expect("mkdir");
        std::fs::create_dir_all(kept.join(d)).expect("mkdir");
    }
    let put = |dir: &Path, base: &str, sub: &str, suffix: &str, text: &str| {
        std::fs::write(dir.join("tmp").join(base), text).expect("write");
        std::fs::rename(
            dir.join("tmp").join(base),
            dir.join(sub).join(format!("{base}{suffix}")),
        )
        .expect("rename");
    };
    for k in 1..=n {
        let text = format!(
            "From: sender@example.test\r\nTo: {user}@example.test\r\nSubject: {user} message {k}\r\nMessage-ID: <{user}.{k}@example.test>\r\n\r\nbody {k} of {user}\r\n"
        );
        let base = format!("{}.{user}_{k}.fleet,S={}", 1_765_000_000 + k, text.len());
        if k == 1 {
            put(&md, &base, "cur", ":2,F", &text);
        } else {
            put(&md, &base, "new", "", &text);
        }
        if k == 2 {
            let copy = format!("{}.{user}_{k}_kept.fleet,S={}", 1_765_000_000 + k, text.len());
            put(&kept, &copy, "cur", ":2,", &text);
        }
    }
}

/// Logs each user in at HOST:PORT and prints the mailbox as facts, one line each,
/// `USER<TAB>FACT`: `F FOLDER UIDVALIDITY`, `M FOLDER UID MESSAGE-ID FLAGS` (flags sorted,
/// \Recent left out), read-only (EXAMINE, BODY.PEEK). With FIRST=1 it first changes the
/// mailbox through this login: sets \Answered on INBOX message 3 and copies it to Kept.
pub const IMAP_STATE: &str = r#"
import imaplib, re, sys
host, port, first, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
def names(data):
    out = []
    for line in data:
        if not line:
            continue
        if isinstance(line, tuple):
            line = line[0] + b'"' + line[1] + b'"'
        m = re.match(rb'\((.*?)\) (NIL|"[^"]*") (.*)$', line)
        n = m.group(3).decode()
        out.append(n[1:-1] if n.startswith('"') else n)
    return out
for user in sys.argv[5:]:
    M = imaplib.IMAP4(host, port, timeout=60)
    try:
        M.login(user, pw)
    except Exception as e:
        raise SystemExit("login of %s at %s:%d: %r" % (user, host, port, e))
    if first:
        typ, d = M.select("INBOX")
        assert typ == "OK", (user, d)
        for r in (M.store("3", "+FLAGS", "(\\Answered)"), M.copy("3", "Kept")):
            assert r[0] == "OK", (user, r)
        M.close()
    facts = []
    for f in names(M.list('""', '*')[1]):
        typ, _ = M.select('"%s"' % f, readonly=True)
        if typ != 'OK':
            continue
        facts.append('F %s %s' % (f, M.response('UIDVALIDITY')[1][0].decode()))
        typ, data = M.uid('FETCH', '1:*', '(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
        recs = []
        for item in data or []:
            if item is None:
                continue
            if isinstance(item, tuple):
                recs.append([item[0], item[1]])
            elif recs:
                recs[-1][0] += item
        for meta, lit in recs:
            uid = re.search(rb'UID (\d+)', meta).group(1).decode()
            flags = re.search(rb'FLAGS \(([^)]*)\)', meta).group(1).decode().split()
            flags = ' '.join(sorted(x for x in flags if x != '\\Recent'))
            mid = re.search(rb'(?i)message-id:\s*<([^>]*)>', lit)
            facts.append('M %s %s %s %s' % (f, uid, mid.group(1).decode() if mid else '-', flags))
        M.close()
    M.logout()
    for x in sorted(facts):
        print("%s\t%s" % (user, x))
"#;

/// Logs each user in over POP3 at HOST:PORT and prints `USER<TAB>UIDL MESSAGE-ID` per
/// message, in message order (TOP n 0: nothing changes).
pub const POP3_STATE: &str = r#"
import poplib, sys
host, port, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for user in sys.argv[4:]:
    p = poplib.POP3(host, port, timeout=60)
    try:
        p.user(user)
        p.pass_(pw)
    except Exception as e:
        raise SystemExit("POP3 login of %s at %s:%d: %r" % (user, host, port, e))
    for l in p.uidl()[1]:
        n, u = l.decode().split()
        mid = [h for h in p.top(int(n), 0)[1] if h.lower().startswith(b'message-id:')]
        print("%s\t%s %s" % (user, u, mid[0].split(b':', 1)[1].strip().decode().strip('<>') if mid else '-'))
    p.quit()
"#;

/// USER → its lines, from a script's `USER<TAB>LINE` output.
pub fn by_user(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in text.lines() {
        if let Some((u, rest)) = l.split_once('\t') {
            m.entry(u.to_string()).or_default().push(rest.to_string());
        }
    }
    m
}

/// Clients run at once by [`Fleet::run_clients`] (the chain client → director → pair
/// proxy → imapd waits more than it computes).
pub const CLIENTS: usize = 6;

impl Fleet {
    /// Runs `script` (one of the above) from host `from` against `(addr, port)` for `users`,
    /// on [`CLIENTS`] clients at once (a share of the users each); USER → lines. `pre`: the
    /// arguments before the user names after host and port. Panics with the clients' errors
    /// and the end of `log_of`'s log.
    pub fn run_clients(
        &self,
        from: &str,
        script: &str,
        (addr, port): (&str, u16),
        pre: &[&str],
        users: &[String],
        log_of: &Instance,
    ) -> BTreeMap<String, Vec<String>> {
        let port_s = port.to_string();
        let runs: Vec<Output> = std::thread::scope(|s| {
            let handles: Vec<_> = users
                .chunks(users.len().div_ceil(CLIENTS).max(1))
                .map(|chunk| {
                    let port_s = &port_s;
                    s.spawn(move || {
                        let mut args: Vec<&str> = vec![addr, port_s];
                        args.extend_from_slice(pre);
                        args.extend(chunk.iter().map(String::as_str));
                        self.python(from, script, &args)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("client thread")).collect()
        });
        if !runs.iter().all(|r| r.status.success()) {
            let err: String = runs
                .iter()
                .map(|r| String::from_utf8_lossy(&r.stderr).into_owned())
                .collect();
            let log = log_of.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "clients at {addr}:{port} from {from} failed:\n{err}\nlog, last lines first:\n{}",
                tail.join("\n")
            );
        }
        let out: String = runs
            .iter()
            .map(|r| String::from_utf8_lossy(&r.stdout).into_owned())
            .collect();
        by_user(&out)
    }

    /// Every user's IMAP state as a client sees it through the director.
    pub fn imap_through_director(&self, users: &[String], first: bool) -> BTreeMap<String, Vec<String>> {
        let pre = [if first { "1" } else { "0" }, PW];
        let m = self.run_clients("c", IMAP_STATE, (DIRECTOR, 143), &pre, users, &self.director);
        assert_eq!(m.len(), users.len(), "a state for every user: {:?}", m.keys());
        m
    }

    /// Every user's POP3 view (`UIDL MESSAGE-ID` lines) through the director.
    pub fn pop3_through_director(&self, users: &[String]) -> BTreeMap<String, Vec<String>> {
        let m = self.run_clients("c", POP3_STATE, (DIRECTOR, 110), &[PW], users, &self.director);
        assert_eq!(m.len(), users.len(), "a POP3 view for every user: {:?}", m.keys());
        m
    }

    /// `users`' IMAP state on `node`'s own imapd (loopback, in its namespace).
    pub fn imap_on_node(&self, node: &Node, users: &[String]) -> BTreeMap<String, Vec<String>> {
        if users.is_empty() {
            return BTreeMap::new();
        }
        self.run_clients(
            &node.host,
            IMAP_STATE,
            ("127.0.0.1", 143),
            &["0", PW],
            users,
            &node.inst,
        )
    }

    /// `users`' POP3 view on `node`'s own pop3d.
    pub fn pop3_on_node(&self, node: &Node, users: &[String]) -> BTreeMap<String, Vec<String>> {
        if users.is_empty() {
            return BTreeMap::new();
        }
        self.run_clients(&node.host, POP3_STATE, ("127.0.0.1", 110), &[PW], users, &node.inst)
    }

    /// Every node's IMAP state of `users_of(pair index, node index)`, read on all nodes at
    /// once: `[pair][node]` → USER → facts.
    pub fn imap_on_nodes(
        &self,
        users_of: impl Fn(usize, usize) -> Vec<String> + Sync,
    ) -> Vec<[BTreeMap<String, Vec<String>>; 2]> {
        let users_of = &users_of;
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .pairs
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    [0, 1].map(|j| {
                        let node = &p.nodes[j];
                        s.spawn(move || self.imap_on_node(node, &users_of(i, j)))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|hs| hs.map(|h| h.join().expect("node reader")))
                .collect()
        })
    }
}

/// `backend=` of each user's proxy logins in `log`, in order, for logins to backends on
/// `port` (the director's: 1143 IMAP, 1100 POP3).
pub fn backends(log: &str, port: u16) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let suffix = format!(":{port}");
    for l in log.lines().filter(|l| l.contains("proxy: login: user=")) {
        let field = |k: &str| {
            l.split(k)
                .nth(1)
                .map(|r| r.split([',', ' ']).next().unwrap_or("").to_string())
        };
        if let (Some(u), Some(b)) = (field("user="), field("backend="))
            && b.ends_with(&suffix)
        {
            m.entry(u).or_default().push(b);
        }
    }
    m
}

/// Whether `path` exists.
pub fn exists(path: &Path) -> bool {
    path.exists()
}
