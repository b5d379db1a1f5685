//! CATENATE (RFC 4469): `APPEND mbox [flags] [date] CATENATE (TEXT {n} URL "url" ...)`
//! builds the message from literal text and parts of messages already in the user's own
//! mailboxes, named by RFC 5092 IMAP URLs relative to this server:
//! `/MAILBOX[;UIDVALIDITY=v]/;UID=u[/;SECTION=s][/;PARTIAL=o[.l]]` (mailbox and section
//! %-encoded; a SECTION as FETCH's `BODY[s]`: HEADER, TEXT, 1.2, 1.MIME, ...). The built
//! message then goes through APPEND as any other (MULTIAPPEND, quota, APPENDUID).
//!
//! URLs are parsed and resolved by [`crate::imap_url`]. Refusals: a URL that does not
//! parse, has an authority (`imap://...`: URLAUTH's URLs are for URLFETCH), names a mailbox that does not exist, a UIDVALIDITY that is not the
//! mailbox's, a message or section that does not exist is `NO [BADURL url]` with the
//! reason; a destination mailbox that does not exist is `NO [TRYCREATE]` before any URL
//! is looked at (as Dovecot answers); a message larger than `imapd_max_literal` (what an
//! APPEND literal may be) is `NO [TOOBIG]`. Bounds: [`MAX_PARTS`] parts, URLs of
//! [`crate::imap_url::MAX_URL`] bytes; the message being built is the only copy held.

use crate::parse::Arg;
use crate::session::{Reply, Session};

/// Most parts in one CATENATE.
pub const MAX_PARTS: usize = 256;

impl Session {
    /// APPEND's arguments with each `CATENATE (...)` replaced by the message it builds;
    /// `None` when there is none. `mailbox` is the destination.
    pub(crate) fn catenate_args(&mut self, mailbox: &str, args: &[Arg]) -> Result<Option<Vec<Arg>>, Reply> {
        if !args.iter().any(|a| a.keyword().as_deref() == Some("CATENATE")) {
            return Ok(None);
        }
        let path = self.store()?.folder_path(mailbox)?;
        if !path.join("cur").is_dir() {
            return Err(Reply::No("[TRYCREATE] No such mailbox".into()));
        }
        let mut out = Vec::with_capacity(args.len());
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a.keyword().as_deref() != Some("CATENATE") {
                out.push(a.clone());
                continue;
            }
            let Some(Arg::List(parts)) = it.next() else {
                return Err(Reply::Bad("CATENATE needs a list of parts".into()));
            };
            out.push(Arg::Str(self.catenate(parts)?));
        }
        Ok(Some(out))
    }

    /// The message one `CATENATE (...)` list builds.
    fn catenate(&mut self, parts: &[Arg]) -> Result<Vec<u8>, Reply> {
        if parts.is_empty() || !parts.len().is_multiple_of(2) {
            return Err(Reply::Bad("CATENATE needs TEXT and URL parts".into()));
        }
        if parts.len() / 2 > MAX_PARTS {
            return Err(Reply::Bad(format!("[LIMIT] More than {MAX_PARTS} CATENATE parts")));
        }
        let limit = self.settings.max_literal;
        let mut msg = Vec::new();
        for pair in parts.chunks(2) {
            match (pair[0].keyword().as_deref(), &pair[1]) {
                (Some("TEXT"), Arg::Str(text)) => match self.spooled_message(text) {
                    // a large TEXT literal was received into the folder's tmp/
                    Some(Ok(spool)) => {
                        if msg.len() as u64 + spool.size() > limit {
                            return Err(too_big(limit));
                        }
                        let bytes = std::fs::read(spool.path()).map_err(|e| {
                            tracing::warn!("CATENATE: {}: {e}, {}", spool.path().display(), self.who());
                            Reply::No("[SERVERBUG] Cannot read the message part".into())
                        })?;
                        msg.extend_from_slice(&bytes);
                    }
                    Some(Err(reply)) => return Err(reply),
                    None => msg.extend_from_slice(text),
                },
                (Some("URL"), url) => {
                    let url = url.text().ok_or(Reply::Bad("Invalid URL".into()))?;
                    let part = self.url_part(&url)?;
                    if msg.len() as u64 + part.len() as u64 > limit {
                        return Err(too_big(limit));
                    }
                    msg.extend_from_slice(&part);
                }
                _ => return Err(Reply::Bad("CATENATE parts are TEXT literal or URL \"url\"".into())),
            }
            if msg.len() as u64 > limit {
                return Err(too_big(limit));
            }
        }
        Ok(msg)
    }
}

fn too_big(limit: u64) -> Reply {
    Reply::No(format!("[TOOBIG] The message would be larger than {limit} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_message_over_the_literal_limit_is_toobig_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::session::Settings {
            mail_base: dir.path().to_path_buf(),
            max_literal: 1000,
            max_line: 300,
            hostname: "mail.example.test".into(),
            starttls: false,
        };
        let mut s = Session::new(settings, true, false);
        assert!(s.input(b"a LOGIN alice secret\r\n").is_some());
        s.auth_done(Ok("alice".into()));
        s.take_output();
        let part = [b'x'; 600];
        let mut cmd = b"b APPEND INBOX CATENATE (TEXT {600+}\r\n".to_vec();
        cmd.extend_from_slice(&part);
        cmd.extend_from_slice(b" TEXT {600+}\r\n");
        cmd.extend_from_slice(&part);
        cmd.extend_from_slice(b")\r\nc STATUS INBOX (MESSAGES)\r\n");
        s.input(&cmd);
        assert_eq!(
            String::from_utf8_lossy(&s.take_output()),
            "b NO [TOOBIG] The message would be larger than 1000 bytes\r\n\
             * STATUS INBOX (MESSAGES 0)\r\nc OK STATUS completed\r\n"
        );
    }
}
