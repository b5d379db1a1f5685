//! local's forwarding targets and system accounts, through the whole pipeline (smtplib →
//! smtpd → cleanup → qmgr → local, and the SMTP client to a sink for remote targets),
//! with local running as root (`unprivileged = false`) as the production install has it:
//!
//! * an alias to `|command` runs it with `default_privs` (the alias file is root's): the
//!   command's output file holds the exact bytes it was given (`From ` line,
//!   `Return-Path:`, `Delivered-To:`, the message), its uid is nobody's, and its
//!   environment has Postfix's variables;
//! * a command exiting 67 bounces with its output in the reason (the notice in the sender's
//!   Maildir), one exiting 75 is deferred, one in an `:include:` file is refused (`5.7.1`,
//!   not in `allow_mail_to_commands`);
//! * `:include:` expands to a local user and a remote address;
//! * an alias to a remote address is relayed to the sink with the original envelope
//!   sender and `Delivered-To:` naming the alias;
//! * system accounts made by the test (`useradd`, removed again even on failure): one
//!   gets mail in `~/Maildir/` owned by it, one has a `.forward` to that account and to a
//!   `|command` run with its own uid, and (second instance) one gets an mbox in a
//!   temporary root-owned `mail_spool_directory` (created for it, owned by it), another
//!   one in the same spool made group-writable (its uid, the spool's group);
//! * without root: passwd accounts are unknown at RCPT unless `local_system_users` is
//!   on, and an unprivileged local defers their mail with the reason.
//!
//! Runs only as root (CI is root); elsewhere it prints why it skips.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_tests::{
    Instance, SystemAccount as Account, add_user, daemon_service, free_port, maildir_messages, pipeline_services,
    python, sink, sink_index, smtplib_send, wait_for,
};

const LONG: Duration = Duration::from_secs(90);

fn services(smtp: u16) -> String {
    pipeline_services(smtp).replace(
        &daemon_service("local", "unix", "", "local", "maxproc = 8"),
        &daemon_service("local", "unix", "", "local", "maxproc = 8\nunprivileged = false"),
    )
}

fn instance(smtp: u16, relay: u16, more: &[&str]) -> Instance {
    let relayhost = format!("relayhost=[127.0.0.1]:{relay}");
    let mut settings = vec![
        relayhost.as_str(),
        "local_system_users=true",
        "minimal_backoff_time=1s",
        "maximal_backoff_time=2s",
        "queue_run_delay=1s",
    ];
    settings.extend_from_slice(more);
    let s = services(smtp);
    assert!(
        s.contains("unprivileged = false"),
        "local entry not found in the pipeline services"
    );
    Instance::new(&s, &settings)
}

/// A directory anyone may write (commands run as nobody or a test account).
fn open_dir(p: &Path) -> PathBuf {
    std::fs::create_dir_all(p).expect("mkdir");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    p.to_path_buf()
}

/// A shell script that saves its standard input, then `id -u` and its environment, to
/// `OUT/NAME.in`, `.uid`, `.env`.
fn recorder(dir: &Path, name: &str, out: &Path) -> PathBuf {
    let p = dir.join(format!("{name}.sh"));
    let o = out.join(name);
    let o = o.display();
    std::fs::write(
        &p,
        format!("#!/bin/sh\ncat > {o}.in.tmp\nid -u > {o}.uid\nenv > {o}.env\nmv {o}.in.tmp {o}.in\n"),
    )
    .expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

fn message(subject: &str) -> String {
    format!(
        "From: sender@example.test\r\nTo: list\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nbody of {subject}\r\nFrom the start of a line\r\n"
    )
}

fn env_of(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[test]
fn alias_commands_includes_and_remote_forwarding() {
    if !postern_tests::require_root("delivery as other accounts") {
        return;
    }
    let (smtp, relay) = (free_port(), free_port());
    let mut inst = instance(smtp, relay, &[]);
    let work = inst.root.path().join("work");
    let out = open_dir(&work.join("out"));
    let msgs = work.join("sink");
    std::fs::create_dir_all(&msgs).expect("mkdir");
    let _sink = sink(&msgs, relay, 250);
    let pipe = recorder(&work, "pipe", &out);
    let inc = work.join("list.inc");
    std::fs::write(&inc, "# members\nalice\nremote1@other.test, # a comment\n").expect("write include");
    // Commands in :include: files are not allowed by default (allow_mail_to_commands).
    let cmds = work.join("cmds.inc");
    std::fs::write(&cmds, format!("|{}\n", pipe.display())).expect("write include");
    std::fs::write(
        inst.etc().join("aliases"),
        format!(
            "pipe: \"|{}\"\nfail: \"|echo no such list here; exit 67\"\nlater: |exit 75\n\
             list: :include:{}\naway: bob@elsewhere.test\nincluded-cmd: :include:{}\n",
            pipe.display(),
            inc.display(),
            cmds.display()
        ),
    )
    .expect("write aliases");
    add_user(&inst, "sender", "pw-sender");
    add_user(&inst, "alice", "pw-alice");
    inst.start();

    for (to, subject) in [
        ("pipe@example.test", "piped"),
        ("fail@example.test", "failing"),
        ("later@example.test", "later"),
        ("list@example.test", "included"),
        ("away@example.test", "away"),
        ("included-cmd@example.test", "restricted"),
    ] {
        let refused = smtplib_send(smtp, "sender@example.test", &[to], &message(subject));
        assert_eq!(refused.trim(), "{}", "{to} refused: {refused}");
    }

    // The command: its input, uid and environment.
    let got = out.join("pipe.in");
    assert!(
        wait_for(LONG, || got.exists()),
        "the command did not run\n{}",
        inst.log()
    );
    let input = std::fs::read_to_string(&got).expect("read");
    assert!(input.starts_with("From sender@example.test  "), "{input}");
    let rest = input.split_once('\n').map(|x| x.1).unwrap_or_default();
    assert!(
        rest.starts_with("Return-Path: <sender@example.test>\nDelivered-To: pipe@example.test\n"),
        "{rest}"
    );
    assert!(
        rest.ends_with("\nbody of piped\nFrom the start of a line\n"),
        "{rest:?}"
    );
    assert_eq!(rest.matches("Subject: piped\n").count(), 1);
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("getpwnam")
        .expect("nobody");
    let uid = std::fs::read_to_string(out.join("pipe.uid")).expect("uid");
    assert_eq!(
        uid.trim(),
        nobody.uid.as_raw().to_string(),
        "alias commands run as default_privs"
    );
    let env = std::fs::read_to_string(out.join("pipe.env")).expect("env");
    assert_eq!(env_of(&env, "SENDER").as_deref(), Some("sender@example.test"));
    assert_eq!(env_of(&env, "RECIPIENT").as_deref(), Some("pipe@example.test"));
    assert_eq!(env_of(&env, "LOCAL").as_deref(), Some("pipe"));
    assert_eq!(env_of(&env, "DOMAIN").as_deref(), Some("example.test"));
    assert_eq!(env_of(&env, "USER").as_deref(), Some("nobody"));
    assert!(env_of(&env, "PATH").is_some_and(|p| p == "/usr/bin:/bin"), "{env}");
    assert!(
        env_of(&env, "POSTERN_CONFIG").is_none(),
        "local's own environment leaked: {env}"
    );

    // :include: → alice (local) and remote1 (relayed); the remote alias → the sink.
    let alice = inst.root.path().join("var/mail/alice");
    assert!(
        wait_for(LONG, || maildir_messages(&alice).len() == 1),
        "include did not reach alice\n{}",
        inst.log()
    );
    let a = String::from_utf8(maildir_messages(&alice).remove(0)).expect("utf8");
    assert!(a.contains("Subject: included"), "{a}");
    let want = [
        ("<included@example.test>".to_string(), "remote1@other.test".to_string()),
        ("<away@example.test>".to_string(), "bob@elsewhere.test".to_string()),
    ];
    assert!(
        wait_for(LONG, || {
            let idx = sink_index(&msgs);
            want.iter().all(|k| idx.get(k) == Some(&1))
        }),
        "forwarded copies not relayed: {:?}\n{}",
        sink_index(&msgs),
        inst.log()
    );
    let relayed: Vec<String> = postern_tests::files_below(&msgs)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).expect("read")).into_owned())
        .collect();
    let away = relayed.iter().find(|t| t.contains("Subject: away")).expect("away copy");
    assert!(away.contains("X-Sink-From: <sender@example.test>"), "{away}");
    assert!(away.contains("Delivered-To: away@example.test\r\n"), "{away}");
    assert!(away.contains("body of away"), "{away}");

    // The failing command bounces, with its output in the notice; exit 75 waits.
    let sender_md = inst.root.path().join("var/mail/sender");
    assert!(
        wait_for(LONG, || maildir_messages(&sender_md)
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("no such list here"))),
        "no bounce for the failing command\n{}",
        inst.log()
    );
    assert!(
        wait_for(LONG, || maildir_messages(&sender_md).len() == 2),
        "no bounce for the command in the include file\n{}",
        inst.log()
    );
    let bounces: Vec<String> = maildir_messages(&sender_md)
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let failed = bounces
        .iter()
        .find(|b| b.contains("no such list here"))
        .expect("bounce");
    assert!(failed.contains("fail@example.test"), "{failed}");
    assert!(failed.contains("5.1.1"), "{failed}");
    assert!(failed.contains("multipart/report"), "{failed}");
    let refused = bounces
        .iter()
        .find(|b| !b.contains("no such list here"))
        .expect("bounce");
    assert!(refused.contains("included-cmd@example.test"), "{refused}");
    assert!(refused.contains("5.7.1"), "{refused}");
    assert!(refused.contains("allow_mail_to_commands"), "{refused}");
    let last = std::fs::read_to_string(&got).expect("read");
    assert!(
        last.contains("Subject: piped\n") && !last.contains("Subject: restricted"),
        "the restricted command ran: {last}"
    );
    assert!(
        wait_for(LONG, || inst.log().contains("to=<later@example.test>")
            && inst.log().contains("status=deferred (command died with status 75")),
        "exit 75 not deferred\n{}",
        inst.log()
    );
}

#[test]
fn system_accounts_maildir_forward_and_command() {
    if !postern_tests::require_root("delivery to system accounts") {
        return;
    }
    let (smtp, relay) = (free_port(), free_port());
    let mut inst = instance(smtp, relay, &["home_mailbox=Maildir/"]);
    let homes = inst.root.path().join("home");
    std::fs::create_dir_all(&homes).expect("mkdir homes");
    let out = open_dir(&inst.root.path().join("out"));
    let box_owner = Account::new("m", &homes);
    let fwd = Account::new("f", &homes);
    let script = recorder(&homes, "fwd", &out);
    fwd.write(".forward", &format!("{}, \"|{}\"\n", box_owner.name, script.display()));
    add_user(&inst, "sender", "pw-sender");
    inst.start();

    for (to, subject) in [(&box_owner.name, "direct"), (&fwd.name, "forwarded")] {
        let to = format!("{to}@example.test");
        let refused = smtplib_send(smtp, "sender@example.test", &[&to], &message(subject));
        assert_eq!(refused.trim(), "{}", "{to} refused: {refused}");
    }
    let refused = python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {smtp}, timeout=30)\n\
         s.ehlo()\ns.mail('sender@example.test')\n\
         print(s.rcpt('nosuchaccount-xyz@example.test')[0], s.rcpt('{}@example.test')[0])\ns.quit()\n",
        box_owner.name
    ));
    assert_eq!(refused.trim(), "550 250", "only the unknown name is refused at RCPT");

    let md = box_owner.home.join("Maildir");
    assert!(
        wait_for(LONG, || maildir_messages(&md).len() == 2),
        "~/Maildir did not get both messages\n{}",
        inst.log()
    );
    let texts: Vec<String> = maildir_messages(&md)
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let direct = texts.iter().find(|t| t.contains("Subject: direct")).expect("direct");
    assert!(
        direct.starts_with(&format!(
            "Return-Path: <sender@example.test>\nDelivered-To: {}@example.test\n",
            box_owner.name
        )),
        "{direct}"
    );
    assert!(
        direct.ends_with("body of direct\nFrom the start of a line\n"),
        "{direct:?}"
    );
    let via = texts
        .iter()
        .find(|t| t.contains("Subject: forwarded"))
        .expect("forwarded");
    assert!(
        via.contains(&format!("Delivered-To: {}@example.test", fwd.name)),
        "{via}"
    );
    for f in postern_tests::files_below(&md) {
        assert_eq!(
            std::fs::symlink_metadata(&f).expect("stat").uid(),
            box_owner.uid,
            "{} not owned by the account",
            f.display()
        );
    }
    assert_eq!(std::fs::metadata(&md).expect("stat").uid(), box_owner.uid);
    assert!(
        !fwd.home.join("Maildir").exists(),
        "a forwarding account keeps no mailbox"
    );

    let got = out.join("fwd.in");
    assert!(
        wait_for(LONG, || got.exists()),
        "the .forward command did not run\n{}",
        inst.log()
    );
    let input = std::fs::read_to_string(&got).expect("read");
    assert!(input.contains("Subject: forwarded\n"), "{input}");
    let uid = std::fs::read_to_string(out.join("fwd.uid")).expect("uid");
    assert_eq!(uid.trim(), fwd.uid.to_string(), ".forward commands run as the account");
    let env = std::fs::read_to_string(out.join("fwd.env")).expect("env");
    assert_eq!(env_of(&env, "USER").as_deref(), Some(fwd.name.as_str()));
    assert_eq!(env_of(&env, "HOME").as_deref(), Some(fwd.home.to_str().expect("utf8")));
}

#[test]
fn system_account_mbox_in_the_spool() {
    if !postern_tests::require_root("delivery to system accounts") {
        return;
    }
    let (smtp, relay) = (free_port(), free_port());
    let probe = tempfile::tempdir().expect("tempdir");
    let spool = probe.path().join("spool");
    std::fs::create_dir_all(&spool).expect("mkdir spool");
    std::fs::set_permissions(probe.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Root's, not world-writable (like /var/mail): local creates the file for the account.
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let spool_setting = format!("mail_spool_directory={}", spool.display());
    let mut inst = instance(smtp, relay, &[&spool_setting]);
    let acct = Account::new("s", probe.path());
    add_user(&inst, "sender", "pw-sender");
    inst.start();
    for subject in ["first", "second"] {
        let to = format!("{}@example.test", acct.name);
        let refused = smtplib_send(smtp, "sender@example.test", &[&to], &message(subject));
        assert_eq!(refused.trim(), "{}", "{to} refused: {refused}");
    }
    let mbox = spool.join(&acct.name);
    assert!(
        wait_for(LONG, || std::fs::read_to_string(&mbox)
            .is_ok_and(|t| t.contains("Subject: first") && t.contains("Subject: second"))),
        "mbox not written\n{}",
        inst.log()
    );
    let md = std::fs::metadata(&mbox).expect("stat");
    assert_eq!(md.uid(), acct.uid, "the mbox belongs to the account");
    assert_eq!(md.mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&mbox).expect("read");
    let from_lines = text
        .lines()
        .filter(|l| l.starts_with("From sender@example.test  "))
        .count();
    assert_eq!(from_lines, 2, "{text}");
    assert_eq!(text.matches("\n>From the start of a line\n").count(), 2, "{text}");
    assert!(
        !spool.join(format!("{}.lock", acct.name)).exists(),
        "dot-lock left behind"
    );

    // A group-writable spool (Debian's /var/mail: root:mail 2775): the account's uid with
    // the spool's group.
    let mail = nix::unistd::Group::from_name("mail")
        .expect("getgrnam")
        .expect("group mail");
    nix::unistd::chown(&spool, None, Some(mail.gid)).expect("chgrp");
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o2775)).expect("chmod");
    let other = Account::new("g", probe.path());
    let to = format!("{}@example.test", other.name);
    let refused = smtplib_send(smtp, "sender@example.test", &[&to], &message("grouped"));
    assert_eq!(refused.trim(), "{}", "{to} refused: {refused}");
    let mbox = spool.join(&other.name);
    assert!(
        wait_for(LONG, || std::fs::read_to_string(&mbox)
            .is_ok_and(|t| t.contains("Subject: grouped"))),
        "mbox in the group-writable spool not written\n{}",
        inst.log()
    );
    let md = std::fs::metadata(&mbox).expect("stat");
    assert_eq!((md.uid(), md.gid()), (other.uid, mail.gid.as_raw()));
}

/// RCPT answers for a system account (`daemon`, in every passwd) and a name nobody has.
fn rcpt_codes(smtp: u16) -> String {
    python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {smtp}, timeout=30)\n\
         s.ehlo()\ns.mail('sender@example.test')\n\
         print(s.rcpt('daemon@example.test')[0], s.rcpt('nosuchaccount-xyz@example.test')[0])\ns.quit()\n"
    ))
    .trim()
    .to_string()
}

#[test]
fn system_accounts_exist_only_when_enabled_and_an_unprivileged_local_defers_them() {
    // Runs as any user: local stays unprivileged here (the development layout).
    let (smtp, relay) = (free_port(), free_port());
    let mut off = Instance::new(&pipeline_services(smtp), &[&format!("relayhost=[127.0.0.1]:{relay}")]);
    off.start();
    assert_eq!(
        rcpt_codes(smtp),
        "550 550",
        "without local_system_users passwd accounts are unknown"
    );
    drop(off);

    let smtp = free_port();
    let mut on = Instance::new(
        &pipeline_services(smtp),
        &[&format!("relayhost=[127.0.0.1]:{relay}"), "local_system_users=true"],
    );
    add_user(&on, "sender", "pw-sender");
    on.start();
    assert_eq!(
        rcpt_codes(smtp),
        "250 550",
        "with local_system_users a passwd account exists"
    );
    let refused = smtplib_send(
        smtp,
        "sender@example.test",
        &["daemon@example.test"],
        &message("unprivileged"),
    );
    assert_eq!(refused.trim(), "{}");
    assert!(
        wait_for(LONG, || on.log().contains("to=<daemon@example.test>, relay=local")
            && on.log().contains(
                "status=deferred (delivery to system accounts needs local to run as root"
            )),
        "not deferred with the reason\n{}",
        on.log()
    );
    assert_eq!(
        on.log_count("status=sent"),
        0,
        "nothing delivered with the wrong rights"
    );
}
