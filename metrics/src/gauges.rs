//! Gauges read at each scrape: messages per queue (the queue directories counted, as
//! qshape and mailq read them) and the processes of the mail system.
//!
//! Processes come from master's control channel (`pid/master.ctl`, what `postern status`
//! prints: per service its processes, busy and idle ones, open connections, process
//! limit, restarts) when this daemon may connect to it — the development layout, where
//! everything runs as one user. Installed, master runs as root and its control socket is
//! root's alone; this daemon runs as `mail_owner`, so it counts master's children in
//! `/proc` by program instead (`postern_processes{command=...}`), and
//! `postern_master_status_readable` says which source was used.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use postern_lib::config::Config;
use postern_lib::master_control::{ControlReply, ControlRequest, PROTOCOL, ServiceReport, VERSION};

use crate::counters::label_text;

/// One per-service gauge: name, help, and its value in master's report.
type ServiceGauge = (&'static str, &'static str, fn(&ServiceReport) -> u64);

/// The queues counted (`corrupt/` holds files qmgr could not read).
pub const QUEUES: &[&str] = &["maildrop", "hold", "incoming", "active", "deferred", "corrupt"];

/// How long master may take to answer.
const MASTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Most processes looked at in `/proc`.
const MAX_PROCS: usize = 100_000;

fn gauge(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// `postern_queue_messages{queue=...}`.
pub fn queues(out: &mut String, queue_dir: &Path) {
    gauge(out, "postern_queue_messages", "Messages in each queue directory.");
    for q in QUEUES {
        let n = postern_lib::queue_scan::queue_files(queue_dir, q).map_or(0, |f| f.len());
        let _ = writeln!(out, "postern_queue_messages{{queue=\"{q}\"}} {n}");
    }
}

/// Master's view of its services, or `None` when its control socket is not ours to use.
fn ask_master(config: &Config) -> Option<ControlReply> {
    let sock = std::os::unix::net::UnixStream::connect(config.control_socket()).ok()?;
    let mut ipc = postern_lib::ipc::IpcStream::client(sock, PROTOCOL, VERSION, Some(MASTER_TIMEOUT)).ok()?;
    ipc.send(&ControlRequest::Status).ok()?;
    ipc.recv::<ControlReply>().ok()
}

/// The process gauges.
pub fn processes(out: &mut String, config: &Config) {
    let master_pid = std::fs::read_to_string(Path::new(&config.main.queue_directory).join("pid/master.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
    gauge(out, "postern_master_up", "1 when master runs.");
    let _ = writeln!(out, "postern_master_up {}", u8::from(master_pid.is_some()));
    let reply = ask_master(config);
    gauge(
        out,
        "postern_master_status_readable",
        "1 when the per-service gauges come from master's status, 0 when processes are counted in /proc.",
    );
    let _ = writeln!(out, "postern_master_status_readable {}", u8::from(reply.is_some()));
    match reply {
        Some(ControlReply::Status { services, .. }) => {
            let rows: [ServiceGauge; 6] = [
                ("postern_service_processes", "Processes of each service.", |s| {
                    u64::from(s.processes)
                }),
                (
                    "postern_service_busy_processes",
                    "Processes that take no more connections now.",
                    |s| u64::from(s.busy),
                ),
                (
                    "postern_service_idle_processes",
                    "Processes waiting for a connection.",
                    |s| u64::from(s.idle),
                ),
                (
                    "postern_service_connections",
                    "Client connections open in each service.",
                    |s| s.connections,
                ),
                ("postern_service_process_limit", "maxproc of each service.", |s| {
                    u64::from(s.maxproc)
                }),
                (
                    "postern_service_restarts",
                    "Abnormal process exits since master started.",
                    |s| s.restarts,
                ),
            ];
            for (name, help, value) in rows {
                gauge(out, name, help);
                for s in &services {
                    let labels = label_text(&["service"], std::slice::from_ref(&s.key));
                    let _ = writeln!(out, "{name}{labels} {}", value(s));
                }
            }
        }
        None => {
            gauge(
                out,
                "postern_processes",
                "Processes master started, by program (from /proc).",
            );
            if let Some(pid) = master_pid {
                for (command, n) in children(pid) {
                    let labels = label_text(&["command"], &[command]);
                    let _ = writeln!(out, "postern_processes{labels} {n}");
                }
            }
        }
    }
}

/// Master's children by program name (the file name of argv\[0\]), counted in `/proc`.
fn children(master: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for ent in dir.flatten().take(MAX_PROCS) {
        let name = ent.file_name();
        let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(master) {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmd.split(|&b| b == 0).next().unwrap_or_default();
        let argv0 = String::from_utf8_lossy(argv0);
        let command = argv0
            .rsplit('/')
            .next()
            .unwrap_or("")
            .chars()
            .take(40)
            .collect::<String>();
        if out.len() < 200 || out.contains_key(&command) {
            *out.entry(command).or_insert(0) += 1;
        }
    }
    out
}
