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
