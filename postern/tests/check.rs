//! `postern check [--fix]`: the queue layout, programs, listen addresses, the users file.

mod common;

use common::{Site, mode};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn fix_creates_the_queue_then_check_is_clean() {
    let site = Site::new();
    // Before the first start: what start creates is no problem, one note each.
    let r = site.run(&["check"], None);
    assert_eq!(r.code, 0, "{r:?}");
    let spool = site.path("var/spool");
    let notes = [
        format!(
            "postern: queue directory {} does not exist yet; postern start (or postern check --fix) creates it",
            spool.display()
        ),
        format!(
            "postern: virtual_mailbox_base {} does not exist yet; postern start (or postern check --fix) creates it",
            site.path("var/mail").display()
        ),
        "postern: the mailbox user postmaster (named in the alias files) does not exist yet; postern start creates it"
            .to_string(),
    ];
    for n in &notes {
        assert!(r.stderr.lines().any(|l| l == n), "{n}\n{}", r.stderr);
    }
    assert!(
        !r.stderr.contains("warning") && !r.stderr.contains("error"),
        "{}",
        r.stderr
    );

    let r = site.run(&["check", "--fix"], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("postern: fixed: created queue directory {}", spool.display())),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    assert!(
        r.stderr.contains("postern: fixed: created the mailbox user postmaster"),
        "{}",
        r.stderr
    );
    for (name, want, _) in postern_lib::queue_dirs::QUEUE_DIRS {
        assert_eq!(mode(&spool.join(name)), *want, "{name}");
    }
    assert!(site.path("var/mail").is_dir());
    if nix::unistd::geteuid().is_root() {
        let owner = postern_lib::config::Config::load(&site.etc()).unwrap().main.mail_owner;
        let uid = nix::unistd::User::from_name(&owner).unwrap().unwrap().uid.as_raw();
        assert_eq!(std::fs::metadata(spool.join("incoming")).unwrap().uid(), uid);
        assert_eq!(std::fs::metadata(spool.join("pid")).unwrap().uid(), 0);
    }

    let r = site.run(&["check"], None);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));

    // A drifted mode is reported, then repaired.
    std::fs::set_permissions(spool.join("deferred"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = site.run(&["check"], None);
    assert_eq!(r.code, 0, "a warning is advice");
    assert_eq!(
        r.stderr,
        format!(
            "postern: warning: {} has mode 0755, should be 0700 (postern check --fix repairs it)\n",
            spool.join("deferred").display()
        )
    );
    let r = site.run(&["check", "--fix"], None);
    assert_eq!(
        (r.code, r.stderr.clone()),
        (
            0,
            format!(
                "postern: fixed: {}: mode 0755 changed to 0700\n",
                spool.join("deferred").display()
            )
        )
    );
}

#[test]
fn missing_or_unexecutable_programs_are_reported() {
    let site = Site::new();
    assert_eq!(site.run(&["check", "--fix"], None).code, 0);
    std::fs::remove_file(site.path("libexec/imapd")).unwrap();
    std::fs::set_permissions(site.path("libexec/cleanup"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = site.run(&["check"], None);
    assert_eq!(r.code, 1);
    let mut lines: Vec<&str> = r.stderr.lines().collect();
    lines.sort();
    let imapd = format!(
        "postern: error: service imap/inet: program {} does not exist",
        site.path("libexec/imapd").display()
    );
    let cleanup = format!(
        "postern: error: service cleanup/unix: program {} is not executable",
        site.path("libexec/cleanup").display()
    );
    // Even root needs an x bit to execute a file.
    assert_eq!(lines, [cleanup.as_str(), imapd.as_str()], "{}", r.stderr);
}

#[test]
fn busy_ports_are_reported_unless_master_runs() {
    let site = Site::new();
    assert_eq!(site.run(&["check", "--fix"], None).code, 0);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    assert_eq!(
        site.run(&["config", "set", &format!("smtp/inet.listen={addr}")], None)
            .code,
        0
    );
    let r = site.run(&["check"], None);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        format!(
            "postern: error: port {} is in use by another program; change it with: postern config set 'smtp/inet.listen=127.0.0.1:NNNN'\n",
            busy.local_addr().unwrap().port()
        )
    );

    // A master holding the lock on its pid file owns the addresses.
    let pid_file = site.path("var/spool/pid/master.pid");
    let f = std::fs::File::create(&pid_file).unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let r = site.run(&["check"], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "postern: master is running ({} is locked); listen addresses not checked\n",
            pid_file.display()
        )
    );
    drop(f);
    assert_eq!(site.run(&["check"], None).code, 1);
}

#[test]
fn users_file_must_be_private() {
    let site = Site::new();
    assert_eq!(site.run(&["check", "--fix"], None).code, 0);
    assert_eq!(site.run(&["user", "add", "alice"], Some("alice-pw\n")).code, 0);
    let users = site.path("etc/users");
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = site.run(&["check"], None);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        format!(
            "postern: error: {} has mode 0644: it holds password hashes and must be 0600 or stricter\n",
            users.display()
        )
    );
    let r = site.run(&["check", "--fix"], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(mode(&users), 0o600);
    assert_eq!(site.run(&["check"], None).code, 0);
}

#[test]
fn a_broken_config_is_one_line() {
    let site = Site::new();
    std::fs::write(
        site.path("etc/main.toml"),
        "myhostname = \"mx.example.test\"\nbogus = 1\n",
    )
    .unwrap();
    let r = site.run(&["check"], None);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with(&format!("postern: {}:2", site.path("etc/main.toml").display())),
        "{}",
        r.stderr
    );
}

#[test]
fn tables_and_smtpd_lists_are_checked_as_the_daemons_load_them() {
    let site = Site::new();
    assert_eq!(site.run(&["check", "--fix"], None).code, 0);
    std::fs::write(
        site.path("etc/transport"),
        "example.org smtp:[mx.example.org]\nlonely\n",
    )
    .unwrap();
    std::fs::write(site.path("etc/hc"), "/^Subject: (/ REJECT broken\n").unwrap();
    let main = site.read("etc/main.toml")
        + "smtpd_relay_restrictions = [\"permit_mynetworks\"]\ntransport_maps = [\"transport\"]\nheader_checks = \"regexp:hc\"\n";
    std::fs::write(site.path("etc/main.toml"), main).unwrap();
    let r = site.run(&["check"], None);
    assert_eq!(r.code, 1, "{r:?}");
    let warnings: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(warnings.len(), 3, "{}", r.stderr);
    assert!(
        warnings[0].starts_with("postern: error: service smtp/inet: smtpd would not start: ")
            && warnings[0].contains("open relay"),
        "{}",
        r.stderr
    );
    assert!(
        warnings[1].starts_with("postern: error: transport_maps: ")
            && warnings[1].contains("transport")
            && warnings[1].contains("2"),
        "{}",
        r.stderr
    );
    assert!(
        warnings[2].starts_with("postern: error: header_checks: ") && warnings[2].contains("hc"),
        "{}",
        r.stderr
    );
    // Repaired files: clean again.
    std::fs::write(site.path("etc/transport"), "example.org smtp:[mx.example.org]\n").unwrap();
    std::fs::write(site.path("etc/hc"), "/^Subject: spam/ REJECT no\n").unwrap();
    let main = site.read("etc/main.toml").replace(
        "smtpd_relay_restrictions = [\"permit_mynetworks\"]",
        "smtpd_relay_restrictions = [\"permit_mynetworks\", \"reject_unauth_destination\"]",
    );
    std::fs::write(site.path("etc/main.toml"), main).unwrap();
    let r = site.run(&["check"], None);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
}
