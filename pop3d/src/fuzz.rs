//! The fuzz harness (`fuzz/fuzz_targets/pop3_driver.rs`, `driver_cores.rs`): pop3d's
//! protocol core on lib's connection driver, fed arbitrary bytes by the driver's in-memory
//! client ([`postern_lib::skeleton::conn::memory`]), which sends them in chunks and reads
//! the answers through a window of varying size (sometimes not at all). Checks: never a
//! panic, never logged in (auth is not there), never more output held than the pre-login
//! bound plus one reply, never more input than the stated bound.

use crate::conn::{PRELOGIN_HIGH_WATER, Pop3Conn};
use crate::session::{Security, Session};
use postern_lib::skeleton::conn::{Protocol, memory};
use std::time::Duration;

/// The largest single reply before login (CAPA) is far below this.
const ONE_REPLY: usize = 4096;

/// One fuzz input: byte 0 sets the chunk size, byte 1 the read window, byte 2 whether
/// cleartext passwords are allowed; the rest is what the client sends.
pub fn fuzz_prelogin(data: &[u8]) {
    let [a, b, c, rest @ ..] = data else { return };
    let session = Session::new(Security {
        tls: false,
        tls_available: false,
        plaintext_ok: c & 1 == 1,
    });
    let proto = Pop3Conn::new(session, None, None, None, Duration::from_secs(60));
    let chunk = 1 + usize::from(*a) * 8;
    memory::run(proto, rest, chunk, usize::from(*b) * 64, |conn| {
        let limits = conn.proto.limits();
        assert!(conn.pending_output() <= limits.output.max(PRELOGIN_HIGH_WATER) + ONE_REPLY);
        assert!(conn.proto.session.user.is_none(), "logged in without auth");
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
