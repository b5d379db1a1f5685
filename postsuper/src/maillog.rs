//! The maillog lines postsuper writes, in the format the daemons use
//! (`Nov 22 18:13:03 host postern/postsuper[PID]: ID: removed`), to the same place:
//! appended to `maillog_file` when it names a file (one `write(2)` per line, as the
//! daemons do, so lines do not interleave), to syslog when it is `syslog`, nowhere for
//! `-` (the terminal already has postsuper's own report).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use postern_lib::safe_open::{Expect, open_append};

/// Where log lines go.
pub enum MailLog {
    /// An append-mode file.
    File(File),
    /// The tracing logger set up for syslog.
    Syslog,
    /// Nowhere.
    Off,
}

impl MailLog {
    /// Opens the log named by `maillog_file` (already made absolute by the config loader).
    /// A log file that cannot be opened is a warning, not a reason to refuse the work.
    pub fn open(maillog_file: &str) -> MailLog {
        match maillog_file {
            "" | "-" => MailLog::Off,
            "syslog" => {
                postern_lib::log::init("postern/postsuper", "syslog");
                MailLog::Syslog
            }
            path => match open_append(Path::new(path), &Expect::any(), Some(0o600)) {
                Ok(f) => MailLog::File(f),
                Err(e) => {
                    eprintln!("postsuper: warning: cannot open maillog_file {path}: {e}");
                    MailLog::Off
                }
            },
        }
    }

    /// Logs one line (`text` is already printable).
    pub fn line(&mut self, text: &str) {
        match self {
            MailLog::File(f) => {
                let host = postern_lib::config::system_hostname();
                let host = host.split('.').next().unwrap_or("localhost");
                let stamp = postern_lib::log::timestamp(std::time::SystemTime::now());
                let line = format!("{stamp} {host} postern/postsuper[{}]: {text}\n", std::process::id());
                let _ = f.write_all(line.as_bytes());
            }
            MailLog::Syslog => tracing::info!("{text}"),
            MailLog::Off => {}
        }
    }
}
