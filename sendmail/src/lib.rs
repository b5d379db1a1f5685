//! # sendmail — the Sendmail compatibility gate (also `mailq` and `newaliases`)
//!
//! The crate builds three binaries from this one library — `sendmail`, `mailq` and
//! `newaliases` — so all three sit in `target/*/` after `cargo build`; each is [`main`], which
//! acts on argv[0].
//!
//! ```text
//! sendmail [-t] [-i|-oi] [-f SENDER|-r SENDER] [-F NAME] [-C CONFIG_DIR] [--] [RECIPIENT...]
//! sendmail -bs                  SMTP on standard input and output (submits through postdrop)
//! sendmail -bp | mailq          list the queue (runs postqueue -p)
//! sendmail -q                   flush the queue (runs postqueue -f)
//! sendmail -bi | newaliases     check the aliases files (alias_maps)
//! sendmail --help | --version
//! ```
//!
//! By default (`-bm`) sendmail reads a message from standard input until end of input or,
//! without `-i`, a line holding only `.`, and hands it to `postdrop` (in
//! `daemon_directory`) through a pipe, as Postfix does; postdrop stores it in the maildrop
//! and pickup passes it to cleanup. `-t` asks cleanup to take recipients from the
//! `To:`, `Cc:` and `Bcc:` headers too (and drop `Bcc:`), in addition to those on the
//! command line. Without `-f` the sender is the login name of the invoking user (cleanup
//! qualifies it with `myorigin`). The full name for a `From:` header that cleanup
//! generates is `-F`, else `$NAME`, else the GECOS field.
//!
//! Flags Sendmail and Postfix accept without effect are ignored (`-oem`, `-odi`, `-odb`,
//! `-oQ...`, `-v`, `-n`, `-m`, `-L LABEL`, `-N DSN`, `-B TYPE`, `-V ENVID`, `-X FILE`, ...);
//! any other flag is a usage error.
//!
//! `-bs` speaks SMTP on standard input and output, as Postfix's `sendmail -bs` (which
//! runs `smtpd -S`): smtpd's own protocol engine, local (no STARTTLS or AUTH, no
//! restrictions, relaying allowed: it is this host's user submitting), each accepted
//! message handed to postdrop as above and answered `250 2.0.0 Ok: queued as ID` only
//! once postdrop has stored it. The envelope sender is the client's `MAIL FROM`. It reads
//! smtpd's limits and timeouts (`smtpd_timeout`, `smtpd_data_timeout`,
//! `smtpd_command_line_limit`, `message_size_limit`, ...). See [`bs`].
//!
//! The configuration directory is `-C DIR`, else `$POSTERN_CONFIG`, else the default
//! ([`postern_lib::config::default_config_dir`]).
//!
//! ## Security stance
//!
//! sendmail runs as the invoking user with no privilege. It validates what it passes on
//! (no control characters in addresses or the name) but postdrop trusts none of it.
//!
//! ## Settings read
//!
//! `daemon_directory` (where postdrop and postqueue are), `alias_maps` (`-bi`).
//!
//! ## Exit status (sysexits)
//!
//! 0 accepted; 64 EX_USAGE bad flags or no recipients; 65 EX_DATAERR the message was
//! refused (too big, malformed: postdrop says why); 66 EX_NOINPUT standard input could not
//! be read; 67 EX_NOUSER no login name; 69 EX_UNAVAILABLE postdrop could not be run; 70
//! EX_SOFTWARE internal error; 74 EX_IOERR `-bs` could not write its replies; 75
//! EX_TEMPFAIL try again later; 78 EX_CONFIG bad configuration.
#![forbid(unsafe_code)]

mod args;
mod body;
mod bs;
mod submit;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use args::{Args, Mode};
use postern_lib::config::Config;

pub(crate) const EX_USAGE: u8 = 64;
pub(crate) const EX_NOINPUT: u8 = 66;
pub(crate) const EX_NOUSER: u8 = 67;
pub(crate) const EX_UNAVAILABLE: u8 = 69;
pub(crate) const EX_SOFTWARE: u8 = 70;
pub(crate) const EX_IOERR: u8 = 74;
pub(crate) const EX_CONFIG: u8 = 78;

/// An exit status and a one-line reason (empty: already reported by a child).
pub(crate) type Failure = (u8, String);

/// The whole program: `sendmail`, `mailq` and `newaliases` (three binaries of this crate)
/// each call this, and argv[0] says which one it is.
pub fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    let mut argv = std::env::args();
    let program = argv
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "sendmail".into());
    let rest: Vec<String> = argv.collect();
    match run(&program, &rest) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            if !msg.is_empty() {
                eprintln!("{program}: fatal: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(program: &str, argv: &[String]) -> Result<(), Failure> {
    let args = Args::parse(program, argv).map_err(|u| (EX_USAGE, format!("{}\n{}", u.0, args::USAGE_HINT)))?;
    if args.mode == Mode::Help {
        print!("{}", args::help(program));
        return Ok(());
    }
    let dir = args
        .config_dir
        .clone()
        .or_else(|| std::env::var_os("POSTERN_CONFIG").map(PathBuf::from))
        .unwrap_or_else(postern_lib::config::default_config_dir);
    let config = Config::load(&dir).map_err(|e| (EX_CONFIG, e.to_string()))?;
    let daemon_dir = PathBuf::from(&config.main.daemon_directory);
    match args.mode {
        Mode::Submit => submit::submit(&args, &dir, &daemon_dir),
        Mode::ListQueue => exec_postqueue(&daemon_dir, &dir, "-p"),
        Mode::Flush => exec_postqueue(&daemon_dir, &dir, "-f"),
        Mode::NewAliases => newaliases(&config),
        Mode::SmtpStdio => bs::serve(&config, &dir, submit::full_name(&args, &current_user())),
        Mode::Help => Ok(()),
    }
}

/// The invoking user's passwd entry, when there is one.
fn current_user() -> Option<nix::unistd::User> {
    nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten()
}

/// Replaces this process with `postqueue -c DIR FLAG`, as Postfix's sendmail does.
fn exec_postqueue(daemon_dir: &Path, dir: &Path, flag: &str) -> Result<(), Failure> {
    let program = daemon_dir.join("postqueue");
    let err = Command::new(&program).arg("-c").arg(dir).arg(flag).exec();
    Err((EX_UNAVAILABLE, format!("execute {}: {err}", program.display())))
}

/// `newaliases`: Postern reads `alias_maps` directly (no database to build), so this
/// checks each file and reports what a delivery would trip over.
fn newaliases(config: &Config) -> Result<(), Failure> {
    for name in &config.main.alias_maps {
        let path = config.dir.join(name);
        let table = postern_lib::aliases::Aliases::load(&path).map_err(|e| (EX_CONFIG, e.to_string()))?;
        for dup in table.duplicates() {
            eprintln!("newaliases: warning: {}: duplicate entry {dup:?}", path.display());
        }
    }
    Ok(())
}
