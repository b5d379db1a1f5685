//! LIST and LSUB mailbox patterns (RFC 3501 §6.3.8, RFC 9051 §6.3.9): `*` matches any
//! characters, `%` any characters but the hierarchy separator, every other byte itself.
//!
//! A pattern is compiled once per command: runs of wildcards collapse into one (`**` is
//! `*`, `%%` is `%`, a run with any `*` in it is `*`), and the pattern becomes a
//! non-deterministic automaton whose set of live states is a bit set. Matching a name
//! walks the name once, updating the bit set a machine word at a time: time is
//! O(len(name) × len(pattern) / 64), memory O(len(pattern)), with no recursion and no
//! backtracking, whatever the pattern. Patterns are at most [`MAX_PATTERN`] bytes.

/// The longest pattern (reference and pattern together) LIST accepts.
pub const MAX_PATTERN: usize = 1024;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// Number of tokens; state `i` means "tokens `..i` matched", state `len` accepts.
    len: usize,
    /// 64-bit words of a state set (`len + 1` bits).
    words: usize,
    /// States whose token is `*`.
    star: Vec<u64>,
    /// States whose token is `%`.
    percent: Vec<u64>,
    /// For each byte value, an index into `literal` (0: no token is that byte).
    class: [u16; 256],
    /// States whose token is a given literal byte, per class.
    literal: Vec<Vec<u64>>,
    separator: u8,
}

/// Why a pattern was not compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// Longer than [`MAX_PATTERN`] bytes.
    TooLong(usize),
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatternError::TooLong(n) => write!(f, "pattern of {n} bytes, more than {MAX_PATTERN}"),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Token {
    Byte(u8),
    Star,
    Percent,
}

fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn get(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

/// `to = from << 1` over the whole bit set, or-ed into `to`.
fn or_shifted(to: &mut [u64], from: &[u64]) {
    let mut carry = 0;
    for (t, &f) in to.iter_mut().zip(from) {
        *t |= (f << 1) | carry;
        carry = f >> 63;
    }
}

impl Pattern {
    /// Compiles `pattern`, `separator` being the hierarchy separator.
    pub fn new(pattern: &[u8], separator: u8) -> Result<Pattern, PatternError> {
        if pattern.len() > MAX_PATTERN {
            return Err(PatternError::TooLong(pattern.len()));
        }
        let mut tokens: Vec<Token> = Vec::with_capacity(pattern.len());
        for &b in pattern {
            let t = match b {
                b'*' => Token::Star,
                b'%' => Token::Percent,
                b => Token::Byte(b),
            };
            match (tokens.last_mut(), t) {
                (Some(last @ (Token::Star | Token::Percent)), Token::Star | Token::Percent) => {
                    if t == Token::Star {
                        *last = Token::Star;
                    }
                }
                _ => tokens.push(t),
            }
        }
        let len = tokens.len();
        let words = len / 64 + 1;
        let mut p = Pattern {
            len,
            words,
            star: vec![0; words],
            percent: vec![0; words],
            class: [0; 256],
            literal: vec![vec![0; words]],
            separator,
        };
        for (i, t) in tokens.iter().enumerate() {
            match *t {
                Token::Star => set(&mut p.star, i),
                Token::Percent => set(&mut p.percent, i),
                Token::Byte(b) => {
                    if p.class[b as usize] == 0 {
                        p.class[b as usize] = p.literal.len() as u16;
                        p.literal.push(vec![0; words]);
                    }
                    set(&mut p.literal[p.class[b as usize] as usize], i);
                }
            }
        }
        Ok(p)
    }

    /// Adds the states reachable by letting a wildcard match nothing. Wildcards are never
    /// adjacent after compilation, so one step reaches them all.
    fn close(&self, states: &mut [u64], scratch: &mut [u64]) {
        for i in 0..self.words {
            scratch[i] = states[i] & (self.star[i] | self.percent[i]);
        }
        or_shifted(states, scratch);
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &[u8]) -> bool {
        let w = self.words;
        let mut cur = vec![0u64; w];
        let mut next = vec![0u64; w];
        let mut scratch = vec![0u64; w];
        set(&mut cur, 0);
        self.close(&mut cur, &mut scratch);
        for &c in name {
            let lit = &self.literal[self.class[c as usize] as usize];
            let any_but_separator = c != self.separator;
            let mut live = 0;
            for i in 0..w {
                scratch[i] = cur[i] & lit[i];
                let stay = self.star[i] | if any_but_separator { self.percent[i] } else { 0 };
                next[i] = cur[i] & stay;
            }
            or_shifted(&mut next, &scratch);
            self.close(&mut next, &mut scratch);
            for x in &next {
                live |= x;
            }
            if live == 0 {
                return false;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        get(&cur, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain recursive definition, for comparison on short inputs.
    fn reference(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| reference(rest, &n[i..])),
            Some((b'%', rest)) => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'.')
                .any(|i| reference(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && reference(rest, &n[1..]),
        }
    }

    fn m(p: &str, n: &str) -> bool {
        Pattern::new(p.as_bytes(), b'.').unwrap().matches(n.as_bytes())
    }

    #[test]
    fn rfc_3501_semantics() {
        assert!(m("*", "a.b"));
        assert!(m("*", ""));
        assert!(m("%", "a"));
        assert!(!m("%", "a.b"));
        assert!(m("a.%", "a.b"));
        assert!(!m("a.%", "a.b.c"));
        assert!(m("a.*", "a.b.c"));
        assert!(m("S*", "Sent"));
        assert!(!m("s*", "Sent"), "names are case-sensitive");
        assert!(m("%.%", "a.b"));
        assert!(m("*%", "a.b"), "a run with a * is a *");
        assert!(m("%*", "a.b"));
        assert!(!m("%%", "a.b"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(!m("abc", "ab"));
        assert!(!m("ab", "abc"));
        assert!(m("a%c", "abbbc"));
        assert!(!m("a%c", "ab.bc"));
        assert!(m("*a*a*a*", "xaxxaxxxa"));
    }

    #[test]
    fn agrees_with_the_recursive_definition() {
        let alphabet = [b'a', b'b', b'.', b'*', b'%'];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..20_000 {
            let p: Vec<u8> = (0..rnd(8)).map(|_| alphabet[rnd(5)]).collect();
            let n: Vec<u8> = (0..rnd(9)).map(|_| alphabet[rnd(3)]).collect();
            let got = Pattern::new(&p, b'.').unwrap().matches(&n);
            assert_eq!(
                got,
                reference(&p, &n),
                "{:?} {:?}",
                String::from_utf8_lossy(&p),
                String::from_utf8_lossy(&n)
            );
        }
    }

    #[test]
    fn long_patterns_are_cheap_or_refused() {
        let mut p = vec![b'*'; 1000];
        p.push(b'Q');
        let name = vec![b'a'; 255];
        let started = std::time::Instant::now();
        let pat = Pattern::new(&p, b'.').unwrap();
        assert!(!pat.matches(&name));
        let mut alternating = b"%a".repeat(MAX_PATTERN / 2);
        alternating.truncate(MAX_PATTERN);
        let pat = Pattern::new(&alternating, b'.').unwrap();
        for _ in 0..1000 {
            assert!(!pat.matches(&name));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(
            Pattern::new(&vec![b'*'; 2_000_000], b'.').unwrap_err(),
            PatternError::TooLong(2_000_000)
        );
    }
}
