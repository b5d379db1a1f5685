//! Mailbox commands: SELECT/EXAMINE, CREATE/DELETE/RENAME, SUBSCRIBE/UNSUBSCRIBE,
//! LIST/LSUB (with SPECIAL-USE attributes), STATUS and APPEND (with APPENDUID).

use crate::parse::{self, Arg, Command};
use crate::reply::{astring, flag_list};
use crate::session::{Reply, Selected, Session};
use postern_lib::mailbox::flags::{self, Flags};
use postern_lib::mailbox::{SEPARATOR, Store};

fn name_arg(c: &Command, i: usize) -> Result<String, Reply> {
    c.args
        .get(i)
        .and_then(Arg::text)
        .map(|n| Store::canonical(&n))
        .ok_or(Reply::Bad("Missing mailbox name".into()))
}

/// Whether `name` matches a LIST pattern (`*` anything, `%` anything but the separator).
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| matches(rest, &name[i..])),
        Some((b'%', rest)) => (0..=name.len())
            .take_while(|&i| i == 0 || name[i - 1] != SEPARATOR as u8)
            .any(|i| matches(rest, &name[i..])),
        Some((p, rest)) => name.first().is_some_and(|n| n.eq_ignore_ascii_case(p)) && matches(rest, &name[1..]),
    }
}

impl Session {
    pub(crate) fn select(&mut self, c: &Command) -> Result<(), Reply> {
        let name = name_arg(c, 0)?;
        self.sel = None;
        let folder = self.store()?.folder(&name)?;
        let read_only = c.name == "EXAMINE";
        let view: Vec<(u32, Flags)> = folder.messages().iter().map(|m| (m.uid, m.flags)).collect();
        let mut kw: Vec<String> = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        kw.extend(folder.keywords().iter().filter(|k| !k.is_empty()).cloned());
        self.line(&format!("* FLAGS {}", flag_list(&kw)));
        kw.push("\\*".into());
        self.line(&format!("* OK [PERMANENTFLAGS {}] Flags permitted", flag_list(&kw)));
        self.line(&format!("* {} EXISTS", view.len()));
        self.line("* 0 RECENT");
        if let Some(i) = view.iter().position(|(_, f)| !f.seen()) {
            self.line(&format!("* OK [UNSEEN {}] First unseen", i + 1));
        }
        self.line(&format!("* OK [UIDVALIDITY {}] UIDs valid", folder.uid_validity()));
        self.line(&format!("* OK [UIDNEXT {}] Predicted next UID", folder.next_uid()));
        self.sel = Some(Selected {
            folder,
            name,
            read_only,
            view,
        });
        let code = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        self.ok(&c.tag, &format!("[{code}] {} completed", c.name));
        Ok(())
    }

    pub(crate) fn manage(&mut self, c: &Command) -> Result<(), Reply> {
        let name = name_arg(c, 0)?;
        let name = name.trim_end_matches(SEPARATOR).to_string();
        let store = self.store()?;
        match c.name.as_str() {
            "CREATE" => store.create(&name)?,
            "DELETE" => {
                if self.sel.as_ref().is_some_and(|s| s.name == name) {
                    self.sel = None;
                }
                self.store()?.delete(&name)?;
            }
            "RENAME" => {
                let new = name_arg(c, 1)?;
                store.rename(&name, &new)?;
            }
            "SUBSCRIBE" => store.subscribe(&name, true)?,
            _ => store.subscribe(&name, false)?,
        }
        self.ok(&c.tag, &format!("{} completed", c.name));
        Ok(())
    }

    pub(crate) fn list(&mut self, c: &Command) -> Result<(), Reply> {
        // LIST [(selection options)] reference pattern [RETURN (...)]
        let mut args: Vec<&Arg> = c.args.iter().collect();
        if matches!(args.first(), Some(Arg::List(_))) {
            args.remove(0);
        }
        let (Some(reference), Some(pattern)) =
            (args.first().and_then(|a| a.text()), args.get(1).and_then(|a| a.text()))
        else {
            return Err(Reply::Bad("LIST needs a reference and a pattern".into()));
        };
        let cmd = c.name.as_str();
        if pattern.is_empty() {
            self.line(&format!("* {cmd} (\\Noselect) \"{SEPARATOR}\" \"\""));
            self.ok(&c.tag, &format!("{cmd} completed"));
            return Ok(());
        }
        let full = format!("{reference}{pattern}");
        let store = self.store()?;
        let all = store.list()?;
        let subs = store.subscriptions();
        let mut lines = Vec::new();
        for name in &all {
            let matched = if name == "INBOX" {
                matches(full.as_bytes(), b"INBOX") || matches(full.to_ascii_uppercase().as_bytes(), b"INBOX")
            } else {
                matches(full.as_bytes(), name.as_bytes())
            };
            if !matched || (cmd == "LSUB" && !subs.contains(name)) {
                continue;
            }
            let prefix = format!("{name}{SEPARATOR}");
            let mut attrs = vec![if all.iter().any(|n| n.starts_with(&prefix)) {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            }];
            if let Some(a) = Store::special_use(name) {
                attrs.push(a);
            }
            if cmd == "LIST" && subs.contains(name) && c.args.iter().any(|a| matches!(a, Arg::List(_))) {
                attrs.push("\\Subscribed");
            }
            lines.push(format!(
                "* {cmd} ({}) \"{SEPARATOR}\" {}",
                attrs.join(" "),
                astring(name)
            ));
        }
        for l in lines {
            self.line(&l);
        }
        self.ok(&c.tag, &format!("{cmd} completed"));
        Ok(())
    }

    pub(crate) fn status(&mut self, c: &Command) -> Result<(), Reply> {
        let name = name_arg(c, 0)?;
        let Some(Arg::List(items)) = c.args.get(1) else {
            return Err(Reply::Bad("STATUS needs a list of items".into()));
        };
        let folder = self.store()?.folder(&name)?;
        let mut parts = Vec::new();
        for item in items {
            let k = item.keyword().unwrap_or_default();
            let v = match k.as_str() {
                "MESSAGES" => folder.messages().len() as u64,
                "RECENT" => 0,
                "UIDNEXT" => folder.next_uid() as u64,
                "UIDVALIDITY" => folder.uid_validity() as u64,
                "UNSEEN" => folder.messages().iter().filter(|m| !m.flags.seen()).count() as u64,
                "SIZE" => folder.messages().iter().map(|m| m.size).sum(),
                _ => return Err(Reply::Bad("Unknown STATUS item".into())),
            };
            parts.push(format!("{k} {v}"));
        }
        self.line(&format!("* STATUS {} ({})", astring(&name), parts.join(" ")));
        self.ok(&c.tag, "STATUS completed");
        Ok(())
    }

    pub(crate) fn append(&mut self, c: &Command) -> Result<(), Reply> {
        let name = name_arg(c, 0)?;
        let mut fl = Flags::default();
        let mut keywords = Vec::new();
        let mut date = None;
        let mut message = None;
        for a in c.args.get(1..).unwrap_or_default() {
            match a {
                Arg::List(list) => {
                    for f in list {
                        let n = f.text().unwrap_or_default();
                        match flags::system_bit(&n) {
                            Some(b) => fl.system |= b,
                            None if n.starts_with('\\') => return Err(Reply::Bad("Invalid flag".into())),
                            None => keywords.push(n),
                        }
                    }
                }
                Arg::Str(s) if message.is_none() && date.is_none() && s.len() < 40 && !s.contains(&b'\n') => {
                    match parse::date_time(&String::from_utf8_lossy(s)) {
                        Some(t) => date = Some(t),
                        None => message = Some(s),
                    }
                }
                Arg::Str(s) => message = Some(s),
                Arg::Atom(_) => return Err(Reply::Bad("Invalid APPEND arguments".into())),
            }
        }
        let Some(message) = message else {
            return Err(Reply::Bad("APPEND needs a message".into()));
        };
        let store = self.store()?;
        let mut folder = match store.folder(&name) {
            Ok(f) => f,
            Err(postern_lib::mailbox::MailboxError::NoSuchFolder(_)) => {
                return Err(Reply::No("[TRYCREATE] No such mailbox".into()));
            }
            Err(e) => return Err(e.into()),
        };
        for k in keywords {
            if let Some(bit) = folder.keyword_bit(&k, true)? {
                fl.keywords |= bit;
            }
        }
        let uid = folder.append(message, fl, date)?;
        let validity = folder.uid_validity();
        self.report(true);
        self.ok(&c.tag, &format!("[APPENDUID {validity} {uid}] Append completed"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn list_patterns() {
        assert!(matches(b"*", b"a.b"));
        assert!(matches(b"%", b"a"));
        assert!(!matches(b"%", b"a.b"));
        assert!(matches(b"a.%", b"a.b"));
        assert!(matches(b"S*", b"Sent"));
    }
}
