//! Message flags as Maildir stores them: the `:2,` info part of a file name.
//!
//! System flags are upper-case letters (`D` draft, `F` flagged, `P` passed, `R` replied =
//! IMAP `\Answered`, `S` seen, `T` trashed = IMAP `\Deleted`); keywords are the letters
//! `a`–`z`, mapped to names by the folder's `dovecot-keywords` file (line `N name`, letter
//! `a` + N), exactly as Dovecot does, so a folder moves between the two servers unchanged.

/// `\Seen`.
pub const SEEN: u8 = 1;
/// `\Answered`.
pub const ANSWERED: u8 = 2;
/// `\Flagged`.
pub const FLAGGED: u8 = 4;
/// `\Deleted`.
pub const DELETED: u8 = 8;
/// `\Draft`.
pub const DRAFT: u8 = 16;
/// Maildir `P` (passed/forwarded); no IMAP system flag, kept as it is.
pub const PASSED: u8 = 32;
/// IMAP `\Recent`: never stored (no letter in a file name), only set by a session in the
/// flags it shows its client.
pub const RECENT: u8 = 64;

/// Most keywords a folder can hold (the letters a–z).
pub const MAX_KEYWORDS: usize = 26;

/// (bit, Maildir letter, IMAP name), in Maildir's ASCII order.
const SYSTEM: [(u8, char, &str); 6] = [
    (DRAFT, 'D', "\\Draft"),
    (FLAGGED, 'F', "\\Flagged"),
    (PASSED, 'P', ""),
    (ANSWERED, 'R', "\\Answered"),
    (SEEN, 'S', "\\Seen"),
    (DELETED, 'T', "\\Deleted"),
];

/// The flags of one message: system flags as bits, keywords as bits indexed by the
/// folder's keyword table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// [`SEEN`] | [`ANSWERED`] | ...
    pub system: u8,
    /// Bit N = keyword N of the folder's table (letter `a` + N).
    pub keywords: u32,
}

impl Flags {
    /// Parses the info part after `:2,` (unknown letters are ignored).
    pub fn from_info(info: &str) -> Flags {
        let mut f = Flags::default();
        for c in info.chars() {
            if let Some((bit, _, _)) = SYSTEM.iter().find(|(_, l, _)| *l == c) {
                f.system |= bit;
            } else if c.is_ascii_lowercase() {
                f.keywords |= 1 << (c as u32 - 'a' as u32);
            }
        }
        f
    }

    /// The info letters, sorted as Maildir requires.
    pub fn to_info(self) -> String {
        let mut s = String::new();
        self.push_info(&mut s);
        s
    }

    /// Appends [`Flags::to_info`] to `s`.
    pub fn push_info(self, s: &mut String) {
        for (bit, letter, _) in SYSTEM {
            if self.system & bit != 0 {
                s.push(letter);
            }
        }
        if self.keywords != 0 {
            for i in 0..MAX_KEYWORDS as u32 {
                if self.keywords & (1 << i) != 0 {
                    s.push(char::from(b'a' + i as u8));
                }
            }
        }
    }

    /// Whether `\Deleted` is set.
    pub fn deleted(self) -> bool {
        self.system & DELETED != 0
    }

    /// Whether `\Seen` is set.
    pub fn seen(self) -> bool {
        self.system & SEEN != 0
    }

    /// The IMAP names of the flags, keywords named from `keywords`.
    pub fn imap_names(self, keywords: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (bit, _, name) in [
            (SEEN, 'S', "\\Seen"),
            (ANSWERED, 'R', "\\Answered"),
            (FLAGGED, 'F', "\\Flagged"),
            (DELETED, 'T', "\\Deleted"),
            (DRAFT, 'D', "\\Draft"),
            (RECENT, ' ', "\\Recent"),
        ] {
            if self.system & bit != 0 {
                out.push(name.to_string());
            }
        }
        for (i, k) in keywords.iter().enumerate().take(MAX_KEYWORDS) {
            if self.keywords & (1 << i) != 0 {
                out.push(k.clone());
            }
        }
        out
    }
}

/// The bit of an IMAP system flag name (case-insensitive), or `None` for a keyword.
pub fn system_bit(name: &str) -> Option<u8> {
    SYSTEM
        .iter()
        .find(|(_, _, n)| !n.is_empty() && n.eq_ignore_ascii_case(name))
        .map(|(b, _, _)| *b)
}

/// Splits a Maildir file name into its base name and its flags (`name:2,FS`).
pub fn split_name(file: &str) -> (&str, Flags) {
    match file.find(":2,") {
        Some(i) => (&file[..i], Flags::from_info(&file[i + 3..])),
        None => match file.find(':') {
            Some(i) => (&file[..i], Flags::default()),
            None => (file, Flags::default()),
        },
    }
}

/// The file name in cur/ for a base name and flags.
pub fn cur_name(base: &str, flags: Flags) -> String {
    let mut s = String::with_capacity(base.len() + 12);
    s.push_str(base);
    s.push_str(":2,");
    flags.push_info(&mut s);
    s
}

/// The keyword table's file in each folder.
pub const KEYWORDS_FILE: &str = "dovecot-keywords";

/// Parses a `dovecot-keywords` file: `N name` lines; bad lines are skipped.
pub fn parse_keywords(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some((n, name)) = line.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        if n >= MAX_KEYWORDS || name.is_empty() || !valid_keyword(name) {
            continue;
        }
        if out.len() <= n {
            out.resize(n + 1, String::new());
        }
        out[n] = name.to_string();
    }
    out
}

/// Formats a keyword table as a `dovecot-keywords` file.
pub fn format_keywords(keywords: &[String]) -> String {
    let mut s = String::new();
    for (i, k) in keywords.iter().enumerate() {
        if !k.is_empty() {
            s.push_str(&format!("{i} {k}\n"));
        }
    }
    s
}

/// Whether a keyword name is an IMAP atom without `\` (RFC 3501 flag-keyword).
pub fn valid_keyword(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b > b' ' && b < 0x7f && !b"(){%*\"\\]".contains(&b))
}
