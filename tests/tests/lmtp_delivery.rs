//! LMTP (RFC 2033) end to end: SMTP in → cleanup → qmgr → the smtp client running as the
//! `lmtp` service → a real LMTP server (tests/scripts/lmtp_sink.py) on a Unix-domain
//! socket and on loopback TCP, chosen by `transport_maps` entries `lmtp:unix:/path` and
//! `lmtp:[127.0.0.1]:PORT`. The server answers each accepted recipient on its own after
//! DATA (250, 452, 550) and refuses one at RCPT; each recipient gets its own outcome:
//! delivered, deferred or bounced, with the server's reply in the log line, and the sink
//! stores the message bytes once, for the recipients it took.

use postern_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Starts lmtp_sink.py storing into `dir`; `unix` is the socket to listen on (else TCP).
/// Returns the helper and the TCP port (0 for a socket) once it is ready.
fn lmtp_sink(dir: &Path, unix: Option<&Path>, args: &[&str]) -> (Helper, u16) {
    let ready = dir.with_extension("ready");
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("tests/scripts/lmtp_sink.py"))
        .arg("--dir")
        .arg(dir)
        .arg("--port-file")
        .arg(&ready)
        .args(args);
    if let Some(sock) = unix {
        cmd.arg("--unix").arg(sock);
    }
    let helper = Helper(cmd.spawn().expect("python3"));
    assert!(wait_for(LONG, || ready.exists()), "lmtp sink did not start");
    let port = std::fs::read_to_string(&ready).unwrap().trim().parse().unwrap();
    (helper, port)
}

/// The log line of `rcpt`'s delivery attempt, once there is one.
fn line_for(inst: &Instance, rcpt: &str) -> String {
    let needle = format!("to=<{rcpt}>");
    let found = wait_for(LONG, || {
        inst.log().lines().any(|l| l.contains(&needle) && l.contains("status="))
    });
    assert!(found, "no delivery line for {rcpt}:\n{}", inst.log());
    inst.log()
        .lines()
        .find(|l| l.contains(&needle) && l.contains("status="))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn lmtp_over_unix_and_tcp_sockets_gives_each_recipient_its_own_outcome() {
    let smtp_port = free_port();
    let services = format!(
        "{}{}",
        pipeline_services(smtp_port),
        daemon_service("lmtp", "unix", "", "smtp", "maxproc = 4")
    );
    let mut inst = Instance::new(&services, &["transport_maps=[\"transport\"]"]);
    add_user(&inst, "alice", "alice-pw");
    let root = inst.root.path().to_path_buf();
    let sock = root.join("lmtp.sock");
    let unix_dir = root.join("unix-sink");
    let tcp_dir = root.join("tcp-sink");
    let (_unix_sink, _) = lmtp_sink(
        &unix_dir,
        Some(&sock),
        &[
            "--final",
            "full@lmtp.test=452",
            "--final",
            "gone@lmtp.test=550",
            "--rcpt",
            "nobody@lmtp.test=550",
        ],
    );
    let (_tcp_sink, port) = lmtp_sink(&tcp_dir, None, &[]);
    std::fs::write(
        inst.etc().join("transport"),
        format!(
            "lmtp.test  lmtp:unix:{}\ntcp.test   lmtp:[127.0.0.1]:{port}\n",
            sock.display()
        ),
    )
    .unwrap();
    inst.start();

    let msg = "From: alice@example.test\r\nTo: team@lmtp.test\r\nSubject: lmtp\r\n\
               Message-ID: <lmtp.1@example.test>\r\n\r\nhello over LMTP\r\n.dot line\r\n";
    smtplib_send(
        smtp_port,
        "alice@example.test",
        &["ok@lmtp.test", "full@lmtp.test", "gone@lmtp.test", "nobody@lmtp.test"],
        msg,
    );
    let relay = format!("relay=localhost[{}]", sock.display());
    let ok = line_for(&inst, "ok@lmtp.test");
    assert!(
        ok.contains(&relay) && ok.contains("dsn=2.1.5, status=sent (250 2.1.5 Ok)"),
        "{ok}"
    );
    let full = line_for(&inst, "full@lmtp.test");
    assert!(
        full.contains(&format!(
            "dsn=4.2.2, status=deferred (host localhost[{}] said: 452 4.2.2 Mailbox full, try again later)",
            sock.display()
        )),
        "{full}"
    );
    let gone = line_for(&inst, "gone@lmtp.test");
    assert!(
        gone.contains(&format!(
            "dsn=5.1.1, status=bounced (host localhost[{}] said: 550 5.1.1 No such user here)",
            sock.display()
        )),
        "{gone}"
    );
    let nobody = line_for(&inst, "nobody@lmtp.test");
    assert!(nobody.contains("dsn=5.1.1, status=bounced"), "{nobody}");

    // The sink took the message once, for the one recipient it accepted at the end.
    let got = sink_messages(&unix_dir);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("X-Sink-From: <alice@example.test>\r\nX-Sink-To: <ok@lmtp.test>\r\n"),
        "{}",
        got[0]
    );
    assert!(
        got[0].contains("Subject: lmtp\r\n") && got[0].ends_with("\r\n\r\nhello over LMTP\r\n.dot line\r\n"),
        "{}",
        got[0]
    );
    let replies = std::fs::read_to_string(unix_dir.join("replies")).unwrap();
    assert_eq!(
        replies, "ok@lmtp.test 250\nfull@lmtp.test 452\ngone@lmtp.test 550\n",
        "one reply per accepted recipient, in order"
    );

    // The same transport over TCP.
    smtplib_send(smtp_port, "alice@example.test", &["t@tcp.test"], msg);
    let t = line_for(&inst, "t@tcp.test");
    assert!(
        t.contains(&format!("relay=127.0.0.1[127.0.0.1]:{port}")) && t.contains("status=sent"),
        "{t}"
    );
    let got = sink_messages(&tcp_dir);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("X-Sink-From: <alice@example.test>\r\nX-Sink-To: <t@tcp.test>\r\n"));
    assert!(got[0].ends_with("\r\nhello over LMTP\r\n.dot line\r\n"));
}
