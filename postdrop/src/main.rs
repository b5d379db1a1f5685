//! # postdrop — the only writer of `maildrop/`
//!
//! `postdrop [-c CONFIG_DIR]` reads one locally submitted message from standard input in
//! the maildrop format ([`postern_lib::maildrop`], written by `sendmail`), and stores it in
//! `queue_directory/maildrop/` as a file named by a new queue ID: created with `O_EXCL`
//! under a temporary name (`.tmp.*`, which pickup ignores), written, fsynced, renamed to
//! its final name, and the directory fsynced. Then it wakes `pickup` with the `W` trigger
//! on `public/pickup` (if pickup does not answer, its periodic wakeup finds the file).
//!
//! Input that is malformed, incomplete (no end record: the writer died), or whose content
//! exceeds `message_size_limit` is refused with a one-line message on standard error, and
//! nothing is left behind in `maildrop/`.
//!
//! ## Security stance
//!
//! Installed, postdrop is set-gid to the postdrop group (maildrop/ is mode 0730, group
//! postdrop) and runs on behalf of any local user, so its input is hostile: the reader
//! bounds every length, refuses unknown envelope fields and control characters, and the
//! submitting uid recorded is the real uid, never a value from the input. When running
//! set-gid, `-c` and `POSTERN_CONFIG` may only name the default configuration directory,
//! so a user cannot point postdrop at a queue of their choosing.
//!
//! ## Settings read
//!
//! `queue_directory`, `message_size_limit`.
//!
//! ## Exit status
//!
//! 0 stored; 64 (EX_USAGE) bad arguments; 65 (EX_DATAERR) malformed, incomplete or
//! oversize input; 75 (EX_TEMPFAIL) the maildrop could not be written (retry later; a
//! full queue file system says so, and the temporary file is removed);
//! 78 (EX_CONFIG) the configuration could not be loaded.
#![forbid(unsafe_code)]

use std::io::{BufWriter, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use postern_lib::config::{Config, default_config_dir};
use postern_lib::maildrop::{self, MaildropError, Reader, Writer};
use postern_lib::proto::trigger;
use postern_lib::queue_id::QueueId;

const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

/// Mode of maildrop files: readable by pickup (mail_owner); the directory (0730) keeps
/// other users out.
const FILE_MODE: u32 = 0o644;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("postdrop: fatal: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run() -> Result<(), (u8, String)> {
    let mut dir: Option<PathBuf> = std::env::var_os("POSTERN_CONFIG").map(PathBuf::from);
    let mut args = std::env::args_os().skip(1);
    let mut report_id = false;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("-c" | "-C") => {
                let d = args.next().ok_or((EX_USAGE, "-c needs a directory".to_string()))?;
                dir = Some(PathBuf::from(d));
            }
            // `-r`: the stream is a record stream from sendmail, which wants the queue ID
            // back on standard output (used by `sendmail -bs` for its 250 reply).
            Some("-r") => report_id = true,
            // Postfix's verbose flag: accepted, no effect.
            Some("-v") => {}
            _ => return Err((EX_USAGE, format!("usage: postdrop [-c CONFIG_DIR] (got {a:?})"))),
        }
    }
    let default = default_config_dir();
    let dir = match dir {
        Some(d) if setgid() && !same_dir(&d, &default) => {
            return Err((
                EX_USAGE,
                format!("set-gid postdrop refuses configuration directory {}", d.display()),
            ));
        }
        Some(d) => d,
        None => default,
    };
    let config = Config::load(&dir).map_err(|e| (EX_CONFIG, e.to_string()))?;
    let queue = PathBuf::from(&config.main.queue_directory);
    let uid = nix::unistd::getuid().as_raw();
    let stdin = std::io::stdin().lock();
    let id = store(&queue, stdin, uid, config.main.message_size_limit).map_err(|e| {
        let code = match e {
            MaildropError::Io(_) => EX_TEMPFAIL,
            _ => EX_DATAERR,
        };
        let full = match &e {
            MaildropError::Io(io) => {
                matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
                    || io.to_string().contains("No space left on device")
                    || io.to_string().contains("Disk quota exceeded")
            }
            _ => false,
        };
        if full {
            (
                code,
                format!("uid={uid}: the queue file system is full, message not submitted, try again later ({e})"),
            )
        } else {
            (code, format!("uid={uid}: {e}"))
        }
    })?;
    if report_id {
        println!("{}", id.as_str());
    }
    // Best effort: pickup's periodic wakeup finds the file anyway.
    trigger::send(&queue.join(trigger::PICKUP_SOCKET), trigger::WAKEUP);
    Ok(())
}

/// Reads one maildrop stream from `input` and stores it durably in `queue/maildrop/`,
/// recording `uid` as the submitter. Nothing is left behind on failure.
fn store(queue: &Path, input: impl Read, uid: u32, limit: u64) -> Result<QueueId, MaildropError> {
    let mut reader = Reader::new(input, limit)?;
    let mut env = reader.envelope().clone();
    env.uid = Some(uid);
    let id = QueueId::new();
    let dir = queue.join("maildrop");
    let result = postern_lib::safe_open::write_atomic(&dir, id.as_str(), FILE_MODE, |file| {
        let mut w = Writer::new(BufWriter::new(file), &env).map_err(to_io)?;
        let mut buf = vec![0u8; maildrop::MAX_CHUNK as usize];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write_content(buf.get(..n).unwrap_or_default()).map_err(to_io)?;
        }
        w.finish().map_err(to_io)?.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    });
    match result {
        Ok(()) => Ok(id),
        Err(postern_lib::safe_open::SafeOpenError::Io {
            op: "write", source, ..
        }) => Err(maildrop::unwrap_io_error(source)),
        Err(e) => Err(MaildropError::Io(std::io::Error::other(e.to_string()))),
    }
}

fn to_io(e: MaildropError) -> std::io::Error {
    match e {
        MaildropError::Io(e) => e,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
    }
}

/// Whether we run with an effective group other than the real one (installed set-gid).
fn setgid() -> bool {
    nix::unistd::getegid() != nix::unistd::getgid()
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::maildrop::Envelope;

    fn stream(content: &[u8], end: bool) -> Vec<u8> {
        let env = Envelope {
            sender: "alice".into(),
            recipients: vec!["bob@example.test".into()],
            ..Envelope::default()
        };
        let mut w = Writer::new(Vec::new(), &env).unwrap();
        w.write_content(content).unwrap();
        let mut bytes = w.finish().unwrap();
        if !end {
            bytes.truncate(bytes.len() - 5);
        }
        bytes
    }

    fn maildrop_names(q: &Path) -> Vec<String> {
        std::fs::read_dir(q.join("maildrop"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    #[test]
    fn stores_and_refuses() {
        let q = tempfile::tempdir().unwrap();
        std::fs::create_dir(q.path().join("maildrop")).unwrap();
        let id = store(q.path(), &stream(b"Subject: hi\n\nbody\n", true)[..], 4242, 1000).unwrap();
        assert_eq!(maildrop_names(q.path()), vec![id.to_string()]);
        let f = std::fs::File::open(q.path().join("maildrop").join(id.as_str())).unwrap();
        let mut r = Reader::new(f, 1000).unwrap();
        assert_eq!(r.envelope().uid, Some(4242));
        let mut body = Vec::new();
        r.read_to_end(&mut body).unwrap();
        assert_eq!(body, b"Subject: hi\n\nbody\n");

        let big = store(q.path(), &stream(&[b'x'; 2000], true)[..], 1, 1000);
        assert!(matches!(big, Err(MaildropError::TooBig { limit: 1000 })), "{big:?}");
        let cut = store(q.path(), &stream(b"hello\n", false)[..], 1, 1000);
        assert!(matches!(cut, Err(MaildropError::Truncated { .. })), "{cut:?}");
        assert_eq!(
            maildrop_names(q.path()).len(),
            1,
            "failed submissions left files behind"
        );
    }
}
