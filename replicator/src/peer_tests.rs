//! The merge over the peer protocol (a real TCP connection to a peer session serving a
//! second store), the HMAC proof, and peers that send garbage.

use crate::merge::{Options, sync_user};
use crate::remote::RemoteReplica;
use crate::replica::{LocalReplica, Replica};
use crate::serve::{ServeConfig, serve_peer};
use postern_mailbox::Store;
use postern_mailbox::flags::{self, Flags};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const SECRET: &[u8] = b"0123456789abcdef-shared";

/// A peer session server on a loopback port serving `base` as node "b".
fn server(base: std::path::PathBuf, secret: &'static [u8]) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let cfg = ServeConfig {
        node: "b".into(),
        secret: secret.to_vec(),
        base,
        max_message: 1 << 20,
        timeout: Duration::from_secs(5),
    };
    let t = std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let s = s.unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            serve_peer(&cfg, s, "test");
        }
    });
    (addr, t)
}

fn append(base: &std::path::Path, folder: &str, n: usize) {
    let store = Store::open(base, "alice").unwrap();
    let mut f = store.folder(folder).unwrap();
    for i in 0..n {
        let uid = f
            .append(
                format!("Subject: {i}\r\n\r\n{}\r\n", "x".repeat(i * 100)).as_bytes(),
                Flags::default(),
                None,
            )
            .unwrap();
        if i % 3 == 0 {
            f.set_flags(
                uid,
                Flags {
                    system: flags::SEEN,
                    keywords: 0,
                },
            )
            .unwrap();
        }
    }
}

type Listing = Vec<(String, Vec<(u32, String, u8)>)>;

fn listing(base: &std::path::Path) -> Listing {
    let store = Store::open(base, "alice").unwrap();
    store
        .list()
        .unwrap()
        .into_iter()
        .map(|n| {
            let f = store.folder(&n).unwrap();
            let m = f
                .messages()
                .iter()
                .map(|m| (m.uid, m.base.clone(), m.flags.system))
                .collect();
            (n, m)
        })
        .collect()
}

#[test]
fn merge_over_the_peer_protocol() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let t0 = std::time::Instant::now();
    append(da.path(), "INBOX", 300);
    eprintln!("append {:?}", t0.elapsed());
    append(db.path(), "Sent", 3);
    let (addr, t) = server(db.path().to_path_buf(), SECRET);
    let mut remote = RemoteReplica::connect(
        &addr,
        "a",
        SECRET,
        Duration::from_secs(5),
        Duration::from_secs(5),
        1 << 20,
    )
    .unwrap();
    assert_eq!(remote.node(), "b");
    remote.open("alice").unwrap();
    let mut local = LocalReplica::open(da.path(), "alice", "a", 1 << 20).unwrap();
    let t0 = std::time::Instant::now();
    let r = sync_user(&mut local, &mut remote, &Options::default()).unwrap();
    eprintln!("sync {:?}", t0.elapsed());
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(listing(da.path()), listing(db.path()));
    let inbox = &listing(db.path())[0].1;
    assert_eq!(inbox.len(), 300);
    assert_eq!(inbox.iter().filter(|m| m.2 & flags::SEEN != 0).count(), 100);
    // again on the same connection: nothing to do
    let r = sync_user(&mut local, &mut remote, &Options::default()).unwrap();
    assert!(!r.changed(), "{r:?}");
    drop(remote);
    // the wrong secret: refused both ways
    let e = RemoteReplica::connect(
        &addr,
        "a",
        b"another secret of 16+",
        Duration::from_secs(5),
        Duration::from_secs(5),
        1 << 20,
    )
    .err()
    .unwrap();
    assert!(e.contains("authentication failed"), "{e}");
    // garbage instead of a hello, then a huge frame: the session ends, the server lives
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff, b'M']).unwrap();
    let _ = s.read_to_end(&mut buf);
    t.join().unwrap();
}

#[test]
fn a_peer_that_answers_garbage_is_an_error_not_a_panic() {
    for garbage in [
        b"220 smtp.example ESMTP\r\n".to_vec(),
        vec![0, 0, 0, 2, b'M', b'{', b'}'],
        vec![0, 0, 0, 0],
        b"\x00\x00\x00\x2a\x4d{\"protocol\":\"replica-peer\",\"version\":1}\x00\x00\x00\x05Mhello".to_vec(),
    ] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = s.write_all(&garbage);
            std::thread::sleep(Duration::from_millis(200));
        });
        let r = RemoteReplica::connect(
            &addr,
            "a",
            SECRET,
            Duration::from_secs(1),
            Duration::from_secs(1),
            1 << 20,
        );
        assert!(r.is_err());
        t.join().unwrap();
    }
}
