//! Logging: `tracing` events rendered as the one-line Postfix log format operators and
//! their tools already read:
//!
//! ```text
//! Nov 22 17:49:46 mx postern/smtpd[4711]: 4Xk9cZ1qf: client=localhost[127.0.0.1]
//! Nov 22 17:49:46 mx postern/master[4700]: warning: process smtpd pid 4711 killed by signal 9
//! ```
//!
//! An event's `queue_id` field becomes the `QUEUEID: ` prefix; its message follows; any
//! other fields are appended as `, key=value`. Warnings and errors carry Postfix's
//! `warning: ` / `error: ` prefixes. Each line is written with a single `write(2)`, so
//! lines from many processes sharing one append-mode log file do not interleave.
//!
//! Destinations (`maillog_file`): a path (master opens it once and hands it to every child
//! as stderr), `"-"` for stderr, or `"syslog"` for the local syslog socket `/dev/log`,
//! facility mail. Times are UTC. `POSTERN_LOG_LEVEL=debug` shows debug events.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Longest line written; longer messages are cut (syslog's own limit is similar).
const MAX_LINE: usize = 4000;

/// Where log lines go.
#[derive(Debug)]
pub enum Sink {
    /// Standard error (a terminal, or the log file master put there).
    Stderr,
    /// The local syslog daemon.
    Syslog(Mutex<Option<UnixDatagram>>),
}

struct PosternLayer {
    program: String,
    host: String,
    pid: u32,
    sink: Sink,
    max_level: Level,
}

/// Installs the global logger for `program` (e.g. `postern/smtpd`). `maillog_file` is the
/// setting; anything but `"syslog"` logs to stderr (master has already pointed stderr at
/// the file). Calling it twice keeps the first.
pub fn init(program: &str, maillog_file: &str) {
    let sink = if maillog_file == "syslog" && std::env::var_os(crate::master_status::env::LOG_STDERR).is_none() {
        Sink::Syslog(Mutex::new(connect_syslog()))
    } else {
        Sink::Stderr
    };
    let max_level = match std::env::var("POSTERN_LOG_LEVEL").as_deref() {
        Ok("debug") => Level::DEBUG,
        Ok("trace") => Level::TRACE,
        _ => Level::INFO,
    };
    let host = crate::hostname::system_hostname();
    let host = host.split('.').next().unwrap_or("localhost").to_string();
    let layer = PosternLayer {
        program: program.into(),
        host,
        pid: std::process::id(),
        sink,
        max_level,
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

fn connect_syslog() -> Option<UnixDatagram> {
    let s = UnixDatagram::unbound().ok()?;
    s.connect("/dev/log").ok()?;
    Some(s)
}

impl<S: Subscriber> Layer<S> for PosternLayer {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        *meta.level() <= self.max_level
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut v = LineVisitor::default();
        event.record(&mut v);
        let prefix = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::DEBUG | Level::TRACE => "debug: ",
            Level::INFO => "",
        };
        let mut body = String::new();
        if let Some(q) = &v.queue_id {
            let _ = write!(body, "{q}: ");
        }
        if !(v.message.starts_with("fatal: ") || v.message.starts_with("panic: ")) {
            body.push_str(prefix);
        }
        body.push_str(&v.message);
        body.push_str(&v.fields);
        let stamp = timestamp(std::time::SystemTime::now());
        let mut line = match &self.sink {
            Sink::Stderr => format!("{stamp} {} {}[{}]: {body}", self.host, self.program, self.pid),
            Sink::Syslog(_) => {
                let sev = match *event.metadata().level() {
                    Level::ERROR => 3,
                    Level::WARN => 4,
                    Level::INFO => 6,
                    _ => 7,
                };
                format!("<{}>{stamp} {}[{}]: {body}", 2 * 8 + sev, self.program, self.pid)
            }
        };
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line.retain(|c| c != '\n' && c != '\r');
        match &self.sink {
            Sink::Stderr => {
                line.push('\n');
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::Syslog(sock) => {
                if let Ok(mut guard) = sock.lock() {
                    if guard.is_none() {
                        *guard = connect_syslog();
                    }
                    let sent = guard.as_ref().is_some_and(|s| s.send(line.as_bytes()).is_ok());
                    if !sent {
                        *guard = None;
                        let _ = std::io::stderr().lock().write_all(format!("{line}\n").as_bytes());
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    queue_id: Option<String>,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "queue_id" => self.queue_id = Some(value.to_string()),
            name => {
                let _ = write!(self.fields, ", {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "queue_id" => self.queue_id = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.fields, ", {name}={value:?}");
            }
        }
    }
}

/// An error's text in plain words for logs, defer reasons and messages to people: Rust's
/// `(os error N)` suffix on I/O errors dropped (`Connection refused (os error 111)` →
/// `Connection refused`).
pub fn plain_error(e: &dyn std::fmt::Display) -> String {
    let t = e.to_string();
    match t.rfind(" (os error ") {
        Some(at) if t.ends_with(')') => t[..at].to_string(),
        _ => t,
    }
}

/// `Nov 22 17:49:46` in UTC, the classic syslog stamp.
pub fn timestamp(t: std::time::SystemTime) -> String {
    crate::date::syslog_stamp(t)
}

/// Kept here for callers that date log-adjacent text; see [`crate::date`].
pub use crate::date::civil_from_days;
