//! Start-up: everything master does before its loop, each failure one line naming the
//! cause. Load and check the configuration (every program must be executable), take the
//! queue's pid-file lock (two masters on one queue are refused), make the queue
//! directories, open every listener (all or nothing), open the control socket.

use crate::listeners;
use crate::services::Svc;
use postern_lib::config::Config;
use postern_lib::master_control::ConfigSnapshot;
use rustix::fs::{FlockOperation, flock};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Loads the configuration and checks that every service's program can be executed.
/// Returns it with the texts it was loaded from (for the children's snapshot).
pub fn load_checked(dir: &Path) -> Result<(Config, ConfigSnapshot), String> {
    let (main, master) = Config::read_texts(dir).map_err(|e| e.to_string())?;
    let config = Config::load_texts(dir, &main, &master).map_err(|e| e.to_string())?;
    for svc in &config.services {
        let p = &svc.program;
        let ok = std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        match ok {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "service {}: command {} is not an executable file",
                    svc.key(),
                    p.display()
                ));
            }
            Err(e) => return Err(format!("service {}: command {}: {e}", svc.key(), p.display())),
        }
    }
    Ok((config, ConfigSnapshot { main, master }))
}

/// Writes the snapshot children load their configuration from (atomically).
pub fn write_snapshot(config: &Config, snap: &ConfigSnapshot) -> Result<(), String> {
    let path = config.snapshot_file();
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("config.json");
    let json = serde_json::to_vec(snap).map_err(|e| e.to_string())?;
    postern_lib::safe_open::write_atomic(dir, name, 0o644, |f| f.write_all(&json))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Takes the pid-file lock and writes our pid. The returned file must stay open.
pub fn lock_pid_file(config: &Config) -> Result<File, String> {
    let path = config.pid_file();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("cannot open pid file {}: {e}", path.display()))?;
    if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(format!(
            "the Postern mail system is already running on queue {} (pid {})",
            config.main.queue_directory,
            pid.trim()
        ));
    }
    f.set_len(0)
        .and_then(|_| writeln!(f, "{:>10}", std::process::id()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(f)
}

/// Opens every service's listeners, or none.
pub fn open_services(config: &Config, owner: Option<(u32, u32)>) -> Result<BTreeMap<String, Svc>, String> {
    let mut out: BTreeMap<String, Svc> = BTreeMap::new();
    for svc in &config.services {
        match listeners::open_all(svc, owner) {
            Ok(o) => {
                out.insert(svc.key(), Svc::new(svc.clone(), o));
            }
            Err(e) => {
                for (_, s) in out {
                    listeners::close_all(s.listeners);
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Binds the control socket, mode 0600.
pub fn open_control(config: &Config) -> Result<std::os::unix::net::UnixListener, String> {
    let path = config.control_socket();
    let _ = std::fs::remove_file(&path);
    let l =
        std::os::unix::net::UnixListener::bind(&path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(l)
}
