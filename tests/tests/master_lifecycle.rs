//! master's process management, seen from outside: spawning on demand, reuse up to
//! `max_use`, expiry after `max_idle`, `min_procs`, the `maxproc` ceiling under a burst,
//! replacement after `kill -9`, and throttling of a command that crashes at start-up.

use postern_tests::*;
use std::collections::HashSet;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

#[test]
fn spawns_on_demand_and_reuses_up_to_max_use() {
    let port = free_port();
    let mut inst = Instance::new(&testd_service("echo", "single", port, "maxproc = 2\nmax_use = 3"), &[]);
    inst.start();
    let master = inst.master_pid();
    assert!(children_of(master).is_empty(), "no child before the first client");
    let mut pids = Vec::new();
    for i in 0..4 {
        let mut c = EchoClient::connect(port).unwrap();
        assert_eq!(c.echo(&format!("hello {i}")).unwrap(), format!("hello {i}"));
        pids.push(c.pid);
        c.quit();
        // Master learns asynchronously that the child is free again; wait for that so
        // the next client deterministically finds it (the test is about reuse).
        if i < 2 {
            assert!(inst.wait_idle("echo/inet", 1), "child not idle again");
        } else if i == 2 {
            assert!(wait_for(LONG, || !alive(pids[0])), "the used-up child exited");
        }
    }
    assert_eq!(pids[0], pids[1], "second client served by the same child");
    assert_eq!(pids[1], pids[2], "third client served by the same child");
    assert_ne!(pids[2], pids[3], "max_use = 3: the fourth client gets a new child");
}

#[test]
fn idle_child_expires_after_max_idle() {
    let port = free_port();
    let mut inst = Instance::new(&testd_service("echo", "single", port, "max_idle = 1"), &[]);
    inst.start();
    let c = EchoClient::connect(port).unwrap();
    let pid = c.pid;
    c.quit();
    assert!(wait_for(LONG, || !alive(pid)), "idle child {pid} did not expire");
    let c = EchoClient::connect(port).unwrap();
    assert_ne!(c.pid, pid);
    c.quit();
}

#[test]
fn keeps_min_procs_running() {
    let port = free_port();
    let mut inst = Instance::new(
        &testd_service("echo", "single", port, "min_procs = 2\nmax_idle = 1"),
        &[],
    );
    inst.start();
    let master = inst.master_pid();
    assert!(
        wait_for(LONG, || children_of(master).len() == 2),
        "min_procs children not started"
    );
    let first: HashSet<u32> = children_of(master).into_iter().collect();
    // Idle children expire after max_idle = 1s; master replaces them to keep two.
    assert!(
        wait_for(LONG, || first.iter().all(|p| !alive(*p))),
        "idle children did not expire"
    );
    assert!(
        wait_for(LONG, || children_of(master).len() == 2),
        "master did not keep min_procs"
    );
}

#[test]
fn never_exceeds_maxproc_under_a_burst() {
    let port = free_port();
    let mut inst = Instance::new(&testd_service("echo", "single", port, "maxproc = 3"), &[]);
    inst.start();
    let master = inst.master_pid();
    // 12 clients at once, each holding its connection until told to go.
    let handles: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = EchoClient::connect(port).expect("connect");
                assert_eq!(c.echo("x").unwrap(), "x");
                std::thread::sleep(Duration::from_millis(100));
                let pid = c.pid;
                c.quit();
                pid
            })
        })
        .collect();
    let mut max_seen = 0;
    let mut done = Vec::new();
    for h in handles {
        while !h.is_finished() {
            max_seen = max_seen.max(children_of(master).len());
            std::thread::sleep(Duration::from_millis(5));
        }
        done.push(h.join().unwrap());
    }
    let distinct: HashSet<u32> = done.iter().copied().collect();
    assert_eq!(done.len(), 12, "every client was served");
    assert!(
        distinct.len() <= 3,
        "served by {} children, maxproc is 3",
        distinct.len()
    );
    assert!(max_seen <= 3, "saw {max_seen} children at once, maxproc is 3");
    assert_eq!(
        inst.log_count("reached its process limit"),
        1,
        "limit warning logged once:\n{}",
        inst.log()
    );
}

#[test]
fn killed_child_is_logged_and_replaced() {
    let port = free_port();
    let mut inst = Instance::new(&testd_service("echo", "single", port, ""), &[]);
    inst.start();
    let mut c = EchoClient::connect(port).unwrap();
    assert_eq!(c.echo("before").unwrap(), "before");
    let victim = c.pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_for(LONG, || inst.log_count(&format!("pid {victim} killed by signal 9"))
            == 1),
        "kill not logged:\n{}",
        inst.log()
    );
    let mut c2 = EchoClient::connect(port).unwrap();
    assert_ne!(c2.pid, victim);
    assert_eq!(c2.echo("after").unwrap(), "after");
    assert_eq!(
        inst.log_count("throttling"),
        0,
        "a child that had served is not a start-up failure"
    );
}

#[test]
fn crashing_command_is_throttled() {
    let port = free_port();
    let mut inst = Instance::new(&testd_service("broken", "crash", port, ""), &[]);
    inst.start();
    // The client waits in the backlog: the child dies before accepting it.
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(
        wait_for(LONG, || inst.log_count("bad command startup -- throttling") == 1),
        "no throttle:\n{}",
        inst.log()
    );
    // While throttled (service_throttle_time = 60s) master starts nothing more, however
    // many clients knock.
    let mut more = Vec::new();
    for _ in 0..5 {
        more.push(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        inst.log_count("exit status 2"),
        1,
        "respawned while throttled:\n{}",
        inst.log()
    );
    let status = String::from_utf8(inst.postern(&["status"]).stdout).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("broken/inet") && l.contains("throttled")),
        "{status}"
    );
}

#[test]
fn event_daemon_holds_many_connections_per_process() {
    let port = free_port();
    let mut inst = Instance::new(
        &testd_service("multi", "event", port, "max_conns = 3\nmaxproc = 4"),
        &[],
    );
    inst.start();
    let mut clients: Vec<EchoClient> = (0..6).map(|_| EchoClient::connect(port).unwrap()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.echo(&format!("m{i}")).unwrap(), format!("m{i}"));
    }
    let pids: HashSet<u32> = clients.iter().map(|c| c.pid).collect();
    assert_eq!(pids.len(), 2, "6 connections at 3 per process take 2 processes");
    let status = String::from_utf8(inst.postern(&["status"]).stdout).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("multi/inet"))
        .unwrap_or_default()
        .to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols.get(1), Some(&"2"), "procs: {status}");
    assert_eq!(cols.get(4), Some(&"6"), "connections: {status}");
    for c in clients {
        c.quit();
    }
}

#[test]
fn wakeup_triggers_a_unix_service() {
    let svc = format!(
        "[[service]]\nname = \"trig\"\ntype = \"unix\"\ncommand = \"{}\"\nargs = [\"trigger\"]\nwakeup = \"1s\"\n",
        bin("postern-testd").display()
    );
    let mut inst = Instance::new(&svc, &[]);
    inst.start();
    let log = inst.queue().join("trace/testd-triggers.log");
    assert!(
        wait_for(LONG, || std::fs::read(&log)
            .map(|b| b.len() >= 2 && b.iter().all(|&c| c == b'W'))
            .unwrap_or(false)),
        "no wakeups recorded"
    );
}

/// A multi-connection child that has accepted `max_use` connections goes on accepting
/// while it holds connections (Postfix's multi_server: `max_use` recycles a process only
/// between clients), so it neither starves the service nor makes master start processes
/// beyond `maxproc` beside it; it exits once its last connection ends.
#[test]
fn a_used_up_event_child_does_not_starve_the_service() {
    let port = free_port();
    let mut inst = Instance::new(&testd_service("multi", "event", port, "max_use = 2\nmaxproc = 1"), &[]);
    inst.start();
    let mut first: Vec<EchoClient> = (0..2).map(|_| EchoClient::connect(port).unwrap()).collect();
    let old = first[0].pid;
    assert_eq!(first[1].pid, old);
    // The child is used up but holds two open connections; a third client is served, by
    // the same child (maxproc = 1 holds).
    let mut third = EchoClient::connect(port).expect("third client served");
    assert_eq!(third.pid, old, "maxproc = 1: no second process");
    assert_eq!(third.echo("new").unwrap(), "new");
    for c in first.iter_mut() {
        assert_eq!(c.echo("still").unwrap(), "still", "old connections keep working");
    }
    for c in first {
        c.quit();
    }
    third.quit();
    assert!(
        wait_for(LONG, || !alive(old)),
        "the used-up child exits once its connections end"
    );
    let mut next = EchoClient::connect(port).expect("a fresh child serves the next client");
    assert_ne!(next.pid, old);
    assert_eq!(next.echo("again").unwrap(), "again");
    next.quit();
}
