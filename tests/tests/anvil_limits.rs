//! The anvil daemon under the real master: `smtpd_client_connection_count_limit` and
//! `smtpd_client_connection_rate_limit` hold over all smtpd processes (smtpd with
//! `max_conns = 2`, so three connections need two processes), and a killed anvil neither
//! stops smtpd from serving nor stays dead (master starts it again on the next request).

mod smtpd_common;

use postern_tests::*;
use smtpd_common::{Client, LONG};
use std::collections::{HashMap, HashSet};

/// Master with smtpd (up to 4 processes of 2 clients each) and anvil; no cleanup needed.
fn start(settings: &[&str]) -> (Instance, u16) {
    let port = free_port();
    let mut services = daemon_service(
        "smtp",
        "inet",
        &format!("127.0.0.1:{port}"),
        "smtpd",
        "maxproc = 4\nmax_conns = 2",
    );
    services.push_str(&daemon_service("anvil", "unix", "", "anvil", "maxproc = 1"));
    // Loopback is in mynetworks, which smtpd_client_event_limit_exceptions exempts by default.
    let mut all = vec!["smtpd_client_event_limit_exceptions=[]"];
    all.extend_from_slice(settings);
    let mut inst = Instance::new(&services, &all);
    inst.start();
    (inst, port)
}

/// The children of master running `program`.
fn children_named(inst: &Instance, program: &str) -> Vec<u32> {
    children_of(inst.master_pid())
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some(program))
        .collect()
}

/// How many established connections to local `port` each smtpd process holds (from
/// /proc/net/tcp and each process's descriptors).
fn clients_per_smtpd(inst: &Instance, port: u16) -> HashMap<u32, usize> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inodes: HashSet<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == "01")
                .then(|| f.get(9).map(|s| s.to_string()))?
        })
        .collect();
    let mut out = HashMap::new();
    for pid in children_named(inst, "smtpd") {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let n = fds
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|t| {
                let t = t.to_string_lossy();
                t.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|i| inodes.contains(i))
            })
            .count();
        if n > 0 {
            out.insert(pid, n);
        }
    }
    out
}

const TOO_MANY: &str = "421 4.7.0 mail.example.test Error: too many connections from 127.0.0.1\r\n";
const TOO_FAST: &str = "421 4.7.0 mail.example.test Error: too many connections per minute from 127.0.0.1\r\n";
const FALLBACK: &str = "counting connection limits in this smtpd process only";

#[test]
fn connection_count_is_shared_by_all_smtpd_processes_and_survives_anvil_death() {
    let (inst, port) = start(&["smtpd_client_connection_count_limit=3"]);
    let mut open: Vec<Client> = (0..3).map(|_| Client::connect(port)).collect();
    for c in &open {
        assert!(c.greeting.starts_with("220 mail.example.test"), "{}", c.greeting);
    }
    let spread = clients_per_smtpd(&inst, port);
    assert_eq!(spread.values().sum::<usize>(), 3, "{spread:?}");
    assert!(
        spread.len() >= 2,
        "three clients served by more than one smtpd: {spread:?}"
    );
    // Each process holds at most 2, so only a shared count refuses the 4th.
    assert_eq!(Client::connect(port).greeting, TOO_MANY);

    // One leaves: a new one gets in, and then the limit holds again.
    open.remove(0).cmd("QUIT");
    let mut admitted = None;
    assert!(
        wait_for(LONG, || {
            let c = Client::connect(port);
            let ok = c.greeting.starts_with("220");
            if ok {
                admitted = Some(c);
            }
            ok
        }),
        "a slot is free again once a client left"
    );
    open.extend(admitted);
    assert_eq!(Client::connect(port).greeting, TOO_MANY);
    let log = inst.log();
    assert!(log.contains("too many connections from unknown[127.0.0.1]"));
    assert!(!log.contains(FALLBACK), "anvil answered every question");

    // kill -9 anvil: smtpd still serves (anvil's counts died with it).
    let anvils = children_named(&inst, "anvil");
    assert_eq!(anvils.len(), 1, "one anvil process");
    assert!(kill9(anvils[0]));
    assert!(wait_for(LONG, || !alive(anvils[0])));
    let c = Client::connect(port);
    assert!(c.greeting.starts_with("220 mail.example.test"), "{}", c.greeting);
    drop(c);
    // The next requests start a new anvil.
    assert!(
        wait_for(LONG, || {
            drop(Client::connect(port));
            children_named(&inst, "anvil").iter().any(|&p| p != anvils[0])
        }),
        "master started a new anvil"
    );
    // With everyone gone, the shared limit holds again over the new anvil.
    drop(open);
    assert!(
        wait_for(LONG, || {
            let three: Vec<Client> = (0..3).map(|_| Client::connect(port)).collect();
            let fourth = Client::connect(port);
            three.iter().all(|c| c.greeting.starts_with("220")) && fourth.greeting == TOO_MANY
        }),
        "the new anvil counts over all smtpd processes"
    );
    assert!(inst.log().contains("anvil answers again"));
}

#[test]
fn connection_rate_is_shared_by_all_smtpd_processes() {
    let (inst, port) = start(&["smtpd_client_connection_rate_limit=5"]);
    // Kept open, so the five spread over at least three processes.
    let open: Vec<Client> = (0..5).map(|_| Client::connect(port)).collect();
    for c in &open {
        assert!(c.greeting.starts_with("220 mail.example.test"), "{}", c.greeting);
    }
    let spread = clients_per_smtpd(&inst, port);
    assert!(spread.len() >= 3, "{spread:?}");
    assert_eq!(Client::connect(port).greeting, TOO_FAST);
    // Leaving does not give the rate back within the window.
    drop(open);
    assert_eq!(Client::connect(port).greeting, TOO_FAST);
    let log = inst.log();
    assert!(log.contains("too many connections per minute from unknown[127.0.0.1]"));
    assert!(!log.contains(FALLBACK));
}
