//! Message commands on the selected folder: STORE, COPY, MOVE (with COPYUID), EXPUNGE and
//! UID EXPUNGE, and the resolution of sequence and UID sets shared with FETCH and SEARCH.
//! STORE takes CONDSTORE's `(UNCHANGEDSINCE m)` (RFC 7162 §3.1.3): messages changed after
//! `m` are left as they are and named in `OK [MODIFIED set]`; with CONDSTORE on, every
//! message changed is told with its MODSEQ, even by a `.SILENT` STORE.
//! COPY past the user's quota is `NO [OVERQUOTA]` and copies nothing.
//! A STORE over many messages runs [`STORE_CHUNK`] messages at a time ([`StoreJob`]):
//! each chunk's files are renamed (the flags are in the names before the tagged OK, as
//! Dovecot's maildir sync renames before it answers) and its FETCH lines go out while the
//! next is renamed, with the process's other sessions served between chunks.

use crate::parse::{Arg, SeqSet};
use crate::reply::flag_list;
use crate::session::{Reply, Session};
use postern_mailbox::flags::{self, Flags};
use std::io::Write as _;

/// Messages a STORE renames at a stretch before their FETCH lines go to the client and
/// the process's other sessions have their turn ([`StoreJob`]).
pub const STORE_CHUNK: usize = 512;

/// How a STORE changes flags.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `FLAGS`: these flags and keywords and no others (Maildir's `P`, which has no IMAP
    /// name, kept as it is).
    Replace,
    /// `+FLAGS`.
    Add,
    /// `-FLAGS`.
    Remove,
}

impl Mode {
    /// The flags of a message that has `old` after this change of `change`.
    fn apply(self, old: Flags, change: Flags) -> Flags {
        match self {
            Mode::Replace => Flags {
                system: change.system | (old.system & flags::PASSED),
                keywords: change.keywords,
            },
            Mode::Add => Flags {
                system: old.system | change.system,
                keywords: old.keywords | change.keywords,
            },
            Mode::Remove => Flags {
                system: old.system & !change.system,
                keywords: old.keywords & !change.keywords,
            },
        }
    }
}

/// A STORE in progress ([`Session::run_store`]).
pub struct StoreJob {
    tag: String,
    /// Indexes into the session's view, and how many of them are done.
    idx: Vec<usize>,
    pos: usize,
    mode: Mode,
    change: Flags,
    silent: bool,
    uid: bool,
    unchanged_since: Option<u64>,
    /// Left as they were (changed since UNCHANGEDSINCE): UIDs or sequence numbers.
    modified: Vec<u32>,
}

/// A sequence or UID set with `*` resolved, sorted and merged: membership by binary
/// search, so a set of many ranges over a large folder costs O(n log k), not O(n × k).
pub(crate) struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    /// `set` with `*` standing for `largest`.
    pub(crate) fn new(set: &SeqSet, largest: u32) -> Ranges {
        let mut r: Vec<(u32, u32)> = set.ranges(largest).collect();
        r.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(r.len());
        for (a, b) in r {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ranges(merged)
    }

    /// The set's ranges (inclusive), ascending and merged.
    pub(crate) fn spans(&self) -> &[(u32, u32)] {
        &self.0
    }

    /// Whether `n` is in the set.
    pub(crate) fn contains(&self, n: u32) -> bool {
        let i = self.0.partition_point(|&(a, _)| a <= n);
        i > 0 && self.0[i - 1].1 >= n
    }
}

impl Session {
    /// Indexes into the view selected by a set (sequence numbers or UIDs).
    pub(crate) fn resolve(&self, set: &SeqSet, uid: bool) -> Vec<usize> {
        let Some(sel) = &self.sel else { return Vec::new() };
        if uid {
            let r = Ranges::new(set, sel.view.last().map_or(0, |v| v.0));
            (0..sel.view.len()).filter(|&i| r.contains(sel.view[i].0)).collect()
        } else {
            let r = Ranges::new(set, sel.view.len() as u32);
            (0..sel.view.len()).filter(|&i| r.contains(i as u32 + 1)).collect()
        }
    }

    pub(crate) fn message_command(&mut self, tag: &str, name: &str, args: &[Arg], uid: bool) -> Result<(), Reply> {
        if name == "SEARCH" {
            return self.search(tag, args, uid);
        }
        let set = args
            .first()
            .and_then(Arg::text)
            .and_then(|s| SeqSet::parse(&s))
            .ok_or(Reply::Bad("Invalid sequence set".into()))?;
        let set = self.expand_saved(set, uid);
        let idx = self.resolve(&set, uid);
        match name {
            "FETCH" => self.fetch(tag, &idx, args.get(1..).unwrap_or_default(), uid, &set),
            "STORE" => self.store_flags(tag, &idx, args.get(1..).unwrap_or_default(), uid),
            _ => self.copy(tag, name == "MOVE", &idx, args.get(1..).unwrap_or_default()),
        }
    }

    fn store_flags(&mut self, tag: &str, idx: &[usize], args: &[Arg], uid: bool) -> Result<(), Reply> {
        // store modifiers (RFC 4466): UNCHANGEDSINCE of RFC 7162
        let (args, unchanged_since) = match args {
            [Arg::List(m), rest @ ..] => match m.as_slice() {
                [k, n] if k.keyword().as_deref() == Some("UNCHANGEDSINCE") => {
                    let n = n
                        .text()
                        .and_then(|n| n.parse::<u64>().ok())
                        .filter(|&n| n <= i64::MAX as u64);
                    let Some(n) = n else {
                        return Err(Reply::Bad("Invalid UNCHANGEDSINCE value".into()));
                    };
                    (rest, Some(n))
                }
                _ => return Err(Reply::Bad("Unknown STORE modifier".into())),
            },
            _ => (args, None),
        };
        let item = args.first().and_then(Arg::keyword).unwrap_or_default();
        let silent = item.ends_with(".SILENT");
        let mode = match item.trim_end_matches(".SILENT") {
            "FLAGS" => Mode::Replace,
            "+FLAGS" => Mode::Add,
            "-FLAGS" => Mode::Remove,
            _ => return Err(Reply::Bad("Invalid STORE item".into())),
        };
        let names: Vec<String> = match args.get(1..).unwrap_or_default() {
            [Arg::List(l)] => l.iter().filter_map(Arg::text).collect(),
            l => l.iter().filter_map(Arg::text).collect(),
        };
        if unchanged_since.is_some() {
            self.condstore_on();
        }
        let Some(sel) = self.sel.as_mut() else {
            return Err(Reply::Bad("No mailbox".into()));
        };
        if sel.read_only {
            return Err(Reply::No("[READ-ONLY] Mailbox is read-only".into()));
        }
        let mut change = Flags::default();
        for n in &names {
            match flags::system_bit(n) {
                Some(b) => change.system |= b,
                None if n.starts_with('\\') => return Err(Reply::Bad("Invalid flag".into())),
                None => {
                    if let Some(bit) = sel.folder.keyword_bit(n, mode != Mode::Remove)? {
                        change.keywords |= bit;
                    }
                }
            }
        }
        let job = StoreJob {
            tag: tag.to_string(),
            idx: idx.to_vec(),
            pos: 0,
            mode,
            change,
            silent,
            uid,
            unchanged_since,
            modified: Vec::new(),
        };
        self.run_store(job);
        Ok(())
    }

    /// Runs (or resumes) a STORE: [`STORE_CHUNK`] messages renamed and their FETCH lines
    /// written, then, when more are left, the rest kept as the session's pending job
    /// ([`Session::busy`]): the lines of each chunk go to the client while the next is
    /// renamed, and the process's other sessions have their turn between chunks. A
    /// failure ends the STORE with its tagged answer (the chunks before it stay done).
    pub(crate) fn run_store(&mut self, mut job: StoreJob) {
        match self.store_chunk(&mut job) {
            Ok(()) if job.pos < job.idx.len() => self.pending_store = Some(job),
            Ok(()) => {
                self.report(job.uid);
                if job.modified.is_empty() {
                    self.ok(&job.tag, "Store completed");
                } else {
                    job.modified.sort_unstable();
                    let set = crate::reply::uid_set(&job.modified);
                    self.ok(&job.tag, &format!("[MODIFIED {set}] Conditional STORE failed"));
                }
            }
            Err(reply) => self.line(&format!("{} {}", job.tag, reply.text())),
        }
    }

    /// The next [`STORE_CHUNK`] messages of a STORE.
    fn store_chunk(&mut self, job: &mut StoreJob) -> Result<(), Reply> {
        let condstore = self.condstore;
        let uidonly = self.uidonly;
        let Some(sel) = self.sel.as_mut() else {
            return Err(Reply::Bad("No mailbox".into()));
        };
        if sel.folder.changed() {
            sel.folder.sync()?;
        }
        let end = job.idx.len().min(job.pos + STORE_CHUNK);
        let chunk = &job.idx[job.pos..end];
        job.pos = end;
        // every change of the chunk renamed first, then recorded in the index at one MODSEQ
        let mut wanted: Vec<(usize, u32, Flags)> = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let Some(&(u, _)) = sel.view.get(i) else { continue };
            let Some(m) = sel.folder.get(u) else { continue };
            // changed since UNCHANGEDSINCE: left as it is, named by UID or sequence number
            if job.unchanged_since.is_some_and(|n| m.modseq > n) {
                job.modified.push(if job.uid { u } else { i as u32 + 1 });
                continue;
            }
            wanted.push((i, u, job.mode.apply(m.flags, job.change)));
        }
        let pairs: Vec<(u32, Flags)> = wanted.iter().map(|&(_, u, f)| (u, f)).collect();
        let present = sel.folder.set_flags_many(&pairs)?;
        // a keyword new to the folder (this STORE's, or another session's since the chunk
        // before): * FLAGS before the FETCHes that show it
        for l in sel.flags_update() {
            self.out.extend_from_slice(l.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        let keywords = sel.folder.keywords();
        // the FETCH lines written as they are made; a flag list made once per set of flags
        let out = &mut self.out;
        let mut names: Option<(Flags, String)> = None;
        for (&(i, u, new), ok) in wanted.iter().zip(present) {
            if !ok {
                continue;
            }
            sel.view[i].1 = new;
            if job.silent && !condstore {
                continue;
            }
            if uidonly {
                let _ = write!(out, "* {u} UIDFETCH (");
            } else {
                let _ = write!(out, "* {} FETCH (", i + 1);
            }
            if job.uid {
                let _ = write!(out, "UID {u} ");
            }
            if !job.silent {
                let shown = sel.shown(u, new);
                if names.as_ref().is_none_or(|(f, _)| *f != shown) {
                    names = Some((shown, flag_list(&shown.imap_names(keywords))));
                }
                let list = names.as_ref().map_or("()", |(_, l)| l.as_str());
                let _ = write!(out, "FLAGS {list}");
                if condstore {
                    out.push(b' ');
                }
            }
            // with CONDSTORE, the MODSEQ even of a .SILENT STORE (RFC 7162 §3.1.3)
            if condstore {
                let modseq = sel.folder.get(u).map_or(0, |m| m.modseq);
                let _ = write!(out, "MODSEQ ({modseq})");
            }
            out.extend_from_slice(b")\r\n");
        }
        Ok(())
    }

    fn copy(&mut self, tag: &str, mv: bool, idx: &[usize], args: &[Arg]) -> Result<(), Reply> {
        let dest_name = args
            .first()
            .and_then(Arg::text)
            .ok_or(Reply::Bad("Missing mailbox name".into()))?;
        let mut dest = match self.store()?.folder(&dest_name) {
            Ok(f) => f,
            Err(postern_mailbox::MailboxError::NoSuchFolder(_)) => {
                return Err(Reply::No("[TRYCREATE] No such mailbox".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let Some(sel) = self.sel.as_mut() else {
            return Err(Reply::Bad("No mailbox".into()));
        };
        if mv && sel.read_only {
            return Err(Reply::No("[READ-ONLY] Mailbox is read-only".into()));
        }
        let uids: Vec<u32> = idx.iter().map(|&i| sel.view[i].0).collect();
        let same = dest.path() == sel.folder.path();
        // a COPY adds its messages' sizes to the mailbox; a MOVE adds nothing (the folders
        // share one quota, as in Dovecot), so an over-quota user can still move to Trash
        if !mv {
            let size: u64 = uids.iter().filter_map(|&u| sel.folder.get(u)).map(|m| m.size).sum();
            if !self.store()?.room_for(size)? {
                return Err(self.over_quota("COPY", size));
            }
        }
        let Some(sel) = self.sel.as_mut() else {
            return Err(Reply::Bad("No mailbox".into()));
        };
        let pairs = if mv && !same {
            sel.folder.move_to(&uids, &mut dest)?
        } else {
            sel.folder.copy_to(&uids, &mut dest)?
        };
        let code = if pairs.is_empty() {
            String::new()
        } else {
            let old: Vec<String> = pairs.iter().map(|p| p.0.to_string()).collect();
            let new: Vec<String> = pairs.iter().map(|p| p.1.to_string()).collect();
            format!("[COPYUID {} {} {}] ", dest.uid_validity(), old.join(","), new.join(","))
        };
        if mv {
            if same {
                sel.folder.expunge(&uids)?;
            }
            self.ok_untagged_then(tag, &code, "Move completed");
        } else {
            self.report(true);
            self.ok(tag, &format!("{code}Copy completed"));
        }
        Ok(())
    }

    fn ok_untagged_then(&mut self, tag: &str, code: &str, text: &str) {
        // RFC 6851: COPYUID goes in an untagged OK before the EXPUNGEs.
        if !code.is_empty() {
            self.line(&format!("* OK {code}Moved"));
        }
        self.report(true);
        self.ok(tag, text);
    }

    /// Removes `\Deleted` messages (those in `only`, a UID set, when given).
    pub(crate) fn expunge_deleted(&mut self, only: Option<SeqSet>, report: bool) -> Result<(), Reply> {
        let only = only.map(|s| self.expand_saved(s, true));
        let Some(sel) = self.sel.as_mut() else { return Ok(()) };
        if sel.read_only {
            return if report {
                Err(Reply::No("[READ-ONLY] Mailbox is read-only".into()))
            } else {
                Ok(())
            };
        }
        if sel.folder.changed() {
            sel.folder.sync()?;
        }
        let only = only.map(|s| Ranges::new(&s, sel.view.last().map_or(0, |v| v.0)));
        let uids: Vec<u32> = sel
            .folder
            .messages()
            .iter()
            .filter(|m| m.flags.deleted() && only.as_ref().is_none_or(|r| r.contains(m.uid)))
            .map(|m| m.uid)
            .collect();
        sel.folder.expunge(&uids)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Ranges;
    use crate::parse::SeqSet;

    #[test]
    fn ranges_agree_with_the_set() {
        for text in ["1:3,5,7:*", "*", "9:2", "4,4,3,2:5,100000", "1,3,5,7,9,11"] {
            let set = SeqSet::parse(text).unwrap();
            let r = Ranges::new(&set, 12);
            for n in 0..20 {
                assert_eq!(r.contains(n), set.contains(n, 12), "{text} {n}");
            }
        }
    }
}
