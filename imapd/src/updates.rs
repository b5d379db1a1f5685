//! Untagged updates: what a session tells its client of changes to the selected folder
//! made by others (another session, another process, a delivery) — `* n EXPUNGE` or
//! `* VANISHED`, `* n FETCH (FLAGS …)`, `* n EXISTS` and `* n RECENT`, and the keyword
//! lines before them.
//!
//! Two ways to the same lines. [`Session::report`] walks the session's view (the (UID,
//! flags) its client knows, by sequence number) beside the folder's messages; it runs
//! after every command. A session in IDLE between commands keeps no view, only a
//! [`Mirror`] of it (the folder's generation, HIGHESTMODSEQ and last UID when the view
//! equalled the state), and [`Session::report_from_mirror`] tells it what changed since
//! without building the view: the expunge log since the mirror's MODSEQ, the messages up
//! to its last UID whose MODSEQ is above it, and the messages after its last UID. So one
//! delivery told to a thousand sessions in IDLE costs per session a pass over the folder's
//! MODSEQs and a few lines, not a view of the whole folder built, compared and dropped.

use crate::session::{Mirror, Session, with_recent};
use postern_mailbox::flags::Flags;
use postern_mailbox::folder::Message;

/// The lines telling expunges: `gone` as (index in the view the client knows, UID),
/// ascending; by UID in one `* VANISHED` line after QRESYNC or UIDONLY (RFC 7162
/// §3.2.10), else `* n EXPUNGE` highest first (each leaves the lower numbers as they are).
fn expunge_lines(by_uid: bool, gone: &[(usize, u32)]) -> Vec<String> {
    if gone.is_empty() {
        return Vec::new();
    }
    if by_uid {
        let uids: Vec<u32> = gone.iter().map(|g| g.1).collect();
        return vec![format!("* VANISHED {}", crate::reply::uid_set(&uids))];
    }
    gone.iter().rev().map(|g| format!("* {} EXPUNGE", g.0 + 1)).collect()
}

/// What [`flags_line`] needs of the session.
#[derive(Clone, Copy)]
struct Style {
    uidonly: bool,
    condstore: bool,
}

/// `* n FETCH (UID u FLAGS (...))` (with MODSEQ after CONDSTORE; by UID under UIDONLY) of
/// message `m` at view index `i`, its flags as the session shows them.
fn flags_line(style: Style, i: usize, m: &Message, shown: Flags, keywords: &[String]) -> String {
    let names = crate::reply::flag_list(&shown.imap_names(keywords));
    let modseq = if style.condstore {
        format!(" MODSEQ ({})", m.modseq)
    } else {
        String::new()
    };
    let head = crate::uidonly::fetch_head(style.uidonly, i, m.uid);
    format!("{head}UID {} FLAGS {names}{modseq})", m.uid)
}

impl Session {
    fn style(&self) -> Style {
        Style {
            uidonly: self.uidonly,
            condstore: self.condstore,
        }
    }

    /// Reports what changed in the selected folder since the last report.
    pub(crate) fn report(&mut self, allow_expunge: bool) {
        let style = self.style();
        let by_uid = self.qresync || self.uidonly;
        let rev2 = self.rev2;
        let Some(sel) = self.sel.as_mut() else { return };
        // what this command did to the folder through another state (APPEND, COPY)
        if sel.handle.notice() {
            sel.folder.mark_changed();
        }
        if sel.folder.changed()
            && let Err(e) = sel.folder.sync()
        {
            tracing::warn!("sync {}: {e}", sel.name);
            return;
        }
        // a new keyword is announced before a FETCH uses it
        let mut lines = sel.flags_update();
        // the view and the messages are both in UID order: one walk over both (a binary
        // search per message was most of the work of telling 200 sessions of one
        // delivery at 50,000 messages)
        let msgs = sel.folder.messages();
        if allow_expunge {
            let mut j = 0;
            let mut gone = Vec::new();
            for (i, v) in sel.view.iter().enumerate() {
                while msgs.get(j).is_some_and(|m| m.uid < v.0) {
                    j += 1;
                }
                if msgs.get(j).is_none_or(|m| m.uid != v.0) {
                    gone.push(i);
                }
            }
            // CONTEXT updates for these, numbered as the client still knows them
            lines.extend(crate::context::expunged_lines(&mut sel.contexts, &sel.view, &gone));
            let told: Vec<(usize, u32)> = gone.iter().map(|&i| (i, sel.view[i].0)).collect();
            lines.extend(expunge_lines(by_uid, &told));
            if !gone.is_empty() {
                let mut k = 0;
                let mut idx = 0;
                sel.view.retain(|_| {
                    let keep = gone.get(k) != Some(&idx);
                    if !keep {
                        k += 1;
                    }
                    idx += 1;
                    keep
                });
            }
        }
        let keywords = sel.folder.keywords();
        let mut j = 0;
        for (i, (uid, fl)) in sel.view.iter_mut().enumerate() {
            while msgs.get(j).is_some_and(|m| m.uid < *uid) {
                j += 1;
            }
            if let Some(m) = msgs.get(j).filter(|m| m.uid == *uid)
                && m.flags != *fl
            {
                *fl = m.flags;
                let shown = with_recent(&sel.recent, *uid, m.flags);
                lines.push(flags_line(style, i, m, shown, keywords));
            }
        }
        let last = sel.view.last().map_or(0, |v| v.0);
        let before = sel.view.len();
        let from = msgs.partition_point(|m| m.uid <= last);
        sel.view.extend(msgs[from..].iter().map(|m| (m.uid, m.flags)));
        if allow_expunge {
            // the view is the state now (a claim of \Recent below that reads others'
            // changes bumps the generation, and the view is compared again)
            sel.reported = Some(sel.folder.generation());
        }
        if sel.view.len() != before {
            lines.push(format!("* {} EXISTS", sel.view.len()));
            if !rev2 {
                if !sel.read_only {
                    sel.claim_recent();
                }
                lines.push(format!("* {} RECENT", sel.recent_count()));
            }
        }
        let grown = (before, sel.view.len());
        lines.extend(crate::context::changed_lines(sel));
        for l in lines {
            self.line(&l);
        }
        // NOTIFY (RFC 5465 §5.2): the FETCH responses asked for new messages
        if grown.1 > grown.0 {
            self.notify_new_messages(grown.0..grown.1);
        }
    }

    /// For a session in IDLE whose view is put away as a [`Mirror`]: tells what changed
    /// since, as [`Session::report`] would after rebuilding the view, without building
    /// it, and leaves a new mirror. `false` when this cannot be done here (the folder is
    /// out, searches are kept up to date for CONTEXT, NOTIFY fetches new messages, the
    /// mirror is older than the expunges remembered, a UID of the view names another
    /// message now): the caller then builds the view.
    pub(crate) fn report_from_mirror(&mut self) -> bool {
        let style = self.style();
        let by_uid = self.qresync || self.uidonly;
        let rev2 = self.rev2;
        let fetches_new = self.notify_fetches_new();
        let Some(sel) = self.sel.as_mut() else { return false };
        let Some(mirror) = sel.mirror else { return false };
        if fetches_new || !sel.contexts.is_empty() || !sel.folder.is_placeholder() {
            return false;
        }
        // (the caller's refresh read the watch's events and synced the state)
        let Some(mut folder) = sel.handle.take() else {
            return false;
        };
        if folder.changed()
            && let Err(e) = folder.sync()
        {
            tracing::warn!("sync {}: {e}", sel.name);
            sel.handle.put(folder);
            return true;
        }
        let Some(delta) = Delta::since(&folder, mirror) else {
            sel.handle.put(folder);
            return false;
        };
        sel.folder = folder;
        let mut lines = sel.flags_update();
        lines.extend(expunge_lines(by_uid, &delta.gone));
        let msgs = sel.folder.messages();
        let keywords = sel.folder.keywords();
        for &i in &delta.changed {
            let m = &msgs[i];
            let shown = with_recent(&sel.recent, m.uid, m.flags);
            lines.push(flags_line(style, i, m, shown, keywords));
        }
        // the view is the state of this generation now
        let now = Mirror {
            generation: sel.folder.generation(),
            modseq: sel.folder.highest_modseq(),
            last_uid: msgs.last().map_or(0, |m| m.uid),
        };
        let total = msgs.len();
        if total > delta.new_from {
            lines.push(format!("* {total} EXISTS"));
            if !rev2 {
                // the first session to look takes \Recent; the others need not lock the
                // index to learn that nothing is left to take
                if !sel.read_only && sel.folder.recent_from() < sel.folder.next_uid() {
                    sel.claim_recent();
                }
                lines.push(format!("* {} RECENT", sel.recent_among(sel.folder.messages())));
            }
        }
        sel.mirror = Some(now);
        let f = std::mem::replace(&mut sel.folder, postern_mailbox::Folder::placeholder());
        sel.handle.put(f);
        for l in lines {
            self.line(&l);
        }
        true
    }
}

/// What changed in a folder state since a [`Mirror`] of a session's view.
struct Delta {
    /// Expunged since: (index in the view the client knows, UID), ascending.
    gone: Vec<(usize, u32)>,
    /// Indexes into the folder's messages (up to the mirror's last UID) changed since.
    changed: Vec<usize>,
    /// The messages from this index on came after the mirror's last UID.
    new_from: usize,
}

impl Delta {
    /// `None` when the expunge log does not reach back to the mirror, or an expunged UID
    /// names a message again (a replica renumbered it): the view's walk tells those.
    fn since(folder: &postern_mailbox::Folder, m: Mirror) -> Option<Delta> {
        let msgs = folder.messages();
        let new_from = msgs.partition_point(|x| x.uid <= m.last_uid);
        let known = &msgs[..new_from];
        let mut uids: Vec<u32> = folder
            .expunged_since(m.modseq)?
            .iter()
            .map(|&(_, u)| u)
            .filter(|&u| u <= m.last_uid)
            .collect();
        uids.sort_unstable();
        uids.dedup();
        let mut gone = Vec::with_capacity(uids.len());
        for (k, &u) in uids.iter().enumerate() {
            let at = known.partition_point(|x| x.uid < u);
            if known.get(at).is_some_and(|x| x.uid == u) {
                return None;
            }
            // the view held the messages below it and the expunged ones before it
            gone.push((at + k, u));
        }
        let changed = known
            .iter()
            .enumerate()
            .filter(|(_, x)| x.modseq > m.modseq)
            .map(|(i, _)| i)
            .collect();
        Some(Delta {
            gone,
            changed,
            new_from,
        })
    }
}
