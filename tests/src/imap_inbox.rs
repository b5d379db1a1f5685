//! One imapd and a big INBOX: the set-up of the whole-system tests that load alice's INBOX
//! with many messages before imapd starts (IDLE with many sessions, STORE in chunks,
//! memory given back). imapd runs at `maxproc = 1`, so every session shares one folder
//! state; the messages are files in `cur/` without flags, named as a delivery agent names
//! them, message `i` with the time stamp `1_700_000_000 + i` (so sequence numbers follow `i`).

use crate::{Instance, add_user, auth_service, daemon_service, free_port, owned_mail_base};
use std::path::PathBuf;

/// The name of message `i`'s file, `len` bytes, with `flags` (the letters after `:2,`).
pub fn message_name(i: usize, len: usize, flags: &str) -> String {
    format!("{}.M{i}P1.host,S={len}:2,{flags}", 1_700_000_000 + i)
}

/// A started instance with one imapd and alice (password `alice-pw`) whose INBOX holds `n`
/// messages, message `i`'s text `body(i)`; `settings` are added to main.toml. Its imapd
/// port and the INBOX's Maildir.
pub fn one_imapd_inbox(n: usize, body: impl Fn(usize) -> String, settings: &[&str]) -> (Instance, u16, PathBuf) {
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", "maxproc = 1")
    );
    let mut inst = Instance::new(&services, settings);
    add_user(&inst, "alice", "alice-pw");
    let md = inst.root.path().join("var/mail/alice");
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(md.join(d)).expect("mkdir");
    }
    for i in 0..n {
        let text = body(i);
        std::fs::write(md.join("cur").join(message_name(i, text.len(), "")), text).expect("write message");
    }
    owned_mail_base(&inst);
    inst.start();
    (inst, port, md)
}
