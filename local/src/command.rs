//! Delivery to a `|command` target, as Postfix's local does it: `/bin/sh -c COMMAND` with
//! the message on standard input (a `From sender date` line, `Return-Path:` and
//! `Delivered-To:` before it), an environment of its own (`SENDER`, `RECIPIENT`,
//! `ORIGINAL_RECIPIENT`, `USER`, `LOGNAME`, `HOME`, `SHELL`, `EXTENSION`, `DOMAIN`,
//! `LOCAL`, `PATH=/usr/bin:/bin`; nothing of local's own), the rights of the account the
//! target belongs to (set in the child by the standard library: no supplementary groups,
//! gid, then uid), in its own process group, killed with it after `command_time_limit`.
//! It holds standard input (the message), output and error (one pipe back to local) and
//! no other descriptor of local's: everything local holds is close-on-exec from birth (its
//! listening socket and status channel included), and in the child every descriptor from 3
//! up is marked close-on-exec once more before the exec
//! ([`postern_lib::inherited_fd::only_stdio_on_exec`]) — a background process the command
//! leaves behind cannot accept local's next job or write to master.
//!
//! The exit status is read as sysexits(3), as Postfix does: 0 delivered; `EX_TEMPFAIL`
//! (75) and `EX_OSERR` (71) try again later; any other status, or the time limit, is a
//! bounce whose text carries the command's output (standard output and error, first
//! [`MAX_OUTPUT`] bytes); death by a signal other than the time-limit kill tries again.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::delivery::Outcome;
use crate::ids::Identity;
use postern_lib::dsn::Dsn;

/// Most output bytes kept for the bounce text.
pub const MAX_OUTPUT: usize = 1024;
/// How often a running command is checked.
const POLL: Duration = Duration::from_millis(20);

/// The facts a command's environment is made of.
pub struct CommandEnv<'a> {
    /// Envelope sender.
    pub sender: &'a str,
    /// The recipient being delivered (`user+ext@domain`).
    pub recipient: &'a str,
    /// The recipient as first queued.
    pub original: &'a str,
    /// Its whole local part (extension included), as Postfix's `LOCAL`.
    pub local: &'a str,
    /// The extension (`ext` of `user+ext`), or empty.
    pub extension: &'a str,
    /// The recipient's domain.
    pub domain: &'a str,
}

/// What the sysexits code `code` means: (temporary?, DSN, text).
fn sysexit(code: i32) -> (bool, Dsn, &'static str) {
    match code {
        64 => (false, Dsn::MAIL_SYSTEM.permanent(), "command line usage error"),
        65 => (false, Dsn::MEDIA, "data format error"),
        66 => (false, Dsn::MAIL_SYSTEM.permanent(), "cannot open input"),
        67 => (false, Dsn::BAD_MAILBOX, "addressee unknown"),
        68 => (false, Dsn::BAD_SYSTEM, "host name unknown"),
        69 => (false, Dsn::MAIL_SYSTEM.permanent(), "service unavailable"),
        70 => (false, Dsn::MAIL_SYSTEM.permanent(), "internal software error"),
        71 => (true, Dsn::MAIL_SYSTEM, "system resource problem"),
        72 => (false, Dsn::MAIL_SYSTEM.permanent(), "critical OS file missing"),
        73 => (false, Dsn::MAILBOX_STATUS.permanent(), "can't create user output file"),
        74 => (false, Dsn::MAIL_SYSTEM.permanent(), "input/output error"),
        75 => (true, Dsn::MAIL_SYSTEM, "temporary failure"),
        76 => (false, Dsn::PROTOCOL, "remote protocol error"),
        77 => (false, Dsn::SECURITY, "permission denied"),
        78 => (false, Dsn::MISCONFIGURED.permanent(), "local configuration error"),
        _ => (false, Dsn::MAIL_SYSTEM.permanent(), "unknown mail system error"),
    }
}

/// Runs `cmd` with the rights of `id` (`switch`: change to them; false: run as local
/// itself), `head` then `message` on its standard input.
pub fn run(
    cmd: &str,
    id: &Identity,
    switch: bool,
    env: &CommandEnv<'_>,
    head: Vec<u8>,
    mut message: impl Read + Send + 'static,
    limit: Duration,
) -> Outcome {
    let (out_r, out_w) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return Outcome::temp(Dsn::MAIL_SYSTEM, format!("pipe: {e}")),
    };
    let err_w = match out_w.try_clone() {
        Ok(w) => w,
        Err(e) => return Outcome::temp(Dsn::MAIL_SYSTEM, format!("pipe: {e}")),
    };
    let home = if id.home.is_dir() { id.home.clone() } else { "/".into() };
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SENDER", env.sender)
        .env("RECIPIENT", env.recipient)
        .env("ORIGINAL_RECIPIENT", env.original)
        .env("LOCAL", env.local)
        .env("EXTENSION", env.extension)
        .env("DOMAIN", env.domain)
        .env("USER", &id.name)
        .env("LOGNAME", &id.name)
        .env("HOME", &id.home)
        .env("SHELL", if id.shell.is_empty() { "/bin/sh" } else { &id.shell })
        .current_dir(home)
        .stdin(Stdio::piped())
        .stdout(out_w)
        .stderr(err_w)
        .process_group(0);
    if switch {
        c.uid(id.uid).gid(id.gid);
    }
    postern_lib::inherited_fd::only_stdio_on_exec(&mut c);
    // Only root may start it with other ids; the child sets them before it runs anything.
    let spawned = if switch {
        crate::ids::as_root(|| c.spawn())
    } else {
        c.spawn()
    };
    let mut child = match spawned {
        Ok(ch) => ch,
        Err(e) => return Outcome::temp(Dsn::MAIL_SYSTEM, format!("cannot run command \"{cmd}\": {e}")),
    };
    drop(c);
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    // The message goes in on one thread and the output comes back on another, so a
    // command that writes before it reads cannot stall either side.
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = stdin
                .write_all(&head)
                .and_then(|()| std::io::copy(&mut message, &mut stdin));
        });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut r = out_r;
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
                }
            }
        }
        let _ = tx.send(kept);
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Outcome::temp(Dsn::MAIL_SYSTEM, format!("waiting for command: {e}")),
        }
    };
    if status.is_none() {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
    // Output written by the command itself is complete once it exited; a background
    // process it left holding the pipe is not waited for long.
    let output = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    let output = String::from_utf8_lossy(&output);
    let output: String = output
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let with_output = |text: String| {
        if output.is_empty() {
            text
        } else {
            format!("{text}. Command output: {output}")
        }
    };
    let Some(status) = status else {
        return Outcome::perm(
            Dsn::MAIL_SYSTEM.permanent(),
            with_output(format!("command time limit exceeded: \"{cmd}\"")),
        );
    };
    if status.success() {
        return Outcome::sent(&format!("delivered to command: {cmd}"));
    }
    if let Some(code) = status.code() {
        let (temp, dsn, what) = sysexit(code);
        let text = with_output(format!("command died with status {code} ({what}): \"{cmd}\""));
        return if temp {
            Outcome::temp(dsn, text)
        } else {
            Outcome::perm(dsn, text)
        };
    }
    let sig = status.signal().unwrap_or(0);
    Outcome::temp(
        Dsn::MAIL_SYSTEM,
        with_output(format!("command died with signal {sig}: \"{cmd}\"")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> CommandEnv<'static> {
        CommandEnv {
            sender: "s@example.test",
            recipient: "r+x@example.test",
            original: "r+x@example.test",
            local: "r+x",
            extension: "x",
            domain: "example.test",
        }
    }

    fn go(cmd: &str, limit: Duration) -> Outcome {
        run(
            cmd,
            &Identity::current(),
            false,
            &env(),
            b"From s\n".to_vec(),
            std::io::Cursor::new(b"Subject: t\n\nbody\n".to_vec()),
            limit,
        )
    }

    #[test]
    fn exit_codes_map_like_sysexits() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let ok = go(
            &format!(
                "cat > {0}; echo \"$SENDER $RECIPIENT $EXTENSION $LOCAL $DOMAIN $PATH\" >> {0}",
                out.display()
            ),
            Duration::from_secs(30),
        );
        assert_eq!(ok.code, 250, "{ok:?}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "From s\nSubject: t\n\nbody\ns@example.test r+x@example.test x r+x example.test /usr/bin:/bin\n"
        );
        let t = go("exit 75", Duration::from_secs(30));
        assert_eq!((t.code, t.dsn), (450, Dsn::MAIL_SYSTEM));
        let p = go("echo no such list >&2; exit 67", Duration::from_secs(30));
        assert_eq!((p.code, p.dsn), (550, Dsn::BAD_MAILBOX));
        assert!(p.text.contains("Command output: no such list"), "{}", p.text);
        let slow = go("echo started; sleep 30", Duration::from_millis(300));
        assert_eq!(slow.code, 550);
        assert!(slow.text.contains("time limit"), "{}", slow.text);
    }

    #[test]
    fn a_command_holds_only_stdin_stdout_and_stderr() {
        // A descriptor of local's born without close-on-exec (pipe(2) without flags).
        let (_r, _w) = rustix::pipe::pipe().unwrap();
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("fds");
        let o = go(
            &format!(
                "for f in /proc/$$/fd/*; do [ -e \"$f\" ] && echo \"${{f##*/}}\" >> {}; done; exit 0",
                out.display()
            ),
            Duration::from_secs(30),
        );
        assert_eq!(o.code, 250, "{o:?}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "0\n1\n2\n");
    }
}
