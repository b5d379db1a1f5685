//! postern-test-cleanup — a stand-in for cleanup in smtpd's whole-system tests, never
//! shipped. It speaks the cleanup protocol (lib/src/proto/cleanup.rs) on `private/cleanup`
//! and, for each message, writes `test-received/ID.env` (the envelope: `sender`, then
//! `rcpt` lines, then `attr key=value` lines) and `test-received/ID.msg` (the content), each
//! through a temporary name and a rename, before it answers `Queued`. A client that breaks
//! off before the end frame leaves nothing.
//!
//! `postern-test-cleanup [reject|tempfail]` answers every message that way instead.
#![forbid(unsafe_code)]

use postern_lib::dsn::Dsn;
use postern_lib::ipc::IpcStream;
use postern_lib::proto::cleanup::{self, CleanupReply, CleanupRequest, CleanupStarted};
use postern_lib::queue_id::QueueId;
use postern_lib::skeleton::single::single_server;
use postern_lib::skeleton::{Accepted, Context, Stream};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mode = Mode(std::env::args().nth(1).unwrap_or_default());
    single_server("cleanup", |_| Ok(mode), serve)
}

/// How to answer: `""` (queue), `reject` or `tempfail`.
struct Mode(String);

fn serve(mode: &mut Mode, _ctx: &Context, conn: Accepted) {
    let Stream::Unix(sock) = conn.stream else { return };
    let mut ipc = match IpcStream::server(sock, cleanup::PROTOCOL, cleanup::VERSION, Some(Duration::from_secs(60))) {
        Ok(i) => i,
        Err(e) => return note(&format!("handshake: {e}")),
    };
    let id = QueueId::new();
    let sub = match ipc.recv::<CleanupRequest>() {
        Ok(CleanupRequest::Submit(sub)) => sub,
        Ok(CleanupRequest::Open(sub)) => {
            let started = CleanupStarted { queue_id: id };
            if let Err(e) = ipc.send(&started) {
                return note(&format!("started: {e}"));
            }
            sub
        }
        Err(e) => return note(&format!("request: {e}")),
    };
    let mut content = Vec::new();
    if let Err(e) = ipc.data_reader(64 << 20).read_to_end(&mut content) {
        return note(&format!("content: {e}"));
    }
    let reply = match mode.0.as_str() {
        "reject" => CleanupReply::Rejected {
            code: 550,
            dsn: Dsn::NOT_AUTHORIZED,
            text: "message content rejected".into(),
        },
        "tempfail" => CleanupReply::TempFail {
            code: 451,
            dsn: Dsn::MAIL_SYSTEM,
            text: "try again later".into(),
        },
        _ => {
            let mut env = format!("sender {}\n", sub.sender);
            for r in &sub.recipients {
                env.push_str(&format!(
                    "rcpt {} notify={} orcpt={}\n",
                    r.address,
                    r.notify.join(","),
                    r.orcpt.clone().unwrap_or_default()
                ));
            }
            for (k, v) in &sub.attributes {
                env.push_str(&format!("attr {k}={v}\n"));
            }
            let _ = std::fs::create_dir_all("test-received");
            let ok = write_atomic(&format!("test-received/{}.msg", id.as_str()), &content)
                && write_atomic(&format!("test-received/{}.env", id.as_str()), env.as_bytes());
            if !ok {
                return;
            }
            CleanupReply::Queued {
                queue_id: id.as_str().to_string(),
            }
        }
    };
    let _ = ipc.send(&reply);
}

/// Records why a connection ended without a reply (`test-received/errors.log`).
fn note(why: &str) {
    let _ = std::fs::create_dir_all("test-received");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open("test-received/errors.log")
    {
        let _ = writeln!(f, "{why}");
    }
}

fn write_atomic(path: &str, bytes: &[u8]) -> bool {
    let tmp = format!("{path}.tmp");
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    written.is_ok() && std::fs::rename(&tmp, path).is_ok()
}
