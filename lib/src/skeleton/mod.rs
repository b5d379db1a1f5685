//! The daemon skeleton: what every Postern daemon does before and around its own work.
//!
//! A daemon's `main` is its settings and one call: [`single::single_server`] for daemons
//! that do one bounded piece of work per connection with blocking I/O (cleanup, local,
//! smtp, bounce — Postfix's `single_server`), or [`event::event_server`] for daemons that
//! hold many slow or idle network clients per process on a mio event loop (smtpd, pop3d,
//! imapd — the Sun ONE dispatcher's multi-connection workers).
//! [`threaded::threaded_server`] is the single flavour with a thread per connection (a
//! pool: a thread whose connection ended waits for the next), for a daemon whose clients
//! may hold a connection for long (cleanup, mirror, replicator).
//!
//! Both flavours, in order:
//! 1. refuse to run unless started by master (the environment in
//!    [`crate::master_status::env`]);
//! 2. set up logging as `postern/NAME`;
//! 3. load `main.toml` with this service's `options` applied;
//! 4. adopt the listening sockets and the status channel master passed, close-on-exec
//!    from then on ([`crate::inherited_fd::adopt_socket`]): no program a daemon starts
//!    (local's user commands, auth's helper) inherits them;
//! 5. `chdir` to the queue directory (queue paths are relative, as in Postfix);
//! 6. run the daemon's `pre_init` hook while still privileged (open files it needs);
//! 7. when master runs as root and the service is unprivileged, drop to `mail_owner` for
//!    good ([`crate::privs::drop_to`]) — before reading a byte from any client;
//! 8. serve: report busy/available to master, honour `max_use` (connections served, then
//!    exit), `max_idle` (exit when idle that long), SIGTERM (stop accepting, finish the
//!    current work, exit) and master's death (end-of-file on the status channel: same).

pub mod conn;
pub mod event;
pub mod single;
pub mod threaded;

use crate::config::{Config, MainConfig};
use crate::master_status::{self, Status, env};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// What a daemon knows about itself once the skeleton has set up.
#[derive(Debug, Clone)]
pub struct Context {
    /// Program name for logs, `postern/smtpd` or `postern/submission/smtpd`.
    pub program: String,
    /// `NAME/TYPE` of the service.
    pub service: String,
    /// Both config files.
    pub config: Config,
    /// main.toml as this service sees it.
    pub main: MainConfig,
    /// Connections to serve before exiting.
    pub max_use: u64,
    /// Idle time before exiting.
    pub max_idle: Duration,
    /// Connections at once (event flavour).
    pub max_conns: usize,
}

/// Accepts one client on ready listener `i` (single and threaded servers); `None` after a
/// spurious wake-up or an interrupted call, or when accept failed (logged).
fn accept_ready(listeners: &[Listener], i: usize) -> Option<Accepted> {
    match listeners.get(i)?.accept() {
        Ok(c) => Some(c),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => None,
        Err(e) => {
            tracing::warn!("accept: {e}");
            None
        }
    }
}

/// A listening socket passed by master.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix stream.
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => {
                // (Linux: an accepted socket does not inherit the listener's O_NONBLOCK, so
                // it is blocking already; no system call to say so again)
                let (s, peer) = l.accept()?;
                Ok(Accepted {
                    stream: Stream::Tcp(s),
                    peer: Peer::Inet(peer),
                })
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                Ok(Accepted {
                    stream: Stream::Unix(s),
                    peer: Peer::Unix,
                })
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

/// An accepted client connection (blocking mode; event daemons switch it themselves).
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix stream.
    Unix(UnixStream),
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream {
    /// Sets read and write timeouts.
    pub fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t)),
            Stream::Unix(s) => s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t)),
        }
    }
}

/// Who is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A network client.
    Inet(SocketAddr),
    /// A local process.
    Unix,
}

/// A new connection.
#[derive(Debug)]
pub struct Accepted {
    /// The socket.
    pub stream: Stream,
    /// The client.
    pub peer: Peer,
}

impl Accepted {
    /// Our address on it (TCP), asked of the kernel when wanted (not per connection).
    pub fn local(&self) -> Option<SocketAddr> {
        match &self.stream {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Unix(_) => None,
        }
    }
}

/// Why a daemon could not start. Printed as one line by the skeleton, exit status 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Not started by master.
    #[error("this program is a Postern daemon and runs only under master (postern start)")]
    NotUnderMaster,
    /// The environment master set is inconsistent.
    #[error("bad environment from master: {0}")]
    BadEnv(String),
    /// The configuration could not be loaded.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The queue directory is not usable.
    #[error("cannot chdir to queue directory {0}: {1}")]
    QueueDir(String, io::Error),
    /// The daemon's own initialisation failed.
    #[error("{0}")]
    Init(String),
    /// Privileges could not be dropped.
    #[error("{0}")]
    Privs(#[from] crate::privs::PrivError),
}

/// Everything set up before serving: context, listeners, status channel, stop signal pipe.
pub(crate) struct Setup {
    pub ctx: Context,
    pub listeners: Vec<Listener>,
    pub status: Option<UnixStream>,
    pub signals: UnixStream,
    run_as: Option<String>,
}

fn env_u64(name: &str, default: u64) -> Result<u64, StartError> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| StartError::BadEnv(format!("{name}={v:?}"))),
        Err(_) => Ok(default),
    }
}

/// Steps 1–5 of the module doc.
pub(crate) fn setup(command: &str) -> Result<Setup, StartError> {
    let service = std::env::var(env::SERVICE).map_err(|_| StartError::NotUnderMaster)?;
    let dir = PathBuf::from(std::env::var_os(env::CONFIG_DIR).ok_or(StartError::NotUnderMaster)?);
    let config = match std::env::var_os(env::CONFIG_SNAPSHOT) {
        Some(snap) => {
            let text = std::fs::read_to_string(&snap)
                .map_err(|e| StartError::BadEnv(format!("config snapshot {}: {e}", PathBuf::from(&snap).display())))?;
            let texts: crate::master_control::ConfigSnapshot =
                serde_json::from_str(&text).map_err(|e| StartError::BadEnv(format!("config snapshot: {e}")))?;
            Config::load_texts(&dir, &texts.main, &texts.master)?
        }
        None => Config::load(&dir)?,
    };
    let main = config.main_for(&service)?;
    // As Postfix: `syslog_name/command`, so `postern/smtpd` for the smtp service and, with
    // `options = { syslog_name = "postern/submission" }`, `postern/submission/smtpd`.
    let program = format!("{}/{command}", main.syslog_name);
    crate::log::init(&program, &main.maillog_file);
    let nfds = env_u64(env::LISTEN_FDS, 0)?;
    let kinds = std::env::var(env::LISTEN_KINDS).unwrap_or_default();
    let kinds: Vec<&str> = kinds.split(',').filter(|k| !k.is_empty()).collect();
    if kinds.len() as u64 != nfds || nfds > 64 {
        return Err(StartError::BadEnv(format!("{} listeners but kinds {kinds:?}", nfds)));
    }
    let mut listeners = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let fd = master_status::FIRST_LISTEN_FD + i as i32;
        let owned: OwnedFd = crate::inherited_fd::adopt_socket(fd)
            .ok_or_else(|| StartError::BadEnv(format!("listener descriptor {fd} is not an open socket")))?;
        let l = match *kind {
            "inet" => Listener::Tcp(TcpListener::from(owned)),
            "unix" => Listener::Unix(UnixListener::from(owned)),
            other => return Err(StartError::BadEnv(format!("listener kind {other:?}"))),
        };
        match &l {
            Listener::Tcp(t) => t.set_nonblocking(true),
            Listener::Unix(u) => u.set_nonblocking(true),
        }
        .map_err(|e| StartError::BadEnv(format!("listener {fd}: {e}")))?;
        listeners.push(l);
    }
    let status = crate::inherited_fd::adopt_socket(master_status::STATUS_FD).map(UnixStream::from);
    let ctx = Context {
        program,
        service,
        max_use: env_u64(env::MAX_USE, u64::from(main.max_use))?.max(1),
        max_idle: Duration::from_secs(env_u64(env::MAX_IDLE, main.max_idle.0)?),
        max_conns: env_u64(env::MAX_CONNS, u64::from(main.default_connection_limit))?.max(1) as usize,
        config,
        main,
    };
    std::env::set_current_dir(&ctx.main.queue_directory)
        .map_err(|e| StartError::QueueDir(ctx.main.queue_directory.to_string(), e))?;
    let (sig_read, sig_write) = UnixStream::pair().map_err(|e| StartError::Init(format!("socketpair: {e}")))?;
    sig_read
        .set_nonblocking(true)
        .map_err(|e| StartError::Init(e.to_string()))?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let w = sig_write.try_clone().map_err(|e| StartError::Init(e.to_string()))?;
        signal_hook::low_level::pipe::register(sig, w).map_err(|e| StartError::Init(format!("signal: {e}")))?;
    }
    let run_as = std::env::var(env::RUN_AS).ok().filter(|s| !s.is_empty());
    Ok(Setup {
        ctx,
        listeners,
        status,
        signals: sig_read,
        run_as,
    })
}

impl Setup {
    /// Step 7: drop privileges when master asked for it.
    pub(crate) fn drop_privileges(&self) -> Result<(), StartError> {
        if let Some(user) = &self.run_as
            && crate::privs::is_root()
        {
            crate::privs::drop_to(user)?;
        }
        Ok(())
    }

    /// Tells master our state; a failure means master is gone.
    pub(crate) fn report(&mut self, status: Status) -> bool {
        match &mut self.status {
            Some(s) => status.send(s).is_ok(),
            None => true,
        }
    }
}

/// Steps 1–7 for both flavours: set up, run the daemon's privileged `pre_init`, drop
/// privileges. On failure the error is logged and the exit status returned.
pub(crate) fn prepare<S>(
    command: &str,
    pre_init: impl FnOnce(&Context) -> Result<S, String>,
) -> Result<(Setup, S), std::process::ExitCode> {
    let setup = setup(command).map_err(|e| fatal(command, &e))?;
    let state = pre_init(&setup.ctx).map_err(|e| fatal(command, &e))?;
    setup.drop_privileges().map_err(|e| fatal(command, &e))?;
    Ok((setup, state))
}

/// Drains the signal pipe; true when a stop signal arrived.
pub(crate) fn drain(sock: &mut UnixStream) -> bool {
    use io::Read;
    let mut buf = [0u8; 64];
    let mut got = false;
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return got,
            Ok(_) => got = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return got,
        }
    }
}

/// Logs a start-up failure as one line and returns the exit status.
pub(crate) fn fatal(command: &str, err: &dyn std::fmt::Display) -> std::process::ExitCode {
    crate::log::init(&format!("postern/{command}"), "-");
    tracing::error!("fatal: {err}");
    std::process::ExitCode::FAILURE
}
