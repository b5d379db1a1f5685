//! `sendmail -bs` under the real master (pickup and cleanup): a Python client speaks SMTP
//! to sendmail's standard input and output through pipes, and the messages it gets a 250
//! for arrive in `incoming/` with the envelope it gave, through postdrop and pickup.

use std::path::PathBuf;
use std::time::Duration;

use postern_lib::queue_file::QueueFile;
use postern_tests::{Instance, bin, python, wait_for};

const WAIT: Duration = Duration::from_secs(20);

fn instance(settings: &[&str]) -> Instance {
    for b in ["sendmail", "postdrop", "pickup", "cleanup"] {
        assert!(bin(b).exists(), "build the workspace first: {b} is missing");
    }
    let services = format!(
        "[[service]]\nname = \"pickup\"\ntype = \"unix\"\nlisten = \"public/pickup\"\ncommand = \"{}\"\nmaxproc = 1\n\
         wakeup = \"60s\"\n[[service]]\nname = \"cleanup\"\ntype = \"unix\"\ncommand = \"{}\"\n",
        bin("pickup").display(),
        bin("cleanup").display()
    );
    let mut inst = Instance::new(&services, settings);
    inst.start();
    inst
}

/// A Python client for `sendmail -bs`: `steps` is a list of (bytes to send, number of
/// replies to read); prints each reply (all its lines, joined by `|`) on a line, then
/// sendmail's exit status.
fn dialog(inst: &Instance, steps: &str) -> Vec<String> {
    let script = format!(
        r#"
import subprocess
p = subprocess.Popen([{sendmail:?}, "-C", {etc:?}, "-bs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def reply():
    lines = []
    while True:
        l = p.stdout.readline()
        if not l:
            return "EOF"
        lines.append(l.decode().rstrip("\r\n"))
        if len(l) < 4 or l[3:4] != b"-":
            return "|".join(lines)
print(reply())
for data, n in {steps}:
    if data:
        try:
            p.stdin.write(data)
            p.stdin.flush()
        except BrokenPipeError:
            pass
    for _ in range(n):
        print(reply())
p.stdin.close()
print("exit", p.wait(timeout=60))
"#,
        sendmail = bin("sendmail").display().to_string(),
        etc = inst.etc().display().to_string(),
    );
    python(&script).lines().map(str::to_string).collect()
}

fn incoming(inst: &Instance) -> Vec<PathBuf> {
    postern_lib::queue_scan::queue_files(&inst.queue(), "incoming")
        .unwrap_or_default()
        .into_iter()
        .map(|q| q.path)
        .collect()
}

fn names(inst: &Instance, dir: &str) -> Vec<String> {
    std::fs::read_dir(inst.queue().join(dir))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// (sender, sorted recipients, uid attribute, content) of each queue file in incoming/.
fn queued(inst: &Instance) -> Vec<(String, Vec<String>, Option<String>, String)> {
    let mut v: Vec<_> = incoming(inst)
        .iter()
        .map(|p| {
            let f = std::fs::File::open(p).expect("open queue file");
            let (qf, content) = QueueFile::read_all(f, &Default::default()).expect("read queue file");
            let mut rcpts: Vec<String> = qf.recipients.iter().map(|r| r.spec.address.clone()).collect();
            rcpts.sort();
            (
                qf.envelope.sender.clone(),
                rcpts,
                qf.envelope.attributes.get("uid").cloned(),
                String::from_utf8_lossy(&content).into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn smtp_on_stdio_queues_through_postdrop_and_pickup() {
    let mut inst = instance(&[]);
    let out = dialog(
        &inst,
        r#"[
        (b"EHLO client.test\r\n", 1),
        (b"MAIL FROM:<alice@far.test>\r\n", 1),
        (b"RCPT TO:<bob@example.test>\r\n", 1),
        (b"RCPT TO:<carol@elsewhere.test>\r\n", 1),
        (b"DATA\r\n", 1),
        (b"Subject: over stdio\r\nMessage-ID: <bs-1@client.test>\r\n\r\nfirst line\r\n..leading dot\r\n.\r\n", 1),
        (b"MAIL FROM:<>\r\nRCPT TO:<dave@example.test>\r\nDATA\r\n", 3),
        (b"Subject: bounce-like\r\n\r\nnull sender\r\n.\r\n", 1),
        (b"STARTTLS\r\n", 1),
        (b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", 1),
        (b"QUIT\r\n", 1),
        ]"#,
    );
    assert_eq!(out.len(), 15, "{out:#?}");
    assert!(out[0].starts_with("220 "), "{out:#?}");
    assert!(out[1].starts_with("250-") && out[1].contains("PIPELINING"), "{out:#?}");
    assert!(
        !out[1].contains("STARTTLS") && !out[1].contains("AUTH"),
        "a local session offers no TLS or AUTH: {}",
        out[1]
    );
    assert_eq!(out[2], "250 2.1.0 Ok");
    assert_eq!(out[3], "250 2.1.5 Ok");
    assert_eq!(out[4], "250 2.1.5 Ok", "relaying is permitted to the local user");
    assert!(out[5].starts_with("354 "), "{out:#?}");
    assert!(out[6].starts_with("250 2.0.0 Ok: queued as "), "{out:#?}");
    assert_eq!(&out[7..9], ["250 2.1.0 Ok", "250 2.1.5 Ok"]);
    assert!(out[9].starts_with("354 "), "{out:#?}");
    assert!(out[10].starts_with("250 2.0.0 Ok: queued as "), "{out:#?}");
    assert!(out[11].starts_with("454 4.7.0"), "{out:#?}");
    assert!(out[12].starts_with('5'), "AUTH is not available: {out:#?}");
    assert_eq!(out[13], "221 2.0.0 Bye");
    assert_eq!(out[14], "exit 0");

    assert!(wait_for(WAIT, || incoming(&inst).len() == 2), "{}", inst.log());
    assert!(wait_for(WAIT, || names(&inst, "maildrop").is_empty()));
    let uid = nix::unistd::getuid().as_raw().to_string();
    let q = queued(&inst);
    assert_eq!(q.len(), 2);
    let (sender, rcpts, quid, text) = &q[0];
    assert_eq!(sender, "", "the null sender is kept");
    assert_eq!(rcpts, &["dave@example.test"]);
    assert_eq!(quid.as_deref(), Some(uid.as_str()));
    assert!(
        text.contains("Subject: bounce-like\n") && text.ends_with("\nnull sender\n"),
        "{text}"
    );
    let (sender, rcpts, quid, text) = &q[1];
    assert_eq!(sender, "alice@far.test", "the envelope sender is what the client gave");
    assert_eq!(rcpts, &["bob@example.test", "carol@elsewhere.test"]);
    assert_eq!(quid.as_deref(), Some(uid.as_str()), "postdrop recorded the submitter");
    assert!(
        text.starts_with("Received: from client.test (localhost [127.0.0.1])"),
        "{text}"
    );
    assert!(text.contains("Message-ID: <bs-1@client.test>\n"), "{text}");
    assert!(text.ends_with("\n\nfirst line\n.leading dot\n"), "{text}");
    inst.stop();
}

#[test]
fn refused_or_unfinished_messages_leave_nothing() {
    let mut inst = instance(&["message_size_limit=2000"]);
    // The client goes away in the middle of DATA.
    let out = dialog(
        &inst,
        r#"[(b"HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n", 4),
            (b"Subject: cut\r\n\r\nhalf\r\n", 0)]"#,
    );
    assert!(out[4].starts_with("354 "), "{out:#?}");
    assert_eq!(out.last().map(String::as_str), Some("exit 0"), "{out:#?}");
    // Too big, announced and not.
    let big = "x".repeat(100);
    let out = dialog(
        &inst,
        &format!(
            r#"[(b"EHLO c\r\nMAIL FROM:<a@x.test> SIZE=5000\r\n", 2),
                (b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n", 3),
                (b"Subject: big\r\n\r\n" + b"{big}\r\n" * 40 + b".\r\n", 1),
                (b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n", 3),
                (b"Subject: small\r\n\r\nok\r\n.\r\nQUIT\r\n", 2)]"#
        ),
    );
    assert!(out[2].starts_with("552 5.3.4"), "{out:#?}");
    assert!(out[5].starts_with("354 "), "{out:#?}");
    assert!(out[6].starts_with("552 5.3.4"), "{out:#?}");
    assert!(out[10].starts_with("250 2.0.0 Ok: queued as "), "{out:#?}");
    assert_eq!(out[11], "221 2.0.0 Bye");
    assert!(wait_for(WAIT, || incoming(&inst).len() == 1), "{}", inst.log());
    assert!(wait_for(WAIT, || names(&inst, "maildrop").is_empty()));
    let q = queued(&inst);
    assert_eq!(q.len(), 1, "only the small message is queued");
    assert!(q[0].3.contains("Subject: small\n"), "{}", q[0].3);
    assert!(names(&inst, "incoming").iter().all(|n| !n.starts_with('.')));
    inst.stop();
}

#[test]
fn an_idle_client_is_timed_out() {
    let mut inst = instance(&["smtpd_timeout=1s"]);
    // The client stops sending in the middle of a message and keeps its end open.
    let out = dialog(
        &inst,
        r#"[(b"HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n", 4),
            (b"Subject: stalled\r\n\r\npart\r\n", 1)]"#,
    );
    assert!(out[4].starts_with("354 "), "{out:#?}");
    assert!(out[5].starts_with("421 4.4.2 "), "{out:#?}");
    assert_eq!(out[6], "exit 0");
    assert!(names(&inst, "maildrop").is_empty(), "nothing is queued");
    assert!(incoming(&inst).is_empty(), "nothing is queued");
    inst.stop();
}
