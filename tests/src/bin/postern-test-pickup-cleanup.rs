//! postern-test-pickup-cleanup — a tiny stand-in for cleanup, for pickup's tests only;
//! never shipped in `etc/master.toml`.
//!
//! `postern-test-pickup-cleanup MODE DIR` serves the cleanup protocol
//! ([`postern_lib::proto::cleanup`]) on the single skeleton and records each submission it
//! gets in `DIR` as two files, `N.env` (`key=value` lines: `sender`, `origin`, `extract`,
//! one `rcpt` per recipient, `attr.KEY` per attribute) and `N.eml` (the content), written
//! under a temporary name and renamed, then answers according to MODE: `queue` →
//! `Queued`, `tempfail` → `TempFail 451 4.3.0`, `reject` → `Rejected 550 5.7.1`, `die`
//! → killed by SIGKILL before answering (a cleanup crash).
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use postern_lib::dsn::Dsn;
use postern_lib::ipc::IpcStream;
use postern_lib::proto::cleanup::{CleanupReply, CleanupRequest, PROTOCOL, VERSION};
use postern_lib::queue_id::QueueId;
use postern_lib::skeleton::single::single_server;
use postern_lib::skeleton::{Accepted, Context, Stream};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: postern-test-pickup-cleanup queue|tempfail|reject|die DIR");
        return ExitCode::FAILURE;
    };
    single_server(
        "cleanup",
        |_| Ok(()),
        move |_, ctx: &Context, conn: Accepted| serve(ctx, conn, &mode, Path::new(&dir)),
    )
}

fn serve(_ctx: &Context, conn: Accepted, mode: &str, dir: &Path) {
    let Stream::Unix(sock) = conn.stream else { return };
    let Ok(mut ipc) = IpcStream::server(sock, PROTOCOL, VERSION, Some(Duration::from_secs(30))) else {
        return;
    };
    let Ok(CleanupRequest::Submit(sub)) = ipc.recv::<CleanupRequest>() else {
        return;
    };
    let mut content = Vec::new();
    if ipc.data_reader(64 << 20).read_to_end(&mut content).is_err() {
        return;
    }
    let id = QueueId::new();
    let mut env = format!(
        "sender={}\norigin={:?}\nextract={}\n",
        sub.sender, sub.origin, sub.extract_recipients
    );
    for r in &sub.recipients {
        env.push_str(&format!("rcpt={}\n", r.address));
    }
    for (k, v) in &sub.attributes {
        env.push_str(&format!("attr.{k}={v}\n"));
    }
    let reply = match mode {
        "tempfail" => CleanupReply::TempFail {
            code: 451,
            dsn: Dsn::MAIL_SYSTEM,
            text: "test cleanup says try again".into(),
        },
        "reject" => CleanupReply::Rejected {
            code: 550,
            dsn: Dsn::NOT_AUTHORIZED,
            text: "test cleanup refuses".into(),
        },
        _ => CleanupReply::Queued {
            queue_id: id.to_string(),
        },
    };
    let recorded = write(dir, &format!("{id}.eml"), &content) && write(dir, &format!("{id}.env"), env.as_bytes());
    if mode == "die" {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    if recorded {
        let _ = ipc.send(&reply);
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> bool {
    let tmp: PathBuf = dir.join(format!(".{name}"));
    std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, dir.join(name)).is_ok()
}
