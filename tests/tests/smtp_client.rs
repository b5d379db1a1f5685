//! The smtp delivery agent under the real master, driven as qmgr drives it (a deliver
//! request on `private/smtp` for a queue file in `active/`), against real SMTP servers on
//! loopback (tests/scripts/smtp_sink.py) and a real DNS server on loopback
//! (`postern-test-dns`): exact bytes delivered, per-recipient outcomes 2xx/4xx/5xx, done
//! marks in the queue file, MX preference with fallback when the first MX refuses, null
//! MX, and STARTTLS.
//!
//! MX delivery goes to port 25, so the MX tests bind sinks on 127.0.x.y:25 and need root
//! (CI runs as root); they say so and return otherwise.

use postern_lib::proto::deliver::DeliverReply;
use postern_lib::queue_file::{Notify, QueueFile, RecipientStatus};
use postern_lib::queue_id::QueueId;
use postern_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);
const MESSAGE: &[u8] = b"From: a@example.test\nTo: b@sink.test\nSubject: hi\n\nline one\n.leading dot\nlast\n";

/// A background helper process killed on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(file: &Path) -> u16 {
    assert!(wait_for(LONG, || file.exists()), "{} never appeared", file.display());
    std::fs::read_to_string(file).unwrap().trim().parse().unwrap()
}

/// Starts the SMTP sink; returns it, its port and its message directory.
fn sink(dir: &Path, name: &str, args: &[&str]) -> (Proc, u16, PathBuf) {
    let msgs = dir.join(name);
    let port_file = dir.join(format!("{name}.port"));
    let child = Command::new("python3")
        .arg(repo_root().join("tests/scripts/smtp_sink.py"))
        .arg("--port-file")
        .arg(&port_file)
        .arg("--dir")
        .arg(&msgs)
        .args(args)
        .spawn()
        .expect("python3");
    let p = Proc(child);
    let port = wait_port(&port_file);
    (p, port, msgs)
}

fn dns(dir: &Path, zone: &str) -> (Proc, u16) {
    let zone_file = dir.join("zone");
    std::fs::write(&zone_file, zone).unwrap();
    let port_file = dir.join("dns.port");
    let child = Command::new(bin("postern-test-dns"))
        .arg(&zone_file)
        .arg(&port_file)
        .spawn()
        .expect("dns");
    let p = Proc(child);
    let port = wait_port(&port_file);
    (p, port)
}

fn smtp_service() -> String {
    "[[service]]\nname = \"smtp\"\ntype = \"unix\"\ncommand = \"smtp\"\n".to_string()
}

/// Writes a queue file into active/ as cleanup and qmgr would leave it.
fn queue_file(inst: &Instance, rcpts: &[&str]) -> (QueueId, PathBuf) {
    let rcpts: Vec<_> = rcpts.iter().map(|r| (*r, Notify::default())).collect();
    write_queue_file(inst, "active", "a@example.test", &rcpts, &[], MESSAGE)
}

fn deliver(inst: &Instance, id: &QueueId, nexthop: &str, rcpts: &[&str]) -> DeliverReply {
    agent_deliver(inst, "smtp", id, nexthop, rcpts)
}

fn statuses(path: &Path) -> Vec<RecipientStatus> {
    QueueFile::read(std::fs::File::open(path).unwrap())
        .unwrap()
        .recipients
        .iter()
        .map(|r| r.status)
        .collect()
}

fn delivered_files(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn delivers_exact_bytes_to_a_bracketed_nexthop_and_marks_done() {
    let mut inst = Instance::new(&smtp_service(), &[]);
    let (_sink, port, msgs) = sink(inst.root.path(), "sink", &[]);
    inst.start();
    let (id, path) = queue_file(&inst, &["b@sink.test", "c@sink.test"]);
    let reply = deliver(
        &inst,
        &id,
        &format!("[127.0.0.1]:{port}"),
        &["b@sink.test", "c@sink.test"],
    );
    assert_eq!(
        reply.results.iter().map(|r| r.code).collect::<Vec<_>>(),
        [250, 250],
        "{reply:?}"
    );
    let got = delivered_files(&msgs);
    assert_eq!(got.len(), 1, "one transaction for both recipients");
    let expected = [
        b"X-Sink-From: <a@example.test>\r\nX-Sink-To: <b@sink.test>,<c@sink.test>\r\n".to_vec(),
        MESSAGE
            .iter()
            .flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] })
            .collect(),
    ]
    .concat();
    assert_eq!(String::from_utf8_lossy(&got[0]), String::from_utf8_lossy(&expected));
    assert_eq!(
        statuses(&path),
        [RecipientStatus::Delivered, RecipientStatus::Delivered]
    );
    assert!(wait_for(LONG, || inst.log_count("status=sent") == 2), "{}", inst.log());
    assert!(
        inst.log().contains(&format!("relay=127.0.0.1[127.0.0.1]:{port}")),
        "{}",
        inst.log()
    );

    // Delivering the same job again sends nothing: both recipients are final.
    let again = deliver(
        &inst,
        &id,
        &format!("[127.0.0.1]:{port}"),
        &["b@sink.test", "c@sink.test"],
    );
    assert_eq!(again.results.iter().map(|r| r.code).collect::<Vec<_>>(), [250, 250]);
    assert_eq!(
        delivered_files(&msgs).len(),
        1,
        "a finished recipient is never delivered twice"
    );
}

#[test]
fn remote_4xx_defers_and_5xx_bounces() {
    let mut inst = Instance::new(&smtp_service(), &[]);
    let (_s1, p450, _) = sink(inst.root.path(), "busy", &["--rcpt", "450"]);
    let (_s2, p550, _) = sink(inst.root.path(), "nouser", &["--rcpt", "550"]);
    let (_s3, p421, _) = sink(inst.root.path(), "closed", &["--greeting", "421"]);
    inst.start();
    let (id, path) = queue_file(&inst, &["x@sink.test"]);
    let r = deliver(&inst, &id, &format!("[127.0.0.1]:{p450}"), &["x@sink.test"]);
    assert_eq!(
        (r.results[0].code, r.results[0].dsn.to_string().as_str()),
        (450, "4.2.0"),
        "{r:?}"
    );
    assert!(
        r.results[0]
            .text
            .starts_with("host 127.0.0.1[127.0.0.1] said: 450 4.2.0 Mailbox busy"),
        "{r:?}"
    );
    assert_eq!(
        statuses(&path),
        [RecipientStatus::Pending],
        "deferred recipients stay pending"
    );
    let r = deliver(&inst, &id, &format!("[127.0.0.1]:{p421}"), &["x@sink.test"]);
    assert!(r.results[0].code / 100 == 4, "a 421 greeting defers: {r:?}");
    let r = deliver(&inst, &id, &format!("[127.0.0.1]:{p550}"), &["x@sink.test"]);
    assert_eq!(
        (r.results[0].code, r.results[0].dsn.to_string().as_str()),
        (550, "5.1.1"),
        "{r:?}"
    );
    assert_eq!(statuses(&path), [RecipientStatus::Bounced]);
    assert!(wait_for(LONG, || inst.log_count("status=bounced") == 1
        && inst.log_count("status=deferred") == 2));
}

#[test]
fn unreachable_host_defers_without_blocking() {
    let closed = free_port();
    let mut inst = Instance::new(&smtp_service(), &["smtp_connect_timeout=5s"]);
    inst.start();
    let (id, path) = queue_file(&inst, &["x@sink.test"]);
    let r = deliver(&inst, &id, &format!("[127.0.0.1]:{closed}"), &["x@sink.test"]);
    assert_eq!(r.results[0].code / 100, 4, "{r:?}");
    assert_eq!(statuses(&path), [RecipientStatus::Pending]);
}

#[test]
fn mx_preference_fallback_and_null_mx() {
    if !postern_tests::require_root("MX delivery uses port 25 on 127.0.x.y") {
        return;
    }
    // Unique loopback addresses for this test: 127.77.<pid-derived>.{1,2}.
    let net = format!("127.77.{}", std::process::id() % 250 + 1);
    let dir = tempfile::tempdir().unwrap();
    let (_dns, dns_port) = dns(
        dir.path(),
        &format!(
            "pref.test MX 20 backup.pref.test\npref.test MX 10 primary.pref.test\nprimary.pref.test A {net}.1\n\
             backup.pref.test A {net}.2\nnull.test MX 0 .\nplain.test A {net}.2\n"
        ),
    );
    let mut inst = Instance::new(
        &smtp_service(),
        &[&format!("smtp_dns_servers=[\"127.0.0.1:{dns_port}\"]")],
    );
    // Nothing listens on .1 (the preferred MX refuses connections); the sink is on .2:25.
    let (_sink, _, msgs) = sink(inst.root.path(), "backup", &["--listen", &format!("{net}.2:25")]);
    inst.start();
    let (id, path) = queue_file(&inst, &["u@pref.test"]);
    let r = deliver(&inst, &id, "pref.test", &["u@pref.test"]);
    assert_eq!(r.results[0].code, 250, "{r:?}\n{}", inst.log());
    assert_eq!(delivered_files(&msgs).len(), 1);
    assert_eq!(statuses(&path), [RecipientStatus::Delivered]);
    assert!(
        inst.log()
            .contains(&format!("connect to primary.pref.test[{net}.1:25]")),
        "{}",
        inst.log()
    );
    // No MX: the domain's own address.
    let (id, _) = queue_file(&inst, &["u@plain.test"]);
    assert_eq!(
        deliver(&inst, &id, "plain.test", &["u@plain.test"]).results[0].code,
        250
    );
    // Null MX: bounced, nothing sent.
    let (id, path) = queue_file(&inst, &["u@null.test"]);
    let r = deliver(&inst, &id, "null.test", &["u@null.test"]);
    assert_eq!(
        (r.results[0].code, r.results[0].dsn.to_string().as_str()),
        (556, "5.1.10"),
        "{r:?}"
    );
    assert_eq!(statuses(&path), [RecipientStatus::Bounced]);
    // A name that does not exist: bounced.
    let (id, _) = queue_file(&inst, &["u@nowhere.test"]);
    assert_eq!(
        deliver(&inst, &id, "nowhere.test", &["u@nowhere.test"]).results[0].code / 100,
        5
    );
}

#[test]
fn opportunistic_starttls_is_used_when_offered() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=sink.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "openssl req failed");
    let mut inst = Instance::new(&smtp_service(), &[]);
    let (_sink, port, msgs) = sink(
        inst.root.path(),
        "tls",
        &["--starttls", cert.to_str().unwrap(), key.to_str().unwrap()],
    );
    inst.start();
    let (id, _) = queue_file(&inst, &["t@sink.test"]);
    let r = deliver(&inst, &id, &format!("[127.0.0.1]:{port}"), &["t@sink.test"]);
    assert_eq!(r.results[0].code, 250, "{r:?}\n{}", inst.log());
    assert!(msgs.join("tls-used").exists(), "the message did not go over TLS");
    assert_eq!(delivered_files(&msgs).len(), 1);
}

#[test]
fn pipelined_transactions_reuse_one_connection() {
    let mut inst = Instance::new(&smtp_service(), &[]);
    let (_sink, port, msgs) = sink(inst.root.path(), "sink", &[]);
    inst.start();
    let nexthop = format!("[127.0.0.1]:{port}");
    for i in 0..3 {
        let rcpt = format!("r{i}@sink.test");
        let (id, _) = queue_file(&inst, &[&rcpt]);
        let r = deliver(&inst, &id, &nexthop, &[&rcpt]);
        assert_eq!(r.results[0].code, 250, "{r:?}");
        // Master learns asynchronously that the child is free; wait, so that the next job
        // deterministically reaches the same process (the one holding the connection).
        assert!(inst.wait_idle("smtp/unix", 1), "smtp child not idle again");
    }
    assert_eq!(delivered_files(&msgs).len(), 3);
    let connections = std::fs::read_to_string(msgs.join("connections"))
        .unwrap()
        .lines()
        .count();
    // One smtp process served the three jobs in a row (max one is idle): one connection.
    assert_eq!(
        connections,
        1,
        "the connection cache did not reuse the session:\n{}",
        inst.log()
    );
}
