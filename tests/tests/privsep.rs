//! Privilege separation checked from outside, with master running as root (the test runs
//! only as root; CI is root): the whole pipeline plus pop3d, imapd and pickup is started
//! and made to work (a local delivery, a relay attempt, a bounce, an IMAP and a POP3 login,
//! a pickup wake-up), then every process below master — every thread of it — is read from
//! `/proc/PID/task/TID/status`:
//!
//! * master itself runs as root;
//! * every daemon runs as `mail_owner` (`postern`) in all four uids and gids, with no
//!   supplementary groups, empty capability sets (inheritable, permitted, effective,
//!   bounding, ambient) and `NoNewPrivs: 1`;
//! * the one documented exception, auth's privileged `auth opener` helper, is root but
//!   keeps only `CAP_DAC_READ_SEARCH` (permitted, effective and bounding; nothing
//!   inheritable or ambient) and no descriptor beyond its standard three.
//!
//! And `etc/users` is root-owned mode 0600, which a process with any daemon's credentials
//! (replayed with `setpriv`) cannot open: `Permission denied`, while it can read
//! `etc/main.toml` (so the refusal is the file's, not setpriv's).

use postern_tests::{Instance, add_user, alive, children_of, daemon_service, free_port, wait_for};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);
/// No capability at all, as /proc prints it.
const NO_CAPS: &str = "0000000000000000";
/// Only CAP_DAC_READ_SEARCH (capability number 2).
const DAC_READ_SEARCH: &str = "0000000000000004";
/// Every daemon that must have run (by executable name).
const EXPECTED: [&str; 11] = [
    "smtpd",
    "cleanup",
    "trivial-rewrite",
    "qmgr",
    "local",
    "smtp",
    "bounce",
    "auth",
    "pop3d",
    "imapd",
    "pickup",
];

/// The pipeline, pop3d, imapd and pickup, each kept alive long after its work.
fn services(smtp: u16, pop3: u16, imap: u16) -> String {
    let keep = "max_idle = \"600s\"";
    let mut s = String::new();
    s.push_str(&daemon_service(
        "smtp",
        "inet",
        &format!("127.0.0.1:{smtp}"),
        "smtpd",
        &format!("maxproc = 2\n{keep}"),
    ));
    s.push_str(&daemon_service("cleanup", "unix", "", "cleanup", keep));
    s.push_str(&daemon_service("rewrite", "unix", "", "trivial-rewrite", keep));
    s.push_str(&daemon_service(
        "qmgr",
        "unix",
        "public/qmgr",
        "qmgr",
        "maxproc = 1\nmin_procs = 1\nwakeup = \"60s\"\nmax_use = 1000000000\nmax_idle = \"1000d\"",
    ));
    s.push_str(&daemon_service("local", "unix", "", "local", keep));
    s.push_str(&daemon_service("smtp", "unix", "", "smtp", keep));
    s.push_str(&daemon_service("bounce", "unix", "", "bounce", keep));
    s.push_str(&daemon_service(
        "auth",
        "unix",
        "",
        "auth",
        "maxproc = 1\nmax_use = 100000\nmax_idle = \"1d\"",
    ));
    s.push_str(&daemon_service(
        "pop3",
        "inet",
        &format!("127.0.0.1:{pop3}"),
        "pop3d",
        &format!("maxproc = 1\n{keep}"),
    ));
    s.push_str(&daemon_service(
        "imap",
        "inet",
        &format!("127.0.0.1:{imap}"),
        "imapd",
        &format!("maxproc = 1\n{keep}"),
    ));
    s.push_str(&daemon_service(
        "pickup",
        "unix",
        "public/pickup",
        "pickup",
        &format!("maxproc = 1\nwakeup = \"1s\"\n{keep}"),
    ));
    s
}

/// One process below master, as /proc shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    exe: String,
    cmdline: Vec<String>,
}

impl Proc {
    fn read(pid: u32) -> Option<Proc> {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let exe = exe.file_name()?.to_string_lossy().into_owned();
        let exe = exe.trim_end_matches(" (deleted)").to_string();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()?
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(Proc { pid, exe, cmdline })
    }

    /// auth's privileged helper, `auth opener DIR`.
    fn is_opener(&self) -> bool {
        self.exe == "auth" && self.cmdline.get(1).map(String::as_str) == Some("opener")
    }
}

/// Every living process below `pid` (children, grandchildren...).
fn descendants(pid: u32) -> Vec<Proc> {
    let mut out = Vec::new();
    let mut todo = children_of(pid);
    while let Some(p) = todo.pop() {
        if out.len() > 1000 {
            break;
        }
        todo.extend(children_of(p));
        if let Some(proc) = Proc::read(p) {
            out.push(proc);
        }
    }
    out
}

/// The `Key:` fields of every thread of `pid`.
fn thread_status(pid: u32) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("status")) {
            out.push(
                s.lines()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.to_string(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
                    .collect(),
            );
        }
    }
    out
}

/// What is wrong with `p`'s credentials (empty: nothing). `uid`/`gid` are mail_owner's.
fn violations(p: &Proc, uid: u32, gid: u32) -> Vec<String> {
    let mut bad = Vec::new();
    let threads = thread_status(p.pid);
    if threads.is_empty() && alive(p.pid) {
        bad.push(format!("{} [{}]: /proc status unreadable", p.exe, p.pid));
    }
    for st in threads {
        let get = |k: &str| st.get(k).cloned().unwrap_or_default();
        let mut want: Vec<(&str, String)> = Vec::new();
        if p.is_opener() {
            want.push(("Uid", "0 0 0 0".into()));
            for k in ["CapPrm", "CapEff", "CapBnd"] {
                want.push((k, DAC_READ_SEARCH.into()));
            }
            for k in ["CapInh", "CapAmb"] {
                want.push((k, NO_CAPS.into()));
            }
        } else {
            want.push(("Uid", format!("{uid} {uid} {uid} {uid}")));
            want.push(("Gid", format!("{gid} {gid} {gid} {gid}")));
            want.push(("Groups", String::new()));
            for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                want.push((k, NO_CAPS.into()));
            }
            want.push(("NoNewPrivs", "1".into()));
        }
        for (k, v) in want {
            let got = get(k);
            if got != v {
                bad.push(format!(
                    "{} [{}] {:?}: {k} is {got:?}, expected {v:?}",
                    p.exe,
                    p.pid,
                    get("Pid")
                ));
            }
        }
    }
    if p.is_opener() {
        // Standard input is its channel to auth (a socket pair); beyond the standard
        // three it may hold only that channel again (its own duplicate).
        let fd_dir = format!("/proc/{}/fd", p.pid);
        let channel = std::fs::read_link(format!("{fd_dir}/0")).unwrap_or_default();
        let fds: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&fd_dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        Some((
                            e.file_name().to_str()?.parse().ok()?,
                            std::fs::read_link(e.path()).ok()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let extra: Vec<_> = fds.iter().filter(|(n, t)| *n > 2 && *t != channel).collect();
        if !channel.to_string_lossy().starts_with("socket:") || !extra.is_empty() {
            bad.push(format!(
                "auth opener [{}] holds more than its channel ({channel:?}): {fds:?}",
                p.pid
            ));
        }
    }
    bad
}

/// Runs `cat FILE` with the credentials of `/proc/PID` (uid, gid, groups) via setpriv.
fn cat_as(pid: u32, file: &std::path::Path) -> std::process::Output {
    let st = thread_status(pid).into_iter().next().unwrap_or_default();
    let first = |k: &str| {
        st.get(k)
            .and_then(|v| v.split_whitespace().nth(1).map(String::from))
            .unwrap_or_default()
    };
    let groups = st.get("Groups").cloned().unwrap_or_default();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", first("Uid")))
        .arg(format!("--regid={}", first("Gid")));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        cmd.arg(format!("--groups={}", groups.replace(' ', ",")));
    }
    cmd.arg("--inh-caps=-all")
        .arg("cat")
        .arg(file)
        .output()
        .expect("setpriv")
}

const ACTIVITY: &str = r#"
import imaplib, poplib, smtplib, sys
smtp, pop3, imap = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
msg = b"From: bob@example.test\r\nSubject: privsep\r\nMessage-ID: <privsep1@example.test>\r\n\r\nhello\r\n"
with smtplib.SMTP('127.0.0.1', smtp, timeout=60) as s:
    assert s.sendmail('bob@example.test', ['alice@example.test'], msg) == {}
    # Relayed to the (unanswering) relayhost: starts the smtp client.
    assert s.sendmail('bob@example.test', ['someone@remote.test'], msg) == {}
    # Not a user and not an alias: local bounces it, which starts bounce.
    assert s.sendmail('bob@example.test', ['nosuchuser@example.test'], msg) == {}
M = imaplib.IMAP4('127.0.0.1', imap, timeout=60)
M.login('alice', 'Alice-Privsep-1')
assert M.select('INBOX')[0] == 'OK'
M.logout()
P = poplib.POP3('127.0.0.1', pop3, timeout=60)
P.user('bob')
P.pass_('Bob-Privsep-1')
print('stat', P.stat())
P.quit()
print('activity ok')
"#;

#[test]
fn every_daemon_runs_unprivileged_and_none_reads_users() {
    if !postern_tests::require_root("privilege separation starts from root") {
        return;
    }
    let (uid, gid) = postern_lib::privs::lookup("postern").expect("mail_owner postern exists");
    let (uid, gid) = (uid.as_raw(), gid.as_raw());
    let (smtp, pop3, imap) = (free_port(), free_port(), free_port());
    let relayhost = format!("relayhost=[127.0.0.1]:{}", free_port());
    let mut inst = Instance::new(
        &services(smtp, pop3, imap),
        &[
            &relayhost,
            "smtpd_reject_unlisted_recipient=false",
            "queue_run_delay=1s",
            "minimal_backoff_time=1s",
        ],
    );
    add_user(&inst, "alice", "Alice-Privsep-1");
    add_user(&inst, "bob", "Bob-Privsep-1");
    let mail = inst.root.path().join("var/mail");
    std::fs::create_dir_all(mail.join("bob/new")).expect("mkdir");
    for d in ["tmp", "cur"] {
        std::fs::create_dir_all(mail.join("bob").join(d)).expect("mkdir");
    }
    let st = Command::new("chown")
        .arg("-R")
        .arg("postern:")
        .arg(&mail)
        .status()
        .expect("chown");
    assert!(st.success());

    // etc/users as `postern user add` left it: root's, 0600.
    let users = inst.etc().join("users");
    let meta = std::fs::metadata(&users).expect("etc/users");
    assert_eq!(meta.mode() & 0o7777, 0o600, "etc/users mode");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "etc/users owner");

    inst.start();
    let master = inst.master_pid();
    let out = Command::new("python3")
        .arg("-c")
        .arg(ACTIVITY)
        .args([smtp.to_string(), pop3.to_string(), imap.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("activity ok"),
        "{}\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        inst.log()
    );
    assert!(
        wait_for(LONG, || !postern_tests::maildir_messages(&mail.join("alice"))
            .is_empty()),
        "alice's message delivered; log:\n{}",
        inst.log()
    );

    // Every daemon has run and is still there (max_idle is long), with auth's helper.
    let mut seen = BTreeSet::new();
    let all_there = wait_for(LONG, || {
        let procs = descendants(master);
        seen = procs.iter().map(|p| p.exe.clone()).collect();
        EXPECTED.iter().all(|e| seen.contains(*e)) && procs.iter().any(Proc::is_opener)
    });
    assert!(all_there, "daemons seen below master: {seen:?}; log:\n{}", inst.log());

    // Master is root; every thread of every process below it is as expected. A process
    // spawned a moment ago may still be in its privileged start-up: give it a little while.
    assert_eq!(thread_status(master)[0].get("Uid").map(String::as_str), Some("0 0 0 0"));
    let procs = descendants(master);
    let mut problems = Vec::new();
    for p in &procs {
        let mut last = Vec::new();
        let ok = wait_for(Duration::from_secs(10), || {
            last = violations(p, uid, gid);
            last.is_empty() || !alive(p.pid)
        });
        if !ok {
            problems.extend(last);
        }
    }
    assert!(problems.is_empty(), "privilege problems:\n{}", problems.join("\n"));
    assert_eq!(
        procs.iter().filter(|p| p.is_opener()).count(),
        1,
        "one opener: {procs:?}"
    );

    // No daemon can open etc/users: replay each distinct daemon credential with setpriv.
    let mut tried = BTreeSet::new();
    for p in procs.iter().filter(|p| !p.is_opener()) {
        let st = thread_status(p.pid).into_iter().next().unwrap_or_default();
        let key = (
            st.get("Uid").cloned(),
            st.get("Gid").cloned(),
            st.get("Groups").cloned(),
        );
        if !tried.insert(key) {
            continue;
        }
        let out = cat_as(p.pid, &users);
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{} [{}] credentials read etc/users: {:?}",
            p.exe,
            p.pid,
            out
        );
        assert!(out.stdout.is_empty());
        let ok = cat_as(p.pid, &inst.etc().join("main.toml"));
        assert!(
            ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("myhostname"),
            "control: the same credentials read etc/main.toml: {ok:?}"
        );
    }
    assert!(!tried.is_empty());
    inst.stop();
}
