//! `postern install` / `postern uninstall`: putting Postern on a host as its mail system,
//! the way a distribution package would.
//!
//! `install` copies the programs that sit next to this `postern` (a `target/release/` of a
//! checkout) into `PREFIX/libexec/postern/` (daemons), `PREFIX/sbin/` (`postern`,
//! `postsuper`, `postqueue`, `postcat`, `postdrop`, `sendmail`) and `PREFIX/bin/` (`mailq`,
//! `newaliases`: links to sendmail); writes the production configuration into
//! CONFIG_DIR unless one is there already (ports 25, 587, 110, 143 on all addresses;
//! 465/995/993 commented out until a certificate is set; `myhostname` from the host;
//! logs to syslog; queue in QUEUE_DIR; mailboxes under `/var/mail/postern`); writes
//! Debian's `/etc/aliases` (postmaster → root) when the host has none; creates the
//! `postern` and `postdrop` accounts and the queue directories with their owners and
//! modes; makes `postdrop` set-gid `postdrop`; and writes a systemd unit. Where another
//! MTA owns `/usr/sbin/sendmail`, it is moved aside to `sendmail.postern-saved` and the
//! install says so (Debian's `update-alternatives` is not used by Postfix's package, so
//! a plain, reversible rename is what works beside it).
//!
//! `--root DIR` installs into a throwaway root (like DESTDIR): nothing outside DIR is
//! touched, accounts are not created and ownership is not changed — this is how the
//! tests exercise the install. `uninstall` removes the programs and the unit and leaves
//! configuration, queue and mail in place.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Daemons, in libexec.
const DAEMONS: &[&str] = &[
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
    "proxy",
    "replicator",
    "mirror",
    "metrics",
];
/// Commands for people and scripts, in sbin.
const COMMANDS: &[&str] = &["postern", "postsuper", "postqueue", "postcat", "postdrop", "sendmail"];
/// The alias file of the production configuration (Debian's).
const ALIASES: &str = "/etc/aliases";
/// What `install` writes there when the host has none: Debian's default, so that mail to
/// the role accounts (and double bounces) reaches root's mailbox, `/var/mail/root`.
const DEBIAN_ALIASES: &str = "# See man 5 aliases for format (written by `postern install`).\n\
    postmaster:    root\nMAILER-DAEMON: postmaster\nabuse:         postmaster\n";
/// Links to sendmail, in bin.
const LINKS: &[&str] = &["mailq", "newaliases"];

struct Paths {
    root: PathBuf,
    prefix: PathBuf,
    config: PathBuf,
    queue: PathBuf,
}

impl Paths {
    fn parse(rest: &[String]) -> Result<Paths, String> {
        let mut p = Paths {
            root: PathBuf::from("/"),
            prefix: PathBuf::from("/usr"),
            config: PathBuf::from("/etc/postern"),
            queue: PathBuf::from("/var/spool/postern"),
        };
        let mut it = rest.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let v = PathBuf::from(value);
            if !v.is_absolute() {
                return Err(format!("{flag} {value}: must be an absolute path"));
            }
            match flag.as_str() {
                "--root" => p.root = v,
                "--prefix" => p.prefix = v,
                "--config-dir" => p.config = v,
                "--queue-dir" => p.queue = v,
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(p)
    }

    /// `path` inside the root.
    fn at(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn real_root(&self) -> bool {
        self.root == Path::new("/")
    }

    fn libexec(&self) -> PathBuf {
        self.prefix.join("libexec/postern")
    }
}

fn io<'a>(what: &'a str, p: &'a Path) -> impl FnOnce(std::io::Error) -> String + 'a {
    let what = what.to_string();
    move |e| format!("{what} {}: {e}", p.display())
}

/// Copies `from` to `to` atomically (temporary name, rename), with `mode`.
fn put(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    let dir = to.parent().ok_or("bad target")?;
    std::fs::create_dir_all(dir).map_err(io("mkdir", dir))?;
    let tmp = dir.join(format!(
        ".{}.postern-new",
        to.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    std::fs::copy(from, &tmp).map_err(io("copy to", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, to).map_err(io("rename to", to))
}

pub fn install(rest: &[String]) -> Result<ExitCode, String> {
    let p = Paths::parse(rest)?;
    if p.real_root() && !postern_lib::privs::is_root() {
        return Err(
            "installing as the system's mail system needs root (or use --root DIR for a staged install)".into(),
        );
    }
    let src = postern_lib::config::exe_dir();
    for name in DAEMONS.iter().chain(COMMANDS) {
        if !src.join(name).is_file() {
            return Err(format!(
                "{} is missing: build everything first (cargo build --release --workspace)",
                src.join(name).display()
            ));
        }
    }
    let libexec = p.at(&p.libexec());
    for d in DAEMONS {
        put(&src.join(d), &libexec.join(d), 0o755)?;
    }
    let sbin = p.at(&p.prefix.join("sbin"));
    let sendmail = sbin.join("sendmail");
    if p.real_root() && sendmail.exists() && !is_ours(&sendmail) {
        let saved = sbin.join("sendmail.postern-saved");
        std::fs::rename(&sendmail, &saved).map_err(io("move aside", &sendmail))?;
        println!(
            "postern: moved the other MTA's {} to {}",
            sendmail.display(),
            saved.display()
        );
    }
    for c in COMMANDS {
        put(&src.join(c), &sbin.join(c), 0o755)?;
    }
    let bin = p.at(&p.prefix.join("bin"));
    std::fs::create_dir_all(&bin).map_err(io("mkdir", &bin))?;
    for l in LINKS {
        let link = bin.join(l);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(p.prefix.join("sbin/sendmail"), &link).map_err(io("symlink", &link))?;
    }
    let config = p.at(&p.config);
    if !config.join(postern_lib::config::MAIN_FILE).exists() {
        write_config(&p, &config)?;
        println!("postern: wrote the production configuration to {}", config.display());
    } else {
        println!("postern: kept the existing configuration in {}", config.display());
    }
    let aliases = p.at(Path::new(ALIASES));
    if !aliases.exists() {
        std::fs::create_dir_all(aliases.parent().unwrap_or(Path::new("/"))).map_err(io("mkdir", &aliases))?;
        std::fs::write(&aliases, DEBIAN_ALIASES).map_err(io("write", &aliases))?;
        println!(
            "postern: wrote {} (postmaster, MAILER-DAEMON, abuse: root, as Debian has it)",
            aliases.display()
        );
    }
    let unit = p.at(Path::new("/lib/systemd/system/postern.service"));
    std::fs::create_dir_all(unit.parent().unwrap_or(Path::new("/"))).map_err(io("mkdir", &unit))?;
    std::fs::write(&unit, systemd_unit(&p)).map_err(io("write", &unit))?;
    let queue = p.at(&p.queue);
    let owner = if p.real_root() {
        for (name, group_only) in [("postern", false), ("postdrop", true)] {
            accounts(name, group_only)?;
        }
        postern_lib::accounts::queue_owner("postern").map_err(|e| e.to_string())?
    } else {
        None
    };
    postern_lib::queue_dirs::ensure(&queue, owner).map_err(|e| e.to_string())?;
    if p.real_root() {
        let postdrop = sbin.join("postdrop");
        let gid = nix::unistd::Group::from_name("postdrop")
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw());
        std::os::unix::fs::chown(&postdrop, Some(0), gid).map_err(io("chown", &postdrop))?;
        std::fs::set_permissions(&postdrop, std::fs::Permissions::from_mode(0o2755)).map_err(io("chmod", &postdrop))?;
    }
    println!(
        "postern: installed into {}; start with `postern start` or `systemctl enable --now postern`",
        p.root.join(p.prefix.strip_prefix("/").unwrap_or(&p.prefix)).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether the file is a Postern program (so reinstalling does not move our own aside).
fn is_ours(path: &Path) -> bool {
    std::fs::read(path).map(|b| memmem(&b, b"postern-lib")).unwrap_or(false)
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Creates a locked system account (or only a group) when it is missing.
fn accounts(name: &str, group_only: bool) -> Result<(), String> {
    if group_only {
        if nix::unistd::Group::from_name(name).ok().flatten().is_some() {
            return Ok(());
        }
        let st = std::process::Command::new("groupadd")
            .args(["--system", name])
            .status()
            .map_err(|e| e.to_string())?;
        return if st.success() {
            Ok(())
        } else {
            Err(format!("groupadd {name} failed"))
        };
    }
    postern_lib::accounts::ensure_mail_owner(name)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn write_config(p: &Paths, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(io("mkdir", dir))?;
    // Like Postfix: a host name without a domain gets `.localdomain` (and the admin should
    // set the real fully-qualified name).
    let host = postern_lib::config::system_hostname();
    let host = if host.contains('.') {
        host
    } else {
        format!("{host}.localdomain")
    };
    let main = format!(
        "# Postern main configuration (written by `postern install`).\n\
         # `postern config` prints every effective setting; see README.md.\n\n\
         myhostname = \"{host}\"\n\
         # mydomain defaults to myhostname without its first label.\n\
         myorigin = \"$mydomain\"\n\
         mydestination = [\"$myhostname\", \"localhost.$mydomain\", \"localhost\"]\n\
         mynetworks = [\"127.0.0.0/8\", \"[::1]/128\"]\n\n\
         queue_directory = \"{queue}\"\n\
         daemon_directory = \"{libexec}\"\n\
         virtual_mailbox_base = \"/var/mail/postern\"\n\
         maillog_file = \"syslog\"\n\
         alias_maps = [\"/etc/aliases\"]\n\n\
         # local: mail to /etc/passwd accounts (mbox in /var/mail/USER, ~/.forward honoured).\n\
         local_system_users = true\n\
         mail_spool_directory = \"/var/mail\"\n\
         #home_mailbox = \"Maildir/\"\n",
        queue = p.queue.display(),
        libexec = p.libexec().display(),
    );
    let master = "# Postern service table (written by `postern install`). See README.md.\n\n\
        [[service]]\nname = \"smtp\"\ntype = \"inet\"\nlisten = \"25\"\ncommand = \"smtpd\"\nmaxproc = 8\n\n\
        [[service]]\nname = \"submission\"\ntype = \"inet\"\nlisten = \"587\"\ncommand = \"smtpd\"\nmaxproc = 8\n\
        options = { syslog_name = \"postern/submission\", smtpd_sasl_auth_enable = true, smtpd_client_restrictions = [\"permit_sasl_authenticated\", \"reject\"] }\n\n\
        # With smtpd_tls_cert_file/smtpd_tls_key_file set in main.toml, enable implicit TLS:\n\
        # [[service]]\n# name = \"smtps\"\n# type = \"inet\"\n# listen = \"465\"\n# command = \"smtpd\"\n\
        # options = { smtpd_tls_wrappermode = true }\n\n\
        [[service]]\nname = \"pop3\"\ntype = \"inet\"\nlisten = \"110\"\ncommand = \"pop3d\"\nmaxproc = 4\n\n\
        # [[service]]\n# name = \"pop3s\"\n# type = \"inet\"\n# listen = \"995\"\n# command = \"pop3d\"\n# args = [\"tls\"]\n\n\
        [[service]]\nname = \"imap\"\ntype = \"inet\"\nlisten = \"143\"\ncommand = \"imapd\"\nmaxproc = 4\n\n\
        # [[service]]\n# name = \"imaps\"\n# type = \"inet\"\n# listen = \"993\"\n# command = \"imapd\"\n# args = [\"tls\"]\n\n\
        [[service]]\nname = \"cleanup\"\ntype = \"unix\"\ncommand = \"cleanup\"\nmaxproc = 32\n\n\
        [[service]]\nname = \"pickup\"\ntype = \"unix\"\nlisten = \"public/pickup\"\ncommand = \"pickup\"\nmaxproc = 1\nwakeup = \"60s\"\n\n\
        [[service]]\nname = \"anvil\"\ntype = \"unix\"\ncommand = \"anvil\"\nmaxproc = 1\nmax_use = 1000000\nmax_idle = \"1d\"\n\n\
        [[service]]\nname = \"rewrite\"\ntype = \"unix\"\ncommand = \"trivial-rewrite\"\nmaxproc = 4\nmax_use = 1000000\n\n\
        [[service]]\nname = \"qmgr\"\ntype = \"unix\"\nlisten = \"public/qmgr\"\ncommand = \"qmgr\"\nmaxproc = 1\nmin_procs = 1\n\
        wakeup = \"60s\"\nmax_use = 1000000000\nmax_idle = \"1000d\"\n\n\
        # local runs as root to deliver as each system account (it switches per delivery).\n\
        [[service]]\nname = \"local\"\ntype = \"unix\"\ncommand = \"local\"\nmaxproc = 8\nunprivileged = false\n\n\
        [[service]]\nname = \"smtp\"\ntype = \"unix\"\ncommand = \"smtp\"\nmaxproc = 16\n\n\
        [[service]]\nname = \"bounce\"\ntype = \"unix\"\ncommand = \"bounce\"\nmaxproc = 4\n\n\
        [[service]]\nname = \"auth\"\ntype = \"unix\"\ncommand = \"auth\"\nmaxproc = 1\nmax_use = 1000000\nmax_idle = \"1d\"\n\n\
        # Prometheus metrics on http://127.0.0.1:9154/metrics (see the metrics crate); uncomment to enable:\n\
        # [[service]]\n# name = \"metrics\"\n# type = \"inet\"\n# listen = \"127.0.0.1:9154\"\n# command = \"metrics\"\n\
        # maxproc = 1\n# max_use = 1000000000\n# max_idle = \"1000d\"\n";
    std::fs::write(dir.join(postern_lib::config::MAIN_FILE), main).map_err(io("write", dir))?;
    std::fs::write(dir.join(postern_lib::config::MASTER_FILE), master).map_err(io("write", dir))?;
    // Validate what was written, against the installed programs.
    postern_lib::config::Config::load(dir)
        .map(|_| ())
        .map_err(|e| format!("the written configuration is invalid: {e}"))
}

fn systemd_unit(p: &Paths) -> String {
    let sbin = p.prefix.join("sbin/postern");
    format!(
        "[Unit]\nDescription=Postern mail system\nAfter=network-online.target\nWants=network-online.target\n\
         Conflicts=postfix.service exim4.service\n\n\
         [Service]\nType=forking\nPIDFile={queue}/pid/master.pid\n\
         ExecStartPre={sbin} -c {cfg} check\nExecStart={sbin} -c {cfg} start\n\
         ExecReload={sbin} -c {cfg} reload\nExecStop={sbin} -c {cfg} stop\nRestart=on-failure\n\n\
         [Install]\nWantedBy=multi-user.target\nAlias=mail-transport-agent.target\n",
        queue = p.queue.display(),
        sbin = sbin.display(),
        cfg = p.config.display(),
    )
}

pub fn uninstall(rest: &[String]) -> Result<ExitCode, String> {
    let p = Paths::parse(rest)?;
    let libexec = p.at(&p.libexec());
    for d in DAEMONS {
        let _ = std::fs::remove_file(libexec.join(d));
    }
    let _ = std::fs::remove_dir(&libexec);
    let sbin = p.at(&p.prefix.join("sbin"));
    for c in COMMANDS {
        let _ = std::fs::remove_file(sbin.join(c));
    }
    let saved = sbin.join("sendmail.postern-saved");
    if saved.exists() {
        std::fs::rename(&saved, sbin.join("sendmail")).map_err(io("restore", &saved))?;
        println!("postern: restored the other MTA's sendmail");
    }
    let bin = p.at(&p.prefix.join("bin"));
    for l in LINKS {
        let _ = std::fs::remove_file(bin.join(l));
    }
    let _ = std::fs::remove_file(p.at(Path::new("/lib/systemd/system/postern.service")));
    println!("postern: removed the programs; configuration, queue and mailboxes are left in place");
    Ok(ExitCode::SUCCESS)
}
