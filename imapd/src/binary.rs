//! BINARY (RFC 3516) FETCH items: `BINARY[part]<partial>`, `BINARY.PEEK[part]<partial>`
//! and `BINARY.SIZE[part]` — a leaf part's content with its Content-Transfer-Encoding
//! (base64, quoted-printable) undone; 7bit, 8bit and binary parts as they are; `[]` the
//! whole message. An encoding not known here is `NO [UNKNOWN-CTE]`.

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
    let numbers_ok = part.is_empty() || part.split('.').all(|n| n.parse::<u32>().is_ok_and(|n| n > 0));
    if !numbers_ok {
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
    let (Some(body), Some(header)) = (
        mime::section_of(tree, part),
        mime::section_of(tree, &format!("{part}.MIME")),
    ) else {
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

/// Quoted-printable: `=XX` escapes and `=` soft line breaks undone, the rest as it is.
fn qp_decode(body: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        match (body.get(i + 1).copied(), body.get(i + 2).copied()) {
            (Some(b'\r'), Some(b'\n')) => i += 3,
            (Some(b'\n'), _) => i += 2,
            (Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(hex(h).unwrap_or(0) << 4 | hex(l).unwrap_or(0));
                i += 3;
            }
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    out
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
        assert!(item("BINARY[0]").is_none() && item("BODY[1]").is_none());
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
