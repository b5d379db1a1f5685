//! PREVIEW (RFC 8970): a short plain-text preview of a message, as Dovecot makes its
//! snippet: the first text part (text/plain, else text/html with its markup taken out),
//! its transfer encoding and charset decoded (by mail-parser), quoted lines (`>`) left
//! out, every run of white space and control characters one space, at most
//! [`PREVIEW_CHARS`] characters.
//!
//! Bounded: only the first [`PREVIEW_READ`] bytes of a message are read and parsed, so a
//! preview costs the same for a 50 MB message as for a 50 KB one; a text part that starts
//! after them (behind a large attachment) gives an empty preview. Previews are made each
//! time they are asked for, so `PREVIEW (LAZY)` (RFC 8970 §3.1) is answered as `PREVIEW`.

/// Most bytes of a message read to make its preview.
pub const PREVIEW_READ: usize = 32 * 1024;
/// Most characters in a preview (RFC 8970 §2: at most 256).
pub const PREVIEW_CHARS: usize = 256;

/// The preview of a message of which `prefix` is the start (at most [`PREVIEW_READ`]
/// bytes of it are looked at).
pub fn of(prefix: &[u8]) -> String {
    let prefix = &prefix[..prefix.len().min(PREVIEW_READ)];
    let Some(msg) = mail_parser::MessageParser::default().parse(prefix) else {
        return String::new();
    };
    match msg.body_text(0) {
        Some(text) => collapse(&text),
        None => String::new(),
    }
}

/// `text` without quoted lines, its white space collapsed, cut at [`PREVIEW_CHARS`].
pub fn collapse(text: &str) -> String {
    let mut out = String::new();
    let mut n = 0;
    let mut space = false;
    for line in text.lines() {
        if line.trim_start().starts_with('>') {
            continue;
        }
        for ch in line.chars() {
            if ch.is_whitespace() || ch.is_control() {
                space = n > 0;
                continue;
            }
            if n + usize::from(space) >= PREVIEW_CHARS {
                return out;
            }
            if space {
                out.push(' ');
                n += 1;
                space = false;
            }
            out.push(ch);
            n += 1;
        }
        space = n > 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_skips_quotes_and_cuts_at_256_characters() {
        assert_eq!(
            collapse("  Hello,\r\n\r\n\tworld  \r\n> quoted\r\nbye\r\n"),
            "Hello, world bye"
        );
        let long = "é".repeat(300);
        let p = collapse(&long);
        assert_eq!(p.chars().count(), 256);
        assert_eq!(collapse(&format!("{} b", "a".repeat(255))), "a".repeat(255));
    }

    #[test]
    fn decodes_the_first_text_part_of_a_bounded_prefix() {
        let m = b"Subject: x\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
                  Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9   ouvert\r\n";
        assert_eq!(of(m), "Caf\u{e9} ouvert");
        let html = b"Content-Type: text/html\r\n\r\n<html><body><p>Hi <b>there</b></p></body></html>\r\n";
        assert_eq!(of(html), "Hi there");
        // a text part past the bytes read is not seen
        let mut big = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
                        Content-Type: application/octet-stream\r\n\r\n"
            .to_vec();
        big.extend(std::iter::repeat_n(b'x', PREVIEW_READ));
        big.extend_from_slice(b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nlate\r\n--b--\r\n");
        assert_eq!(of(&big), "");
    }
}
