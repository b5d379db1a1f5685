//! A protocol core on the generic driver with an in-memory client instead of a socket,
//! for the fuzz targets (`fuzz/fuzz_targets/pop3_driver.rs`, `driver_cores.rs`): the
//! client sends its bytes in chunks and reads the answers through a window of varying
//! size (sometimes not at all), so the driver's framing, back-pressure and write loop run
//! as they do on a socket. [`run`] checks the driver's own bounds after every turn and
//! lets the caller check the protocol's.

use super::{Connection, Deadlines, Protocol, Turn};
use std::io::{self, Read, Write};
use std::time::Duration;

/// The client's end: what it has yet to send, what it has sent that the server has not
/// read, how much more it reads this round, and whether it has finished (end of input).
pub struct Client<'a> {
    rest: &'a [u8],
    sent: Vec<u8>,
    window: usize,
    done: bool,
}

impl Read for Client<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.sent.is_empty() {
            return if self.done {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.sent.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(self.sent.get(..n).unwrap_or_default());
        self.sent.drain(..n);
        Ok(n)
    }
}

impl Write for Client<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.window == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.window);
        self.window -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

thread_local! {
    static POLL: Option<mio::Poll> = mio::Poll::new().ok();
}

/// Runs `proto` greeted and fed `data` in `chunk`-byte pieces, the client reading
/// `window` bytes a round (all of it once everything is sent), until the connection
/// closes or the input is used up. After every turn: the input held is under the
/// protocol's stated bound plus one read, and `check` sees the connection.
pub fn run<P: Protocol>(
    proto: P,
    data: &[u8],
    chunk: usize,
    window: usize,
    mut check: impl FnMut(&Connection<P, Client<'_>>),
) {
    let client = Client {
        rest: data,
        sent: Vec::new(),
        window,
        done: false,
    };
    let deadlines = Deadlines {
        idle: Duration::from_secs(60),
        login: None,
        session: None,
    };
    let chunk = chunk.max(1);
    POLL.with(|poll| {
        let Some(poll) = poll else { return };
        let registry = poll.registry();
        let mut conn = Connection::new(client, None, proto, None, deadlines, mio::Token(1));
        conn.greet(registry);
        for round in 0..(data.len() / chunk + 64) {
            let client = conn.socket();
            let (now, later) = client.rest.split_at(client.rest.len().min(chunk));
            client.sent.extend_from_slice(now);
            client.rest = later;
            client.done = later.is_empty() && round > data.len() / chunk + 2;
            // a client that stops reading now and then, and reads everything at the end
            client.window = if client.done { usize::MAX } else { window };
            let turn = conn.drive(registry);
            // the socket is read 8 KB at a time while less than the bound waits
            assert!(conn.pending_input() < conn.proto.limits().input + 8192);
            check(&conn);
            if turn == Turn::Closed {
                break;
            }
        }
    });
}
