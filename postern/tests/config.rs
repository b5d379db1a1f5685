//! `postern config`: printing settings and `config set` editing main.toml and master.toml
//! in place, keeping comments, and refusing invalid results without touching the files.

mod common;

use common::{Site, entries, mode};
use std::os::unix::fs::PermissionsExt;

#[test]
fn documented_assignments_edit_both_files_and_keep_comments() {
    let site = Site::new();
    let r = site.run(
        &[
            "config",
            "set",
            "smtp/inet.listen=127.0.0.1:30025",
            "imap/inet.listen=127.0.0.1:30143",
            r#"mynetworks=["127.0.0.2/32"]"#,
        ],
        None,
    );
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    let main = site.read("etc/main.toml");
    assert!(
        main.starts_with(
            "# Postern test configuration\nmyhostname = \"mx.example.test\"   # the name in the greeting\n"
        ),
        "{main}"
    );
    assert!(
        main.contains("# where mailboxes and programs live, inside the test directory\n"),
        "{main}"
    );
    assert!(main.ends_with("mynetworks = [\"127.0.0.2/32\"]\n"), "{main}");
    let master = site.read("etc/master.toml");
    assert_eq!(
        master,
        common::MASTER
            .replacen(
                "listen = \"127.0.0.1:0\"   # SMTP",
                "listen = \"127.0.0.1:30025\"   # SMTP",
                1
            )
            .replacen(
                "listen = \"127.0.0.1:0\"\ncommand = \"imapd\"",
                "listen = \"127.0.0.1:30143\"\ncommand = \"imapd\"",
                1
            )
    );
    let r = site.run(&["config", "mynetworks", "smtp/inet.listen", "imap/inet.listen"], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "mynetworks = [\"127.0.0.2/32\"]\nsmtp/inet.listen = \"127.0.0.1:30025\"\nimap/inet.listen = \"127.0.0.1:30143\"\n"
    );
    // No temporary files are left in the config directory.
    assert_eq!(entries(&site.etc()), ["aliases", "main.toml", "master.toml"]);
}

#[test]
fn bare_words_integers_and_new_keys() {
    let site = Site::new();
    let r = site.run(
        &[
            "config",
            "set",
            "myhostname=mx2.example.test",
            "message_size_limit=2048",
            "relayhost=[relay.example.test]:25",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let main = site.read("etc/main.toml");
    assert!(
        main.contains("myhostname = \"mx2.example.test\"   # the name in the greeting\n"),
        "{main}"
    );
    assert!(main.contains("message_size_limit = 2048\n"), "{main}");
    assert!(main.contains("relayhost = \"[relay.example.test]:25\"\n"), "{main}");
    let r = site.run(&["config", "message_size_limit", "myhostname", "relayhost"], None);
    assert_eq!(
        r.stdout,
        "message_size_limit = 2048\nmyhostname = \"mx2.example.test\"\nrelayhost = \"[relay.example.test]:25\"\n"
    );
    // A list given as words.
    let r = site.run(&["config", "set", "mydestination=example.test, localhost"], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        site.run(&["config", "mydestination"], None).stdout,
        "mydestination = [\"example.test\", \"localhost\"]\n"
    );
}

#[test]
fn invalid_assignments_change_nothing() {
    let site = Site::new();
    std::fs::set_permissions(site.path("etc/main.toml"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let main = std::fs::read(site.path("etc/main.toml")).unwrap();
    let master = std::fs::read(site.path("etc/master.toml")).unwrap();
    // The new key goes after the last line of main.toml.
    let size_error = format!(
        "main.toml:{}: message_size_limit: \"big\" is not a size",
        main.split(|&b| b == b'\n').count()
    );
    for (assignment, expect) in [
        (r#"message_size_limit="big""#, size_error.as_str()),
        ("nosuch=1", "main.toml: unknown setting \"nosuch\""),
        ("nope/inet.listen=x", "master.toml: no service nope/inet"),
        (
            "smtp/inet.listen=notanaddr",
            "master.toml:4: service smtp/inet: listen: \"notanaddr\" is not ADDR:PORT",
        ),
        ("imap/inet.maxproc=0", "service imap/inet: maxproc: must be at least 1"),
        ("smtp/inet.lisen=1", "unknown field \"lisen\""),
        ("mail_owner=root", "mail_owner: must name an unprivileged account"),
        ("no-equals-sign", "is not KEY=VALUE"),
    ] {
        // A valid assignment alongside must not be applied either.
        let r = site.run(&["config", "set", "myhostname=other.example.test", assignment], None);
        assert_eq!(r.code, 1, "{assignment}: {r:?}");
        assert_eq!(r.stdout, "");
        assert!(
            r.stderr.starts_with("postern: ") && r.stderr.contains(expect),
            "{assignment}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "{assignment}: {}", r.stderr);
        assert_eq!(std::fs::read(site.path("etc/main.toml")).unwrap(), main, "{assignment}");
        assert_eq!(
            std::fs::read(site.path("etc/master.toml")).unwrap(),
            master,
            "{assignment}"
        );
    }
    assert_eq!(entries(&site.etc()), ["aliases", "main.toml", "master.toml"]);
    // A valid edit keeps the file's mode.
    assert_eq!(
        site.run(&["config", "set", "myhostname=other.example.test"], None).code,
        0
    );
    assert_eq!(mode(&site.path("etc/main.toml")), 0o640);
}

#[test]
fn config_prints_every_setting_sorted_with_defaults() {
    let site = Site::new();
    let r = site.run(&["config"], None);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert!(lines.contains(&"myhostname = \"mx.example.test\""), "{lines:?}");
    assert!(lines.contains(&"message_size_limit = 10240000"), "{lines:?}");
    assert!(lines.contains(&"myorigin = \"mx.example.test\""), "{lines:?}");
    let queue = format!("queue_directory = \"{}\"", site.path("var/spool").display());
    assert!(lines.contains(&queue.as_str()), "{lines:?}");
    // Every line is `key = value` in TOML.
    for line in &lines {
        let t: toml::Table = toml::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(t.len(), 1);
    }
}

#[test]
fn unknown_keys_and_services_are_errors() {
    let site = Site::new();
    let r = site.run(&["config", "myhostname", "nosuch"], None);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (1, "", "postern: unknown setting \"nosuch\"\n")
    );
    let r = site.run(&["config", "nope/unix"], None);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "postern: no service nope/unix in master.toml\n")
    );
    let r = site.run(&["config", "smtp/tcp"], None);
    assert_eq!(r.code, 1);
}

#[test]
fn service_entries_and_per_service_options() {
    let site = Site::new();
    let r = site.run(&["config", "imap/inet"], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with(
            "[[service]]\nname = \"imap\"\ntype = \"inet\"\nlisten = \"127.0.0.1:0\"\ncommand = \"imapd\"\n"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("maxproc = 5\n") && r.stdout.contains("max_use = 100\n"),
        "{}",
        r.stdout
    );
    let r = site.run(&["config", "cleanup/unix.listen"], None);
    assert_eq!(
        r.stdout,
        format!(
            "cleanup/unix.listen = \"{}\"\n",
            site.path("var/spool/private/cleanup").display()
        )
    );

    let r = site.run(
        &[
            "config",
            "set",
            "smtp/inet.options.message_size_limit=4096",
            "smtp/inet.args=-v -o x",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let master = site.read("etc/master.toml");
    assert!(master.contains("options = { message_size_limit = 4096 }\n"), "{master}");
    assert!(master.contains("args = [\"-v\", \"-o\", \"x\"]\n"), "{master}");
    let r = site.run(
        &[
            "config",
            "smtp/inet.options.message_size_limit",
            "message_size_limit",
            "smtp/inet.args",
        ],
        None,
    );
    assert_eq!(
        r.stdout,
        "smtp/inet.options.message_size_limit = 4096\nmessage_size_limit = 10240000\nsmtp/inet.args = [\"-v\", \"-o\", \"x\"]\n"
    );
}

#[test]
fn sizes_with_units_plain_type_errors_and_did_you_mean() {
    let site = Site::new();
    let main = site.path("etc/main.toml").display().to_string();
    // A size with a unit, written by config set or by hand.
    let r = site.run(&["config", "set", "message_size_limit=10MB"], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        site.run(&["config", "message_size_limit"], None).stdout,
        "message_size_limit = 10485760\n"
    );
    // A value that is no size: what it must look like, not serde's words.
    let r = site.run(&["config", "set", "message_size_limit=ten"], None);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.ends_with(
            ": message_size_limit: \"ten\" is not a size: a number of bytes, or one with a unit (10240000, \"10MB\", \"512k\", \"1g\"); no file was changed\n"
        ),
        "{}",
        r.stderr
    );
    // A typo in a key: the nearest setting.
    let r = site.run(&["config", "set", "mesage_size_limit=5"], None);
    assert_eq!(
        r.stderr,
        format!(
            "postern: {main}: unknown setting \"mesage_size_limit\" (did you mean `message_size_limit`?); no file was changed\n"
        )
    );
    let text = site.read("etc/main.toml");
    let line = text.lines().count() + 1;
    std::fs::write(site.path("etc/main.toml"), format!("{text}mesage_size_limit = 5\n")).unwrap();
    let r = site.run(&["check"], None);
    assert_eq!(
        r.stderr,
        format!(
            "postern: {main}:{line}: mesage_size_limit: unknown setting `mesage_size_limit` (did you mean `message_size_limit`?)\n"
        )
    );
    std::fs::write(site.path("etc/main.toml"), format!("{text}smtpd_banner = 5\n")).unwrap();
    let r = site.run(&["check"], None);
    assert_eq!(
        r.stderr,
        format!("postern: {main}:{line}: smtpd_banner: 5 must be written in double quotes\n")
    );
}

#[test]
fn doc_prints_the_registry_entry_and_the_effective_value() {
    let site = Site::new();
    let r = site.run(&["config", "set", "message_size_limit=20MB"], None);
    assert_eq!(r.code, 0, "{r:?}");
    let r = site.run(&["config", "--doc", "message_size_limit"], None);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
    assert_eq!(
        r.stdout,
        "message_size_limit\n  Largest message accepted, in bytes (envelope and headers included).\n  \
         type: size (bytes; or with a unit: \"10MB\", \"512k\", \"1g\")\n  default: 10240000\n  \
         bounds: at least 1024\n  read by: smtpd postern postdrop pickup cleanup\n  value: 20971520\n"
    );
    // Every setting, one block each; an unknown key names the nearest.
    let all = site.run(&["config", "--doc"], None);
    assert_eq!(all.code, 0, "{all:?}");
    assert!(all.stdout.matches("\n  read by: ").count() > 100, "{}", all.stdout);
    let r = site.run(&["config", "--doc", "mesage_size_limit"], None);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "postern: unknown setting \"mesage_size_limit\" (did you mean `message_size_limit`?)\n"
    );
}

#[test]
fn check_refuses_a_word_setting_typo_naming_the_allowed_words() {
    let site = Site::new();
    let main = site.path("etc/main.toml").display().to_string();
    let text = site.read("etc/main.toml");
    let line = text.lines().count() + 1;
    std::fs::write(
        site.path("etc/main.toml"),
        format!("{text}smtp_tls_security_level = \"encrytp\"\n"),
    )
    .unwrap();
    let want = format!(
        "postern: {main}:{line}: smtp_tls_security_level: \"encrytp\" is not one of: none, may, encrypt, verify, secure\n"
    );
    let r = site.run(&["check"], None);
    assert_eq!((r.code, r.stderr.as_str()), (1, want.as_str()), "{r:?}");
    // A reload refuses it the same way, before it signals master.
    let r = site.run(&["reload"], None);
    assert_eq!((r.code, r.stderr.as_str()), (1, want.as_str()), "{r:?}");
}
