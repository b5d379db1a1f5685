//! The fuzz harness (`fuzz/fuzz_targets/pop3_driver.rs`): pop3d's protocol core on lib's
//! connection driver, fed arbitrary bytes by an in-memory client that sends them in
//! chunks and reads the answers through a window of varying size (sometimes not at all).
//! Checks: never a panic, never logged in (auth is not there), never more output held than
//! the pre-login bound plus one reply, never more input than the stated bound.

use crate::conn::{PRELOGIN_HIGH_WATER, Pop3Conn};
use crate::session::{Security, Session};
use postern_lib::skeleton::conn::{Connection, Deadlines, Protocol, Turn};
use std::io::{self, Read, Write};
use std::time::Duration;

/// The largest single reply before login (CAPA) is far below this.
const ONE_REPLY: usize = 4096;

/// The client's end: what it has sent that the server has not read, and how much more
/// it reads this round.
struct Client<'a> {
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
    static POLL: mio::Poll = mio::Poll::new().expect("mio poll");
}

/// One fuzz input: byte 0 sets the chunk size, byte 1 the read window, byte 2 whether
/// cleartext passwords are allowed; the rest is what the client sends.
pub fn fuzz_prelogin(data: &[u8]) {
    let [a, b, c, rest @ ..] = data else { return };
    let chunk = 1 + usize::from(*a) * 8;
    let window = usize::from(*b) * 64;
    let session = Session::new(Security {
        tls: false,
        tls_available: false,
        plaintext_ok: c & 1 == 1,
    });
    let proto = Pop3Conn::new(session, None, None, None, Duration::from_secs(60));
    let client = Client {
        rest,
        sent: Vec::new(),
        window,
        done: false,
    };
    let deadlines = Deadlines {
        idle: Duration::from_secs(60),
        login: None,
        session: None,
    };
    POLL.with(|poll| {
        let registry = poll.registry();
        let mut conn = Connection::new(client, None, proto, None, deadlines, mio::Token(1));
        conn.greet(registry);
        for round in 0..(rest.len() + 64) {
            let client = conn.socket();
            let (now, later) = client.rest.split_at(client.rest.len().min(chunk));
            client.sent.extend_from_slice(now);
            client.rest = later;
            client.done = later.is_empty() && round > rest.len() / chunk + 2;
            // a client that stops reading now and then, and reads everything at the end
            client.window = if client.done { usize::MAX } else { window };
            let turn = conn.drive(registry);
            let limits = conn.proto.limits();
            assert!(conn.pending_output() <= limits.output.max(PRELOGIN_HIGH_WATER) + ONE_REPLY);
            // the socket is read 8 KB at a time while less than the bound waits
            assert!(conn.pending_input() < limits.input + 8192);
            assert!(conn.proto.session.user.is_none(), "logged in without auth");
            if turn == Turn::Closed {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::fuzz_prelogin;

    #[test]
    fn sessions_a_client_could_send_keep_the_bounds() {
        let capa = b"CAPA\r\n".repeat(5000);
        let long = [b"USER ".as_slice(), &[b'a'; 5000], b"\r\n"].concat();
        let cases: [(&[u8], &[u8]); 5] = [
            (b"\x00\x01\x01", b"USER a\r\nPASS b\r\nQUIT\r\n"),
            (b"\xff\x00\x00", &capa),
            (b"\x03\x00\x01", &capa),
            (b"\x10\x10\x01", &long),
            (b"\x00\xff\x01", b"AUTH PLAIN\r\nAGIAYg==\r\nSTLS\r\nRETR 1\r\n\r\n"),
        ];
        for (head, body) in cases {
            fuzz_prelogin(&[head, body].concat());
        }
    }
}
