//! The MIME view IMAP needs of a message: its parts numbered as RFC 3501 §6.4.5 numbers
//! them, BODYSTRUCTURE, ENVELOPE and `BODY[section]` extraction. Addresses in ENVELOPE
//! are read by [`crate::address`]; the part tree is walked here over the raw bytes so that
//! every section is returned byte-exact as it is in the file.
//!
//! Bounded: nesting deeper than [`MAX_DEPTH`] is treated as an opaque leaf, at most
//! [`MAX_PARTS`] parts are split out of one multipart, and at most [`MAX_TOTAL_PARTS`]
//! out of one message (Dovecot's limit after CVE-2020-12100): past it, the rest of each
//! open multipart is one leaf. A message of a million nested parts is so described in
//! about ten thousand, and walked in time linear in its size times [`MAX_DEPTH`].
//! [`Tree`] parses a message once for all the items of a FETCH.

use crate::reply::{nstring, string};

/// Deepest MIME nesting walked.
pub const MAX_DEPTH: usize = 20;
/// Most parts taken from one multipart.
pub const MAX_PARTS: usize = 1000;
/// Most parts split out of one message; the rest of it is one leaf.
pub const MAX_TOTAL_PARTS: usize = 10_000;

/// One body part (or a whole message).
#[derive(Debug)]
pub struct Part<'a> {
    /// The MIME header (with its final blank line).
    pub header: &'a [u8],
    /// The body.
    pub body: &'a [u8],
    /// Lower-cased type and subtype.
    pub ctype: (String, String),
    params: Vec<(String, String)>,
    /// Sub-parts of a multipart.
    pub children: Vec<Part<'a>>,
    /// The encapsulated message of a message/rfc822 part.
    pub message: Option<Box<Part<'a>>>,
}

/// Splits a message (or part) at its first blank line.
pub fn split(raw: &[u8]) -> (&[u8], &[u8]) {
    if raw.starts_with(b"\r\n") {
        return (&raw[..2], &raw[2..]);
    }
    match memchr::memmem::find(raw, b"\r\n\r\n") {
        Some(i) => (&raw[..i + 4], &raw[i + 4..]),
        None => (raw, &[]),
    }
}

/// The unfolded fields of a header: (name, value).
pub fn fields(header: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for line in header.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(last) = out.last_mut() {
                last.1.extend_from_slice(line);
            }
            continue;
        }
        if let Some(c) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..c]).trim().to_string();
            let value = trim(&line[c + 1..]).to_vec();
            out.push((name, value));
        }
    }
    out
}

/// `s` without white space at either end.
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let a = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let b = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(a, |i| i + 1);
    &s[a..b.max(a)]
}

/// The first value of a field.
pub fn field<'f>(fields: &'f [(String, Vec<u8>)], name: &str) -> Option<&'f [u8]> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn content_type(value: Option<&[u8]>, default: (&str, &str)) -> ((String, String), Vec<(String, String)>) {
    let Some(v) = value else {
        return (
            (default.0.into(), default.1.into()),
            vec![("charset".into(), "us-ascii".into())],
        );
    };
    let text = String::from_utf8_lossy(v);
    let mut pieces = text.split(';');
    let t = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
    let (ty, sub) = match t.split_once('/') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => (a.trim().to_string(), b.trim().to_string()),
        _ => (default.0.to_string(), default.1.to_string()),
    };
    let params = pieces
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()))
        })
        .collect();
    ((ty, sub), params)
}

/// Parses the part tree of `raw`.
pub fn parse(raw: &[u8]) -> Part<'_> {
    let mut budget = MAX_TOTAL_PARTS;
    part(raw, ("text", "plain"), 0, &mut budget)
}

/// The number of parts in a tree (the message itself included).
pub fn count(p: &Part<'_>) -> usize {
    let mut n = 0;
    let mut stack = vec![p];
    while let Some(p) = stack.pop() {
        n += 1;
        stack.extend(p.children.iter());
        stack.extend(p.message.as_deref());
    }
    n
}

/// A message and its part tree, parsed when first needed and then reused.
pub struct Tree<'a> {
    raw: &'a [u8],
    top: std::cell::OnceCell<Part<'a>>,
}

impl<'a> Tree<'a> {
    /// A message (CRLF line ends), not parsed yet.
    pub fn new(raw: &'a [u8]) -> Tree<'a> {
        Tree {
            raw,
            top: std::cell::OnceCell::new(),
        }
    }

    /// The message's bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The part tree.
    pub fn top(&self) -> &Part<'a> {
        self.top.get_or_init(|| parse(self.raw))
    }
}

/// `budget`: parts that may still be split out of the message; each part takes one.
fn part<'a>(raw: &'a [u8], default: (&str, &str), depth: usize, budget: &mut usize) -> Part<'a> {
    *budget = budget.saturating_sub(1);
    let (header, body) = split(raw);
    let f = fields(header);
    let (ctype, params) = content_type(field(&f, "Content-Type"), default);
    let mut p = Part {
        header,
        body,
        ctype,
        params,
        children: Vec::new(),
        message: None,
    };
    if depth >= MAX_DEPTH || *budget == 0 {
        return p;
    }
    if p.ctype.0 == "multipart" {
        let Some(boundary) = p.params.iter().find(|(k, _)| k == "boundary").map(|(_, v)| v.clone()) else {
            return p;
        };
        let child_default = if p.ctype.1 == "digest" {
            ("message", "rfc822")
        } else {
            ("text", "plain")
        };
        let delim = format!("--{boundary}");
        let mut starts = Vec::new();
        let mut pos = 0;
        while let Some(i) = memchr::memmem::find(&body[pos..], delim.as_bytes()) {
            let at = pos + i;
            let line_start = at == 0 || body[at - 1] == b'\n';
            pos = at + delim.len();
            if !line_start {
                continue;
            }
            let closing = body[pos..].starts_with(b"--");
            let next_line = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |n| pos + n + 1);
            starts.push((at, next_line, closing));
            if closing || starts.len() > MAX_PARTS {
                break;
            }
        }
        let spans: Vec<(usize, usize)> = starts
            .windows(2)
            .take_while(|w| !w[0].2)
            .map(|w| {
                let begin = w[0].1;
                let mut end = w[1].0;
                // the CRLF before a delimiter belongs to the delimiter
                if end >= 2 && &body[end - 2..end] == b"\r\n" {
                    end -= 2;
                }
                (begin, end)
            })
            .filter(|(begin, end)| begin <= end)
            .collect();
        let last = spans.last().map_or(0, |s| s.1);
        for &(begin, end) in &spans {
            if *budget == 0 {
                // out of parts: the rest of this multipart is one leaf
                p.children
                    .push(part(&body[begin..last.max(begin)], child_default, MAX_DEPTH, budget));
                break;
            }
            p.children
                .push(part(&body[begin..end], child_default, depth + 1, budget));
        }
    } else if p.ctype == ("message".to_string(), "rfc822".to_string()) {
        p.message = Some(Box::new(part(body, ("text", "plain"), depth + 1, budget)));
    }
    p
}

fn lines(b: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', b).count() + usize::from(!b.is_empty() && !b.ends_with(b"\n"))
}

/// BODYSTRUCTURE (`ext`: with the extension data clients use to show attachments —
/// parameters, disposition, language, location; MD5 for single parts) or BODY (`!ext`).
pub fn body_structure(out: &mut Vec<u8>, p: &Part<'_>, ext: bool) {
    out.push(b'(');
    let f = fields(p.header);
    if p.ctype.0 == "multipart" && !p.children.is_empty() {
        for c in &p.children {
            body_structure(out, c, ext);
        }
        out.push(b' ');
        string(out, p.ctype.1.to_ascii_uppercase().as_bytes());
        if ext {
            out.push(b' ');
            params(out, &p.params);
            extension_tail(out, &f);
        }
        out.push(b')');
        return;
    }
    let (ty, sub) = if p.ctype.0 == "multipart" {
        ("text".to_string(), "plain".to_string())
    } else {
        p.ctype.clone()
    };
    string(out, ty.to_ascii_uppercase().as_bytes());
    out.push(b' ');
    string(out, sub.to_ascii_uppercase().as_bytes());
    out.push(b' ');
    params(out, &p.params);
    out.push(b' ');
    nstring(out, field(&f, "Content-ID"));
    out.push(b' ');
    nstring(out, field(&f, "Content-Description"));
    out.push(b' ');
    let enc = field(&f, "Content-Transfer-Encoding")
        .map(|e| String::from_utf8_lossy(e).to_ascii_uppercase())
        .unwrap_or_else(|| "7BIT".into());
    string(out, enc.as_bytes());
    out.extend_from_slice(format!(" {}", p.body.len()).as_bytes());
    if let Some(m) = &p.message {
        out.push(b' ');
        envelope(out, m.header);
        out.push(b' ');
        body_structure(out, m, ext);
        out.extend_from_slice(format!(" {}", lines(p.body)).as_bytes());
    } else if ty == "text" {
        out.extend_from_slice(format!(" {}", lines(p.body)).as_bytes());
    }
    if ext {
        out.push(b' ');
        nstring(out, field(&f, "Content-MD5"));
        extension_tail(out, &f);
    }
    out.push(b')');
}

/// A parameter list `("NAME" "value" ...)` or NIL.
fn params(out: &mut Vec<u8>, params: &[(String, String)]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.to_ascii_uppercase().as_bytes());
        out.push(b' ');
        string(out, v.as_bytes());
    }
    out.push(b')');
}

/// body-fld-dsp, body-fld-lang and body-fld-loc (RFC 3501 §9), shared by single parts
/// and multiparts: ` ("ATTACHMENT" ("FILENAME" "a.pdf")) NIL NIL`.
fn extension_tail(out: &mut Vec<u8>, f: &[(String, Vec<u8>)]) {
    out.push(b' ');
    match field(f, "Content-Disposition") {
        Some(d) => {
            // The same `word; name=value` syntax as Content-Type, with one word.
            let (_, dparams) = content_type(Some(d), ("", ""));
            let text = String::from_utf8_lossy(d);
            let word = text.split(';').next().unwrap_or("").trim().to_ascii_uppercase();
            out.push(b'(');
            string(out, word.as_bytes());
            out.push(b' ');
            params(out, &dparams);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match field(f, "Content-Language") {
        Some(l) => {
            let text = String::from_utf8_lossy(l);
            let langs: Vec<&str> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            match langs.as_slice() {
                [] => out.extend_from_slice(b"NIL"),
                [one] => string(out, one.as_bytes()),
                many => {
                    out.push(b'(');
                    for (i, l) in many.iter().enumerate() {
                        if i > 0 {
                            out.push(b' ');
                        }
                        string(out, l.as_bytes());
                    }
                    out.push(b')');
                }
            }
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    nstring(out, field(f, "Content-Location"));
}

/// ENVELOPE of a message header. Address fields are read by [`crate::address`]; an
/// empty or missing Sender or Reply-To is the From list (RFC 3501 §7.4.2).
pub fn envelope(out: &mut Vec<u8>, header: &[u8]) {
    use crate::address::{self, Item};
    let f = fields(header);
    out.push(b'(');
    nstring(out, field(&f, "Date"));
    out.push(b' ');
    nstring(out, field(&f, "Subject"));
    let list = |name: &str| -> Vec<Item> { field(&f, name).map(address::parse).unwrap_or_default() };
    let from = list("From");
    for name in ["From", "Sender", "Reply-To", "To", "Cc", "Bcc"] {
        out.push(b' ');
        let items = list(name);
        let items = if items.is_empty() && (name == "Sender" || name == "Reply-To") {
            &from
        } else {
            &items
        };
        address::envelope_list(out, items);
    }
    out.push(b' ');
    nstring(out, field(&f, "In-Reply-To"));
    out.push(b' ');
    nstring(out, field(&f, "Message-ID"));
    out.push(b')');
}

/// The bytes of `BODY[section]`; `None` when the section does not exist.
pub fn section<'a>(raw: &'a [u8], spec: &str) -> Option<std::borrow::Cow<'a, [u8]>> {
    section_of(&Tree::new(raw), spec)
}

/// [`section`] of a message whose tree may be parsed already.
pub fn section_of<'a>(tree: &Tree<'a>, spec: &str) -> Option<std::borrow::Cow<'a, [u8]>> {
    use std::borrow::Cow;
    let raw = tree.raw();
    let upper = spec.to_ascii_uppercase();
    // the common cases need no MIME walk
    match upper.as_str() {
        "" => return Some(Cow::Borrowed(raw)),
        "HEADER" => return Some(Cow::Borrowed(split(raw).0)),
        "TEXT" => return Some(Cow::Borrowed(split(raw).1)),
        _ => {}
    }
    let (cur, numbered, rest) = walk(tree.top(), &upper)?;
    let whole = |p: &Part<'_>| [p.header, p.body].concat();
    let msg: &Part<'_> = if numbered {
        match (&cur.message, rest) {
            (_, "") | (_, "MIME") => cur,
            (Some(m), _) => m,
            (None, _) => return None,
        }
    } else {
        cur
    };
    Some(Cow::Owned(match rest {
        "" if numbered => cur.body.to_vec(),
        "" => whole(msg),
        "MIME" => cur.header.to_vec(),
        "HEADER" => msg.header.to_vec(),
        "TEXT" => msg.body.to_vec(),
        r if r.starts_with("HEADER.FIELDS") => {
            let not = r.starts_with("HEADER.FIELDS.NOT");
            let list = r.split_once('(').map(|x| x.1).unwrap_or("").trim_end_matches(')');
            let names: Vec<&str> = list.split_whitespace().collect();
            header_fields(msg.header, &names, not)
        }
        _ => return None,
    }))
}

/// The part the part numbers at the start of `upper` (`1.2`, `2.HEADER`) name, whether
/// there were any, and the rest of `upper` after them; `None` when no such part exists.
fn walk<'t, 'a, 's>(top: &'t Part<'a>, upper: &'s str) -> Option<(&'t Part<'a>, bool, &'s str)> {
    let mut cur = top;
    let mut rest = upper;
    let mut numbered = false;
    loop {
        let (head, tail) = match rest.split_once('.') {
            Some((h, t)) => (h, t),
            None => (rest, ""),
        };
        let Ok(n) = head.parse::<usize>() else { break };
        if n == 0 {
            return None;
        }
        // a message/rfc822 part's numbers address the parts of the enclosed message
        if numbered && let Some(m) = &cur.message {
            cur = m;
        }
        cur = if cur.ctype.0 == "multipart" {
            cur.children.get(n - 1)?
        } else if n == 1 {
            cur
        } else {
            return None;
        };
        numbered = true;
        rest = tail;
    }
    Some((cur, numbered, rest))
}

/// The body part a section of part numbers only names (`""`: the message, `1.2`);
/// `None` for another section (HEADER, TEXT, 1.MIME) or a part that does not exist.
pub fn part_at<'t, 'a>(tree: &'t Tree<'a>, spec: &str) -> Option<&'t Part<'a>> {
    match walk(tree.top(), &spec.to_ascii_uppercase())? {
        (p, _, "") => Some(p),
        _ => None,
    }
}

/// The header lines (with continuations) whose names are (or, with `not`, are not) listed.
pub fn header_fields(header: &[u8], names: &[&str], not: bool) -> Vec<u8> {
    // a set, so a long list costs no more per header line than a short one
    let names: std::collections::HashSet<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            continue;
        }
        if line[0] != b' ' && line[0] != b'\t' {
            let name = line.iter().position(|&b| b == b':').map(|c| &line[..c]).unwrap_or(b"");
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            let listed = names.contains(&name);
            keep = listed != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multipart of `outer` multiparts of `inner` one-line parts each.
    pub(crate) fn nested(outer: usize, inner: usize) -> Vec<u8> {
        let mut m = b"Subject: many\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n".to_vec();
        for _ in 0..outer {
            m.extend_from_slice(b"--o\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n");
            for _ in 0..inner {
                m.extend_from_slice(b"--i\r\n\r\nx\r\n");
            }
            m.extend_from_slice(b"--i--\r\n");
        }
        m.extend_from_slice(b"--o--\r\n");
        m
    }

    #[test]
    fn a_million_parts_are_described_in_ten_thousand() {
        let msg = nested(1000, 1000);
        assert!(msg.len() > 7_000_000);
        let top = parse(&msg);
        let n = count(&top);
        assert!(
            (MAX_TOTAL_PARTS..=MAX_TOTAL_PARTS + MAX_DEPTH).contains(&n),
            "{n} parts"
        );
        // parts split out until the budget is spent (the tenth outer part gets 989
        // of its inner parts, then the rest of it as one leaf), then the rest of the
        // message as one leaf: no byte is lost from view
        assert_eq!(top.children.len(), 11);
        assert_eq!(top.children[9].children.len(), 990);
        assert!(top.children[9].children[989].children.is_empty());
        let rest = &top.children[10];
        assert!(rest.children.is_empty() && rest.header.len() + rest.body.len() > 6_000_000);
        let mut out = Vec::new();
        body_structure(&mut out, &top, true);
        assert!(out.len() < 1_000_000, "{} bytes of BODYSTRUCTURE", out.len());
        assert_eq!(&*section(&msg, "1.1").unwrap(), b"x");
        assert_eq!(&*section(&msg, "10.989").unwrap(), b"x");
        assert!(section(&msg, "12").is_none());
    }

    const MSG: &[u8] = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npre\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: application/octet-stream\r\n\r\nAAAA\r\n--XX--\r\n";

    #[test]
    fn sections_and_structure() {
        assert_eq!(&*section(MSG, "1").unwrap(), b"hello");
        assert_eq!(&*section(MSG, "2").unwrap(), b"AAAA");
        assert_eq!(&*section(MSG, "1.MIME").unwrap(), b"Content-Type: text/plain\r\n\r\n");
        assert_eq!(
            &*section(MSG, "HEADER.FIELDS (SUBJECT)").unwrap(),
            b"Subject: hi\r\n\r\n"
        );
        assert_eq!(&*section(MSG, "").unwrap(), MSG);
        assert!(section(MSG, "3").is_none());
        let mut out = Vec::new();
        body_structure(&mut out, &parse(MSG), false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 5 1)(\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"7BIT\" 4) \"MIXED\")"
        );
        let mut out = Vec::new();
        body_structure(&mut out, &parse(MSG), true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 5 1 NIL NIL NIL NIL)(\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"7BIT\" 4 NIL NIL NIL NIL) \"MIXED\" (\"BOUNDARY\" \"XX\") NIL NIL NIL)"
        );
        let att = b"Content-Type: application/pdf; name=\"r.pdf\"\r\nContent-Disposition: attachment;\r\n filename=\"r.pdf\"\r\nContent-Language: en, de\r\nContent-Location: http://example.test/r\r\nContent-MD5: Q2hlY2s=\r\n\r\n%PDF";
        let mut out = Vec::new();
        body_structure(&mut out, &parse(att), true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(\"APPLICATION\" \"PDF\" (\"NAME\" \"r.pdf\") NIL NIL \"7BIT\" 4 \"Q2hlY2s=\" (\"ATTACHMENT\" (\"FILENAME\" \"r.pdf\")) (\"en\" \"de\") \"http://example.test/r\")"
        );
        let mut env = Vec::new();
        envelope(&mut env, split(MSG).0);
        assert_eq!(
            String::from_utf8(env).unwrap(),
            "(NIL \"hi\" ((\"Alice\" NIL \"alice\" \"example.test\")) ((\"Alice\" NIL \"alice\" \"example.test\")) ((\"Alice\" NIL \"alice\" \"example.test\")) ((NIL NIL \"bob\" \"example.test\")) NIL NIL NIL NIL)"
        );
    }
}
