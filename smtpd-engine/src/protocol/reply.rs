//! SMTP replies: a code, an enhanced status code (RFC 3463) and text, written as one or
//! more `CODE-TEXT` lines. Every reply the session sends is built here, so the format and
//! the sanitising of text (no CR, LF or control bytes from a peer) live in one place.

use postern_lib::dsn::Dsn;
use std::fmt::Write as _;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// Lines of text; the enhanced code (when there is one) is already in front of each.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply `CODE DSN TEXT`.
    pub fn new(code: u16, dsn: Dsn, text: impl AsRef<str>) -> Reply {
        Reply {
            code,
            lines: vec![format!("{dsn} {}", text.as_ref())],
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO, 354).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply { code, lines }
    }

    /// Whether this is an error (4xx or 5xx), counted against the error limit.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        let mut s = String::new();
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let clean: String = text
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(900)
                .collect();
            let _ = write!(s, "{}{sep}{clean}\r\n", self.code);
        }
        out.extend_from_slice(s.as_bytes());
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

/// The replies that several command families share.
pub mod common {
    use super::{Dsn, Reply};

    /// 250 2.0.0 Ok.
    pub fn ok() -> Reply {
        Reply::new(250, Dsn::OK, "Ok")
    }
    /// A syntax error in the arguments.
    pub fn syntax(usage: &str) -> Reply {
        Reply::new(501, Dsn::INVALID_ARGUMENTS, format!("Syntax: {usage}"))
    }
    /// A command out of sequence.
    pub fn sequence(text: &str) -> Reply {
        Reply::new(503, Dsn::INVALID_COMMAND, format!("Error: {text}"))
    }
    /// 421, closing.
    pub fn closing(dsn: Dsn, text: &str) -> Reply {
        Reply::new(421, dsn, text)
    }
    /// Cleanup or another local service failed: try again later.
    pub fn local_error() -> Reply {
        Reply::new(451, Dsn::MAIL_SYSTEM, "Error: queue file write error")
    }
}
