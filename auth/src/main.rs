//! The `auth` daemon: its settings and one call into the event skeleton. See the crate
//! docs (`src/lib.rs`) for what it does; `auth opener DIR` is the privileged helper it
//! starts itself ([`postern_auth::opener`]).
#![forbid(unsafe_code)]

use postern_auth::backend::Backend;
use postern_auth::opener::{self, Opener};
use postern_auth::service::AuthService;
use postern_auth::throttle::Penalty;
use postern_lib::master_status::env;
use postern_lib::skeleton::event::event_server;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let (Some(mode), Some(dir)) = (args.get(1), args.get(2))
        && mode == "opener"
    {
        let paths = opener::Paths {
            config_dir: PathBuf::from(dir),
            master_users: args.get(3).map(PathBuf::from),
        };
        return opener::helper_main(&paths);
    }
    event_server("auth", |ctx| {
        let m = &ctx.main;
        let root = postern_lib::privs::is_root();
        let will_drop = root && std::env::var(env::RUN_AS).is_ok_and(|u| !u.is_empty());
        let system_users = m.auth_system_users && root;
        if m.auth_system_users && !root {
            tracing::warn!("auth_system_users = true needs master to run as root; system accounts are not used");
        }
        let paths = opener::Paths {
            config_dir: ctx.config.dir.clone(),
            master_users: (!m.auth_master_users_file.is_empty()).then(|| m.auth_master_users_file.path().to_path_buf()),
        };
        let opener = Opener::start(&paths, will_drop)?;
        let mut backend = Backend::new(opener, &paths, system_users);
        if let Err(e) = backend.refresh(std::time::Instant::now(), true) {
            tracing::warn!("cannot read password data: {e}");
        }
        let penalty = Penalty::new(m.auth_penalty_max.duration(), m.auth_failure_window.duration());
        Ok(AuthService::new(backend, penalty, m.auth_worker_threads as usize)
            .with_failure_delay(m.auth_failure_delay.duration())
            .with_system_mailboxes(m.local_system_users)
            .with_master_separator(&m.auth_master_user_separator)
            .server())
    })
}
