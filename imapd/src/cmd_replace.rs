//! REPLACE and UID REPLACE (RFC 8508): `REPLACE n mailbox [flags] [date] message` appends
//! the message to `mailbox` as APPEND does (quota, keywords, BINARY literals) and then
//! expunges message `n` of the selected folder, answering
//! `* OK [APPENDUID v uid] Replacement Message ID`, the EXPUNGE (or VANISHED), and the
//! tagged OK. The original is checked first (it must exist and the folder be
//! read-write); when the append fails the original is left as it was. The message is an
//! ordinary literal, so it is held to the process's literal budget
//! (`imapd_literal_memory_limit`), not spooled as a large APPEND is.
use crate::parse::Arg;
use crate::session::{Reply, Session};

impl Session {
    pub(crate) fn replace(&mut self, tag: &str, args: &[Arg], uid: bool) -> Result<(), Reply> {
        let n = args
            .first()
            .and_then(Arg::text)
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&n| n > 0)
            .ok_or(Reply::Bad("REPLACE needs one message number".into()))?;
        let name = args
            .get(1)
            .and_then(Arg::text)
            .ok_or(Reply::Bad("Missing mailbox name".into()))?;
        let Some(sel) = self.sel.as_mut() else {
            return Err(Reply::Bad("Select a mailbox first".into()));
        };
        if sel.read_only {
            return Err(Reply::No("[READ-ONLY] Mailbox is read-only".into()));
        }
        if sel.folder.changed() {
            sel.folder.sync()?;
        }
        let old = if uid {
            sel.view.iter().map(|v| v.0).find(|&u| u == n)
        } else {
            sel.view.get(n as usize - 1).map(|v| v.0)
        };
        let old = match old {
            Some(u) if sel.folder.get(u).is_some() => u,
            Some(_) => return Err(Reply::No("[EXPUNGEISSUED] The message was expunged".into())),
            None if uid => return Err(Reply::No("[NONEXISTENT] No such message".into())),
            None => return Err(Reply::Bad("No such message number".into())),
        };
        let (validity, uids) = self.append_messages(&name, args.get(2..).unwrap_or_default(), true)?;
        let new = uids.first().copied().unwrap_or(0);
        self.line(&format!("* OK [APPENDUID {validity} {new}] Replacement Message ID"));
        if let Some(sel) = self.sel.as_mut() {
            sel.folder.expunge(&[old])?;
        }
        self.report(true);
        self.ok(tag, "REPLACE completed");
        Ok(())
    }
}
