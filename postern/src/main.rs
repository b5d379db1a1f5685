//! # postern — the administrator's command (Postfix's `postfix` and `postconf` in one)
//!
//! ```text
//! postern [-c CONFIG_DIR] start [--foreground] [--quiet]   start master; returns once every listener is open
//! postern [-c CONFIG_DIR] stop                   stop master; returns once every process has exited
//! postern [-c CONFIG_DIR] reload                 reread main.toml and master.toml (SIGHUP to master)
//! postern [-c CONFIG_DIR] status                 per service: processes, busy/idle, connections, restarts;
//!                                                on a hub, the copies each replica relay (or director pair) is owed
//! postern [-c CONFIG_DIR] status --health [--timeout S] [--stuck-after S]  exit 0 when accepting and delivering
//! postern [-c CONFIG_DIR] check [--fix]          config, directories, ownership and modes, ports
//! postern [-c CONFIG_DIR] config [KEY...]        effective settings, defaults included
//! postern [-c CONFIG_DIR] config set KEY=VALUE...  edit main.toml / master.toml in place, comments kept
//! postern [-c CONFIG_DIR] config --doc [KEY...]  what each setting is: doc, type, default, bounds, value
//! postern [-c CONFIG_DIR] user add|passwd|del|list [NAME]   manage etc/users (password on stdin)
//! postern install [--root DIR] [--prefix /usr] [--config-dir /etc/postern] [--queue-dir /var/spool/postern]
//! postern uninstall [--root DIR] [--prefix /usr]   binaries and unit only; mail, queue, config stay
//! postern [-c CONFIG_DIR] migrate [--apply] [MAIN_CF]  main.toml equivalents of a Postfix main.cf
//! postern help [COMMAND] | --help | --version
//! ```
//!
//! CONFIG_DIR defaults to the checkout's `etc/` when this program runs from
//! `target/<profile>/`, else `/etc/postern`. Every failure is one line on stderr naming the
//! cause (and the fix where there is one), and a non-zero exit status.
//!
//! Options before the command (`-c`, `--help`) are the command's; everything after the
//! command word goes to that command as it was written (`postern COMMAND --help` prints its usage).
#![forbid(unsafe_code)]

mod check;
mod config_cmd;
mod control;
mod files;
mod health;
mod help;
mod install;
mod log_cmd;
mod migrate;
mod mirror_cmd;
mod ports;
mod postmaster;
mod purge;
mod replica_queue;
mod replication;
mod user_cmd;
mod user_move;

use std::path::PathBuf;
use std::process::ExitCode;

/// The usage line of every usage error.
const USAGE: &str = "usage: postern [-c CONFIG_DIR] COMMAND [ARGS] (postern --help lists the commands)";

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
    let mut cmd: Option<String> = None;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('c') | Long("config") => {
                config_dir = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?));
            }
            Short('h') | Long("help") => {
                print!("{}", help::overview());
                return Ok(ExitCode::SUCCESS);
            }
            Value(v) => {
                cmd = Some(utf8(v)?);
                break;
            }
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    let Some(cmd) = cmd else {
        return Err(USAGE.into());
    };
    let rest: Vec<String> = parser
        .raw_args()
        .map_err(|e| e.to_string())?
        .map(utf8)
        .collect::<Result<_, _>>()?;
    if cmd == "help" {
        return match rest.as_slice() {
            [] => {
                print!("{}", help::overview());
                Ok(ExitCode::SUCCESS)
            }
            [name] => help::command(name)
                .map(|h| {
                    print!("{h}");
                    ExitCode::SUCCESS
                })
                .ok_or_else(|| format!("unknown command {name:?} {}", help::HINT)),
            [_, extra, ..] => Err(format!("unexpected argument {extra:?}\n{USAGE}")),
        };
    }
    if rest.iter().any(|a| a == "--help" || a == "-h")
        && let Some(h) = help::command(&cmd)
    {
        print!("{h}");
        return Ok(ExitCode::SUCCESS);
    }
    let dir = config_dir.unwrap_or_else(postern_lib::config::default_config_dir);
    match cmd.as_str() {
        "start" => {
            let foreground = rest.iter().any(|a| a == "--foreground");
            let quiet = rest.iter().any(|a| a == "--quiet" || a == "-q");
            match rest
                .iter()
                .find(|a| !matches!(a.as_str(), "--foreground" | "--quiet" | "-q"))
            {
                Some(a) => Err(format!("unexpected argument {a:?}\n{}", usage_of("start"))),
                None => control::start(&dir, foreground, quiet),
            }
        }
        "stop" => no_args("stop", &rest).and_then(|_| control::stop(&dir)),
        "reload" => no_args("reload", &rest).and_then(|_| control::reload(&dir)),
        "status" => match rest.split_first() {
            Some((h, more)) if h == "--health" => health::parse(more)
                .map_err(|e| format!("{e}\n{}", usage_of("status")))
                .and_then(|o| health::run(&dir, o)),
            _ => no_args("status", &rest).and_then(|_| control::status(&dir)),
        },
        "check" => check::run(&dir, flag("check", &rest, "--fix")?),
        "install" => install::install(&rest),
        "uninstall" => install::uninstall(&rest),
        "config" => config_cmd::run(&dir, &rest),
        "user" => user_cmd::run(&dir, &rest),
        "migrate" => migrate::run(&dir, &rest),
        "mirror" => mirror_cmd::run(&dir, &rest),
        "log" => log_cmd::run(&dir, &rest),
        other => Err(format!("unknown command {other:?} {}", help::HINT)),
    }
}

fn utf8(v: std::ffi::OsString) -> Result<String, String> {
    v.into_string().map_err(|_| "arguments must be UTF-8".to_string())
}

/// The first line of `postern help CMD`.
fn usage_of(cmd: &str) -> String {
    help::command(cmd)
        .and_then(|h| h.lines().next().map(str::to_string))
        .unwrap_or_else(|| USAGE.to_string())
}

fn no_args(cmd: &str, rest: &[String]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(a) => Err(format!("unexpected argument {a:?}\n{}", usage_of(cmd))),
    }
}

fn flag(cmd: &str, rest: &[String], name: &str) -> Result<bool, String> {
    match rest {
        [] => Ok(false),
        [f] if f == name => Ok(true),
        [a, ..] => Err(format!("unexpected argument {a:?}\n{}", usage_of(cmd))),
    }
}
