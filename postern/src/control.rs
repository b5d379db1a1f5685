//! `postern start | stop | reload | status`: driving master.
//!
//! * `start` checks the configuration, creates `mail_owner` as a locked system account
//!   when running as root and it is missing (as a package install would), refuses when a
//!   master already runs on the queue, starts master in the background and returns once
//!   master says every listener is open, then prints one line per listener (`smtp
//!   127.0.0.1:2525`) and where the log goes (`--quiet`: nothing). A listen address another
//!   program holds is found before master starts and reported as one plain line with the
//!   `postern config set` that changes it; any other failure is master's one-line reason,
//!   exit 1. When the alias files send mail to a `postmaster` mailbox that does not exist,
//!   the mailbox user is created first ([`crate::postmaster`]).
//!   Before master starts, `postsuper -p` removes the temporary files of writers that were
//!   killed mid-write ([`crate::purge`]).
//!   `--foreground` runs master in place with logs on stderr.
//! * `stop` sends SIGTERM and returns once master — and so every child — has exited.
//! * `reload` checks the configuration first (a broken file is reported here and master
//!   is not disturbed), then sends SIGHUP.
//! * `status` asks master over its control socket and prints each service's processes,
//!   busy/idle counts, connections, restarts and throttle; exit 0 while running, 1 when
//!   stopped.
//!
//! "Running" is decided by the pid-file lock that master holds, never by a pid alone (a
//! stale pid file after a crash does not fool it).

use postern_lib::config::Config;
use postern_lib::master_control::{ControlReply, ControlRequest, PROTOCOL, VERSION};
use rustix::fs::{FlockOperation, flock};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

fn load(dir: &Path) -> Result<Config, String> {
    Config::load(dir).map_err(|e| e.to_string())
}

/// The pid of the running master, if one holds the lock.
pub fn running_master(config: &Config) -> Option<i32> {
    let path = config.pid_file();
    let f = std::fs::File::open(&path).ok()?;
    if flock(&f, FlockOperation::NonBlockingLockShared).is_ok() {
        return None;
    }
    std::fs::read_to_string(&path).ok()?.trim().parse().ok()
}

pub fn start(dir: &Path, foreground: bool, quiet: bool) -> Result<ExitCode, String> {
    let config = load(dir)?;
    if let Some(pid) = running_master(&config) {
        return Err(format!("the Postern mail system is already running (pid {pid})"));
    }
    let busy = crate::ports::problems(&config);
    if !busy.is_empty() {
        return Err(busy.join("\npostern: "));
    }
    match crate::postmaster::ensure_mailbox(&config) {
        Ok(Some(line)) if !quiet => eprintln!("postern: {line}"),
        Ok(_) => {}
        Err(e) => eprintln!("postern: warning: cannot create the postmaster mailbox: {e}"),
    }
    if postern_lib::privs::is_root() {
        match postern_lib::accounts::ensure_mail_owner(&config.main.mail_owner) {
            Ok(true) if !quiet => eprintln!(
                "postern: created locked system account {:?} (mail_owner)",
                config.main.mail_owner
            ),
            Ok(true) => {}
            Ok(false) => {}
            Err(e) => return Err(format!("mail_owner {:?}: {e}", config.main.mail_owner)),
        }
    }
    // Temporaries of writers killed mid-write go first (postsuper -p, as postfix start
    // runs postsuper): a stale `.cleanup.ID` would also keep the mirror peer's copy of ID.
    crate::purge::run(&config, quiet);
    // Two-node durability: drop what the peer adopted while this node was down, before
    // qmgr can deliver it again (crate::mirror_cmd::rejoin; nothing when the mirror is off).
    crate::mirror_cmd::rejoin(&config, &mut std::io::stderr());
    let master = Path::new(&config.main.daemon_directory).join("master");
    let mut cmd = Command::new(&master);
    cmd.arg("-c").arg(&config.dir);
    if foreground {
        cmd.arg("--foreground");
        let err = cmd.exec();
        return Err(format!("cannot execute {}: {err}", master.display()));
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot execute {}: {e}", master.display()))?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(e) = child.stderr.take() {
        let _ = e.take(64 * 1024).read_to_string(&mut err);
    }
    if out.trim() == "ready" {
        if !quiet {
            print!("{}", started(&config));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let _ = child.wait();
    let msg = err
        .lines()
        .find(|l| l.contains("fatal:"))
        .or_else(|| err.lines().last())
        .unwrap_or("master exited without saying why");
    Err(crate::ports::plain_master_error(msg))
}

/// What `postern start` prints once master is ready: the pid, one line per listener,
/// and where the log goes.
fn started(config: &Config) -> String {
    let pid = running_master(config).map_or_else(String::new, |p| format!(" (pid {p})"));
    let mut out = format!("the Postern mail system is running{pid}\n");
    for (svc, addr) in crate::ports::listeners(config) {
        out.push_str(&format!("  {:<11} {addr}\n", svc.entry.name));
    }
    let log = match config.main.maillog_file.as_str() {
        "syslog" | "" => "syslog (facility mail)",
        "-" => "standard error",
        file => file,
    };
    out.push_str(&format!("  {:<11} {log}\n", "log"));
    out
}

pub fn stop(dir: &Path) -> Result<ExitCode, String> {
    let config = load(dir)?;
    let Some(pid) = running_master(&config) else {
        return Err("the Postern mail system is not running".into());
    };
    signal(pid, nix::sys::signal::Signal::SIGTERM)?;
    let deadline = Instant::now() + config.main.shutdown_timeout.duration() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if running_master(&config).is_none() {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("master (pid {pid}) has not exited after SIGTERM"))
}

pub fn reload(dir: &Path) -> Result<ExitCode, String> {
    let config = load(dir)?;
    let Some(pid) = running_master(&config) else {
        return Err("the Postern mail system is not running".into());
    };
    signal(pid, nix::sys::signal::Signal::SIGHUP)?;
    eprintln!("postern: refreshing the Postern mail system");
    Ok(ExitCode::SUCCESS)
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) -> Result<(), String> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .map_err(|e| format!("cannot signal master (pid {pid}): {e}"))
}

pub fn status(dir: &Path) -> Result<ExitCode, String> {
    let config = load(dir)?;
    let Some(pid) = running_master(&config) else {
        eprintln!("postern: the Postern mail system is not running");
        return Ok(ExitCode::FAILURE);
    };
    let reply = ask(&config, Duration::from_secs(5))
        .map_err(|e| format!("the Postern mail system is running (pid {pid}) but does not answer: {e}"))?;
    let ControlReply::Status { pid, reloads, services } = reply;
    println!("the Postern mail system is running: pid {pid}, {reloads} reloads");
    println!(
        "{:<22} {:>5} {:>5} {:>5} {:>6} {:>8} {:>8} {:>8}  state",
        "service", "procs", "busy", "idle", "conns", "served", "restarts", "maxproc"
    );
    for s in services {
        let state = match s.throttled_for {
            Some(t) => format!("throttled ({t}s)"),
            None if s.retiring > 0 => format!("{} retiring", s.retiring),
            None => "ok".into(),
        };
        println!(
            "{:<22} {:>5} {:>5} {:>5} {:>6} {:>8} {:>8} {:>8}  {state}  {}",
            s.key,
            s.processes,
            s.busy,
            s.idle,
            s.connections,
            s.served,
            s.restarts,
            s.maxproc,
            s.listen.join(",")
        );
    }
    crate::replica_queue::print(&config);
    crate::replication::print(&config);
    crate::mirror_cmd::print_status(&config, false);
    Ok(ExitCode::SUCCESS)
}

/// Master's status reply over its control socket, each step waiting at most `timeout`.
pub(crate) fn ask(config: &Config, timeout: Duration) -> Result<ControlReply, String> {
    let sock = std::os::unix::net::UnixStream::connect(config.control_socket()).map_err(|e| e.to_string())?;
    let mut ipc =
        postern_lib::ipc::IpcStream::client(sock, PROTOCOL, VERSION, Some(timeout)).map_err(|e| e.to_string())?;
    ipc.send(&ControlRequest::Status).map_err(|e| e.to_string())?;
    ipc.recv::<ControlReply>().map_err(|e| e.to_string())
}
