//! cleanup with real milters from Debian's packages, started by the test: clamav-milter in
//! front of clamd (with a one-signature database matching the EICAR test string, so no
//! signature download is needed) and opendkim signing with a key made by opendkim-genkey,
//! its signature checked by `opendkim -t`. Skipped, with a message, when the programs are
//! missing (`.ci/install-packages` installs them).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use postern_lib::ipc::IpcStream;
use postern_lib::proto::cleanup::{self, CleanupReply, CleanupRequest, Origin, Recipient, Submission};
use postern_lib::queue_file::{Limits, QueueFile};
use postern_tests::{Instance, bin, wait_for};

const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A process killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether each (program, Debian package) is installed; else the test is skipped (and
/// fails under CI).
fn have(programs: &[(&str, &str)]) -> bool {
    programs.iter().all(|(p, pkg)| postern_tests::require_tool(p, pkg))
}

/// A world-traversable temporary directory (the daemons may run as mail_owner).
fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("postern-milter")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

fn spawn(cmd: &mut Command) -> Daemon {
    Daemon(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn milter daemon"),
    )
}

fn wait_socket(p: &Path) {
    assert!(
        wait_for(Duration::from_secs(60), || UnixStream::connect(p).is_ok()),
        "{} never answered",
        p.display()
    );
    // Let the mail_owner reach it.
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777));
}

fn instance(settings: &[&str]) -> Instance {
    let svc = format!(
        "[[service]]\nname = \"cleanup\"\ntype = \"unix\"\ncommand = \"{}\"\nmaxproc = 4\n",
        bin("cleanup").display()
    );
    let mut inst = Instance::new(&svc, settings);
    inst.start();
    inst
}

fn submit(inst: &Instance, origin: Origin, content: &[u8]) -> CleanupReply {
    let sock = UnixStream::connect(inst.queue().join(cleanup::SOCKET)).expect("connect cleanup");
    let mut c = IpcStream::client(
        sock,
        cleanup::PROTOCOL,
        cleanup::VERSION,
        Some(Duration::from_secs(120)),
    )
    .expect("handshake");
    let mut attributes = BTreeMap::new();
    attributes.insert("client_addr".to_string(), "127.0.0.1".to_string());
    attributes.insert("client_name".to_string(), "localhost".to_string());
    attributes.insert("helo".to_string(), "localhost".to_string());
    let sub = Submission {
        sender: "alice@example.test".into(),
        recipients: vec![Recipient {
            address: "bob@example.test".into(),
            orcpt: None,
            notify: vec![],
        }],
        origin,
        extract_recipients: false,
        hold: false,
        attributes,
    };
    c.send(&CleanupRequest::Submit(sub)).expect("send");
    c.send_data(content).expect("data");
    c.send_end().expect("end");
    c.recv().expect("reply")
}

fn queued(inst: &Instance, r: &CleanupReply) -> (QueueFile, Vec<u8>) {
    let CleanupReply::Queued { queue_id } = r else {
        panic!("expected Queued, got {r:?}\n{}", inst.log());
    };
    let f = std::fs::File::open(inst.queue().join("incoming").join(queue_id)).expect("queue file");
    QueueFile::read_all(f, &Limits::default()).expect("parse")
}

/// Starts clamd on a one-signature database and clamav-milter in front of it, in `d`;
/// returns both processes and the milter's socket.
fn start_clamav(d: &Path) -> (Daemon, Daemon, PathBuf) {
    let dir = d;
    let db = dir.join("db");
    std::fs::create_dir(&db).expect("mkdir db");
    let hex: String = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(db.join("postern-test.ndb"), format!("Postern.Test.EICAR:0:*:{hex}\n")).expect("ndb");
    let clamd_sock = dir.join("clamd.sock");
    let milter_sock = dir.join("clamav-milter.sock");
    std::fs::write(
        dir.join("clamd.conf"),
        format!(
            "LocalSocket {}\nDatabaseDirectory {}\nForeground yes\nTemporaryDirectory {}\nLogFile {}\nPidFile {}\n",
            clamd_sock.display(),
            db.display(),
            dir.display(),
            dir.join("clamd.log").display(),
            dir.join("clamd.pid").display()
        ),
    )
    .expect("clamd.conf");
    std::fs::write(
        dir.join("clamav-milter.conf"),
        format!(
            "MilterSocket unix:{}\nMilterSocketMode 777\nClamdSocket unix:{}\nForeground yes\nOnInfected Reject\nRejectMsg Virus found: %v\nLogInfected Basic\nOnFail Defer\nLogFile {}\nPidFile {}\nFixStaleSocket yes\n",
            milter_sock.display(),
            clamd_sock.display(),
            dir.join("milter.log").display(),
            dir.join("milter.pid").display()
        ),
    )
    .expect("clamav-milter.conf");
    let clamd = spawn(Command::new("/usr/sbin/clamd").arg("-c").arg(dir.join("clamd.conf")));
    wait_socket(&clamd_sock);
    let milter = spawn(
        Command::new("/usr/sbin/clamav-milter")
            .arg("-c")
            .arg(dir.join("clamav-milter.conf")),
    );
    wait_socket(&milter_sock);

    (clamd, milter, milter_sock)
}

#[test]
fn cleanup_clamav_milter_rejects_eicar() {
    if !have(&[
        ("/usr/sbin/clamd", "clamav-daemon"),
        ("/usr/sbin/clamav-milter", "clamav-milter"),
    ]) {
        return;
    }
    let d = tempdir();
    let (_clamd, _milter, milter_sock) = start_clamav(d.path());
    let milters = format!("smtpd_milters=[\"unix:{}\"]", milter_sock.display());
    let inst = instance(&[&milters]);
    let virus = format!("From: alice@example.test\nTo: bob@example.test\nSubject: test\n\n{EICAR}\n");
    let r = submit(&inst, Origin::Smtp, virus.as_bytes());
    match &r {
        CleanupReply::Rejected { code, text, .. } => {
            assert!((500..600).contains(code), "{r:?}");
            assert!(
                text.contains("Postern.Test.EICAR") || text.to_lowercase().contains("virus"),
                "{r:?}"
            );
        }
        other => panic!("EICAR not rejected: {other:?}\n{}", inst.log()),
    }
    let clean = "From: alice@example.test\nTo: bob@example.test\nSubject: clean\n\nnothing to see\n";
    let (qf, content) = queued(&inst, &submit(&inst, Origin::Smtp, clean.as_bytes()));
    assert_eq!(qf.recipients.len(), 1);
    assert!(String::from_utf8_lossy(&content).ends_with("\n\nnothing to see\n"));
    // Only the clean message is queued.
    assert_eq!(std::fs::read_dir(inst.queue().join("incoming")).expect("ls").count(), 1);
}

/// The DNS TXT data of an opendkim-genkey `.txt` file: its quoted strings joined.
fn txt_record(text: &str) -> String {
    text.split('"').skip(1).step_by(2).collect()
}

#[test]
fn cleanup_opendkim_signs_and_the_signature_verifies() {
    if !have(&[
        ("/usr/sbin/opendkim", "opendkim"),
        ("/usr/sbin/opendkim-genkey", "opendkim-tools"),
    ]) {
        return;
    }
    let d = tempdir();
    let dir = d.path();
    let st = Command::new("/usr/sbin/opendkim-genkey")
        .args(["-b", "2048", "-d", "example.test", "-s", "test", "-D"])
        .arg(dir)
        .status()
        .expect("opendkim-genkey");
    assert!(st.success());
    let key = dir.join("test.private");
    let txt = txt_record(&std::fs::read_to_string(dir.join("test.txt")).expect("test.txt"));
    assert!(txt.contains("p="), "{txt}");
    let dns = dir.join("dns");
    std::fs::write(&dns, format!("test._domainkey.example.test {txt}\n")).expect("dns data");
    let sock = dir.join("opendkim.sock");
    let conf = |mode: &str| {
        format!(
            "Socket local:{}\nDomain example.test\nSelector test\nKeyFile {}\nMode {mode}\nCanonicalization relaxed/relaxed\nBackground no\nUMask 000\nRequireSafeKeys no\nPidFile {}\nTestDNSData file:{}\nSyslog no\n",
            sock.display(),
            key.display(),
            dir.join("opendkim.pid").display(),
            dns.display()
        )
    };
    std::fs::write(dir.join("sign.conf"), conf("s")).expect("conf");
    // The verifier knows only the public key, and must not take the test message for one
    // from an internal host.
    std::fs::write(
        dir.join("verify.conf"),
        format!(
            "Mode v\nCanonicalization relaxed/relaxed\nTestDNSData file:{}\nSyslog no\nInternalHosts 192.0.2.254\n",
            dns.display()
        ),
    )
    .expect("conf");
    let _dkim = spawn(
        Command::new("/usr/sbin/opendkim")
            .arg("-f")
            .arg("-x")
            .arg(dir.join("sign.conf")),
    );
    wait_socket(&sock);
    let milters = format!("non_smtpd_milters=[\"unix:{}\"]", sock.display());
    let inst = instance(&[&milters]);
    let msg = "From: alice@example.test\nTo: bob@example.test\nSubject: signed\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <1@example.test>\n\nHello, signed world.\n";
    let (_, content) = queued(&inst, &submit(&inst, Origin::Local, msg.as_bytes()));
    let text = String::from_utf8_lossy(&content).into_owned();
    assert!(text.starts_with("DKIM-Signature:"), "{text}");
    assert!(text.contains("d=example.test") && text.contains("s=test"), "{text}");
    // Verify the stored message as it would go out (CRLF) with opendkim's test mode.
    let out_file: PathBuf = dir.join("signed.eml");
    std::fs::write(&out_file, text.replace('\n', "\r\n")).expect("write eml");
    let out = Command::new("/usr/sbin/opendkim")
        .arg("-x")
        .arg(dir.join("verify.conf"))
        .arg("-t")
        .arg(&out_file)
        .arg("-vvv")
        .output()
        .expect("opendkim -t");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("verification (s=test, d=example.test") && report.contains("succeeded"),
        "{report}"
    );
    // A changed body no longer verifies: the check is real.
    std::fs::write(
        &out_file,
        text.replace("signed world", "forged world").replace('\n', "\r\n"),
    )
    .expect("eml");
    let out = Command::new("/usr/sbin/opendkim")
        .arg("-x")
        .arg(dir.join("verify.conf"))
        .arg("-t")
        .arg(&out_file)
        .arg("-vvv")
        .output()
        .expect("opendkim -t");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!report.contains("succeeded"), "{report}");
}

/// The whole path: Python's smtplib → smtpd → cleanup → clamav-milter. The EICAR message
/// is refused at the end of DATA (before any 250), the clean one gets its 250 and is queued.
#[test]
fn cleanup_eicar_over_smtp_is_refused_before_250() {
    if !have(&[
        ("/usr/sbin/clamd", "clamav-daemon"),
        ("/usr/sbin/clamav-milter", "clamav-milter"),
        ("/usr/bin/python3", "python3"),
    ]) {
        return;
    }
    let d = tempdir();
    let (_clamd, _milter, milter_sock) = start_clamav(d.path());
    let port = postern_tests::free_port();
    let services = format!(
        "{}{}{}",
        postern_tests::daemon_service("cleanup", "unix", "", "cleanup", "maxproc = 4"),
        postern_tests::auth_service(),
        postern_tests::daemon_service("smtp", "inet", &format!("127.0.0.1:{port}"), "smtpd", "maxproc = 2"),
    );
    let milters = format!("smtpd_milters=[\"unix:{}\"]", milter_sock.display());
    let mut inst = Instance::new(&services, &[&milters]);
    inst.start();
    let script = format!(
        r#"
import smtplib
eicar = {eicar:?}
def send(body):
    s = smtplib.SMTP("127.0.0.1", {port}, timeout=60)
    s.ehlo("client.test")
    msg = "From: a@remote.test\r\nTo: b@remote.test\r\nSubject: t\r\n\r\n" + body + "\r\n"
    try:
        s.sendmail("a@remote.test", ["b@remote.test"], msg)
        r = "250"
    except smtplib.SMTPDataError as e:
        r = "%d %s" % (e.smtp_code, e.smtp_error.decode())
    s.quit()
    return r
print(send(eicar))
print(send("clean text"))
"#,
        eicar = EICAR
    );
    let out = postern_tests::python(&script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with('5') && lines[0].contains("Postern.Test.EICAR"),
        "{out}\n{}",
        inst.log()
    );
    assert_eq!(lines[1], "250", "{out}\n{}", inst.log());
    let files: Vec<_> = std::fs::read_dir(inst.queue().join("incoming"))
        .expect("ls")
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "only the clean message is queued");
    let f = std::fs::File::open(files[0].path()).expect("open");
    let (_, content) = QueueFile::read_all(f, &Limits::default()).expect("parse");
    assert!(String::from_utf8_lossy(&content).contains("clean text"));
}
