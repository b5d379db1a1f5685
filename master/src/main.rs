//! # master — the Postern supervisor
//!
//! `master [-c CONFIG_DIR] [--foreground]`, normally started by `postern start`.
//!
//! Master owns every listening socket named in `master.toml`, starts the daemons that
//! serve them, and passes each child its sockets (descriptors 4..) and a status channel
//! (descriptor 3, see `postern_lib::master_status`). Per service it keeps between
//! `min_procs` and `maxproc` children, starting one more when all are busy and a client is
//! waiting; children exit by themselves after `max_use` connections or `max_idle` idle.
//! A child that dies is replaced on the next request; one that dies at start-up throttles
//! its service for `service_throttle_time`. `wakeup` services get a trigger byte every
//! period.
//!
//! Signals: SIGHUP rereads both files (a bad file is refused and the running
//! configuration stays; open connections are kept — old children finish their work and
//! exit); SIGTERM/SIGINT close the listeners, let children finish within
//! `shutdown_timeout`, then kill what is left and exit.
//!
//! Security: when started as root, master drops nothing itself (it must open privileged
//! ports on reload) but starts every `unprivileged` service as `mail_owner` with no
//! capabilities; the queue directories are owned by `mail_owner`. Master first closes
//! every descriptor it inherited beyond standard input, output and error, and a child gets
//! only descriptors 0–2, its status channel and its listeners (`spawn`). A pid-file lock in
//! `queue_directory/pid/` keeps two masters off one queue. Settings read: every
//! service field of master.toml, `queue_directory`, `mail_owner`, `maillog_file`,
//! `daemon_directory`, `service_throttle_time`, `shutdown_timeout`, and the defaults of
//! the service limits.
//!
//! Start-up handshake: in the background (the default) master detaches into its own
//! session, and once every listener is open writes `ready` on its standard output and
//! points standard output and error at the log. `postern start` waits for that line; on a
//! failure master writes one `fatal:` line on standard error and exits 1.
//!
//! After a master died without stopping its children (SIGKILL), a new one may start at
//! once: the old children closed their listening sockets when their status channel ended
//! and only finish the work in hand; the new master logs which of them still run
//! (`orphans`).
#![deny(unsafe_code)]

mod control;
mod listeners;
mod orphans;
mod services;
mod spawn;
mod startup;
mod supervisor;

use postern_lib::config::default_config_dir;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything is opened: nothing the starting shell left open reaches a child.
    let stray = spawn::start_clean();
    postern_lib::version::exit_if_asked();
    let mut dir: Option<PathBuf> = None;
    let mut foreground = false;
    let mut parser = lexopt::Parser::from_env();
    loop {
        match parser.next() {
            Ok(None) => break,
            Ok(Some(lexopt::Arg::Short('c'))) => match parser.value() {
                Ok(v) => dir = Some(PathBuf::from(v)),
                Err(e) => return fail(&e.to_string()),
            },
            Ok(Some(lexopt::Arg::Long("foreground"))) => foreground = true,
            Ok(Some(other)) => {
                return fail(&format!(
                    "{}; usage: master [-c CONFIG_DIR] [--foreground]",
                    other.unexpected()
                ));
            }
            Err(e) => return fail(&e.to_string()),
        }
    }
    let dir = dir.unwrap_or_else(default_config_dir);
    match run(&dir, foreground, stray) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    tracing::error!("fatal: {msg}");
    eprintln!("postern/master: fatal: {msg}");
    ExitCode::FAILURE
}

fn run(dir: &std::path::Path, foreground: bool, stray: usize) -> Result<(), String> {
    let (config, snapshot) = startup::load_checked(dir)?;
    if !foreground {
        // Our own session: a closing terminal or its signals do not reach the mail system.
        let _ = nix::unistd::setsid();
    }
    let queue_owner = postern_lib::accounts::queue_owner(&config.main.mail_owner)
        .map_err(|e| format!("mail_owner: {e} (postern start creates it as a locked system account)"))?;
    let owner = queue_owner.map(|o| (o.uid.as_raw(), o.gid.as_raw()));
    postern_lib::queue_dirs::ensure(std::path::Path::new(&config.main.queue_directory), queue_owner)
        .map_err(|e| format!("queue directory: {e}"))?;
    if !config.main.virtual_mailbox_base.is_empty() {
        postern_lib::queue_dirs::ensure_mailbox_base(
            std::path::Path::new(&config.main.virtual_mailbox_base),
            queue_owner,
        )
        .map_err(|e| format!("virtual_mailbox_base: {e}"))?;
    }
    let previous = orphans::previous_master(&config);
    let _pid_lock = startup::lock_pid_file(&config)?;
    startup::write_snapshot(&config, &snapshot)?;
    let log = if foreground { None } else { open_log(&config)? };
    postern_lib::log::init(
        "postern/master",
        if foreground { "-" } else { &config.main.maillog_file },
    );
    let orphans = orphans::find(previous, &config);
    let services = startup::open_services(&config, owner)?;
    let control = startup::open_control(&config)?;
    let keys: Vec<String> = services.keys().cloned().collect();
    let mut master = supervisor::Master::new(config, owner, foreground, services, Some(control))
        .map_err(|e| format!("event loop: {e}"))?;
    if !foreground {
        detach_stdio(log.as_ref())?;
    }
    tracing::info!(
        "daemon started -- version {}, services: {}",
        env!("CARGO_PKG_VERSION"),
        keys.join(" ")
    );
    orphans::report(orphans);
    if stray > 0 {
        tracing::info!("closed {stray} descriptors inherited from the process that started master");
    }
    master.run().map_err(|e| format!("event loop: {e}"))
}

/// Opens `maillog_file` for appending when it names a file.
fn open_log(config: &postern_lib::config::Config) -> Result<Option<std::fs::File>, String> {
    let path = &config.main.maillog_file;
    if matches!(path.as_str(), "syslog" | "-" | "") {
        return Ok(None);
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("maillog_file {path}: {e}"))?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map(Some)
        .map_err(|e| format!("maillog_file {path}: {e}"))
}

/// Tells `postern start` we are ready, then points stdout at /dev/null and stderr at the
/// log (or /dev/null with syslog), so the starter sees end-of-file.
fn detach_stdio(log: Option<&std::fs::File>) -> Result<(), String> {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"ready\n").and_then(|_| out.flush());
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    rustix::stdio::dup2_stdout(&null).map_err(|e| format!("dup2: {e}"))?;
    match log {
        Some(f) => rustix::stdio::dup2_stderr(f),
        None => rustix::stdio::dup2_stderr(&null),
    }
    .map_err(|e| format!("dup2: {e}"))
}
