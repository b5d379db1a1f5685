//! Tests of config loading: defaults, references, relative paths, and error messages that
//! name file, line and key.

use super::*;

fn dir_with(main: &str, master: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("etc")).unwrap();
    std::fs::write(d.path().join("etc/main.toml"), main).unwrap();
    std::fs::write(d.path().join("etc/master.toml"), master).unwrap();
    d
}

const SVC: &str = "[[service]]\nname = \"echo\"\ntype = \"inet\"\nlisten = \"127.0.0.1:0\"\ncommand = \"echod\"\n";

#[test]
fn defaults_references_and_relative_paths() {
    let d = dir_with(
        "myhostname = \"mx.example.test\"\nmydomain = \"example.test\"\nqueue_directory = \"var/spool\"\n",
        SVC,
    );
    let c = Config::load(&d.path().join("etc")).unwrap();
    assert_eq!(c.main.myorigin, "mx.example.test");
    assert_eq!(
        c.main.mydestination,
        ["mx.example.test", "localhost.example.test", "localhost"]
    );
    assert_eq!(Path::new(&c.main.queue_directory), d.path().join("var/spool"));
    assert_eq!(c.services.len(), 1);
    let s = &c.services[0];
    assert_eq!(s.key(), "echo/inet");
    assert_eq!(s.maxproc, 100);
    assert_eq!(s.max_use, 100);
    assert_eq!(s.max_idle, Seconds(100));
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let d = dir_with("myhostname = \"mx.example.test\"\n\nmyhostnmae = \"typo\"\n", SVC);
    let e = Config::load(&d.path().join("etc")).unwrap_err().to_string();
    assert!(e.contains("main.toml:3"), "{e}");
    assert!(e.contains("myhostnmae"), "{e}");
}

#[test]
fn wrong_type_and_validation_are_located() {
    let d = dir_with("myhostname = \"mx.example.test\"\nmessage_size_limit = \"big\"\n", SVC);
    let e = Config::load(&d.path().join("etc")).unwrap_err().to_string();
    assert!(e.contains("main.toml:2"), "{e}");
    let d = dir_with("myhostname = \"mx.example.test\"\nmail_owner = \"root\"\n", SVC);
    let e = Config::load(&d.path().join("etc")).unwrap_err().to_string();
    assert!(e.contains("main.toml:2: mail_owner"), "{e}");
    let d = dir_with(
        "myhostname = \"mx.example.test\"\nmynetworks = [\"10.0.0.0/99\"]\n",
        SVC,
    );
    assert!(
        Config::load(&d.path().join("etc"))
            .unwrap_err()
            .to_string()
            .contains("main.toml:2")
    );
}

#[test]
fn service_errors_name_the_service() {
    let d = dir_with("myhostname = \"mx.example.test\"\n", &format!("{SVC}maxproc = 0\n"));
    let e = Config::load(&d.path().join("etc")).unwrap_err().to_string();
    assert!(e.contains("master.toml") && e.contains("echo/inet: maxproc"), "{e}");
    let d = dir_with("myhostname = \"mx.example.test\"\n", &format!("{SVC}{SVC}"));
    assert!(
        Config::load(&d.path().join("etc"))
            .unwrap_err()
            .to_string()
            .contains("defined twice")
    );
    let d = dir_with("myhostname = \"mx.example.test\"\n", &format!("{SVC}lisen = 1\n"));
    let e = Config::load(&d.path().join("etc")).unwrap_err().to_string();
    assert!(e.contains("master.toml:6") && e.contains("lisen"), "{e}");
    let d = dir_with(
        "myhostname = \"mx.example.test\"\n",
        &format!("{SVC}options = {{ nosuch = 1 }}\n"),
    );
    assert!(
        Config::load(&d.path().join("etc"))
            .unwrap_err()
            .to_string()
            .contains("nosuch")
    );
}

#[test]
fn missing_file_is_a_read_error() {
    let d = tempfile::tempdir().unwrap();
    let e = Config::load(d.path()).unwrap_err().to_string();
    assert!(e.contains("main.toml: cannot read"), "{e}");
}

#[test]
fn per_service_options_override() {
    let d = dir_with(
        "myhostname = \"mx.example.test\"\n",
        &format!(
            "{SVC}options = {{ message_size_limit = 2048 }}\n[[service]]\nname = \"q\"\ntype = \"unix\"\ncommand = \"q\"\n"
        ),
    );
    let c = Config::load(&d.path().join("etc")).unwrap();
    assert_eq!(c.main_for("echo/inet").unwrap().message_size_limit, 2048);
    assert_eq!(c.main.message_size_limit, 10_240_000);
    assert!(c.service("q/unix").unwrap().listen[0].ends_with("private/q"));
}

const HOST: &str = "myhostname = \"mx.example.test\"\n";

#[test]
fn registry_lists_every_field_once() {
    let mut names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "a setting is listed twice");
    let fields = toml::Table::try_from(MainConfig::default()).unwrap();
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(names, keys);
    for s in SETTINGS {
        assert!(!s.doc().is_empty() && !s.readers.is_empty(), "{}", s.name);
    }
}

#[test]
fn every_default_as_printed_loads_and_validates() {
    for s in SETTINGS.iter().filter(|s| s.name != "myhostname") {
        let d = dir_with(&format!("{HOST}{} = {}\n", s.name, (s.default)()), SVC);
        if let Err(e) = Config::load(&d.path().join("etc")) {
            panic!("{} = {}: {e}", s.name, (s.default)());
        }
    }
}

/// The value just outside `bound` (`at least 1024` → 1023, `at most 64` → 65).
fn outside(bound: &str, below: bool) -> u64 {
    let n = if bound.ends_with(|c: char| c.is_ascii_digit()) {
        bound.parse::<u64>().unwrap()
    } else {
        Seconds::parse(bound).unwrap().0
    };
    if below { n - 1 } else { n + 1 }
}

#[test]
fn bounds_refuse_out_of_range_naming_key_and_range() {
    let mut tried = 0;
    for s in SETTINGS {
        let Some(bounds) = s.bounds else { continue };
        let text = bounds();
        let (lo, hi) = match text.split_once(" and ") {
            Some((lo, hi)) => (lo.strip_prefix("between ").map(str::to_string), Some(hi.to_string())),
            None => (
                text.strip_prefix("at least ").map(str::to_string),
                text.strip_prefix("at most ").map(str::to_string),
            ),
        };
        let bad = [lo.map(|b| outside(&b, true)), hi.map(|b| outside(&b, false))];
        for v in bad.into_iter().flatten() {
            let d = dir_with(&format!("{HOST}{} = {v}\n", s.name), SVC);
            let e = Config::load(&d.path().join("etc")).unwrap_err().to_string();
            assert!(
                e.contains(&format!("main.toml:2: {}: must be {text} (is ", s.name)),
                "{} = {v}: {e}",
                s.name
            );
            tried += 1;
        }
    }
    assert!(tried >= 25, "{tried}");
}

#[test]
fn word_setting_typo_names_the_allowed_words() {
    for (key, words) in [
        ("smtp_tls_security_level", "none, may, encrypt, verify, secure"),
        ("smtpd_tls_security_level", "none, may, encrypt"),
        ("milter_default_action", "accept, reject, tempfail, quarantine"),
        ("mailbox_format", "maildir, mbox"),
        ("smtpd_forbid_bare_newline", "normalize, reject"),
        ("queue_mirror_unreachable", "defer, degraded"),
    ] {
        let d = dir_with(&format!("{HOST}{key} = \"mayy\"\n"), SVC);
        let e = Config::load(&d.path().join("etc")).unwrap_err().to_string();
        assert!(
            e.ends_with(&format!("main.toml:2: {key}: \"mayy\" is not one of: {words}")),
            "{e}"
        );
    }
    // In a service's options too (what postern check and a reload load).
    let d = dir_with(
        HOST,
        &format!("{SVC}options = {{ smtp_tls_security_level = \"Verify\" }}\n"),
    );
    assert_eq!(
        Config::load(&d.path().join("etc"))
            .unwrap()
            .main_for("echo/inet")
            .unwrap()
            .smtp_tls_security_level,
        SmtpTlsLevel::Verify
    );
    let d = dir_with(
        HOST,
        &format!("{SVC}options = {{ smtp_tls_security_level = \"verfy\" }}\n"),
    );
    let e = Config::load(&d.path().join("etc")).unwrap_err().to_string();
    assert!(e.contains("echo/inet: options: \"verfy\" is not one of"), "{e}");
}

#[test]
fn relative_paths_follow_the_one_rule() {
    let d = dir_with(
        &format!(
            "{HOST}queue_directory = \"var/spool\"\nmaillog_file = \"syslog\"\nmail_spool_directory = \"var/mail\"\nimapd_tls_cert_file = \"tls/cert.pem\"\nsmtpd_tls_key_file = \"/abs/key.pem\"\n"
        ),
        SVC,
    );
    let m = Config::load(&d.path().join("etc")).unwrap().main;
    assert_eq!(m.queue_directory.path(), d.path().join("var/spool"));
    assert_eq!(m.mail_spool_directory.path(), d.path().join("var/mail"));
    assert_eq!(m.maillog_file, "syslog");
    assert_eq!(m.imapd_tls_cert_file.path(), d.path().join("etc/tls/cert.pem"));
    assert_eq!(m.smtpd_tls_key_file, "/abs/key.pem");
    assert_eq!(m.pop3d_tls_cert_file, "");
}
