//! CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): `SEARCH RETURN (UPDATE ...)` and
//! `SORT RETURN (UPDATE ...)` keep their result up to date while the mailbox stays
//! selected, until `CANCELUPDATE "tag"`. As the folder changes — this session's STORE,
//! another session's or another process's delivery, flag change or expunge — the session
//! tells the change in the result, with its untagged updates ([`Session::report`]):
//! `* ESEARCH (TAG "t") [UID] REMOVEFROM (pos set) ADDTO (pos set)`. A SEARCH context's
//! position is 0 (unordered, as Dovecot writes it); a SORT context names each message's
//! position (from 1) in the sorted result: removals highest position first (each as the
//! result stands before it), additions lowest first (each at its place in the result
//! after it). Removals of expunged messages come before the EXPUNGE (or VANISHED)
//! lines, numbered as the client still knows them; the rest after EXISTS.
//!
//! Only the messages changed since the context was last brought up to date (MODSEQ
//! above its own) are tested again, so a report costs nothing for a context while the
//! folder is unchanged. Bounds: [`MAX_CONTEXTS`] per session, of at most
//! [`MAX_CONTEXT_HITS`] messages when made (another UPDATE is answered with
//! `* NO [NOUPDATE "tag"]` and runs as a plain search); a context is held while the
//! mailbox stays selected, idle or not (a UID each, and a SORT's values); UPDATE is `BAD` with
//! MIN, MAX, SAVE or PARTIAL and with sequence-number search keys (a result in sequence
//! numbers is kept as UIDs and told in the numbers of the moment).

use crate::cmd_search::Key;
use crate::session::{Reply, Selected, Session};
use crate::sort::Keyed;
use postern_mailbox::flags::Flags;

/// Most update contexts a session keeps at once.
pub const MAX_CONTEXTS: usize = 8;
/// Largest result kept up to date (a SORT's keeps its sort values: this bounds what a
/// session holds for its contexts).
pub const MAX_CONTEXT_HITS: usize = 100_000;

/// A search or sort kept up to date.
pub struct Context {
    /// The command's tag, which names the context.
    tag: String,
    /// Told by UID (a UID command) or by sequence number.
    uid: bool,
    key: Key,
    /// 0: flags and sizes; 1: the header; 2: the whole message.
    needs: u8,
    /// A SEARCH's hits, UIDs ascending (empty for a SORT).
    hits: Vec<u32>,
    /// A SORT's hits in order, by UID.
    sorted: Option<Keyed>,
    /// Up to date with the folder at this MODSEQ.
    modseq: u64,
}

impl Session {
    /// Keeps a finished SEARCH (`sorted` None; `hits` UIDs ascending) or SORT as an update
    /// context named `tag`; `Err` says why not ([`MAX_CONTEXTS`], [`MAX_CONTEXT_HITS`]).
    /// `kept` is (told by UID, what the key needs of a message, the folder's MODSEQ when
    /// the search began: what changed since is tested again at the next report).
    pub(crate) fn add_context(
        &mut self,
        tag: &str,
        kept: (bool, u8, u64),
        key: Key,
        hits: Vec<u32>,
        sorted: Option<Keyed>,
    ) -> Result<(), &'static str> {
        let (uid, needs, modseq) = kept;
        let Some(sel) = self.sel.as_mut() else {
            return Err("No mailbox");
        };
        // a tag given again replaces its context (RFC 5267 asks clients not to reuse them)
        sel.contexts.retain(|c| c.tag != tag);
        if sel.contexts.len() >= MAX_CONTEXTS {
            return Err("Too many update contexts, this result is not updated");
        }
        if hits.len().max(sorted.as_ref().map_or(0, Keyed::len)) > MAX_CONTEXT_HITS {
            return Err("Result too large to be kept up to date");
        }
        sel.contexts.push(Context {
            tag: tag.to_string(),
            uid,
            key,
            needs,
            hits,
            sorted,
            modseq,
        });
        Ok(())
    }

    /// CANCELUPDATE "tag" ...: the contexts end; an unknown tag is `BAD` (none ends).
    pub(crate) fn cancel_update(&mut self, tag: &str, args: &[crate::parse::Arg]) -> Result<(), Reply> {
        let Some(sel) = self.sel.as_mut() else {
            return Err(Reply::Bad("Select a mailbox first".into()));
        };
        if args.is_empty() {
            return Err(Reply::Bad("CANCELUPDATE needs a tag".into()));
        }
        let mut tags = Vec::new();
        for a in args {
            let t = a.text().ok_or(Reply::Bad("Invalid tag".into()))?;
            if !sel.contexts.iter().any(|c| c.tag == t) {
                let shown: String = t.chars().take(40).collect();
                return Err(Reply::Bad(format!("No update context {}", shown.escape_default())));
            }
            tags.push(t);
        }
        sel.contexts.retain(|c| !tags.contains(&c.tag));
        self.ok(tag, "Updates cancelled");
        Ok(())
    }
}

/// The number a context tells `uid` by, in `view` as it stands.
fn number(view: &[(u32, Flags)], uid: bool, u: u32) -> Option<u32> {
    if uid {
        return Some(u);
    }
    view.binary_search_by_key(&u, |v| v.0).ok().map(|i| i as u32 + 1)
}

/// ` REMOVEFROM (...)` / ` ADDTO (...)` for a SEARCH context: position 0 and the set.
fn unordered(word: &str, mut ids: Vec<u32>) -> String {
    if ids.is_empty() {
        return String::new();
    }
    ids.sort_unstable();
    format!(" {word} (0 {})", crate::reply::uid_set(&ids))
}

/// ` REMOVEFROM (...)` / ` ADDTO (...)` for a SORT context: (position, id) pairs.
fn ordered(word: &str, pairs: &[(usize, u32)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs.iter().map(|(p, id)| format!("{} {id}", p + 1)).collect();
    format!(" {word} ({})", inner.join(" "))
}

/// Takes `uids` out of a sorted result: (position, number) pairs, highest position first,
/// each position as the result stands before that removal (as the client applies them).
fn remove_sorted(k: &mut Keyed, uids: &[u32], view: &[(u32, Flags)], uid: bool) -> Vec<(usize, u32)> {
    let ids = k.ids();
    let mut at: Vec<(usize, u32)> = uids
        .iter()
        .filter_map(|&u| Some((ids.iter().position(|&x| x == u)?, u)))
        .collect();
    at.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
    let mut pairs = Vec::new();
    for (_, u) in at {
        // the number first: an expunged message is still in the view
        if let Some(n) = number(view, uid, u)
            && let Some(p) = k.remove(u)
        {
            pairs.push((p, n));
        }
    }
    pairs
}

/// The updates for messages about to be told expunged: `gone` are their indices in the
/// view, which is still the one the client knows.
pub(crate) fn expunged_lines(contexts: &mut [Context], view: &[(u32, Flags)], gone: &[usize]) -> Vec<String> {
    let mut lines = Vec::new();
    if contexts.is_empty() || gone.is_empty() {
        return lines;
    }
    let uids: Vec<u32> = gone.iter().map(|&i| view[i].0).collect();
    for c in contexts {
        let part = match c.sorted.as_mut() {
            None => {
                let mut ids = Vec::new();
                for &u in &uids {
                    if let Ok(i) = c.hits.binary_search(&u) {
                        c.hits.remove(i);
                        ids.extend(number(view, c.uid, u));
                    }
                }
                unordered("REMOVEFROM", ids)
            }
            Some(k) => ordered("REMOVEFROM", &remove_sorted(k, &uids, view, c.uid)),
        };
        if !part.is_empty() {
            lines.push(format!("{}{part}", crate::esearch::head(&c.tag, c.uid)));
        }
    }
    lines
}

/// The updates for messages new or changed since each context's MODSEQ, numbered in the
/// view as it now stands; the contexts are then up to date.
pub(crate) fn changed_lines(sel: &mut Selected) -> Vec<String> {
    let mut lines = Vec::new();
    let highest = sel.folder.highest_modseq();
    if sel.contexts.iter().all(|c| c.modseq >= highest) {
        return lines;
    }
    let mut contexts = std::mem::take(&mut sel.contexts);
    let needs_header = contexts.iter().any(|c| c.needs == 1);
    let mut hc = match needs_header {
        true => sel.folder.header_cache(),
        false => Default::default(),
    };
    for c in &mut contexts {
        if c.modseq >= highest {
            continue;
        }
        let changed: Vec<usize> = (0..sel.view.len())
            .filter(|&i| sel.folder.get(sel.view[i].0).is_some_and(|m| m.modseq > c.modseq))
            .collect();
        let mut removed = Vec::new();
        let mut added = Vec::new();
        // a SORT's additions with what places them, put in after the removals
        let mut entries = Vec::new();
        for i in changed {
            let u = sel.view[i].0;
            let (hit, header, facts) = match crate::cmd_search::test_message(sel, &c.key, c.needs, &mut hc, i) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("update of search {}: {}", c.tag, e.text());
                    continue;
                }
            };
            let was = match c.sorted.as_ref() {
                None => c.hits.binary_search(&u).is_ok(),
                Some(k) => k.ids().contains(&u),
            };
            if hit && !was {
                added.push(u);
                entries.push((u, header, facts));
            } else if !hit && was {
                removed.push(u);
            }
        }
        let part = match c.sorted.as_mut() {
            None => {
                for u in &removed {
                    if let Ok(at) = c.hits.binary_search(u) {
                        c.hits.remove(at);
                    }
                }
                for u in &added {
                    if let Err(at) = c.hits.binary_search(u) {
                        c.hits.insert(at, *u);
                    }
                }
                let num = |v: &Vec<u32>| v.iter().filter_map(|&u| number(&sel.view, c.uid, u)).collect();
                format!(
                    "{}{}",
                    unordered("REMOVEFROM", num(&removed)),
                    unordered("ADDTO", num(&added))
                )
            }
            Some(k) => {
                let gone = remove_sorted(k, &removed, &sel.view, c.uid);
                // additions: their final places, lowest first
                for (u, header, facts) in entries {
                    k.insert(u, &header, facts);
                }
                let ids = k.ids();
                let mut new: Vec<(usize, u32)> = added
                    .iter()
                    .filter_map(|&u| Some((ids.iter().position(|&x| x == u)?, number(&sel.view, c.uid, u)?)))
                    .collect();
                new.sort_unstable();
                format!("{}{}", ordered("REMOVEFROM", &gone), ordered("ADDTO", &new))
            }
        };
        if !part.is_empty() {
            lines.push(format!("{}{part}", crate::esearch::head(&c.tag, c.uid)));
        }
        c.modseq = highest;
    }
    if needs_header {
        sel.folder.save_header_cache(&hc);
    }
    sel.contexts = contexts;
    lines
}
