//! `postern migrate`: Debian's stock Postfix main.cf (as `apt-get install postfix` writes
//! it, plus a few settings sites commonly add) is turned into main.toml settings, printed
//! and, with `--apply`, written into the configuration so that `postern config` reports
//! them; what Postern cannot take is listed, never written.

mod common;

use common::Site;

/// Debian 12's main.cf after `dpkg-reconfigure postfix` ("Internet Site"), with additions.
const DEBIAN_MAIN_CF: &str = "\
# See /usr/share/postfix/main.cf.dist for a commented, more complete version

smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no

# appending .domain is the MUA's job.
append_dot_mydomain = no
readme_directory = no
compatibility_level = 3.6

# TLS parameters
smtpd_tls_cert_file=/etc/ssl/certs/ssl-cert-snakeoil.pem
smtpd_tls_key_file=/etc/ssl/private/ssl-cert-snakeoil.key
smtpd_tls_security_level=may

smtp_tls_CApath=/etc/ssl/certs
smtp_tls_security_level=may
smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache

smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated reject_unauth_destination
myhostname = mx.example.org
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
myorigin = MAILNAME
mydestination = $myhostname, example.org, localhost.example.org,
    localhost
relayhost = [smarthost.example.org]:587
mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = all
inet_protocols = all
message_size_limit = 52428800
maximal_queue_lifetime = 2
smtpd_client_restrictions = permit_mynetworks, check_client_access hash:ACCESS, permit
mydomain = example.org
virtual_alias_maps = ldap:/etc/postfix/ldap-aliases.cf
";

#[test]
fn debian_main_cf_is_converted_and_applied() {
    let site = Site::new();
    std::fs::write(site.path("mailname"), "example.org\n").unwrap();
    std::fs::write(site.path("access"), "203.0.113.7 REJECT go away\n").unwrap();
    let cf = DEBIAN_MAIN_CF
        .replace("MAILNAME", site.path("mailname").to_str().unwrap())
        .replace("ACCESS", site.path("access").to_str().unwrap());
    std::fs::write(site.path("main.cf"), &cf).unwrap();
    let r = site.run(&["migrate", "--apply", site.path("main.cf").to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let access = site.path("access").display().to_string();
    let want_converted = [
        "smtpd_banner = \"$myhostname ESMTP Postern (Debian/GNU)\"".to_string(),
        "smtpd_tls_cert_file = \"/etc/ssl/certs/ssl-cert-snakeoil.pem\"".into(),
        "smtpd_tls_key_file = \"/etc/ssl/private/ssl-cert-snakeoil.key\"".into(),
        "smtpd_tls_security_level = \"may\"".into(),
        "smtp_tls_security_level = \"may\"".into(),
        "smtpd_relay_restrictions = [\"permit_mynetworks\", \"permit_sasl_authenticated\", \"reject_unauth_destination\"]"
            .into(),
        "myhostname = \"mx.example.org\"".into(),
        "alias_maps = [\"/etc/aliases\"]".into(),
        "myorigin = \"example.org\"".into(),
        "mydestination = [\"$myhostname\", \"example.org\", \"localhost.example.org\", \"localhost\"]".into(),
        "relayhost = \"[smarthost.example.org]:587\"".into(),
        "mynetworks = [\"127.0.0.0/8\", \"[::1]/128\", \"192.0.2.0/24\"]".into(),
        "recipient_delimiter = \"+\"".into(),
        "message_size_limit = 52428800".into(),
        "maximal_queue_lifetime = \"2d\"".into(),
        format!("smtpd_client_restrictions = [\"permit_mynetworks\", \"check_client_access\", \"{access}\", \"permit\"]"),
        "mydomain = \"example.org\"".into(),
    ];
    let printed: Vec<&str> = r.stdout.lines().skip(1).take_while(|l| !l.is_empty()).collect();
    assert_eq!(printed, want_converted, "{}", r.stdout);
    for needle in [
        "#   inet_interfaces = all    (listen addresses are per service in master.toml",
        "#   virtual_alias_maps = ldap:/etc/postfix/ldap-aliases.cf    (ldap: tables are not supported)",
        "#   alias_database = hash:/etc/aliases    (alias files are read directly; no newaliases compile step)",
        "#   compatibility_level = 3.6    (Postern has one behaviour)",
    ] {
        assert!(r.stdout.contains(needle), "missing {needle:?} in\n{}", r.stdout);
    }
    assert!(r.stderr.contains("wrote 17 settings into"), "{}", r.stderr);

    // The configuration now says what main.cf said, and still loads.
    let get = |k: &str| site.run(&["config", k], None).stdout.trim().to_string();
    assert_eq!(get("myhostname"), "myhostname = \"mx.example.org\"");
    assert_eq!(get("maximal_queue_lifetime"), "maximal_queue_lifetime = \"2d\"");
    assert_eq!(get("relayhost"), "relayhost = \"[smarthost.example.org]:587\"");
    assert_eq!(
        get("mydestination"),
        "mydestination = [\"mx.example.org\", \"example.org\", \"localhost.example.org\", \"localhost\"]"
    );
    let main = site.read("etc/main.toml");
    assert!(
        main.starts_with("# Postern test configuration\n"),
        "comments kept: {main}"
    );
    assert!(!main.contains("ldap"), "{main}");
}

#[test]
fn a_missing_main_cf_is_one_error_line_and_nothing_changes() {
    let site = Site::new();
    let before = site.read("etc/main.toml");
    let r = site.run(&["migrate", "--apply", site.path("nope.cf").to_str().unwrap()], None);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.starts_with("postern: migrate: ") && r.stderr.ends_with("No such file or directory (os error 2)\n"),
        "{}",
        r.stderr
    );
    assert_eq!(site.read("etc/main.toml"), before);
}
