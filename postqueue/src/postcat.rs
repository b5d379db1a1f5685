//! # postcat — show a queued message: envelope, header and body
//!
//! ```text
//! postcat [-c CONFIG_DIR] [-e] [-h] [-b] -q ID    the message with this queue ID
//! postcat [-c CONFIG_DIR] [-e] [-h] [-b] FILE...  queue files named by path
//! ```
//!
//! As Postfix's `postcat -q`: the queue file is looked up in hold, incoming, active and
//! deferred (flat or hashed), and printed in sections:
//!
//! ```text
//! *** ENVELOPE RECORDS deferred/ID ***
//! message_size: 1234
//! message_arrival_time: Sun Nov 22 18:13:03 2026
//! queue_id: ID
//! sender: alice@example.test
//! named_attribute: protocol=ESMTP
//! recipient: bob@example.test
//! done_recipient: carol@example.test
//! *** MESSAGE CONTENTS deferred/ID ***
//! (the header and body, byte for byte as stored)
//! *** MESSAGE FILE END deferred/ID ***
//! ```
//!
//! `recipient:` is a recipient still pending, `done_recipient:` a finished one (delivered,
//! bounced or discarded); each may be followed by `original_recipient:` (DSN ORCPT) and
//! `dsn_notify_flags:` (RFC 3461 bits: 1 SUCCESS, 2 FAILURE, 4 DELAY, 8 NEVER). `-e`, `-h`
//! and `-b` restrict the output to the envelope, the header, the body (any combination;
//! with `-h` or `-b` the section is headed `*** HEADER` / `*** BODY` instead of
//! `MESSAGE CONTENTS`). The content is stored with LF line ends and printed as stored.
//!
//! ## Security stance
//!
//! The queue ID is parsed with [`QueueId`], so it cannot name a path; files are opened with
//! [`postern_lib::safe_open::open_read`] and parsed by the bounded queue file reader; the
//! content is streamed, never loaded whole. Reading the queue needs root, mail_owner, or
//! the queue's owner (the development layout).
//!
//! ## Exit status
//!
//! 0 done; 64 EX_USAGE bad flags; 66 EX_NOINPUT no such message or unreadable file; 74
//! EX_IOERR write error; 78 EX_CONFIG bad configuration.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use postern_lib::config::Config;
use postern_lib::queue_file::QueueFile;
use postern_lib::queue_id::{MAX_HASH_DEPTH, QueueId};
use postern_lib::queue_scan::asctime;
use postern_lib::safe_open::{Expect, open_read};

const EX_USAGE: u8 = 64;
const EX_NOINPUT: u8 = 66;
const EX_IOERR: u8 = 74;
const EX_CONFIG: u8 = 78;

/// The queues searched by `-q`, in Postfix's order.
const QUEUES: &[&str] = &["hold", "incoming", "active", "deferred"];
/// Longest header line handled as one piece when splitting header from body.
const MAX_LINE: u64 = 1 << 20;

#[derive(Default, Clone, Copy)]
struct Show {
    envelope: bool,
    header: bool,
    body: bool,
}

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("postcat: fatal: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run() -> Result<(), (u8, String)> {
    let usage = || {
        (
            EX_USAGE,
            "usage: postcat [-c CONFIG_DIR] [-e] [-h] [-b] -q ID | FILE...".to_string(),
        )
    };
    let mut dir: Option<PathBuf> = std::env::var_os("POSTERN_CONFIG").map(PathBuf::from);
    let mut show = Show::default();
    let mut ids = Vec::new();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-c" => dir = Some(PathBuf::from(args.next().ok_or_else(usage)?)),
            "-e" => show.envelope = true,
            "-h" => show.header = true,
            "-b" => show.body = true,
            "-v" => {}
            "-q" => {
                let id = args.next().ok_or_else(usage)?;
                ids.push(QueueId::parse(&id).map_err(|_| (EX_USAGE, format!("invalid mail queue id: {id}")))?);
            }
            f if !f.starts_with('-') => files.push(PathBuf::from(f)),
            _ => return Err(usage()),
        }
    }
    if ids.is_empty() == files.is_empty() {
        return Err(usage());
    }
    let split = show.header || show.body;
    if !show.envelope && !split {
        show = Show {
            envelope: true,
            header: true,
            body: true,
        };
    }
    let mut targets: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|p| {
            let name = p.display().to_string();
            (p, name)
        })
        .collect();
    if !ids.is_empty() {
        let dir = dir.unwrap_or_else(postern_lib::config::default_config_dir);
        let config = Config::load(&dir).map_err(|e| (EX_CONFIG, e.to_string()))?;
        let queue = PathBuf::from(&config.main.queue_directory);
        for id in &ids {
            targets
                .push(find(&queue, id).ok_or_else(|| (EX_NOINPUT, format!("no message with ID {id} in the queue")))?);
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (path, name) in &targets {
        match print(path, name, show, split, &mut out) {
            Ok(()) => {}
            Err(Failure::Input(e)) => return Err((EX_NOINPUT, format!("{name}: {e}"))),
            Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(Failure::Output(e)) => return Err((EX_IOERR, format!("write: {e}"))),
        }
    }
    out.flush().map_err(|e| (EX_IOERR, format!("write: {e}")))
}

/// `QUEUE/ID` or `QUEUE/x/4/ID`, with its display name `queue/ID`.
fn find(queue: &Path, id: &QueueId) -> Option<(PathBuf, String)> {
    QUEUES.iter().find_map(|q| {
        (0..=MAX_HASH_DEPTH).find_map(|depth| {
            let p = queue.join(q).join(id.hash_dir(depth)).join(id.as_str());
            std::fs::symlink_metadata(&p)
                .is_ok_and(|m| m.is_file())
                .then(|| (p, format!("{q}/{id}")))
        })
    })
}

enum Failure {
    Input(String),
    Output(std::io::Error),
}

fn print(path: &Path, name: &str, show: Show, split: bool, out: &mut impl Write) -> Result<(), Failure> {
    let mut file: File = open_read(path, &Expect::any()).map_err(|e| Failure::Input(e.to_string()))?;
    let qf = QueueFile::read(&mut file).map_err(|e| Failure::Input(e.to_string()))?;
    let w = |out: &mut dyn Write, s: &str| out.write_all(s.as_bytes()).map_err(Failure::Output);
    if show.envelope {
        w(out, &envelope(&qf, name, file.metadata().map(|m| m.len()).unwrap_or(0)))?;
    }
    if !split {
        w(out, &format!("*** MESSAGE CONTENTS {name} ***\n"))?;
        let mut content = qf
            .content_reader(&mut file)
            .map_err(|e| Failure::Input(e.to_string()))?;
        copy(&mut content, out)?;
    } else {
        let content = qf
            .content_reader(&mut file)
            .map_err(|e| Failure::Input(e.to_string()))?;
        let mut r = BufReader::new(content);
        if show.header {
            w(out, &format!("*** HEADER {name} ***\n"))?;
        }
        // Header lines up to the first empty line (which belongs to neither part).
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut r)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .map_err(|e| Failure::Input(e.to_string()))?;
            if n == 0 || line == b"\n" || line == b"\r\n" {
                break;
            }
            if show.header {
                out.write_all(&line).map_err(Failure::Output)?;
            }
        }
        if show.body {
            w(out, &format!("*** BODY {name} ***\n"))?;
            copy(&mut r, out)?;
        }
    }
    w(out, &format!("*** MESSAGE FILE END {name} ***\n"))
}

fn copy(r: &mut impl Read, out: &mut (impl Write + ?Sized)) -> Result<(), Failure> {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).map_err(|e| Failure::Input(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(buf.get(..n).unwrap_or_default())
            .map_err(Failure::Output)?;
    }
}

/// The envelope section.
fn envelope(qf: &QueueFile, name: &str, file_size: u64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let env = &qf.envelope;
    let _ = writeln!(s, "*** ENVELOPE RECORDS {name} ***");
    let _ = writeln!(s, "message_size: {}", qf.content_len());
    let _ = writeln!(s, "queue_file_size: {file_size}");
    let year = postern_lib::date::civil_from_days((env.arrival.secs / 86400) as i64).0;
    let _ = writeln!(s, "message_arrival_time: {} {year}", asctime(env.arrival.secs));
    let _ = writeln!(s, "queue_id: {}", env.queue_id);
    let _ = writeln!(s, "sender: {}", env.sender);
    for (k, v) in &env.attributes {
        let _ = writeln!(s, "named_attribute: {k}={v}");
    }
    for r in &qf.recipients {
        let kind = if r.status.is_final() {
            "done_recipient"
        } else {
            "recipient"
        };
        let _ = writeln!(s, "{kind}: {}", r.spec.address);
        if let Some(o) = &r.spec.orcpt {
            let _ = writeln!(s, "original_recipient: {o}");
        }
        if r.spec.notify.bits() != 0 {
            let _ = writeln!(s, "dsn_notify_flags: {}", r.spec.notify.bits());
        }
    }
    s
}
