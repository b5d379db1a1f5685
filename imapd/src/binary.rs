//! BINARY (RFC 3516) FETCH items: `BINARY[part]<partial>`, `BINARY.PEEK[part]<partial>`
//! and `BINARY.SIZE[part]` — a leaf part's content with its Content-Transfer-Encoding
//! (base64, quoted-printable) undone; 7bit, 8bit and binary parts as they are; `[]` the
//! whole message. An encoding not known here is `NO [UNKNOWN-CTE]`. Binary parts of an
//! APPENDed message are kept base64-encoded ([`encode_binary_parts`]).

use crate::mime;

/// A parsed BINARY item: (peek, size only, part numbers as written, partial).
pub type BinaryItem = (bool, bool, String, Option<(u64, u64)>);

/// `BINARY[1.2]<0.100>`, `BINARY.PEEK[1]`, `BINARY.SIZE[2]` (upper-cased) parsed; `None`
/// for anything else, including section texts other than part numbers.
pub fn item(upper: &str) -> Option<BinaryItem> {
    let (peek, size, rest) = if let Some(r) = upper.strip_prefix("BINARY.PEEK[") {
        (true, false, r)
    } else if let Some(r) = upper.strip_prefix("BINARY.SIZE[") {
        (true, true, r)
    } else if let Some(r) = upper.strip_prefix("BINARY[") {
        (false, false, r)
    } else {
        return None;
    };
    let close = rest.find(']')?;
    let part = &rest[..close];
    // a part number, or (as Dovecot and imaptest's fetch-binary-mime have them) any
    // section BODY has: TEXT (decoded), HEADER, HEADER.FIELDS[.NOT] (...), n.MIME (as is)
    let mut rest_spec = part;
    let mut numbered = false;
    while let Some((n, r)) = rest_spec.split_once('.').or(Some((rest_spec, ""))) {
        if !n.parse::<u32>().is_ok_and(|n| n > 0) {
            break;
        }
        numbered = true;
        rest_spec = r;
        if r.is_empty() {
            break;
        }
    }
    // (the message's own header, `BINARY[HEADER]`, stays BAD: RFC 3516 has part numbers
    // only, and nothing in a top-level header is encoded)
    let spec_ok = match rest_spec {
        "" | "TEXT" => true,
        "MIME" | "HEADER" => numbered,
        s => numbered && (s.starts_with("HEADER.FIELDS (") || s.starts_with("HEADER.FIELDS.NOT (")),
    };
    if !spec_ok {
        return None;
    }
    let tail = &rest[close + 1..];
    let partial = if tail.is_empty() {
        None
    } else if size {
        return None;
    } else {
        let (a, b) = tail.strip_prefix('<')?.strip_suffix('>')?.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    Some((peek, size, part.to_string(), partial))
}

/// The decoded content of `part` of a message (CRLF line ends): `Ok(None)` when there is
/// no such part, `Err(())` when its encoding is unknown.
#[allow(clippy::result_unit_err)]
pub fn content(tree: &mime::Tree<'_>, part: &str) -> Result<Option<Vec<u8>>, ()> {
    if part.is_empty() {
        return Ok(Some(tree.raw().to_vec()));
    }
    // a header as it is (header fields have no transfer encoding)
    if part.ends_with("MIME") || part.contains("HEADER") {
        return Ok(mime::section_of(tree, part).map(|h| h.into_owned()));
    }
    // TEXT is decoded as its message's header says
    let header = match part.strip_suffix("TEXT") {
        Some(prefix) => format!("{prefix}HEADER"),
        None => format!("{part}.MIME"),
    };
    let (Some(body), Some(header)) = (mime::section_of(tree, part), mime::section_of(tree, &header)) else {
        return Ok(None);
    };
    let fields = mime::fields(&header);
    let cte = mime::field(&fields, "Content-Transfer-Encoding")
        .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
        .unwrap_or_default();
    match cte.as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(Some(body.into_owned())),
        "base64" => Ok(Some(base64_decode(&body))),
        "quoted-printable" => Ok(Some(qp_decode(&body))),
        _ => Err(()),
    }
}

/// Base64 with line breaks and other non-alphabet bytes skipped, padding optional.
fn base64_decode(body: &[u8]) -> Vec<u8> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .collect();
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    // a dangling single character cannot be decoded: drop it
    let usable = clean.len() - usize::from(clean.len() % 4 == 1);
    engine.decode(&clean[..usable]).unwrap_or_default()
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` escapes (either case) undone; white space at
/// the end of a line removed (rule 3); a line ending in `=`, white space after it or not,
/// is a soft line break (rule 5); a `=` followed by anything else is itself. Line ends
/// (CRLF or a bare LF) are kept as CRLF.
fn qp_decode(body: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while !rest.is_empty() {
        let (line, ended) = match memchr::memchr(b'\n', rest) {
            Some(i) => {
                let l = &rest[..i];
                rest = &rest[i + 1..];
                (l.strip_suffix(b"\r").unwrap_or(l), true)
            }
            None => (std::mem::take(&mut rest), false),
        };
        let end = line.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(0, |i| i + 1);
        let line = &line[..end];
        let (line, soft) = match line.strip_suffix(b"=") {
            Some(l) => (l, true),
            None => (line, false),
        };
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            if b == b'='
                && let (Some(h), Some(l)) = (
                    line.get(i + 1).and_then(|&x| hex(x)),
                    line.get(i + 2).and_then(|&x| hex(x)),
                )
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            out.push(b);
            i += 1;
        }
        if ended && !soft {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// An APPENDed message whose leaf parts hold bytes a text literal cannot carry or the
/// store would change — a NUL (RFC 3501 literals exclude it), or a bare LF in a part
/// declared `binary` (the store keeps CRLF line ends) — with those parts base64-encoded (their other header fields
/// kept, `Content-Transfer-Encoding: base64` in place of theirs), as Dovecot keeps a
/// binary APPEND (RFC 3516 `~{n}`): `BINARY[n]` gives the exact bytes back with the
/// exact size, `BODY[n]` the encoded form. `None` when nothing needs it (the common case,
/// found by one scan). Multipart and message/rfc822 containers are never encoded: their
/// leaves are.
pub fn encode_binary_parts(msg: &[u8]) -> Option<Vec<u8>> {
    let nul = |b: &[u8]| memchr::memchr(0, b).is_some();
    let bare_lf = |b: &[u8]| memchr::memchr_iter(b'\n', b).any(|i| i == 0 || b[i - 1] != b'\r');
    if !nul(msg) && !bare_lf(msg) {
        return None;
    }
    let top = mime::parse(msg);
    // (start, end) of each part to encode, and its new text
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut stack = vec![&top];
    while let Some(p) = stack.pop() {
        if !p.children.is_empty() || p.message.is_some() {
            stack.extend(p.children.iter().rev());
            stack.extend(p.message.as_deref());
            continue;
        }
        if p.ctype.0 == "multipart" || p.ctype.0 == "message" {
            continue;
        }
        // a part is its header, then its body (an empty body may be a slice of nothing)
        let Some(start) = (p.header.as_ptr() as usize).checked_sub(msg.as_ptr() as usize) else {
            continue;
        };
        let end = start + p.header.len() + p.body.len();
        if end > msg.len() {
            continue;
        }
        let fields = mime::fields(p.header);
        let cte = mime::field(&fields, "Content-Transfer-Encoding")
            .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
            .unwrap_or_default();
        // a NUL anywhere; a bare LF only in binary content (in text it is a line end,
        // which the store writes as CRLF); encoded parts are what their encoding says
        let raw = match cte.as_str() {
            "" | "7bit" | "8bit" if nul(p.body) => p.body,
            "binary" if nul(p.body) || bare_lf(p.body) => p.body,
            _ => continue,
        };
        let mut text = mime::header_fields(p.header, &["Content-Transfer-Encoding"], true);
        text.truncate(text.len() - 2);
        text.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        base64_lines(&mut text, raw);
        if end == msg.len() {
            text.extend_from_slice(b"\r\n");
        }
        edits.push((start, end, text));
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(msg.len() * 4 / 3 + 64 * edits.len());
    let mut at = 0;
    for (start, end, text) in edits {
        out.extend_from_slice(msg.get(at..start).unwrap_or_default());
        out.extend_from_slice(&text);
        at = end;
    }
    out.extend_from_slice(msg.get(at..).unwrap_or_default());
    Some(out)
}

/// Base64 in lines of 76 characters, CRLF between them (RFC 2045 §6.8).
fn base64_lines(out: &mut Vec<u8>, data: &[u8]) {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    for (i, line) in text.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nend\r\n--b\r\nContent-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\nAw==\r\n--b\r\nContent-Transfer-Encoding: x-uue\r\n\r\nzz\r\n--b--\r\n";

    #[test]
    fn items_parse() {
        assert_eq!(
            item("BINARY[1.2]<0.10>"),
            Some((false, false, "1.2".into(), Some((0, 10))))
        );
        assert_eq!(item("BINARY.SIZE[]"), Some((true, true, String::new(), None)));
        assert_eq!(item("BINARY.PEEK[2]"), Some((true, false, "2".into(), None)));
        assert!(item("BINARY[HEADER]").is_none() && item("BINARY.SIZE[1]<0.1>").is_none());
        assert!(item("BINARY[HEADER.FIELDS (FROM)]").is_none() && item("BINARY[1.HEADER]").is_some());
        assert_eq!(item("BINARY.PEEK[TEXT]"), Some((true, false, "TEXT".into(), None)));
        assert_eq!(
            item("BINARY.SIZE[1.2.MIME]"),
            Some((true, true, "1.2.MIME".into(), None))
        );
        assert_eq!(item("BINARY.PEEK[2.TEXT]"), Some((true, false, "2.TEXT".into(), None)));
        assert_eq!(
            item("BINARY[2.HEADER.FIELDS (FROM X)]"),
            Some((false, false, "2.HEADER.FIELDS (FROM X)".into(), None))
        );
        assert!(item("BINARY[MIME]").is_none() && item("BINARY[1.FOO]").is_none() && item("BINARY[1.0]").is_none());
        assert!(item("BINARY[0]").is_none() && item("BODY[1]").is_none());
    }

    #[test]
    fn quoted_printable_as_rfc2045_says() {
        assert_eq!(
            qp_decode(b"hello \t \r\nbar=  \r\nfoo=09bar\t\r\nfoo=\r\n=3d =20\r\nx=\nlast=\t"),
            b"hello\r\nbarfoo\tbar\r\nfoo=  \r\nxlast"
        );
        assert_eq!(qp_decode(b"a=4x=\r\n=\r\nb"), b"a=4xb");
        assert_eq!(qp_decode(b"="), b"");
        assert_eq!(qp_decode(b"=C3=A9\n"), "é\r\n".as_bytes());
    }

    #[test]
    fn binary_parts_are_kept_base64_encoded() {
        use base64::Engine;
        let data = b"\x00\x01bin\nary\r\x00\xff";
        let mut msg = b"Subject: b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\
Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            .to_vec();
        msg.extend_from_slice(data);
        msg.extend_from_slice(b"\r\n--x\r\nContent-Type: text/plain\r\n\r\nplain\r\n--x--\r\n");
        let enc = encode_binary_parts(&msg).unwrap();
        assert!(!enc.contains(&0));
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        let want = format!(
            "Subject: b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\
Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--x\r\n\
Content-Type: text/plain\r\n\r\nplain\r\n--x--\r\n"
        );
        assert_eq!(String::from_utf8_lossy(&enc), want);
        let tree = mime::Tree::new(&enc);
        assert_eq!(content(&tree, "1"), Ok(Some(data.to_vec())));
        assert_eq!(content(&tree, "2"), Ok(Some(b"plain".to_vec())));
        // a single-part message with a NUL; text with CRLF only is left alone
        let enc = encode_binary_parts(b"Subject: n\r\n\r\na\x00b").unwrap();
        assert_eq!(enc, b"Subject: n\r\nContent-Transfer-Encoding: base64\r\n\r\nYQBi\r\n");
        assert_eq!(encode_binary_parts(b"Subject: t\r\n\r\nline\r\n\xff\r\n"), None);
        // bare LFs in text are line ends, not binary content
        assert_eq!(encode_binary_parts(b"Subject: t\n\nline\nlf\n"), None);
        let enc = encode_binary_parts(b"Content-Transfer-Encoding: Binary\r\n\r\nlf\n").unwrap();
        assert_eq!(enc, b"Content-Transfer-Encoding: base64\r\n\r\nbGYK\r\n");
        // already encoded parts are what they are
        assert_eq!(
            encode_binary_parts(b"Content-Transfer-Encoding: base64\r\n\r\nYQ\nBi\n"),
            None
        );
    }

    #[test]
    fn decodes_parts() {
        let tree = mime::Tree::new(MSG);
        assert_eq!(content(&tree, "1"), Ok(Some("café end".as_bytes().to_vec())));
        assert_eq!(content(&tree, "2"), Ok(Some(vec![0, 1, 2, 3])));
        assert_eq!(content(&tree, "3"), Err(()));
        assert_eq!(content(&tree, "9"), Ok(None));
        assert_eq!(content(&tree, ""), Ok(Some(MSG.to_vec())));
    }
}
