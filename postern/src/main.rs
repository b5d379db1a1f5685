//! # postern — the administrator's command (Postfix's `postfix` and `postconf` in one)
//!
//! ```text
//! postern [-c CONFIG_DIR] start [--foreground]   start master; returns once every listener is open
//! postern [-c CONFIG_DIR] stop                   stop master; returns once every process has exited
//! postern [-c CONFIG_DIR] reload                 reread main.toml and master.toml (SIGHUP to master)
//! postern [-c CONFIG_DIR] status                 per service: processes, busy/idle, connections, restarts
//! postern [-c CONFIG_DIR] check [--fix]          config, directories, ownership and modes, ports
//! postern [-c CONFIG_DIR] config [KEY...]        effective settings, defaults included
//! postern [-c CONFIG_DIR] config set KEY=VALUE...  edit main.toml / master.toml in place, comments kept
//! postern [-c CONFIG_DIR] user add|passwd|del|list [NAME]   manage etc/users (password on stdin)
//! postern install [--root DIR] [--prefix /usr] [--config-dir /etc/postern] [--queue-dir /var/spool/postern]
//! postern uninstall [--root DIR] [--prefix /usr]   binaries and unit only; mail, queue, config stay
//! postern [-c CONFIG_DIR] migrate [--apply] [MAIN_CF]  main.toml equivalents of a Postfix main.cf
//! ```
//!
//! CONFIG_DIR defaults to the checkout's `etc/` when this program runs from
//! `target/<profile>/`, else `/etc/postern`. Every failure is one line on stderr naming the
//! cause, and a non-zero exit status.
#![forbid(unsafe_code)]

mod check;
mod config_cmd;
mod control;
mod files;
mod install;
mod migrate;
mod user_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: postern [-c CONFIG_DIR] {start [--foreground]|stop|reload|status|check [--fix]|config [KEY...|set KEY=VALUE...]|user {add|passwd|del} NAME|user list|install [--root DIR] [--prefix DIR] [--config-dir DIR] [--queue-dir DIR]|uninstall [--root DIR] [--prefix DIR]|migrate [--apply] [MAIN_CF]}";

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    match run() {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("postern: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut config_dir: Option<PathBuf> = None;
    let mut words: Vec<String> = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('c') | Long("config") if words.is_empty() => {
                config_dir = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?));
            }
            Short('h') | Long("help") if words.is_empty() => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            Long(opt @ ("root" | "prefix" | "config-dir" | "queue-dir")) => {
                let opt = format!("--{opt}");
                let v = parser.value().map_err(|e| e.to_string())?;
                words.push(opt);
                words.push(v.into_string().map_err(|_| "arguments must be UTF-8".to_string())?);
            }
            Long(opt @ ("foreground" | "fix" | "apply")) => words.push(format!("--{opt}")),
            Value(v) => words.push(v.into_string().map_err(|_| "arguments must be UTF-8".to_string())?),
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    let dir = config_dir.unwrap_or_else(postern_lib::config::default_config_dir);
    let (cmd, rest) = words.split_first().ok_or_else(|| USAGE.to_string())?;
    match cmd.as_str() {
        "start" => control::start(&dir, flag(rest, "--foreground")?),
        "stop" => no_args(rest).and_then(|_| control::stop(&dir)),
        "reload" => no_args(rest).and_then(|_| control::reload(&dir)),
        "status" => no_args(rest).and_then(|_| control::status(&dir)),
        "check" => check::run(&dir, flag(rest, "--fix")?),
        "install" => install::install(rest),
        "uninstall" => install::uninstall(rest),
        "config" => config_cmd::run(&dir, rest),
        "user" => user_cmd::run(&dir, rest),
        "migrate" => migrate::run(&dir, rest),
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

fn no_args(rest: &[String]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(a) => Err(format!("unexpected argument {a:?}\n{USAGE}")),
    }
}

fn flag(rest: &[String], name: &str) -> Result<bool, String> {
    match rest {
        [] => Ok(false),
        [f] if f == name => Ok(true),
        [a, ..] => Err(format!("unexpected argument {a:?}\n{USAGE}")),
    }
}
