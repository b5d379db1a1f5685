//! Issue 15, POP3 through the proxy: a session on the proxy of mailbox server A that
//! RETRs and DELEs half the messages leaves both backends without exactly those; with B
//! stopped during the session and started afterwards, B is in step before the proxy on B
//! serves (it has the replicator merge the user before its first answer). Built with
//! examples/redundant (tests/src/redundant.rs); the backends are read directly (their
//! Maildirs, and their own pop3d on loopback).
//!
//! Needs root, iproute2, dnsmasq, openssl, python3 and a build with the hubs' copies, the
//! replicator and the proxy (skipped with the reason recorded, failed under CI=true).

use postern_tests::redundant::{Cluster, addr_of, missing_parts, output_text};
use postern_tests::*;
use std::collections::BTreeSet;

/// The proxy's POP3 port.
const PROXY_POP3: u16 = 1100;

/// A POP3 session through the proxy on `host` from the client: STAT, then RETR and DELE of
/// messages 1..=`dele`, QUIT; returns the Message-IDs of the messages deleted (from the
/// RETRed bytes) and the count STAT gave.
fn retr_and_dele(cluster: &Cluster, host: &str, dele: usize) -> (usize, Vec<String>) {
    let script = "import poplib, re, sys\n\
        p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=30)\n\
        p.user('alice')\np.pass_('alice-pw')\n\
        print('STAT', p.stat()[0])\n\
        for i in range(1, int(sys.argv[3]) + 1):\n    \
            body = b'\\n'.join(p.retr(i)[1])\n    \
            print('DELE', re.search(rb'(?i)message-id:\\s*<([^>]*)>', body).group(1).decode())\n    \
            assert p.dele(i).startswith(b'+OK')\n\
        assert p.quit().startswith(b'+OK')\n";
    let out = cluster.python(
        "client",
        script,
        &[addr_of(host), &PROXY_POP3.to_string(), &dele.to_string()],
    );
    assert!(
        out.status.success(),
        "POP3 through the proxy on {host}: {}",
        output_text(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stat = text
        .lines()
        .find_map(|l| l.strip_prefix("STAT "))
        .and_then(|n| n.trim().parse().ok())
        .expect("STAT line");
    let deleted = text
        .lines()
        .filter_map(|l| l.strip_prefix("DELE "))
        .map(str::to_string)
        .collect();
    (stat, deleted)
}

/// The Message-IDs in alice's INBOX on mailbox server `host`, from its disk.
fn on_disk(cluster: &Cluster, host: &str) -> BTreeSet<String> {
    let ids = cluster.message_ids(host, "alice", "INBOX");
    assert!(ids.values().all(|&n| n == 1), "{host}: a message twice: {ids:?}");
    ids.into_keys().collect()
}

#[test]
fn pop3_through_the_proxy_changes_both_backends_and_a_stopped_one_catches_up_before_serving() {
    if !Cluster::can_run() {
        return;
    }
    if let Some(why) = missing_parts(&["hubs", "replicator", "proxy"]) {
        skip(&why);
        return;
    }
    let cluster = Cluster::up("pst-rp-");
    let ids: BTreeSet<String> = cluster.deliver_to_both("pop", 10, "alice").into_iter().collect();

    // Through the proxy on A, both up: the backends agree on UIDLs.
    let via_a = cluster.pop3_state("client", addr_of("mba"), PROXY_POP3, "alice", "alice-pw");
    assert_eq!(via_a.len(), 10);
    let mut backend_a = cluster.backend_pop3("mba", "alice", "alice-pw");
    let mut backend_b = cluster.backend_pop3("mbb", "alice", "alice-pw");
    backend_a.sort();
    backend_b.sort();
    assert_eq!(backend_a, backend_b, "A and B give each message the same UIDL");

    // B stops; a session through the proxy on A RETRs and DELEs half.
    cluster.node("mbb", "stop");
    let (stat, deleted) = retr_and_dele(&cluster, "mba", 5);
    assert_eq!((stat, deleted.len()), (10, 5));
    let kept: BTreeSet<String> = ids.iter().filter(|id| !deleted.contains(id)).cloned().collect();
    assert_eq!(on_disk(&cluster, "mba"), kept, "A lacks exactly the deleted messages");
    assert_eq!(on_disk(&cluster, "mbb"), ids, "B was stopped: it still has all");

    // B comes back; the proxy on B serves only once B is in step: its first answer already
    // lacks the deleted messages, with A's UIDLs.
    cluster.node("mbb", "start");
    let via_b = cluster.pop3_state("client", addr_of("mbb"), PROXY_POP3, "alice", "alice-pw");
    let want: Vec<(String, String)> = via_a.iter().filter(|(_, id)| kept.contains(id)).cloned().collect();
    assert_eq!(via_b, want, "the proxy on B, right after B started");
    assert_eq!(on_disk(&cluster, "mbb"), kept, "B lacks exactly the deleted messages");

    // Both up: a DELE through the proxy on B is on A when QUIT has been answered.
    let (stat, deleted2) = retr_and_dele(&cluster, "mbb", 1);
    assert_eq!((stat, deleted2.len()), (5, 1));
    let kept2: BTreeSet<String> = kept.iter().filter(|id| !deleted2.contains(id)).cloned().collect();
    assert_eq!(
        on_disk(&cluster, "mba"),
        kept2,
        "A, as soon as the proxy on B answered QUIT"
    );
    assert_eq!(on_disk(&cluster, "mbb"), kept2);
    let mut a = cluster.backend_pop3("mba", "alice", "alice-pw");
    let mut b = cluster.backend_pop3("mbb", "alice", "alice-pw");
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(a.len(), 4);
}
