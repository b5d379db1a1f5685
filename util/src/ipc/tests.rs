use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::thread;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Lookup {
        key: String,
    },
    Deliver {
        queue_id: String,
        recipients: Vec<String>,
        size: u64,
    },
    Quit,
}

fn pair() -> (IpcStream, IpcStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (IpcStream::new(a), IpcStream::new(b))
}

/// The raw socket of one end, to write arbitrary bytes.
fn raw_pair() -> (UnixStream, IpcStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (a, IpcStream::new(b))
}

fn frame(k: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.push(k);
    v.extend_from_slice(payload);
    v
}

#[test]
fn messages_round_trip_and_are_json_objects() {
    let (mut a, mut b) = pair();
    let msgs = vec![
        Request::Lookup { key: "alice".into() },
        Request::Deliver {
            queue_id: "0Rk3Xq1Z9a01b2c3".into(),
            recipients: vec!["a@x".into(), "b@y".into()],
            size: 1234,
        },
        Request::Quit,
    ];
    for m in &msgs {
        a.send(m).unwrap();
    }
    for m in &msgs {
        assert_eq!(&b.recv::<Request>().unwrap(), m);
    }
    // The documented wire form.
    let (mut raw, mut ipc) = {
        let (x, y) = UnixStream::pair().unwrap();
        (x, IpcStream::new(y))
    };
    ipc.send(&Request::Quit).unwrap();
    let mut buf = [0u8; 5 + 15];
    raw.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..], &frame(b'M', br#"{"type":"quit"}"#)[..]);
}

#[test]
fn handshake_matches_and_mismatches() {
    let (mut a, mut b) = pair();
    let t = thread::spawn(move || b.handshake("cleanup", 1).map(|()| b));
    a.handshake("cleanup", 1).unwrap();
    let mut b = t.join().unwrap().unwrap();
    a.send(&Request::Quit).unwrap();
    assert_eq!(b.recv::<Request>().unwrap(), Request::Quit);

    for (proto, version) in [("cleanup", 2), ("qmgr", 1)] {
        let (mut a, mut b) = pair();
        let t = thread::spawn(move || b.handshake(proto, version));
        let err = a.handshake("cleanup", 1).unwrap_err();
        match err {
            IpcError::Version { ours, theirs } => {
                assert_eq!(ours, "cleanup/1");
                assert_eq!(theirs, format!("{proto}/{version}"));
            }
            e => panic!("unexpected {e:?}"),
        }
        assert!(matches!(t.join().unwrap(), Err(IpcError::Version { .. })));
    }
}

#[test]
fn client_and_server_constructors_handshake_with_timeouts() {
    let (a, b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || IpcStream::server(b, "master-control", 1, Some(Duration::from_secs(5))));
    let mut client = IpcStream::client(a, "master-control", 1, Some(Duration::from_secs(5))).unwrap();
    let mut server = t.join().unwrap().unwrap();
    assert_eq!(client.get_ref().read_timeout().unwrap(), Some(Duration::from_secs(5)));
    assert_eq!(server.get_ref().write_timeout().unwrap(), Some(Duration::from_secs(5)));
    client.send(&Request::Quit).unwrap();
    assert_eq!(server.recv::<Request>().unwrap(), Request::Quit);

    // A server that never answers: the client's handshake times out instead of hanging.
    let (a, _b) = UnixStream::pair().unwrap();
    assert!(matches!(
        IpcStream::client(a, "master-control", 1, Some(Duration::from_millis(50))),
        Err(IpcError::Timeout)
    ));
}

#[test]
fn big_data_stream_in_chunks() {
    let (mut a, mut b) = pair();
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let expected = data.clone();
    let t = thread::spawn(move || {
        a.send(&Request::Deliver {
            queue_id: "q".into(),
            recipients: vec![],
            size: data.len() as u64,
        })
        .unwrap();
        a.send_data(&data).unwrap();
        a.send_end().unwrap();
        // A writer-based stream, copied from a reader, right after.
        let mut w = a.data_writer();
        std::io::copy(&mut &data[..1_000_001], &mut w).unwrap();
        w.finish().unwrap();
        a.send(&Request::Quit).unwrap();
    });
    let Request::Deliver { size, .. } = b.recv::<Request>().unwrap() else {
        panic!()
    };
    let mut got = Vec::new();
    let mut r = b.data_reader(size);
    r.read_to_end(&mut got).unwrap();
    assert!(r.is_done());
    assert_eq!(r.total(), size);
    assert_eq!(got, expected);
    let mut got2 = Vec::new();
    b.data_reader(u64::MAX).read_to_end(&mut got2).unwrap();
    assert_eq!(got2, &expected[..1_000_001]);
    assert_eq!(b.recv::<Request>().unwrap(), Request::Quit);
    t.join().unwrap();
}

#[test]
fn data_stream_limit_and_finish() {
    let (mut a, mut b) = pair();
    a.send_data(&[1u8; 100]).unwrap();
    a.send_end().unwrap();
    let mut buf = Vec::new();
    let err = b.data_reader(99).read_to_end(&mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(matches!(
        err.into_inner().unwrap().downcast::<IpcError>().map(|e| *e),
        Ok(IpcError::TooLarge { .. })
    ));

    let (mut a, mut b) = pair();
    a.send_end().unwrap(); // an empty stream
    a.send_data(b"abcdef").unwrap();
    a.send_end().unwrap();
    a.send(&Request::Quit).unwrap();
    assert_eq!(b.data_reader(0).finish().unwrap(), 0);
    let mut r = b.data_reader(100);
    let mut two = [0u8; 2];
    r.read_exact(&mut two).unwrap();
    assert_eq!(r.finish().unwrap(), 6);
    assert_eq!(b.recv::<Request>().unwrap(), Request::Quit);
}

#[test]
fn oversize_frames_are_refused_without_reading_them() {
    // 4 GiB announced: refused at the header; the test would hang if the receiver tried to
    // read (or allocate) the payload.
    let (mut raw, mut ipc) = raw_pair();
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, b'M']).unwrap();
    assert!(matches!(
        ipc.recv::<Request>(),
        Err(IpcError::TooLarge { kind: b'M', len: 0xffff_ffff, max }) if max == MAX_MESSAGE_LEN as u64
    ));
    let (mut raw, mut ipc) = raw_pair();
    raw.write_all(&frame(b'D', b"")[..4]).unwrap();
    drop(raw);
    assert!(matches!(ipc.recv::<Request>(), Err(IpcError::Truncated)));
    let (mut raw, mut ipc) = raw_pair();
    raw.write_all(&((MAX_DATA_CHUNK + 1) as u32).to_be_bytes()).unwrap();
    raw.write_all(b"D").unwrap();
    assert!(ipc.data_reader(u64::MAX).read(&mut [0; 10]).is_err());
    let (mut raw, mut ipc) = raw_pair();
    raw.write_all(&frame(b'E', b"x")).unwrap();
    assert!(matches!(
        ipc.data_reader(10).finish(),
        Err(IpcError::TooLarge { kind: b'E', .. })
    ));

    // Sending side: nothing is written for an oversize message.
    let (mut a, mut b) = pair();
    let huge = Request::Lookup {
        key: "x".repeat(MAX_MESSAGE_LEN),
    };
    assert!(matches!(a.send(&huge), Err(IpcError::TooLarge { .. })));
    a.send(&Request::Quit).unwrap();
    assert_eq!(b.recv::<Request>().unwrap(), Request::Quit);
}

#[test]
fn protocol_errors_are_distinguished() {
    let (raw, mut ipc) = raw_pair();
    drop(raw);
    assert!(matches!(ipc.recv::<Request>(), Err(IpcError::Closed)));

    let (mut raw, mut ipc) = raw_pair();
    raw.write_all(&frame(b'M', b"{\"type\":\"qu")[..10]).unwrap();
    drop(raw);
    assert!(matches!(ipc.recv::<Request>(), Err(IpcError::Truncated)));

    let (mut raw, mut ipc) = raw_pair();
    raw.write_all(&frame(b'X', b"")).unwrap();
    assert!(matches!(ipc.recv::<Request>(), Err(IpcError::BadKind(b'X'))));

    let (mut raw, mut ipc) = raw_pair();
    raw.write_all(&frame(b'M', b"{\"type\":\"explode\"}")).unwrap();
    raw.write_all(&frame(b'M', b"not json")).unwrap();
    raw.write_all(&frame(b'D', b"data")).unwrap();
    raw.write_all(&frame(b'M', b"{\"type\":\"quit\"}")).unwrap();
    raw.write_all(&frame(b'E', b"")).unwrap();
    assert!(matches!(ipc.recv::<Request>(), Err(IpcError::Decode(_))));
    assert!(matches!(ipc.recv::<Request>(), Err(IpcError::Decode(_))));
    assert!(matches!(
        ipc.recv::<Request>(),
        Err(IpcError::UnexpectedFrame {
            expected: "message",
            got: b'D'
        })
    ));
    let mut r = ipc.data_reader(100);
    let err = r.read(&mut [0; 4]).unwrap_err();
    assert!(err.to_string().contains("expected a data or end frame"), "{err}");
    assert!(matches!(
        ipc.recv::<Request>(),
        Err(IpcError::UnexpectedFrame { got: b'E', .. })
    ));
}

#[test]
fn read_timeout_is_reported() {
    let (_a, mut b) = pair();
    b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    assert!(matches!(b.recv::<Request>(), Err(IpcError::Timeout)));
}

#[test]
fn file_descriptors_travel_with_messages() {
    let (mut a, mut b) = pair();
    let (pipe_r, pipe_w) = rustix::pipe::pipe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"from a file").unwrap();
    let file = File::open(&path).unwrap();

    a.send(&Request::Quit).unwrap();
    a.send_with_fds(&Request::Lookup { key: "two".into() }, &[pipe_r.as_fd(), file.as_fd()])
        .unwrap();
    a.send(&Request::Quit).unwrap();
    drop(pipe_r);
    drop(file);

    assert_eq!(b.recv_with_fds::<Request>().unwrap().1.len(), 0);
    let (msg, fds) = b.recv_with_fds::<Request>().unwrap();
    assert_eq!(msg, Request::Lookup { key: "two".into() });
    assert_eq!(fds.len(), 2);
    let mut fds = fds.into_iter();
    let received_pipe = File::from(fds.next().unwrap());
    let mut received_file = File::from(fds.next().unwrap());
    assert!(
        rustix::io::fcntl_getfd(&received_pipe)
            .unwrap()
            .contains(rustix::io::FdFlags::CLOEXEC)
    );
    let mut w = File::from(pipe_w);
    w.write_all(b"through the pipe").unwrap();
    drop(w);
    let mut s = String::new();
    (&received_pipe).read_to_string(&mut s).unwrap();
    assert_eq!(s, "through the pipe");
    s.clear();
    received_file.read_to_string(&mut s).unwrap();
    assert_eq!(s, "from a file");
    assert_eq!(b.recv::<Request>().unwrap(), Request::Quit);
}

#[test]
fn unexpected_and_excess_fds_are_refused() {
    let (mut a, mut b) = pair();
    let (r, _w) = rustix::pipe::pipe().unwrap();
    a.send_with_fds(&Request::Quit, &[r.as_fd()]).unwrap();
    a.send(&Request::Quit).unwrap();
    assert!(matches!(b.recv::<Request>(), Err(IpcError::UnexpectedFds(1))));
    // The frame was consumed whole; the stream is still in step.
    assert_eq!(b.recv::<Request>().unwrap(), Request::Quit);

    let many: Vec<_> = (0..=MAX_FDS).map(|_| r.as_fd()).collect();
    assert!(matches!(
        a.send_with_fds(&Request::Quit, &many),
        Err(IpcError::TooManyFds)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn prop_garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..512), as_data in any::<bool>()) {
        let (mut raw, mut ipc) = raw_pair();
        raw.write_all(&garbage).unwrap();
        drop(raw);
        // Every read ends in an error at the latest when the bytes run out.
        for _ in 0..=garbage.len() {
            let result = if as_data {
                let mut sink = Vec::new();
                ipc.data_reader(1 << 20).read_to_end(&mut sink).map(|_| ()).map_err(|_| ())
            } else {
                ipc.recv::<serde_json::Value>().map(|_| ()).map_err(|_| ())
            };
            if result.is_err() {
                break;
            }
        }
        prop_assert!(ipc.recv::<serde_json::Value>().is_err());
    }

    #[test]
    fn prop_data_round_trip(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 0..6)) {
        let (mut a, mut b) = pair();
        for c in &chunks {
            a.send_data(c).unwrap();
        }
        a.send_end().unwrap();
        let mut got = Vec::new();
        b.data_reader(u64::MAX).read_to_end(&mut got).unwrap();
        prop_assert_eq!(got, chunks.concat());
    }
}
