//! The active-standby pair of issue 16 as a whole ([`postern_tests::vip_pair::Pair::full`]):
//! keepalived moves the service address 198.18.1.100, the queue mirror keeps a copy of
//! each accepted message on the other node before the 250, and the replicator keeps
//! alice's mailbox the same on both. A client sends over SMTP and submission and reads
//! over IMAP and POP3 through the address only.
//!
//! - Take-over, two ways the master goes: kill -9 of every process of node 1 (keepalived
//!   included), and node 1's link taken down (its bridge port) while everything on it
//!   runs. Mail accepted before (delivered, or only queued on node 1) and after is
//!   delivered exactly once; readers reconnect through the address to the same mailbox
//!   state (UIDVALIDITY, UIDs, flags, POP3 UIDLs); the time until node 2 holds the
//!   address and until its first 250 is printed. With the link variant, node 1 comes back
//!   with the message it had queued still queued and its qmgr running on (it never
//!   stopped): it delivers it again, and the message's `X-Postern-GUID` (stamped by
//!   cleanup when the mirror is on, the same in the peer's copy) makes that a no-op.
//! - Split brain: the link between the nodes cut while both reach the client; both hold
//!   the address and both accept, each alone ("degraded", the pair's documented choice);
//!   healed, one holder again, nothing lost, nothing twice, both mailboxes the same.
//!
//! Needs root, iproute2, keepalived and python3; skipped (with the reason recorded) when
//! one is missing, failed under CI=true (tests/src/skip.rs).

use postern_tests::vip_pair::*;
use postern_tests::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Message-ID → copies in each node's Maildir, for failure messages.
fn both(pair: &Pair) -> [HashMap<String, usize>; 2] {
    [pair.nodes[0].delivered(), pair.nodes[1].delivered()]
}

/// Waits until each node's Maildir holds exactly `ids` (`NAME` for `<NAME@as.test>`), each
/// once.
fn wait_converged(pair: &Pair, ids: &[&str], limit: Duration) {
    let want: HashMap<String, usize> = ids.iter().map(|id| (format!("{id}@as.test"), 1)).collect();
    assert!(
        wait_for(limit, || both(pair).iter().all(|m| *m == want)),
        "both mailboxes hold {ids:?} once each: {:?}",
        both(pair)
    );
}

/// For a failure message: each copy left in a node's mirror/ and every log line naming it.
fn copies_and_their_log(pair: &Pair) -> String {
    let mut out = String::new();
    for n in &pair.nodes {
        for p in files_below(&n.inst.queue().join("mirror")) {
            let id = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push_str(&format!("--- {} holds {id}\n", n.name));
            for m in &pair.nodes {
                for l in m.inst.log().lines().filter(|l| l.contains(&id)) {
                    out.push_str(&format!("{}: {l}\n", m.name));
                }
            }
        }
    }
    out
}

/// The pair up, node 1 holding the address as MASTER.
fn up(prefix: &str) -> Pair {
    let mut pair = Pair::full(prefix);
    pair.start_keepalived(0);
    pair.start_keepalived(1);
    pair.wait_holder("n1", Duration::from_secs(20));
    assert!(wait_for(Duration::from_secs(10), || hook_state(&pair, 0) == "MASTER"));
    pair
}

/// How the master goes in [`take_over`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cut {
    /// kill -9 of every process of node 1.
    Kill,
    /// Node 1's link down, its processes running.
    Link,
}

fn take_over(prefix: &str, cut: Cut) {
    let mut pair = up(prefix);
    // Through the address: one message over SMTP, one over submission; node 1 delivers
    // them and the replicator copies them to node 2.
    pair.send_ok("smtp-1");
    let out = pair.submit("sub-1");
    assert!(
        out.status.success(),
        "submission: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_converged(&pair, &["smtp-1", "sub-1"], Duration::from_secs(30));
    // A reader marks one \Seen; node 2 gets the flag too.
    let state = pair.imap_state("c", VIP);
    assert_eq!(state.messages.len(), 2, "{state:?}");
    let smtp1 = state.get("smtp-1@as.test").expect("smtp-1").uid;
    pair.imap_see(smtp1);
    assert!(
        wait_for(Duration::from_secs(20), || {
            let n2 = pair.imap_state("n2", "127.0.0.1");
            n2.get("smtp-1@as.test").is_some_and(|m| m.flags.contains("\\Seen"))
        }),
        "the flag reaches node 2: {:?}",
        pair.imap_state("n2", "127.0.0.1")
    );
    let before = pair.imap_state("c", VIP);
    let uidls_before = pair.pop3_uidls();
    assert_eq!(uidls_before.len(), 2, "{uidls_before:?}");

    // Accepted by node 1, in its queue only (delivery held), its copy on node 2.
    let qmgr1 = pair.qmgr(0);
    signal(qmgr1, nix::sys::signal::Signal::SIGSTOP);
    pair.send_ok("queued-1");
    assert!(wait_for(Duration::from_secs(5), || !pair.nodes[0].queued().is_empty()));
    assert_eq!(pair.nodes[1].mirror_copies(), 1, "node 2 holds the copy");

    let t0 = Instant::now();
    match cut {
        Cut::Kill => {
            let killed = pair.kill_node(0);
            assert!(killed >= 5, "node 1 had its processes: {killed}");
        }
        Cut::Link => pair.lan.set_link("n1", false),
    }
    let what = match cut {
        Cut::Kill => "kill -9 of node 1",
        Cut::Link => "node 1's link went down",
    };
    pair.measure_take_over(t0, what);
    let out = pair.submit("sub-after");
    assert!(
        out.status.success(),
        "submission after the take-over: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Node 2 adopted node 1's queued message (the hook found node 1's mirror silent).
    let all = ["smtp-1", "sub-1", "queued-1", "after-1", "sub-after"];
    let want: HashMap<String, usize> = all.iter().map(|id| (format!("{id}@as.test"), 1)).collect();
    assert!(
        wait_for(Duration::from_secs(30), || pair.nodes[1].delivered() == want),
        "node 2 delivers each once: {:?}",
        pair.nodes[1].delivered()
    );

    // The reader reconnects through the address: the same folder, the same UIDs and flags
    // for what it had seen, the new mail after them; the same POP3 UIDLs.
    let after = pair.imap_state("c", VIP);
    assert_eq!(after.uidvalidity, before.uidvalidity, "{before:?}\n{after:?}");
    for m in &before.messages {
        assert_eq!(after.get(&m.id), Some(m), "{before:?}\n{after:?}");
    }
    assert_eq!(after.messages.len(), all.len(), "{after:?}");
    assert!(
        after
            .messages
            .iter()
            .skip(2)
            .all(|m| m.uid > smtp1.max(before.messages[1].uid))
    );
    let uidls = pair.pop3_uidls();
    for u in &uidls_before {
        assert!(uidls.contains(u), "POP3 UIDL {u:?} kept: {uidls:?}");
    }
    assert_eq!(uidls.len(), all.len(), "{uidls:?}");

    if cut == Cut::Link {
        // Node 1 was alive all along, its qmgr held: it comes back with queued-1 still in
        // its queue and delivers it again once its qmgr runs; the GUID makes that a no-op.
        pair.lan.set_link("n1", true);
        signal(qmgr1, nix::sys::signal::Signal::SIGCONT);
        let back = pair.wait_holder("n1", Duration::from_secs(20));
        println!("link back: node 1 holds {VIP} again after {:.2} s", back.as_secs_f64());
        assert!(
            wait_for(Duration::from_secs(20), || pair.nodes[0].queued().is_empty()),
            "node 1 finishes its queue"
        );
        assert!(
            wait_for(Duration::from_secs(20), || pair.send("back-1").status.success()),
            "the client reaches node 1 again"
        );
        let mut all = all.to_vec();
        all.push("back-1");
        wait_converged(&pair, &all, Duration::from_secs(30));
        let state = pair.imap_state("c", VIP);
        assert_eq!(state.uidvalidity, before.uidvalidity);
        assert_eq!(state.messages.len(), all.len(), "{state:?}");
        assert!(state.get("smtp-1@as.test").is_some_and(|m| m.flags.contains("\\Seen")));
    }
}

#[test]
fn take_over_after_kill_keeps_mail_and_mailbox_state() {
    if !can_run() {
        return;
    }
    take_over("pst-rk-", Cut::Kill);
}

#[test]
fn take_over_after_link_down_keeps_mail_and_mailbox_state() {
    if !can_run() {
        return;
    }
    take_over("pst-rl-", Cut::Link);
}

#[test]
fn split_brain_with_the_mirror_loses_nothing_and_converges() {
    if !can_run() || !require_tool("bridge", "iproute2") {
        return;
    }
    let pair = up("pst-rs-");
    pair.send_ok("sb-0");
    wait_converged(&pair, &["sb-0"], Duration::from_secs(30));

    // The nodes stop hearing each other; the client reaches both.
    pair.lan.set_isolated("n1", true);
    pair.lan.set_isolated("n2", true);
    assert!(
        wait_for(Duration::from_secs(15), || pair.holders() == ["n1", "n2"]),
        "both nodes hold {VIP} during the split: {:?}\n{}",
        pair.holders(),
        pair.keepalived_logs()
    );
    // Each accepts alone (queue_mirror_unreachable = degraded): one message sent to each
    // node's own address, one through the service address.
    for (i, id) in [(0, "sb-n1"), (1, "sb-n2")] {
        pair.python(
            "c",
            &format!(
                "import smtplib\ns = smtplib.SMTP('{}', 25, timeout=10)\n\
                 s.sendmail('bob@example.test', ['alice@example.test'], \
                 'Subject: {id}\\r\\nMessage-ID: <{id}@as.test>\\r\\n\\r\\nsplit\\r\\n')\ns.quit()\n",
                node_addr(i)
            ),
        );
    }
    pair.send_ok("sb-vip");
    for n in &pair.nodes {
        assert!(
            wait_for(Duration::from_secs(10), || n
                .inst
                .log_count(": degraded: accepted by this node alone")
                >= 1),
            "{} logs the degraded acceptance\n{}",
            n.name,
            n.inst.log()
        );
    }

    // Healed: one holder (node 1, the higher priority); the replicator merges the two
    // mailboxes; every message once on each node.
    pair.lan.set_isolated("n1", false);
    pair.lan.set_isolated("n2", false);
    let healed = pair.wait_holder("n1", Duration::from_secs(15));
    println!(
        "split brain healed: one holder again {:.2} s after the link came back",
        healed.as_secs_f64()
    );
    let t0 = Instant::now();
    assert!(
        wait_for(Duration::from_secs(10), || pair.send("sb-after").status.success()),
        "the client reaches the holder after the heal\n{}",
        pair.keepalived_logs()
    );
    println!("first 250 after the heal: {:.2} s", t0.elapsed().as_secs_f64());
    wait_converged(
        &pair,
        &["sb-0", "sb-n1", "sb-n2", "sb-vip", "sb-after"],
        Duration::from_secs(40),
    );
    let n1 = pair.imap_state("n1", "127.0.0.1");
    let n2 = pair.imap_state("n2", "127.0.0.1");
    assert_eq!(n1, n2, "both nodes show the reader the same mailbox");
    // Nothing left in either mirror/ that an adoption would deliver again.
    assert!(
        wait_for(Duration::from_secs(20), || pair
            .nodes
            .iter()
            .all(|n| n.mirror_copies() == 0)),
        "copies left: n1 {}, n2 {}\n{}",
        pair.nodes[0].mirror_copies(),
        pair.nodes[1].mirror_copies(),
        copies_and_their_log(&pair)
    );
}

/// Sends `<ID@as.test>` to alice at `host` from the client; the reply code to the message
/// (250, or the code of the refusal).
fn send_code(pair: &Pair, host: &str, id: &str) -> u16 {
    let out = pair.python(
        "c",
        &format!(
            "import smtplib\ns = smtplib.SMTP('{host}', 25, timeout=20)\ntry:\n    \
             s.sendmail('bob@example.test', ['alice@example.test'], \
             'Subject: {id}\\r\\nMessage-ID: <{id}@as.test>\\r\\n\\r\\nsplit\\r\\n')\n    print(250)\n\
             except smtplib.SMTPResponseException as e:\n    print(e.smtp_code)\ns.quit()\n"
        ),
    );
    out.trim().parse().unwrap_or_else(|_| panic!("no reply code: {out}"))
}

#[test]
fn split_brain_in_defer_mode_refuses_honestly_and_converges() {
    if !can_run() || !require_tool("bridge", "iproute2") {
        return;
    }
    let t0 = Instant::now();
    let mut pair = Pair::full_with("pst-rd-", "defer");
    pair.start_keepalived(0);
    pair.start_keepalived(1);
    pair.wait_holder("n1", Duration::from_secs(20));
    assert!(wait_for(Duration::from_secs(10), || hook_state(&pair, 0) == "MASTER"));
    pair.send_ok("sd-0");
    wait_converged(&pair, &["sd-0"], Duration::from_secs(30));
    // Accepted by node 1 before the split, still queued there (its delivery held), its
    // copy on node 2.
    let qmgr1 = pair.qmgr(0);
    signal(qmgr1, nix::sys::signal::Signal::SIGSTOP);
    pair.send_ok("sd-queued");
    assert!(wait_for(Duration::from_secs(5), || !pair.nodes[0].queued().is_empty()));
    assert_eq!(pair.nodes[1].mirror_copies(), 1, "node 2 holds the copy");

    // The nodes stop hearing each other; the client reaches both. Node 2 becomes MASTER
    // too, finds node 1's mirror silent and adopts the queued message.
    pair.lan.set_isolated("n1", true);
    pair.lan.set_isolated("n2", true);
    assert!(
        wait_for(Duration::from_secs(15), || pair.holders() == ["n1", "n2"]),
        "both nodes hold {VIP} during the split: {:?}\n{}",
        pair.holders(),
        pair.keepalived_logs()
    );
    let adopt_log = pair.nodes[1].root().join("vrrp.state.adopt");
    assert!(
        wait_for(Duration::from_secs(15), || std::fs::read_to_string(&adopt_log)
            .unwrap_or_default()
            .contains("adopted 1 message(s)")),
        "node 2 adopts node 1's queued message: {:?}",
        std::fs::read_to_string(&adopt_log)
    );
    // queue_mirror_unreachable = defer: neither node accepts what the other cannot hold;
    // to each node's own address and through the service address, the client gets 451.
    for (host, id) in [
        (node_addr(0), "sd-n1"),
        (node_addr(1), "sd-n2"),
        (VIP.to_string(), "sd-vip"),
    ] {
        assert_eq!(send_code(&pair, &host, id), 451, "{id} through {host} during the split");
    }
    for n in &pair.nodes {
        assert!(
            n.inst.log_count(": defer: no copy on 198.18.1.") >= 1,
            "{} logs why it refused\n{}",
            n.name,
            n.inst.log()
        );
    }

    // Healed: node 1 alone holds the address; hearing node 2 again, node 1's mirror asks
    // what node 2 adopted and removes it from its own queue (its qmgr still held).
    pair.lan.set_isolated("n1", false);
    pair.lan.set_isolated("n2", false);
    pair.wait_holder("n1", Duration::from_secs(15));
    assert!(
        wait_for(Duration::from_secs(15), || pair.nodes[0]
            .inst
            .log_count("while this node was away; removed from")
            == 1),
        "node 1 removes the message node 2 adopted\n{}",
        pair.nodes[0].inst.log()
    );
    assert!(pair.nodes[0].queued().is_empty(), "{:?}", pair.nodes[0].queued());
    signal(qmgr1, nix::sys::signal::Signal::SIGCONT);
    // The 451s were honest: what was refused is in no mailbox; the rest is on both.
    wait_converged(&pair, &["sd-0", "sd-queued"], Duration::from_secs(40));
    // The client sends the refused ones again: accepted now, each delivered once.
    for id in ["sd-n1", "sd-n2", "sd-vip"] {
        assert!(
            wait_for(Duration::from_secs(15), || pair.send(id).status.success()),
            "{id} accepted after the heal"
        );
    }
    wait_converged(
        &pair,
        &["sd-0", "sd-queued", "sd-n1", "sd-n2", "sd-vip"],
        Duration::from_secs(40),
    );
    let n1 = pair.imap_state("n1", "127.0.0.1");
    let n2 = pair.imap_state("n2", "127.0.0.1");
    assert_eq!(n1, n2, "both nodes show the reader the same mailbox");
    assert!(
        wait_for(Duration::from_secs(20), || pair
            .nodes
            .iter()
            .all(|n| n.mirror_copies() == 0)),
        "copies left: n1 {}, n2 {}\n{}",
        pair.nodes[0].mirror_copies(),
        pair.nodes[1].mirror_copies(),
        copies_and_their_log(&pair)
    );
    println!("split brain in defer mode: {:.1} s", t0.elapsed().as_secs_f64());
}
