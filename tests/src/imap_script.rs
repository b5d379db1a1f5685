//! Whole-system IMAP tests scripted in Python over a plain socket, so exact response lines
//! can be asserted: an instance whose user `alice` has two messages in INBOX (one delivered
//! with LF line ends, one `\Seen` with CRLF), and [`run`], which runs a test's Python body
//! after the plain client of `tests/scripts/imap_raw_client.py` (`Raw(PORT)`) with `PORT`,
//! `MASTER` (master's pid) and `MAILDIR` (alice's Maildir) defined and `os`, `time` and
//! `imaplib` imported.

use crate::{Instance, deliver_maildir, imap_instance, python};
use std::path::PathBuf;

/// The plain client (class `Raw`).
pub const RAW: &str = include_str!("../scripts/imap_raw_client.py");

/// A started instance with alice (`password`) and her two messages; its IMAP port.
pub fn two_messages(password: &str) -> (Instance, u16) {
    two_messages_with(password, |_| {})
}

/// [`two_messages`], with `setup` run on the instance before it starts (a quota, ...).
pub fn two_messages_with(password: &str, setup: impl FnOnce(&Instance)) -> (Instance, u16) {
    let (mut inst, port) = imap_instance("alice", password);
    deliver_maildir(
        &inst,
        "alice",
        "1700000000.M1P1.test",
        b"From: Bob <bob@example.test>\nSubject: first\n\nhello\n",
    );
    deliver_maildir(
        &inst,
        "alice",
        "1700000001.M2P1.test:2,S",
        b"From: Carol <carol@example.test>\r\nSubject: second\r\n\r\nthere\r\n",
    );
    setup(&inst);
    inst.start();
    (inst, port)
}

/// alice's Maildir.
pub fn maildir(inst: &Instance) -> PathBuf {
    inst.root.path().join("var/mail/alice")
}

/// Starts [`two_messages`] with `password`, runs `prelude` (helper functions of the test
/// file) and `body` after [`RAW`], checks the script got to its end; returns the running
/// instance for checks of the files.
pub fn run(password: &str, prelude: &str, body: &str) -> Instance {
    run_with(password, prelude, body, |_| {})
}

/// [`run`], with `setup` run on the instance before it starts.
pub fn run_with(password: &str, prelude: &str, body: &str, setup: impl FnOnce(&Instance)) -> Instance {
    let (inst, port) = two_messages_with(password, setup);
    let script = format!(
        "{RAW}\nPORT = {port}\nMASTER = {}\nMAILDIR = {:?}\nimport imaplib, os, time\n{prelude}\n{body}\nprint('done ok')\n",
        inst.master_pid(),
        maildir(&inst).display().to_string()
    );
    let out = python(&script);
    assert!(out.contains("done ok"), "{out}\n{}", inst.log());
    inst
}
