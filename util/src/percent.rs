//! `%XX` decoding, one copy for every reader of percent-escaped text: the mailbox cache's
//! envelope field (`mailbox::cache`) and IMAP URLs (RFC 5092, imapd's `imap_url`).

/// Decodes `%XX` escapes; any other byte is kept as it is. `None` for an escape that is
/// not two hex digits (`%+1` too, which `from_str_radix` alone would take).
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn escapes_are_decoded_and_bad_ones_refused() {
        assert_eq!(decode("a%20b%2Fc").as_deref(), Some(&b"a b/c"[..]));
        assert_eq!(decode("%ff").as_deref(), Some(&[0xffu8][..]));
        assert_eq!(decode("plain").as_deref(), Some(&b"plain"[..]));
        assert_eq!(decode("%2"), None);
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%+1"), None);
    }
}
