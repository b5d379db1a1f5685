//! `postern start`'s purge of abandoned queue temporaries: it runs `postsuper -p` before
//! master starts, as `postfix start` runs postsuper, so the temporary files of writers that
//! were killed mid-write (a crash, kill -9, a power cut) go before the system runs again.
//! postsuper decides what is abandoned (its writer is gone) and logs each removal; this
//! only finds the program — beside `postern` (both are commands, installed together in
//! `PREFIX/sbin/`), else in `daemon_directory` — and passes its report on. A failure is
//! a warning: the start goes on.

use postern_lib::config::Config;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `postsuper -c CONFIG_DIR -p` when the queue exists (before the first start there
/// is nothing to purge); its lines go to standard error unless `quiet`.
pub fn run(config: &Config, quiet: bool) {
    let queue = Path::new(&config.main.queue_directory);
    if !queue.join("incoming").is_dir() {
        return;
    }
    let program = [
        postern_lib::config::exe_dir(),
        PathBuf::from(&config.main.daemon_directory),
    ]
    .into_iter()
    .map(|d| d.join("postsuper"))
    .find(|p| p.is_file());
    let Some(program) = program else {
        eprintln!("postern: warning: no postsuper beside postern or in daemon_directory: queue temporaries not purged");
        return;
    };
    let out = Command::new(&program)
        .arg("-c")
        .arg(&config.dir)
        .arg("-p")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => {
            if !quiet || !o.status.success() {
                eprint!("{}", String::from_utf8_lossy(&o.stderr));
            }
            if !o.status.success() {
                eprintln!("postern: warning: {} -p failed ({})", program.display(), o.status);
            }
        }
        Err(e) => eprintln!("postern: warning: cannot run {}: {e}", program.display()),
    }
}
