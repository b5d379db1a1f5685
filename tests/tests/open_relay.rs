//! The open-relay battery (issue 6): the classic address tricks sent through the whole
//! pipeline — smtpd, cleanup, qmgr, the smtp client — with a real SMTP sink on loopback as
//! the relayhost for every foreign domain, from a client outside `mynetworks` (source
//! address 127.0.0.2) without AUTH, after a failed AUTH, and after a successful one, and
//! from inside `mynetworks`. The only mail that may reach the sink is the two positive
//! controls (authenticated, and from inside); every trick from outside is refused at RCPT
//! and nothing else is queued for, or delivered to, the foreign host.

use postern_tests::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// The tricks: each names a foreign mailbox while pretending to be local.
const TRICKS: &[&str] = &[
    "victim@remote.test",
    "victim@REMOTE.TEST.",
    "victim%remote.test@example.test",
    "victim%remote.test@EXAMPLE.TEST.",
    "remote.test!victim@example.test",
    "@example.test:victim@remote.test",
    "@localhost,@example.test:victim@remote.test",
    "\"victim@remote.test\"@example.test",
    "\"victim%remote.test\"@example.test",
    "victim@remote.test@example.test",
    "victim@[127.0.0.1]",
    "victim@remote.test.example.test",
];

/// Runs the battery with smtplib; prints one `RESULT label rcpt code` line per RCPT.
const BATTERY: &str = r#"
import smtplib, sys
port, tricks = int(sys.argv[1]), sys.argv[2:]
def session(label, source, login=None, password=None, subject=None, rcpts=tricks):
    s = smtplib.SMTP('127.0.0.1', port, timeout=30, source_address=(source, 0))
    s.ehlo('client.test')
    if login:
        try:
            s.login(login, password)
            print('AUTH', label, 'ok')
        except smtplib.SMTPAuthenticationError as e:
            print('AUTH', label, e.smtp_code)
    for r in rcpts:
        s.rset()
        s.mail('sender@outside.test')
        code, _ = s.rcpt(r)
        print('RESULT', label, r, code)
        if code == 250 and subject:
            s.data(('From: sender@outside.test\r\nTo: %s\r\nSubject: %s\r\n\r\ncontrol\r\n' % (r, subject)).encode())
    s.quit()
session('outside', '127.0.0.2')
session('badauth', '127.0.0.2', 'alice', 'wrong-password')
session('auth', '127.0.0.2', 'alice', 'alice-pw', 'authenticated control', ['friend@remote.test'])
session('inside', '127.0.0.1', subject='inside control', rcpts=['friend2@remote.test'])
"#;

#[test]
fn no_trick_relays_and_only_the_controls_reach_the_foreign_host() {
    let (smtp_port, relay_port) = (free_port(), free_port());
    let mut inst = Instance::new(
        &pipeline_services(smtp_port),
        &[
            &format!("relayhost=[127.0.0.1]:{relay_port}"),
            "mynetworks=[\"127.0.0.1/32\"]",
            "smtpd_sasl_auth_enable=true",
            "smtpd_client_connection_count_limit=1000",
            "smtpd_hard_error_limit=100",
        ],
    );
    add_user(&inst, "alice", "alice-pw");
    let msgs = inst.root.path().join("sink");
    inst.start();
    let _sink = sink(&msgs, relay_port, 250);

    let script = inst.root.path().join("battery.py");
    std::fs::write(&script, BATTERY).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(smtp_port.to_string())
        .args(TRICKS)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));

    assert!(text.contains("AUTH badauth 535"), "{text}");
    assert!(text.contains("AUTH auth ok"), "{text}");
    let results: Vec<(&str, &str, u16)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| {
            let mut w = l.rsplitn(2, ' ');
            let code = w.next().unwrap().parse().unwrap();
            let (label, rcpt) = w.next().unwrap().split_once(' ').unwrap();
            (label, rcpt, code)
        })
        .collect();
    assert_eq!(results.len(), 2 * TRICKS.len() + 2, "{text}");
    for (label, rcpt, code) in &results {
        match *label {
            "outside" | "badauth" => assert!(
                (500..600).contains(code),
                "{label} {rcpt}: {code} (a trick was accepted)\n{text}"
            ),
            _ => assert_eq!(*code, 250, "{label} {rcpt}\n{text}"),
        }
    }

    // Exactly the two controls reach the foreign host, and the queue drains.
    let stored = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&msgs)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert!(wait_for(LONG, || stored().len() >= 2), "{}", inst.log());
    assert!(
        wait_for(LONG, || {
            ["incoming", "active", "deferred"]
                .iter()
                .all(|q| std::fs::read_dir(inst.queue().join(q)).map_or(0, |d| d.count()) == 0)
        }),
        "queue did not drain:\n{}",
        inst.log()
    );
    let got = stored();
    assert_eq!(got.len(), 2, "{got:?}");
    let subjects: Vec<bool> = ["Subject: authenticated control", "Subject: inside control"]
        .iter()
        .map(|s| got.iter().any(|m| m.contains(s)))
        .collect();
    assert_eq!(subjects, [true, true], "{got:?}");
    assert!(!got.iter().any(|m| m.contains("victim")), "{got:?}");
}
