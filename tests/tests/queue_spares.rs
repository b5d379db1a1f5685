//! Spare queue files (issue 14, [`postern_lib::queue_spare`]): qmgr keeps a delivered
//! message's file in `spare/` instead of unlinking it, and cleanup writes the next message
//! into it. Through the whole pipeline (smtpd → cleanup → qmgr → local): the spare is
//! really reused (same inode), a shorter message in a longer spare carries nothing of the
//! old content, and nothing is left in the queue but spares.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use postern_tests::{
    Instance, add_user, files_below, free_port, maildir_messages, pipeline_services, smtplib_send, wait_for,
};

const LONG: Duration = Duration::from_secs(20);

/// Inode number and length of each spare (dot file) in `spare/`.
fn spare_files(queue: &Path) -> Vec<(u64, u64)> {
    std::fs::read_dir(queue.join("spare"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                .filter_map(|e| e.metadata().ok().map(|m| (m.ino(), m.len())))
                .collect()
        })
        .unwrap_or_default()
}

fn spares(queue: &Path) -> Vec<u64> {
    spare_files(queue).into_iter().map(|(ino, _)| ino).collect()
}

/// The delivered message whose text contains `needle`.
fn message_with(maildir: &Path, needle: &str) -> String {
    maildir_messages(maildir)
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .find(|m| m.contains(needle))
        .unwrap_or_else(|| panic!("no delivered message with {needle:?}"))
}

#[test]
fn a_delivered_messages_file_carries_the_next_message_and_nothing_of_the_old() {
    let port = free_port();
    let mut inst = Instance::new(&pipeline_services(port), &[]);
    add_user(&inst, "bob", "bob-pw");
    inst.start();
    let queue = inst.queue();
    let maildir = inst.root.path().join("var/mail/bob");

    // A long message: delivered, its queue file becomes a spare.
    let long_body = "old content that must not come back\r\n".repeat(600);
    let sent = smtplib_send(
        port,
        "alice@example.test",
        &["bob@example.test"],
        &format!("Subject: long\r\n\r\n{long_body}"),
    );
    assert_eq!(sent.trim(), "{}");
    assert!(
        wait_for(LONG, || maildir_messages(&maildir).len() == 1
            && spares(&queue).len() == 1),
        "delivered and kept as a spare: spares {:?}\n{}",
        spares(&queue),
        inst.log()
    );
    let (spare_ino, spare_len) = spare_files(&queue)[0];
    // cleanup found spare/ empty when it took the first message in, and lists an empty
    // spare/ again only after 200 ms (queue_spare's RELIST_EMPTY): wait that out, or the
    // second message could get a new file while the spare sits there.
    std::thread::sleep(Duration::from_millis(500));

    // A short message: cleanup takes the spare (the same inode goes through the queue and
    // comes back as the spare once this one is delivered too).
    let sent = smtplib_send(
        port,
        "alice@example.test",
        &["bob@example.test"],
        "Subject: short\r\n\r\nnew and short\r\n",
    );
    assert_eq!(sent.trim(), "{}");
    assert!(
        wait_for(LONG, || maildir_messages(&maildir).len() == 2
            && spares(&queue).len() == 1),
        "second delivery: spares {:?}\n{}",
        spares(&queue),
        inst.log()
    );
    assert_eq!(spares(&queue), vec![spare_ino], "the spare was reused, not replaced");
    let (_, now_len) = spare_files(&queue)[0];
    assert!(
        now_len < spare_len / 4,
        "the reused file was cut to the short message: {now_len} of {spare_len}"
    );

    let short = message_with(&maildir, "Subject: short");
    assert!(short.contains("new and short"), "{short}");
    assert!(
        !short.contains("old content"),
        "old content leaked into the new message:\n{short}"
    );
    let long = message_with(&maildir, "Subject: long");
    assert_eq!(long.matches("old content that must not come back").count(), 600);

    // Nothing in the queue but the spare (dot files are not queue files).
    assert!(files_below(&queue.join("incoming")).is_empty());
    assert!(files_below(&queue.join("active")).is_empty());
    assert!(files_below(&queue.join("deferred")).is_empty());
    assert!(
        !inst.log().contains("status=deferred") && !inst.log().contains("corrupt"),
        "{}",
        inst.log()
    );
}
