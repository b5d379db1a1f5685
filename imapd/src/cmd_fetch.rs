//! FETCH: FLAGS, INTERNALDATE, RFC822.SIZE, UID, ENVELOPE, BODYSTRUCTURE, BODY,
//! BODY[section]<partial>, BODY.PEEK, RFC822, RFC822.HEADER, RFC822.TEXT, and the macros
//! ALL, FAST, FULL. Sizes, dates and flags come from the folder view and its cache;
//! the message file is read only for items that need its content. A non-PEEK body fetch
//! sets `\Seen` (in a read-write folder) and reports the new FLAGS.

use crate::mime;
use crate::parse::{self, Arg};
use crate::reply::{flag_list, string};
use crate::session::{Reply, Session};
use postern_lib::mailbox::flags::{Flags, SEEN};

fn items(args: &[Arg]) -> Result<Vec<String>, Reply> {
    let list: Vec<String> = match args {
        [Arg::List(l)] => l.iter().filter_map(Arg::text).collect(),
        [Arg::Atom(a)] => vec![a.clone()],
        _ => return Err(Reply::Bad("Invalid FETCH items".into())),
    };
    let mut out = Vec::new();
    for i in list {
        match i.to_ascii_uppercase().as_str() {
            "ALL" => out.extend(["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"].map(String::from)),
            "FAST" => out.extend(["FLAGS", "INTERNALDATE", "RFC822.SIZE"].map(String::from)),
            "FULL" => out.extend(["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"].map(String::from)),
            _ => out.push(i),
        }
    }
    Ok(out)
}

/// Output gathered before a FETCH pauses for the client to read it.
pub const FETCH_CHUNK: usize = 1024 * 1024;

/// A FETCH in progress.
pub struct FetchJob {
    tag: String,
    idx: Vec<usize>,
    pos: usize,
    items: Vec<String>,
    uid: bool,
    needs_content: bool,
    wants_envelope: bool,
    sets_seen: bool,
    failed: bool,
    /// Cached envelopes of the messages still to do (read once per FETCH).
    envelopes: std::collections::HashMap<u32, Vec<u8>>,
}

/// (start, length) of a `<start.length>` partial fetch.
type Partial = Option<(u64, u64)>;

/// `BODY[...]<...>` split into (peek, section, partial).
fn body_item(item: &str) -> Option<(bool, String, Partial)> {
    let upper = item.to_ascii_uppercase();
    let (peek, rest) = if let Some(r) = upper.strip_prefix("BODY.PEEK[") {
        (true, r)
    } else if let Some(r) = upper.strip_prefix("BODY[") {
        (false, r)
    } else {
        return None;
    };
    let close = rest.find(']')?;
    let section = rest[..close].to_string();
    let tail = &rest[close + 1..];
    let partial = if tail.is_empty() {
        None
    } else {
        let inner = tail.strip_prefix('<')?.strip_suffix('>')?;
        let (a, b) = inner.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    Some((peek, section, partial))
}

impl Session {
    pub(crate) fn fetch(&mut self, tag: &str, idx: &[usize], args: &[Arg], uid: bool) -> Result<(), Reply> {
        let mut items = items(args)?;
        if uid && !items.iter().any(|i| i.eq_ignore_ascii_case("UID")) {
            items.insert(0, "UID".into());
        }
        for i in &items {
            let known = [
                "FLAGS",
                "INTERNALDATE",
                "RFC822.SIZE",
                "UID",
                "ENVELOPE",
                "BODYSTRUCTURE",
                "BODY",
                "RFC822",
                "RFC822.HEADER",
                "RFC822.TEXT",
            ]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(i));
            if !known && body_item(i).is_none() {
                return Err(Reply::Bad(format!("Unknown FETCH item {}", i.escape_default())));
            }
        }
        let needs_content = items.iter().any(|i| {
            let u = i.to_ascii_uppercase();
            u.starts_with("BODY") || u.starts_with("RFC822") && u != "RFC822.SIZE"
        });
        let wants_envelope = items.iter().any(|i| i.eq_ignore_ascii_case("ENVELOPE"));
        let sets_seen = items.iter().any(|i| {
            let u = i.to_ascii_uppercase();
            u == "RFC822" || u == "RFC822.TEXT" || body_item(&u).is_some_and(|b| !b.0)
        });
        if let Some(sel) = self.sel.as_mut()
            && sel.folder.changed()
        {
            sel.folder.sync()?;
        }
        let envelopes = match self.sel.as_ref() {
            Some(sel) if wants_envelope => sel.folder.envelopes(),
            _ => Default::default(),
        };
        let job = FetchJob {
            tag: tag.to_string(),
            idx: idx.to_vec(),
            pos: 0,
            items,
            uid,
            needs_content,
            wants_envelope,
            sets_seen,
            failed: false,
            envelopes,
        };
        self.run_fetch(job)
    }

    /// Runs (or resumes) a FETCH; stops after about [`FETCH_CHUNK`] bytes of output and
    /// keeps the rest as the session's pending job, so one FETCH of a large folder never
    /// holds more than that in memory.
    pub(crate) fn run_fetch(&mut self, mut job: FetchJob) -> Result<(), Reply> {
        let (uid, needs_content, wants_envelope, sets_seen) =
            (job.uid, job.needs_content, job.wants_envelope, job.sets_seen);
        let items = std::mem::take(&mut job.items);
        let Some(sel) = self.sel.as_mut() else {
            return Err(Reply::Bad("No mailbox".into()));
        };
        let mut failed = job.failed;
        while job.pos < job.idx.len() {
            if self.out.len() > FETCH_CHUNK {
                job.failed = failed;
                job.items = items;
                self.pending_fetch = Some(job);
                return Ok(());
            }
            let i = job.idx[job.pos];
            job.pos += 1;
            let Some(&(u, _)) = sel.view.get(i) else { continue };
            let Some(m) = sel.folder.get(u).cloned() else {
                failed = true;
                continue;
            };
            let content = if needs_content {
                match sel.folder.read(u)? {
                    Some(c) => Some(c),
                    None => {
                        failed = true;
                        continue;
                    }
                }
            } else {
                None
            };
            // ENVELOPE from the cache, else from the header (or the whole message when
            // it is being read anyway), then cached
            let envelope = if !wants_envelope {
                None
            } else if let Some(e) = job.envelopes.remove(&u) {
                Some(e)
            } else {
                let header = match &content {
                    Some(c) => Some(mime::split(c).0.to_vec()),
                    None => sel.folder.read_header(u)?,
                };
                let Some(header) = header else {
                    failed = true;
                    continue;
                };
                let mut e = Vec::new();
                mime::envelope(&mut e, &header);
                sel.folder.set_envelope(u, &e);
                Some(e)
            };
            let mut flags = m.flags;
            let mut flags_changed = false;
            if sets_seen && !sel.read_only && !flags.seen() {
                let new = Flags {
                    system: flags.system | SEEN,
                    ..flags
                };
                if sel.folder.set_flags(u, new)? {
                    flags = new;
                    sel.view[i].1 = new;
                    flags_changed = true;
                }
            }
            let keywords = sel.folder.keywords().to_vec();
            let raw = content.as_deref().unwrap_or(&[]);
            let mut out = format!("* {} FETCH (", i + 1).into_bytes();
            let mut first = true;
            let mut wrote_flags = false;
            for item in &items {
                if !first {
                    out.push(b' ');
                }
                first = false;
                let upper = item.to_ascii_uppercase();
                match upper.as_str() {
                    "FLAGS" => {
                        wrote_flags = true;
                        out.extend_from_slice(format!("FLAGS {}", flag_list(&flags.imap_names(&keywords))).as_bytes());
                    }
                    "UID" => out.extend_from_slice(format!("UID {u}").as_bytes()),
                    "INTERNALDATE" => out
                        .extend_from_slice(format!("INTERNALDATE \"{}\"", parse::format_date_time(m.date)).as_bytes()),
                    "RFC822.SIZE" => out.extend_from_slice(format!("RFC822.SIZE {}", m.size).as_bytes()),
                    "ENVELOPE" => {
                        out.extend_from_slice(b"ENVELOPE ");
                        out.extend_from_slice(envelope.as_deref().unwrap_or(b"NIL"));
                    }
                    "BODYSTRUCTURE" | "BODY" => {
                        out.extend_from_slice(upper.as_bytes());
                        out.push(b' ');
                        mime::body_structure(&mut out, &mime::parse(raw));
                    }
                    "RFC822" | "RFC822.HEADER" | "RFC822.TEXT" => {
                        let (h, b) = mime::split(raw);
                        let data = match upper.as_str() {
                            "RFC822" => raw,
                            "RFC822.HEADER" => h,
                            _ => b,
                        };
                        out.extend_from_slice(upper.as_bytes());
                        out.push(b' ');
                        literal(&mut out, data);
                    }
                    _ => {
                        let Some((_, section, partial)) = body_item(item) else {
                            continue;
                        };
                        let data = mime::section(raw, &section).unwrap_or_default();
                        let data: &[u8] = &data;
                        let name = match partial {
                            Some((start, _)) => format!("BODY[{section}]<{start}>"),
                            None => format!("BODY[{section}]"),
                        };
                        out.extend_from_slice(name.as_bytes());
                        out.push(b' ');
                        let data: &[u8] = match partial {
                            Some((start, len)) => {
                                let s = (start as usize).min(data.len());
                                let e = s.saturating_add(len as usize).min(data.len());
                                &data[s..e]
                            }
                            None => data,
                        };
                        literal(&mut out, data);
                    }
                }
            }
            if flags_changed && !wrote_flags {
                out.extend_from_slice(format!(" FLAGS {}", flag_list(&flags.imap_names(&keywords))).as_bytes());
            }
            out.extend_from_slice(b")\r\n");
            self.out.extend_from_slice(&out);
        }
        if let Some(sel) = self.sel.as_mut() {
            sel.folder.save_cache();
        }
        self.report(uid);
        if failed {
            self.line(&format!("{} NO Some messages were expunged", job.tag));
        } else {
            self.ok(&job.tag, "Fetch completed");
        }
        Ok(())
    }
}

fn literal(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        string(out, b"");
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
    }
}
