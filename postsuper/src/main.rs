//! # postsuper — queue maintenance for the administrator
//!
//! ```text
//! postsuper [-c CONFIG_DIR] [-v] -d ID|ALL|- ... [queue ...]   delete
//! postsuper [-c CONFIG_DIR] [-v] -h ID|ALL|- ... [queue ...]   put on hold
//! postsuper [-c CONFIG_DIR] [-v] -H ID|ALL|- ... [queue ...]   release from hold
//! postsuper [-c CONFIG_DIR] [-v] -r ID|ALL|- ... [queue ...]   requeue through cleanup
//! postsuper [-c CONFIG_DIR] [-v] -p                            purge abandoned temporaries
//!     [--from ADDR|DOMAIN] [--to ADDR|DOMAIN] [--domain DOMAIN] [--reason TEXT]
//!     [--older AGE] [--younger AGE] [--queue QUEUE]... [--dry-run]
//! ```
//!
//! As Postfix's postsuper: each of `-d`, `-h`, `-H`, `-r` may be given several times and
//! they are done in the order given; `ALL` means every message, `-` reads queue IDs from
//! standard input, one per line. Queue names after the options (`hold`, `incoming`,
//! `active`, `deferred`, and `maildrop` for `-d`) restrict every operation to those
//! queues; the defaults are hold, incoming, active, deferred for `-d` and `-r`;
//! incoming, active, deferred for `-h`; hold for `-H`.
//!
//! - `-d` removes the queue file and its defer, bounce and trace logs.
//! - `-h` moves the message into `hold/`, where qmgr never looks.
//! - `-H` moves it from `hold/` to `deferred/` with its retry time set to now, and wakes
//!   qmgr, which takes it at its next deferred-queue scan (at most `queue_run_delay`).
//! - `-r` hands the message to cleanup again ([`requeue`]): a new queue file with a new ID,
//!   the same content, and only the recipients still pending; the old file is removed only
//!   once cleanup answered that the copy is queued.
//! - `-p` removes the temporary files that writers killed mid-write left behind ([`purge`]:
//!   only those whose writer is gone, never a message), before any other operation;
//!   `postern start` runs it. As Postfix's postsuper, a command line with no operation
//!   means `-p`.
//!
//! The selection options ([`postern_lib::queue_select`]) narrow every operation to the
//! messages they match: `postsuper -d ALL --reason 'Connection refused' --older 2d`
//! deletes the deferred mail that has waited two days for a dead host, `postsuper -h ALL
//! --to spammer.example` holds a domain's mail. `--queue NAME` is the same as naming the
//! queue after the options. `--dry-run` changes nothing (no permission needed beyond
//! reading the queue, nothing logged): it prints on standard output
//! `ID: would be removed (deferred, from=<...>, to=<...>)` per selected message, then
//! `postsuper: dry run: N messages would be deleted; nothing was changed` on standard error.
//!
//! Messages in `active/` are touched only when no delivery agent works on them (see
//! [`ops`]); otherwise postsuper says `ID: is being delivered, try again later` and leaves
//! the message alone.
//!
//! Output, on standard error and, per message, in the maillog (as Postfix does):
//! `postsuper: ID: removed` (`placed on hold`, `released from hold`, `requeued`), then
//! `postsuper: Deleted: N messages` (`Placed on hold`, `Released from hold`, `Requeued`)
//! for each operation that did something.
//!
//! ## Security stance
//!
//! postsuper changes the queue directly, so it runs only for root, for `mail_owner`, or
//! (the development layout) for the user who owns the queue directories; anyone else gets
//! `postsuper: fatal: use of this command is reserved for the superuser and mail_owner`
//! and exit status 1. Queue IDs are parsed with [`postern_lib::queue_id::QueueId`], so no
//! argument can name a path; files are opened with [`postern_lib::safe_open`] (no
//! symlinks, no hard links) and moved with a durable rename.
//!
//! ## Settings read
//!
//! `queue_directory`, `mail_owner`, `maillog_file`, `ipc_timeout` (the wait for cleanup).
//!
//! ## Exit status
//!
//! 0 done (messages that were already gone are not an error); 1 bad usage, bad
//! configuration, no rights, or a message that could not be handled.
#![forbid(unsafe_code)]

mod find;
mod maillog;
mod ops;
mod purge;
mod requeue;

use std::io::BufRead;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use postern_lib::config::Config;
use postern_lib::proto::trigger;
use postern_lib::queue_id::QueueId;
use postern_lib::queue_select::{Selection, describe};

use maillog::MailLog;
use ops::Outcome;

/// Longest line read from standard input for `-`.
const MAX_STDIN_LINE: u64 = 256;
/// Most IDs read from standard input.
const MAX_STDIN_IDS: usize = 1_000_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Delete,
    Hold,
    Release,
    Requeue,
}

impl Op {
    fn default_queues(self) -> &'static [&'static str] {
        match self {
            Op::Delete | Op::Requeue => &["hold", "incoming", "active", "deferred"],
            Op::Hold => &["incoming", "active", "deferred"],
            Op::Release => &["hold"],
        }
    }

    fn allowed(self, queue: &str) -> bool {
        self.default_queues().contains(&queue) || (self == Op::Delete && queue == "maildrop")
    }

    /// What the maillog says once done.
    fn done(self) -> &'static str {
        match self {
            Op::Delete => "removed",
            Op::Hold => "placed on hold",
            Op::Release => "released from hold",
            Op::Requeue => "requeued",
        }
    }

    /// The verb of a dry run's summary.
    fn verb(self) -> &'static str {
        match self {
            Op::Delete => "deleted",
            Op::Hold => "placed on hold",
            Op::Release => "released from hold",
            Op::Requeue => "requeued",
        }
    }

    fn summary(self) -> &'static str {
        match self {
            Op::Delete => "Deleted",
            Op::Hold => "Placed on hold",
            Op::Release => "Released from hold",
            Op::Requeue => "Requeued",
        }
    }
}

/// What one `-X ARG` names.
enum Target {
    All,
    Stdin,
    Id(QueueId),
}

const QUEUE_NAMES: &[&str] = &["maildrop", "hold", "incoming", "active", "deferred"];

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(msg) => {
            eprintln!("postsuper: fatal: {msg}");
            ExitCode::from(1)
        }
    }
}

fn usage() -> String {
    "usage: postsuper [-c CONFIG_DIR] [-v] [-p] [-d ID|ALL|-] [-h ID|ALL|-] [-H ID|ALL|-] [-r ID|ALL|-] [queue ...]\n\
     selection: [--from ADDR|DOMAIN] [--to ADDR|DOMAIN] [--domain DOMAIN] [--reason TEXT] [--older AGE] [--younger AGE] [--queue QUEUE]... [--dry-run]"
        .into()
}

fn run() -> Result<bool, String> {
    let mut dir: Option<PathBuf> = std::env::var_os("POSTERN_CONFIG").map(PathBuf::from);
    let mut work: Vec<(Op, Target)> = Vec::new();
    let mut queues: Vec<String> = Vec::new();
    let mut selection = Selection::default();
    let mut dry_run = false;
    let mut purge = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if Selection::takes(&a) {
            let v = args.next().ok_or_else(usage)?;
            selection.set(&a, &v)?;
            continue;
        }
        let op = match a.as_str() {
            "--dry-run" => {
                dry_run = true;
                continue;
            }
            "--help" => {
                println!("{}", usage());
                return Ok(true);
            }
            "-c" => {
                dir = Some(PathBuf::from(args.next().ok_or_else(usage)?));
                continue;
            }
            "-v" => continue,
            "-p" => {
                purge = true;
                continue;
            }
            "-d" => Op::Delete,
            "-h" => Op::Hold,
            "-H" => Op::Release,
            "-r" => Op::Requeue,
            q if QUEUE_NAMES.contains(&q) => {
                queues.push(q.to_string());
                continue;
            }
            q if !q.starts_with('-') => return Err(format!("invalid mail queue name: {q}")),
            _ => return Err(usage()),
        };
        let arg = args.next().ok_or_else(usage)?;
        let target = match arg.as_str() {
            "ALL" => Target::All,
            "-" => Target::Stdin,
            s => Target::Id(QueueId::parse(s).map_err(|_| format!("invalid mail queue id: {s}"))?),
        };
        work.push((op, target));
    }
    if work.is_empty() && !purge {
        // As Postfix's: no operation named means the purge (but a selection needs one).
        if dry_run || selection.has_criteria() || !queues.is_empty() || !selection.queues.is_empty() {
            return Err(usage());
        }
        purge = true;
    }
    if purge && dry_run {
        return Err("-p has no dry run".into());
    }
    // `--queue NAME` is the same as naming the queue after the options.
    for q in std::mem::take(&mut selection.queues) {
        if !queues.contains(&q) {
            queues.push(q);
        }
    }
    let filtered = dry_run || selection.has_criteria();
    let now = postern_lib::queue_select::now();
    let dir = dir.unwrap_or_else(postern_lib::config::default_config_dir);
    let config = Config::load(&dir).map_err(|e| e.to_string())?;
    let queue_dir = PathBuf::from(&config.main.queue_directory);
    if !dry_run && !may_change_queue(&queue_dir, &config.main.mail_owner) {
        return Err(format!(
            "use of this command is reserved for the superuser and mail_owner ({:?})",
            config.main.mail_owner
        ));
    }
    let mut log = if dry_run {
        MailLog::Off
    } else {
        MailLog::open(&config.main.maillog_file)
    };
    if purge {
        purge::purge(&queue_dir, &mut log);
    }
    // ipc_timeout is at least 1 s (the registry's bound), as qmgr reads it too.
    let timeout = config.main.ipc_timeout.duration();
    let mut stdin_ids: Option<Vec<QueueId>> = None;
    let mut counts = [0usize; 4];
    let mut all_ok = true;
    // Deleted messages whose copies the peer node may drop (queue mirror, issue 16).
    let mut deleted: Vec<String> = Vec::new();
    for (op, target) in &work {
        let queues: Vec<&str> = if queues.is_empty() {
            op.default_queues().to_vec()
        } else {
            queues.iter().map(String::as_str).filter(|q| op.allowed(q)).collect()
        };
        let ids: Vec<Option<QueueId>> = match target {
            Target::All => vec![None],
            Target::Id(id) => vec![Some(*id)],
            Target::Stdin => {
                if stdin_ids.is_none() {
                    stdin_ids = Some(read_stdin_ids());
                }
                stdin_ids.iter().flatten().map(|id| Some(*id)).collect()
            }
        };
        for id in ids {
            let mut files = find::find(&queue_dir, &queues, id.as_ref());
            if id.is_some() {
                files.truncate(1);
            }
            for f in files {
                if filtered {
                    let entry = postern_lib::queue_scan::summarise(&queue_dir, f.clone());
                    if !selection.matches(&entry, now) {
                        continue;
                    }
                    if dry_run {
                        counts[*op as usize] += 1;
                        println!("{}: would be {} ({})", f.id, op.done(), describe(&entry));
                        continue;
                    }
                }
                let outcome = match op {
                    Op::Delete => ops::delete(&queue_dir, &f),
                    Op::Hold => ops::hold(&queue_dir, &f),
                    Op::Release => ops::release(&queue_dir, &f),
                    Op::Requeue => ops::requeue(&queue_dir, &f, timeout),
                };
                match outcome {
                    Outcome::Done(what) => {
                        counts[*op as usize] += 1;
                        if *op == Op::Delete {
                            deleted.push(f.id.to_string());
                        }
                        eprintln!("postsuper: {}: {what}", f.id);
                        log.line(&format!("{}: {what}", f.id));
                    }
                    Outcome::Vanished => {}
                    Outcome::Refused(why) => {
                        all_ok = false;
                        eprintln!("postsuper: warning: {}: {why}", f.id);
                        log.line(&format!("{}: warning: {why}", f.id));
                    }
                }
            }
        }
    }
    if dry_run {
        for op in [Op::Delete, Op::Requeue, Op::Hold, Op::Release] {
            if work.iter().any(|(o, _)| *o == op) {
                let n = counts[op as usize];
                let s = if n == 1 { "" } else { "s" };
                eprintln!(
                    "postsuper: dry run: {n} message{s} would be {}; nothing was changed",
                    op.verb()
                );
            }
        }
        return Ok(true);
    }
    for op in [Op::Delete, Op::Requeue, Op::Hold, Op::Release] {
        let n = counts[op as usize];
        if n > 0 {
            let line = format!("{}: {n} message{}", op.summary(), if n == 1 { "" } else { "s" });
            eprintln!("postsuper: {line}");
            log.line(&line);
        }
    }
    drop_mirror_copies(&queue_dir, deleted);
    if counts[Op::Release as usize] > 0 {
        // Released messages are due now; qmgr takes them at its next deferred scan.
        trigger::send(&queue_dir.join(trigger::QMGR_SOCKET), trigger::WAKEUP);
    }
    Ok(all_ok)
}

/// With a queue mirror (the mirror daemon's socket exists), the peer node drops its copies
/// of the deleted messages, which it would otherwise deliver if it ever adopted this
/// node's mail. Best effort: a failure is a warning.
fn drop_mirror_copies(queue_dir: &Path, ids: Vec<String>) {
    if ids.is_empty() || !queue_dir.join(mirror::local::SOCKET).exists() {
        return;
    }
    for batch in ids.chunks(mirror::local::MAX_DROP) {
        if let Err(why) = mirror::local::drop_copies(queue_dir, batch.to_vec(), std::time::Duration::from_secs(30)) {
            eprintln!(
                "postsuper: warning: the peer node keeps its copies of {} deleted message(s): {why}",
                batch.len()
            );
        }
    }
}

/// Queue IDs from standard input, one per line; bad lines are reported and skipped.
fn read_stdin_ids() -> Vec<QueueId> {
    use std::io::Read;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = Vec::new();
    let mut line = String::new();
    while out.len() < MAX_STDIN_IDS {
        line.clear();
        match (&mut input).take(MAX_STDIN_LINE).read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("postsuper: warning: reading standard input: {e}");
                break;
            }
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match QueueId::parse(text) {
            Ok(id) => out.push(id),
            Err(_) => eprintln!(
                "postsuper: warning: invalid mail queue id: {}",
                postern_lib::strbuf::printable_bounded(text.as_bytes(), 64)
            ),
        }
        if !line.ends_with('\n') && line.len() as u64 >= MAX_STDIN_LINE {
            // An over-long line: skip the rest of it.
            let mut rest = Vec::new();
            let _ = input.read_until(b'\n', &mut rest);
        }
    }
    out
}

/// Root, mail_owner, or the owner of the queue directories (the development layout,
/// where everything runs as the invoking user).
fn may_change_queue(queue_dir: &Path, mail_owner: &str) -> bool {
    let euid = rustix::process::geteuid().as_raw();
    if euid == 0 {
        return true;
    }
    if let Ok((uid, _)) = postern_lib::privs::lookup(mail_owner)
        && uid.as_raw() == euid
    {
        return true;
    }
    std::fs::metadata(queue_dir.join("incoming")).is_ok_and(|m| m.uid() == euid)
}

#[cfg(test)]
mod tests {
    use super::Op;

    #[test]
    fn queues_per_operation() {
        assert!(Op::Delete.allowed("maildrop"));
        assert!(!Op::Requeue.allowed("maildrop"));
        assert!(!Op::Hold.allowed("hold"));
        assert!(Op::Release.allowed("hold"));
        assert!(!Op::Release.allowed("deferred"));
        assert_eq!(Op::Hold.default_queues(), &["incoming", "active", "deferred"]);
    }
}
