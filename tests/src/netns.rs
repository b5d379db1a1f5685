//! Several hosts on one machine, for cluster tests: network namespaces joined by veth
//! links to a bridge, all made and removed by the test, nothing in the root namespace.
//!
//! A [`Lan`] is one Ethernet segment: a namespace `PREFIXbr` holding the bridge `br0`, and
//! per host a namespace `PREFIXNAME` whose `eth0` is one end of a veth pair, the other end
//! (named NAME) plugged into the bridge. Every interface is created directly inside its
//! namespace (`ip link add ... netns NS`), so the root namespace gets neither an interface
//! nor an address; addresses are from 198.18.0.0/15 (RFC 2544, benchmarking), so nothing
//! can leave the machine even by mistake.
//!
//! Teardown is guaranteed: dropping the [`Lan`] sends SIGKILL to every process whose
//! network namespace is one of its namespaces (`ip netns pids`) and deletes the
//! namespaces, which removes their interfaces and the bridge. [`Lan::new`] first removes
//! leftovers of a crashed earlier run under the same prefix, so names are reusable.
//! Every namespace name starts with [`PREFIX`] (`pst-`), and a test uses its own
//! prefix (`pst-to-`, ...) so that tests running in parallel never touch each other's.
//!
//! Needs root and `ip` (iproute2).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The first characters of every namespace this harness creates.
pub const PREFIX: &str = "pst-";

/// The directory `ip netns` keeps its namespace names in.
const NETNS_DIR: &str = "/run/netns";

/// Runs `ip ARGS`; returns its output.
pub fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip (iproute2)")
}

/// Runs `ip ARGS`, panicking with its error text when it fails.
pub fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The names of the existing namespaces that start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    assert!(
        prefix.starts_with(PREFIX),
        "namespace prefix {prefix:?} must start with {PREFIX}"
    );
    let mut out: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    out.sort();
    out
}

/// The pids of every process in namespace `ns`.
pub fn pids_in(ns: &str) -> Vec<u32> {
    String::from_utf8_lossy(&ip(&["netns", "pids", ns]).stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGKILL to every process in namespace `ns`, repeated until none is left (a process
/// may fork while the first round runs); returns how many were killed.
///
/// Each round first stops every process (SIGSTOP), then kills them: killed one by one, a
/// child would see its parent die first and could act on it (keepalived's VRRP process
/// gets SIGTERM when its parent dies and would hand the address over cleanly), which a
/// machine that dies does not do.
pub fn kill_all_in(ns: &str) -> usize {
    use nix::sys::signal::{Signal, kill};
    let mut killed = 0;
    for _ in 0..50 {
        let pids = pids_in(ns);
        if pids.is_empty() {
            break;
        }
        for &p in &pids {
            if let Ok(p) = i32::try_from(p) {
                let _ = kill(nix::unistd::Pid::from_raw(p), Signal::SIGSTOP);
            }
        }
        killed += pids.into_iter().filter(|&p| crate::kill9(p)).count();
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

/// Kills everything in `ns` and deletes it.
pub fn remove_namespace(ns: &str) {
    kill_all_in(ns);
    let _ = ip(&["netns", "del", ns]);
}

/// Removes every namespace whose name starts with `prefix` (leftovers of a crashed run).
pub fn cleanup_prefix(prefix: &str) {
    for ns in namespaces_with_prefix(prefix) {
        remove_namespace(&ns);
    }
}

/// One Ethernet segment of namespaces on a bridge (see the module doc).
pub struct Lan {
    prefix: String,
    hosts: Vec<String>,
}

impl Lan {
    /// Removes leftovers named `prefix*`, then creates `PREFIXbr` with an up bridge `br0`.
    /// `prefix` starts with [`PREFIX`] and is short: interface names stay inside namespaces,
    /// but namespace names show up in every `ip netns list`.
    pub fn new(prefix: &str) -> Lan {
        cleanup_prefix(prefix);
        let lan = Lan {
            prefix: prefix.to_string(),
            hosts: Vec::new(),
        };
        let br = lan.bridge_ns();
        ip_ok(&["netns", "add", &br]);
        ip_ok(&["-n", &br, "link", "set", "lo", "up"]);
        ip_ok(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &br, "link", "set", "br0", "up"]);
        lan
    }

    /// The namespace holding the bridge.
    pub fn bridge_ns(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// The namespace of host `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Creates host `name` (namespace `PREFIXname`, loopback up) with `eth0` on the bridge
    /// holding `addrs` (`198.18.1.1/24`, ...); returns the namespace's name.
    pub fn add_host(&mut self, name: &str, addrs: &[&str]) -> String {
        assert!(
            name.len() <= 15,
            "host name {name:?} is an interface name: at most 15 characters"
        );
        let ns = self.ns(name);
        let br = self.bridge_ns();
        ip_ok(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
        ip_ok(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", name, "netns", &br,
        ]);
        ip_ok(&["-n", &br, "link", "set", name, "master", "br0"]);
        ip_ok(&["-n", &br, "link", "set", name, "up"]);
        for a in addrs {
            ip_ok(&["-n", &ns, "addr", "add", a, "dev", "eth0"]);
        }
        ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
        ns
    }

    /// Sets host `name`'s port on the bridge up or down: down cuts the host off the LAN
    /// (both directions) while everything in it keeps running.
    pub fn set_link(&self, name: &str, up: bool) {
        ip_ok(&[
            "-n",
            &self.bridge_ns(),
            "link",
            "set",
            name,
            if up { "up" } else { "down" },
        ]);
    }

    /// Isolates host `name`'s bridge port (`bridge link set ... isolated on`) or ends that:
    /// isolated ports reach no other isolated port but still every other one, so isolating
    /// two servers cuts the link between them while both keep reaching the clients.
    pub fn set_isolated(&self, name: &str, isolated: bool) {
        let out = Command::new("bridge")
            .args(["-n", &self.bridge_ns(), "link", "set", "dev", name, "isolated"])
            .arg(if isolated { "on" } else { "off" })
            .output()
            .expect("run bridge (iproute2)");
        assert!(
            out.status.success(),
            "bridge link set dev {name} isolated: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// A command that runs `program` inside host `name`'s namespace.
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(name)]).arg(program);
        c
    }

    /// Runs `program ARGS` inside host `name`; returns its output.
    pub fn exec(&self, name: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        self.command(name, program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
    }

    /// Sets a sysctl of host `name`'s namespace (`net.ipv4.ip_nonlocal_bind=1`).
    pub fn sysctl(&self, name: &str, setting: &str) {
        let out = self.exec(name, "sysctl", &["-q", "-w", setting]);
        assert!(
            out.status.success(),
            "sysctl {setting} in {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The IPv4 addresses on host `name`'s `eth0` (`198.18.1.1`, without the prefix length).
    pub fn addresses(&self, name: &str) -> Vec<String> {
        let out = ip(&["-n", &self.ns(name), "-o", "-4", "addr", "show", "dev", "eth0"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.position(|x| x == "inet")?;
                w.next()?.split('/').next().map(str::to_string)
            })
            .collect()
    }

    /// Whether host `name` holds `addr` on `eth0`.
    pub fn holds(&self, name: &str, addr: &str) -> bool {
        self.addresses(name).iter().any(|a| a == addr)
    }

    /// SIGKILL to every process of host `name`; returns how many.
    pub fn kill_all(&self, name: &str) -> usize {
        kill_all_in(&self.ns(name))
    }

    /// Whether `ip netns` knows namespace `ns`.
    pub fn exists(ns: &str) -> bool {
        Path::new(NETNS_DIR).join(ns).exists()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().rev() {
            remove_namespace(ns);
        }
        remove_namespace(&self.bridge_ns());
    }
}
