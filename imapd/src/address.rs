//! Address header fields (From, Sender, Reply-To, To, Cc, Bcc) parsed as RFC 5322 §3.4
//! and its obsolete forms (§4.4) write them, for ENVELOPE (RFC 3501 §7.4.2) and for
//! SEARCH FROM/TO/CC/BCC: mailboxes with display names, bare addr-specs (a trailing
//! comment is the name, as Dovecot reads `user@domain (Real Name)`), groups
//! (`group: a@b, c@d;`, empty ones too), source routes (`<@route1,@route2:user@domain>`),
//! quoted strings, domain literals and comments (nested, anywhere) — comments are never
//! part of a local part or domain.
//!
//! Names and local parts are the header's bytes (encoded words stay encoded, as ENVELOPE
//! wants them). Lenient: whatever cannot be read is skipped a byte at a time, so any input
//! is parsed in one pass, in time linear in its length, into at most [`MAX_ITEMS`] items,
//! without panicking.

/// Most items (mailboxes and group markers) taken from one field.
pub const MAX_ITEMS: usize = 10_000;

/// One mailbox: every part as written (unquoted), `None` when absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name (or, for a bare addr-spec, its comment).
    pub name: Option<Vec<u8>>,
    /// The source route, `@a,@b` (obsolete syntax).
    pub route: Option<Vec<u8>>,
    /// The local part.
    pub local: Vec<u8>,
    /// The domain.
    pub domain: Option<Vec<u8>>,
}

/// One item of an address list, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A mailbox.
    Mailbox(Mailbox),
    /// `name:` — the start of a group.
    GroupStart(Vec<u8>),
    /// `;` — the end of the group last started.
    GroupEnd,
}

/// A word of a phrase or local part: (bytes, whether white space or a comment came
/// before it). A `.` is a word of its own.
type Word = (Vec<u8>, bool);

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
    /// The text of the last comment skipped, for a bare addr-spec's name.
    comment: Option<Vec<u8>>,
}

/// RFC 5322 specials (and white space, and controls): what ends an atom.
fn is_special(b: u8) -> bool {
    b <= b' ' || b == 0x7f || b"()<>[]:;@\\,.\"".contains(&b)
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips white space and comments; whether anything was skipped.
    fn cfws(&mut self) -> bool {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b == b'(' {
                self.comment_text();
            } else if b.is_ascii_whitespace() {
                self.i += 1;
            } else {
                break;
            }
        }
        self.i > start
    }

    /// A comment (nested, with quoted pairs), its text kept in `comment`.
    fn comment_text(&mut self) {
        let mut depth = 0usize;
        let mut text = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'(' => {
                    if depth > 0 {
                        text.push(b);
                    }
                    depth += 1;
                }
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    text.push(b);
                }
                b'\\' => {
                    if let Some(e) = self.peek() {
                        self.i += 1;
                        text.push(e);
                    }
                }
                b'\r' | b'\n' => {}
                _ => text.push(b),
            }
        }
        let text = crate::mime::trim(&text).to_vec();
        self.comment = (!text.is_empty()).then_some(text);
    }

    /// A quoted string's content (the cursor on its `"`), unquoted.
    fn quoted(&mut self) -> Vec<u8> {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(e) = self.peek() {
                        self.i += 1;
                        out.push(e);
                    }
                }
                b'\r' | b'\n' => {}
                _ => out.push(b),
            }
        }
        out
    }

    fn atom(&mut self) -> Vec<u8> {
        let start = self.i;
        while self.peek().is_some_and(|b| !is_special(b)) {
            self.i += 1;
        }
        self.s[start..self.i].to_vec()
    }

    /// Words (atoms, quoted strings, dots) up to a special that is none of them.
    fn words(&mut self) -> Vec<Word> {
        let mut out = Vec::new();
        loop {
            let space = self.cfws();
            match self.peek() {
                Some(b'"') => {
                    let w = self.quoted();
                    out.push((w, space));
                }
                Some(b'.') => {
                    self.i += 1;
                    out.push((b".".to_vec(), space));
                }
                Some(b) if !is_special(b) => {
                    let w = self.atom();
                    out.push((w, space));
                }
                _ => return out,
            }
        }
    }

    /// A domain after `@`: atoms, dots and domain literals, comments and spaces left out.
    fn domain(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            self.cfws();
            match self.peek() {
                Some(b'[') => {
                    let start = self.i;
                    while let Some(b) = self.peek() {
                        self.i += 1;
                        if b == b']' {
                            break;
                        }
                        if b == b'\\' && self.peek().is_some() {
                            self.i += 1;
                        }
                    }
                    out.extend(self.s[start..self.i].iter().filter(|b| !b.is_ascii_whitespace()));
                }
                Some(b'.') => {
                    self.i += 1;
                    out.push(b'.');
                }
                Some(b) if !is_special(b) => out.extend(self.atom()),
                _ => return out,
            }
        }
    }

    /// `<[route:]addr-spec>`, the cursor on `<`.
    fn angle(&mut self, name: Option<Vec<u8>>) -> Mailbox {
        self.i += 1;
        self.cfws();
        let mut route = None;
        if self.peek() == Some(b'@') {
            // obs-route: `@a, @b:` — everything to the ':' without spaces and comments
            let mut r = Vec::new();
            while let Some(b) = self.peek() {
                match b {
                    b':' => {
                        self.i += 1;
                        break;
                    }
                    b'>' => break,
                    b'(' => self.comment_text(),
                    b if b.is_ascii_whitespace() => self.i += 1,
                    _ => {
                        r.push(b);
                        self.i += 1;
                    }
                }
            }
            route = Some(r);
        }
        let local = join(&self.words(), false);
        let domain = if self.peek() == Some(b'@') {
            self.i += 1;
            Some(self.domain())
        } else {
            None
        };
        // to the '>' (anything malformed before it is dropped)
        while let Some(b) = self.peek() {
            self.i += 1;
            if b == b'>' {
                break;
            }
        }
        Mailbox {
            name,
            route,
            local,
            domain,
        }
    }

    /// One mailbox or group at the cursor (after any `,`), added to `out`.
    fn address(&mut self, out: &mut Vec<Item>, in_group: bool) {
        self.comment = None;
        let words = self.words();
        match self.peek() {
            Some(b'<') => {
                let name = (!words.is_empty()).then(|| join(&words, true));
                let m = self.angle(name);
                out.push(Item::Mailbox(m));
            }
            Some(b':') if !in_group => {
                self.i += 1;
                out.push(Item::GroupStart(join(&words, true)));
                loop {
                    self.cfws();
                    match self.peek() {
                        None => break,
                        Some(b';') => {
                            self.i += 1;
                            break;
                        }
                        Some(b',') => self.i += 1,
                        Some(_) if out.len() >= MAX_ITEMS => break,
                        Some(_) => {
                            let at = self.i;
                            self.address(out, true);
                            if self.i == at {
                                self.i += 1;
                            }
                        }
                    }
                }
                out.push(Item::GroupEnd);
            }
            _ if words.is_empty() && self.peek() != Some(b'@') => {
                // nothing readable here: skip a byte (the caller's loop goes on)
                if !matches!(self.peek(), Some(b',' | b';') | None) {
                    self.i += 1;
                }
            }
            _ => {
                let local = join(&words, false);
                let domain = if self.peek() == Some(b'@') {
                    self.i += 1;
                    Some(self.domain())
                } else {
                    None
                };
                // a comment after it (`user@domain (Real Name)`) is its name
                self.cfws();
                out.push(Item::Mailbox(Mailbox {
                    name: self.comment.take(),
                    route: None,
                    local,
                    domain,
                }));
            }
        }
    }
}

/// Words joined: a phrase with single spaces where the field had space, a local part
/// without any.
fn join(words: &[Word], phrase: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (w, space)) in words.iter().enumerate() {
        if phrase && i > 0 && *space {
            out.push(b' ');
        }
        out.extend_from_slice(w);
    }
    out
}

/// The items of an address field's (unfolded) value, in order.
pub fn parse(value: &[u8]) -> Vec<Item> {
    let mut c = Cursor {
        s: value,
        i: 0,
        comment: None,
    };
    let mut out = Vec::new();
    while c.i < c.s.len() && out.len() < MAX_ITEMS {
        c.cfws();
        match c.peek() {
            None => break,
            Some(b',' | b';' | b'>') => c.i += 1,
            Some(_) => {
                let at = c.i;
                c.address(&mut out, false);
                if c.i == at {
                    c.i += 1;
                }
            }
        }
    }
    out.truncate(MAX_ITEMS);
    out
}

/// The text SEARCH FROM/TO/CC/BCC (RFC 3501 §6.4.4) matches a field's value against: each
/// mailbox as `name <local@domain>` (or `local@domain`), each group as `name: ...;`,
/// joined by `, ` — comments and source routes left out, so a search for `user@domain`
/// finds `<user (comment)@ (comment) domain>`. Match case-insensitively as a substring.
pub fn search_text(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut first = true;
    for item in parse(value) {
        match item {
            Item::Mailbox(m) => {
                if !first {
                    out.extend_from_slice(b", ");
                }
                if let Some(n) = &m.name {
                    out.extend_from_slice(n);
                    out.extend_from_slice(b" <");
                }
                out.extend_from_slice(&m.local);
                if let Some(d) = &m.domain {
                    out.push(b'@');
                    out.extend_from_slice(d);
                }
                if m.name.is_some() {
                    out.push(b'>');
                }
            }
            Item::GroupStart(name) => {
                if !first {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(&name);
                out.extend_from_slice(b": ");
                first = true;
                continue;
            }
            Item::GroupEnd => {
                if out.ends_with(b" ") {
                    out.pop();
                }
                out.push(b';');
            }
        }
        first = false;
    }
    out
}

/// An ENVELOPE address list (RFC 3501 §7.4.2): `((name route mailbox host) ...)`, groups
/// as `(NIL NIL "group" NIL) ... (NIL NIL NIL NIL)`; `NIL` when there is no item. A
/// mailbox without a domain gets host `""`: a NIL host would read as a group's start.
pub fn envelope_list(out: &mut Vec<u8>, items: &[Item]) {
    use crate::reply::{nstring, string};
    if items.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for item in items {
        match item {
            Item::Mailbox(m) => {
                out.push(b'(');
                nstring(out, m.name.as_deref());
                out.push(b' ');
                nstring(out, m.route.as_deref());
                out.push(b' ');
                string(out, &m.local);
                out.push(b' ');
                string(out, m.domain.as_deref().unwrap_or_default());
                out.push(b')');
            }
            Item::GroupStart(name) => {
                out.extend_from_slice(b"(NIL NIL ");
                string(out, name);
                out.extend_from_slice(b" NIL)");
            }
            Item::GroupEnd => out.extend_from_slice(b"(NIL NIL NIL NIL)"),
        }
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &str) -> String {
        let mut out = Vec::new();
        envelope_list(&mut out, &parse(v.as_bytes()));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn mailboxes_names_and_comments() {
        assert_eq!(env("user@domain"), "((NIL NIL \"user\" \"domain\"))");
        assert_eq!(
            env("user@domain (Real Name)"),
            "((\"Real Name\" NIL \"user\" \"domain\"))"
        );
        assert_eq!(
            env("Real Name <user@domain>"),
            "((\"Real Name\" NIL \"user\" \"domain\"))"
        );
        assert_eq!(
            env("\"Doe, John\" <j.doe@x.test> (work), John Q. Public <jqp(x)@ (y) pub.test>"),
            "((\"Doe, John\" NIL \"j.doe\" \"x.test\")(\"John Q. Public\" NIL \"jqp\" \"pub.test\"))"
        );
        assert_eq!(
            env("<user-from (comment)@ (comment) domain.org>"),
            "((NIL NIL \"user-from\" \"domain.org\"))"
        );
        assert_eq!(env("\"a\\\"b\"@x"), "((NIL NIL \"a\\\"b\" \"x\"))");
        assert_eq!(env("u@[1.2.3.4]"), "((NIL NIL \"u\" \"[1.2.3.4]\"))");
        assert_eq!(env("nodomain"), "((NIL NIL \"nodomain\" \"\"))");
        assert_eq!(env(""), "NIL");
        assert_eq!(env("  (just a comment) "), "NIL");
    }

    #[test]
    fn groups_and_routes() {
        assert_eq!(
            env("group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;"),
            "((NIL NIL \"group\" NIL)(NIL NIL \"g1\" \"d1.org\")(NIL NIL \"g2\" \"d2.org\")(NIL NIL NIL NIL)\
(NIL NIL \"group2\" NIL)(NIL NIL \"g3\" \"d3.org\")(NIL NIL NIL NIL))"
        );
        assert_eq!(
            env("undisclosed-recipients:;"),
            "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))"
        );
        // an unterminated group still ends
        assert_eq!(
            env("g: a@b"),
            "((NIL NIL \"g\" NIL)(NIL NIL \"a\" \"b\")(NIL NIL NIL NIL))"
        );
        assert_eq!(env("<@route:user@domain>"), "((NIL \"@route\" \"user\" \"domain\"))");
        assert_eq!(env("Name <@a, @b (c):u@d>"), "((\"Name\" \"@a,@b\" \"u\" \"d\"))");
    }

    #[test]
    fn search_text_leaves_comments_out() {
        let s = |v: &str| String::from_utf8(search_text(v.as_bytes())).unwrap();
        assert_eq!(s("<user-from (comment)@ (comment) domain.org>"), "user-from@domain.org");
        assert_eq!(s("user-from@domain.org (RealFrom)"), "RealFrom <user-from@domain.org>");
        assert_eq!(
            s("groupname: groupuser1@domain.org, groupuser2@domain.org;,\r\n  groupname2: groupuser3@domain.org;"),
            "groupname: groupuser1@domain.org, groupuser2@domain.org;, groupname2: groupuser3@domain.org;"
        );
        assert_eq!(s("A <a@b>, c@d"), "A <a@b>, c@d");
    }

    #[test]
    fn never_panics_and_stays_bounded() {
        let mut x: u32 = 7;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1103515245).wrapping_add(12345);
                    b"a@b.<>()\\\":;, []\r\n\x00\xff"[(x >> 16) as usize % 20]
                })
                .collect();
            let _ = parse(&bytes);
            let _ = search_text(&bytes);
        }
        let many = "a@b,".repeat(MAX_ITEMS * 2);
        assert_eq!(parse(many.as_bytes()).len(), MAX_ITEMS);
        let deep = "(".repeat(100_000);
        assert!(parse(deep.as_bytes()).is_empty());
    }
}
