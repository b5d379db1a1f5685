//! Answering `postern status` on the control socket (see
//! `postern_lib::master_control`). Each request is served in place with a short timeout,
//! so a stuck client costs the loop at most that long, and only the account that runs
//! master can connect at all (the socket is mode 0600).

use crate::supervisor::Master;
use postern_lib::ipc::IpcStream;
use postern_lib::master_control::{ControlReply, ControlRequest, PROTOCOL, ServiceReport, VERSION};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts and answers every waiting control connection.
pub fn serve(master: &mut Master) {
    while let Some(stream) = master.accept_control() {
        if let Err(e) = answer(master, stream) {
            tracing::warn!("control request: {e}");
        }
    }
}

fn answer(master: &Master, stream: std::os::unix::net::UnixStream) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let mut ipc = IpcStream::server(stream, PROTOCOL, VERSION, Some(TIMEOUT)).map_err(|e| e.to_string())?;
    match ipc.recv::<ControlRequest>().map_err(|e| e.to_string())? {
        ControlRequest::Status => ipc.send(&report(master)).map_err(|e| e.to_string()),
    }
}

fn report(master: &Master) -> ControlReply {
    let now = Instant::now();
    let services = master
        .services
        .iter()
        .map(|(key, svc)| {
            let kids = master.children.values().filter(|c| &c.service == key);
            let (mut busy, mut idle, mut retiring, mut conns, mut served) = (0, 0, 0, 0u64, svc.served_by_exited);
            for c in kids {
                served += c.served;
                conns += u64::from(c.connections);
                if c.retiring {
                    retiring += 1;
                } else if c.available {
                    idle += 1;
                } else {
                    busy += 1;
                }
            }
            ServiceReport {
                key: key.clone(),
                listen: svc.def.listen.clone(),
                command: svc.def.program.display().to_string(),
                processes: busy + idle,
                busy,
                idle,
                connections: conns,
                retiring,
                served,
                restarts: svc.restarts,
                throttled_for: svc
                    .throttled_until
                    .filter(|t| *t > now)
                    .map(|t| (t - now).as_secs() + 1),
                maxproc: svc.def.maxproc,
            }
        })
        .collect();
    ControlReply::Status {
        pid: std::process::id(),
        reloads: master.reloads,
        services,
    }
}
