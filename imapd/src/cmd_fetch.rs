//! FETCH: FLAGS, INTERNALDATE, RFC822.SIZE, UID, ENVELOPE, BODYSTRUCTURE, BODY,
//! `BODY[section]<partial>`, BODY.PEEK, RFC822, RFC822.HEADER, RFC822.TEXT, and the macros
//! ALL, FAST, FULL. Sizes, dates and flags come from the folder view and its cache;
//! the message file is read only for items that need its content. When the only content
//! asked for is whole messages (`BODY[]`, `BODY.PEEK[]`, `RFC822`), each file is read as
//! stored into one reused buffer and its bare LFs become CRLF as it is copied into the
//! output, with the literal's size counted first. A non-PEEK body fetch sets `\Seen` (in a
//! read-write folder) and reports the new FLAGS.
//!
//! CONDSTORE (RFC 7162): the `MODSEQ` item, the `(CHANGEDSINCE m)` modifier (only
//! messages changed after `m`, MODSEQ added after the UID), and MODSEQ beside FLAGS once
//! CONDSTORE is on. A message another session expunged that this one has not been told
//! of (RFC 2180 §4.1) is answered from what the folder state kept of it
//! ([`postern_mailbox::Folder::ghost`]: flags, UID, size, date, MODSEQ) and from its
//! file while that is readable ([`postern_mailbox::Folder::read_ghost`]: kept open
//! when this process expunged it); only what cannot be answered at all makes the FETCH
//! end `NO [EXPUNGEISSUED]`.
//!
//! OBJECTID (RFC 8474): `EMAILID` and `THREADID` ([`crate::objectid`]). SAVEDATE
//! (RFC 8514): when the message came into this folder, kept in the store's index. PREVIEW
//! and `PREVIEW (LAZY)` (RFC 8970): [`crate::preview`], from at most its first
//! [`crate::preview::PREVIEW_READ`] bytes.
use crate::binary;
use crate::mime;
use crate::parse::{self, Arg};
use crate::reply::{flag_list, string};
use crate::session::{Reply, Session, WORK_SLICE};
use postern_mailbox::flags::{Flags, SEEN};
use postern_mailbox::stream::CrlfStream;

fn items(args: &[Arg]) -> Result<Vec<String>, Reply> {
    let list: Vec<String> = match args {
        [Arg::List(l)] => {
            // PREVIEW's modifiers (RFC 8970 §3.1): only LAZY is known
            for (i, a) in l.iter().enumerate() {
                if let Arg::List(m) = a
                    && i > 0
                    && l[i - 1].keyword().as_deref() == Some("PREVIEW")
                    && !m.iter().all(|x| x.keyword().as_deref() == Some("LAZY"))
                {
                    return Err(Reply::Bad("Unknown PREVIEW modifier".into()));
                }
            }
            l.iter().filter_map(Arg::text).collect()
        }
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

/// The most one message's FETCH response may hold: this many times the message's size,
/// plus [`FETCH_CHUNK`]. More (the same body asked for again and again, as
/// `FETCH 1 (BODY[] BODY[] ...)`) is left out and the FETCH answers `NO [LIMIT]`, so the
/// items of one command cannot multiply a message in memory.
pub const MAX_PER_MESSAGE: usize = 4;

/// A FETCH in progress.
pub struct FetchJob {
    /// The FETCH responses NOTIFY asks for new messages (RFC 5465 §5.2,
    /// [`crate::notify`]): no tagged answer, run to the end at once (never paused, nothing
    /// streamed), and stopped after [`FETCH_CHUNK`] bytes of output (the messages left
    /// are told by EXISTS only).
    pub(crate) notify: bool,
    /// `(CHANGEDSINCE m)`: only messages whose MODSEQ is above `m` (RFC 7162).
    changed_since: Option<u64>,
    /// CONDSTORE is on and FLAGS is fetched without MODSEQ: MODSEQ is added.
    flags_modseq: bool,
    /// `(VANISHED)`: expunged messages were told as VANISHED (EARLIER), none is answered.
    no_ghosts: bool,
    tag: String,
    idx: Vec<usize>,
    pos: usize,
    /// The items, upper-cased, each with its `BODY[...]` parse when it is one.
    items: Vec<(String, Option<BodyItem>)>,
    uid: bool,
    needs_content: bool,
    /// Every content item is the whole message (`BODY[]`, `BODY.PEEK[]`, `RFC822`): the
    /// file is read into `buf` as stored and line ends are converted as it is written out.
    whole_only: bool,
    wants_envelope: bool,
    /// PREVIEW is asked for: a bounded prefix of each message is read for it.
    wants_preview: bool,
    sets_seen: bool,
    failed: bool,
    /// A BINARY item named a part whose Content-Transfer-Encoding is unknown.
    unknown_cte: bool,
    /// The items asked for more than [`MAX_PER_MESSAGE`] of a message's output.
    too_much: bool,
    /// Cached envelopes of the messages still to do (read once per FETCH).
    envelopes: std::collections::HashMap<u32, Vec<u8>>,
    /// The current message's file, reused from message to message.
    buf: Vec<u8>,
    /// A large message's response being sent from its file.
    streaming: Option<Streaming>,
}

/// A whole message larger than this (its `W=` size) is streamed from its file as the
/// client reads (`Streaming`) rather than read into memory — also beside items that
/// read the message (BODYSTRUCTURE, parts), which are made from a copy read for the
/// message's turn and let go before its response has been sent.
pub const STREAM_ABOVE: u64 = 256 * 1024;

/// One message's FETCH response sent from its file: the response's text with a body
/// literal between each two pieces, the literals streamed with [`CrlfStream`] a chunk at
/// a time, so a FETCH of a message of any size holds about [`FETCH_CHUNK`].
struct Streaming {
    texts: std::collections::VecDeque<Vec<u8>>,
    body: CrlfStream,
    in_body: bool,
}

impl Streaming {
    /// Appends to `out` until it holds [`FETCH_CHUNK`]; `true` once the response is all
    /// out.
    fn pump(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        loop {
            if out.len() > FETCH_CHUNK {
                return Ok(false);
            }
            if self.in_body {
                if self.body.done() {
                    self.in_body = false;
                } else {
                    let at = out.len();
                    self.body.fill(out)?;
                    crate::reply::no_nuls(&mut out[at..]);
                }
                continue;
            }
            let Some(text) = self.texts.pop_front() else {
                return Ok(true);
            };
            out.extend_from_slice(&text);
            if self.texts.is_empty() {
                return Ok(true);
            }
            // a body literal follows
            self.body.rewind()?;
            if self.body.size() == 0 {
                string(out, b"");
            } else {
                out.extend_from_slice(format!("{{{}}}\r\n", self.body.size()).as_bytes());
                self.in_body = true;
            }
        }
    }
}

/// A parsed `BODY[section]<partial>` item: (peek, section, partial).
type BodyItem = (bool, String, Partial);

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

/// The items of a FETCH (a list or one item, the macros expanded), each checked to be
/// one this server answers.
pub(crate) fn checked_items(args: &[Arg]) -> Result<Vec<String>, Reply> {
    let items = items(args)?;
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
            "MODSEQ",
            "EMAILID",
            "THREADID",
            "SAVEDATE",
            "PREVIEW",
        ]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(i));
        if !known && body_item(i).is_none() && binary::item(&i.to_ascii_uppercase()).is_none() {
            return Err(Reply::Bad(format!("Unknown FETCH item {}", i.escape_default())));
        }
    }
    Ok(items)
}

impl Session {
    pub(crate) fn fetch(
        &mut self,
        tag: &str,
        idx: &[usize],
        args: &[Arg],
        uid: bool,
        set: &parse::SeqSet,
    ) -> Result<(), Reply> {
        let job = self.fetch_job(tag, idx, args, uid, set)?;
        self.run_fetch(job)
    }

    /// A FETCH's job, not yet run (`tag` empty: an untagged one, [`FetchJob::notify`]).
    pub(crate) fn fetch_job(
        &mut self,
        tag: &str,
        idx: &[usize],
        args: &[Arg],
        uid: bool,
        set: &parse::SeqSet,
    ) -> Result<FetchJob, Reply> {
        // fetch modifiers (RFC 4466): CHANGEDSINCE and (QRESYNC) VANISHED of RFC 7162
        let (args, changed_since, vanished) = match args {
            [items, Arg::List(m)] => {
                let mut changed_since = None;
                let mut vanished = false;
                let mut i = 0;
                while i < m.len() {
                    match m[i].keyword().as_deref() {
                        Some("CHANGEDSINCE") if changed_since.is_none() => {
                            let n = m.get(i + 1).and_then(Arg::text).and_then(|n| n.parse::<u64>().ok());
                            let Some(n) = n.filter(|&n| n <= i64::MAX as u64) else {
                                return Err(Reply::Bad("Invalid CHANGEDSINCE value".into()));
                            };
                            changed_since = Some(n);
                            i += 1;
                        }
                        Some("VANISHED") if !vanished => vanished = true,
                        _ => return Err(Reply::Bad("Unknown FETCH modifier".into())),
                    }
                    i += 1;
                }
                // RFC 7162 §3.2.6: VANISHED only in UID FETCH, with CHANGEDSINCE, after ENABLE QRESYNC
                if vanished && (!uid || changed_since.is_none() || !self.qresync) {
                    return Err(Reply::Bad(
                        "VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC enabled".into(),
                    ));
                }
                (std::slice::from_ref(items), changed_since, vanished)
            }
            _ => (args, None, false),
        };
        let mut items = checked_items(args)?;
        if uid && !items.iter().any(|i| i.eq_ignore_ascii_case("UID")) {
            items.insert(0, "UID".into());
        }
        let wants_modseq = items.iter().any(|i| i.eq_ignore_ascii_case("MODSEQ"));
        if changed_since.is_some() && !wants_modseq {
            // as RFC 7162's examples show it: after the UID
            let at = usize::from(items.first().is_some_and(|i| i.eq_ignore_ascii_case("UID")));
            items.insert(at, "MODSEQ".into());
        }
        if changed_since.is_some() || wants_modseq {
            self.condstore_on();
        }
        if let (true, Some(since), Some(sel)) = (vanished, changed_since, self.sel.as_mut()) {
            if sel.folder.changed() {
                sel.folder.sync()?;
            }
            let known = crate::cmd_message::Ranges::new(set, sel.folder.next_uid().saturating_sub(1));
            let gone = crate::qresync::vanished(&sel.folder, since, &known);
            if !gone.is_empty() {
                self.line(&format!("* VANISHED (EARLIER) {gone}"));
            }
        }
        let items: Vec<(String, Option<BodyItem>)> = items
            .iter()
            .map(|i| {
                let u = i.to_ascii_uppercase();
                let b = body_item(&u);
                (u, b)
            })
            .collect();
        let content_item = |(u, b): &(String, Option<BodyItem>)| {
            b.is_some()
                || u.starts_with("BODY")
                || u.starts_with("BINARY")
                || u.starts_with("RFC822") && u != "RFC822.SIZE"
        };
        let needs_content = items.iter().any(content_item);
        let whole_only = items
            .iter()
            .filter(|i| content_item(i))
            .all(|(u, b)| u == "RFC822" || matches!(b, Some((_, s, None)) if s.is_empty()));
        let wants_envelope = items.iter().any(|(u, _)| u == "ENVELOPE");
        let wants_preview = items.iter().any(|(u, _)| u == "PREVIEW");
        let sets_seen = items.iter().any(|(u, b)| {
            u == "RFC822" || u == "RFC822.TEXT" || u.starts_with("BINARY[") || b.as_ref().is_some_and(|b| !b.0)
        });
        if let Some(sel) = self.sel.as_mut()
            && sel.folder.changed()
        {
            sel.folder.sync()?;
        }
        let envelopes = match self.sel.as_mut() {
            Some(sel) if wants_envelope => {
                let uids: Vec<u32> = idx.iter().filter_map(|&i| sel.view.get(i).map(|v| v.0)).collect();
                sel.folder.envelopes_of(&uids)
            }
            _ => Default::default(),
        };
        let flags_modseq =
            self.condstore && items.iter().any(|(u, _)| u == "FLAGS") && !items.iter().any(|(u, _)| u == "MODSEQ");
        Ok(FetchJob {
            notify: tag.is_empty(),
            changed_since,
            flags_modseq,
            no_ghosts: vanished,
            tag: tag.to_string(),
            idx: idx.to_vec(),
            pos: 0,
            items,
            uid,
            needs_content,
            whole_only,
            wants_envelope,
            wants_preview,
            sets_seen,
            failed: false,
            unknown_cte: false,
            too_much: false,
            envelopes,
            buf: Vec::new(),
            streaming: None,
        })
    }

    /// Runs (or resumes) a FETCH; stops after about [`FETCH_CHUNK`] bytes of output and
    /// keeps the rest as the session's pending job, so one FETCH of a large folder never
    /// holds more than that in memory.
    pub(crate) fn run_fetch(&mut self, mut job: FetchJob) -> Result<(), Reply> {
        // a large message's response half sent: on with it first
        if let Some(mut st) = job.streaming.take() {
            match st.pump(&mut self.out) {
                Ok(true) => {}
                Ok(false) => {
                    job.streaming = Some(st);
                    self.pending_fetch = Some(job);
                    return Ok(());
                }
                Err(e) => {
                    self.lost(&format!("FETCH {}: message file: {e}", job.tag));
                    return Ok(());
                }
            }
        }
        let (uid, needs_content, wants_envelope, sets_seen) =
            (job.uid, job.needs_content, job.wants_envelope, job.sets_seen);
        let whole_only = needs_content && job.whole_only;
        let wants_whole = job
            .items
            .iter()
            .any(|(u, b)| u == "RFC822" || matches!(b, Some((_, s, None)) if s.is_empty()));
        let items = std::mem::take(&mut job.items);
        let mut buf = std::mem::take(&mut job.buf);
        let condstore = self.condstore;
        let Some(sel) = self.sel.as_mut() else {
            return Err(Reply::Bad("No mailbox".into()));
        };
        if needs_content && job.idx.len() - job.pos > 256 {
            self.out.reserve(FETCH_CHUNK + 64 * 1024);
        }
        let mut failed = job.failed;
        let started = std::time::Instant::now();
        let out_at = self.out.len();
        while job.pos < job.idx.len() {
            if job.notify && self.out.len() - out_at > FETCH_CHUNK {
                job.too_much = true;
                break;
            }
            // a FETCH over many messages works a slice of time at a stretch, like SEARCH, and
            // goes on at its next turn: it never holds the process's other sessions
            if !job.notify && (self.out.len() > FETCH_CHUNK || started.elapsed() > WORK_SLICE) {
                job.failed = failed;
                job.items = items;
                job.buf = buf;
                self.pending_fetch = Some(job);
                return Ok(());
            }
            let i = job.idx[job.pos];
            job.pos += 1;
            let Some(&(u, _)) = sel.view.get(i) else { continue };
            // a message another session expunged, this one not yet told: answered from
            // what the state kept of it, its file only if still there (RFC 2180 §4.1)
            let (m, ghost) = match sel.folder.get(u) {
                Some(m) => (m.clone(), false),
                None => match sel.folder.ghost(u) {
                    Some(m) => (m.clone(), true),
                    None => {
                        failed = true;
                        continue;
                    }
                },
            };
            if job.changed_since.is_some_and(|c| m.modseq <= c) || ghost && job.no_ghosts {
                continue;
            }
            let ghost_file = if ghost && (needs_content || wants_envelope && !job.envelopes.contains_key(&u)) {
                match sel.folder.read_ghost(u) {
                    Some(b) => Some(b),
                    None => {
                        failed = true;
                        continue;
                    }
                }
            } else {
                None
            };
            let mut stream = None;
            let content = if let Some(raw) = ghost_file {
                if whole_only {
                    buf = raw;
                    None
                } else {
                    Some(postern_mailbox::folder::to_crlf(raw))
                }
            } else if whole_only && m.size > STREAM_ABOVE && !job.notify {
                let Some(file) = sel.folder.open_message(u)? else {
                    failed = true;
                    continue;
                };
                stream = Some(CrlfStream::new(file, m.size));
                None
            } else if whole_only {
                if !sel.folder.read_raw(u, &mut buf)? {
                    failed = true;
                    continue;
                }
                None
            } else if needs_content {
                // whole-message items of a large message are streamed beside the others
                if wants_whole && m.size > STREAM_ABOVE && !job.notify {
                    let Some(file) = sel.folder.open_message(u)? else {
                        failed = true;
                        continue;
                    };
                    stream = Some(CrlfStream::new(file, m.size));
                }
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
                    None if ghost => Some(mime::split(&postern_mailbox::folder::to_crlf(buf.clone())).0.to_vec()),
                    None => sel.folder.read_header(u)?,
                };
                let Some(header) = header else {
                    failed = true;
                    continue;
                };
                let mut e = Vec::new();
                mime::envelope(&mut e, &header);
                if !ghost {
                    sel.folder.set_envelope(u, &e);
                }
                Some(e)
            };
            // PREVIEW from the start of the message: what was read anyway, else a
            // bounded read of the file
            let preview = if !job.wants_preview {
                None
            } else if let Some(c) = &content {
                Some(crate::preview::of(c))
            } else if whole_only && stream.is_none() {
                Some(crate::preview::of(&buf))
            } else if ghost {
                match sel.folder.read_ghost(u) {
                    Some(b) => Some(crate::preview::of(&b)),
                    None => {
                        failed = true;
                        continue;
                    }
                }
            } else {
                let Some(file) = sel.folder.open_message(u)? else {
                    failed = true;
                    continue;
                };
                let mut head = Vec::new();
                use std::io::Read;
                if file
                    .take(crate::preview::PREVIEW_READ as u64)
                    .read_to_end(&mut head)
                    .is_err()
                {
                    failed = true;
                    continue;
                }
                Some(crate::preview::of(&head))
            };
            let mut flags = m.flags;
            let mut flags_changed = false;
            if sets_seen && !ghost && !sel.read_only && !flags.seen() {
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
            let modseq = match sel.folder.get(u) {
                Some(now) if flags_changed => now.modseq,
                _ => m.modseq,
            };
            let mut wrote_modseq = false;
            let raw = content.as_deref().unwrap_or(&[]);
            // parsed once, at the first item that needs the part tree
            let tree = mime::Tree::new(raw);
            let head = crate::uidonly::fetch_head(self.uidonly, i, u);
            let out = &mut self.out;
            let start = out.len();
            let allowance = start + MAX_PER_MESSAGE * raw.len().max(buf.len()) + FETCH_CHUNK;
            out.extend_from_slice(head.as_bytes());
            let mut first = true;
            let mut wrote_flags = false;
            // where the body literals of a streamed message go
            let mut cuts = Vec::new();
            for (upper, body) in &items {
                if out.len() > allowance {
                    break;
                }
                if !first {
                    out.push(b' ');
                }
                first = false;
                match upper.as_str() {
                    "FLAGS" => {
                        wrote_flags = true;
                        let names = flag_list(&sel.shown(u, flags).imap_names(sel.folder.keywords()));
                        out.extend_from_slice(format!("FLAGS {names}").as_bytes());
                    }
                    "UID" => out.extend_from_slice(format!("UID {u}").as_bytes()),
                    "EMAILID" => {
                        out.extend_from_slice(format!("EMAILID ({})", crate::objectid::email_id(m.guid)).as_bytes())
                    }
                    "THREADID" => out.extend_from_slice(b"THREADID NIL"),
                    "PREVIEW" => {
                        out.extend_from_slice(b"PREVIEW ");
                        string(out, preview.as_deref().unwrap_or_default().as_bytes());
                    }
                    "SAVEDATE" => {
                        out.extend_from_slice(format!("SAVEDATE \"{}\"", parse::format_date_time(m.saved)).as_bytes())
                    }
                    "MODSEQ" => {
                        wrote_modseq = true;
                        out.extend_from_slice(format!("MODSEQ ({modseq})").as_bytes());
                    }
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
                        mime::body_structure(out, tree.top(), upper == "BODYSTRUCTURE");
                    }
                    "RFC822" if whole_only || stream.is_some() => {
                        out.extend_from_slice(b"RFC822 ");
                        if stream.is_some() {
                            cuts.push(out.len() - start);
                        } else {
                            literal_crlf(out, &buf);
                        }
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
                        literal(out, data);
                    }
                    _ if body.is_none() => {
                        let Some((_, size_only, part, partial)) = binary::item(upper) else {
                            continue;
                        };
                        let data = match binary::content(&tree, &part) {
                            Ok(d) => d,
                            Err(()) => {
                                job.unknown_cte = true;
                                None
                            }
                        };
                        let name = match partial {
                            _ if size_only => format!("BINARY.SIZE[{part}] "),
                            Some((start, _)) => format!("BINARY[{part}]<{start}> "),
                            None => format!("BINARY[{part}] "),
                        };
                        out.extend_from_slice(name.as_bytes());
                        let Some(data) = data else {
                            out.extend_from_slice(b"NIL");
                            continue;
                        };
                        let data: &[u8] = match partial {
                            Some((start, len)) => {
                                let s = (start as usize).min(data.len());
                                &data[s..s.saturating_add(len as usize).min(data.len())]
                            }
                            None => &data,
                        };
                        if size_only {
                            out.extend_from_slice(data.len().to_string().as_bytes());
                        } else {
                            if data.contains(&0) {
                                out.push(b'~');
                            }
                            literal(out, data);
                        }
                    }
                    _ => {
                        let Some((_, section, partial)) = body else {
                            continue;
                        };
                        let name = match partial {
                            Some((start, _)) => format!("BODY[{section}]<{start}>"),
                            None => format!("BODY[{section}]"),
                        };
                        out.extend_from_slice(name.as_bytes());
                        out.push(b' ');
                        if stream.is_some() && section.is_empty() && partial.is_none() {
                            cuts.push(out.len() - start);
                            continue;
                        }
                        if whole_only {
                            literal_crlf(out, &buf);
                            continue;
                        }
                        let data = mime::section_of(&tree, section).unwrap_or_default();
                        let data: &[u8] = &data;
                        let data: &[u8] = match partial {
                            Some((start, len)) => {
                                let s = (*start as usize).min(data.len());
                                let e = s.saturating_add(*len as usize).min(data.len());
                                &data[s..e]
                            }
                            None => data,
                        };
                        literal(out, data);
                    }
                }
            }
            if out.len() > allowance {
                out.truncate(start);
                job.too_much = true;
                continue;
            }
            // the client has these flags now: no unsolicited FETCH of them after
            if wrote_flags && !ghost {
                sel.view[i].1 = flags;
            }
            if flags_changed && !wrote_flags {
                let names = flag_list(&sel.shown(u, flags).imap_names(sel.folder.keywords()));
                out.extend_from_slice(format!(" FLAGS {names}").as_bytes());
            }
            if (job.flags_modseq || condstore && flags_changed) && !wrote_modseq && (wrote_flags || flags_changed) {
                out.extend_from_slice(format!(" MODSEQ ({modseq})").as_bytes());
            }
            out.extend_from_slice(b")\r\n");
            if let Some(body) = stream
                && !cuts.is_empty()
            {
                if cuts.len() > MAX_PER_MESSAGE {
                    out.truncate(start);
                    job.too_much = true;
                    continue;
                }
                let text = out.split_off(start);
                let mut texts = std::collections::VecDeque::new();
                let mut from = 0;
                for &c in cuts.iter().chain(std::iter::once(&text.len())) {
                    texts.push_back(text.get(from..c).unwrap_or_default().to_vec());
                    from = c;
                }
                // sent from the top of run_fetch, which then goes on with the next message
                // (a few deep at most: each streamed message fills a good part of the chunk)
                job.failed = failed;
                job.items = items;
                job.buf = buf;
                job.streaming = Some(Streaming {
                    texts,
                    body,
                    in_body: false,
                });
                return self.run_fetch(job);
            }
        }
        if let Some(sel) = self.sel.as_mut() {
            sel.folder.save_cache_soon();
        }
        if job.notify {
            if job.too_much || failed || job.unknown_cte {
                tracing::info!(
                    "NOTIFY: FETCH of new messages cut short (over {FETCH_CHUNK} bytes or a message gone), {}",
                    self.who()
                );
            }
            return Ok(());
        }
        self.report(uid);
        if job.too_much {
            tracing::info!(
                "FETCH refused: items asking for more than {MAX_PER_MESSAGE} times a message, {}",
                self.who()
            );
            self.line(&format!(
                "{} NO [LIMIT] FETCH asks for more than {MAX_PER_MESSAGE} times a message's size",
                job.tag
            ));
        } else if job.unknown_cte {
            self.line(&format!(
                "{} NO [UNKNOWN-CTE] Cannot decode a part's transfer encoding",
                job.tag
            ));
        } else if failed {
            self.line(&format!("{} NO [EXPUNGEISSUED] Some messages were expunged", job.tag));
        } else {
            self.ok(&job.tag, "Fetch completed");
        }
        Ok(())
    }
}

/// A literal of `data` as stored, with bare LF line ends sent as CRLF: the size is counted
/// first, then the bytes are converted straight into the output.
fn literal_crlf(out: &mut Vec<u8>, data: &[u8]) {
    let n = postern_mailbox::cache::crlf_size(data);
    if n == 0 {
        string(out, b"");
    } else {
        out.extend_from_slice(format!("{{{n}}}\r\n").as_bytes());
        let at = out.len();
        postern_mailbox::folder::extend_crlf(out, data);
        crate::reply::no_nuls(&mut out[at..]);
    }
}

/// A literal of `data`; its NULs sent as 0x80 ([`crate::reply::no_nuls`]) unless it is
/// a BINARY literal8 (`~` written before it).
fn literal(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        string(out, b"");
    } else {
        let literal8 = out.ends_with(b"~");
        out.extend_from_slice(format!("{{{}}}\r\n", data.len()).as_bytes());
        let at = out.len();
        out.extend_from_slice(data);
        if !literal8 {
            crate::reply::no_nuls(&mut out[at..]);
        }
    }
}
