//! Processes a previous master left behind. When master dies without stopping its children
//! (SIGKILL, a crash), they notice the end of their status channel, close their copies of
//! the listening sockets at once, finish the work in hand (a message being received, a
//! delivery, an IMAP session's last command) and exit; a new master may start meanwhile.
//! It says so in the log, naming them, so that an administrator sees why more processes
//! than `maxproc` run for a while.
//!
//! In the background master leads its own session (`setsid`), so its children are the
//! processes of the session whose ID is the old master's pid (read from the pid file
//! before it is rewritten). Only processes running one of the configured service programs
//! count, in case that pid now leads some unrelated session.

use postern_lib::config::Config;
use std::collections::BTreeSet;

/// The pid the pid file names, read before this master rewrites it.
pub fn previous_master(config: &Config) -> Option<u32> {
    std::fs::read_to_string(config.pid_file()).ok()?.trim().parse().ok()
}

/// The live processes of session `old` that run a configured service program:
/// (pid, program name as the kernel shows it).
pub fn left_by(old: u32, config: &Config) -> Vec<(u32, String)> {
    // /proc/PID/comm holds at most 15 bytes of the program's file name.
    let programs: BTreeSet<String> = config
        .services
        .iter()
        .filter_map(|s| s.program.file_name())
        .map(|n| n.to_string_lossy().chars().take(15).collect())
        .collect();
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || pid == old {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp session ...`; comm may itself hold ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let session = fields.get(3).and_then(|s| s.parse::<u32>().ok());
        let comm = head.split_once('(').map(|(_, c)| c.to_string()).unwrap_or_default();
        if fields.first() != Some(&"Z") && session == Some(old) && programs.contains(&comm) {
            out.push((pid, comm));
        }
    }
    out.sort();
    out
}

/// The processes of the previous master (if the pid file named one) that still run, found
/// before this master starts its own children.
pub fn find(old: Option<u32>, config: &Config) -> Option<(u32, Vec<(u32, String)>)> {
    let old = old?;
    let left = left_by(old, config);
    (!left.is_empty()).then_some((old, left))
}

/// Logs what [`find`] found (once the log is in place).
pub fn report(found: Option<(u32, Vec<(u32, String)>)>) {
    if let Some((old, left)) = found {
        let names: Vec<String> = left.iter().map(|(p, c)| format!("{c}[{p}]")).collect();
        tracing::warn!(
            "{} processes of a previous master (pid {old}) still run; they finish their work and exit: {}",
            left.len(),
            names.join(" ")
        );
    }
}
