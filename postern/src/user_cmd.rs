//! `postern user`: manage the mailbox accounts in `CONFIG_DIR/users`.
//!
//! ```text
//! postern user add NAME [QUOTA]   new user; password on stdin; QUOTA in bytes (0: none)
//! postern user passwd NAME        new password for an existing user, on stdin
//! postern user quota NAME QUOTA   set (or with 0 clear) the quota
//! postern user del NAME           remove the user (its mailbox is left alone)
//! postern user list               names and quotas, never hashes
//! postern user where|move|pin|rebalance   the director's pairs: see crate::user_move
//! ```
//!
//! The password is read from standard input, one line, the trailing newline stripped
//! (`echo 'secret' | postern user add alice`); never from the command line, where other
//! users could see it in `ps`. When standard input is a terminal it is prompted for on
//! standard error, twice, without echo. It is stored as an argon2id hash.
//!
//! Security stance: the password is read byte by byte (no buffer holds more than the one
//! line) into memory that is wiped when dropped. The file is rewritten atomically with
//! mode 0600 (see [`postern_lib::users`]), under a lock on the config directory so that two
//! concurrent edits cannot lose one another; the slow part, hashing, happens before the lock.

use crate::files::{DirLock, print};
use postern_lib::users::{self, Users};
use postern_password::{self as password, Zeroizing};
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

/// The longest password accepted, in bytes.
const MAX_PASSWORD: usize = 1024;

const USAGE: &str = "usage: postern user {add NAME [QUOTA]|passwd NAME|quota NAME QUOTA|del NAME|list|where NAME|move NAME PAIR|pin|rebalance}";

/// Runs `postern user ARGS`.
pub fn run(dir: &Path, rest: &[String]) -> Result<ExitCode, String> {
    let args: Vec<&str> = rest.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["add", name] => add(dir, name, None),
        ["add", name, quota] => add(dir, name, Some(parse_quota(quota)?)),
        ["passwd", name] => passwd(dir, name),
        ["quota", name, quota] => edit(dir, |u| {
            u.set_quota(name, Some(parse_quota(quota)?)).map_err(|e| e.to_string())
        }),
        ["del", name] => edit(dir, |u| u.remove(name).map(drop).map_err(|e| e.to_string())),
        ["list"] => list(dir),
        ["where", name] => crate::user_move::where_is(dir, name),
        ["move", name, pair] => crate::user_move::move_user(dir, name, pair),
        ["pin"] => crate::user_move::pin(dir),
        ["rebalance"] => crate::user_move::rebalance(dir),
        _ => Err(USAGE.into()),
    }
}

fn parse_quota(text: &str) -> Result<u64, String> {
    users::parse_quota(text).ok_or_else(|| format!("quota {text:?} is not a number of bytes"))
}

fn add(dir: &Path, name: &str, quota: Option<u64>) -> Result<ExitCode, String> {
    users::check_name(name).map_err(|e| e.to_string())?;
    let path = users::path(dir);
    // Fail before asking for a password when the answer is already known.
    if Users::load(&path).map_err(|e| e.to_string())?.get(name).is_some() {
        return Err(format!("user {name} already exists"));
    }
    let hash = new_hash(name)?;
    edit(dir, |u| u.add(name, &hash, quota).map_err(|e| e.to_string()))
}

fn passwd(dir: &Path, name: &str) -> Result<ExitCode, String> {
    let path = users::path(dir);
    if Users::load(&path).map_err(|e| e.to_string())?.get(name).is_none() {
        return Err(format!("no such user {name}"));
    }
    let hash = new_hash(name)?;
    edit(dir, |u| u.set_password(name, &hash).map_err(|e| e.to_string()))
}

/// Loads the file under the directory lock, applies `change`, saves.
fn edit(dir: &Path, change: impl FnOnce(&mut Users) -> Result<(), String>) -> Result<ExitCode, String> {
    let _lock = DirLock::exclusive(dir)?;
    let path = users::path(dir);
    let mut u = Users::load(&path).map_err(|e| e.to_string())?;
    change(&mut u)?;
    u.save(&path).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

fn list(dir: &Path) -> Result<ExitCode, String> {
    let u = Users::load(&users::path(dir)).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for user in u.list() {
        out.push_str(&user.name);
        if let Some(q) = user.quota {
            out.push_str(&format!(" quota={q}"));
        }
        out.push('\n');
    }
    print(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Reads the new password and hashes it.
fn new_hash(name: &str) -> Result<String, String> {
    let pw = read_password(name)?;
    password::hash_argon2id(&pw).map_err(|e| e.to_string())
}

fn read_password(name: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let stdin = std::io::stdin();
    let pw = if stdin.is_terminal() {
        let first = prompt(&format!("New password for {name}: "))?;
        let second = prompt("Retype the password: ")?;
        if *first != *second {
            return Err("the passwords do not match".into());
        }
        first
    } else {
        read_line()?
    };
    if pw.is_empty() {
        return Err("empty password: give it on standard input, e.g. echo 'secret' | postern user add NAME".into());
    }
    Ok(pw)
}

/// Prompts on standard error and reads a line from the terminal with echo off.
fn prompt(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    struct Restore(nix::sys::termios::Termios);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
        }
    }
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let saved = tcgetattr(fd).map_err(|e| format!("cannot read terminal settings: {e}"))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    let _restore = Restore(saved);
    tcsetattr(fd, SetArg::TCSAFLUSH, &quiet).map_err(|e| format!("cannot turn off echo: {e}"))?;
    let _ = write!(std::io::stderr(), "{text}");
    read_line()
}

/// Reads one line from standard input, byte by byte, without the newline (or CR LF).
fn read_line() -> Result<Zeroizing<Vec<u8>>, String> {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_PASSWORD + 1));
    let mut byte = Zeroizing::new([0u8; 1]);
    loop {
        match rustix::io::read(fd, &mut byte[..]) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_PASSWORD => return Err(format!("password longer than {MAX_PASSWORD} bytes")),
            Ok(_) => line.push(byte[0]),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("cannot read the password from standard input: {e}")),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}
