//! The smallest HTTP/1.x server that Prometheus needs: one request per connection,
//! `GET /metrics` (or `HEAD`), anything else refused with the right status.
//!
//! The request head is read with a time limit ([`TIMEOUT`]) and a size limit
//! ([`MAX_REQUEST`]); a longer head gets `431`, a malformed one `400`, another path
//! `404`, another method `405` (with `Allow: GET, HEAD`). The body of a request is never
//! read; every answer closes the connection.

use std::io::{Read, Write};
use std::time::Duration;

/// Largest request head read.
pub const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request, and to take the answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What a client asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (`head`: only the header), in OpenMetrics when the client accepts it.
    Metrics {
        /// HEAD instead of GET.
        head: bool,
        /// `Accept:` names `application/openmetrics-text`.
        open_metrics: bool,
    },
    /// Answer with this status line and a short text.
    Refuse(u16, &'static str),
    /// The client went away or was too slow: no answer.
    Gone,
}

/// Reads and parses one request head from `conn`.
pub fn read_request(conn: &mut impl Read) -> Request {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            return parse(&buf[..end]);
        }
        if buf.len() >= MAX_REQUEST {
            return Request::Refuse(431, "Request Header Fields Too Large");
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return Request::Gone,
            // At most MAX_REQUEST + one chunk is ever held.
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a request head (request line and header fields).
pub fn parse(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Refuse(400, "Bad Request");
    };
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Refuse(400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Request::Refuse(400, "Bad Request");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Request::Refuse(404, "Not Found");
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::Refuse(405, "Method Not Allowed"),
    };
    let open_metrics = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept") && value.contains("application/openmetrics-text")
        })
    });
    Request::Metrics { head, open_metrics }
}

/// Writes a complete answer and closes.
pub fn respond(conn: &mut impl Write, status: u16, reason: &str, content_type: &str, body: &[u8], head: bool) {
    let allow = if status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let header = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(header.as_bytes());
    if !head {
        let _ = conn.write_all(body);
    }
    let _ = conn.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let m = |head, open_metrics| Request::Metrics { head, open_metrics };
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x"), m(false, false));
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0"), m(false, false));
        assert_eq!(parse(b"HEAD /metrics HTTP/1.1"), m(true, false));
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\naccept: application/openmetrics-text; version=1.0.0,text/plain;q=0.5"),
            m(false, true)
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1"),
            Request::Refuse(405, "Method Not Allowed")
        );
        assert_eq!(parse(b"GET / HTTP/1.1"), Request::Refuse(404, "Not Found"));
        assert_eq!(parse(b"GET /metrics HTTP/2"), Request::Refuse(400, "Bad Request"));
        assert_eq!(parse(b"GET /metrics"), Request::Refuse(400, "Bad Request"));
        assert_eq!(parse(b"\xff\xfe"), Request::Refuse(400, "Bad Request"));
    }

    #[test]
    fn bounded_read() {
        let big = vec![b'a'; MAX_REQUEST * 4];
        assert_eq!(
            read_request(&mut &big[..]),
            Request::Refuse(431, "Request Header Fields Too Large")
        );
        assert_eq!(read_request(&mut &b"GET /metrics HTTP/1.1\r\n"[..]), Request::Gone);
        assert_eq!(
            read_request(&mut &b"GET /metrics HTTP/1.1\r\n\r\nbody"[..]),
            Request::Metrics {
                head: false,
                open_metrics: false
            }
        );
    }
}
