//! IMAP URLs (RFC 5092) naming messages and their parts in the user's own mailboxes,
//! relative to this server: `/MAILBOX[;UIDVALIDITY=v]/;UID=u[/;SECTION=s][/;PARTIAL=o[.l]]`
//! (mailbox and section %-encoded; a SECTION as FETCH's `BODY[s]`: HEADER, TEXT, 1.2,
//! 1.MIME, ...), and their resolution into bytes (`Session::url_part`). CATENATE
//! (RFC 4469) takes these URLs; URLAUTH ([`crate::urlauth`]) the path of its absolute ones.
//! A URL that does not parse or names nothing is `NO [BADURL url] reason`.

use crate::session::{Reply, Session};
use postern_mailbox::Store;

/// Longest URL.
pub const MAX_URL: usize = 2048;

/// A parsed IMAP URL (RFC 5092) relative to the server.
#[derive(Debug, PartialEq)]
pub struct Url {
    /// The mailbox, decoded.
    pub mailbox: String,
    /// UIDVALIDITY, when given.
    pub validity: Option<u32>,
    /// The message's UID.
    pub uid: u32,
    /// The section (`BODY[section]`), decoded; empty for the whole message.
    pub section: String,
    /// PARTIAL offset and length.
    pub partial: Option<(u64, Option<u64>)>,
}

/// %XX-decoding of a URL component; `None` for a bad escape, a non-UTF-8 result or a
/// control character.
pub(crate) fn decode(s: &str) -> Option<String> {
    String::from_utf8(postern_lib::percent::decode(s)?)
        .ok()
        .filter(|s| !s.chars().any(char::is_control))
}

/// A positive number of at most 10 digits.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `url`; `Err` says what is wrong with it.
pub fn parse_url(url: &str) -> Result<Url, &'static str> {
    if url.len() > MAX_URL {
        return Err("URL too long");
    }
    if url.to_ascii_lowercase().starts_with("imap:") {
        return Err("only URLs relative to this server are accepted (no URLAUTH)");
    }
    let rest = url.strip_prefix('/').ok_or("not an IMAP URL (/mailbox/;UID=n)")?;
    let mut pieces = rest.split("/;");
    let mbox = pieces.next().unwrap_or("");
    let (mbox, validity) = match mbox.split_once(';') {
        Some((m, v)) => {
            let (k, n) = v.split_once('=').ok_or("bad mailbox parameter")?;
            if !k.eq_ignore_ascii_case("UIDVALIDITY") {
                return Err("unknown mailbox parameter");
            }
            let n = number(n)
                .filter(|&n| n > 0 && n <= u64::from(u32::MAX))
                .ok_or("bad UIDVALIDITY")?;
            (m, Some(n as u32))
        }
        None => (mbox, None),
    };
    let mailbox = decode(mbox).filter(|m| !m.is_empty()).ok_or("bad mailbox name")?;
    let mut uid = None;
    let mut section = String::new();
    let mut partial = None;
    for p in pieces {
        let (k, v) = p.split_once('=').ok_or("bad URL parameter")?;
        match k.to_ascii_uppercase().as_str() {
            "UID" if uid.is_none() => {
                uid = Some(
                    number(v)
                        .filter(|&n| n > 0 && n <= u64::from(u32::MAX))
                        .ok_or("bad UID")? as u32,
                );
            }
            "SECTION" if uid.is_some() && section.is_empty() && partial.is_none() => {
                section = decode(v).filter(|s| !s.is_empty()).ok_or("bad SECTION")?;
            }
            "PARTIAL" if uid.is_some() && partial.is_none() => {
                let (o, l) = match v.split_once('.') {
                    Some((o, l)) => (o, Some(number(l).filter(|&l| l > 0).ok_or("bad PARTIAL")?)),
                    None => (v, None),
                };
                partial = Some((number(o).ok_or("bad PARTIAL")?, l));
            }
            _ => return Err("unknown or repeated URL parameter"),
        }
    }
    let uid = uid.ok_or("no UID in the URL")?;
    Ok(Url {
        mailbox,
        validity,
        uid,
        section,
        partial,
    })
}

/// `NO [BADURL url] reason`: the URL shown as resp-text allows it (no `]`, no controls).
pub(crate) fn bad_url(url: &str, why: &str) -> Reply {
    let shown: String = url.chars().filter(|&c| c != ']' && !c.is_control()).take(200).collect();
    Reply::No(format!("[BADURL {shown}] {why}"))
}

/// `PARTIAL=offset.length` of `part` (all of it for `None`).
pub(crate) fn partial(mut part: Vec<u8>, range: Option<(u64, Option<u64>)>) -> Vec<u8> {
    if let Some((offset, len)) = range {
        let start = (offset as usize).min(part.len());
        let end = len.map_or(part.len(), |l| start.saturating_add(l as usize).min(part.len()));
        part.truncate(end);
        part.drain(..start);
    }
    part
}

impl Session {
    /// The bytes an IMAP URL names, from the user's own mailboxes.
    pub(crate) fn url_part(&mut self, url: &str) -> Result<Vec<u8>, Reply> {
        let u = parse_url(url).map_err(|why| {
            tracing::info!("IMAP URL: bad URL ({why}), {}", self.who());
            bad_url(url, why)
        })?;
        self.url_bytes(&u, url)
    }

    /// The bytes parsed URL `u` names; `url` is shown in a `BADURL` refusal.
    pub(crate) fn url_bytes(&mut self, u: &Url, url: &str) -> Result<Vec<u8>, Reply> {
        let name = Store::canonical(&u.mailbox);
        let path = self
            .store()?
            .folder_path(&name)
            .map_err(|_| bad_url(url, "no such mailbox"))?;
        // the selected folder: its state in hand; another: opened for this
        let raw = match self
            .sel
            .as_mut()
            .filter(|s| s.handle.path() == path && !s.folder.is_placeholder())
        {
            Some(sel) => {
                if u.validity.is_some_and(|v| v != sel.folder.uid_validity()) {
                    return Err(bad_url(url, "UIDVALIDITY is not the mailbox's"));
                }
                sel.folder.read(u.uid)?
            }
            None => {
                let mut f = self
                    .store()?
                    .folder(&name)
                    .map_err(|_| bad_url(url, "no such mailbox"))?;
                if u.validity.is_some_and(|v| v != f.uid_validity()) {
                    return Err(bad_url(url, "UIDVALIDITY is not the mailbox's"));
                }
                f.read(u.uid)?
            }
        };
        let raw = raw.ok_or_else(|| bad_url(url, "no such message"))?;
        let part = match u.section.is_empty() {
            true => raw,
            false => crate::mime::section(&raw, &u.section)
                .ok_or_else(|| bad_url(url, "no such section"))?
                .into_owned(),
        };
        Ok(partial(part, u.partial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_say_why() {
        let u = parse_url("/INBOX;UIDVALIDITY=7/;UID=3/;SECTION=1.MIME").unwrap();
        assert_eq!(
            u,
            Url {
                mailbox: "INBOX".into(),
                validity: Some(7),
                uid: 3,
                section: "1.MIME".into(),
                partial: None
            }
        );
        let u = parse_url("/My%20Box/;uid=9/;partial=10.5").unwrap();
        assert_eq!(
            (u.mailbox.as_str(), u.uid, u.partial),
            ("My Box", 9, Some((10, Some(5))))
        );
        let u = parse_url("/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(FROM)").unwrap();
        assert_eq!(u.section, "HEADER.FIELDS (FROM)");
        for (bad, why) in [
            ("INBOX/;UID=1", "not an IMAP URL (/mailbox/;UID=n)"),
            (
                "imap://alice@host/INBOX/;UID=1",
                "only URLs relative to this server are accepted (no URLAUTH)",
            ),
            ("/INBOX", "no UID in the URL"),
            ("/INBOX/;UID=0", "bad UID"),
            ("/INBOX/;UID=99999999999", "bad UID"),
            ("/INBOX;UIDVALIDITY=x/;UID=1", "bad UIDVALIDITY"),
            ("/INBOX;FOO=1/;UID=1", "unknown mailbox parameter"),
            ("/INBOX/;UID=1/;UID=2", "unknown or repeated URL parameter"),
            ("/IN%ZZBOX/;UID=1", "bad mailbox name"),
            ("/IN%0aBOX/;UID=1", "bad mailbox name"),
            ("/INBOX/;UID=1/;PARTIAL=1.0", "bad PARTIAL"),
        ] {
            assert_eq!(parse_url(bad), Err(why), "{bad}");
        }
        assert_eq!(
            parse_url(&format!("/{}/;UID=1", "a".repeat(MAX_URL))),
            Err("URL too long")
        );
    }

    #[test]
    fn bad_url_code_carries_no_bracket() {
        assert_eq!(bad_url("/a]b\r\n", "x").text(), "NO [BADURL /ab] x");
    }
}
