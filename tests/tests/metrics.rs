//! The metrics daemon scraped during a real load, its counters checked against what the
//! load did.
//!
//! The whole pipeline runs with the `metrics` service on a loopback port. Over SMTP:
//! messages to a local user (delivered), to unknown local users (refused at RCPT), to a
//! domain whose relay is a dead loopback port (deferred), and to a domain whose relay
//! answers 550 (bounced, with a non-delivery notice back to the local sender); and one
//! IMAP login with a wrong password (an auth failure). The
//! endpoint is scraped in the middle (counters never exceed the final ones) and at the
//! end, where every counter is exactly what was sent. Also: the gauges (queue sizes,
//! processes), HTTP refusals (404, 405, 431, 400), a silent client that cannot hold the
//! endpoint longer than its timeout, the OpenMetrics form, and that every series the
//! shipped Grafana dashboard graphs is served.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use postern_tests::*;

const LONG: Duration = Duration::from_secs(60);

/// One HTTP exchange: (status, body).
fn http(port: u16, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The samples of a scrape: `name{labels}` → value.
fn scrape(port: u16) -> HashMap<String, f64> {
    let (status, body) = http(port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[test]
fn counters_match_the_load() {
    let (smtp_port, metrics_port, dead_port, reject_port) = (free_port(), free_port(), free_port(), free_port());
    let imap_port = free_port();
    let mut services = pipeline_services(smtp_port);
    services.push_str(&daemon_service(
        "imap",
        "inet",
        &format!("127.0.0.1:{imap_port}"),
        "imapd",
        "",
    ));
    services.push_str(&daemon_service(
        "metrics",
        "inet",
        &format!("127.0.0.1:{metrics_port}"),
        "metrics",
        "maxproc = 1\nmax_use = 1000000000\nmax_idle = \"1000d\"",
    ));
    let mut inst = Instance::new(
        &services,
        &[
            "transport_maps=[\"transport\"]",
            "minimal_backoff_time=3600s",
            "maximal_backoff_time=3600s",
            "auth_failure_delay=0s",
        ],
    );
    std::fs::write(
        inst.etc().join("transport"),
        format!("dead.test smtp:[127.0.0.1]:{dead_port}\nbounce.test smtp:[127.0.0.1]:{reject_port}\n"),
    )
    .expect("transport");
    add_user(&inst, "bob", "bob-pw");
    let sinks = inst.root.path().join("sink");
    std::fs::create_dir_all(&sinks).unwrap();
    inst.start();
    let _rejecting = sink(&sinks, reject_port, 550);

    // The load: one SMTP session per message.
    const LOCAL: usize = 6;
    const UNKNOWN: usize = 3;
    const DEFERRED: usize = 2;
    const BOUNCED: usize = 1;
    let send = |rcpt: &str, n: usize| {
        python(&format!(
            "import smtplib\nfor i in range({n}):\n    s = smtplib.SMTP('127.0.0.1', {smtp_port}, timeout=30)\n    \
             try:\n        s.sendmail('bob@example.test', [{rcpt:?}], b'Subject: load\\r\\n\\r\\nload\\r\\n')\n    \
             except smtplib.SMTPRecipientsRefused:\n        pass\n    s.quit()\n"
        ));
    };
    send("bob@example.test", LOCAL / 2);
    // A scrape in the middle of the load.
    let middle = scrape(metrics_port);
    send("bob@example.test", LOCAL - LOCAL / 2);
    send("nosuchuser@example.test", UNKNOWN);
    send("carol@dead.test", DEFERRED);
    send("dave@bounce.test", BOUNCED);
    // One failed IMAP login.
    let said = python(&format!(
        "import imaplib\ni = imaplib.IMAP4('127.0.0.1', {imap_port})\n\
         try:\n    i.login('bob', 'wrong')\n    print('in')\nexcept imaplib.IMAP4.error:\n    print('refused')\n"
    ));
    assert_eq!(said.trim(), "refused");
    // Everything settled: local deliveries (the load's and the bounce notice), the
    // deferrals, the bounce and its notice, the removals.
    assert!(
        wait_for(LONG, || {
            inst.log_count("status=sent") == LOCAL + BOUNCED
                && inst.log_count("status=deferred") == DEFERRED
                && inst.log_count("status=bounced") == BOUNCED
                && inst.log_count(": removed") == LOCAL + 2 * BOUNCED
        }),
        "load settled; log:\n{}",
        inst.log()
    );
    let end = scrape(metrics_port);
    let sessions = (LOCAL + UNKNOWN + DEFERRED + BOUNCED) as f64;
    let want = [
        ("postern_connections_total{service=\"smtpd\"}", sessions),
        (
            "postern_messages_accepted_total{service=\"smtpd\"}",
            (LOCAL + DEFERRED + BOUNCED) as f64,
        ),
        (
            "postern_messages_rejected_total{service=\"smtpd\",code=\"550\",reason=\"Recipient address rejected: User unknown in local recipient table\"}",
            UNKNOWN as f64,
        ),
        (
            "postern_deliveries_total{transport=\"local\",status=\"sent\"}",
            (LOCAL + BOUNCED) as f64,
        ),
        (
            "postern_deliveries_total{transport=\"smtp\",status=\"deferred\"}",
            DEFERRED as f64,
        ),
        (
            "postern_deliveries_total{transport=\"smtp\",status=\"bounced\"}",
            BOUNCED as f64,
        ),
        (
            "postern_bounce_notifications_total{kind=\"non-delivery\"}",
            BOUNCED as f64,
        ),
        ("postern_messages_removed_total", (LOCAL + 2 * BOUNCED) as f64),
        ("postern_queue_messages{queue=\"deferred\"}", DEFERRED as f64),
        ("postern_queue_messages{queue=\"active\"}", 0.0),
        ("postern_queue_messages{queue=\"incoming\"}", 0.0),
        ("postern_auth_failures_total{service=\"imap\"}", 1.0),
        ("postern_connections_total{service=\"imapd\"}", 1.0),
        ("postern_master_up", 1.0),
        ("postern_log_readable", 1.0),
    ];
    for (key, value) in want {
        assert_eq!(get(&end, key), value, "{key}; scrape: {end:#?}");
    }
    // Counters only grow; the middle scrape saw part of the load.
    for (k, v) in &middle {
        if k.contains("_total") {
            assert!(*v <= get(&end, k), "{k} went down: {v} then {}", get(&end, k));
        }
    }
    assert!(get(&middle, "postern_connections_total{service=\"smtpd\"}") >= (LOCAL / 2) as f64);
    assert!(get(&middle, "postern_connections_total{service=\"smtpd\"}") < sessions);
    // Processes: qmgr is one, from master's status or counted in /proc.
    let qmgr = get(&end, "postern_processes{command=\"qmgr\"}")
        .max(get(&end, "postern_service_processes{service=\"qmgr/unix\"}"));
    assert_eq!(qmgr, 1.0, "{end:#?}");

    // HTTP: only GET/HEAD /metrics; bounded requests.
    assert_eq!(http(metrics_port, b"GET / HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(
        http(metrics_port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
        405
    );
    assert_eq!(http(metrics_port, b"BREW /metrics\r\n\r\n").0, 400);
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(http(metrics_port, &big).0, 431);
    let (status, body) = http(metrics_port, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, body) = http(
        metrics_port,
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n") && body.contains("# TYPE postern_deliveries counter\n"));

    // A client that says nothing holds the one process at most its timeout (5 s).
    let silent = TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let again = scrape(metrics_port);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(
        get(&again, "postern_messages_removed_total"),
        (LOCAL + 2 * BOUNCED) as f64
    );
    drop(silent);

    // Every series the shipped Grafana dashboard graphs is served.
    let dashboard = std::fs::read_to_string(repo_root().join("examples/grafana/postern.json")).expect("dashboard");
    let served: String = again.keys().cloned().collect::<Vec<_>>().join("\n");
    let mut names: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("postern_"))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");
    let (_, body) = http(metrics_port, b"GET /metrics HTTP/1.1\r\n\r\n");
    for name in names {
        // Families with no event yet have no series; their TYPE line is still there.
        let either = ["postern_processes", "postern_service_processes"];
        let ok = body.contains(&format!("# TYPE {name} "))
            || served.contains(name)
            || (either.contains(&name) && either.iter().any(|n| body.contains(&format!("# TYPE {n} "))));
        assert!(ok, "the dashboard graphs {name}, which is not served");
    }
}
