//! # metrics — counters and gauges for Prometheus, on a loopback port
//!
//! ```text
//! curl -s http://127.0.0.1:9154/metrics
//! ```
//!
//! A master.toml service (`metrics/inet`, shipped listening on `127.0.0.1:9154`, the port
//! postfix_exporter uses) that answers `GET /metrics` in the Prometheus text format, or in
//! OpenMetrics when the scraper's `Accept:` asks for `application/openmetrics-text`.
//! `examples/grafana/postern.json` is a dashboard over these series.
//!
//! ## Design: the log is the source, as with Postfix
//!
//! Postfix daemons keep no shared counters, and neither do Postern's: every event an
//! operator graphs is already one line in the mail log, in Postfix's format (`status=sent
//! relay=local`, `NOQUEUE: reject: RCPT ... 550 5.1.1`, ...). So this daemon does what
//! postfix_exporter does for Postfix — it reads the log and counts lines
//! ([`counters`]) — with no change to any daemon and no new protocol, and counts exactly
//! what `postern log` and pflogsumm see. At each scrape it also counts the files of each
//! queue directory and asks master for its processes ([`gauges`]).
//!
//! - **Where reading starts.** The log is read from its beginning when the process starts
//!   (so counters are the totals of the current log file, the same after a restart) and
//!   then from where it left off, at each scrape.
//! - **Rotation and truncation.** The file is opened while the daemon is still privileged
//!   (the log belongs to root) and kept open: master hands all daemons the same open log,
//!   so this is the file they write to until master restarts (and master restarts this
//!   daemon with it). A copy-truncate rotation is noticed (the file shrinks below what was
//!   read) and the file is read again from its start; a log whose path names a new file
//!   (syslog's rotation) is reopened when the path is readable by `mail_owner`, else the
//!   process answers the scrape and exits, and master starts one that opens it. Counters
//!   never go down within a process: they keep counting across a rotation
//!   (`postern_log_resets_total` counts them). A new process starts from the current log,
//!   which Prometheus sees as a counter reset, as it is designed to.
//! - **Bounds.** One line at a time, at most 8 KiB each, at most 64 MiB of log per scrape
//!   (a huge log is caught up over several scrapes; `postern_log_unread_bytes`); every counter family holds at
//!   most [`counters::MAX_SERIES`] label sets (later ones count as `other`), rejection
//!   reasons lose addresses and are cut short. HTTP: one request per connection, the head
//!   at most [`http::MAX_REQUEST`] bytes within [`http::TIMEOUT`]; only `GET`/`HEAD
//!   /metrics` (404 for another path, 405 for another method, 400 for garbage).
//!
//! ## Security stance
//!
//! The service runs as `mail_owner` like every network daemon (the log is opened before the
//! privilege drop) and listens on loopback in the shipped configuration: the counters say
//! which domains and services are busy, which is nobody's business outside the host.
//! Expose it elsewhere only behind something that authenticates the scraper.
//!
//! ## Settings read
//!
//! `maillog_file` (with `syslog`, `/var/log/mail.log` is read), `queue_directory`.
#![forbid(unsafe_code)]

mod counters;
mod gauges;
mod http;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use postern_lib::maillog::Tail;
use postern_lib::skeleton::{Accepted, Context};

use counters::Counters;

/// Most log bytes read for one scrape, so a scrape of a huge log still answers in time;
/// the rest is read at the next scrapes (`postern_log_unread_bytes` says how far behind).
const SCRAPE_BUDGET: u64 = 64 << 20;

/// Where syslog puts mail logs on Debian.
const SYSLOG_FILE: &str = "/var/log/mail.log";

/// What one process keeps between scrapes.
struct State {
    log_path: Option<PathBuf>,
    tail: Option<Tail>,
    counters: Counters,
    lines: u64,
    /// The log was rotated to a file this (unprivileged) process cannot open: exit after
    /// this answer, so that master starts a process that opens it.
    restart: bool,
}

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    postern_lib::skeleton::single::single_server("metrics", pre_init, serve)
}

/// Opens the log while still privileged.
fn pre_init(ctx: &Context) -> Result<State, String> {
    let log_path = match ctx.main.maillog_file.as_str() {
        "" | "-" => None,
        "syslog" => Some(PathBuf::from(SYSLOG_FILE)),
        p => Some(PathBuf::from(p)),
    };
    let tail = log_path.as_deref().and_then(|p| match Tail::open(p) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("{e}; log counters are not available");
            None
        }
    });
    Ok(State {
        log_path,
        tail,
        counters: Counters::default(),
        lines: 0,
        restart: false,
    })
}

fn serve(state: &mut State, ctx: &Context, mut conn: Accepted) {
    let _ = conn.stream.set_timeouts(Some(http::TIMEOUT));
    match http::read_request(&mut conn.stream) {
        http::Request::Gone => {}
        http::Request::Refuse(status, reason) => {
            let client = match conn.peer {
                postern_lib::skeleton::Peer::Inet(a) => a.to_string(),
                postern_lib::skeleton::Peer::Unix => "local".into(),
            };
            tracing::info!("refused a request from {client}: {status} {reason}");
            let body = format!("{status} {reason}\n");
            http::respond(
                &mut conn.stream,
                status,
                reason,
                "text/plain; charset=utf-8",
                body.as_bytes(),
                false,
            );
        }
        http::Request::Metrics { head, open_metrics } => {
            let body = exposition(state, ctx, open_metrics);
            let content_type = if open_metrics {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            };
            http::respond(&mut conn.stream, 200, "OK", content_type, body.as_bytes(), head);
        }
    }
    if state.restart {
        tracing::info!("the mail log was rotated to a file only root can open; restarting to open it");
        std::process::exit(0);
    }
}

/// Reads what the log gained since the last scrape, then renders everything.
fn exposition(state: &mut State, ctx: &Context, open_metrics: bool) -> String {
    if let (Some(tail), Some(path)) = (state.tail.as_mut(), state.log_path.as_deref()) {
        if !tail.reopen_if_rotated(path) && tail.replaced(path) {
            state.restart = true;
        }
        let counters = &mut state.counters;
        let lines = &mut state.lines;
        if let Err(e) = tail.each_line_upto(SCRAPE_BUDGET, |l| {
            *lines += 1;
            counters.line(l);
        }) {
            tracing::warn!("{e}");
        }
    }
    let mut out = String::with_capacity(8192);
    state.counters.render(&mut out, open_metrics);
    let resets = state.tail.as_ref().map_or(0, Tail::resets);
    let log_counter = if open_metrics {
        "postern_log_resets"
    } else {
        "postern_log_resets_total"
    };
    let _ = writeln!(
        out,
        "# HELP {log_counter} Times the log was found rotated or truncated and read again from its start.\n\
         # TYPE {log_counter} counter\npostern_log_resets_total {resets}"
    );
    let lines_counter = if open_metrics {
        "postern_log_lines"
    } else {
        "postern_log_lines_total"
    };
    let _ = writeln!(
        out,
        "# HELP {lines_counter} Log lines read.\n# TYPE {lines_counter} counter\npostern_log_lines_total {}",
        state.lines
    );
    let _ = writeln!(
        out,
        "# HELP postern_log_unread_bytes Log bytes not counted yet (a big log is read {} MiB per scrape).\n\
         # TYPE postern_log_unread_bytes gauge\npostern_log_unread_bytes {}",
        SCRAPE_BUDGET >> 20,
        state.tail.as_ref().map_or(0, Tail::unread)
    );
    let _ = writeln!(
        out,
        "# HELP postern_log_readable 1 when the mail log is being read.\n# TYPE postern_log_readable gauge\npostern_log_readable {}",
        u8::from(state.tail.is_some())
    );
    gauges::queues(&mut out, std::path::Path::new(&ctx.main.queue_directory));
    gauges::processes(&mut out, &ctx.config);
    if open_metrics {
        out.push_str("# EOF\n");
    }
    out
}
