//! A real webmail against imapd: Roundcube from Debian's packages (`roundcube-core`,
//! `roundcube-sqlite3`), in a private instance — its own config directory
//! (`ROUNDCUBE_CONFIG_DIR`), SQLite database, logs and temp files in a temporary
//! directory — on PHP's built-in web server on loopback, pointed at the instance's IMAP
//! port. tests/scripts/roundcube_client.py drives it over HTTP as its browser code does:
//! logs in, lists a 2,000-message INBOX by date and threaded, opens the newest message,
//! moves it to Archive, deletes the next (to Trash, then for good). The test checks
//! Roundcube's answers against the messages made, the Maildir on disk afterwards, and
//! imapd's transcript of the user (`imapd_transcript_users`): the IMAP commands
//! Roundcube sent, printed, SORT and THREAD among them, no password. A second test
//! checks the transcript alone with imaplib: the named user's session only, LOGIN masked.

use postern_tests::{Helper, Instance, add_user, auth_service, daemon_service, free_port, wait_for};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "Alice-Webmail-Pw1";
const MESSAGES: usize = 2000;
/// Messages per thread: 200 threads of 10, each a chain of replies.
const THREAD: usize = 10;
/// Roundcube's default page size (`mail_pagesize`).
const PAGE: usize = 50;
/// Debian's Roundcube: the program, and the public directory the web server serves.
const ROUNDCUBE: &str = "/usr/share/roundcube/index.php";
const PUBLIC_HTML: &str = "/var/lib/roundcube/public_html";

/// Message `i` (1-based): thread `t = (i-1)/10`, place `p` in it. Threads are dated in
/// a shuffled order (`t*73 mod 200`: not the order of the files, so listing by date
/// needs the dates), the messages of one a minute apart.
fn minute(i: usize) -> usize {
    let (t, p) = ((i - 1) / THREAD, (i - 1) % THREAD);
    (t * 73 % (MESSAGES / THREAD)) * THREAD + p
}

fn subject(i: usize) -> String {
    let (t, p) = ((i - 1) / THREAD, (i - 1) % THREAD);
    let re = if p == 0 { "" } else { "Re: " };
    format!("{re}Topic {t:03} message {i}")
}

fn message(i: usize) -> String {
    let t = (i - 1) / THREAD;
    let root = t * THREAD + 1;
    // from 2026-01-01 00:00 UTC, a Thursday: 2,000 minutes are two days
    let m = minute(i);
    let (day, hour, min) = (m / 1440, m / 60 % 24, m % 60);
    let date = format!(
        "{}, {:02} Jan 2026 {hour:02}:{min:02}:00 +0000",
        ["Thu", "Fri"][day],
        1 + day
    );
    let mut h = format!(
        "From: Sender {t} <s{t}@example.test>\r\nTo: {USER}@example.test\r\nSubject: {}\r\nDate: {date}\r\n\
         Message-ID: <m{i}@example.test>\r\n",
        subject(i)
    );
    if i > root {
        let refs: Vec<String> = (root..i).map(|j| format!("<m{j}@example.test>")).collect();
        h.push_str(&format!(
            "In-Reply-To: <m{}@example.test>\r\nReferences: {}\r\n",
            i - 1,
            refs.join(" ")
        ));
    }
    format!("{h}\r\nBody of message {i}\r\n")
}

/// The messages of the INBOX's Maildir (new/ and cur/ of `dir`): message number → file.
fn messages_in(dir: &Path) -> BTreeMap<usize, PathBuf> {
    let mut out = BTreeMap::new();
    for d in ["new", "cur"] {
        for e in std::fs::read_dir(dir.join(d)).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if let Some(n) = text
                .split("Body of message ")
                .nth(1)
                .and_then(|s| s.trim().parse::<usize>().ok())
            {
                out.insert(n, e.path());
            }
        }
    }
    out
}

/// The records the client printed: kind → rows of fields.
fn records(text: &str) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut out: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split('\t').map(String::from);
        if let Some(kind) = f.next() {
            out.entry(kind).or_default().push(f.collect());
        }
    }
    out
}

/// Whether PHP has the SQLite driver Roundcube's `roundcube-sqlite3` pulls in.
fn php_has_sqlite() -> bool {
    Command::new("php")
        .arg("-m")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "pdo_sqlite"))
}

/// Roundcube's private instance in `dir`: config.inc.php for `imap_port`, the shipped
/// defaults beside it, SQLite database (made by Roundcube on first use), logs, temp.
fn roundcube_config(dir: &Path, imap_port: u16) -> PathBuf {
    let config = dir.join("config");
    for d in [&config, &dir.join("logs"), &dir.join("temp")] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    for f in ["defaults.inc.php", "mimetypes.php"] {
        std::os::unix::fs::symlink(Path::new("/etc/roundcube").join(f), config.join(f)).expect("symlink");
    }
    let d = dir.display();
    std::fs::write(
        config.join("config.inc.php"),
        format!(
            "<?php\n$config = [];\n\
             $config['db_dsnw'] = 'sqlite:///{d}/roundcube.db?mode=0600';\n\
             $config['imap_host'] = '127.0.0.1:{imap_port}';\n\
             $config['smtp_host'] = '';\n\
             $config['des_key'] = 'postern-webmail-test-key';\n\
             $config['plugins'] = [];\n\
             $config['log_driver'] = 'file';\n\
             $config['log_dir'] = '{d}/logs/';\n\
             $config['temp_dir'] = '{d}/temp/';\n\
             $config['enable_installer'] = false;\n\
             $config['skin'] = 'elastic';\n"
        ),
    )
    .expect("write config.inc.php");
    config
}

#[test]
fn roundcube_lists_threads_opens_moves_and_deletes() {
    if !postern_tests::require_tool("php", "php-cli") || !postern_tests::require_tool(ROUNDCUBE, "roundcube-core") {
        return;
    }
    if !php_has_sqlite()
        && !postern_tests::skip("PHP's pdo_sqlite missing (package php-sqlite3, via roundcube-sqlite3)")
    {
        return;
    }
    let started = Instant::now();
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", "")
    );
    let mut inst = Instance::new(&services, &[]);
    let transcripts = inst.root.path().join("var/transcripts");
    std::fs::create_dir_all(&transcripts).expect("mkdir transcripts");
    let set = inst.postern(&[
        "config",
        "set",
        &format!("imapd_transcript_users=[\"{USER}\"]"),
        "imapd_transcript_directory=var/transcripts",
    ]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    add_user(&inst, USER, PASSWORD);

    // 2,000 messages straight into the Maildir, as a delivery agent leaves them
    let mail = inst.root.path().join("var/mail");
    let inbox = mail.join(USER);
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(inbox.join(d)).expect("mkdir maildir");
    }
    for i in 1..=MESSAGES {
        std::fs::write(
            inbox.join(format!("cur/{}.M{i}P1.webmail:2,", 1_700_000_000 + i)),
            message(i),
        )
        .expect("write");
    }
    if postern_tests::is_root() {
        for dir in [&mail, &transcripts] {
            let st = Command::new("chown")
                .arg("-R")
                .arg("postern:")
                .arg(dir)
                .status()
                .expect("chown");
            assert!(st.success());
        }
    }
    inst.start();

    let rc = tempfile::tempdir().expect("tempdir");
    let config = roundcube_config(rc.path(), port);
    let http = free_port();
    let php_log = std::fs::File::create(rc.path().join("php.log")).expect("php log");
    let php = Helper(
        Command::new("php")
            .args(["-S", &format!("127.0.0.1:{http}"), "-t", PUBLIC_HTML])
            .env("ROUNDCUBE_CONFIG_DIR", &config)
            .stdout(php_log.try_clone().expect("dup"))
            .stderr(php_log)
            .spawn()
            .expect("php -S"),
    );
    assert!(
        wait_for(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            http
        ))
        .is_ok()),
        "PHP's web server did not listen"
    );

    let out = Command::new("python3")
        .arg(postern_tests::repo_root().join("tests/scripts/roundcube_client.py"))
        .args([&format!("http://127.0.0.1:{http}"), USER, PASSWORD])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let logs = || {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "client:\n{}\nroundcube errors:\n{}\nphp:\n{}\nmaillog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            read(rc.path().join("logs/errors.log")),
            read(rc.path().join("php.log")),
            inst.log()
        )
    };
    assert!(
        out.status.success(),
        "the Roundcube client failed:\n{stdout}\n{}",
        logs()
    );
    drop(php);
    let r = records(&stdout);
    let one = |kind: &str| -> Vec<String> {
        r.get(kind)
            .and_then(|v| v.first().cloned())
            .unwrap_or_else(|| panic!("no {kind} record:\n{stdout}"))
    };

    // the list by date, newest first: the count, and the first page in date order
    let mut by_date: Vec<usize> = (1..=MESSAGES).collect();
    by_date.sort_by_key(|&i| std::cmp::Reverse(minute(i)));
    assert_eq!(one("list"), ["2000", "40"], "count and pages");
    let listed: Vec<String> = r["list_row"].iter().map(|f| f[3].clone()).collect();
    let expected: Vec<String> = by_date[..PAGE].iter().map(|&i| subject(i)).collect();
    assert_eq!(listed, expected, "the first page by date, newest first");

    // threaded: 200 threads; the first page holds 50, each a chain of 10 (depth 0..9),
    // the thread of the newest messages first
    assert_eq!(one("threads"), ["200", "1"], "thread count, threading on");
    let rows = &r["thread_row"];
    assert_eq!(rows.len(), PAGE * THREAD, "rows of the first page of threads");
    let mut roots = Vec::new();
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row[1], (k % THREAD).to_string(), "depth of row {k}: {row:?}");
        assert_eq!(
            row[2],
            if k % THREAD == THREAD - 1 { "0" } else { "1" },
            "children of row {k}"
        );
        if k % THREAD == 0 {
            roots.push(row[3].clone());
        } else {
            assert!(row[3].starts_with("Re: "), "{row:?}");
        }
    }
    let mut threads: Vec<usize> = (0..MESSAGES / THREAD).collect();
    threads.sort_by_key(|&t| std::cmp::Reverse(minute(t * THREAD + 1)));
    let expected: Vec<String> = threads[..PAGE].iter().map(|&t| subject(t * THREAD + 1)).collect();
    assert_eq!(roots, expected, "thread roots, newest thread first");

    // the newest message shown, moved, the next deleted
    let (newest, next) = (by_date[0], by_date[1]);
    let show = one("show");
    assert_eq!(show[1], subject(newest), "subject shown");
    assert_eq!(show[2], format!("Body of message {newest}"), "body shown");
    assert_eq!(one("move")[1], "Message(s) moved successfully.");
    assert_eq!(one("delete")[1], "Message(s) moved to Trash successfully.");
    assert_eq!(r["trash_row"].len(), 1);
    assert_eq!(r["trash_row"][0][3], subject(next));
    assert_eq!(one("purge")[1], "Message(s) deleted successfully.");
    assert_eq!(one("trash_after"), ["0"]);
    assert_eq!(one("after"), ["1998"]);
    assert_eq!(r["after_row"][0][3], subject(by_date[2]), "the newest left");

    // on disk: the shown message in Archive, seen; the deleted one gone everywhere
    let in_inbox = messages_in(&inbox);
    assert_eq!(in_inbox.len(), MESSAGES - 2);
    assert!(!in_inbox.contains_key(&newest) && !in_inbox.contains_key(&next));
    let archive = messages_in(&inbox.join(".Archive"));
    assert_eq!(archive.keys().copied().collect::<Vec<_>>(), [newest], "Archive");
    let name = archive[&newest].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.rsplit_once(":2,").is_some_and(|(_, f)| f.contains('S')),
        "opened, so seen: {name}"
    );
    assert_eq!(
        std::fs::read_to_string(&archive[&newest]).unwrap(),
        message(newest),
        "moved intact"
    );
    assert!(messages_in(&inbox.join(".Trash")).is_empty(), "Trash emptied");

    // imapd's transcript: the commands Roundcube sent
    let mut text = String::new();
    for e in std::fs::read_dir(&transcripts).expect("transcripts").flatten() {
        text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    let mut commands: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("C: ")) {
        let words: Vec<&str> = line.split(' ').skip(1).take(2).collect();
        let name = match words.as_slice() {
            [uid, cmd] if uid.eq_ignore_ascii_case("UID") => format!("UID {}", cmd.to_ascii_uppercase()),
            [cmd, ..] if cmd.chars().all(|c| c.is_ascii_alphabetic()) => cmd.to_ascii_uppercase(),
            _ => continue,
        };
        *commands.entry(name).or_default() += 1;
    }
    println!("IMAP commands Roundcube sent (count):");
    for (c, n) in &commands {
        println!("  {c} {n}");
    }
    let mut lines: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("C: ")?.split_once(' '))
        .map(|(_, c)| c.chars().take(110).collect())
        .collect();
    lines.sort();
    lines.dedup();
    println!("as sent (tags left out, cut at 110 characters):");
    for l in &lines {
        println!("  {l}");
    }
    for c in [
        "AUTHENTICATE",
        "SELECT",
        "UID SORT",
        "UID THREAD",
        "UID FETCH",
        "UID MOVE",
        "UID STORE",
        "UID EXPUNGE",
        "LOGOUT",
    ] {
        assert!(commands.contains_key(c), "no {c} in the transcript: {commands:?}");
    }
    assert!(text.contains("C: A0001 AUTHENTICATE PLAIN ***"), "the login, masked");
    assert!(text.contains("UID SORT (DATE)") && text.contains("UID THREAD REFERENCES"));
    assert!(!text.contains(PASSWORD), "the password in the transcript");
    for line in text.lines().filter(|l| l.contains(" AUTHENTICATE ")) {
        assert!(line.ends_with(" AUTHENTICATE PLAIN ***"), "not masked: {line}");
    }
    println!(
        "transcript: {} bytes, {} sessions; test took {:.1} s",
        text.len(),
        text.matches("# imapd transcript").count(),
        started.elapsed().as_secs_f64()
    );
    inst.stop();
}

/// The transcript is for the named user only: alice's imaplib session is written (her
/// LOGIN's arguments masked, SELECT and its answer as sent), bob's is not.
#[test]
fn transcript_only_for_the_named_user_with_login_masked() {
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", "")
    );
    let mut inst = Instance::new(
        &services,
        &[
            "imapd_transcript_users=[\"alice\"]",
            "imapd_transcript_directory=var/transcripts",
        ],
    );
    let transcripts = inst.root.path().join("var/transcripts");
    std::fs::create_dir_all(&transcripts).expect("mkdir");
    if postern_tests::is_root() {
        let st = Command::new("chown")
            .arg("postern:")
            .arg(&transcripts)
            .status()
            .expect("chown");
        assert!(st.success());
    }
    add_user(&inst, "alice", "Alice-Secret-7");
    add_user(&inst, "bob", "Bob-Secret-8");
    inst.start();
    let script = "import imaplib, sys\n\
                  for user, pw in (('alice', 'Alice-Secret-7'), ('bob', 'Bob-Secret-8')):\n\
                  \x20   c = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))\n\
                  \x20   c.login(user, pw)\n\
                  \x20   c.select('INBOX')\n\
                  \x20   c.logout()\n";
    let (ok, out, err) = postern_tests::python_args(script, &[&port.to_string()]);
    assert!(ok, "{out}{err}");
    assert!(
        wait_for(Duration::from_secs(10), || inst.log_count("disconnect from") >= 2),
        "{}",
        inst.log()
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&transcripts)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "one transcript, alice's: {files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("alice.") && name.ends_with(".imap"), "{name}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&files[0]).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{name}");
    let text = std::fs::read_to_string(&files[0]).expect("read");
    assert!(
        text.starts_with("# imapd transcript: user=alice client=127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("S: * OK [CAPABILITY "),
        "the greeting, kept from before login: {text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("C: ") && l.ends_with(" LOGIN ***")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("C: ") && l.ends_with(" SELECT INBOX")),
        "{text}"
    );
    assert!(text.contains(" OK [READ-WRITE] SELECT completed\r\n"), "{text}");
    assert!(text.contains(" LOGOUT\r\n"), "{text}");
    assert!(!text.contains("Alice-Secret-7") && !text.contains("bob"), "{text}");
    assert_eq!(inst.log_count("transcript: user=alice file="), 1, "{}", inst.log());
    inst.stop();
}
