//! NOTIFY (RFC 5465), a subset: `NOTIFY SET [STATUS] (filter events) ...` and
//! `NOTIFY NONE`. Filters: SELECTED, SELECTED-DELAYED (the selected mailbox is told its
//! changes as without NOTIFY: EXISTS, EXPUNGE/VANISHED, FETCH FLAGS), INBOXES (INBOX),
//! PERSONAL (every folder of the user), SUBSCRIBED, SUBTREE and MAILBOXES. Events:
//! MessageNew and MessageExpunge (together, as the RFC asks) and FlagChange tell a
//! mailbox other than the selected one as `* STATUS name (MESSAGES n UIDNEXT u
//! UIDVALIDITY v)`, with `HIGHESTMODSEQ m` for FlagChange, when those change (the items
//! Dovecot tells). MessageNew of the SELECTED filter may name fetch attributes (RFC 5465
//! §5.2, `MessageNew (UID BODY.PEEK[HEADER.FIELDS (From Subject)])`): each new message
//! of the selected mailbox is then told by an untagged FETCH with them after its EXISTS
//! (built by FETCH's own code, [`crate::cmd_fetch`]; at most [`MAX_NEW_FETCHED`]
//! messages and [`crate::cmd_fetch::FETCH_CHUNK`] bytes of them at a time, the rest told
//! by EXISTS only); fetch attributes with another filter are `BAD`, as Dovecot answers them.
//! MailboxName tells a folder created as `* LIST () "." name`, one deleted as
//! `* LIST (\NonExistent) "." name` and one renamed as `* LIST () "." new ("OLDNAME"
//! ("old"))` (RFC 5465 §5.4 with RFC 5258's extended data): a rename is a folder gone
//! and one come whose directory is the same (same inode and birth time: a RENAME moves
//! the directory, a DELETE and CREATE make a new one); SubscriptionChange tells
//! `* LIST (\Subscribed) "." name` and `* LIST () "." name`. `STATUS` answers the STATUS
//! of every watched mailbox first. Other events (AnnotationChange, the metadata ones)
//! are `NO [BADEVENT (...)]`.
//!
//! Notifications go out while the session idles (checked at most once a second from the
//! server's timer, [`Session::poll`]) and at NOOP. Changes are found by the folders'
//! `new/`, `cur/` and index stamps, so a check costs a directory read and a few stats
//! per watched folder while nothing changes; a folder is opened (as STATUS does) only
//! when its stamps moved. Bounds: [`MAX_GROUPS`] event groups, [`MAX_NAMES`] mailbox
//! names, [`MAX_WATCHED`] watched folders.

use crate::parse::{Arg, Command, SeqSet};
use crate::reply::astring;
use crate::session::{Reply, Session};
use postern_mailbox::{SEPARATOR, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime};

/// Most event groups in one NOTIFY SET.
pub const MAX_GROUPS: usize = 32;
/// Most mailbox names in one NOTIFY SET.
pub const MAX_NAMES: usize = 256;
/// Most folders watched for message events.
pub const MAX_WATCHED: usize = 256;
/// Most new messages told by a FETCH at one EXISTS (MessageNew's fetch attributes);
/// those after are told by the EXISTS only (the client can FETCH them).
pub const MAX_NEW_FETCHED: usize = 1000;
/// Least time between two checks.
const CHECK_EVERY: Duration = Duration::from_millis(900);

/// The events this server tells, as BADEVENT lists them.
const SUPPORTED: &str = "(MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)";

/// Which mailboxes an event group is about.
#[derive(Debug, PartialEq)]
enum Filter {
    Selected,
    Inboxes,
    Personal,
    Subscribed,
    Subtree(Vec<String>),
    Mailboxes(Vec<String>),
}

/// The events of a group.
#[derive(Debug, Default, PartialEq)]
struct Events {
    /// MessageNew and MessageExpunge.
    messages: bool,
    /// MessageNew's fetch attributes (SELECTED only): a list FETCH accepts.
    fetch: Option<Vec<Arg>>,
    flags: bool,
    names: bool,
    subscriptions: bool,
}

/// What a watched folder was when last told.
#[derive(Clone, Debug, PartialEq)]
struct Known {
    stamps: [Option<SystemTime>; 3],
    /// MESSAGES, UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ.
    status: (usize, u32, u32, u64),
}

/// What tells a folder's directory from another one: device, inode and birth time (a
/// RENAME keeps them; a folder deleted and created again has a new birth time even where
/// the inode number is used again).
type DirId = (u64, u64, SystemTime);

/// A session's NOTIFY SET.
pub struct Notify {
    groups: Vec<(Filter, Events)>,
    watched: BTreeMap<String, Known>,
    /// The folders last seen, with their directories' ids when MailboxName is asked for.
    folders: BTreeMap<String, Option<DirId>>,
    subscribed: BTreeSet<String>,
    last: Instant,
}

fn bad_event() -> Reply {
    Reply::No(format!("[BADEVENT {SUPPORTED}] Unsupported NOTIFY event"))
}

/// The mailbox names after SUBTREE or MAILBOXES: one, or a list.
fn names(arg: Option<&Arg>) -> Result<Vec<String>, Reply> {
    let list = match arg {
        Some(Arg::List(l)) if !l.is_empty() => l.iter().map(Arg::text).collect::<Option<Vec<_>>>(),
        Some(a) => a.text().map(|n| vec![n]),
        None => None,
    };
    let list = list.ok_or(Reply::Bad("NOTIFY needs mailbox names".into()))?;
    Ok(list.iter().map(|n| Store::canonical(n)).collect())
}

/// One `(filter events)` group.
fn group(items: &[Arg]) -> Result<(Filter, Events), Reply> {
    let word = items.first().and_then(Arg::keyword).unwrap_or_default();
    let (filter, rest) = match word.as_str() {
        "SELECTED" | "SELECTED-DELAYED" => (Filter::Selected, &items[1..]),
        "INBOXES" => (Filter::Inboxes, &items[1..]),
        "PERSONAL" => (Filter::Personal, &items[1..]),
        "SUBSCRIBED" => (Filter::Subscribed, &items[1..]),
        "SUBTREE" => (
            Filter::Subtree(names(items.get(1))?),
            items.get(2..).unwrap_or_default(),
        ),
        "MAILBOXES" => (
            Filter::Mailboxes(names(items.get(1))?),
            items.get(2..).unwrap_or_default(),
        ),
        _ => return Err(Reply::Bad("Unknown NOTIFY filter".into())),
    };
    let mut ev = Events::default();
    let (mut new, mut expunge) = (false, false);
    match rest {
        [e] if e.keyword().as_deref() == Some("NONE") => {}
        [Arg::List(list)] if !list.is_empty() => {
            let mut i = 0;
            while i < list.len() {
                match list[i].keyword().as_deref() {
                    Some("MESSAGENEW") => {
                        new = true;
                        // fetch attributes for new messages of the selected mailbox
                        if let Some(Arg::List(atts)) = list.get(i + 1) {
                            if filter != Filter::Selected {
                                return Err(Reply::Bad(
                                    "MessageNew's fetch attributes are for the selected mailbox only".into(),
                                ));
                            }
                            if atts.is_empty() {
                                return Err(Reply::Bad("Invalid fetch items".into()));
                            }
                            crate::cmd_fetch::checked_items(&list[i + 1..i + 2])?;
                            ev.fetch = Some(atts.clone());
                            i += 1;
                        }
                    }
                    Some("MESSAGEEXPUNGE") => expunge = true,
                    Some("FLAGCHANGE") => ev.flags = true,
                    Some("MAILBOXNAME") => ev.names = true,
                    Some("SUBSCRIPTIONCHANGE") => ev.subscriptions = true,
                    Some(_) => return Err(bad_event()),
                    None => return Err(Reply::Bad("Invalid NOTIFY event".into())),
                }
                i += 1;
            }
        }
        _ => return Err(Reply::Bad("NOTIFY needs a list of events or NONE".into())),
    }
    // RFC 5465 §5: MessageNew and MessageExpunge together; FlagChange with both
    if new != expunge || (ev.flags && !new) {
        return Err(Reply::Bad(
            "MessageNew and MessageExpunge go together, and FlagChange needs both".into(),
        ));
    }
    ev.messages = new;
    Ok((filter, ev))
}

/// Whether `name` is one `filter` is about.
fn matches(filter: &Filter, name: &str, subscribed: &BTreeSet<String>) -> bool {
    match filter {
        Filter::Selected => false,
        Filter::Inboxes => name == "INBOX",
        Filter::Personal => true,
        Filter::Subscribed => subscribed.contains(name),
        Filter::Subtree(roots) => roots.iter().any(|r| {
            name == r
                || name
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with(SEPARATOR))
        }),
        Filter::Mailboxes(list) => list.iter().any(|n| n == name),
    }
}

/// The id of a folder's directory, if it is there.
fn dir_id(store: &Store, name: &str) -> Option<DirId> {
    let m = std::fs::metadata(store.folder_path(name).ok()?).ok()?;
    // no birth time (a file system without one): no id, so no rename is told, only the
    // folder gone and the one come (an inode number alone can be a deleted folder's, used
    // again)
    Some((m.dev(), m.ino(), m.created().ok()?))
}

/// The stamps that move when a folder's messages or flags change.
fn stamps(store: &Store, name: &str) -> [Option<SystemTime>; 3] {
    let Ok(dir) = store.folder_path(name) else {
        return [None; 3];
    };
    let m = |p: std::path::PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [m(dir.join("new")), m(dir.join("cur")), m(dir.join("postern-index"))]
}

impl Session {
    /// NOTIFY SET ... / NOTIFY NONE.
    pub(crate) fn notify_command(&mut self, c: &Command) -> Result<(), Reply> {
        match c.args.first().and_then(Arg::keyword).as_deref() {
            Some("NONE") if c.args.len() == 1 => {
                self.notify = None;
                self.ok(&c.tag, "NOTIFY completed");
                return Ok(());
            }
            Some("SET") => {}
            _ => return Err(Reply::Bad("NOTIFY SET or NOTIFY NONE".into())),
        }
        let mut rest = &c.args[1..];
        let mut status = false;
        // the status-indicator (RFC 5465 §3.1)
        if rest.first().and_then(Arg::keyword).as_deref() == Some("STATUS") {
            status = true;
            rest = &rest[1..];
        }
        if rest.is_empty() || rest.len() > MAX_GROUPS {
            return Err(Reply::Bad(format!("NOTIFY SET needs 1 to {MAX_GROUPS} event groups")));
        }
        let mut groups = Vec::new();
        for g in rest {
            let Arg::List(items) = g else {
                return Err(Reply::Bad("NOTIFY event groups are lists".into()));
            };
            groups.push(group(items)?);
        }
        let named: usize = groups
            .iter()
            .map(|(f, _)| match f {
                Filter::Subtree(n) | Filter::Mailboxes(n) => n.len(),
                _ => 0,
            })
            .sum();
        if named > MAX_NAMES {
            return Err(Reply::Bad(format!("[LIMIT] More than {MAX_NAMES} mailbox names")));
        }
        let mut n = Notify {
            groups,
            watched: BTreeMap::new(),
            folders: BTreeMap::new(),
            subscribed: BTreeSet::new(),
            last: Instant::now(),
        };
        // the state now: later changes are told against it; STATUS tells it
        let lines = self.notify_changes(&mut n, status);
        for l in lines {
            self.line(&l);
        }
        self.notify = Some(Box::new(n));
        self.ok(&c.tag, "NOTIFY completed");
        Ok(())
    }

    /// While idling and at NOOP: the notifications due (at most one check a second
    /// while idling, `now` at NOOP).
    pub(crate) fn notify_poll(&mut self, now: bool) {
        let Some(mut n) = self.notify.take() else { return };
        if now || n.last.elapsed() >= CHECK_EVERY {
            n.last = Instant::now();
            for l in self.notify_changes(&mut n, true) {
                self.line(&l);
            }
        }
        self.notify = Some(n);
    }

    /// Whether NOTIFY asks for FETCH responses of new messages (which need the view).
    pub(crate) fn notify_fetches_new(&self) -> bool {
        self.notify
            .as_ref()
            .is_some_and(|n| n.groups.iter().any(|(_, e)| e.fetch.is_some()))
    }

    /// After EXISTS told new messages (the view's indexes `new`): the FETCH responses
    /// MessageNew's fetch attributes ask for.
    pub(crate) fn notify_new_messages(&mut self, new: std::ops::Range<usize>) {
        let Some(atts) = self
            .notify
            .as_ref()
            .and_then(|n| n.groups.iter().find_map(|(_, e)| e.fetch.clone()))
        else {
            return;
        };
        if new.len() > MAX_NEW_FETCHED {
            tracing::info!(
                "NOTIFY: {} new messages, FETCH for the first {MAX_NEW_FETCHED}, {}",
                new.len(),
                self.who()
            );
        }
        let idx: Vec<usize> = new.take(MAX_NEW_FETCHED).collect();
        let job = match self.fetch_job("", &idx, &[Arg::List(atts)], false, &SeqSet(Vec::new())) {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!("NOTIFY: FETCH of new messages: {}, {}", e.text(), self.who());
                return;
            }
        };
        if let Err(e) = self.run_fetch(job) {
            tracing::warn!("NOTIFY: FETCH of new messages: {}, {}", e.text(), self.who());
        }
    }

    /// Compares the user's folders with what `n` last saw; the lines telling the
    /// differences (`tell`: else only learnt, as at NOTIFY SET without STATUS).
    fn notify_changes(&self, n: &mut Notify, tell: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(store) = self.store.as_ref() else { return lines };
        let first = n.folders.is_empty();
        let folders: BTreeSet<String> = match store.list() {
            Ok(l) => l.into_iter().collect(),
            Err(e) => {
                tracing::warn!("NOTIFY: {e}, {}", self.who());
                return lines;
            }
        };
        let subscribed: BTreeSet<String> = store.subscriptions().into_iter().collect();
        let about = |name: &str, want: fn(&Events) -> bool| {
            n.groups.iter().any(|(f, e)| want(e) && matches(f, name, &subscribed))
        };
        // the directories' ids, to tell a RENAME from a DELETE and a CREATE: learnt for
        // every folder at first, then for folders come since (a stat each)
        let names_asked = n.groups.iter().any(|(_, e)| e.names);
        let folders: BTreeMap<String, Option<DirId>> = folders
            .into_iter()
            .map(|f| {
                let id = match n.folders.get(&f) {
                    Some(id) => *id,
                    None if names_asked => dir_id(store, &f),
                    None => None,
                };
                (f, id)
            })
            .collect();
        if !first {
            let gone: Vec<&String> = n.folders.keys().filter(|f| !folders.contains_key(*f)).collect();
            let mut renamed = BTreeSet::new();
            for (name, id) in folders.iter().filter(|(f, _)| !n.folders.contains_key(*f)) {
                let old = gone
                    .iter()
                    .copied()
                    .find(|g| id.is_some() && n.folders.get(g.as_str()) == Some(id) && !renamed.contains(g.as_str()));
                if let Some(old) = old {
                    renamed.insert(old.as_str());
                    if about(name, |e| e.names) || about(old, |e| e.names) {
                        lines.push(format!(
                            "* LIST () \"{SEPARATOR}\" {} (\"OLDNAME\" ({}))",
                            astring(name),
                            astring(old)
                        ));
                    }
                } else if about(name, |e| e.names) {
                    lines.push(format!("* LIST () \"{SEPARATOR}\" {}", astring(name)));
                }
            }
            for name in gone.iter().filter(|g| !renamed.contains(g.as_str())) {
                if about(name, |e| e.names) {
                    lines.push(format!("* LIST (\\NonExistent) \"{SEPARATOR}\" {}", astring(name)));
                }
            }
            for name in subscribed.symmetric_difference(&n.subscribed) {
                if about(name, |e| e.subscriptions) {
                    let attr = if subscribed.contains(name) {
                        "(\\Subscribed)"
                    } else {
                        "()"
                    };
                    lines.push(format!("* LIST {attr} \"{SEPARATOR}\" {}", astring(name)));
                }
            }
        }
        let selected = self.sel.as_ref().map(|s| s.name.as_str());
        let mut watched = BTreeMap::new();
        for name in folders.keys().filter(|f| Some(f.as_str()) != selected) {
            if watched.len() >= MAX_WATCHED {
                break;
            }
            if !about(name, |e| e.messages) {
                continue;
            }
            let flags = about(name, |e| e.flags);
            let st = stamps(store, name);
            let before = n.watched.remove(name);
            let known = match before {
                Some(k) if k.stamps == st => k,
                _ => {
                    let Ok(f) = store.folder(name) else { continue };
                    let status = (f.messages().len(), f.next_uid(), f.uid_validity(), f.highest_modseq());
                    let k = Known { stamps: st, status };
                    let told = before.as_ref().map(|b| b.status);
                    // a change of HIGHESTMODSEQ alone is told only for FlagChange; a folder
                    // first seen later (created, unselected) is learnt, not told
                    let changed = match told {
                        None => first,
                        Some(t) => (t.0, t.1, t.2) != (status.0, status.1, status.2) || (flags && t.3 != status.3),
                    };
                    if tell && changed {
                        let modseq = match flags {
                            true => format!(" HIGHESTMODSEQ {}", status.3),
                            false => String::new(),
                        };
                        lines.push(format!(
                            "* STATUS {} (MESSAGES {} UIDNEXT {} UIDVALIDITY {}{modseq})",
                            astring(name),
                            status.0,
                            status.1,
                            status.2
                        ));
                    }
                    k
                }
            };
            watched.insert(name.clone(), known);
        }
        n.watched = watched;
        n.folders = folders;
        n.subscribed = subscribed;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(Filter, Events), Reply> {
        let c = crate::parse::command(format!("t NOTIFY SET {s}").as_bytes()).unwrap();
        match &c.args[1] {
            Arg::List(l) => group(l),
            _ => unreachable!(),
        }
    }

    #[test]
    fn groups_parse_and_refuse_what_the_rfc_and_this_server_refuse() {
        let (f, e) = parse("(PERSONAL (MessageNew MessageExpunge FlagChange MailboxName))").unwrap();
        assert_eq!(f, Filter::Personal);
        assert!(e.messages && e.flags && e.names && !e.subscriptions);
        let (f, _) = parse("(SUBTREE (Work \"a b\") (SubscriptionChange))").unwrap();
        assert_eq!(f, Filter::Subtree(vec!["Work".into(), "a b".into()]));
        let (f, e) =
            parse("(SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (From Subject)]) MessageExpunge))").unwrap();
        assert_eq!(f, Filter::Selected);
        assert!(e.messages);
        assert_eq!(
            e.fetch,
            Some(vec![
                Arg::Atom("UID".into()),
                Arg::Atom("BODY.PEEK[HEADER.FIELDS (From Subject)]".into())
            ])
        );
        let (f, e) = parse("(MAILBOXES inbox NONE)").unwrap();
        assert_eq!((f, e), (Filter::Mailboxes(vec!["INBOX".into()]), Events::default()));
        for (bad, why) in [
            (
                "(PERSONAL (MessageNew))",
                "BAD MessageNew and MessageExpunge go together, and FlagChange needs both",
            ),
            (
                "(PERSONAL (FlagChange))",
                "BAD MessageNew and MessageExpunge go together, and FlagChange needs both",
            ),
            (
                "(PERSONAL (AnnotationChange))",
                "NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] Unsupported NOTIFY event",
            ),
            (
                "(PERSONAL (MessageNew (UID) MessageExpunge))",
                "BAD MessageNew's fetch attributes are for the selected mailbox only",
            ),
            ("(SELECTED (MessageNew () MessageExpunge))", "BAD Invalid fetch items"),
            (
                "(SELECTED (MessageNew (UID FOO) MessageExpunge))",
                "BAD Unknown FETCH item FOO",
            ),
            ("(EVERYWHERE (MessageNew MessageExpunge))", "BAD Unknown NOTIFY filter"),
            ("(PERSONAL)", "BAD NOTIFY needs a list of events or NONE"),
            ("(MAILBOXES)", "BAD NOTIFY needs mailbox names"),
        ] {
            assert_eq!(parse(bad).err().map(|r| r.text()).as_deref(), Some(why), "{bad}");
        }
    }

    #[test]
    fn subtree_is_the_mailbox_and_its_children() {
        let f = Filter::Subtree(vec!["Work".into()]);
        let none = BTreeSet::new();
        assert!(matches(&f, "Work", &none));
        assert!(matches(&f, "Work.2024", &none));
        assert!(!matches(&f, "Workshop", &none));
        assert!(matches(&Filter::Inboxes, "INBOX", &none));
        assert!(!matches(&Filter::Inboxes, "Sent", &none));
    }

    fn session(dir: &std::path::Path) -> Session {
        let settings = crate::session::Settings {
            mail_base: dir.to_path_buf(),
            max_literal: 1000,
            max_line: 300,
            hostname: "mail.example.test".into(),
            starttls: false,
        };
        let mut s = Session::new(settings, true, false);
        assert!(s.input(b"a LOGIN alice secret\r\n").is_some());
        s.auth_done(Ok("alice".into()));
        s.take_output();
        s
    }

    fn text(s: &mut Session) -> String {
        String::from_utf8_lossy(&s.take_output()).into_owned()
    }

    #[test]
    fn a_rename_is_told_with_its_old_name_and_a_delete_and_create_are_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = session(dir.path());
        let mut b = session(dir.path());
        for c in ["c CREATE Work\r\n", "c CREATE Work.2024\r\n", "c CREATE Other\r\n"] {
            a.input(c.as_bytes());
        }
        text(&mut a);
        a.input(b"n NOTIFY SET (PERSONAL (MailboxName))\r\n");
        assert_eq!(text(&mut a), "n OK NOTIFY completed\r\n");
        b.input(b"r RENAME Work \"New work\"\r\n");
        assert!(text(&mut b).contains("r OK"));
        a.input(b"x NOOP\r\n");
        assert_eq!(
            text(&mut a),
            "* LIST () \".\" \"New work\" (\"OLDNAME\" (Work))\r\n\
             * LIST () \".\" \"New work.2024\" (\"OLDNAME\" (Work.2024))\r\n\
             x OK Completed\r\n"
        );
        b.input(b"d DELETE Other\r\nc CREATE Fresh\r\n");
        text(&mut b);
        a.input(b"x NOOP\r\n");
        assert_eq!(
            text(&mut a),
            "* LIST () \".\" Fresh\r\n* LIST (\\NonExistent) \".\" Other\r\nx OK Completed\r\n"
        );
    }

    #[test]
    fn an_idling_session_is_told_of_another_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = session(dir.path());
        let mut b = session(dir.path());
        a.input(b"c CREATE Work\r\n");
        text(&mut a);
        let v = Store::open(dir.path(), "alice")
            .unwrap()
            .folder("Work")
            .unwrap()
            .uid_validity();
        a.input(b"n NOTIFY SET STATUS (MAILBOXES Work (MessageNew MessageExpunge))\r\n");
        assert_eq!(
            text(&mut a),
            format!("* STATUS Work (MESSAGES 0 UIDNEXT 1 UIDVALIDITY {v})\r\nn OK NOTIFY completed\r\n")
        );
        a.input(b"i IDLE\r\n");
        assert_eq!(text(&mut a), "+ idling\r\n");
        b.input(b"x APPEND Work {3+}\r\nx\r\n\r\n");
        assert!(text(&mut b).contains("x OK"));
        std::thread::sleep(CHECK_EVERY);
        a.poll();
        assert_eq!(
            text(&mut a),
            format!("* STATUS Work (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v})\r\n")
        );
    }
}
