//! Controlling master from outside: reload (new listen address, new limits, a broken file
//! refused), stop, the single-master lock, start-up errors as one clear line, and the
//! privilege drop of children when master runs as root.

use postern_tests::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn reload_moves_listener_and_keeps_open_connections() {
    let (p1, p2) = (free_port(), free_port());
    let mut inst = Instance::new(&testd_service("echo", "single", p1, "maxproc = 5"), &[]);
    inst.start();
    let master = inst.master_pid();
    let mut held = EchoClient::connect(p1).unwrap();
    assert_eq!(held.echo("one").unwrap(), "one");

    let out = inst.postern(&[
        "config",
        "set",
        &format!("echo/inet.listen=127.0.0.1:{p2}"),
        "echo/inet.maxproc=7",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = inst.postern(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));

    assert!(
        wait_for(LONG, || EchoClient::connect(p2).map(|c| c.quit()).is_ok()),
        "new address not served"
    );
    assert_eq!(inst.master_pid(), master, "master was not restarted");
    assert_eq!(
        held.echo("still here").unwrap(),
        "still here",
        "open connection dropped by reload"
    );
    let status = String::from_utf8(inst.postern(&["status"]).stdout).unwrap();
    let line = status.lines().find(|l| l.starts_with("echo/inet")).unwrap_or_default();
    assert!(
        line.split_whitespace().nth(7) == Some("7"),
        "maxproc not applied: {status}"
    );
    assert!(line.contains(&format!("127.0.0.1:{p2}")), "{status}");
    held.quit();
    assert!(
        wait_for(LONG, || std::net::TcpStream::connect(("127.0.0.1", p1)).is_err()),
        "old address still open"
    );
}

#[test]
fn broken_config_on_reload_is_refused() {
    let port = free_port();
    let mut inst = Instance::new(&testd_service("echo", "single", port, ""), &[]);
    inst.start();
    let main = inst.etc().join("main.toml");
    let good = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{good}\nno_such_setting = 1\n")).unwrap();
    // postern reload checks first and says why.
    let out = inst.postern(&["reload"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no_such_setting"), "{}", stderr(&out));
    // A SIGHUP sent behind its back is refused by master itself.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(inst.master_pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    assert!(
        wait_for(LONG, || inst.log_count("reload refused") == 1),
        "{}",
        inst.log()
    );
    let mut c = EchoClient::connect(port).unwrap();
    assert_eq!(c.echo("alive").unwrap(), "alive");
    c.quit();
    std::fs::write(&main, good).unwrap();
}

#[test]
fn stop_ends_children_and_second_start_is_refused() {
    let port = free_port();
    let mut inst = Instance::new(&testd_service("echo", "event", port, "min_procs = 2"), &[]);
    inst.start();
    let master = inst.master_pid();
    let again = inst.postern(&["start"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already running"), "{}", stderr(&again));
    // Also refused by master itself, started directly.
    let direct = std::process::Command::new(bin("master"))
        .arg("-c")
        .arg(inst.etc())
        .output()
        .unwrap();
    assert!(!direct.status.success());
    assert!(stderr(&direct).contains("already running"), "{}", stderr(&direct));

    assert!(wait_for(LONG, || children_of(master).len() == 2));
    let kids = children_of(master);
    let c = EchoClient::connect(port).unwrap();
    c.quit();
    assert!(inst.postern(&["status"]).status.success());
    let out = inst.stop();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!alive(master), "master still running after stop returned");
    for k in kids {
        assert!(!alive(k), "child {k} still running after stop returned");
    }
    assert_eq!(inst.postern(&["status"]).status.code(), Some(1));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn startup_errors_are_one_clear_line() {
    // Port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let inst = Instance::new(&testd_service("echo", "single", port, ""), &[]);
    let out = inst.postern(&["start"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err,
        format!(
            "postern: port {port} is in use by another program; change it with: postern config set 'echo/inet.listen=127.0.0.1:NNNN'\n"
        )
    );
    assert_eq!(inst.postern(&["status"]).status.code(), Some(1), "nothing left running");

    // A command that cannot be executed.
    let svc =
        "[[service]]\nname = \"x\"\ntype = \"inet\"\nlisten = \"127.0.0.1:1\"\ncommand = \"/nonexistent/daemon\"\n";
    let inst = Instance::new(svc, &[]);
    let err = stderr(&inst.postern(&["start"]));
    assert!(err.contains("/nonexistent/daemon") && err.lines().count() == 1, "{err}");

    // An unknown key, with file and line.
    let inst = Instance::new(&testd_service("echo", "single", free_port(), ""), &[]);
    let main = inst.etc().join("main.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    let line = text.lines().count() + 1;
    std::fs::write(&main, format!("{text}bogus_key = 1\n")).unwrap();
    let err = stderr(&inst.postern(&["start"]));
    assert!(
        err.contains(&format!("main.toml:{line}")) && err.contains("bogus_key"),
        "{err}"
    );

    // A daemon run by hand refuses politely.
    let out = std::process::Command::new(bin("postern-testd"))
        .arg("single")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("runs only under master"), "{}", stderr(&out));
}

#[test]
fn unprivileged_children_drop_to_mail_owner() {
    if !postern_tests::require_root("children drop to mail_owner only under root") {
        return;
    }
    let (p1, p2) = (free_port(), free_port());
    let services = format!(
        "{}{}",
        testd_service("one", "single", p1, ""),
        testd_service("many", "event", p2, "")
    );
    let mut inst = Instance::new(&services, &[]);
    inst.start();
    let (uid, gid) = postern_lib::privs::lookup("postern").expect("postern start creates mail_owner");
    let (uid, gid) = (uid.as_raw().to_string(), gid.as_raw().to_string());
    for port in [p1, p2] {
        let c = EchoClient::connect(port).unwrap();
        let pid = c.pid;
        let ids = |k: &str| {
            proc_status(pid, k)
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("Uid"), vec![uid.clone(); 4], "uids of {pid}");
        assert_eq!(ids("Gid"), vec![gid.clone(); 4], "gids of {pid}");
        assert_eq!(
            proc_status(pid, "Groups").unwrap_or_default(),
            "",
            "supplementary groups of {pid}"
        );
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                proc_status(pid, cap).as_deref(),
                Some("0000000000000000"),
                "{cap} of {pid}"
            );
        }
        assert_eq!(proc_status(pid, "NoNewPrivs").as_deref(), Some("1"));
        c.quit();
    }
    // The queue belongs to mail_owner.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(inst.queue().join("incoming")).unwrap();
    assert_eq!(meta.uid().to_string(), uid);
    assert_eq!(meta.mode() & 0o777, 0o700);
}
