//! The IMAP command grammar (RFC 3501 §9), sans-I/O: a complete command — its line with any
//! literals already inlined as `{n}\r\n<n bytes>` — becomes a tag, a command name and a
//! list of [`Arg`]s; sequence sets and dates have their own small parsers.
//!
//! Everything is bounded by the input it is given (the session bounds that), nesting of
//! parenthesised lists is limited to [`MAX_DEPTH`], and nothing here panics on any input.

/// Deepest parenthesis nesting accepted.
pub const MAX_DEPTH: usize = 16;

/// One argument.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// An atom (may carry `[...]` and `<...>` parts, as in `BODY[HEADER]<0.10>`).
    Atom(String),
    /// A quoted string or a literal.
    Str(Vec<u8>),
    /// A parenthesised list.
    List(Vec<Arg>),
}

impl Arg {
    /// The argument as an astring (atom or string), lossily as UTF-8.
    pub fn text(&self) -> Option<String> {
        match self {
            Arg::Atom(a) => Some(a.clone()),
            Arg::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Arg::List(_) => None,
        }
    }

    /// The raw bytes of an astring.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Arg::Atom(a) => Some(a.as_bytes().to_vec()),
            Arg::Str(s) => Some(s.clone()),
            Arg::List(_) => None,
        }
    }

    /// The atom, upper-cased.
    pub fn keyword(&self) -> Option<String> {
        match self {
            Arg::Atom(a) => Some(a.to_ascii_uppercase()),
            _ => None,
        }
    }
}

/// A parsed command.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// The tag.
    pub tag: String,
    /// The command name, upper-cased (`UID FETCH` is `UID` with `FETCH` as first argument).
    pub name: String,
    /// The arguments.
    pub args: Vec<Arg>,
}

/// Why a command could not be parsed: the tag if one was found, and a reason for `BAD`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    /// The tag, or `*`.
    pub tag: String,
    /// The reason.
    pub reason: &'static str,
}

fn is_atom_char(b: u8) -> bool {
    b > b' ' && b < 0x7f && !b"(){\"".contains(&b)
}

/// Whether an atom so far is a FETCH item whose `[section]` may hold spaces and lists:
/// `BODY[`, `BODY.PEEK[`, `BINARY[`, `BINARY.PEEK[`, `BINARY.SIZE[`.
fn takes_section(atom: &[u8]) -> bool {
    ["BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"]
        .iter()
        .any(|n| atom.eq_ignore_ascii_case(n.as_bytes()))
}

fn is_tag_char(b: u8) -> bool {
    b > b' ' && b < 0x7f && !b"(){%*\"\\+".contains(&b)
}

/// Parses one complete command (without its final CRLF).
pub fn command(input: &[u8]) -> Result<Command, ParseError> {
    let tag_end = input.iter().position(|&b| b == b' ').unwrap_or(input.len());
    let tag = &input[..tag_end];
    if tag.is_empty() || !tag.iter().all(|&b| is_tag_char(b)) {
        return Err(ParseError {
            tag: "*".into(),
            reason: "Missing or invalid tag",
        });
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    let bad = |reason| ParseError {
        tag: tag.clone(),
        reason,
    };
    let rest = input.get(tag_end + 1..).unwrap_or(&[]);
    let mut p = Parser { s: rest, i: 0 };
    let name = match p.arg(0) {
        Some(Arg::Atom(a)) => a.to_ascii_uppercase(),
        _ => return Err(bad("Missing command")),
    };
    let mut args = Vec::new();
    while p.i < p.s.len() {
        if p.s[p.i] != b' ' {
            return Err(bad("Invalid arguments"));
        }
        p.i += 1;
        match p.arg(0) {
            Some(a) => args.push(a),
            None => return Err(bad("Invalid arguments")),
        }
    }
    Ok(Command { tag, name, args })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn arg(&mut self, depth: usize) -> Option<Arg> {
        let c = *self.s.get(self.i)?;
        match c {
            b'(' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    match self.s.get(self.i)? {
                        b')' => {
                            self.i += 1;
                            return Some(Arg::List(items));
                        }
                        b' ' if !items.is_empty() => self.i += 1,
                        _ => {}
                    }
                    items.push(self.arg(depth + 1)?);
                }
            }
            b'"' => {
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    let b = *self.s.get(self.i)?;
                    self.i += 1;
                    match b {
                        b'"' => return Some(Arg::Str(out)),
                        b'\\' => {
                            let e = *self.s.get(self.i)?;
                            self.i += 1;
                            out.push(e);
                        }
                        b'\r' | b'\n' | 0 => return None,
                        _ => out.push(b),
                    }
                }
            }
            // `~{` is a literal8 (RFC 3516); a `~` before anything else starts an atom
            // (`~` is an ATOM-CHAR: `SELECT ~foo`)
            b'{' | b'~' if c == b'{' || self.s.get(self.i + 1) == Some(&b'{') => {
                if c == b'~' {
                    self.i += 1;
                }
                let close = self.s[self.i..].iter().position(|&b| b == b'}')? + self.i;
                let num = std::str::from_utf8(self.s.get(self.i + 1..close)?).ok()?;
                let n: usize = num.trim_end_matches(['+', '-']).parse().ok()?;
                if self.s.get(close + 1..close + 3)? != b"\r\n" {
                    return None;
                }
                let start = close + 3;
                let data = self.s.get(start..start.checked_add(n)?)?.to_vec();
                self.i = start + n;
                Some(Arg::Str(data))
            }
            _ => {
                let start = self.i;
                while let Some(&b) = self.s.get(self.i) {
                    let close = || self.s[self.i..].iter().position(|&b| b == b']');
                    if b == b'[' && takes_section(&self.s[start..self.i]) && close().is_some() {
                        // a fetch item's section: anything up to the ']' (spaces and lists
                        // inside); elsewhere '[' and ']' are atom characters (`SELECT a[b`)
                        self.i += close().unwrap_or(0) + 1;
                    } else if is_atom_char(b) {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                if self.i == start {
                    return None;
                }
                let atom = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                if atom.eq_ignore_ascii_case("NIL") {
                    return Some(Arg::Atom("NIL".into()));
                }
                Some(Arg::Atom(atom.to_string()))
            }
        }
    }
}

/// A sequence set: ranges of numbers as written, [`STAR`] standing for `*`. Every
/// number from 1 to 4294967295 is itself (`UID FETCH 4294967295` is that UID, not the
/// largest); read the ranges with `*` resolved through [`SeqSet::ranges`].
#[derive(Clone, Debug, PartialEq)]
pub struct SeqSet(pub Vec<(u32, u32)>);

/// `*` in a [`SeqSet`] (0 is no valid sequence number or UID, RFC 3501 `nz-number`).
pub const STAR: u32 = 0;

impl SeqSet {
    /// Parses `1:3,5,7:*`, and `$` (RFC 5182: the saved search result) as the empty
    /// set, which the session replaces with the saved result ([`SeqSet::is_saved`]).
    pub fn parse(s: &str) -> Option<SeqSet> {
        if s == "$" {
            return Some(SeqSet(Vec::new()));
        }
        let mut out = Vec::new();
        for part in s.split(',') {
            let num = |x: &str| -> Option<u32> {
                if x == "*" {
                    Some(STAR)
                } else if x.bytes().all(|b| b.is_ascii_digit()) {
                    x.parse::<u32>().ok().filter(|&n| n > 0)
                } else {
                    None
                }
            };
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            };
            out.push((a, b));
            if out.len() > 100_000 {
                return None;
            }
        }
        Some(SeqSet(out))
    }

    /// The ranges, low end first, with `*` meaning `largest`.
    pub fn ranges(&self, largest: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        let fix = move |x: u32| if x == STAR { largest } else { x };
        self.0
            .iter()
            .map(move |&(a, b)| (fix(a).min(fix(b)), fix(a).max(fix(b))))
    }

    /// Whether this is `$`, to be replaced by the saved search result (no other text
    /// parses as an empty set); unreplaced it matches nothing.
    pub fn is_saved(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `n` is in the set, with `*` meaning `largest`.
    pub fn contains(&self, n: u32, largest: u32) -> bool {
        n > 0 && self.ranges(largest).any(|(a, b)| n >= a && n <= b)
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

pub use postern_lib::date::{civil_from_days, days_from_civil};

/// Parses an IMAP date `1-Feb-1994` into days since the epoch.
pub fn date(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let d: u32 = it.next()?.parse().ok()?;
    let mon = it.next()?;
    let m = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(mon))? as u32 + 1;
    let y: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Parses an IMAP date-time `17-Jul-1996 02:44:25 -0700` into seconds since the epoch.
pub fn date_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let mut it = s.split(' ').filter(|x| !x.is_empty());
    let days = date(it.next()?)?;
    let mut hms = it.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let se: i64 = hms.next()?.parse().ok()?;
    let zone = it.next()?;
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let z: i64 = zone.get(1..5)?.parse().ok()?;
    let offset = sign * ((z / 100) * 3600 + (z % 100) * 60);
    Some(days * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Formats seconds since the epoch as an IMAP date-time in UTC.
pub fn format_date_time(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m as usize).saturating_sub(1).min(11)],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_with_literals_lists_and_sections() {
        let c = command(b"a1 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)").unwrap();
        assert_eq!(c.tag, "a1");
        assert_eq!(c.name, "UID");
        assert_eq!(
            c.args[2],
            Arg::List(vec![
                Arg::Atom("FLAGS".into()),
                Arg::Atom("BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>".into())
            ])
        );
        let c = command(b"t LOGIN {5}\r\nalice \"pa\\\"ss\"").unwrap();
        assert_eq!(c.args, vec![Arg::Str(b"alice".to_vec()), Arg::Str(b"pa\"ss".to_vec())]);
        assert!(command(b"").is_err());
        assert!(command(b"t LOGIN {50}\r\nab").is_err());
        assert!(command(b"t X ((((((((((((((((((((").is_err());
    }

    #[test]
    fn sequence_sets_and_dates() {
        let s = SeqSet::parse("1:3,7:*").unwrap();
        assert!(s.contains(2, 10) && s.contains(9, 10) && !s.contains(5, 10));
        assert!(SeqSet::parse("0").is_none());
        let t = date_time("17-Jul-1996 02:44:25 -0700").unwrap();
        assert_eq!(format_date_time(t), "17-Jul-1996 09:44:25 +0000");
        assert_eq!(date("1-Jan-1970"), Some(0));
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut x: u32 = 12345;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1103515245).wrapping_add(12345);
                    b"a {}()[]<>\"\\*:,1~+\r\n"[(x >> 16) as usize % 20]
                })
                .collect();
            let _ = command(&bytes);
        }
    }
}
#[cfg(test)]
mod conformance_tests {
    use super::*;

    fn args(line: &[u8]) -> Vec<Arg> {
        command(line).unwrap().args
    }

    #[test]
    fn atoms_take_every_atom_char_tilde_and_brackets() {
        assert_eq!(args(b"a SELECT ~foo"), [Arg::Atom("~foo".into())]);
        assert_eq!(args(b"a LIST \"\" ~foo"), [Arg::Str(vec![]), Arg::Atom("~foo".into())]);
        let every = "!#$&'+,-.0123456789:;<=>?@^_`|[}";
        assert_eq!(args(format!("a SELECT {every}").as_bytes()), [Arg::Atom(every.into())]);
        assert_eq!(
            args(b"a SELECT a[b c]"),
            [Arg::Atom("a[b".into()), Arg::Atom("c]".into())]
        );
        assert_eq!(args(b"a LIST \"\" %*]"), [Arg::Str(vec![]), Arg::Atom("%*]".into())]);
        assert_eq!(args(b"a X ~"), [Arg::Atom("~".into())]);
        // literal8 and fetch sections as before
        assert_eq!(
            args(b"a APPEND x ~{3}\r\n\x00\n\xff"),
            [Arg::Atom("x".into()), Arg::Str(b"\x00\n\xff".to_vec())]
        );
        assert_eq!(
            args(b"a FETCH 1 (binary.peek[1] body[header.fields (a b)]<0.5>)"),
            [
                Arg::Atom("1".into()),
                Arg::List(vec![
                    Arg::Atom("binary.peek[1]".into()),
                    Arg::Atom("body[header.fields (a b)]<0.5>".into())
                ])
            ]
        );
        assert!(command(b"a FETCH 1 BODY[HEADER.FIELDS (A").is_err());
    }

    #[test]
    fn the_largest_number_is_not_star() {
        let s = SeqSet::parse("4294967295").unwrap();
        assert!(!s.contains(5, 5) && s.contains(u32::MAX, 5));
        let s = SeqSet::parse("4294967295:*").unwrap();
        assert!(s.contains(5, 5) && !s.contains(4, 5) && s.contains(u32::MAX, 5));
        assert_eq!(SeqSet::parse("*").unwrap().ranges(7).collect::<Vec<_>>(), [(7, 7)]);
        assert_eq!(SeqSet::parse("9:2").unwrap().ranges(7).collect::<Vec<_>>(), [(2, 9)]);
        assert!(SeqSet::parse("*").unwrap().ranges(0).all(|(a, b)| (a, b) == (0, 0)));
        assert!(!SeqSet::parse("*").unwrap().contains(0, 0));
        for bad in ["4294967296", "+5", "0", "1:0", "", "1,", "-1"] {
            assert!(SeqSet::parse(bad).is_none(), "{bad}");
        }
    }
}

#[cfg(test)]
mod more_tests {
    #[test]
    fn list_args() {
        let c = super::command(b"a LIST \"\" *").unwrap();
        assert_eq!(c.args.len(), 2);
    }
}
