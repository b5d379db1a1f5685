//! Formatting of IMAP response data: strings (quoted or literal), NIL, flag lists.

/// An IMAP string: quoted when it is short plain ASCII, a literal otherwise.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let plain = s.len() < 1000 && s.iter().all(|&b| (b' '..0x7f).contains(&b));
    if plain {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

/// An nstring: NIL for `None`.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A mailbox name: an atom when possible, quoted otherwise.
pub fn astring(s: &str) -> String {
    let atom = !s.is_empty() && s.bytes().all(|b| b > b' ' && b < 0x7f && !b"(){%*\"\\]".contains(&b));
    if atom {
        s.to_string()
    } else {
        let mut v = Vec::new();
        string(&mut v, s.as_bytes());
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// `(\Seen kw ...)`.
pub fn flag_list(names: &[String]) -> String {
    format!("({})", names.join(" "))
}
