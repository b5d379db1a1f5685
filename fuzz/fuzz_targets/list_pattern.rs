//! imapd's LIST pattern matcher on arbitrary patterns and names: it must never panic,
//! must refuse only patterns over the limit, and must agree with the plain dynamic
//! programming definition of `*` and `%` (RFC 3501 §6.3.8) on every input.
#![no_main]
use imapd::list_pattern::{MAX_PATTERN, Pattern};
use libfuzzer_sys::fuzz_target;

/// `table[i][j]`: pattern[..i] matches name[..j].
fn reference(p: &[u8], n: &[u8], sep: u8) -> bool {
    let mut table = vec![vec![false; n.len() + 1]; p.len() + 1];
    table[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=n.len() {
            table[i][j] = match p[i - 1] {
                b'*' => table[i - 1][j] || j > 0 && table[i][j - 1],
                b'%' => table[i - 1][j] || j > 0 && n[j - 1] != sep && table[i][j - 1],
                c => j > 0 && n[j - 1] == c && table[i - 1][j - 1],
            };
        }
    }
    table[p.len()][n.len()]
}

fuzz_target!(|data: &[u8]| {
    // first byte: where the pattern ends; the rest: pattern, then name
    let Some((&cut, rest)) = data.split_first() else { return };
    let cut = (cut as usize * rest.len() / 255).min(rest.len());
    let (pattern, name) = rest.split_at(cut);
    match Pattern::new(pattern, b'.') {
        Ok(p) => {
            let got = p.matches(name);
            if pattern.len() * name.len() <= 1 << 16 {
                assert_eq!(got, reference(pattern, name, b'.'));
            }
        }
        Err(_) => assert!(pattern.len() > MAX_PATTERN),
    }
});
