//! The framed-IPC server's duties, tested once against the generic server with a real
//! mio loop and real Unix socket pairs: back-pressure, the request size bound, deferred
//! replies, and the connect/disconnect callbacks.

use super::*;
use crate::ipc::codec::{Decoder, Encoder, Frame};
use mio::{Events, Poll};
use serde_json::{Value, json};
use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream as StdStream;
use std::sync::{Arc, Mutex};

/// Echoes `{"type":"echo"}` at once; defers `{"type":"later"}` until the next tick.
#[derive(Default)]
struct Test {
    later: Vec<(ClientId, Value)>,
    connected: Vec<ClientId>,
    disconnected: Vec<ClientId>,
}

impl Handler for Test {
    type Request = Value;
    type Reply = Value;
    fn connected(&mut self, _out: &mut Outbox<Value>, client: ClientId) {
        self.connected.push(client);
    }
    fn request(&mut self, _out: &mut Outbox<Value>, client: ClientId, req: Value) -> Answer<Value> {
        match req["type"].as_str() {
            Some("echo") => Answer::Reply(req),
            Some("later") => {
                self.later.push((client, req));
                Answer::Deferred
            }
            _ => Answer::Refuse("unknown request".into()),
        }
    }
    fn disconnected(&mut self, _out: &mut Outbox<Value>, client: ClientId) {
        self.disconnected.push(client);
    }
    fn tick(&mut self, out: &mut Outbox<Value>, _now: Instant) {
        for (c, r) in self.later.drain(..) {
            out.reply(c, r);
        }
    }
}

const MAX_OUTPUT: usize = 64 * 1024;

struct Rig {
    poll: Poll,
    server: Server<Test>,
}

impl Rig {
    fn new() -> Rig {
        let config = Config {
            name: "test",
            protocol: "test",
            version: 1,
            max_request: 4096,
            max_output: MAX_OUTPUT,
            idle_timeout: None,
        };
        Rig {
            poll: Poll::new().unwrap(),
            server: Server::new(config, Test::default()),
        }
    }

    /// A connected client (non-blocking) that has sent its hello, and its id.
    fn client(&mut self) -> (StdStream, ClientId) {
        let (ours, theirs) = StdStream::pair().unwrap();
        let id = self.server.add_client(self.poll.registry(), theirs).unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut hello = Vec::new();
        Encoder::hello("test", 1, &mut hello).unwrap();
        (&ours).write_all(&hello).unwrap();
        (ours, id)
    }

    /// Runs the loop until no event came for 20 ms.
    fn pump(&mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            self.poll.poll(&mut events, Some(Duration::from_millis(20))).unwrap();
            if events.is_empty() {
                return;
            }
            for e in events.iter() {
                self.server.on_ready(self.poll.registry(), e.token());
            }
        }
    }
}

fn request(kind: &str, n: usize, pad: usize) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::message(&json!({"type": kind, "n": n, "pad": "x".repeat(pad)}), &mut out).unwrap();
    out
}

/// Reads what is there; the frames after the hello, and whether the peer closed.
fn read_frames(sock: &mut StdStream, dec: &mut Decoder) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return (frames, true),
            Ok(n) => {
                dec.push(&buf[..n]);
                while let Some(f) = dec.next_frame().unwrap() {
                    frames.push(f);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (frames, false),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (frames, true),
            Err(e) => panic!("{e}"),
        }
    }
}

fn numbers(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| f.message::<Value>().ok())
        .filter_map(|v| v["n"].as_u64())
        .collect()
}

#[test]
fn a_client_that_never_reads_is_held_to_the_output_bound_and_loses_nothing() {
    let mut rig = Rig::new();
    let (mut lazy, lazy_id) = rig.client();
    // Requests whose replies (~1 KiB each) far exceed the socket buffers and the bound.
    let mut sent = 0;
    let mut stuck = 0;
    while stuck < 5 && sent < 20_000 {
        let req = request("echo", sent, 1000);
        match lazy.write(&req) {
            Ok(n) if n == req.len() => {
                sent += 1;
                stuck = 0;
            }
            Ok(n) => {
                // Finish the frame blocking-free by pumping until it fits.
                let mut rest = &req[n..];
                while !rest.is_empty() {
                    rig.pump();
                    match lazy.write(rest) {
                        Ok(m) => rest = &rest[m..],
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                sent += 1;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                rig.pump();
                stuck += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    rig.pump();
    // The client asked for far more than the bound (the rest sits in the kernel's buffers
    // and the client's own), the server filled its buffer to the bound and stopped there.
    assert!(sent * 1000 > 4 * MAX_OUTPUT, "the sockets took only {sent} requests");
    let (input, output) = rig.server.buffered(lazy_id).expect("still connected");
    assert!(output <= MAX_OUTPUT + 2048, "holds {output} bytes of replies");
    assert!(output >= MAX_OUTPUT - 2048, "holds only {output} bytes of replies");
    assert!(input <= 4096 + HEADER, "holds {input} bytes of requests");
    // Another client is served meanwhile.
    let (mut other, _) = rig.client();
    other.write_all(&request("echo", 7, 10)).unwrap();
    rig.pump();
    let mut dec = Decoder::new();
    let (frames, _) = read_frames(&mut other, &mut dec);
    assert_eq!(numbers(&frames), vec![7]);
    // Once the lazy client reads, every reply comes, in order.
    let mut dec = Decoder::new();
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let (frames, closed) = read_frames(&mut lazy, &mut dec);
        got.extend(numbers(&frames));
        assert!(!closed);
        if got.len() == sent {
            break;
        }
        rig.pump();
    }
    assert_eq!(got, (0..sent as u64).collect::<Vec<_>>());
}

const HEADER: usize = crate::ipc::HEADER_LEN;

/// Log lines written while `f` runs.
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt().with_writer(move || w.clone()).finish();
    tracing::subscriber::with_default(sub, f);
    String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned()
}

#[test]
fn an_oversize_request_is_refused_before_it_is_read_and_the_client_dropped() {
    let mut rig = Rig::new();
    let (mut big, id) = rig.client();
    let (mut fine, _) = rig.client();
    let log = logged(|| {
        // Announces 1 MiB against a 4 KiB bound; only the header is sent.
        big.write_all(&[0, 0x10, 0, 0, b'M']).unwrap();
        rig.pump();
    });
    assert!(log.contains("test client: ") && log.contains("too large"), "{log}");
    assert_eq!(rig.server.buffered(id), None);
    assert_eq!(rig.server.handler().disconnected, vec![id]);
    let mut dec = Decoder::new();
    let (_, closed) = read_frames(&mut big, &mut dec);
    assert!(closed);
    // A request that fits is answered.
    fine.write_all(&request("echo", 1, 3000)).unwrap();
    rig.pump();
    let (frames, _) = read_frames(&mut fine, &mut Decoder::new());
    assert_eq!(numbers(&frames), vec![1]);
}

#[test]
fn a_deferred_reply_comes_after_other_clients_were_served_and_keeps_order() {
    let mut rig = Rig::new();
    let (mut slow, _) = rig.client();
    let (mut quick, _) = rig.client();
    // The slow client's second request waits behind its deferred first one.
    let mut two = request("later", 1, 0);
    two.extend(request("echo", 2, 0));
    slow.write_all(&two).unwrap();
    quick.write_all(&request("echo", 3, 0)).unwrap();
    rig.pump();
    let mut slow_dec = Decoder::new();
    let (frames, _) = read_frames(&mut quick, &mut Decoder::new());
    assert_eq!(numbers(&frames), vec![3]);
    let (frames, _) = read_frames(&mut slow, &mut slow_dec);
    assert_eq!(numbers(&frames), Vec::<u64>::new());
    rig.server.on_tick(rig.poll.registry(), Instant::now());
    rig.pump();
    let (frames, _) = read_frames(&mut slow, &mut slow_dec);
    assert_eq!(numbers(&frames), vec![1, 2]);
}

#[test]
fn connect_and_disconnect_callbacks_fire_and_a_late_reply_to_a_gone_client_is_dropped() {
    let mut rig = Rig::new();
    let (a, a_id) = rig.client();
    let (mut b, b_id) = rig.client();
    assert_eq!(rig.server.handler().connected, vec![a_id, b_id]);
    assert_eq!(rig.server.clients(), 2);
    drop(a);
    rig.pump();
    assert_eq!(rig.server.handler().disconnected, vec![a_id]);
    // b waits for a deferred reply, then goes away; the tick's reply is dropped.
    b.write_all(&request("later", 9, 0)).unwrap();
    rig.pump();
    b.shutdown(std::net::Shutdown::Both).unwrap();
    rig.pump();
    assert_eq!(rig.server.handler().disconnected, vec![a_id, b_id]);
    rig.server.on_tick(rig.poll.registry(), Instant::now());
    assert_eq!(rig.server.clients(), 0);
    // A new client gets a new id.
    let (_c, c_id) = rig.client();
    assert!(c_id != a_id && c_id != b_id);
}
