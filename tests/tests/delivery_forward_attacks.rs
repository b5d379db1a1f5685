//! A local user attacking local delivery through their own `~/.forward` (issue 10, items
//! 3–5), against the install layout: local as root (`unprivileged = false`),
//! `local_system_users = true`, accounts made with `useradd`, mail through the whole
//! pipeline (smtplib → smtpd → cleanup → qmgr → local):
//!
//! * descriptors: master keeps no descriptor of the process that started it (a pipe of
//!   the starter sees end-of-file once the starter lets go), a `.forward` command lists its own descriptors — exactly 0, 1 and 2
//!   (plus the listing's own directory handle) — and a process it leaves in the background
//!   finds no socket at all (not local's listener, not master's status channel) to take
//!   local's next job with; mail to another account right after is delivered at once;
//! * `:include:` in a `.forward` is opened with the account's rights: a file only
//!   mail_owner may read is not read (the recipient is deferred with the reason, and no
//!   word of the file reaches the log or a notice), while a file in the account's private
//!   directory, which mail_owner cannot read, is;
//! * a `.forward` that is a FIFO, a symlink or a hard link to another account's file is
//!   ignored with a warning saying why and the mail goes to the mailbox (as Postfix does);
//!   a `.forward` flipped between a FIFO and a file as fast as a loop can while mail
//!   arrives blocks no local process (only two run) — every message is delivered, and
//!   another account's mail keeps flowing; once the FIFO is a real file again, it is
//!   followed.
//!
//! Runs only as root (CI is root); elsewhere it is counted as skipped (`require_root`).

use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postern_tests::{
    Instance, SystemAccount, add_user, daemon_service, free_port, maildir_messages, pipeline_services, require_root,
    smtplib_send, wait_for,
};

const LONG: Duration = Duration::from_secs(60);
/// Deferred mail is tried again within seconds.
const FAST_RETRY: &[&str] = &[
    "minimal_backoff_time=1s",
    "maximal_backoff_time=2s",
    "queue_run_delay=1s",
];
/// "Promptly": mail to an account with nothing odd about it, while the attack goes on.
const PROMPT: Duration = Duration::from_secs(10);

/// The pipeline with local as root and at most `local_procs` local processes.
fn instance(smtp: u16, local_procs: u32, more: &[&str]) -> Instance {
    let stock = daemon_service("local", "unix", "", "local", "maxproc = 8");
    let services = pipeline_services(smtp);
    assert!(
        services.contains(&stock),
        "local entry not found in the pipeline services"
    );
    let services = services.replace(
        &stock,
        &daemon_service(
            "local",
            "unix",
            "",
            "local",
            &format!("maxproc = {local_procs}\nunprivileged = false"),
        ),
    );
    let mut settings = vec!["local_system_users=true", "home_mailbox=Maildir/"];
    settings.extend_from_slice(more);
    Instance::new(&services, &settings)
}

/// A directory below the instance anyone may write (commands run as the accounts).
fn open_dir(inst: &Instance, name: &str) -> PathBuf {
    let p = inst.root.path().join(name);
    std::fs::create_dir_all(&p).expect("mkdir");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    p
}

/// Homes of the test accounts, reachable by everyone.
fn homes(inst: &Instance) -> PathBuf {
    let p = inst.root.path().join("home");
    std::fs::create_dir_all(&p).expect("mkdir");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

fn message(subject: &str) -> String {
    format!(
        "From: sender@example.test\r\nTo: someone\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nbody of {subject}\r\n"
    )
}

fn send(smtp: u16, to: &str, subject: &str) {
    let to = format!("{to}@example.test");
    let refused = smtplib_send(smtp, "sender@example.test", &[&to], &message(subject));
    assert_eq!(refused.trim(), "{}", "{to} refused: {refused}");
}

/// How many messages in `~/Maildir` of `acct` carry `Subject: subject`.
fn count(acct: &SystemAccount, subject: &str) -> usize {
    let want = format!("Subject: {subject}\n");
    maildir_messages(&acct.home.join("Maildir"))
        .iter()
        .filter(|m| String::from_utf8_lossy(m).contains(&want))
        .count()
}

/// Kills a process the test made an account leave behind.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A process a `.forward` command leaves behind: it notes every socket it inherited, lets
/// go of the command's standard descriptors (so local does not wait for it), and tries to
/// accept connections on those sockets for a while, saving whatever it gets.
const THIEF: &str = r#"import os, select, socket, stat, sys, time
report = sys.argv[1]
if os.fork() > 0:
    os._exit(0)
os.setsid()
socks = []
for fd in range(3, 1024):
    try:
        st = os.fstat(fd)
    except OSError:
        continue
    if stat.S_ISSOCK(st.st_mode):
        socks.append(fd)
null = os.open('/dev/null', os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
with open(report + '.tmp', 'w') as f:
    f.write('pid %d\nsockets %s\n' % (os.getpid(), ' '.join(map(str, socks))))
os.rename(report + '.tmp', report)
deadline = time.time() + 30
while time.time() < deadline:
    if not socks:
        time.sleep(0.2)
        continue
    ready, _, _ = select.select(socks, [], [], 0.2)
    for fd in ready:
        try:
            conn, _ = socket.socket(fileno=os.dup(fd)).accept()
            conn.settimeout(2)
            data = conn.recv(65536)
        except OSError:
            continue
        with open(report + '.stolen', 'ab') as f:
            f.write(data or b'(a connection)')
"#;

/// The descriptor numbers in `ls -l /proc/self/fd` output, without ls's own handle on
/// that directory (`N -> /proc/PID/fd`).
fn listed_fds(listing: &str) -> Vec<u32> {
    let mut fds: Vec<u32> = listing
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let is_listing = target.starts_with("/proc/") && target.ends_with("/fd");
            (!is_listing).then(|| left.split_whitespace().last()?.parse().ok())?
        })
        .collect();
    fds.sort_unstable();
    fds
}

#[test]
fn forward_command_holds_only_stdio_and_leaves_nothing_to_steal_jobs_with() {
    if !require_root("delivery as system accounts") {
        return;
    }
    let smtp = free_port();
    // A long back-off: a job taken by anyone but local would show as mail not delivered.
    let mut inst = instance(
        smtp,
        2,
        &[
            "minimal_backoff_time=300s",
            "maximal_backoff_time=600s",
            "queue_run_delay=300s",
        ],
    );
    let work = open_dir(&inst, "work");
    let homes = homes(&inst);
    let attacker = SystemAccount::new("fd", &homes);
    let other = SystemAccount::new("fo", &homes);
    let listing = work.join("fds.txt");
    let thief = work.join("thief.py");
    let report = work.join("thief.report");
    std::fs::write(&thief, THIEF).expect("write thief");
    std::fs::set_permissions(&thief, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    attacker.write(
        ".forward",
        &format!(
            "\"|ls -l /proc/self/fd > {}\"\n\"|python3 {} {}\"\n",
            listing.display(),
            thief.display(),
            report.display()
        ),
    );
    add_user(&inst, "sender", "pw-sender");
    // A pipe of the process that starts the mail system, inheritable as a shell's pipe
    // is: master must not keep it, nor pass it on to its daemons and their commands.
    let (starter_r, starter_w) = nix::unistd::pipe().expect("pipe");
    inst.start();
    drop(starter_w);
    let mut poll = [nix::poll::PollFd::new(starter_r.as_fd(), nix::poll::PollFlags::POLLIN)];
    // (Generous: under a threaded runner another test's short-lived child may hold it a moment.)
    let ready = nix::poll::poll(&mut poll, 10_000u16).expect("poll");
    let mut byte = [0u8; 1];
    assert!(
        ready == 1 && nix::unistd::read(&starter_r, &mut byte).ok() == Some(0),
        "the starter's pipe is still held open by the mail system (no end-of-file)"
    );
    // master closes the inherited descriptors first and logs it after: the end-of-file can
    // come before the line is written.
    assert!(
        wait_for(PROMPT, || inst
            .log()
            .contains("descriptors inherited from the process that started master")),
        "{}",
        inst.log()
    );

    send(smtp, &attacker.name, "first");
    assert!(
        wait_for(LONG, || report.exists() && listing.exists()),
        "the .forward commands did not run\n{}",
        inst.log()
    );
    let report_text = std::fs::read_to_string(&report).expect("report");
    let _thief = KillOnDrop(
        report_text
            .lines()
            .find_map(|l| l.strip_prefix("pid ")?.trim().parse().ok()),
    );
    let fds = std::fs::read_to_string(&listing).expect("listing");
    assert_eq!(
        listed_fds(&fds),
        vec![0, 1, 2],
        "a .forward command holds only stdin, stdout and stderr:\n{fds}"
    );
    assert!(
        report_text.lines().any(|l| l.trim_end() == "sockets"),
        "the left-over process inherited sockets: {report_text}"
    );

    // The left-over process is still there; the next job for local goes to local.
    let start = Instant::now();
    send(smtp, &other.name, "second");
    assert!(
        wait_for(PROMPT, || count(&other, "second") == 1),
        "mail to another account was not delivered within {PROMPT:?} (took by someone?)\n{}",
        inst.log()
    );
    println!("delivered to the other account {:?} after sending", start.elapsed());
    let stolen = PathBuf::from(format!("{}.stolen", report.display()));
    assert!(
        !stolen.exists(),
        "the left-over process accepted a connection: {:?}",
        std::fs::read(&stolen)
    );
    // The delivery's log line comes after the file is in place (local renames, then
    // reports to qmgr, which logs): wait for it rather than race it.
    let logged = format!("to=<{}@example.test>", other.name);
    assert!(
        wait_for(PROMPT, || inst.log().contains(&logged)),
        "no log line for the delivery to {}:\n{}",
        other.name,
        inst.log()
    );
}

#[test]
fn forward_include_is_read_with_the_accounts_rights() {
    if !require_root("delivery as system accounts") {
        return;
    }
    let smtp = free_port();
    let mut inst = instance(smtp, 4, FAST_RETRY);
    let homes = homes(&inst);
    let reader = SystemAccount::new("ir", &homes);
    let other = SystemAccount::new("io", &homes);
    // Readable by mail_owner (the daemons' account) and nobody else.
    let secrets = inst.root.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("mkdir");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let secret = secrets.join("subscriptions");
    std::fs::write(&secret, "topsecretword\n").expect("write secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let postern = nix::unistd::User::from_name("postern")
        .expect("getpwnam")
        .expect("mail_owner postern");
    nix::unistd::chown(&secret, Some(postern.uid), Some(postern.gid)).expect("chown");
    // Readable by the account alone (a private directory mail_owner cannot enter).
    let private = reader.home.join("private");
    std::fs::create_dir_all(&private).expect("mkdir");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    nix::unistd::chown(
        &private,
        Some(nix::unistd::Uid::from_raw(reader.uid)),
        Some(nix::unistd::Gid::from_raw(reader.gid)),
    )
    .expect("chown");
    reader.write("private/list", &format!("{}\n", other.name));
    std::fs::set_permissions(private.join("list"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    reader.write(
        ".forward",
        &format!(
            ":include:{}\n:include:{}\n",
            secret.display(),
            private.join("list").display()
        ),
    );
    add_user(&inst, "sender", "pw-sender");
    inst.start();

    send(smtp, &reader.name, "included");
    let denied = format!("to=<{}@example.test>, relay=local", reader.name);
    assert!(
        wait_for(LONG, || inst.log().lines().any(|l| l.contains(&denied)
            && l.contains("status=deferred (cannot read include file: open")
            && l.contains("Permission denied"))),
        "the include file only mail_owner may read was not refused\n{}",
        inst.log()
    );
    assert!(
        wait_for(LONG, || count(&other, "included") == 1),
        "the include file in the account's private directory was not read with its rights\n{}",
        inst.log()
    );
    // Retries come and go (back-off 1–2 s); none of them reads the file.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(&other, "included"), 1, "delivered more than once");
    assert!(
        !inst.log().contains("topsecretword"),
        "the secret reached the log\n{}",
        inst.log()
    );
    let notices = maildir_messages(&inst.root.path().join("var/mail/sender"));
    assert!(
        notices
            .iter()
            .all(|m| !String::from_utf8_lossy(m).contains("topsecretword")),
        "the secret reached a notice"
    );
}

/// Makes `path` a FIFO owned by `uid`.
fn fifo(path: &Path, uid: u32) {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(uid)), None).expect("chown");
}

#[test]
fn forward_fifo_symlink_and_hard_link_block_nothing() {
    if !require_root("delivery as system accounts") {
        return;
    }
    let smtp = free_port();
    // Two local processes: two stuck on a FIFO would stop all local delivery.
    let mut inst = instance(smtp, 2, FAST_RETRY);
    let homes = homes(&inst);
    let flip = SystemAccount::new("ff", &homes);
    let sym = SystemAccount::new("fs", &homes);
    let hard = SystemAccount::new("fh", &homes);
    let other = SystemAccount::new("fx", &homes);
    other.write("notes", &format!("{}\n", sym.name));
    sym.write("real-forward", &format!("{}\n", other.name));
    std::os::unix::fs::symlink(sym.home.join("real-forward"), sym.home.join(".forward")).expect("symlink");
    std::fs::hard_link(other.home.join("notes"), hard.home.join(".forward")).expect("hard link");
    add_user(&inst, "sender", "pw-sender");
    inst.start();

    // A .forward flipped between a file (naming `other`) and a FIFO while mail arrives:
    // the two swap names atomically (renameat2 RENAME_EXCHANGE) in a tight loop, so a
    // check of the name and an open of it a moment later see different files.
    let fwd = flip.home.join(".forward");
    let spare = flip.home.join(".forward-spare");
    std::fs::write(&fwd, format!("{}\n", other.name)).expect("write");
    fifo(&spare, flip.uid);
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let stop = Arc::clone(&stop);
        let (fwd, spare) = (fwd.clone(), spare.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &fwd,
                    nix::fcntl::AT_FDCWD,
                    &spare,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .expect("renameat2");
                flips += 1;
                if flips.is_multiple_of(256) {
                    std::thread::yield_now();
                }
            }
            flips
        })
    };
    const FLIPPED: usize = 10;
    for i in 0..FLIPPED {
        send(smtp, &flip.name, &format!("flip{i}"));
    }
    let all_delivered =
        || (0..FLIPPED).all(|i| count(&flip, &format!("flip{i}")) + count(&other, &format!("flip{i}")) == 1);
    let delivered = wait_for(LONG, all_delivered);
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().expect("flipper");
    println!("{flips} flips of .forward while {FLIPPED} messages were delivered");
    assert!(
        delivered,
        "mail to the flipped .forward was not all delivered\n{}",
        inst.log()
    );
    send(smtp, &other.name, "flowing");
    assert!(
        wait_for(PROMPT, || count(&other, "flowing") == 1),
        "mail to another account stopped flowing\n{}",
        inst.log()
    );

    // A FIFO that stays: ignored with the reason, mail to the mailbox, nothing waits.
    std::fs::remove_file(&spare).expect("rm spare");
    fifo(&fwd, flip.uid);
    send(smtp, &flip.name, "fifo");
    send(smtp, &other.name, "meanwhile");
    assert!(
        wait_for(LONG, || count(&flip, "fifo") == 1),
        "mail to the account with a FIFO .forward not in its mailbox\n{}",
        inst.log()
    );
    assert!(
        wait_for(PROMPT, || count(&other, "meanwhile") == 1),
        "mail to another account stopped flowing\n{}",
        inst.log()
    );
    let warned = format!(
        "ignoring forward file of {}: {}: not a regular file (fifo); delivering to the mailbox",
        flip.name,
        fwd.display()
    );
    assert!(inst.log().contains(&warned), "no warning `{warned}`\n{}", inst.log());

    // A real file again: followed.
    std::fs::remove_file(&fwd).expect("rm fifo");
    flip.write(".forward", &format!("{}\n", other.name));
    send(smtp, &flip.name, "fixed");
    assert!(
        wait_for(LONG, || count(&other, "fixed") == 1),
        "the .forward, a file again, was not followed\n{}",
        inst.log()
    );
    assert_eq!(count(&flip, "fixed"), 0);

    // A symlink and a hard link to another account's file: ignored, mail to the mailbox.
    send(smtp, &sym.name, "symlinked");
    send(smtp, &hard.name, "hardlinked");
    assert!(
        wait_for(LONG, || count(&sym, "symlinked") == 1
            && count(&hard, "hardlinked") == 1),
        "mail to the accounts with a symlinked or hard-linked .forward not in their mailboxes\n{}",
        inst.log()
    );
    assert_eq!(count(&other, "symlinked"), 0, "the symlinked .forward was followed");
    let log = inst.log();
    assert!(
        log.contains(&format!(
            "ignoring forward file of {}: {}: is a symbolic link",
            sym.name,
            sym.home.join(".forward").display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "ignoring forward file of {}: {}: file has 2 hard links",
            hard.name,
            hard.home.join(".forward").display()
        )),
        "{log}"
    );
    let md = std::fs::metadata(sym.home.join("Maildir")).expect("stat");
    assert_eq!(md.uid(), sym.uid, "the mailbox is the account's");
}
