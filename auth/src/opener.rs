//! The privileged opener: how auth reads password files that only root may read, while
//! auth itself runs as the unprivileged `mail_owner`.
//!
//! When master runs as root, `etc/users` is mode 0600 owned by root and `/etc/shadow` is
//! root's too; a descriptor opened before the privilege drop goes stale as soon as
//! `postern user` replaces the file (it writes a new file and renames it over the old one),
//! and a kept directory descriptor does not help, because permissions are checked at
//! `open` with the caller's credentials. So, in `pre_init` (still root, still
//! single-threaded) auth starts a copy of itself, `auth opener CONFIG_DIR [MASTER_FILE]`,
//! connected by a socket pair on its standard input. That helper stays root and does
//! exactly one thing: on request it opens one of three files fixed when it started —
//! `CONFIG_DIR/users` (no symlink, regular file), the master users file
//! (`auth_master_users_file`, when set) or `/etc/shadow` — read-only and passes the
//! descriptor back (`SCM_RIGHTS`). It
//! takes no path from its peer, reads no password, talks to nothing else, holds no
//! descriptor but its channel and no capability but `CAP_DAC_READ_SEARCH`, and exits when
//! auth closes the socket. Everything that parses and verifies runs in the unprivileged
//! process. (The design of OpenSMTPD's privileged parent, reduced to one system call.)
//!
//! Without root (development), or for a service with `unprivileged = false`, auth opens
//! the files itself ([`Opener::Direct`]).

use postern_lib::ipc::IpcStream;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Protocol name of the opener channel.
pub const PROTOCOL: &str = "auth-opener";
/// How long auth waits for the helper.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The system password file.
pub const SHADOW: &str = "/etc/shadow";

/// Which file to open.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    /// `CONFIG_DIR/users`.
    Users,
    /// `/etc/shadow`.
    Shadow,
    /// `auth_master_users_file` (same format as `etc/users`).
    MasterUsers,
}

/// The files an opener may open, fixed when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The configuration directory (`users` is in it).
    pub config_dir: PathBuf,
    /// `auth_master_users_file`, when set.
    pub master_users: Option<PathBuf>,
}

impl Paths {
    /// The files of `config_dir`, without master users.
    pub fn new(config_dir: &Path) -> Paths {
        Paths {
            config_dir: config_dir.to_path_buf(),
            master_users: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct OpenRequest {
    file: Which,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OpenReply {
    /// The descriptor rides with this message.
    Opened,
    /// The file does not exist.
    Missing,
    /// It could not be opened.
    Error { reason: String },
}

/// Opens `which` read-only without following a symlink at the file itself. `Ok(None)`:
/// the file does not exist (or, for the master users, none is configured).
pub fn open_file(paths: &Paths, which: Which) -> Result<Option<File>, String> {
    let Some(path) = path_of(paths, which) else {
        return Ok(None);
    };
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => {
            let meta = f.metadata().map_err(|e| e.to_string())?;
            if !meta.is_file() {
                return Err(format!("{}: not a regular file", path.display()));
            }
            Ok(Some(f))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(format!("{}: is a symbolic link", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The path of `which` (`None`: master users, none configured).
pub fn path_of(paths: &Paths, which: Which) -> Option<PathBuf> {
    match which {
        Which::Users => Some(postern_lib::users::path(&paths.config_dir)),
        Which::Shadow => Some(PathBuf::from(SHADOW)),
        Which::MasterUsers => paths.master_users.clone(),
    }
}

/// How auth gets descriptors of password files.
#[derive(Debug)]
pub enum Opener {
    /// Open them directly (no privilege to keep).
    Direct(Paths),
    /// Ask the privileged helper.
    Helper {
        /// The channel.
        chan: IpcStream,
        /// The helper process (reaped on drop).
        child: Child,
    },
}

impl Opener {
    /// Starts the helper when this process is root and will drop privileges; otherwise
    /// opens directly. Call from `pre_init`.
    pub fn start(paths: &Paths, will_drop: bool) -> Result<Opener, String> {
        if !will_drop {
            return Ok(Opener::Direct(paths.clone()));
        }
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("opener").arg(&paths.config_dir);
        if let Some(m) = &paths.master_users {
            cmd.arg(m);
        }
        let child = cmd
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the opener helper: {e}"))?;
        let chan = IpcStream::client(ours, PROTOCOL, 1, Some(TIMEOUT)).map_err(|e| format!("opener helper: {e}"))?;
        Ok(Opener::Helper { chan, child })
    }

    /// Opens `which`; `Ok(None)` when it does not exist.
    pub fn open(&mut self, which: Which) -> Result<Option<File>, String> {
        match self {
            Opener::Direct(paths) => open_file(paths, which),
            Opener::Helper { chan, .. } => {
                chan.send(&OpenRequest { file: which })
                    .map_err(|e| format!("opener: {e}"))?;
                let (reply, mut fds): (OpenReply, Vec<OwnedFd>) =
                    chan.recv_with_fds().map_err(|e| format!("opener: {e}"))?;
                match reply {
                    OpenReply::Opened if fds.len() == 1 => Ok(fds.pop().map(File::from)),
                    OpenReply::Opened => Err("opener sent no descriptor".into()),
                    OpenReply::Missing => Ok(None),
                    OpenReply::Error { reason } => Err(reason),
                }
            }
        }
    }
}

impl Drop for Opener {
    fn drop(&mut self) {
        if let Opener::Helper { chan, child } = self {
            let _ = chan.get_ref().shutdown(std::net::Shutdown::Both);
            let _ = child.wait();
        }
    }
}

/// Keeps only what opening a root-only file needs: closes every descriptor but the
/// standard ones (master's status channel, listeners, pipes), and drops every capability
/// but `CAP_DAC_READ_SEARCH` (from the bounding, permitted and effective sets; the
/// inheritable and ambient sets are cleared). Best effort outside root.
fn confine() {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        let _ = nix::unistd::close(fd);
    }
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let keep = caps::Capability::CAP_DAC_READ_SEARCH;
    if let Ok(all) = caps::read(None, caps::CapSet::Bounding) {
        for cap in all.into_iter().filter(|&c| c != keep) {
            let _ = caps::drop(None, caps::CapSet::Bounding, cap);
        }
    }
    let only: caps::CapsHashSet = [keep].into_iter().collect();
    let _ = caps::clear(None, caps::CapSet::Ambient);
    let _ = caps::clear(None, caps::CapSet::Inheritable);
    let _ = caps::set(None, caps::CapSet::Effective, &only);
    let _ = caps::set(None, caps::CapSet::Permitted, &only);
    // It never runs another program; make sure none could ever gain privileges either.
    let _ = nix::sys::prctl::set_no_new_privs();
}

/// The helper's main: serves open requests on standard input until it closes.
pub fn helper_main(paths: &Paths) -> std::process::ExitCode {
    confine();
    let stdin = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(_) => return std::process::ExitCode::FAILURE,
    };
    let Ok(mut chan) = IpcStream::server(stdin, PROTOCOL, 1, None) else {
        return std::process::ExitCode::FAILURE;
    };
    while let Ok(req) = chan.recv::<OpenRequest>() {
        let sent = match open_file(paths, req.file) {
            Ok(Some(f)) => chan.send_with_fds(&OpenReply::Opened, &[f.as_fd()]),
            Ok(None) => chan.send(&OpenReply::Missing),
            Err(reason) => chan.send(&OpenReply::Error { reason }),
        };
        if sent.is_err() {
            break;
        }
    }
    std::process::ExitCode::SUCCESS
}
