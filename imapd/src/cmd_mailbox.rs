//! Mailbox commands: SELECT/EXAMINE (RFC 3501's and, once enabled, RFC 9051's untagged
//! responses), CREATE/DELETE/RENAME (RENAME INBOX moves its messages), SUBSCRIBE/
//! UNSUBSCRIBE, STATUS (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE, and
//! HIGHESTMODSEQ of RFC 7162, which like `SELECT mbox (CONDSTORE)` switches CONDSTORE on, and
//! MAILBOXID of RFC 8474, also told by SELECT and CREATE: [`crate::objectid`]),
//! CREATE-SPECIAL-USE (RFC 6154 §3: `CREATE x (USE (\\Archive))`, kept with the folder) and
//! APPEND with MULTIAPPEND (RFC 3502: all messages or none) and APPENDUID. LIST is
//! [`crate::cmd_list`]. APPEND (like COPY) past the user's quota (`etc/users`, counted
//! over all folders as local delivery does) is `NO [OVERQUOTA]` and writes nothing.

use crate::parse::{self, Arg, Command};
use crate::reply::astring;
use crate::session::{Reply, Selected, Session};
use postern_mailbox::flags::{self, Flags};
use postern_mailbox::{Folder, SEPARATOR, Store};

/// One message of an APPEND: flags, keywords, internal date, bytes.
type AppendGroup<'a> = (Flags, Vec<String>, Option<i64>, &'a [u8]);

/// An APPEND's message: received in memory, or into the folder's `tmp/`.
enum Message<'a> {
    Memory(&'a [u8]),
    Spooled(postern_mailbox::spool::Spool),
}

impl Message<'_> {
    fn size(&self) -> u64 {
        match self {
            Message::Memory(b) => b.len() as u64,
            Message::Spooled(s) => s.size(),
        }
    }
}

/// CREATE's parameters (RFC 4466): only `(USE (attr ...))` of RFC 6154, whose attributes
/// must be ones the store keeps ([`postern_mailbox::CREATE_SPECIAL_USE`]), else
/// `NO [USEATTR]` and nothing is created.
fn create_uses(args: &[Arg]) -> Result<Vec<String>, Reply> {
    let params = match args {
        [] => return Ok(Vec::new()),
        [Arg::List(p)] => p,
        _ => return Err(Reply::Bad("Unknown CREATE parameters".into())),
    };
    let [use_kw, Arg::List(attrs)] = params.as_slice() else {
        return Err(Reply::Bad("Unknown CREATE parameters".into()));
    };
    if use_kw.keyword().as_deref() != Some("USE") {
        return Err(Reply::Bad("Unknown CREATE parameters".into()));
    }
    let mut uses = Vec::new();
    for a in attrs.iter().take(16) {
        let Some(a) = a.text().filter(|a| a.starts_with('\\')) else {
            return Err(Reply::Bad("Invalid special-use attribute".into()));
        };
        if !postern_mailbox::CREATE_SPECIAL_USE
            .iter()
            .any(|u| u.eq_ignore_ascii_case(&a))
        {
            return Err(Reply::No("[USEATTR] Unsupported special-use attribute".into()));
        }
        uses.push(a);
    }
    Ok(uses)
}

fn name_arg(c: &Command, i: usize) -> Result<String, Reply> {
    c.args
        .get(i)
        .and_then(Arg::text)
        .map(|n| Store::canonical(&n))
        .ok_or(Reply::Bad("Missing mailbox name".into()))
}

impl Session {
    pub(crate) fn select(&mut self, c: &Command) -> Result<(), Reply> {
        let name = name_arg(c, 0)?;
        // select parameters (RFC 4466): (CONDSTORE) and (QRESYNC (...)) of RFC 7162
        let mut resync = None;
        let mut condstore = false;
        match c.args.get(1..).unwrap_or_default() {
            [] => {}
            [Arg::List(params)] => {
                let mut i = 0;
                while i < params.len() {
                    match (params[i].keyword().as_deref(), params.get(i + 1)) {
                        (Some("CONDSTORE"), _) => condstore = true,
                        (Some("QRESYNC"), Some(Arg::List(l))) if resync.is_none() => {
                            if !self.qresync {
                                return Err(Reply::Bad("QRESYNC is not enabled".into()));
                            }
                            let r = crate::qresync::Resync::parse(l)?;
                            // sequence-match data names sequence numbers (RFC 9586)
                            if r.seq_match && self.uidonly {
                                return Err(crate::uidonly::uid_required());
                            }
                            resync = Some(r);
                            i += 1;
                        }
                        _ => return Err(Reply::Bad("Unknown SELECT parameters".into())),
                    }
                    i += 1;
                }
            }
            _ => return Err(Reply::Bad("Unknown SELECT parameters".into())),
        }
        // the HIGHESTMODSEQ line comes with the new mailbox's answer
        if condstore {
            self.condstore = true;
        }
        if self.sel.take().is_some() && (self.rev2 || self.qresync) {
            self.line("* OK [CLOSED] Previous mailbox closed");
        }
        let path = self.store()?.folder_path(&name)?;
        if !path.join("cur").is_dir() {
            return Err(Reply::No("[NONEXISTENT] No such mailbox".into()));
        }
        // the process's state of the folder, shared with its other sessions
        let (handle, folder) = postern_mailbox::shared::Handle::open(&path)?;
        let read_only = c.name == "EXAMINE";
        let mut sel = Selected::new(folder, handle, name.clone(), read_only);
        // \Recent: a read-write session takes what no session has seen yet
        if !read_only && !self.rev2 {
            sel.claim_recent();
        }
        let recent = sel.recent_count();
        for l in sel.flags_update() {
            self.line(&l);
        }
        if sel.keywords_told.is_empty() {
            // no keyword yet: the lines flags_update leaves out when nothing changed
            for l in crate::session::flag_lines(&[]) {
                self.line(&l);
            }
        }
        let (view, folder) = (&sel.view, &sel.folder);
        self.line(&format!("* {} EXISTS", view.len()));
        if self.rev2 {
            // RFC 9051: no RECENT and no UNSEEN code; the mailbox's LIST line instead
            self.line(&format!("* LIST () \"{SEPARATOR}\" {}", astring(&name)));
        } else {
            self.line(&format!("* {recent} RECENT"));
            // a sequence number: not under UIDONLY (RFC 9586)
            if let Some(i) = view.iter().position(|(_, f)| !f.seen()).filter(|_| !self.uidonly) {
                self.line(&format!("* OK [UNSEEN {}] First unseen", i + 1));
            }
        }
        let validity = folder.uid_validity();
        let next = folder.next_uid();
        let highest = folder.highest_modseq();
        let mailbox_id = crate::objectid::mailbox_id(folder);
        self.sel = Some(sel);
        self.line(&format!("* OK [UIDVALIDITY {validity}] UIDs valid"));
        self.line(&format!("* OK [UIDNEXT {next}] Predicted next UID"));
        if self.condstore {
            self.line(&format!("* OK [HIGHESTMODSEQ {highest}] Highest"));
        }
        self.line(&format!("* OK [MAILBOXID ({mailbox_id})] Ok"));
        if let Some(r) = resync {
            for l in self.resync_lines(&r) {
                self.line(&l);
            }
        }
        let code = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        self.ok(&c.tag, &format!("[{code}] {} completed", c.name));
        Ok(())
    }

    pub(crate) fn manage(&mut self, c: &Command) -> Result<(), Reply> {
        let name = name_arg(c, 0)?;
        let name = name.trim_end_matches(SEPARATOR).to_string();
        let store = self.store()?;
        match c.name.as_str() {
            "CREATE" => {
                let uses = create_uses(c.args.get(1..).unwrap_or_default())?;
                let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
                store.create_special(&name, &uses)?;
                // RFC 8474 §4.1: the new mailbox's id in the tagged OK
                let id = crate::objectid::mailbox_id(&store.folder(&name)?);
                self.ok(&c.tag, &format!("[MAILBOXID ({id})] CREATE completed"));
                return Ok(());
            }
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

    pub(crate) fn status(&mut self, c: &Command) -> Result<(), Reply> {
        let name = name_arg(c, 0)?;
        let (Some(Arg::List(items)), None) = (c.args.get(1), c.args.get(2)) else {
            return Err(Reply::Bad("STATUS needs a mailbox and a list of items".into()));
        };
        if items.is_empty() {
            return Err(Reply::Bad("STATUS needs at least one item".into()));
        }
        if items.iter().any(|i| i.keyword().as_deref() == Some("HIGHESTMODSEQ")) {
            self.condstore_on();
        }
        let folder = match self.sel.as_mut() {
            // the selected folder: the session's own view, synced
            Some(sel) if sel.name == name => {
                if sel.folder.changed() {
                    sel.folder.sync()?;
                }
                None
            }
            _ => Some(self.store()?.folder(&name)?),
        };
        let parts = match (&folder, &self.sel) {
            (Some(f), _) => self.status_items(f, items)?,
            (None, Some(sel)) => self.status_items(&sel.folder, items)?,
            (None, None) => return Err(Reply::No("[NONEXISTENT] No such mailbox".into())),
        };
        self.line(&format!("* STATUS {} ({parts})", astring(&name)));
        self.ok(&c.tag, "STATUS completed");
        Ok(())
    }

    /// The `MESSAGES 3 UNSEEN 1 ...` of a STATUS response (shared with LIST-STATUS).
    pub(crate) fn status_items(&self, folder: &Folder, items: &[Arg]) -> Result<String, Reply> {
        let mut parts = Vec::new();
        for item in items {
            let k = item.keyword().unwrap_or_default();
            let msgs = folder.messages();
            if k == "MAILBOXID" {
                parts.push(format!("MAILBOXID ({})", crate::objectid::mailbox_id(folder)));
                continue;
            }
            let v = match k.as_str() {
                "MESSAGES" => msgs.len() as u64,
                "RECENT" => match &self.sel {
                    Some(sel) if sel.folder.path() == folder.path() => sel.recent_count() as u64,
                    _ => {
                        let from = folder.recent_from();
                        msgs.iter().filter(|m| m.uid >= from).count() as u64
                    }
                },
                "UIDNEXT" => folder.next_uid() as u64,
                "UIDVALIDITY" => folder.uid_validity() as u64,
                "UNSEEN" => msgs.iter().filter(|m| !m.flags.seen()).count() as u64,
                "DELETED" => msgs.iter().filter(|m| m.flags.deleted()).count() as u64,
                "DELETED-STORAGE" => crate::quota::deleted_storage(folder),
                "SIZE" => msgs.iter().map(|m| m.size).sum(),
                "HIGHESTMODSEQ" => folder.highest_modseq(),
                _ => return Err(Reply::Bad("Unknown STATUS item".into())),
            };
            parts.push(format!("{k} {v}"));
        }
        Ok(parts.join(" "))
    }

    /// `from ADDR, user=NAME` for log lines.
    pub(crate) fn who(&self) -> String {
        format!("from {}, user={}", self.peer, self.user.as_deref().unwrap_or(""))
    }

    /// `NO [OVERQUOTA]` (RFC 5530) for a command that would take the mailbox past the
    /// user's quota, logged.
    pub(crate) fn over_quota(&self, command: &str, size: u64) -> Reply {
        tracing::info!(
            "{command} refused: over quota ({size} more bytes, quota {}), {}",
            self.store.as_ref().and_then(Store::quota).unwrap_or(0),
            self.who()
        );
        Reply::No("[OVERQUOTA] Quota exceeded".into())
    }

    pub(crate) fn append(&mut self, c: &Command) -> Result<(), Reply> {
        let name = name_arg(c, 0)?;
        let rest = c.args.get(1..).unwrap_or_default();
        // CATENATE (RFC 4469): the messages built first
        let built = self.catenate_args(&name, rest)?;
        let (validity, uids) = self.append_messages(&name, built.as_deref().unwrap_or(rest), false)?;
        let set = crate::reply::uid_set(&uids);
        self.report(true);
        self.ok(&c.tag, &format!("[APPENDUID {validity} {set}] Append completed"));
        Ok(())
    }

    /// APPEND's work after the mailbox name (also REPLACE's, with `one`: exactly one
    /// message): the folder's UIDVALIDITY and the new UIDs.
    pub(crate) fn append_messages(&mut self, name: &str, args: &[Arg], one: bool) -> Result<(u32, Vec<u32>), Reply> {
        let name = Store::canonical(name);
        // one or more (flags, date, message) groups (RFC 3502)
        let mut groups: Vec<AppendGroup<'_>> = Vec::new();
        let mut fl = Flags::default();
        let mut keywords = Vec::new();
        let mut date = None;
        for a in args {
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
                Arg::Str(s) if date.is_none() && s.len() < 40 && !s.contains(&b'\n') => {
                    match parse::date_time(&String::from_utf8_lossy(s)) {
                        Some(t) => date = Some(t),
                        None => groups.push((fl, std::mem::take(&mut keywords), date.take(), s)),
                    }
                }
                Arg::Str(s) => groups.push((fl, std::mem::take(&mut keywords), date.take(), s)),
                Arg::Atom(_) => return Err(Reply::Bad("Invalid APPEND arguments".into())),
            }
            if matches!(a, Arg::Str(_)) && date.is_none() {
                fl = Flags::default();
            }
        }
        if groups.is_empty() || date.is_some() || fl != Flags::default() || !keywords.is_empty() {
            return Err(Reply::Bad("APPEND needs a message".into()));
        }
        if one && groups.len() != 1 {
            return Err(Reply::Bad("REPLACE takes one message".into()));
        }
        let path = self.store()?.folder_path(&name).ok();
        // to the selected folder: into its shared state (no second state read from disk,
        // and the sessions of the state see the message without a rescan)
        let shared = self
            .sel
            .as_mut()
            .filter(|s| Some(s.handle.path()) == path.as_deref() && !s.folder.is_placeholder())
            .map(|s| std::mem::replace(&mut s.folder, Folder::placeholder()));
        let is_shared = shared.is_some();
        let mut folder = match shared {
            Some(f) => f,
            None => match self.store()?.folder(&name) {
                Ok(f) => f,
                Err(postern_mailbox::MailboxError::NoSuchFolder(_)) => {
                    return Err(Reply::No("[TRYCREATE] No such mailbox".into()));
                }
                Err(e) => return Err(e.into()),
            },
        };
        let res = self.append_to(&mut folder, groups);
        let validity = folder.uid_validity();
        if is_shared && let Some(sel) = self.sel.as_mut() {
            sel.folder = folder;
        }
        Ok((validity, res?))
    }

    /// APPEND's messages into `folder`, all or none: their UIDs.
    fn append_to(&mut self, folder: &mut Folder, groups: Vec<AppendGroup<'_>>) -> Result<Vec<u32>, Reply> {
        // large messages were received into the folder's tmp/ (crate::append_spool)
        // binary parts (RFC 3516 `~{n}`) are kept base64-encoded (crate::binary)
        let encoded: Vec<Option<Vec<u8>>> = groups.iter().map(|g| crate::binary::encode_binary_parts(g.3)).collect();
        let mut messages = Vec::new();
        for ((fl, keywords, date, message), encoded) in groups.into_iter().zip(&encoded) {
            let body = match self.spooled_message(message) {
                None => Message::Memory(encoded.as_deref().unwrap_or(message)),
                Some(Ok(spool)) => Message::Spooled(spool),
                Some(Err(reply)) => return Err(reply),
            };
            messages.push((fl, keywords, date, body));
        }
        let size: u64 = messages.iter().map(|m| m.3.size()).sum();
        let store = self.store()?;
        if !store.room_for(size)? {
            return Err(self.over_quota("APPEND", size));
        }
        let mut uids = Vec::new();
        for (mut fl, keywords, date, message) in messages {
            let mut res = (|| {
                for k in keywords {
                    if let Some(bit) = folder.keyword_bit(&k, true)? {
                        fl.keywords |= bit;
                    }
                }
                Ok(())
            })();
            if res.is_ok() {
                res = match message {
                    Message::Memory(bytes) => folder.append(bytes, fl, date),
                    Message::Spooled(spool) => folder.append_spool(spool, fl, date),
                }
                .map(|uid| uids.push(uid));
            }
            match res {
                Ok(()) => {}
                Err(e) => {
                    // all or nothing: take back what this command already added
                    let _ = folder.expunge(&uids);
                    return Err(e.into());
                }
            }
        }
        Ok(uids)
    }
}
