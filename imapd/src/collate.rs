//! The comparators of RFC 4790 / RFC 5051 that SORT, THREAD and SEARCH compare strings
//! with, as keys: two strings compare under the comparator as their keys compare as
//! octets, and one contains another when its key holds the other's key.
//!
//! - `i;unicode-casemap` (RFC 5051), [`DEFAULT`] (`I18NLEVEL=1`, RFC 5255 §4): computed as
//!   Dovecot 2.3 computes it, so both servers sort and search alike: each character
//!   mapped to its simple titlecase, then decomposed one step, canonically or by
//!   compatibility (`é` is `E` and U+0301, `²` is `2`, `ﬁ` is `fi`, a no-break space a
//!   space, `ẫ` is `Â` and U+0303: one step), Hangul syllables into their jamo
//!   (`casemap_data.rs`, written by `imapd/casemap_gen.py` from the Unicode
//!   Character Database; checked against Dovecot 2.3.19's SORT). Octets that are not
//!   UTF-8 become U+FFFD, one for a run of them.
//! - `i;ascii-casemap` (RFC 4790 §9.2): ASCII letters upper-cased, all other octets as
//!   they are. No command here asks for it (COMPARATOR, RFC 5255 §4.7, is not offered).
//!
//! Bounds: a key is at most 12 times its string's length in octets (the longest
//! decomposition, U+FDFA's, is 18 characters of 2 octets for one of 3); the table is
//! parsed once per process (5,325 decompositions, estimated 300–400 KB).

use std::sync::OnceLock;

/// A comparator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparator {
    /// `i;ascii-casemap`.
    AsciiCasemap,
    /// `i;unicode-casemap`, as Dovecot computes it (see the module text).
    UnicodeCasemap,
}

/// What SORT, THREAD and SEARCH compare with (`I18NLEVEL=1`).
pub const DEFAULT: Comparator = Comparator::UnicodeCasemap;

impl Comparator {
    /// The key of `s`.
    pub fn key(self, s: &str) -> Vec<u8> {
        match self {
            _ if s.is_ascii() => s.as_bytes().to_ascii_uppercase(),
            Comparator::AsciiCasemap => s.as_bytes().to_ascii_uppercase(),
            Comparator::UnicodeCasemap => {
                let mut out = Vec::with_capacity(s.len() + 8);
                for c in s.chars() {
                    fold(c, &mut out);
                }
                out
            }
        }
    }

    /// The key of octets that may not be UTF-8.
    pub fn key_bytes(self, s: &[u8]) -> Vec<u8> {
        if s.is_ascii() || self == Comparator::AsciiCasemap {
            return s.to_ascii_uppercase();
        }
        let mut out = Vec::with_capacity(s.len() + 8);
        fold_bytes(s, &mut out, &mut |_| false);
        out
    }

    /// Whether `needle` is in `hay` under the comparator (its substring operation). The
    /// haystack's key is made and searched [`WINDOW`] octets at a time (twice the
    /// needle's key when that is longer), so a large haystack is never held twice (or
    /// twelve times) over.
    pub fn contains(self, hay: &[u8], needle: &[u8]) -> bool {
        let needle = self.key_bytes(needle);
        if needle.is_empty() {
            return true;
        }
        if self == Comparator::AsciiCasemap {
            return memchr::memmem::find(&hay.to_ascii_uppercase(), &needle).is_some();
        }
        let finder = memchr::memmem::Finder::new(&needle);
        let window = WINDOW.max(2 * needle.len());
        let mut key = Vec::with_capacity(window + 64);
        let found = fold_bytes(hay, &mut key, &mut |key: &mut Vec<u8>| {
            if key.len() < window {
                return false;
            }
            if finder.find(key).is_some() {
                return true;
            }
            // a match may start in the last needle-length-minus-one octets
            let cut = key.len() - (needle.len() - 1);
            key.drain(..cut);
            false
        });
        found || finder.find(&key).is_some()
    }
}

/// Octets of a key looked at a time by [`Comparator::contains`].
pub const WINDOW: usize = 64 * 1024;

/// Appends the key of octets that may not be UTF-8 to `out` (a run of invalid octets is
/// one U+FFFD), asking `stop` after each character; `true` when `stop` said so.
fn fold_bytes(s: &[u8], out: &mut Vec<u8>, stop: &mut dyn FnMut(&mut Vec<u8>) -> bool) -> bool {
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            fold(c, out);
            if stop(out) {
                return true;
            }
        }
        if !chunk.invalid().is_empty() && !out.ends_with("\u{FFFD}".as_bytes()) {
            push(out, '\u{FFFD}');
        }
    }
    false
}

fn push(out: &mut Vec<u8>, c: char) {
    let mut b = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
}

/// Appends the key of one character: its titlecase, decomposed one step.
fn fold(c: char, out: &mut Vec<u8>) {
    if c.is_ascii() {
        out.push(c.to_ascii_uppercase() as u8);
        return;
    }
    let t = titlecase(c);
    let code = u32::from(t);
    if (HANGUL_FIRST..=HANGUL_LAST).contains(&code) {
        hangul(code, out);
    } else if let Some(parts) = decomposition(code) {
        for &p in parts {
            push(out, p);
        }
    } else {
        push(out, t);
    }
}

const HANGUL_FIRST: u32 = 0xAC00;
const HANGUL_LAST: u32 = 0xD7A3;

/// A Hangul syllable's jamo (the Unicode standard's arithmetic, §3.12).
fn hangul(code: u32, out: &mut Vec<u8>) {
    let s = code - HANGUL_FIRST;
    let (l, v, t) = (0x1100 + s / (21 * 28), 0x1161 + (s % (21 * 28)) / 28, 0x11A7 + s % 28);
    for j in [l, v] {
        push(out, char::from_u32(j).unwrap_or('\u{FFFD}'));
    }
    if t != 0x11A7 {
        push(out, char::from_u32(t).unwrap_or('\u{FFFD}'));
    }
}

/// The decomposition of `code`, if it has one in the table.
fn decomposition(code: u32) -> Option<&'static [char]> {
    static TABLE: OnceLock<Vec<(u32, Box<[char]>)>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        crate::casemap_data::DECOMP
            .lines()
            .filter_map(|line| {
                let mut hex = line.split(' ').map(|h| u32::from_str_radix(h, 16).ok());
                let code = hex.next()??;
                let parts: Option<Box<[char]>> = hex.map(|h| h.and_then(char::from_u32)).collect();
                Some((code, parts?))
            })
            .collect()
    });
    let i = table.binary_search_by_key(&code, |e| e.0).ok()?;
    Some(&table[i].1)
}

/// The simple titlecase mapping of `c`: the table's where Rust's upper case is not it,
/// else its upper case when that is one character (the full mappings of SpecialCasing,
/// as `ß` to `SS`, are not simple ones), except for the Latin digraphs.
fn titlecase(c: char) -> char {
    let code = u32::from(c);
    if let Ok(i) = crate::casemap_data::TITLE.binary_search_by_key(&code, |e| e.0) {
        return char::from_u32(crate::casemap_data::TITLE[i].1).unwrap_or(c);
    }
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
    fn unicode_casemap_is_titlecase_then_one_step_of_decomposition() {
        let k = |s: &str| String::from_utf8(UnicodeCasemap.key(s)).unwrap();
        // é to É, decomposed: E and the combining acute (so it sorts after "EZ")
        assert_eq!(k("été"), "E\u{301}TE\u{301}");
        assert_eq!(k("Été"), k("ÉTÉ"));
        assert!(k("été") > k("ez") && k("été") < k("f"));
        assert_eq!(k("grüße"), k("GRÜßE"));
        assert_eq!(k("straße"), "STRAßE", "simple mapping only");
        // one step: ẫ to Ẫ, that is Â and a tilde, Â not decomposed again
        assert_eq!(k("ẫ"), "Â\u{303}");
        // the digraphs to their titlecase, which has no decomposition of its own
        assert_eq!(k("ǆ"), "ǅ");
        assert_eq!(k("Ǆ"), "ǅ");
        // compatibility decompositions: superscript two, the fi ligature (its parts not
        // mapped again), no-break space, a fullwidth letter
        assert_eq!(k("x²"), "X2");
        assert_eq!(k("ﬁx"), "fiX");
        assert_eq!(k("a\u{a0}b"), "A B");
        assert_eq!(k("ｂ"), "B");
        // Georgian's titlecase is itself; Greek with ypogegrammeni to its titlecase,
        // decomposed
        assert_eq!(k("ა"), "ა");
        assert_eq!(k("ᾳ"), "\u{391}\u{345}");
        // a Hangul syllable into its jamo
        assert_eq!(k("한"), "\u{1112}\u{1161}\u{11AB}");
        assert_eq!(
            UnicodeCasemap.key_bytes(b"ab\xff\xfe!\xff"),
            "AB\u{FFFD}!\u{FFFD}".as_bytes()
        );
        // ASCII as ascii-casemap
        assert_eq!(UnicodeCasemap.key("Re: x_y"), b"RE: X_Y");
    }

    #[test]
    fn unicode_casemap_substrings() {
        assert!(UnicodeCasemap.contains("Vacances d'ÉTÉ".as_bytes(), "été".as_bytes()));
        assert!(UnicodeCasemap.contains("x²".as_bytes(), b"X2"));
        assert!(UnicodeCasemap.contains(b"Hello World", b"wORLD"));
        assert!(!UnicodeCasemap.contains("été".as_bytes(), b"ete"));
        assert!(UnicodeCasemap.contains(b"x", b""));
        // across the windows the key is searched in
        let mut hay = "é".repeat(super::WINDOW).into_bytes();
        hay.extend_from_slice("Ünïcode".as_bytes());
        assert!(UnicodeCasemap.contains(&hay, "éüNÏ".as_bytes()));
        assert!(!UnicodeCasemap.contains(&hay, "éüNÏx".as_bytes()));
    }
}
