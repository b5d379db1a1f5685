//! Formatting of IMAP response data: strings (quoted or literal), NIL, flag lists,
//! compact number sets, message bytes without NULs.

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

/// A message's bytes for a literal: a literal carries no NUL (RFC 3501 CHAR8; only the
/// literal8 of a BINARY answer may), so each NUL is sent as 0x80, the size unchanged, as
/// Dovecot sends it. BINARY gives the exact bytes.
pub fn no_nuls(bytes: &mut [u8]) {
    if memchr::memchr(0, bytes).is_some() {
        bytes.iter_mut().filter(|b| **b == 0).for_each(|b| *b = 0x80);
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
    // ATOM-CHAR: no atom-specials (RFC 3501 §9: `(){`, space, CTL, `%*`, `"\`, `]`)
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

/// A set of numbers in IMAP's compact form: `1:3,5,7:8` (input in ascending order).
pub fn uid_set(nums: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut end = start;
        while i + 1 < nums.len() && nums[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = nums[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn nuls_become_0x80() {
        let mut b = b"a\x00b\x00\xff".to_vec();
        super::no_nuls(&mut b);
        assert_eq!(b, b"a\x80b\x80\xff");
    }

    #[test]
    fn compact_sets() {
        assert_eq!(super::uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(super::uid_set(&[4]), "4");
        assert_eq!(super::uid_set(&[]), "");
    }
}
