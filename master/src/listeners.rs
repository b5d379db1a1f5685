//! Opening the listening sockets of a service. Master opens every socket itself (so
//! privileged ports and socket ownership are master's business) and passes them to the
//! children it starts.
//!
//! Unix sockets live under the queue directory (`private/NAME` by default, `public/NAME`
//! for the ones local users may reach). A stale socket file from an earlier run is
//! removed before binding — only if it really is a socket, never a regular file or a
//! symlink — which is safe because master holds the queue's pid-file lock. The socket is
//! mode 0666; the directory's mode decides who may reach it, as in Postfix.

use postern_lib::config::{Service, ServiceType, parse_inet};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// One open listening socket.
#[derive(Debug)]
pub struct Open {
    /// The socket.
    pub fd: OwnedFd,
    /// `inet` or `unix`.
    pub kind: &'static str,
    /// The address as configured.
    pub addr: String,
}

/// Opens every listener of `svc`, or none: on failure the ones already opened are closed
/// (and their socket files removed) and the error names the service and address.
pub fn open_all(svc: &Service, owner: Option<(u32, u32)>) -> Result<Vec<Open>, String> {
    let mut out: Vec<Open> = Vec::new();
    for addr in &svc.listen {
        match open_one(svc.entry.kind, addr, owner) {
            Ok(o) => out.push(o),
            Err(e) => {
                close_all(out);
                return Err(format!("service {}: cannot listen on {addr}: {e}", svc.key()));
            }
        }
    }
    Ok(out)
}

fn open_one(kind: ServiceType, addr: &str, owner: Option<(u32, u32)>) -> Result<Open, String> {
    match kind {
        ServiceType::Inet => {
            let sa = parse_inet(addr)?;
            let l = TcpListener::bind(sa).map_err(|e| e.to_string())?;
            Ok(Open {
                fd: l.into(),
                kind: "inet",
                addr: addr.to_string(),
            })
        }
        ServiceType::Unix => {
            let path = Path::new(addr);
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => {
                    std::fs::remove_file(path).map_err(|e| format!("removing stale socket: {e}"))?
                }
                Ok(_) => return Err("exists and is not a socket".into()),
                Err(_) => {}
            }
            let l = UnixListener::bind(path).map_err(|e| e.to_string())?;
            let set_up =
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).and_then(|_| match owner {
                    Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
                    None => Ok(()),
                });
            if let Err(e) = set_up {
                let _ = std::fs::remove_file(path);
                return Err(e.to_string());
            }
            Ok(Open {
                fd: l.into(),
                kind: "unix",
                addr: addr.to_string(),
            })
        }
    }
}

/// Closes listeners, removing unix socket files.
pub fn close_all(open: Vec<Open>) {
    for o in open {
        if o.kind == "unix" {
            let _ = std::fs::remove_file(&o.addr);
        }
    }
}
