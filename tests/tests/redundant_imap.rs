//! Issue 15, IMAP through the proxy: flag changes, keywords, MOVE and COPY to a folder,
//! EXPUNGE, APPEND, CREATE/RENAME/DELETE and SUBSCRIBE made through the proxy on one
//! mailbox server are on both backends when the proxy has answered (with both up), and a
//! backend that was stopped during the changes is in step when the proxy on it first
//! answers; both ways (B stopped under the proxy on A, then A under the proxy on B).
//! Each backend is read with its own imapd on loopback: folders, UIDVALIDITY, UIDs,
//! Message-IDs, flags and subscriptions must be identical on A and B, and as the proxy
//! shows them. Built with examples/redundant (tests/src/redundant.rs).
//!
//! Needs root, iproute2, dnsmasq, openssl, python3 and a build with the hubs' copies, the
//! replicator and the proxy (skipped with the reason recorded, failed under CI=true).

use postern_tests::redundant::{Cluster, addr_of, flags_in, folders_in, missing_parts};
use postern_tests::*;

/// The proxy's IMAP port.
const PROXY_IMAP: u16 = 1143;

/// `ID@redundant.test`.
fn m(id: &str) -> String {
    format!("{id}@redundant.test")
}

/// Both backends' state, asserted equal to each other and to what the proxy on `via`
/// shows; returns it.
fn in_step(cluster: &Cluster, via: &str) -> Vec<String> {
    let proxy = cluster.imap_state("client", addr_of(via), PROXY_IMAP, "alice", "alice-pw");
    let a = cluster.backend_imap("mba", "alice", "alice-pw");
    let b = cluster.backend_imap("mbb", "alice", "alice-pw");
    assert_eq!(a, b, "A and B differ (A left, B right)");
    assert_eq!(proxy, a, "the proxy on {via} shows what the backends hold");
    a
}

/// The folders of `dump` include each of `present` and none of `absent`.
fn assert_folders(dump: &[String], present: &[&str], absent: &[&str]) {
    let folders = folders_in(dump);
    for f in present {
        assert!(folders.iter().any(|x| x == f), "folder {f} exists: {folders:?}");
    }
    for f in absent {
        assert!(!folders.iter().any(|x| x == f), "no folder {f}: {folders:?}");
    }
}

/// Changes through the proxy on `via`.
fn change(cluster: &Cluster, via: &str, ops: &[&str]) {
    cluster.imap_ops("client", addr_of(via), PROXY_IMAP, "alice", "alice-pw", ops);
}

#[test]
fn imap_changes_through_the_proxy_are_on_both_backends_and_a_stopped_one_catches_up() {
    if !Cluster::can_run() {
        return;
    }
    if let Some(why) = missing_parts(&["hubs", "replicator", "proxy"]) {
        skip(&why);
        return;
    }
    let cluster = Cluster::up("pst-ri-");
    cluster.deliver_to_both("imap", 8, "alice");
    let start = in_step(&cluster, "mba");
    assert_eq!(start.iter().filter(|l| l.starts_with("M INBOX ")).count(), 8);

    // 1. Both up, through the proxy on A.
    let (i0, i1, i2, i3, i4) = (m("imap-0"), m("imap-1"), m("imap-2"), m("imap-3"), m("imap-4"));
    change(
        &cluster,
        "mba",
        &[
            &format!("store {i0} \\Seen \\Flagged"),
            &format!("store {i1} $Work"),
            "create Projects",
            &format!("move {i2} Projects"),
            &format!("copy {i4} Projects"),
            &format!("expunge {i3}"),
            &format!("append INBOX {} \\Seen", m("app-1")),
            "create Tmp",
            "rename Tmp Tmp2",
            "create Gone",
            "delete Gone",
            "subscribe Projects",
        ],
    );
    let s = in_step(&cluster, "mba");
    assert_eq!(
        flags_in(&s, "INBOX", &i0).as_deref(),
        Some("\\Flagged \\Seen"),
        "{s:#?}"
    );
    assert_eq!(flags_in(&s, "INBOX", &i1).as_deref(), Some("$Work"), "{s:#?}");
    assert_eq!(flags_in(&s, "INBOX", &i2), None, "moved away");
    assert!(flags_in(&s, "Projects", &i2).is_some(), "{s:#?}");
    assert!(flags_in(&s, "INBOX", &i4).is_some() && flags_in(&s, "Projects", &i4).is_some());
    assert!(!s.iter().any(|l| l.contains(&i3)), "expunged everywhere: {s:#?}");
    assert_eq!(flags_in(&s, "INBOX", &m("app-1")).as_deref(), Some("\\Seen"));
    assert_folders(&s, &["Projects", "Tmp2"], &["Tmp", "Gone"]);
    assert!(s.contains(&"S Projects".to_string()), "{s:#?}");

    // 2. B stopped during the changes (through the proxy on A), started after: the proxy
    //    on B answers with everything in step.
    cluster.node("mbb", "stop");
    let (i5, i6) = (m("imap-5"), m("imap-6"));
    change(
        &cluster,
        "mba",
        &[
            &format!("unstore {i0} \\Flagged"),
            &format!("store {i5} \\Answered $Todo"),
            &format!("move {i6} Projects"),
            "delete Tmp2",
            "create Later",
            &format!("append Projects {}", m("app-2")),
        ],
    );
    // A's `postern status` says B is behind, and why.
    let row = cluster.replica_peer_row("mba");
    assert_eq!(row.get(1).map(String::as_str), Some("unreachable"), "{row:?}");
    assert!(row.get(3).is_some_and(|n| n != "0"), "users behind: {row:?}");
    cluster.node("mbb", "start");
    let s = in_step(&cluster, "mbb");
    assert!(
        wait_for(std::time::Duration::from_secs(15), || {
            cluster.replica_peer_row("mba").get(1).map(String::as_str) == Some("in")
        }),
        "A sees B in step again: {:?}",
        cluster.replica_peer_row("mba")
    );
    assert_eq!(flags_in(&s, "INBOX", &i0).as_deref(), Some("\\Seen"), "{s:#?}");
    assert_eq!(
        flags_in(&s, "INBOX", &i5).as_deref(),
        Some("$Todo \\Answered"),
        "{s:#?}"
    );
    assert!(flags_in(&s, "INBOX", &i6).is_none() && flags_in(&s, "Projects", &i6).is_some());
    assert!(flags_in(&s, "Projects", &m("app-2")).is_some(), "{s:#?}");
    assert_folders(&s, &["Projects", "Later"], &["Tmp2"]);

    // 3. A stopped during the changes (through the proxy on B), started after.
    cluster.node("mba", "stop");
    let i7 = m("imap-7");
    change(
        &cluster,
        "mbb",
        &[
            &format!("store {i7} \\Seen"),
            &format!("expunge {i1}"),
            "rename Later Later2",
            "unsubscribe Projects",
            &format!("append INBOX {}", m("app-3")),
        ],
    );
    cluster.node("mba", "start");
    let s = in_step(&cluster, "mba");
    assert_eq!(flags_in(&s, "INBOX", &i7).as_deref(), Some("\\Seen"), "{s:#?}");
    assert!(!s.iter().any(|l| l.contains(&i1)), "expunged everywhere: {s:#?}");
    assert!(flags_in(&s, "INBOX", &m("app-3")).is_some(), "{s:#?}");
    assert_folders(&s, &["Projects", "Later2"], &["Later"]);
    assert!(!s.contains(&"S Projects".to_string()), "unsubscribed: {s:#?}");
    // Every message the client knew kept its UID through all of it.
    let uid_of = |dump: &[String], id: &str| {
        dump.iter()
            .find(|l| l.starts_with("M INBOX ") && l.contains(&format!(" {id} ")))
            .map(|l| l.split(' ').nth(2).unwrap_or("").to_string())
    };
    for id in [&i0, &i4, &i5, &i7] {
        assert_eq!(uid_of(&start, id), uid_of(&s, id), "{id} kept its UID");
    }
}
