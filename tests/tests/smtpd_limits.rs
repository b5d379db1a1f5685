//! smtpd's time and connection limits under the real master: a client sending one byte a
//! second is timed out while another is served; the whole-DATA deadline; the per-client
//! connection count and rate limits (421 4.7.0), which do not count the clients of
//! `smtpd_client_event_limit_exceptions` (default: mynetworks, as in Postfix).

mod smtpd_common;

use postern_tests::wait_for;
use smtpd_common::*;
use std::io::Write;
use std::time::Duration;

#[test]
fn slow_client_is_timed_out_while_others_are_served() {
    let s = start(&["smtpd_timeout=2s"], "maxproc = 1", "");
    let port = s.port;
    let slow = std::thread::spawn(move || {
        let mut c = Client::connect(port);
        let mut sent = 0;
        // One byte a second, never a whole command: the command timer is not reset.
        for b in b"NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP\r\n" {
            if c.stream.write_all(std::slice::from_ref(b)).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_secs(1));
            if sent == 12 {
                break;
            }
        }
        c.reply()
    });
    // Meanwhile (same process: maxproc = 1) another client does a whole transaction.
    let mut c = s.client();
    c.cmd("EHLO fast.test");
    c.cmd("MAIL FROM:<a@remote.test>");
    c.cmd("RCPT TO:<root@example.test>");
    c.cmd("DATA");
    assert!(c.cmd("fast\r\n.").starts_with("250 2.0.0 Ok: queued as"));
    c.cmd("QUIT");
    let slow_reply = slow.join().unwrap();
    assert_eq!(slow_reply, "421 4.4.2 mail.example.test Error: timeout exceeded\r\n");
    assert_eq!(s.received().len(), 1);
    assert!(s.inst.log().contains("timeout after command from unknown[127.0.0.1]"));
}

#[test]
fn data_deadline_ends_a_trickling_transfer() {
    let s = start(&["smtpd_timeout=60s", "smtpd_data_timeout=2s"], "", "");
    let mut c = s.client();
    c.cmd("EHLO c.test");
    c.cmd("MAIL FROM:<a@remote.test>");
    c.cmd("RCPT TO:<root@example.test>");
    c.cmd("DATA");
    let mut n = 0;
    // Each line resets the per-read timer, but the whole transfer has a deadline.
    while n < 20 && c.stream.write_all(b"a line\r\n").is_ok() {
        std::thread::sleep(Duration::from_millis(500));
        n += 1;
        if wait_for(Duration::from_millis(1), || s.inst.log().contains("timeout after DATA")) {
            break;
        }
    }
    assert_eq!(c.reply(), "421 4.4.2 mail.example.test Error: timeout exceeded\r\n");
    assert!(c.closed());
    assert!(s.received().is_empty());
}

#[test]
fn per_client_connection_count_limit() {
    // Loopback is in mynetworks, which smtpd_client_event_limit_exceptions exempts by default.
    let s = start(
        &[
            "smtpd_client_connection_count_limit=2",
            "smtpd_client_event_limit_exceptions=[]",
        ],
        "maxproc = 1",
        "",
    );
    let mut a = s.client();
    let b = s.client();
    assert!(a.greeting.starts_with("220") && b.greeting.starts_with("220"));
    let c = s.client();
    assert_eq!(
        c.greeting,
        "421 4.7.0 mail.example.test Error: too many connections from 127.0.0.1\r\n"
    );
    a.cmd("QUIT");
    assert!(
        wait_for(LONG, || s.client().greeting.starts_with("220")),
        "a slot is free again once a client left"
    );
    assert!(s.inst.log().contains("too many connections from unknown[127.0.0.1]"));
}

#[test]
fn per_client_connection_rate_limit() {
    let s = start(
        &[
            "smtpd_client_connection_rate_limit=3",
            "smtpd_client_event_limit_exceptions=[]",
        ],
        "maxproc = 1",
        "",
    );
    for _ in 0..3 {
        let mut c = s.client();
        assert!(c.greeting.starts_with("220"), "{}", c.greeting);
        c.cmd("QUIT");
    }
    let c = s.client();
    assert_eq!(
        c.greeting,
        "421 4.7.0 mail.example.test Error: too many connections per minute from 127.0.0.1\r\n"
    );
}

/// Issue 10: `smtpd_client_event_limit_exceptions` (default `$mynetworks`, as Postfix) are
/// never counted — a trusted network's many connections are all served — while a client
/// outside it still gets the 421.
#[test]
fn trusted_networks_are_not_counted() {
    let s = start(
        &["mynetworks=[\"127.0.0.1/32\"]", "smtpd_client_connection_count_limit=2"],
        "maxproc = 1",
        "",
    );
    let out = python(
        r#"
import socket, sys
port = int(sys.argv[1])
held = []
def greet(src):
    s = socket.create_connection(('127.0.0.1', port), 10, source_address=(src, 0))
    held.append(s)
    return s.makefile('rb').readline().decode().strip()
print('trusted', [greet('127.0.0.1')[:3] for _ in range(5)])
print('other', [greet('127.0.0.2')[:3] for _ in range(3)])
"#,
        &[&s.port.to_string()],
    );
    assert!(out.contains("trusted ['220', '220', '220', '220', '220']"), "{out}");
    assert!(out.contains("other ['220', '220', '421']"), "{out}");
    assert!(s.inst.log().contains("too many connections from unknown[127.0.0.2]"));
    assert!(!s.inst.log().contains("too many connections from unknown[127.0.0.1]"));
}
