//! Abandoned queue temporaries (`postsuper -p`, which `postern start` runs before master,
//! as `postfix start` runs postsuper): a cleanup killed with kill -9 while its message
//! waited for the queue mirror's peer (a peer that accepts the connection and never
//! answers, so the temporary stays in `incoming/` for as long as the test needs) leaves
//! `incoming/.cleanup.<QUEUEID>`. While that cleanup lives, `postsuper -p` keeps its file;
//! after the kill the next `postern start` removes it and logs so, mail flows again, and
//! temporaries of live writers (and names of other shapes) are kept. Planted beside it:
//! a temporary of a PID no process can have (removed), of a live PID (kept), of a live PID
//! unchanged for two days (a reused PID: removed), a postdrop temporary in `maildrop/`
//! (removed).

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use postern_lib::queue_id::QueueId;
use postern_tests::vip_pair::mirror_services;
use postern_tests::{
    Instance, add_user, bin, children_named, free_port, maildir_messages, owned_mail_base, pipeline_services,
    python_args, smtplib_send, wait_for,
};

/// Names in `dir` starting with `.cleanup.`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".cleanup."))
                .collect()
        })
        .unwrap_or_default()
}

fn plant(path: &Path) {
    std::fs::write(path, b"half a message").expect("plant a temporary");
}

fn postsuper_p(inst: &Instance) -> String {
    let out = std::process::Command::new(bin("postsuper"))
        .arg("-c")
        .arg(inst.etc())
        .arg("-p")
        .output()
        .expect("run postsuper");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "postsuper -p: {text}");
    text
}

#[test]
fn a_cleanup_killed_mid_message_leaves_a_temporary_that_the_next_start_removes() {
    // Nothing listens on the peer's port at the start (postern start's rejoin fails at
    // once); the silent peer is bound once master runs.
    let peer_port = free_port();
    let smtp = free_port();
    let mut inst = Instance::new(
        &(pipeline_services(smtp) + &mirror_services("")),
        &[
            &format!("queue_mirror_peer=127.0.0.1:{peer_port}"),
            "queue_mirror_secret_file=mirror-secret",
            "queue_mirror_timeout=60s",
            "queue_mirror_unreachable=defer",
        ],
    );
    let secret = inst.etc().join("mirror-secret");
    std::fs::write(&secret, "test-mirror-secret-0123456789abcdef\n").expect("secret");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    add_user(&inst, "alice", "alice-pw");
    owned_mail_base(&inst);
    inst.start();
    let queue = inst.queue();
    let incoming = queue.join("incoming");

    // Planted temporaries.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304);
    let no_such_pid = pid_max + 1;
    let id = |pid: u32, seq: u32| QueueId::from_parts(1_800_000_000_000_000 + u64::from(seq), pid, seq);
    let dead = incoming.join(format!(".cleanup.{}", id(no_such_pid, 1)));
    let dead_drop = queue
        .join("maildrop")
        .join(format!(".tmp.{no_such_pid}.0.{}", id(no_such_pid, 2)));
    let live = queue.join("hold").join(format!(".cleanup.{}", id(1, 3)));
    let reused = incoming.join(format!(".cleanup.{}", id(1, 4)));
    let other = incoming.join(".cleanup.not-a-queue-id");
    for p in [&dead, &dead_drop, &live, &reused, &other] {
        plant(p);
    }
    let touched = std::process::Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(&reused)
        .status()
        .expect("touch");
    assert!(touched.success());

    // The silent peer: accepts and never answers (the connections are kept open).
    let listener = TcpListener::bind(("127.0.0.1", peer_port)).expect("bind the peer's port");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let planted: Vec<String> = temporaries(&incoming);
    let client = std::thread::spawn(move || {
        let script = "import smtplib, sys\n\
            s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=90)\n\
            try:\n    \
                s.sendmail('bob@example.test', ['alice@example.test'], b'Subject: waits for the peer\\r\\n\\r\\nx\\r\\n')\n    \
                print('accepted')\n\
            except smtplib.SMTPException as e:\n    \
                print('refused', e)\n";
        python_args(script, &[&smtp.to_string()])
    });
    let mut written = String::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            written = temporaries(&incoming)
                .into_iter()
                .find(|n| !planted.contains(n))
                .unwrap_or_default();
            !written.is_empty()
        }),
        "cleanup's temporary in incoming/: {:?}\n{}",
        temporaries(&incoming),
        inst.log()
    );
    let written = incoming.join(&written);

    // With the cleanup alive: its temporary is kept, the abandoned planted ones go.
    let said = postsuper_p(&inst);
    eprintln!("postsuper -p while cleanup waits:\n{said}");
    assert!(written.exists(), "a live cleanup's temporary was removed: {said}");
    assert!(!dead.exists() && !dead_drop.exists() && !reused.exists(), "{said}");
    assert!(live.exists() && other.exists(), "{said}");
    assert!(
        said.contains(&format!(
            "removed temporary file incoming/{} left by process {no_such_pid}, which is gone",
            dead.file_name().unwrap().to_string_lossy()
        )),
        "{said}"
    );
    assert!(said.contains("unchanged for 48 hours"), "{said}");
    assert!(said.contains("Purged: 3 temporary files"), "{said}");

    // kill -9 of the cleanup: its temporary stays (nothing runs at a SIGKILL).
    let cleanups = children_named(inst.master_pid(), "cleanup");
    assert!(!cleanups.is_empty(), "no cleanup process");
    for pid in &cleanups {
        postern_tests::kill9(*pid);
    }
    let (_, answer, err) = client.join().expect("client");
    eprintln!("the client was told: {answer}{err}");
    assert!(!answer.contains("accepted"), "{answer}");
    assert!(written.exists(), "the killed cleanup's temporary is left");

    // Restart without the peer: the start purges it (and logs so), mail flows.
    let out = inst.stop();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = inst.postern(&["config", "set", "queue_mirror_peer="]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    inst.start();
    assert!(
        !written.exists(),
        "the abandoned temporary is still there\n{}",
        inst.log()
    );
    let name = written.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        inst.log_count("postern/postsuper[") - inst.log_count("Purged:"),
        4,
        "three removals by the first run, one by the start\n{}",
        inst.log()
    );
    assert!(
        inst.log()
            .contains(&format!("removed temporary file incoming/{name} left by process")),
        "{}",
        inst.log()
    );
    assert!(live.exists() && other.exists(), "live writers' temporaries are kept");
    let sent = smtplib_send(
        smtp,
        "bob@example.test",
        &["alice@example.test"],
        "Subject: after the restart\r\n\r\ny\r\n",
    );
    assert_eq!(sent.trim(), "{}");
    let maildir = inst.root.path().join("var/mail/alice");
    assert!(
        wait_for(Duration::from_secs(20), || maildir_messages(&maildir)
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("after the restart"))),
        "delivered after the restart\n{}",
        inst.log()
    );
    assert!(
        !maildir_messages(&maildir)
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("waits for the peer")),
        "the message that was never acknowledged is not delivered"
    );
    let _ = inst.stop();
}
