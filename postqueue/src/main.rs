//! # postqueue — list and flush the mail queue
//!
//! ```text
//! postqueue [-c CONFIG_DIR] -p     the queue listing (mailq, sendmail -bp)
//! postqueue [-c CONFIG_DIR] -j     one JSON object per message, one per line
//! postqueue [-c CONFIG_DIR] -f     flush: ask qmgr to retry deferred mail now
//! postqueue [-c CONFIG_DIR] -i ID  deliver one deferred message now
//! postqueue [-c CONFIG_DIR] -s DOMAIN   deliver deferred mail for DOMAIN now
//! ```
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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use postern_lib::config::Config;
use postern_lib::proto::trigger;
use postern_lib::queue_id::QueueId;
use postern_lib::queue_scan::{self, LISTED_QUEUES, Listing};

const EX_USAGE: u8 = 64;
const EX_NOINPUT: u8 = 66;
const EX_UNAVAILABLE: u8 = 69;
const EX_IOERR: u8 = 74;
const EX_CONFIG: u8 = 78;

#[derive(Clone, PartialEq, Eq)]
enum Action {
    List,
    Json,
    Flush,
    One(QueueId),
    Domain(String),
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
    let usage = || {
        (
            EX_USAGE,
            "usage: postqueue [-c CONFIG_DIR] -p | -j | -f | -i ID | -s DOMAIN".to_string(),
        )
    };
    let mut dir: Option<PathBuf> = std::env::var_os("POSTERN_CONFIG").map(PathBuf::from);
    let mut action = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let next = match a.as_str() {
            "-c" => {
                dir = Some(PathBuf::from(args.next().ok_or_else(usage)?));
                continue;
            }
            "-p" => Action::List,
            "-j" => Action::Json,
            "-f" => Action::Flush,
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
    let dir = dir.unwrap_or_else(postern_lib::config::default_config_dir);
    let config = Config::load(&dir).map_err(|e| (EX_CONFIG, e.to_string()))?;
    let queue = PathBuf::from(&config.main.queue_directory);
    match action {
        Action::Flush => flush(&queue),
        Action::List | Action::Json => list(&queue, action == Action::Json),
        Action::One(id) => match deliver_now::one(&queue, &id) {
            Ok(true) => Ok(()),
            Ok(false) => Err((EX_NOINPUT, format!("{id}: no such message in the deferred queue"))),
            Err(e) => Err((EX_IOERR, e)),
        },
        Action::Domain(d) => deliver_now::domain(&queue, &d).map(|_| ()).map_err(|e| (EX_IOERR, e)),
    }
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

fn list(queue: &Path, json: bool) -> Result<(), (u8, String)> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut listing = Listing::new();
    let mut text = String::new();
    let mut write_err = None;
    queue_scan::scan(queue, LISTED_QUEUES, |entry| {
        if write_err.is_some() {
            return;
        }
        text.clear();
        if json {
            if let Some(line) = queue_scan::json_line(&entry) {
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
    match write_err.map_or_else(|| out.flush(), Err) {
        Ok(()) => Ok(()),
        // `postqueue -p | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err((EX_IOERR, format!("write: {e}"))),
    }
}
