//! The comparators of RFC 4790 / RFC 5051 that SORT and THREAD compare strings with, as
//! sort keys: two strings compare under the comparator as their keys compare as octets.
//!
//! - `i;ascii-casemap` (RFC 4790 §9.2): ASCII letters upper-cased, all other octets as
//!   they are. RFC 5256's default, and what SORT and THREAD use here ([`DEFAULT`]):
//!   Postern does not offer COMPARATOR or I18NLEVEL (RFC 5255), which would let a client
//!   ask for the other.
//! - `i;unicode-casemap` (RFC 5051): each character mapped to its titlecase (the simple
//!   mapping); input that is not UTF-8 is compared as octets (ASCII-casemapped). Not done:
//!   the NFKD decomposition of step 3 (no Unicode normalization tables are linked into
//!   imapd), so a precomposed `é` and `e` + combining acute compare unequal.

/// A comparator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparator {
    /// `i;ascii-casemap`.
    AsciiCasemap,
    /// `i;unicode-casemap` (without NFKD, see the module text).
    UnicodeCasemap,
}

/// What SORT and THREAD compare with.
pub const DEFAULT: Comparator = Comparator::AsciiCasemap;

impl Comparator {
    /// The sort key of `s`.
    pub fn key(self, s: &str) -> Vec<u8> {
        match self {
            Comparator::AsciiCasemap => s.as_bytes().to_ascii_uppercase(),
            Comparator::UnicodeCasemap => {
                let mut out = String::with_capacity(s.len());
                for c in s.chars() {
                    out.push(titlecase(c));
                }
                out.into_bytes()
            }
        }
    }

    /// The sort key of octets that may not be UTF-8.
    pub fn key_bytes(self, s: &[u8]) -> Vec<u8> {
        match std::str::from_utf8(s) {
            Ok(text) => self.key(text),
            Err(_) => s.to_ascii_uppercase(),
        }
    }
}

/// The simple titlecase mapping of `c`: its upper case when that is one character (the
/// full mappings of SpecialCasing, as `ß` to `SS`, are not simple ones), except for the
/// letters whose titlecase is not their upper case (the Latin digraphs).
fn titlecase(c: char) -> char {
    match c {
        '\u{01C4}'..='\u{01C6}' => '\u{01C5}',
        '\u{01C7}'..='\u{01C9}' => '\u{01C8}',
        '\u{01CA}'..='\u{01CC}' => '\u{01CB}',
        '\u{01F1}'..='\u{01F3}' => '\u{01F2}',
        _ => {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Comparator::*;

    #[test]
    fn ascii_casemap_folds_ascii_only() {
        assert_eq!(AsciiCasemap.key("abc [x]_"), b"ABC [X]_");
        assert_eq!(AsciiCasemap.key("grüße"), "GRüßE".as_bytes());
        assert!(AsciiCasemap.key("[xyz]") < AsciiCasemap.key("_"));
        assert!(AsciiCasemap.key("b") < AsciiCasemap.key("B (a)"));
    }

    #[test]
    fn unicode_casemap_folds_letters_to_titlecase() {
        assert_eq!(UnicodeCasemap.key("grüße"), UnicodeCasemap.key("GRÜßE"));
        assert_eq!(UnicodeCasemap.key("ǆ"), UnicodeCasemap.key("Ǆ"));
        assert_eq!(UnicodeCasemap.key("ǆ"), "ǅ".as_bytes());
        assert_eq!(UnicodeCasemap.key("straße"), "STRAßE".as_bytes(), "simple mapping only");
        assert_eq!(UnicodeCasemap.key_bytes(b"ab\xff"), b"AB\xff");
    }
}
