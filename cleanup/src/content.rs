//! The message as cleanup edits it: header repair, recipient extraction, header and body
//! checks.

use postern_checks::{Action, Table};
use postern_lib::dsn::Dsn;
use postern_lib::headers::{Field, Header, Limits};
use postern_lib::strbuf::printable_bounded;

use crate::service::Stop;

/// Flags collected while checking.
#[derive(Debug, Default)]
pub struct Flags {
    /// Put on hold, with the reason.
    pub hold: Option<String>,
}

/// The bounds a header is parsed with. A field may be `header_size_limit` long (Postfix's
/// limit per header field), and there may be as many fields as a header of
/// `header_size_limit` bytes can hold (`a:` and a line end, 3 bytes each), so whatever
/// smtpd accepted (it refuses a larger header) stays header: at least 10,000 fields, at
/// most 200,000, so that memory stays bounded for local submissions too, which only
/// `message_size_limit` bounds. Fields past the count are kept as body.
pub fn header_limits(header_size_limit: u64) -> Limits {
    let size = usize::try_from(header_size_limit).unwrap_or(usize::MAX);
    Limits {
        max_field_len: size.clamp(1000, 64 << 20),
        max_fields: (size / 3 + 1).clamp(10_000, 200_000),
    }
}

/// Turns CRLF line ends into LF, as stored in queue files.
pub fn to_lf(mut content: Vec<u8>) -> Vec<u8> {
    if memchr::memmem::find(&content, b"\r\n").is_none() {
        return content;
    }
    let mut w = 0;
    let mut r = 0;
    let n = content.len();
    while r < n {
        let c = content[r];
        if c == b'\r' && r + 1 < n && content[r + 1] == b'\n' {
            r += 1;
            continue;
        }
        content[w] = c;
        w += 1;
        r += 1;
    }
    content.truncate(w);
    content
}

/// Recipients named in To:, Cc: and Bcc: (`sendmail -t`).
pub fn extract_recipients(header: &Header) -> Vec<String> {
    let mut out = Vec::new();
    for f in header.fields() {
        if !(f.is("To") || f.is("Cc") || f.is("Bcc")) {
            continue;
        }
        let mut one = b"To:".to_vec();
        one.extend_from_slice(f.raw_value());
        one.extend_from_slice(b"\n\n");
        let Some(parsed) = mail_parser::MessageParser::new().parse_headers(&one[..]) else {
            continue;
        };
        if let Some(list) = parsed.to() {
            for a in list.iter() {
                // A bare local name (`To: root`) parses as a display name alone.
                let bare = a.name().filter(|n| !n.is_empty() && !n.contains(char::is_whitespace));
                if let Some(addr) = a.address().or(bare)
                    && !addr.is_empty()
                    && !out.iter().any(|x: &String| x.eq_ignore_ascii_case(addr))
                {
                    out.push(addr.to_owned());
                }
            }
        }
    }
    out
}

/// RFC 5322 date-time in UTC: `Sun, 22 Nov 2026 18:40:00 +0000`.
pub fn rfc5322_date(secs: u64) -> String {
    postern_lib::date::rfc5322_secs(secs)
}

/// Adds the fields a message must have. `from` is `Some(sender)` when a missing From:
/// should be added (local submissions).
pub fn add_missing(
    header: &mut Header,
    from: Option<(&str, Option<&str>)>,
    now: u64,
    qid: &str,
    myhostname: &str,
) -> Result<(), Stop> {
    let fail = |_| Stop::temp(Dsn::MAIL_SYSTEM, "Error: header too large to repair");
    if let Some((sender, full_name)) = from
        && !header.has("From")
    {
        let addr = if sender.is_empty() { "MAILER-DAEMON" } else { sender };
        let v = match full_name
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.chars().any(char::is_control))
        {
            Some(name) => format!("{} <{addr}>", phrase(name)),
            None => addr.to_owned(),
        };
        header.append(Field::new("From", &v).map_err(fail)?).map_err(fail)?;
    }
    if !header.has("Date") {
        header
            .append(Field::new("Date", &rfc5322_date(now)).map_err(fail)?)
            .map_err(fail)?;
    }
    if !header.has("Message-ID") {
        let (y, m, d) = postern_lib::log::civil_from_days((now / 86400) as i64);
        let rem = now % 86400;
        let id = format!(
            "<{y:04}{m:02}{d:02}{:02}{:02}{:02}.{qid}@{myhostname}>",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        header
            .append(Field::new("Message-ID", &id).map_err(fail)?)
            .map_err(fail)?;
    }
    Ok(())
}

/// A display name as an RFC 5322 phrase: atoms and spaces as they are, anything else
/// quoted.
fn phrase(name: &str) -> String {
    let atext = |c: char| c.is_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if name.chars().all(atext) {
        name.to_owned()
    } else {
        let mut q = String::with_capacity(name.len() + 2);
        q.push('"');
        for c in name.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    }
}

fn act(
    action: Action,
    what: &str,
    line: &str,
    rule: usize,
    table: &Table,
    qid: &str,
    flags: &mut Flags,
) -> Result<bool, Stop> {
    let shown = printable_bounded(line.as_bytes(), 200);
    let where_ = format!("{}:{rule}", table.path().display());
    match action {
        Action::Reject(text) => {
            tracing::info!("{qid}: reject: {what} {shown} ({where_}): {text}");
            let text = if text.is_empty() {
                "Error: message content rejected".to_owned()
            } else {
                text
            };
            Err(Stop::Reject(550, Dsn::NOT_AUTHORIZED, text))
        }
        Action::Discard(text) => {
            tracing::info!("{qid}: discard: {what} {shown} ({where_}): {text}");
            Err(Stop::Discard)
        }
        Action::Hold(text) => {
            tracing::info!("{qid}: hold: {what} {shown} ({where_}): {text}");
            flags.hold.get_or_insert(text);
            Ok(true)
        }
        Action::Warn(text) => {
            tracing::info!("{qid}: warning: {what} {shown} ({where_}): {text}");
            Ok(true)
        }
        Action::Ignore => Ok(false),
        Action::Dunno => Ok(true),
    }
}

/// Applies header_checks to every field; IGNORE deletes the field.
pub fn header_checks(header: &mut Header, table: &Table, qid: &str, flags: &mut Flags) -> Result<(), Stop> {
    let mut keep = Vec::with_capacity(header.len());
    for f in header.fields() {
        let text = f.text();
        let v = table.check(&text);
        keep.push(act(v.action, "header", &text, v.line, table, qid, flags)?);
    }
    header.retain(|i, _| keep.get(i).copied().unwrap_or(true));
    Ok(())
}

/// Applies body_checks to every body line; IGNORE deletes the line. Returns the new body
/// when a line was deleted.
pub fn body_checks(body: &[u8], table: &Table, qid: &str, flags: &mut Flags) -> Result<Option<Vec<u8>>, Stop> {
    let mut out: Option<Vec<u8>> = None;
    let mut pos = 0;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = String::from_utf8_lossy(text);
        let v = table.check(&text);
        let keep = act(v.action, "body", &text, v.line, table, qid, flags)?;
        if !keep && out.is_none() {
            out = Some(body.get(..pos).unwrap_or_default().to_vec());
        }
        if let Some(o) = out.as_mut()
            && keep
        {
            o.extend_from_slice(line);
        }
        pos += line.len();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_limits_follow_header_size_limit() {
        let l = header_limits(102_400);
        assert_eq!((l.max_field_len, l.max_fields), (102_400, 34_134));
        assert_eq!(header_limits(0).max_fields, 10_000);
        assert_eq!(header_limits(u64::MAX).max_fields, 200_000);
    }

    #[test]
    fn from_phrases() {
        assert_eq!(phrase("Alice Smith"), "Alice Smith");
        assert_eq!(phrase("Smith, Alice \"Al\""), "\"Smith, Alice \\\"Al\\\"\"");
    }

    #[test]
    fn dates_and_lf() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_795_305_600 + 3661), "Sun, 22 Nov 2026 01:01:01 +0000");
        assert_eq!(to_lf(b"a\r\nb\rc\r\n".to_vec()), b"a\nb\rc\n");
    }

    #[test]
    fn extraction() {
        let (h, _) = postern_lib::headers::parse(
            b"To: A <a@x.test>, b@y.test\nCc: undisclosed:;, root\nBcc: \"C D\" <c@z.test>,\n a@x.test\nSubject: x\n\n",
            Default::default(),
        );
        assert_eq!(extract_recipients(&h), vec!["a@x.test", "b@y.test", "root", "c@z.test"]);
    }
}
