//! The fuzz harness (`fuzz/fuzz_targets/driver_cores.rs`): imapd's protocol core
//! ([`ImapConn`] around the session) on lib's connection driver, fed arbitrary bytes by
//! the driver's in-memory client ([`postern_lib::skeleton::conn::memory`]), which sends
//! them in chunks and reads the answers through a window of varying size (sometimes not
//! at all): IMAP's lines and literals framed from the driver's input buffer, STARTTLS,
//! back-pressure and the steps of held-back commands as on a socket. Auth is not there
//! (a password check finds no auth socket: unavailable). Checks: never a panic, never
//! logged in, never more output held than the pre-login bounds plus one answer, never
//! more of a command held than the pre-login line and literal bounds allow.

use crate::conn::{ImapConn, PRELOGIN_MAX_OUT};
use crate::session::{PRELOGIN_MAX_LINE, PRELOGIN_MAX_LITERAL, PRELOGIN_OUTPUT_PAUSE, Session, Settings};
use postern_lib::skeleton::conn::memory;
use std::time::Duration;

/// The largest single answer before login (CAPABILITY, a BAD) is far below this.
const ONE_ANSWER: usize = 4096;

/// One fuzz input: byte 0 sets the chunk size, byte 1 the read window, byte 2 whether the
/// client counts as secure (LOGIN allowed) and whether STARTTLS is offered; the rest is
/// what the client sends.
pub fn fuzz_driver(data: &[u8]) {
    let [a, b, c, rest @ ..] = data else { return };
    let settings = Settings {
        mail_base: std::path::PathBuf::from("/nonexistent"),
        max_literal: 50 * 1024 * 1024,
        max_line: 64 * 1024,
        hostname: "fuzz.example.test".into(),
        starttls: c & 2 != 0,
    };
    let session = Session::new(settings, c & 1 == 0, false);
    let proto = ImapConn::new(session, "fuzz".into(), None, None, Duration::from_secs(60));
    let chunk = 1 + usize::from(*a) * 8;
    // a command: lines and literals up to a line and a literal, then at most one more
    let command = 2 * PRELOGIN_MAX_LINE + 2 * PRELOGIN_MAX_LITERAL as usize + 4;
    memory::run(proto, rest, chunk, usize::from(*b) * 64, |conn| {
        assert!(
            conn.pending_output() <= PRELOGIN_MAX_OUT + PRELOGIN_OUTPUT_PAUSE + ONE_ANSWER,
            "{} bytes of output held before login",
            conn.pending_output()
        );
        assert!(!conn.proto.session.authenticated(), "logged in without auth");
        assert!(conn.proto.session.cmd.len() <= command);
    });
}

#[cfg(test)]
mod tests {
    use super::fuzz_driver;

    #[test]
    fn sessions_a_client_could_send_keep_the_bounds() {
        let caps = b"a CAPABILITY\r\n".repeat(5000);
        let long = [b"a LOGIN ".as_slice(), &[b'a'; 9000], b"\r\n"].concat();
        let cases: [(&[u8], &[u8]); 6] = [
            (
                b"\x00\x01\x00",
                b"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\nb NOOP\r\nc LOGOUT\r\n",
            ),
            (b"\xff\x00\x00", &caps),
            (b"\x03\x00\x01", &caps),
            (b"\x10\x10\x00", &long),
            (b"\x00\xff\x02", b"a STARTTLS\r\nb CAPABILITY\r\n"),
            (
                b"\x07\x20\x00",
                b"a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nb LOGIN {9000}\r\n",
            ),
        ];
        for (head, body) in cases {
            fuzz_driver(&[head, body].concat());
        }
    }
}
