//! SMTP replies as a client reads them: `250-first line` ... `250 last line`, with the
//! enhanced status code (RFC 3463) split off when the server sends one. Reading is
//! bounded: at most [`MAX_LINE`] bytes a line and [`MAX_LINES`] lines a reply, so a
//! hostile server cannot make us buffer without end.

use postern_lib::dsn::Dsn;
use postern_lib::line::{LineRead, LineReader};
use std::io::{self, Read};

/// Longest reply line accepted (RFC 5321 allows 512; servers exceed it in practice).
pub const MAX_LINE: usize = 2048;
/// Most lines in one reply.
pub const MAX_LINES: usize = 100;

/// A complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code (`2.1.5`), when given.
    pub enhanced: Option<String>,
    /// The text lines, without code and enhanced code.
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    /// The enhanced code, or one derived from the basic code's class (`451` → `4.0.0`).
    pub fn dsn(&self) -> Dsn {
        self.enhanced
            .as_deref()
            .and_then(|e| e.parse().ok())
            .unwrap_or(Dsn::of_reply(self.code))
    }
    /// The reply on one line, as logs and bounces quote it: `550 5.1.1 <x>: unknown`.
    pub fn one_line(&self) -> String {
        let text = self.lines.join(" ");
        match &self.enhanced {
            Some(e) => format!("{} {e} {text}", self.code),
            None => format!("{} {text}", self.code),
        }
    }
}

/// Reads one reply. A malformed line is an `InvalidData` error.
pub fn read_reply<R: Read>(r: &mut LineReader<R>) -> io::Result<Reply> {
    let mut lines = Vec::new();
    let mut code = None;
    let mut enhanced = None;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_line(&mut buf)? {
            LineRead::Line { .. } => {}
            LineRead::TooLong => return Err(bad("reply line too long")),
            LineRead::Eof | LineRead::Truncated => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by server",
                ));
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let digits = line
            .get(..3)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad("no reply code"))?;
        let this: u16 = digits.parse().map_err(|_| bad("no reply code"))?;
        if !(200..600).contains(&this) || code.is_some_and(|c| c != this) {
            return Err(bad("inconsistent reply code"));
        }
        code = Some(this);
        let sep = line.as_bytes().get(3).copied();
        let mut text = line.get(4..).unwrap_or("").to_string();
        if let Some((first, rest)) = text.split_once(' ')
            && is_enhanced(first, this)
        {
            enhanced.get_or_insert_with(|| first.to_string());
            text = rest.to_string();
        } else if is_enhanced(&text, this) {
            enhanced.get_or_insert_with(|| text.clone());
            text.clear();
        }
        lines.push(text);
        match sep {
            Some(b'-') if lines.len() < MAX_LINES => {}
            Some(b'-') => return Err(bad("reply has too many lines")),
            Some(b' ') | None => break,
            _ => return Err(bad("bad reply separator")),
        }
    }
    Ok(Reply {
        code: code.unwrap_or(0),
        enhanced,
        lines,
    })
}

fn is_enhanced(s: &str, code: u16) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0].parse::<u16>().ok() == Some(code / 100)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed server reply: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> io::Result<Reply> {
        read_reply(&mut LineReader::new(s.as_bytes(), MAX_LINE))
    }

    #[test]
    fn multiline_with_enhanced_codes() {
        let r = parse("250-mx.example.test\r\n250-PIPELINING\r\n250 2.0.0 STARTTLS\r\n").unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, ["mx.example.test", "PIPELINING", "STARTTLS"]);
        assert_eq!(r.enhanced.as_deref(), Some("2.0.0"));
        let r = parse("550 5.1.1 <bob@x>: Recipient address rejected\r\n").unwrap();
        assert_eq!(r.dsn(), "5.1.1");
        assert_eq!(r.one_line(), "550 5.1.1 <bob@x>: Recipient address rejected");
        assert_eq!(parse("451 try later\r\n").unwrap().dsn(), "4.0.0");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for s in [
            "",
            "25",
            "abc def\r\n",
            "250-a\r\n251 b\r\n",
            "999 x\r\n",
            "250*x\r\n",
            "250-a\r\n",
        ] {
            assert!(parse(s).is_err(), "{s:?}");
        }
    }
}
