//! What the smtp client does per destination, driven as qmgr drives it (a deliver request
//! on `private/smtp`) against real SMTP servers on loopback (tests/scripts/smtp_sink.py):
//!
//! * `smtp_tls_policy_maps` (Postfix's table syntax): `encrypt` to a server without
//!   STARTTLS defers with Postfix's reason and sends nothing; `verify` with a certificate
//!   from a CA in `smtp_tls_CAfile` and a matching `match=` name delivers over TLS; a
//!   certificate from an unknown CA, or one that names another host, defers.
//! * DSN onward: `RET=`/`ENVID=` on MAIL and `NOTIFY=`/`ORCPT=` on RCPT, from the queue
//!   file, only to a server that announces DSN.
//! * A server that accepts the connection and never answers defers after
//!   `smtp_helo_timeout`, with Postfix's reason.

use postern_lib::queue_file::{Notify, QueueFile, RecipientStatus};
use postern_lib::queue_id::QueueId;
use postern_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MESSAGE: &[u8] = b"From: a@example.test\nTo: b@sink.test\nSubject: policy\n\nbody\n";

fn smtp_service() -> String {
    daemon_service("smtp", "unix", "", "smtp", "")
}

fn queue_file(inst: &Instance, rcpts: &[(&str, Notify)], attrs: &[(&str, &str)]) -> (QueueId, PathBuf) {
    write_queue_file(inst, "active", "a@example.test", rcpts, attrs, MESSAGE)
}

fn plain(inst: &Instance, rcpt: &str) -> (QueueId, PathBuf) {
    queue_file(inst, &[(rcpt, Notify::default())], &[])
}

fn status(path: &Path) -> RecipientStatus {
    QueueFile::read(std::fs::File::open(path).unwrap()).unwrap().recipients[0].status
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`NAME-ca.pem`) and a server certificate it signed for `dns_name`
/// (`NAME-cert.pem`, `NAME-key.pem`), in `dir`.
fn ca_and_cert(dir: &Path, name: &str, dns_name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |s: &str| dir.join(format!("{name}-{s}")).to_string_lossy().into_owned();
    let (ca, ca_key, cert, key, csr, ext) = (
        p("ca.pem"),
        p("ca-key.pem"),
        p("cert.pem"),
        p("key.pem"),
        p("req.pem"),
        p("ext.cnf"),
    );
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &format!("/CN={dns_name}"),
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    std::fs::write(
        &ext,
        format!("basicConstraints=CA:FALSE\nsubjectAltName=DNS:{dns_name}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (PathBuf::from(ca), PathBuf::from(cert), PathBuf::from(key))
}

#[test]
fn tls_policy_table_requires_and_verifies_per_nexthop() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_cert(dir.path(), "good", "mx.policy.test");
    let (_, rogue_cert, rogue_key) = ca_and_cert(dir.path(), "rogue", "mx.policy.test");
    let base = dir.path();
    let (_plain, plain_port) = sink_with_args(&base.join("plain"), &[]);
    let tls_args = |c: &Path, k: &Path| {
        vec![
            "--starttls".to_string(),
            c.display().to_string(),
            k.display().to_string(),
        ]
    };
    let good_args = tls_args(&cert, &key);
    let good: Vec<&str> = good_args.iter().map(String::as_str).collect();
    let rogue_args = tls_args(&rogue_cert, &rogue_key);
    let rogue: Vec<&str> = rogue_args.iter().map(String::as_str).collect();
    let (_verified, verified_port) = sink_with_args(&base.join("verified"), &good);
    let (_misnamed, misnamed_port) = sink_with_args(&base.join("misnamed"), &good);
    let (_untrusted, untrusted_port) = sink_with_args(&base.join("untrusted"), &rogue);
    // The CA file is read by the smtp process (mail_owner when run as root).
    let ca_copy = base.join("trusted-ca.pem");
    std::fs::copy(&ca, &ca_copy).unwrap();

    let mut inst = Instance::new(
        &smtp_service(),
        &[
            "smtp_tls_policy_maps=[\"tls_policy\"]",
            &format!("smtp_tls_CAfile={}", ca_copy.display()),
            "smtp_tls_security_level=may",
        ],
    );
    std::fs::write(
        inst.etc().join("tls_policy"),
        format!(
            "# per-destination TLS policy\n\
             [127.0.0.1]:{plain_port}      encrypt\n\
             [127.0.0.1]:{verified_port}   verify match=hostname:mx.policy.test\n\
             [127.0.0.1]:{misnamed_port}   verify match=other.policy.test\n\
             [127.0.0.1]:{untrusted_port}  secure match=mx.policy.test\n"
        ),
    )
    .unwrap();
    inst.start();

    // encrypt, but the server offers no STARTTLS: deferred, nothing sent.
    let (id, path) = plain(&inst, "x@plain.test");
    let r = agent_deliver(
        &inst,
        "smtp",
        &id,
        &format!("[127.0.0.1]:{plain_port}"),
        &["x@plain.test"],
    );
    assert_eq!(
        (r.results[0].code, r.results[0].dsn.to_string().as_str()),
        (451, "4.7.4"),
        "{r:?}"
    );
    assert_eq!(
        r.results[0].text,
        "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"
    );
    assert_eq!(status(&path), RecipientStatus::Pending);
    assert_eq!(sink_messages(&base.join("plain")).len(), 0);
    let commands = std::fs::read_to_string(base.join("plain/commands")).unwrap_or_default();
    assert!(!commands.contains("MAIL"), "no transaction in the clear: {commands}");

    // verify against smtp_tls_CAfile with a matching name: delivered over TLS.
    let (id, path) = plain(&inst, "x@verified.test");
    let r = agent_deliver(
        &inst,
        "smtp",
        &id,
        &format!("[127.0.0.1]:{verified_port}"),
        &["x@verified.test"],
    );
    assert_eq!(r.results[0].code, 250, "{r:?}\n{}", inst.log());
    assert_eq!(status(&path), RecipientStatus::Delivered);
    assert!(base.join("verified/tls-used").exists());
    assert_eq!(sink_messages(&base.join("verified")).len(), 1);

    // The same trusted certificate, but the policy wants another name: deferred.
    let (id, path) = plain(&inst, "x@misnamed.test");
    let r = agent_deliver(
        &inst,
        "smtp",
        &id,
        &format!("[127.0.0.1]:{misnamed_port}"),
        &["x@misnamed.test"],
    );
    assert_eq!(
        (r.results[0].code, r.results[0].dsn.to_string().as_str()),
        (451, "4.7.5"),
        "{r:?}"
    );
    assert!(
        r.results[0].text.starts_with("Server certificate not verified"),
        "{r:?}"
    );
    assert_eq!(status(&path), RecipientStatus::Pending);
    assert_eq!(sink_messages(&base.join("misnamed")).len(), 0);

    // A certificate from a CA nobody trusts: deferred.
    let (id, _) = plain(&inst, "x@untrusted.test");
    let r = agent_deliver(
        &inst,
        "smtp",
        &id,
        &format!("[127.0.0.1]:{untrusted_port}"),
        &["x@untrusted.test"],
    );
    assert_eq!(
        (r.results[0].code, r.results[0].dsn.to_string().as_str()),
        (451, "4.7.5"),
        "{r:?}"
    );
    assert!(
        r.results[0].text.starts_with("Server certificate not verified"),
        "{r:?}"
    );
    assert_eq!(sink_messages(&base.join("untrusted")).len(), 0);
    assert!(
        wait_for(std::time::Duration::from_secs(30), || inst.log_count("status=deferred")
            == 3),
        "{}",
        inst.log()
    );
}

#[test]
fn dsn_parameters_go_onward_only_to_servers_that_offer_dsn() {
    let dir = tempfile::tempdir().unwrap();
    let (_dsn, dsn_port) = sink_with_args(&dir.path().join("dsn"), &["--dsn"]);
    let (_old, old_port) = sink_with_args(&dir.path().join("old"), &[]);
    let mut inst = Instance::new(&smtp_service(), &["smtp_connection_cache_time_limit=0s"]);
    inst.start();
    let rcpts = [
        ("b+x@sink.test", Notify::new(true, true, false)),
        ("c@sink.test", Notify::NEVER),
        ("d@sink.test", Notify::default()),
    ];
    let attrs = [("ret", "HDRS"), ("envid", "env+1 id")];
    let addrs = ["b+x@sink.test", "c@sink.test", "d@sink.test"];
    for port in [dsn_port, old_port] {
        let (id, _) = queue_file(&inst, &rcpts, &attrs);
        let r = agent_deliver(&inst, "smtp", &id, &format!("[127.0.0.1]:{port}"), &addrs);
        assert!(r.results.iter().all(|x| x.code == 250), "{r:?}");
    }
    let dsn = std::fs::read_to_string(dir.path().join("dsn/commands")).unwrap();
    let size = MESSAGE.len();
    assert_eq!(
        dsn.lines().collect::<Vec<_>>(),
        [
            format!("MAIL FROM:<a@example.test> SIZE={size} RET=HDRS ENVID=env+2B1+20id"),
            "RCPT TO:<b+x@sink.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@sink.test".to_string(),
            "RCPT TO:<c@sink.test> NOTIFY=NEVER ORCPT=rfc822;c@sink.test".to_string(),
            "RCPT TO:<d@sink.test> ORCPT=rfc822;d@sink.test".to_string(),
        ]
    );
    let old = std::fs::read_to_string(dir.path().join("old/commands")).unwrap();
    assert_eq!(
        old.lines().collect::<Vec<_>>(),
        [
            format!("MAIL FROM:<a@example.test> SIZE={size}"),
            "RCPT TO:<b+x@sink.test>".to_string(),
            "RCPT TO:<c@sink.test>".to_string(),
            "RCPT TO:<d@sink.test>".to_string(),
        ],
        "no DSN parameters to a server without DSN"
    );
}

#[test]
fn a_server_that_never_answers_defers_after_the_helo_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_hang, port) = sink_with_args(&dir.path().join("hang"), &["--hang"]);
    let mut inst = Instance::new(&smtp_service(), &["smtp_helo_timeout=2s"]);
    inst.start();
    let (id, path) = plain(&inst, "x@hang.test");
    let r = agent_deliver(&inst, "smtp", &id, &format!("[127.0.0.1]:{port}"), &["x@hang.test"]);
    assert_eq!(
        (r.results[0].code, r.results[0].dsn.to_string().as_str()),
        (451, "4.4.1"),
        "{r:?}"
    );
    assert_eq!(
        r.results[0].text,
        "conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server greeting"
    );
    assert_eq!(status(&path), RecipientStatus::Pending);
    let connections = std::fs::read_to_string(dir.path().join("hang/connections")).unwrap();
    assert_eq!(connections.lines().count(), 1);
}
