//! Migration either way (issue 5, "Interoperation"): a mailbox that Postern filled and
//! imapd flagged is opened by a real Dovecot (from Debian's packages, started by the test
//! on loopback over the same Maildir) and shows the same UIDVALIDITY, the same UID for each
//! Message-ID, and the same flags and keywords; then Dovecot appends a message and changes
//! a flag, and Postern's imapd shows Dovecot's UID for the new message and both flags.
//! Needs root (Dovecot switches to the mailbox owner) and Dovecot; skips otherwise.

use postern_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A Dovecot instance over `mail_dir/%u`, killed when dropped.
struct Dovecot {
    run_dir: std::path::PathBuf,
}

impl Dovecot {
    fn start(dir: &Path, mail_dir: &Path, port: u16, uid: u32, gid: u32) -> Dovecot {
        let run_dir = dir.join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let conf = dir.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {run}\nstate_dir = {state}\nlog_path = {log}\nprotocols = imap\n\
                 listen = 127.0.0.1\nservice imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n  \
                 inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
                 mail_location = maildir:{mail}/%u\nauth_mechanisms = plain\ndisable_plaintext_auth = no\n\
                 passdb {{\n  driver = static\n  args = password=dove-pw\n}}\n\
                 userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={home}/%u\n}}\n\
                 first_valid_uid = 1\nssl = no\n",
                run = run_dir.display(),
                state = dir.join("state").display(),
                log = dir.join("dovecot.log").display(),
                mail = mail_dir.display(),
                home = dir.join("home").display(),
            ),
        )
        .unwrap();
        let st = Command::new("dovecot").arg("-c").arg(&conf).status().expect("dovecot");
        assert!(st.success(), "dovecot did not start");
        let d = Dovecot { run_dir };
        assert!(
            wait_for(Duration::from_secs(20), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "dovecot does not listen: {}",
            std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        );
        d
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.run_dir.join("master.pid")) {
            let pid: i32 = pid.trim().parse().unwrap_or(0);
            if pid > 0 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
                wait_for(Duration::from_secs(10), || !alive(pid as u32));
            }
        }
    }
}

/// Logs in on `port` as alice and prints the INBOX as
/// `VALIDITY n` and one `MSG uid message-id flags...` line per message; then runs `then`
/// (more Python, with `M` the connection) and logs out.
fn inbox(port: u16, password: &str, then: &str) -> String {
    python(&format!(
        r#"
import imaplib, re
M = imaplib.IMAP4('127.0.0.1', {port})
M.login('alice', {password:?})
typ, st = M.status('INBOX', '(UIDVALIDITY)')
print('VALIDITY', re.search(rb'UIDVALIDITY (\d+)', st[0]).group(1).decode())
M.select('INBOX')
# the sequence number of a message, by Message-ID (delivery order varies)
seq = lambda mid: M.search(None, 'HEADER', 'Message-ID', mid)[1][0].decode()
typ, data = M.fetch('1:*', '(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
for item in data:
    if isinstance(item, tuple):
        meta, hdr = item
        uid = re.search(rb'UID (\d+)', meta).group(1).decode()
        flags = sorted(f for f in re.search(rb'FLAGS \(([^)]*)\)', meta).group(1).decode().split() if f != '\\Recent')
        mid = hdr.decode().split(':', 1)[1].strip()
        print('MSG', uid, mid, ' '.join(flags))
{then}
M.logout()
"#
    ))
}

/// `VALIDITY` and message-id → (uid, flags) from [`inbox`]'s output.
fn parse(out: &str) -> (String, BTreeMap<String, (String, String)>) {
    let validity = out
        .lines()
        .find_map(|l| l.strip_prefix("VALIDITY "))
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {out}"))
        .to_string();
    let msgs = out
        .lines()
        .filter_map(|l| l.strip_prefix("MSG "))
        .map(|l| {
            let mut w = l.splitn(3, ' ');
            let uid = w.next().unwrap().to_string();
            let mid = w.next().unwrap().to_string();
            (mid, (uid, w.next().unwrap_or("").to_string()))
        })
        .collect();
    (validity, msgs)
}

#[test]
fn dovecot_reads_postern_mailboxes_and_postern_reads_dovecots_changes() {
    if !postern_tests::require_root("Dovecot runs as root")
        || !postern_tests::require_tool("/usr/sbin/dovecot", "dovecot-imapd")
    {
        return;
    }
    let (smtp, imap, dove) = (free_port(), free_port(), free_port());
    let mut services = pipeline_services(smtp);
    services.push_str(&daemon_service(
        "imap",
        "inet",
        &format!("127.0.0.1:{imap}"),
        "imapd",
        "",
    ));
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "alice", "alice-pw");
    inst.start();
    for i in 1..=3 {
        let msg = format!(
            "From: bob@remote.test\r\nTo: alice@example.test\r\nSubject: m{i}\r\nMessage-ID: <interop.{i}@remote.test>\r\n\r\nbody {i}\r\n"
        );
        smtplib_send(smtp, "bob@remote.test", &["alice@example.test"], &msg);
    }
    let mail = inst.root.path().join("var/mail");
    assert!(
        wait_for(Duration::from_secs(60), || maildir_messages(&mail.join("alice")).len()
            == 3),
        "{}",
        inst.log()
    );

    // Postern's view, after flags and a keyword set through its imapd.
    let out = inbox(
        imap,
        "alice-pw",
        "M.store(seq('<interop.2@remote.test>'), '+FLAGS', '(\\\\Seen \\\\Flagged)')\n\
         M.store(seq('<interop.3@remote.test>'), '+FLAGS', '(Project-X)')",
    );
    let (validity, before) = parse(&out);
    assert_eq!(before.len(), 3, "{out}");
    let out = inbox(imap, "alice-pw", "");
    let (_, postern) = parse(&out);
    assert_eq!(postern["<interop.2@remote.test>"].1, "\\Flagged \\Seen", "{out}");
    assert_eq!(postern["<interop.3@remote.test>"].1, "Project-X", "{out}");

    // Dovecot over the same files, as the mailbox owner.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(mail.join("alice")).unwrap();
    let dir = inst.root.path().join("dovecot");
    let dovecot = Dovecot::start(&dir, &mail, dove, meta.uid(), meta.gid());
    let out = inbox(
        dove,
        "dove-pw",
        "import time\n\
         M.append('INBOX', '(\\\\Answered)', None, b'From: carol@remote.test\\r\\nSubject: from dovecot\\r\\nMessage-ID: <interop.4@remote.test>\\r\\n\\r\\nhi\\r\\n')\n\
         M.store(seq('<interop.1@remote.test>'), '+FLAGS', '(\\\\Seen)')",
    );
    let (dv_validity, dv) = parse(&out);
    assert_eq!(dv_validity, validity, "UIDVALIDITY differs:\n{out}");
    assert_eq!(dv, postern, "Dovecot sees other UIDs or flags");
    drop(dovecot);

    // Postern again: Dovecot's message with Dovecot's UID, and both flag changes.
    let out = inbox(imap, "alice-pw", "");
    let (after_validity, after) = parse(&out);
    assert_eq!(after_validity, validity, "{out}");
    assert_eq!(after.len(), 4, "{out}");
    let max_before: u32 = postern.values().map(|(u, _)| u.parse::<u32>().unwrap()).max().unwrap();
    let (uid4, flags4) = &after["<interop.4@remote.test>"];
    assert!(uid4.parse::<u32>().unwrap() > max_before, "{out}");
    assert_eq!(flags4, "\\Answered", "{out}");
    assert_eq!(after["<interop.1@remote.test>"].1, "\\Seen", "{out}");
    for id in 1..=3 {
        let key = format!("<interop.{id}@remote.test>");
        assert_eq!(after[&key].0, postern[&key].0, "UID of {key} changed:\n{out}");
    }
}
