//! The operator's first hour (issue 17), as README.md tells it: the README's commands run
//! as written in a copy of the checkout layout, mail that cannot be delivered ends in
//! postmaster's mailbox, and the help, version and error texts are exact.
//!
//! [`Layout`] is a throwaway checkout: `etc/` copied from the repository (every shipped
//! file), the built programs hard-linked into `target/release/` (so each
//! finds its config as `../../etc`, exactly as from a real checkout), and only the ports
//! changed to free ones so that a developer's running instance is not disturbed. The
//! README's shell block then runs unchanged, as one script, with the layout as its
//! working directory.

use postern_tests::{bin, bin_dir, free_port, repo_root, wait_for};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A copy of the checkout layout in a temporary directory; stopped when dropped.
struct Layout {
    root: tempfile::TempDir,
    ports: [u16; 5],
}

impl Layout {
    fn new() -> Layout {
        if postern_tests::is_root() {
            postern_lib::accounts::ensure_mail_owner("postern").expect("mail_owner");
        }
        let root = tempfile::Builder::new().prefix("postern-layout").tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        // Every shipped file of etc/ (not a developer's users file).
        for e in std::fs::read_dir(repo_root().join("etc")).unwrap().flatten() {
            if e.file_type().unwrap().is_file() && e.file_name() != "users" {
                std::fs::copy(e.path(), etc.join(e.file_name())).unwrap();
            }
        }
        let release = root.path().join("target/release");
        std::fs::create_dir_all(&release).unwrap();
        for e in std::fs::read_dir(bin_dir()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().unwrap();
            if meta.is_file()
                && meta.permissions().mode() & 0o111 != 0
                && !name.contains('.')
                && std::fs::hard_link(e.path(), release.join(&name)).is_err()
            {
                std::fs::copy(e.path(), release.join(&name)).unwrap();
            }
        }
        let ports = [free_port(), free_port(), free_port(), free_port(), free_port()];
        let l = Layout { root, ports };
        let out = l.postern(&[
            "config",
            "set",
            &format!("smtp/inet.listen=127.0.0.1:{}", ports[0]),
            &format!("submission/inet.listen=127.0.0.1:{}", ports[1]),
            &format!("pop3/inet.listen=127.0.0.1:{}", ports[2]),
            &format!("imap/inet.listen=127.0.0.1:{}", ports[3]),
            &format!("relayhost=[127.0.0.1]:{}", ports[4]),
            "shutdown_timeout=5s",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        l
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.path().join(p)
    }

    /// `target/release/postern ARGS` in the layout, without `-c`: the default config.
    fn postern(&self, args: &[&str]) -> Output {
        Command::new(self.path("target/release/postern"))
            .args(args)
            .current_dir(self.root.path())
            .output()
            .unwrap()
    }

    /// Runs `script` with bash in the layout.
    fn shell(&self, script: &str) -> Output {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.root.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        let _ = self.postern(&["stop"]);
    }
}

/// The first ```sh block after `marker` in README.md.
fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let after = &readme[readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has no {marker:?}"))..];
    let start = after.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let len = after[start..].find("```").expect("end of block");
    after[start..start + len].to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn readme_first_commands_and_send_yourself_a_mail_work_pasted_whole() {
    let l = Layout::new();
    // The README's first command, after the build: start, which lists what is open.
    let first = readme_block("## Try it");
    assert_eq!(
        first.trim(),
        "cargo build --release --workspace && target/release/postern start"
    );
    let out = l.postern(&["start"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = std::fs::read_to_string(l.path("var/spool/pid/master.pid")).unwrap();
    let [smtp, submission, pop3, imap, _] = l.ports;
    assert_eq!(
        text(&out.stdout),
        format!(
            "the Postern mail system is running (pid {})\n  imap        127.0.0.1:{imap}\n  pop3        127.0.0.1:{pop3}\n  smtp        127.0.0.1:{smtp}\n  submission  127.0.0.1:{submission}\n  log         {}\n",
            pid.trim(),
            l.path("var/log/maillog").display()
        )
    );
    assert_eq!(
        text(&out.stderr),
        "postern: created the mailbox user postmaster for mail to postmaster (and what aliases sends there); read it after: postern user passwd postmaster\n"
    );

    // "Send yourself a mail", as one script: it must find the mail, no race.
    let block = readme_block("Send yourself a mail");
    let out = l.shell(&block);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("Subject: hi\n")
            && stdout.contains("\nhello\n")
            && stdout.contains("Delivered-To: alice@example.test"),
        "the mail was not found by the README's block:\n{stdout}\n{}",
        text(&out.stderr)
    );
    // Read it over IMAP as the README says: alice's first login on her new mailbox.
    let listing = postern_tests::python(&format!(
        "import imaplib\nc = imaplib.IMAP4('127.0.0.1', {imap})\nc.login('alice', 'alice-pw')\nprint(c.select('INBOX')[1][0].decode())\nc.logout()"
    ));
    assert_eq!(listing.trim(), "1");
    // An SMTP session (smtpd asks anvil about it), then stop: a clean stop warns of nothing.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", smtp)).unwrap();
    let mut greeting = [0u8; 512];
    let n = std::io::Read::read(&mut c, &mut greeting).unwrap();
    assert!(greeting[..n].starts_with(b"220 "), "{}", text(&greeting[..n]));
    std::io::Write::write_all(&mut c, b"QUIT\r\n").unwrap();
    let _ = std::io::Read::read(&mut c, &mut greeting);
    let stop = l.postern(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let log = std::fs::read_to_string(l.path("var/log/maillog")).unwrap();
    assert!(!log.contains("warning: anvil"), "{log}");
    // A new mailbox's first login is not reported as if it were damaged.
    assert!(!log.contains("uidlist missing"), "{log}");
}

#[test]
fn an_unknown_users_bounce_from_an_unknown_sender_ends_in_postmasters_mailbox() {
    let l = Layout::new();
    // Before the first start nothing is wrong: what start creates is only a note.
    let check = l.postern(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(!text(&check.stderr).contains("warning"), "{}", text(&check.stderr));
    let out = l.postern(&["start", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!((text(&out.stdout), text(&out.stderr)), (String::new(), String::new()));

    // sendmail exits 0; the bounce to the unknown sender bounces too; the double bounce
    // lands in postmaster's mailbox.
    let out = l.shell("printf 'Subject: lost?\\n\\nhello\\n' | target/release/sendmail -f nobody-here@example.test nosuchuser@example.test");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new = l.path("var/mail/postmaster/new");
    let arrived = wait_for(Duration::from_secs(30), || {
        std::fs::read_dir(&new).is_ok_and(|d| d.count() == 1)
    });
    assert!(
        arrived,
        "no mail in {}\n{}",
        new.display(),
        std::fs::read_to_string(l.path("var/log/maillog")).unwrap_or_default()
    );
    let file = std::fs::read_dir(&new).unwrap().flatten().next().unwrap().path();
    let mail = std::fs::read_to_string(file).unwrap();
    assert!(mail.contains("Delivered-To: postmaster@example.test"), "{mail}");
    assert!(mail.contains("nobody-here@example.test"), "{mail}");
    // local logs the delivery just after the file is in place.
    let log = || std::fs::read_to_string(l.path("var/log/maillog")).unwrap_or_default();
    let delivered = "to=<postmaster@example.test>, relay=local";
    assert!(
        wait_for(Duration::from_secs(10), || log().contains(delivered)),
        "{}",
        log()
    );
    assert!(!log().contains("dropped") && !log().contains("discarded"), "{}", log());
    // And the mailbox can be read once it has a password.
    let passwd = l.shell("echo 'pm-pw' | target/release/postern user passwd postmaster");
    assert!(passwd.status.success(), "{}", text(&passwd.stderr));
}

#[test]
fn help_version_and_usage_texts() {
    // --version on every program, one line, before any configuration is read.
    for p in [
        "postern",
        "sendmail",
        "mailq",
        "newaliases",
        "postqueue",
        "postcat",
        "postsuper",
        "postdrop",
        "master",
        "smtpd",
        "cleanup",
        "pickup",
        "qmgr",
        "trivial-rewrite",
        "anvil",
        "local",
        "smtp",
        "bounce",
        "auth",
        "pop3d",
        "imapd",
        "metrics",
    ] {
        let out = Command::new(bin(p)).arg("--version").output().unwrap();
        assert_eq!(
            (out.status.code(), text(&out.stdout), text(&out.stderr)),
            (Some(0), format!("{p} (Postern) {VERSION}\n"), String::new()),
            "{p}"
        );
    }
    let postern = |args: &[&str]| Command::new(bin("postern")).args(args).output().unwrap();

    // --help and `help`: the same overview, one line per command.
    let help = postern(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let overview = text(&help.stdout);
    assert_eq!(text(&postern(&["help"]).stdout), overview);
    assert!(
        overview.starts_with("usage: postern [-c CONFIG_DIR] COMMAND [ARGS]\n"),
        "{overview}"
    );
    for line in [
        "  start      start the mail system; lists the open ports and the log file",
        "  stop       stop the mail system; returns once every process has exited",
        "  check      configuration, directories, owners and modes, ports, postmaster",
        "  help       this overview, or the usage of one command",
    ] {
        assert!(overview.lines().any(|l| l == line), "{line:?} in\n{overview}");
    }
    assert!(
        overview.len() < 2000 && overview.lines().all(|l| l.len() <= 100),
        "{overview}"
    );

    // help COMMAND and COMMAND --help.
    let start = text(&postern(&["help", "start"]).stdout);
    assert!(
        start.starts_with(
            "usage: postern [-c CONFIG_DIR] start [--foreground] [--quiet]\n\nstart the mail system; lists the open ports and the log file.\n"
        ),
        "{start}"
    );
    assert_eq!(text(&postern(&["start", "--help"]).stdout), start);

    // Usage errors: one line and the hint, exit 1.
    for args in [&["help", "nosuch"][..], &["nosuch"][..]] {
        let out = postern(args);
        assert_eq!(
            (out.status.code(), text(&out.stderr)),
            (
                Some(1),
                "postern: unknown command \"nosuch\" (postern --help lists the commands)\n".to_string()
            )
        );
    }
    let out = postern(&[]);
    assert_eq!(
        text(&out.stderr),
        "postern: usage: postern [-c CONFIG_DIR] COMMAND [ARGS] (postern --help lists the commands)\n"
    );

    // sendmail --help (also as mailq), and a bad flag.
    let out = Command::new(bin("sendmail")).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).starts_with("usage: sendmail [options] [--] RECIPIENT... < message\n  -t "),
        "{}",
        text(&out.stdout)
    );
    let out = Command::new(bin("mailq")).arg("--help").output().unwrap();
    assert!(
        text(&out.stdout)
            .starts_with("mailq [-C DIR]: list the mail queue, as Postfix prints it (same as sendmail -bp)\n")
    );
    let out = Command::new(bin("sendmail")).args(["-k", "x"]).output().unwrap();
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(64),
            "sendmail: fatal: invalid option -- 'k'\nusage: sendmail [-t] [-i] [-f SENDER] [-F NAME] [-C DIR] [--] RECIPIENT... < message (sendmail --help for more)\n"
                .to_string()
        )
    );
    // mailq and newaliases sit next to sendmail after cargo build.
    for p in ["mailq", "newaliases"] {
        assert!(Path::new(&bin(p)).is_file(), "{p}");
    }
}

#[test]
fn without_a_postmaster_mailbox_check_warns_and_the_dropped_double_bounce_is_a_warning() {
    let l = Layout::new();
    std::fs::remove_file(l.path("etc/aliases")).unwrap();
    let check = l.postern(&["check"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "a warning is advice: {}",
        text(&check.stderr)
    );
    assert!(
        text(&check.stderr).lines().any(|line| line
            == "postern: warning: mail to postmaster has nowhere to go: it reaches postmaster, which is not a mailbox user (bounces that cannot be returned would be lost); fix: postern user add postmaster, or send postmaster to a user in aliases"),
        "{}",
        text(&check.stderr)
    );
    let out = l.postern(&["start", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = l.shell("printf 'Subject: lost\\n\\nx\\n' | target/release/sendmail -f nobody-here@example.test nosuchuser@example.test");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log_file = l.path("var/log/maillog");
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(30), || log()
            .contains("postmaster notification discarded")),
        "{}",
        log()
    );
    let log = log();
    // The first line of the message names its queue ID: the original.
    let original = log
        .lines()
        .find(|l| l.contains("from=<nobody-here@example.test>"))
        .and_then(|l| l.split("]: ").nth(1))
        .and_then(|r| r.split(':').next())
        .expect("the original's queue ID")
        .to_string();
    let warning = log.lines().find(|l| l.contains("discarded")).unwrap();
    assert!(
        warning.contains(": warning: ")
            && warning.contains(&format!(
                "undeliverable postmaster notification discarded (it reported on queue ID {original}): to=<postmaster@example.test>, dsn=5.1.1, reason: unknown user: \"postmaster\""
            )),
        "{warning}"
    );
}

#[test]
fn the_queue_listing_says_connection_refused_in_plain_words() {
    let l = Layout::new();
    let out = l.postern(&["start", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Nothing listens on the relayhost's port: the mail is deferred with the reason.
    let out = l.shell("printf 'Subject: away\\n\\nx\\n' | target/release/sendmail bob@remote.test");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mailq = || text(&l.shell("target/release/mailq").stdout);
    let want = format!("(connect to 127.0.0.1[127.0.0.1:{}]: Connection refused)", l.ports[4]);
    assert!(
        wait_for(Duration::from_secs(30), || mailq().contains(&want)),
        "{}",
        mailq()
    );
    assert!(!mailq().contains("os error"), "{}", mailq());
}
