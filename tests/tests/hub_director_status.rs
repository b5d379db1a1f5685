//! A mail hub that follows the director (issue 16: `director_pairs` entries with `smtp=`
//! addresses, `director_user_map`), on loopback: its copies go to the user's pair, so
//! `postern status` counts the copies owed per pair (one `pair NAME` row for both of its
//! mailbox servers), and per `replica_relays` entry only for what the director could not
//! place; cleanup's log says the copies follow the director's pairs. Nothing listens on
//! any of the mailbox servers' ports, so every copy stays owed.

use postern_tests::{Instance, free_port, pipeline_services, python, wait_for};
use std::time::Duration;

/// The row of `postern status` whose first words are `key`: (copies owed, last reason).
fn row(status: &str, key: &str) -> Option<(usize, String)> {
    let line = status.lines().find(|l| l.starts_with(&format!("{key} ")))?;
    let rest = line.strip_prefix(key)?;
    let mut words = rest.split_whitespace();
    let copies = words.next()?.parse().ok()?;
    let _oldest = words.next()?;
    Some((copies, words.collect::<Vec<_>>().join(" ")))
}

#[test]
fn status_counts_the_copies_owed_per_director_pair() {
    let port = free_port();
    let [a1, b1, a2, b2, r1, r2] = [(); 6].map(|()| free_port());
    let pair = |name: &str, a: u16, b: u16| format!("\"{name} imap=127.0.0.1:1 smtp=127.0.0.1:{a},127.0.0.1:{b}\"");
    let pairs = format!("director_pairs=[{}, {}]", pair("p1", a1, b1), pair("p2", a2, b2));
    let relays = format!("replica_relays=[\"smtp:[127.0.0.1]:{r1}\", \"smtp:[127.0.0.1]:{r2}\"]");
    let mut hub = Instance::new(
        &pipeline_services(port),
        &[
            "myhostname=mh1.example.test",
            "mydestination=[\"localhost\"]",
            "relay_domains=[\"example.test\"]",
            "mynetworks=[\"127.0.0.0/8\"]",
            "replica_domains=[\"example.test\"]",
            &relays,
            &pairs,
            "director_user_map=director-map",
            "smtp_connect_timeout=2s",
        ],
    );
    // u1 on p1, u2 on p2, u3 on a pair the hub does not know (its copies: replica_relays).
    std::fs::write(hub.etc().join("director-map"), "u1 p1\nu2 p2\nu3 p9\n").expect("write the map");
    hub.start();
    python(&format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n\
         for rcpt, n in (('u1', 2), ('u2', 1), ('u3', 1)):\n    \
             for i in range(n):\n        \
                 s.sendmail('carol@client.test', [rcpt + '@example.test'], 'Subject: %s %d\\r\\n\\r\\nx\\r\\n' % (rcpt, i))\n\
         s.quit()\n"
    ));
    let status = || String::from_utf8_lossy(&hub.postern(&["status"]).stdout).into_owned();
    let mut text = String::new();
    // Every copy tried once (connection refused), so each row has its reason.
    let done = wait_for(Duration::from_secs(30), || {
        text = status();
        ["pair p1", "pair p2"]
            .iter()
            .all(|k| row(&text, k).is_some_and(|(_, why)| !why.is_empty() && why != "in step"))
    });
    assert!(done, "{text}\n{}", hub.log());
    assert!(text.contains("replica relay or pair"), "{text}");
    assert_eq!(
        row(&text, "pair p1").map(|r| r.0),
        Some(4),
        "2 messages × 2 servers\n{text}"
    );
    assert_eq!(row(&text, "pair p2").map(|r| r.0), Some(2), "{text}");
    for r in [r1, r2] {
        assert_eq!(
            row(&text, &format!("smtp:[127.0.0.1]:{r}")).map(|r| r.0),
            Some(1),
            "u3's copies go to replica_relays\n{text}"
        );
    }
    // No row per pair server: they are the pairs' rows.
    for p in [a1, b1, a2, b2] {
        let own = format!("smtp:[127.0.0.1]:{p}");
        assert!(!text.lines().any(|l| l.starts_with(&own)), "{text}");
    }
    let log = hub.log();
    assert_eq!(log.matches("copies per the director's pairs").count(), 4, "{log}");
    assert!(!log.contains("one copy per relay"), "{log}");
    let _ = hub.stop();
}
