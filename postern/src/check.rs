//! `postern check [--fix]`: is this installation ready to run? Like `postfix check`.
//!
//! Loads the configuration — main.toml and each service's `options`, every setting through
//! the settings registry (type, bounds, the allowed words of `smtp_tls_security_level` and
//! the like), so a value any daemon would refuse is caught here; an error there is reported
//! and ends the check — then looks at:
//! - `mail_owner`, when running as root: the account must exist;
//! - the queue directory layout, owners and modes ([`postern_lib::queue_dirs`]; owners only
//!   when running as root);
//! - `virtual_mailbox_base`: it should exist;
//! - each service's program: it must exist, be a regular file and be executable;
//! - each smtpd service's settings as smtpd itself loads them (restriction lists and their
//!   access tables, the open-relay guard, alias files, TLS files), so a list smtpd would
//!   refuse at start is reported before `postern start`;
//! - the tables trivial-rewrite and cleanup read (`transport_maps`, `virtual_alias_maps`,
//!   `rewrite_rules`, `header_checks`, `body_checks`): each must load, as `postmap` would
//!   check them (Postern needs no compile step: the daemons read the text files);
//! - each inet listen address: it must be free to bind — unless master is running (its
//!   pid file `QUEUE/pid/master.pid` is locked), in which case master holds them;
//! - the users file: mode 0600 or stricter, never readable by group or others;
//! - the config directory, main.toml and master.toml: not writable by group or others
//!   (master runs the commands master.toml names).
//!
//! - where mail to postmaster goes ([`crate::postmaster`]): it must reach a mailbox.
//! - the queue mirror (issue 16): with `queue_mirror_peer` set, a `mirror` unix service
//!   must serve `private/mirror` (or every message would be deferred or accepted degraded)
//!   and `queue_mirror_secret_file` must hold a secret of at least 16 bytes, readable by
//!   nobody but its owner; that service should keep one long-lived process (`min_procs =
//!   1`, a `wakeup`, `maxproc = 1`, a large `max_use`, `max_idle` longer than the wakeup),
//!   or its checks with the peer do not run (a warning per missing setting).
//!
//! DIAGNOSTICS: one line per finding on standard error. `postern: error: ...` is what would
//! stop the mail system, lose mail or expose it (a port another program holds, a missing
//! program, a table or restriction list a daemon refuses, an unreadable queue, a users file
//! others can read, a configuration others can write); any error makes the
//! exit status 1. `postern: warning: ...` is advice (modes, owners, postmaster's mail
//! having nowhere to go) and leaves it 0. What `postern start` creates by itself (the
//! queue, virtual_mailbox_base, mail_owner, the postmaster mailbox) is no problem before
//! the first start: one `postern: ...` note says so. Silence when all is well. With `--fix`,
//! what can be repaired is (mail_owner created, queue directories created, chowned and
//! chmodded, virtual_mailbox_base created, file modes tightened, the postmaster mailbox
//! created), each repair reported as `postern: fixed: ...`; only what remains is reported.
//! Nothing is ever deleted.

use postern_lib::accounts;
use postern_lib::config::{Config, MAIN_FILE, MASTER_FILE};
use postern_lib::queue_dirs::{self, Problem, ProblemKind, QueueOwner};
use postern_lib::users::{self, Users};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;

/// What the check found and did.
#[derive(Default)]
struct Report {
    errors: Vec<String>,
    warnings: Vec<String>,
    fixed: Vec<String>,
    notes: Vec<String>,
}

impl Report {
    /// One problem, on one line (a regex error spans several; they are joined).
    fn warn(&mut self, msg: impl Into<String>) {
        let msg: String = msg.into();
        let one_line: Vec<&str> = msg.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        self.warnings.push(one_line.join(" "));
    }

    /// One error, on one line.
    fn error(&mut self, msg: impl Into<String>) {
        let msg: String = msg.into();
        let one_line: Vec<&str> = msg.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        self.errors.push(one_line.join(" "));
    }
}

/// Runs `postern check`, repairing what it can when `fix`.
pub fn run(dir: &Path, fix: bool) -> Result<ExitCode, String> {
    let cfg = Config::load(dir).map_err(|e| e.to_string())?;
    let mut r = Report::default();
    let owner = mail_owner(&cfg, fix, &mut r);
    queue(&cfg, owner, fix, &mut r);
    mailbox_base(&cfg, owner, fix, &mut r);
    programs(&cfg, &mut r);
    smtpd_settings(&cfg, &mut r);
    tables(&cfg, &mut r);
    listeners(&cfg, &mut r);
    users_file(dir, fix, &mut r);
    config_files(dir, fix, &mut r);
    postmaster(&cfg, fix, &mut r);
    queue_mirror(&cfg, &mut r);

    let mut err = std::io::stderr().lock();
    for line in &r.fixed {
        let _ = writeln!(err, "postern: fixed: {line}");
    }
    for line in &r.notes {
        let _ = writeln!(err, "postern: {line}");
    }
    for line in &r.errors {
        let _ = writeln!(err, "postern: error: {line}");
    }
    for line in &r.warnings {
        let _ = writeln!(err, "postern: warning: {line}");
    }
    Ok(if r.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// As root: mail_owner must exist (created with --fix). Returns the queue's owners.
fn mail_owner(cfg: &Config, fix: bool, r: &mut Report) -> Option<QueueOwner> {
    if !accounts::running_as_root() {
        return None;
    }
    let name = &cfg.main.mail_owner;
    match accounts::mail_owner_ids(name) {
        Ok(Some(_)) => {}
        Ok(None) if fix => match accounts::ensure_mail_owner(name) {
            Ok(_) => r.fixed.push(format!("created the system account {name} (mail_owner)")),
            Err(e) => r.warn(e.to_string()),
        },
        Ok(None) => r.notes.push(format!(
            "mail_owner {name} does not exist yet; postern start (or postern check --fix) creates it"
        )),
        Err(e) => r.warn(e.to_string()),
    }
    match accounts::queue_owner(name) {
        Ok(o) => o,
        Err(accounts::AccountError::NoSuchUser(_)) => None,
        Err(e) => {
            r.warn(e.to_string());
            None
        }
    }
}

fn queue(cfg: &Config, owner: Option<QueueOwner>, fix: bool, r: &mut Report) {
    let q = Path::new(&cfg.main.queue_directory);
    let before = queue_dirs::check(q, owner);
    if !fix || before.is_empty() {
        for p in &before {
            match p.kind {
                ProblemKind::Missing if p.path == q => r.notes.push(format!(
                    "queue directory {} does not exist yet; postern start (or postern check --fix) creates it",
                    q.display()
                )),
                // Subdirectories of a queue that is not there yet: the note above says it.
                ProblemKind::Missing if !q.exists() => {}
                ProblemKind::Missing | ProblemKind::Mode { .. } | ProblemKind::Owner { .. } => {
                    r.warn(format!("{p} (postern check --fix repairs it)"))
                }
                ProblemKind::NotADirectory | ProblemKind::Unreadable(_) => r.error(p.to_string()),
            }
        }
        return;
    }
    if let Err(e) = queue_dirs::ensure(q, owner) {
        r.warn(format!("cannot repair the queue: {e}"));
    }
    let after = queue_dirs::check(q, owner);
    r.fixed
        .extend(before.iter().filter(|p| !after.contains(p)).map(repaired));
    for p in &after {
        r.error(p.to_string());
    }
}

/// How a repaired problem is reported.
fn repaired(p: &Problem) -> String {
    let path = p.path.display();
    match &p.kind {
        ProblemKind::Missing if p.path.file_name().is_some_and(|n| !is_subdir(n)) => {
            format!("created queue directory {path} and its subdirectories")
        }
        ProblemKind::Missing => format!("created {path}"),
        ProblemKind::Mode { have, want } if p.path.file_name().is_some_and(|n| !is_subdir(n)) => {
            format!("{path}: mode {have:04o} changed to {:04o}", have & !want)
        }
        ProblemKind::Mode { have, want } => format!("{path}: mode {have:04o} changed to {want:04o}"),
        ProblemKind::Owner { want, .. } => format!("{path}: owner changed to {}:{}", want.0, want.1),
        ProblemKind::NotADirectory | ProblemKind::Unreadable(_) => p.to_string(),
    }
}

fn is_subdir(name: &std::ffi::OsStr) -> bool {
    queue_dirs::QUEUE_DIRS.iter().any(|(n, _, _)| name == *n)
}

fn mailbox_base(cfg: &Config, owner: Option<QueueOwner>, fix: bool, r: &mut Report) {
    let base = Path::new(&cfg.main.virtual_mailbox_base);
    if cfg.main.virtual_mailbox_base.is_empty() || base.is_dir() {
        return;
    }
    if base.exists() {
        r.warn(format!("virtual_mailbox_base {} is not a directory", base.display()));
        return;
    }
    if !fix {
        r.notes.push(format!(
            "virtual_mailbox_base {} does not exist yet; postern start (or postern check --fix) creates it",
            base.display()
        ));
        return;
    }
    match queue_dirs::ensure_mailbox_base(base, owner) {
        Ok(_) => r.fixed.push(format!("created virtual_mailbox_base {}", base.display())),
        Err(e) => r.warn(format!("cannot create virtual_mailbox_base: {e}")),
    }
}

fn programs(cfg: &Config, r: &mut Report) {
    for svc in &cfg.services {
        let p = &svc.program;
        let problem = match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist".to_string()),
            Err(e) => Some(format!("cannot be examined: {e}")),
            Ok(m) if !m.is_file() => Some("is not a regular file".into()),
            Ok(_) => nix::unistd::access(p, nix::unistd::AccessFlags::X_OK)
                .err()
                .map(|_| "is not executable".into()),
        };
        if let Some(why) = problem {
            r.error(format!("service {}: program {} {why}", svc.key(), p.display()));
        }
    }
}

fn smtpd_settings(cfg: &Config, r: &mut Report) {
    for svc in cfg.services.iter().filter(|s| s.entry.command == "smtpd") {
        let loaded = cfg
            .main_for(&svc.key())
            .map_err(|e| e.to_string())
            .and_then(|main| smtpd_engine::settings::Settings::load(&main, &cfg.dir, &svc.entry.name));
        if let Err(e) = loaded {
            r.error(format!("service {}: smtpd would not start: {e}", svc.key()));
        }
    }
}

fn tables(cfg: &Config, r: &mut Report) {
    use postern_lib::config::table_file;
    let m = &cfg.main;
    for (name, list) in [
        ("transport_maps", &m.transport_maps),
        ("virtual_alias_maps", &m.virtual_alias_maps),
        ("rewrite_rules", &m.rewrite_rules),
    ] {
        let paths: Vec<_> = list.iter().filter_map(|s| table_file(&cfg.dir, s)).collect();
        if let Err(e) = postern_lib::transport_map::TableSet::load(&paths) {
            r.error(format!("{name}: {e}"));
        }
    }
    for (name, setting) in [("header_checks", &m.header_checks), ("body_checks", &m.body_checks)] {
        if let Some(path) = table_file(&cfg.dir, setting)
            && let Err(e) = postern_checks::Table::load(&path)
        {
            r.error(format!("{name}: {e}"));
        }
    }
}

fn listeners(cfg: &Config, r: &mut Report) {
    let pid_file = cfg.pid_file();
    if master_running(&pid_file) {
        r.notes.push(format!(
            "master is running ({} is locked); listen addresses not checked",
            pid_file.display()
        ));
        return;
    }
    for problem in crate::ports::problems(cfg) {
        r.error(problem);
    }
}

/// Whether a master holds the lock on its pid file. The probe is a shared lock, like
/// `postern status`'s, so that two probes never mistake each other for a master.
fn master_running(pid_file: &Path) -> bool {
    let Ok(f) = std::fs::File::open(pid_file) else {
        return false;
    };
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => false,
        Err(e) => e == rustix::io::Errno::WOULDBLOCK,
    }
}

fn users_file(dir: &Path, fix: bool, r: &mut Report) {
    let path = users::path(dir);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return r.warn(format!("cannot examine {}: {e}", path.display())),
    };
    if meta.file_type().is_symlink() || !meta.is_file() {
        return r.warn(format!("{} is not a regular file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o7177 != 0 {
        let want = mode & 0o600;
        let fixed = fix && std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want)).is_ok();
        if fixed {
            r.fixed
                .push(format!("{}: mode {mode:04o} changed to {want:04o}", path.display()));
        } else {
            r.error(format!(
                "{} has mode {mode:04o}: it holds password hashes and must be 0600 or stricter",
                path.display()
            ));
        }
    }
    if let Err(e) = Users::load(&path) {
        r.error(e.to_string());
    }
}

fn config_files(dir: &Path, fix: bool, r: &mut Report) {
    for path in [dir.to_path_buf(), dir.join(MAIN_FILE), dir.join(MASTER_FILE)] {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        let mode = meta.permissions().mode() & 0o7777;
        if accounts::running_as_root() && meta.uid() != 0 {
            r.error(format!(
                "{} is owned by uid {}: master runs as root, so it must belong to root",
                path.display(),
                meta.uid()
            ));
        }
        if mode & 0o022 == 0 {
            continue;
        }
        let want = mode & !0o022;
        if fix && std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want)).is_ok() {
            r.fixed
                .push(format!("{}: mode {mode:04o} changed to {want:04o}", path.display()));
        } else {
            r.error(format!(
                "{} has mode {mode:04o}: it must not be writable by group or others",
                path.display()
            ));
        }
    }
}

/// Postmaster's mail must reach a mailbox; `--fix` creates the `postmaster` user the alias
/// files name (as `postern start` does).
fn postmaster(cfg: &Config, fix: bool, r: &mut Report) {
    use crate::postmaster;
    if fix {
        match postmaster::ensure_mailbox(cfg) {
            Ok(Some(line)) => r.fixed.push(line),
            Ok(None) => {}
            Err(e) => r.warn(format!("cannot create the postmaster mailbox: {e}")),
        }
    }
    match postmaster::route(cfg) {
        Ok(route) => {
            if let Some(p) = postmaster::problem(cfg, &route) {
                r.warn(p);
            } else if route.designated && route.missing.iter().any(|n| n == "postmaster") {
                r.notes.push(
                    "the mailbox user postmaster (named in the alias files) does not exist yet; postern start creates it"
                        .into(),
                );
            }
        }
        Err(e) => r.error(format!("alias_maps: {e}")),
    }
}

/// The queue mirror's service and secret (issue 16).
fn queue_mirror(cfg: &Config, r: &mut Report) {
    let main = &cfg.main;
    let is_mirror = |s: &&postern_lib::config::Service| s.program.file_name().is_some_and(|n| n == "mirror");
    let served = cfg.services.iter().filter(is_mirror).any(|s| {
        s.entry.kind == postern_lib::config::ServiceType::Unix && s.listen.iter().any(|l| l.ends_with("private/mirror"))
    });
    let secret = main.queue_mirror_secret_file.path();
    if !main.queue_mirror_peer.is_empty() && !served {
        r.error(format!(
            "queue_mirror_peer is set but {MASTER_FILE} has no mirror unix service on private/mirror: \
             cleanup would answer every message as if the peer were unreachable ({})",
            main.queue_mirror_unreachable
        ));
    }
    if !main.queue_mirror_peer.is_empty()
        && let Some(svc) = cfg.services.iter().filter(is_mirror).find(|s| {
            s.entry.kind == postern_lib::config::ServiceType::Unix
                && s.listen.iter().any(|l| l.ends_with("private/mirror"))
        })
    {
        for why in mirror_keep_alive(svc) {
            r.warn(format!("{MASTER_FILE}: service {}: {why}", svc.key()));
        }
    }
    if main.queue_mirror_peer.is_empty() && !cfg.services.iter().any(|s| is_mirror(&s)) {
        return;
    }
    if main.queue_mirror_secret_file.as_str().is_empty() {
        r.warn("the mirror service refuses every peer: queue_mirror_secret_file is not set");
        return;
    }
    match std::fs::read(secret) {
        Ok(bytes) => {
            if let Err(e) = mirror::wire::parse_secret(&bytes) {
                r.error(format!("queue_mirror_secret_file {}: {e}", secret.display()));
            }
            if let Ok(m) = std::fs::metadata(secret)
                && m.permissions().mode() & 0o077 != 0
            {
                r.error(format!(
                    "queue_mirror_secret_file {} is readable by others (mode {:o}): chmod 600",
                    secret.display(),
                    m.permissions().mode() & 0o777
                ));
            }
        }
        Err(e) => r.error(format!("queue_mirror_secret_file {}: {e}", secret.display())),
    }
}

/// Connections a mirror unix process should serve before it is replaced: each message
/// cleanup copies is one.
const MIRROR_MIN_USE: u32 = 100_000;

/// What keeps the mirror unix service's process from doing its watch (issue 16): it checks
/// with the peer every `queue_mirror_check_interval` (orphan copies are dropped after two
/// checks in a row, in one process), notices a freeze of this node by the gap between two
/// of its ticks, and is started by its first connection. So one process must always run
/// (`min_procs`), master's `wakeup` must start it when no mail flows, and it must not be
/// replaced every few connections (`max_use`) or idle seconds (`max_idle`).
fn mirror_keep_alive(svc: &postern_lib::config::Service) -> Vec<String> {
    let mut out = Vec::new();
    let e = &svc.entry;
    if e.min_procs == 0 {
        out.push(
            "min_procs = 0: no mirror process runs while no mail flows, so nothing checks with the peer \
             (orphan copies stay, a freeze of this node goes unnoticed); set min_procs = 1"
                .to_string(),
        );
    }
    if e.wakeup.0 == 0 {
        out.push(
            "no wakeup: the mirror process starts its checks with the peer only at its first connection, \
             which may never come while no mail flows; set wakeup = \"60s\""
                .to_string(),
        );
    }
    if svc.maxproc != 1 {
        out.push(format!(
            "maxproc = {}: each mirror process checks with the peer on its own and keeps its own view \
             of it; set maxproc = 1",
            svc.maxproc
        ));
    }
    if svc.max_use < MIRROR_MIN_USE {
        out.push(format!(
            "max_use = {}: the mirror process is replaced every {} connections (each message is one) and \
             its checks start over; set max_use = 1000000",
            svc.max_use, svc.max_use
        ));
    }
    if e.wakeup.0 > 0 && svc.max_idle.0 <= e.wakeup.0 {
        out.push(format!(
            "max_idle ({}s) is not longer than wakeup ({}s): the mirror process exits between two \
             wakeups and its checks start over; set max_idle = \"1000d\"",
            svc.max_idle.0, e.wakeup.0
        ));
    }
    out
}
