//! Shared set-up of the `postern` command tests: a minimal config directory in a temporary
//! directory, and running the built binary against it.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const MAIN: &str = r#"# Postern test configuration
myhostname = "mx.example.test"   # the name in the greeting
queue_directory = "var/spool"

# where mailboxes and programs live, inside the test directory
virtual_mailbox_base = "var/mail"
daemon_directory = "libexec"
"#;

pub const MASTER: &str = r#"# The service table.

[[service]]
name = "smtp"
type = "inet"
listen = "127.0.0.1:0"   # SMTP
command = "smtpd"

# IMAP, at most five processes
[[service]]
name = "imap"
type = "inet"
listen = "127.0.0.1:0"
command = "imapd"
maxproc = 5

[[service]]
name = "cleanup"
type = "unix"
command = "cleanup"
"#;

/// A temporary installation: `ROOT/etc` with main.toml and master.toml, and executable
/// stand-ins for the programs in `ROOT/libexec`.
pub struct Site {
    pub root: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(etc.join("main.toml"), MAIN).unwrap();
        std::fs::write(etc.join("master.toml"), MASTER).unwrap();
        // The shipped aliases: postmaster's mail goes to the `postmaster` mailbox user.
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/aliases"),
            etc.join("aliases"),
        )
        .unwrap();
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let libexec = root.path().join("libexec");
        std::fs::create_dir(&libexec).unwrap();
        for p in ["smtpd", "imapd", "cleanup"] {
            let path = libexec.join(p);
            std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let site = Site { root };
        if nix::unistd::geteuid().is_root() {
            // As root the queue belongs to mail_owner, which must exist; use a stock account
            // rather than creating one on the test machine.
            let owner = ["nobody", "daemon"]
                .into_iter()
                .find(|n| nix::unistd::User::from_name(n).ok().flatten().is_some())
                .expect("an unprivileged account (nobody or daemon) to use as mail_owner");
            let mut main = MAIN.to_string();
            main.push_str(&format!("mail_owner = \"{owner}\"\n"));
            std::fs::write(site.etc().join("main.toml"), main).unwrap();
        }
        site
    }

    pub fn etc(&self) -> PathBuf {
        self.root.path().join("etc")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    /// Runs `postern -c ROOT/etc ARGS` with `stdin` (none: /dev/null).
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result {
        run_in(&self.etc(), args, stdin)
    }
}

/// What a run of the command did.
#[derive(Debug)]
pub struct Result {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_in(etc: &Path, args: &[&str], stdin: Option<&str>) -> Result {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postern"));
    cmd.arg("-c")
        .arg(etc)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        // The command may exit without reading (a refused name): a closed pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
    }
    let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
    Result {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// Names of the entries of a directory, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}
