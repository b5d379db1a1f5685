//! # postqueue — list and flush the mail queue
//!
//! ```text
//! postqueue [-c CONFIG_DIR] -p     the queue listing (mailq, sendmail -bp)
//! postqueue [-c CONFIG_DIR] -j     one JSON object per message, one per line
//! postqueue [-c CONFIG_DIR] -f     flush: ask qmgr to retry deferred mail now
//! postqueue [-c CONFIG_DIR] -i ID  deliver one deferred message now
//! postqueue [-c CONFIG_DIR] -s DOMAIN   deliver deferred mail for DOMAIN now
//! postqueue [-c CONFIG_DIR] --shape [-s] [-p] [-m N] [-b N] [-t MIN] [-l] [-w COLS] [-n N] [QUEUE...]
//!                                  messages per domain by age (Postfix's qshape)
//! ```
//!
//! Every mode takes the selection options of [`postern_lib::queue_select`] (`--from`,
//! `--to`, `--domain`, `--reason`, `--older`, `--younger`, `--queue`): `-p` and `-j` list
//! only the selected messages, `--shape` counts only them, and `-f` (or `-i ID`) with a
//! selection delivers now exactly the selected deferred messages (moved to `incoming/`, as
//! `-i` does) instead of asking qmgr to retry everything. `--dry-run` with `-f`, `-i` or
//! `-s` prints `ID: would be flushed (deferred, from=<...>, to=<...>)` per message and
//! `postqueue: dry run: N messages would be flushed; nothing was changed`, and changes
//! nothing. A real flush of a selection ends with `postqueue: Flushed: N messages`.
//! `--shape` is described in [`shape`].
//!
//! (`-c` names the configuration directory, as in Postfix; the contents of one message
//! are shown by `postcat -q ID`, a second binary of this crate.)
//!
//! `-p` prints Postfix's format: a header line; per message its queue ID followed by `*`
//! when it is in `active/` or `!` when it is in `hold/`, its size, arrival time (UTC) and
//! sender, then each recipient still to be delivered, with the reason from the defer log
//! above the recipients it concerns; `-- N Kbytes in M Requests.` at the end, or
//! `Mail queue is empty`. Files in `maildrop/` (not yet queue files) show the envelope as
//! submitted, or `(maildrop queue, sender UID N)` when they cannot be parsed, as Postfix's
//! showq does. The queues are scanned in the order maildrop, hold, incoming, active,
//! deferred, by [`postern_lib::queue_scan`].
//!
//! `-j` prints Postfix's JSON fields: `queue_name`, `queue_id`, `arrival_time`,
//! `message_size`, `forced_expire`, `sender`, `recipients` (`address`, `delay_reason` when
//! known).
//!
//! `-f` sends the `F` trigger to qmgr's `public/qmgr`; when nothing listens there the
//! mail system is down and postqueue says so.
//!
//! `-i ID` moves the message from `deferred/` to `incoming/` and tells qmgr new mail
//! arrived; `-s DOMAIN` does that for every deferred message with a recipient still
//! pending in DOMAIN ([`deliver_now`]). They change the queue, so they need write access
//! to it.
//!
//! ## Security stance
//!
//! postqueue reads the queue directly, with [`postern_lib::safe_open`] and the bounded
//! queue file reader, so it needs read access to the queue: in the development layout
//! everything belongs to the invoking user; installed, only root and mail_owner can list
//! the queue (Postfix's showq service for other users is not built).
//!
//! ## Settings read
//!
//! `queue_directory`.
//!
//! ## Exit status
//!
//! 0 done; 64 EX_USAGE bad flags; 66 EX_NOINPUT no such deferred message (`-i`); 69
//! EX_UNAVAILABLE mail system down (`-f`); 74 EX_IOERR the queue could not be read or
//! changed; 78 EX_CONFIG bad configuration.
#![forbid(unsafe_code)]

mod deliver_now;
mod shape;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use postern_lib::config::Config;
use postern_lib::proto::trigger;
use postern_lib::queue_id::QueueId;
use postern_lib::queue_scan::{LISTED_QUEUES, Listing};
use postern_lib::queue_select::{self, Selection};

const EX_USAGE: u8 = 64;
const EX_NOINPUT: u8 = 66;
const EX_UNAVAILABLE: u8 = 69;
const EX_IOERR: u8 = 74;
const EX_CONFIG: u8 = 78;

const USAGE: &str = "usage: postqueue [-c CONFIG_DIR] -p | -j | -f | -i ID | -s DOMAIN | --shape [-s] [-p] [-m N] [-b N] [-t MIN] [-l] [-w COLS] [-n N] [QUEUE...]\n\
     selection (any mode): [--from ADDR|DOMAIN] [--to ADDR|DOMAIN] [--domain DOMAIN] [--reason TEXT] [--older AGE] [--younger AGE] [--queue QUEUE]... [--dry-run]";

#[derive(Clone, PartialEq, Eq)]
enum Action {
    List,
    Json,
    Flush,
    One(QueueId),
    Domain(String),
    Shape,
}

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("postqueue: fatal: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run() -> Result<(), (u8, String)> {
    let usage = || (EX_USAGE, USAGE.to_string());
    let mut dir: Option<PathBuf> = std::env::var_os("POSTERN_CONFIG").map(PathBuf::from);
    let mut action = None;
    let mut selection = Selection::default();
    let mut shape_opts = shape::Options::default();
    let mut dry_run = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        if Selection::takes(&a) {
            let v = args.next().ok_or_else(usage)?;
            selection.set(&a, &v).map_err(|e| (EX_USAGE, e))?;
            continue;
        }
        // After --shape, qshape's own options (-s is "sender domains" there).
        if action == Some(Action::Shape) && a != "-c" {
            if shape_opts.take(&a, &mut args).map_err(|e| (EX_USAGE, e))? {
                continue;
            }
            return Err(usage());
        }
        let next = match a.as_str() {
            "-c" => {
                dir = Some(PathBuf::from(args.next().ok_or_else(usage)?));
                continue;
            }
            "--dry-run" => {
                dry_run = true;
                continue;
            }
            "-p" => Action::List,
            "-j" => Action::Json,
            "-f" => Action::Flush,
            "--shape" => Action::Shape,
            "-v" => continue,
            "-i" => {
                let id = args.next().ok_or_else(usage)?;
                Action::One(QueueId::parse(&id).map_err(|_| (EX_USAGE, format!("invalid mail queue id: {id}")))?)
            }
            "-s" => {
                let d = args.next().ok_or_else(usage)?;
                if d.is_empty() || d.len() > 255 || d.bytes().any(|b| b.is_ascii_control() || b == b'@') {
                    return Err((EX_USAGE, "-s: invalid domain name".into()));
                }
                Action::Domain(d)
            }
            _ => return Err(usage()),
        };
        if action.as_ref().is_some_and(|prev| *prev != next) {
            return Err(usage());
        }
        action = Some(next);
    }
    let action = action.ok_or_else(usage)?;
    if dry_run && !matches!(action, Action::Flush | Action::One(_) | Action::Domain(_)) {
        return Err((EX_USAGE, "--dry-run goes with -f, -i or -s".into()));
    }
    let dir = dir.unwrap_or_else(postern_lib::config::default_config_dir);
    let config = Config::load(&dir).map_err(|e| (EX_CONFIG, e.to_string()))?;
    let queue = PathBuf::from(&config.main.queue_directory);
    let selective = selection.has_criteria() || !selection.queues.is_empty();
    match action {
        Action::Flush if !selective && !dry_run => flush(&queue),
        Action::Flush => flush_selected(&queue, &selection, None, dry_run).map(|_| ()),
        Action::List | Action::Json => list(&queue, action == Action::Json, &selection),
        Action::Shape => shape(&queue, shape_opts, &selection),
        Action::One(id) if !selective && !dry_run => match deliver_now::one(&queue, &id) {
            Ok(true) => Ok(()),
            Ok(false) => Err(not_found(&id)),
            Err(e) => Err((EX_IOERR, e)),
        },
        Action::One(id) => match flush_selected(&queue, &selection, Some(&id), dry_run)? {
            0 => Err(not_found(&id)),
            _ => Ok(()),
        },
        Action::Domain(d) if !selective && !dry_run => {
            deliver_now::domain(&queue, &d).map(|_| ()).map_err(|e| (EX_IOERR, e))
        }
        Action::Domain(d) => {
            selection.set("--domain", &d).map_err(|e| (EX_USAGE, e))?;
            flush_selected(&queue, &selection, None, dry_run).map(|_| ())
        }
    }
}

fn not_found(id: &QueueId) -> (u8, String) {
    (EX_NOINPUT, format!("{id}: no such message in the deferred queue"))
}

fn flush(queue: &Path) -> Result<(), (u8, String)> {
    if trigger::send(&queue.join(trigger::QMGR_SOCKET), trigger::FLUSH) {
        Ok(())
    } else {
        Err((
            EX_UNAVAILABLE,
            "cannot flush mail queue - mail system is down (nothing listens on public/qmgr)".into(),
        ))
    }
}

/// `-f`, `-i`, `-s` with a selection or `--dry-run`: the selected deferred messages.
fn flush_selected(
    queue: &Path,
    selection: &Selection,
    id: Option<&QueueId>,
    dry_run: bool,
) -> Result<usize, (u8, String)> {
    let n = deliver_now::selected(queue, selection, id, dry_run).map_err(|e| (EX_IOERR, e))?;
    let s = if n == 1 { "" } else { "s" };
    if dry_run {
        eprintln!("postqueue: dry run: {n} message{s} would be flushed; nothing was changed");
    } else if id.is_none() {
        eprintln!("postqueue: Flushed: {n} message{s}");
    }
    Ok(n)
}

fn shape(queue: &Path, opts: shape::Options, selection: &Selection) -> Result<(), (u8, String)> {
    let queues = opts.queue_list();
    let mut shape = shape::Shape::new(opts, queue_select::now());
    queue_select::select(queue, &queues, selection, queue_select::now(), |e| shape.add(&e))
        .map_err(|e| (EX_IOERR, format!("read queue {}: {e}", queue.display())))?;
    write_out(&mut std::io::stdout().lock(), shape.render().as_bytes())
}

fn write_out(out: &mut impl Write, bytes: &[u8]) -> Result<(), (u8, String)> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `postqueue -p | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err((EX_IOERR, format!("write: {e}"))),
    }
}

fn list(queue: &Path, json: bool, selection: &Selection) -> Result<(), (u8, String)> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut listing = Listing::new();
    let mut text = String::new();
    let mut write_err = None;
    let queues = selection.queues(LISTED_QUEUES);
    queue_select::select(queue, &queues, selection, queue_select::now(), |entry| {
        if write_err.is_some() {
            return;
        }
        text.clear();
        if json {
            if let Some(line) = postern_lib::queue_scan::json_line(&entry) {
                text.push_str(&line);
                text.push('\n');
            }
        } else {
            listing.entry(&entry, &mut text);
        }
        if let Err(e) = out.write_all(text.as_bytes()) {
            write_err = Some(e);
        }
    })
    .map_err(|e| (EX_IOERR, format!("read queue {}: {e}", queue.display())))?;
    if !json {
        text.clear();
        listing.finish(&mut text);
        if write_err.is_none()
            && let Err(e) = out.write_all(text.as_bytes())
        {
            write_err = Some(e);
        }
    }
    match write_err {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err((EX_IOERR, format!("write: {e}"))),
        _ => write_out(&mut out, b""),
    }
}
