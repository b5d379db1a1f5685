//! Fills a queue directory for `bench/queue_tools.sh`: N deferred messages written with
//! lib's queue file writer (as cleanup writes them), each with a defer log, and a mail log
//! holding every message's lines in the daemons' format.
//!
//! ```text
//! cargo run --release -p postqueue --example fill_queue -- QUEUE_DIR MAILLOG N
//! ```
//!
//! Message i goes to 1–3 recipients over 50 domains, arrived `(i * 13) % 4320` minutes
//! ago (spread over three days), its retry time an hour away (so a running qmgr leaves it
//! alone); its defer log says `Connection refused` for even i, `mailbox busy` for odd i.
//! The log has, per message, smtpd's connect/client/disconnect, cleanup's message-id,
//! qmgr's from=, and the smtp client's status=deferred per recipient — 6 to 8 lines —
//! interleaved two messages at a time, as concurrent sessions are.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_lib::queue_file::{Arrival, Envelope, Notify, QueueFileWriter, RecipientSpec};
use postern_lib::queue_id::QueueId;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [queue, maillog, n] = args.as_slice() else {
        eprintln!("usage: fill_queue QUEUE_DIR MAILLOG N");
        std::process::exit(64);
    };
    let queue = PathBuf::from(queue);
    let n: u64 = n.parse().expect("N");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let due = SystemTime::now() + Duration::from_secs(3600);
    for d in ["deferred", "defer"] {
        std::fs::create_dir_all(queue.join(d)).expect("mkdir");
    }
    let mut log = String::new();
    let mut pending: Vec<String> = Vec::new();
    for i in 0..n {
        let id = QueueId::new();
        let rcpts: Vec<String> = (0..=(i % 3))
            .map(|r| format!("user{r}@d{}.example", (i + r) % 50))
            .collect();
        let env = Envelope {
            queue_id: id,
            arrival: Arrival {
                secs: now - (i * 13 % 4320) * 60,
                micros: 0,
            },
            sender: format!("sender{}@s{}.example", i % 7, i % 11),
            attributes: [("protocol".to_string(), "ESMTP".to_string())].into_iter().collect(),
        };
        let path = queue.join("deferred").join(id.as_str());
        let f = std::fs::File::create_new(&path).expect("create");
        let mut w = QueueFileWriter::new(f, &env).expect("writer");
        for r in &rcpts {
            w.add_recipient(&RecipientSpec {
                address: r.clone(),
                orcpt: None,
                notify: Notify::UNSPECIFIED,
            })
            .expect("rcpt");
        }
        w.write_content(format!("Subject: bench {i}\nMessage-ID: <bench{i}@s.example>\n\nbody {i}\n").as_bytes())
            .expect("content");
        let f = w.finish().expect("finish");
        f.set_modified(due).expect("mtime");
        let reason = if i % 2 == 0 {
            "connect to 127.0.0.1[127.0.0.1:9]: Connection refused"
        } else {
            "host mx.example said: 450 4.2.0 mailbox busy"
        };
        let mut defer = String::new();
        for r in &rcpts {
            let _ = write!(defer, "recipient={r}\nstatus=4.4.1\nreason={reason}\n\n");
        }
        std::fs::write(queue.join("defer").join(id.as_str()), defer).expect("defer log");

        let pid = 1000 + i % 4;
        let stamp = "Dec  6 20:54:14 bench";
        let mut lines = vec![
            format!("{stamp} postern/smtpd[{pid}]: connect from unknown[127.0.0.1]"),
            format!("{stamp} postern/smtpd[{pid}]: {id}: client=unknown[127.0.0.1]"),
            format!("{stamp} postern/cleanup[2000]: {id}: message-id=<bench{i}@s.example>"),
            format!(
                "{stamp} postern/qmgr[3000]: {id}: from=<{}>, size=300, nrcpt={} (queue active)",
                env.sender,
                rcpts.len()
            ),
            format!("{stamp} postern/smtpd[{pid}]: disconnect from unknown[127.0.0.1]"),
        ];
        for r in &rcpts {
            lines.push(format!(
                "{stamp} postern/smtp[4000]: {id}: to=<{r}>, relay=none, delay=0.05, delays=0/0/0.05/0, dsn=4.4.1, status=deferred ({reason})"
            ));
        }
        // Interleave with the previous message's lines.
        let mut merged = Vec::new();
        let (mut a, mut b) = (pending.into_iter(), lines.clone().into_iter());
        loop {
            match (a.next(), b.next()) {
                (None, None) => break,
                (x, y) => merged.extend(x.into_iter().chain(y)),
            }
        }
        pending = Vec::new();
        if i % 2 == 0 {
            pending = lines;
        } else {
            for l in merged {
                log.push_str(&l);
                log.push('\n');
            }
        }
    }
    for l in pending {
        log.push_str(&l);
        log.push('\n');
    }
    let mut f = std::fs::File::create(maillog).expect("maillog");
    f.write_all(log.as_bytes()).expect("write maillog");
}
