//! # bounce — the Postern bounce daemon
//!
//! Writes delivery status notifications (RFC 3464 `multipart/report`): non-delivery
//! reports, delay warnings and success notices, on request of qmgr
//! ([`postern_lib::proto::bounce`]), and queues them through cleanup from the null sender.
//! Honours DSN NOTIFY, ORCPT, ENVID and RET; never sends a notice to the null sender (a
//! failed bounce goes to postmaster once, a failed double bounce is dropped with a log
//! line).
//!
//! Runs on `private/bounce`, one request at a time (`single_server`), unprivileged.
//! Settings read: `myhostname`, `myorigin`, `bounce_size_limit`,
//! `bounce_notice_recipient`.
#![forbid(unsafe_code)]

mod notify;
mod report;

use postern_lib::ipc::IpcStream;
use postern_lib::proto::bounce::{BounceReply, BounceRequest, PROTOCOL, VERSION};
use postern_lib::skeleton::single::single_server;
use postern_lib::skeleton::{Accepted, Context, Stream};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    single_server("bounce", init, serve)
}

fn init(ctx: &Context) -> Result<notify::Settings, String> {
    let m = &ctx.main;
    Ok(notify::Settings {
        hostname: m.myhostname.clone(),
        origin: m.myorigin.clone(),
        size_limit: m.bounce_size_limit,
        notice_recipient: m.bounce_notice_recipient.clone(),
        timeout: Duration::from_secs(100),
    })
}

fn serve(s: &mut notify::Settings, _ctx: &Context, conn: Accepted) {
    let Stream::Unix(sock) = conn.stream else { return };
    let mut ipc = match IpcStream::server(sock, PROTOCOL, VERSION, Some(s.timeout)) {
        Ok(i) => i,
        Err(e) => return tracing::warn!("bounce request: {e}"),
    };
    let reply = match ipc.recv::<BounceRequest>() {
        Ok(BounceRequest::Notify {
            queue_id,
            queue_file,
            kind,
            recipients,
        }) => notify::notify(s, queue_id.as_str(), &queue_file, kind, &recipients),
        Err(e) => BounceReply::TempFail {
            reason: format!("bad request: {e}"),
        },
    };
    if let Err(e) = ipc.send(&reply) {
        tracing::warn!("bounce reply: {e}");
    }
}
