//! SEARCH with the RFC 3501 keys (charset US-ASCII or UTF-8), and the search half of SORT
//! and THREAD (RFC 5256). Flag, size, date and UID keys
//! use the folder view alone; header keys (FROM, TO, CC, BCC, SUBJECT, HEADER, SENT*)
//! answer from the folder's header cache (`postern-headers`, which reads and keeps the
//! headers it lacks); BODY and TEXT read the message, matching case-insensitively on the
//! raw bytes (no MIME decoding; header fields with RFC 2047 encoded words are also matched decoded, in Unicode case).
//! FROM, TO, CC and BCC match the field's addresses as [`crate::address::search_text`]
//! writes them, comments left out (`<user (x)@ (y) domain>` is found by `user@domain`).
//! SENTBEFORE/SENTON/SENTSINCE compare the Date: header's own calendar date, whatever its
//! zone (RFC 3501 §6.4.4). `$` is the saved result (RFC 5182, [`crate::esearch`]).
//! `MODSEQ [entry type] n` (RFC 7162 §3.1.5) matches messages changed at or after `n`;
//! the answer then ends with the highest MODSEQ of the hits (`(MODSEQ n)`, or
//! ` MODSEQ n` in ESEARCH). `EMAILID id` and `THREADID id` (RFC 8474,
//! [`crate::objectid`]) match the message with that GUID, and nothing. SAVEDBEFORE,
//! SAVEDON, SAVEDSINCE and SAVEDATESUPPORTED (RFC 8514) use the index's save date (UTC day).
//! Answers are `* SEARCH`, or `* ESEARCH` (RFC 4731) for `SEARCH RETURN (...)` and for
//! every SEARCH once IMAP4rev2 is enabled; SORT answers `* SORT` or, with RETURN,
//! `* ESEARCH` (ESORT), THREAD `* THREAD`.
//!
//! Bounded: the messages are tested (and a SORT's or THREAD's values read from their
//! headers, [`crate::sort`], [`crate::thread`]) a [`WORK_SLICE`] at a time, the session
//! going on at its next turn; only the final ordering or threading of the collected
//! values runs at a stretch.

use crate::cmd_message::Ranges;
use crate::esearch::ReturnOpts;
use crate::mime;
use crate::parse::{self, Arg, SeqSet};
use crate::session::{Reply, Session, WORK_SLICE};
use postern_mailbox::flags::{self, Flags, RECENT};
use postern_mailbox::headers::HeaderCache;

/// A search key, parsed.
pub(crate) enum Key {
    All,
    Flag(u8, bool),
    Keyword(u32, bool),
    New,
    Old,
    Recent,
    Header(String, Vec<u8>),
    /// FROM, TO, CC, BCC: the field's addresses without comments ([`crate::address`]).
    Address(String, Vec<u8>),
    Body(Vec<u8>),
    Text(Vec<u8>),
    Larger(u64),
    Smaller(u64),
    /// MODSEQ n (RFC 7162): changed at or after MODSEQ n.
    Modseq(u64),
    Date(std::cmp::Ordering, bool, i64),
    Sent(std::cmp::Ordering, bool, i64),
    /// SAVEDBEFORE/SAVEDON/SAVEDSINCE (RFC 8514): the save date's day.
    SaveDate(std::cmp::Ordering, bool, i64),
    Seq(SeqSet),
    Uid(SeqSet),
    /// `$`, the saved result (RFC 5182).
    Saved,
    /// EMAILID (RFC 8474): the message with this GUID.
    EmailId(u128),
    /// A `Seq` or `Uid` set resolved for the folder searched ([`Key::resolved`]).
    SeqIn(Ranges),
    UidIn(Ranges),
    Not(Box<Key>),
    Or(Box<Key>, Box<Key>),
    And(Vec<Key>),
}

struct Ctx<'a> {
    seq: u32,
    count: u32,
    uid: u32,
    largest_uid: u32,
    flags: Flags,
    size: u64,
    date: i64,
    modseq: u64,
    guid: u128,
    saved: i64,
    raw: Option<&'a [u8]>,
}

impl Key {
    /// The key with its sequence and UID sets resolved against a folder of `count`
    /// messages whose largest UID is `largest_uid` and saved result `saved` (UIDs), for
    /// binary search.
    fn resolved(self, count: u32, largest_uid: u32, saved: &[u32]) -> Key {
        match self {
            Key::Seq(s) => Key::SeqIn(Ranges::new(&s, count)),
            Key::Uid(s) => Key::UidIn(Ranges::new(&s, largest_uid)),
            Key::Saved => Key::UidIn(Ranges::new(
                &SeqSet(saved.iter().map(|&u| (u, u)).collect()),
                largest_uid,
            )),
            Key::Not(k) => Key::Not(Box::new(k.resolved(count, largest_uid, saved))),
            Key::Or(a, b) => Key::Or(
                Box::new(a.resolved(count, largest_uid, saved)),
                Box::new(b.resolved(count, largest_uid, saved)),
            ),
            Key::And(v) => Key::And(v.into_iter().map(|k| k.resolved(count, largest_uid, saved)).collect()),
            k => k,
        }
    }

    /// Whether the key names messages by sequence number.
    fn uses_sequence_numbers(&self) -> bool {
        match self {
            Key::Seq(_) | Key::SeqIn(_) => true,
            Key::Not(k) => k.uses_sequence_numbers(),
            Key::Or(a, b) => a.uses_sequence_numbers() || b.uses_sequence_numbers(),
            Key::And(v) => v.iter().any(Key::uses_sequence_numbers),
            _ => false,
        }
    }

    /// 0: flags and sizes only; 1: the header; 2: the whole message.
    fn needs(&self) -> u8 {
        match self {
            Key::Header(..) | Key::Address(..) | Key::Sent(..) => 1,
            Key::Body(_) | Key::Text(_) => 2,
            Key::Not(k) => k.needs(),
            Key::Or(a, b) => a.needs().max(b.needs()),
            Key::And(v) => v.iter().map(Key::needs).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn eval(&self, c: &Ctx<'_>) -> bool {
        let raw = c.raw.unwrap_or(&[]);
        match self {
            Key::All => true,
            Key::Flag(bit, set) => (c.flags.system & bit != 0) == *set,
            Key::Keyword(bit, set) => (c.flags.keywords & bit != 0) == *set,
            Key::Recent => c.flags.system & RECENT != 0,
            Key::New => c.flags.system & RECENT != 0 && !c.flags.seen(),
            Key::Old => c.flags.system & RECENT == 0,
            Key::Header(name, needle) => {
                let header = mime::split(raw).0;
                let header = header.get(..MAX_SEARCH_HEADER).unwrap_or(header);
                // unfolding only joins lines (keeping their white space), so a needle
                // without white space that is nowhere in the header is in no field —
                // unless a field holds RFC 2047 encoded words, matched once decoded
                let encoded = memchr::memmem::find(header, b"=?").is_some();
                if !encoded && !needle.iter().any(|&b| b == b' ' || b == b'\t') && !contains(header, needle) {
                    return false;
                }
                let f = mime::fields(header);
                f.iter().any(|(n, v)| {
                    n.eq_ignore_ascii_case(name) && (contains(v, needle) || (encoded && decoded_contains(v, needle)))
                })
            }
            Key::Address(name, needle) => {
                let header = mime::split(raw).0;
                let header = header.get(..MAX_SEARCH_HEADER).unwrap_or(header);
                let encoded = memchr::memmem::find(header, b"=?").is_some();
                mime::fields(header).iter().any(|(n, v)| {
                    n.eq_ignore_ascii_case(name)
                        && (contains(&crate::address::search_text(v), needle)
                            || (encoded && decoded_contains(v, needle)))
                })
            }
            Key::Body(n) => contains(mime::split(raw).1, n),
            Key::Text(n) => contains(raw, n),
            Key::Larger(n) => c.size > *n,
            Key::Smaller(n) => c.size < *n,
            Key::Modseq(n) => c.modseq >= *n,
            Key::Date(ord, eq, day) => cmp_day(c.date.div_euclid(86400), *ord, *eq, *day),
            Key::SaveDate(ord, eq, day) => cmp_day(c.saved.div_euclid(86400), *ord, *eq, *day),
            Key::Sent(ord, eq, day) => match sent_day(mime::split(raw).0) {
                Some(d) => cmp_day(d, *ord, *eq, *day),
                None => false,
            },
            Key::Seq(s) => s.contains(c.seq, c.count),
            Key::Uid(s) => s.contains(c.uid, c.largest_uid),
            Key::Saved => false,
            Key::EmailId(g) => c.guid == *g,
            Key::SeqIn(r) => r.contains(c.seq),
            Key::UidIn(r) => r.contains(c.uid),
            Key::Not(k) => !k.eval(c),
            Key::Or(a, b) => a.eval(c) || b.eval(c),
            Key::And(v) => v.iter().all(|k| k.eval(c)),
        }
    }
}

/// The calendar date of a header's Date: field as written, in days since the epoch: its
/// zone is not applied (RFC 3501 §6.4.4: `Sun, 25 Mar 2007 00:00:00 +0200` is on
/// 25 March). `None` when there is no Date: that parses.
fn sent_day(header: &[u8]) -> Option<i64> {
    let header = header.get(..MAX_SEARCH_HEADER).unwrap_or(header);
    // the Date: field alone is parsed (a header may be 256 KB of other fields)
    let date = mime::header_fields(header, &["Date"], false);
    let m = mail_parser::MessageParser::default().parse_headers(&date[..])?;
    let d = m.date().filter(|d| d.is_valid())?;
    Some(parse::days_from_civil(
        i64::from(d.year),
        u32::from(d.month),
        u32::from(d.day),
    ))
}

fn cmp_day(day: i64, ord: std::cmp::Ordering, eq: bool, target: i64) -> bool {
    let o = day.cmp(&target);
    o == ord || (eq && o == std::cmp::Ordering::Equal)
}

/// Whether a field value with RFC 2047 encoded words (`=?UTF-8?B?...?=`, as a Subject or
/// a display name is sent) contains `needle` once decoded (mail-parser decodes it),
/// comparing case-insensitively in Unicode, as SEARCH CHARSET UTF-8 expects.
fn decoded_contains(value: &[u8], needle: &[u8]) -> bool {
    if memchr::memmem::find(value, b"=?").is_none() {
        return false;
    }
    let mut field = Vec::with_capacity(value.len() + 16);
    // Parsed as a Subject: mail-parser decodes unstructured text there.
    field.extend_from_slice(b"Subject: ");
    field.extend_from_slice(value);
    field.extend_from_slice(b"\r\n\r\n");
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(&field[..]) else {
        return false;
    };
    let Some(text) = msg.subject() else {
        return false;
    };
    crate::collate::DEFAULT.contains(text.as_bytes(), needle)
}

/// Needles up to this length are compared in place (at most this many bytes per position).
const SHORT_NEEDLE: usize = 32;

/// Case-insensitive substring test under i;unicode-casemap (I18NLEVEL=1,
/// [`crate::collate`]), in time linear in the haystack: when both are ASCII, short
/// needles are compared at each candidate position, longer ones searched with memmem
/// (Two-Way) in lower-cased copies, so a long needle cannot make it quadratic; otherwise
/// both keys are made and searched with memmem.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if !needle.is_ascii() || !hay.is_ascii() {
        return crate::collate::DEFAULT.contains(hay, needle);
    }
    if needle.len() > hay.len() {
        return false;
    }
    if needle.len() > SHORT_NEEDLE {
        let needle = needle.to_ascii_lowercase();
        return memchr::memmem::find(&hay.to_ascii_lowercase(), &needle).is_some();
    }
    let lower: Vec<u8> = needle.to_ascii_lowercase();
    let first = lower[0];
    let alt = first.to_ascii_uppercase();
    let mut i = 0;
    while i + lower.len() <= hay.len() {
        let Some(p) = memchr::memchr2(first, alt, &hay[i..=hay.len() - lower.len()]) else {
            return false;
        };
        let at = i + p;
        if hay[at..at + lower.len()].eq_ignore_ascii_case(&lower) {
            return true;
        }
        i = at + 1;
    }
    false
}

/// Most search keys in one SEARCH (each `NOT`, `OR` and parenthesised list counts too):
/// more is `BAD [LIMIT]`. Every key is tested on every message, so this bounds the work
/// per message a client can ask for.
pub const MAX_SEARCH_KEYS: usize = 1000;
/// Most BODY and TEXT keys in one SEARCH (`BAD [LIMIT]` past it): each reads through a
/// whole message, which may be as large as `imapd_max_literal`, and one message's test is
/// not cut into slices, so this bounds how long it holds the process.
pub const MAX_CONTENT_KEYS: usize = 16;
/// Header keys look at this much of a message's header at most: a header may be a whole
/// message (one without a blank line), and a SEARCH of many header keys tests each.
pub const MAX_SEARCH_HEADER: usize = 256 * 1024;

struct Parser<'a, 's> {
    args: &'a [Arg],
    i: usize,
    session: &'s mut Session,
    /// Keys parsed so far in the whole SEARCH, and the BODY and TEXT keys among them.
    keys: usize,
    content_keys: usize,
    /// A MODSEQ key was seen: the answer ends with `(MODSEQ n)`.
    modseq: bool,
}

impl Parser<'_, '_> {
    fn next(&mut self) -> Option<&Arg> {
        let a = self.args.get(self.i);
        self.i += 1;
        a
    }

    fn string(&mut self) -> Result<Vec<u8>, Reply> {
        self.next()
            .and_then(Arg::bytes)
            .ok_or(Reply::Bad("Missing search string".into()))
    }

    fn day(&mut self) -> Result<i64, Reply> {
        self.next()
            .and_then(Arg::text)
            .and_then(|d| parse::date(&d))
            .ok_or(Reply::Bad("Invalid date".into()))
    }

    fn number(&mut self) -> Result<u64, Reply> {
        self.next()
            .and_then(Arg::text)
            .and_then(|n| n.parse().ok())
            .ok_or(Reply::Bad("Invalid number".into()))
    }

    fn key(&mut self, depth: usize) -> Result<Key, Reply> {
        use std::cmp::Ordering::*;
        if depth > 20 {
            return Err(Reply::Bad("Search too deep".into()));
        }
        self.keys += 1;
        if self.keys > MAX_SEARCH_KEYS {
            return Err(Reply::Bad(format!("[LIMIT] More than {MAX_SEARCH_KEYS} search keys")));
        }
        let arg = self.next().cloned().ok_or(Reply::Bad("Missing search key".into()))?;
        let word = match &arg {
            Arg::List(items) => {
                let mut sub = Parser {
                    args: items,
                    i: 0,
                    session: self.session,
                    keys: self.keys,
                    content_keys: self.content_keys,
                    modseq: self.modseq,
                };
                let mut keys = Vec::new();
                while sub.i < items.len() {
                    keys.push(sub.key(depth + 1)?);
                }
                self.keys = sub.keys;
                self.content_keys = sub.content_keys;
                self.modseq = sub.modseq;
                return Ok(Key::And(keys));
            }
            Arg::Str(_) => return Err(Reply::Bad("Unexpected string".into())),
            Arg::Atom(a) => a.to_ascii_uppercase(),
        };
        let bit = |b| Ok(Key::Flag(b, true));
        let unbit = |b| Ok(Key::Flag(b, false));
        match word.as_str() {
            "ALL" => Ok(Key::All),
            "ANSWERED" => bit(flags::ANSWERED),
            "DELETED" => bit(flags::DELETED),
            "DRAFT" => bit(flags::DRAFT),
            "FLAGGED" => bit(flags::FLAGGED),
            "SEEN" => bit(flags::SEEN),
            "UNANSWERED" => unbit(flags::ANSWERED),
            "UNDELETED" => unbit(flags::DELETED),
            "UNDRAFT" => unbit(flags::DRAFT),
            "UNFLAGGED" => unbit(flags::FLAGGED),
            "UNSEEN" => unbit(flags::SEEN),
            "NEW" => Ok(Key::New),
            "OLD" => Ok(Key::Old),
            "RECENT" => Ok(Key::Recent),
            "KEYWORD" | "UNKEYWORD" => {
                let k = self
                    .next()
                    .and_then(Arg::text)
                    .ok_or(Reply::Bad("Missing keyword".into()))?;
                let bit = match &mut self.session.sel {
                    Some(sel) => sel.folder.keyword_bit(&k, false)?.unwrap_or(0),
                    None => 0,
                };
                Ok(Key::Keyword(
                    bit,
                    word == "KEYWORD" && bit != 0 || word == "UNKEYWORD" && bit == 0,
                ))
                .map(|k| match k {
                    Key::Keyword(0, true) => Key::All,
                    Key::Keyword(0, false) => Key::Not(Box::new(Key::All)),
                    k => k,
                })
            }
            "BCC" | "CC" | "FROM" | "TO" => Ok(Key::Address(word.clone(), self.string()?)),
            "SUBJECT" => Ok(Key::Header(word.clone(), self.string()?)),
            "HEADER" => {
                let name = self
                    .next()
                    .and_then(Arg::text)
                    .ok_or(Reply::Bad("Missing header name".into()))?;
                Ok(Key::Header(name, self.string()?))
            }
            "BODY" | "TEXT" => {
                self.content_keys += 1;
                if self.content_keys > MAX_CONTENT_KEYS {
                    return Err(Reply::Bad(format!(
                        "[LIMIT] More than {MAX_CONTENT_KEYS} BODY and TEXT keys"
                    )));
                }
                let s = self.string()?;
                Ok(if word == "BODY" { Key::Body(s) } else { Key::Text(s) })
            }
            "LARGER" => Ok(Key::Larger(self.number()?)),
            "SMALLER" => Ok(Key::Smaller(self.number()?)),
            "MODSEQ" => {
                // an entry name and type may come first (flag MODSEQs are the message's)
                if matches!(self.args.get(self.i), Some(Arg::Str(_))) {
                    self.i += 1;
                    let kind = self.next().and_then(Arg::keyword).unwrap_or_default();
                    if !["PRIV", "SHARED", "ALL"].contains(&kind.as_str()) {
                        return Err(Reply::Bad("Invalid MODSEQ entry type".into()));
                    }
                }
                let n = self.number()?;
                if n > i64::MAX as u64 {
                    return Err(Reply::Bad("Invalid MODSEQ value".into()));
                }
                self.modseq = true;
                self.session.condstore_on();
                Ok(Key::Modseq(n))
            }
            // RFC 8474 §5: an id this server never gives matches nothing; no THREADIDs
            "EMAILID" | "THREADID" => {
                let id = self
                    .next()
                    .and_then(Arg::text)
                    .ok_or(Reply::Bad("Missing object id".into()))?;
                Ok(match crate::objectid::parse_email_id(&id) {
                    Some(g) if word == "EMAILID" => Key::EmailId(g),
                    _ => Key::Not(Box::new(Key::All)),
                })
            }
            "BEFORE" => Ok(Key::Date(Less, false, self.day()?)),
            "ON" => Ok(Key::Date(Equal, true, self.day()?)),
            "SINCE" => Ok(Key::Date(Greater, true, self.day()?)),
            "SAVEDBEFORE" => Ok(Key::SaveDate(Less, false, self.day()?)),
            "SAVEDON" => Ok(Key::SaveDate(Equal, true, self.day()?)),
            "SAVEDSINCE" => Ok(Key::SaveDate(Greater, true, self.day()?)),
            // every folder keeps save dates
            "SAVEDATESUPPORTED" => Ok(Key::All),
            "SENTBEFORE" => Ok(Key::Sent(Less, false, self.day()?)),
            "SENTON" => Ok(Key::Sent(Equal, true, self.day()?)),
            "SENTSINCE" => Ok(Key::Sent(Greater, true, self.day()?)),
            "UID" => {
                let s = self.next().and_then(Arg::text).and_then(|s| SeqSet::parse(&s));
                match s {
                    Some(s) if s.is_saved() => Ok(Key::Saved),
                    Some(s) => Ok(Key::Uid(s)),
                    None => Err(Reply::Bad("Invalid UID set".into())),
                }
            }
            "NOT" => Ok(Key::Not(Box::new(self.key(depth + 1)?))),
            "OR" => {
                let a = self.key(depth + 1)?;
                let b = self.key(depth + 1)?;
                Ok(Key::Or(Box::new(a), Box::new(b)))
            }
            _ => match SeqSet::parse(&word) {
                Some(s) if s.is_saved() => Ok(Key::Saved),
                // RFC 9586: no sequence numbers once UIDONLY is on
                Some(_) if self.session.uidonly => Err(crate::uidonly::uid_required()),
                Some(s) => Ok(Key::Seq(s)),
                None => Err(Reply::Bad(format!("Unknown search key {}", word.escape_default()))),
            },
        }
    }
}

/// What a search's hits are for.
pub(crate) enum Then {
    /// SEARCH: the hits in mailbox order.
    Search,
    /// SORT: the hits ordered.
    Sort(crate::sort::Sorter),
    /// THREAD: the hits threaded.
    Thread(crate::thread::Threader),
}

/// `RETURN (...)` at the start of `args`, and the arguments after it.
fn return_opts(args: &[Arg]) -> Result<(Option<ReturnOpts>, &[Arg]), Reply> {
    if args.first().and_then(Arg::keyword).as_deref() != Some("RETURN") {
        return Ok((None, args));
    }
    let Some(Arg::List(opts)) = args.get(1) else {
        return Err(Reply::Bad("RETURN needs a list of options".into()));
    };
    Ok((Some(ReturnOpts::parse(opts)?), args.get(2..).unwrap_or_default()))
}

/// A search's charset: US-ASCII and UTF-8 (search strings are matched as bytes either way).
fn check_charset(cs: Option<&Arg>) -> Result<(), Reply> {
    let cs = cs
        .and_then(Arg::text)
        .ok_or_else(|| Reply::Bad("Missing charset".into()))?
        .to_ascii_uppercase();
    if cs != "UTF-8" && cs != "US-ASCII" {
        return Err(Reply::No("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset".into()));
    }
    Ok(())
}

impl Session {
    pub(crate) fn search(&mut self, tag: &str, args: &[Arg], uid: bool) -> Result<(), Reply> {
        let (mut ret, mut args) = return_opts(args)?;
        // IMAP4rev2 answers ESEARCH (ALL) when no RETURN is given
        if ret.is_none() && self.rev2 {
            ret = ReturnOpts::parse(&[]).ok();
        }
        if args.first().and_then(Arg::keyword).as_deref() == Some("CHARSET") {
            check_charset(args.get(1))?;
            args = args.get(2..).unwrap_or(&[]);
        }
        let saving = ret.as_ref().is_some_and(|r| r.save);
        let result = self.start_search(tag, args, uid, ret, Then::Search);
        if result.is_err() && saving {
            // RFC 5182: a SEARCH ... RETURN (SAVE) that fails leaves `$` empty
            self.save_result(Vec::new());
        }
        result
    }

    /// SORT (RFC 5256, with ESORT's RETURN of RFC 5267) and THREAD.
    pub(crate) fn sort_or_thread(&mut self, tag: &str, name: &str, args: &[Arg], uid: bool) -> Result<(), Reply> {
        if name == "THREAD" {
            let algorithm = args
                .first()
                .and_then(Arg::text)
                .and_then(|a| crate::thread::Algorithm::parse(&a))
                .ok_or_else(|| Reply::Bad("Unknown threading algorithm (REFERENCES, ORDEREDSUBJECT)".into()))?;
            check_charset(args.get(1))?;
            let then = Then::Thread(crate::thread::Threader::new(algorithm));
            return self.start_search(tag, args.get(2..).unwrap_or_default(), uid, None, then);
        }
        let (mut ret, args) = return_opts(args)?;
        let criteria = crate::sort::parse_criteria(args.first())?;
        check_charset(args.get(1))?;
        let mut args = args.get(2..).unwrap_or_default();
        // RETURN after the charset too (as Dovecot's imaptest writes it): no search key
        // is called RETURN
        if ret.is_none() {
            (ret, args) = return_opts(args)?;
        }
        let saving = ret.as_ref().is_some_and(|r| r.save);
        let then = Then::Sort(crate::sort::Sorter::new(criteria));
        let result = self.start_search(tag, args, uid, ret, then);
        if result.is_err() && saving {
            self.save_result(Vec::new());
        }
        result
    }

    /// Parses the search keys and starts the search job.
    fn start_search(
        &mut self,
        tag: &str,
        args: &[Arg],
        uid: bool,
        ret: Option<ReturnOpts>,
        then: Then,
    ) -> Result<(), Reply> {
        let mut keys = Vec::new();
        let with_modseq;
        {
            let mut p = Parser {
                args,
                i: 0,
                session: self,
                keys: 0,
                content_keys: 0,
                modseq: false,
            };
            while p.i < args.len() {
                keys.push(p.key(0)?);
            }
            with_modseq = p.modseq;
        }
        if keys.is_empty() {
            return Err(Reply::Bad("Missing search key".into()));
        }
        let key = Key::And(keys);
        if ret.as_ref().is_some_and(|r| r.update) && key.uses_sequence_numbers() {
            return Err(Reply::Bad(
                "UPDATE cannot be used with message sequence numbers as keys".into(),
            ));
        }
        let header_for_then = match &then {
            Then::Search => false,
            Then::Sort(s) => s.needs_header(),
            Then::Thread(_) => true,
        };
        // SORT/THREAD read a hit's header only when its keys are not cached
        let needs = key.needs();
        let Some(sel) = self.sel.as_mut() else {
            return Err(Reply::Bad("No mailbox".into()));
        };
        if sel.folder.changed() {
            sel.folder.sync()?;
        }
        let mut then = then;
        match &mut then {
            Then::Search => {}
            Then::Sort(s) => s.bind(&sel.folder),
            Then::Thread(t) => t.bind(&sel.folder),
        }
        let count = sel.view.len() as u32;
        let largest_uid = sel.view.last().map_or(0, |v| v.0);
        let key = key.resolved(count, largest_uid, &sel.saved);
        // header keys answer from the folder's header cache, which learns what it lacks
        let hc = match needs.max(u8::from(header_for_then)) {
            1 => sel.folder.header_cache(),
            _ => Default::default(),
        };
        let job = SearchJob {
            tag: tag.to_string(),
            key,
            needs,
            uid,
            ret,
            then,
            pos: 0,
            count,
            largest_uid,
            hits: Vec::new(),
            hc,
            modseq: with_modseq.then_some(0),
            began: sel.folder.highest_modseq(),
        };
        self.run_search(job);
        Ok(())
    }

    /// Runs (or resumes) a SEARCH for at most [`WORK_SLICE`] and keeps the rest as the
    /// session's pending job ([`Session::busy`]), so a search of many keys over a large
    /// folder delays the process's other sessions by a slice at a time, not all of it.
    /// The folder is not synced in between (no other command of the session runs), so
    /// sequence numbers stay those the search began with.
    pub(crate) fn run_search(&mut self, mut job: SearchJob) {
        let started = std::time::Instant::now();
        let Some(sel) = self.sel.as_mut() else {
            self.line(&format!("{} BAD No mailbox", job.tag));
            return;
        };
        let mut failure = None;
        while job.pos < sel.view.len() {
            if started.elapsed() > WORK_SLICE {
                self.pending_search = Some(job);
                return;
            }
            let i = job.pos;
            job.pos += 1;
            let (u, _) = sel.view[i];
            let Some(m) = sel.folder.get(u).cloned() else { continue };
            let then_needs = match &job.then {
                Then::Search => false,
                Then::Sort(s) => s.needs_header_of(u),
                Then::Thread(t) => t.needs_header_of(u),
            };
            let raw: Option<std::borrow::Cow<'_, [u8]>> = match job.needs.max(u8::from(then_needs)) {
                0 => None,
                1 => match sel.folder.cached_header(&mut job.hc, u) {
                    Ok(h) => h,
                    Err(e) => {
                        failure = Some(Reply::from(e));
                        break;
                    }
                },
                _ => match sel.folder.read(u) {
                    Ok(r) => r.map(std::borrow::Cow::Owned),
                    Err(e) => {
                        failure = Some(Reply::from(e));
                        break;
                    }
                },
            };
            let ctx = Ctx {
                seq: i as u32 + 1,
                count: job.count,
                uid: u,
                largest_uid: job.largest_uid,
                // with \Recent when it is, for RECENT, NEW and OLD
                flags: sel.shown(u, m.flags),
                size: m.size,
                date: m.date,
                modseq: m.modseq,
                guid: m.guid,
                saved: m.saved,
                raw: raw.as_deref(),
            };
            if !job.key.eval(&ctx) {
                continue;
            }
            let id = if job.uid { u } else { i as u32 + 1 };
            job.hits.push(id);
            if let Some(h) = job.modseq.as_mut() {
                *h = (*h).max(m.modseq);
            }
            let header = || {
                let h = mime::split(raw.as_deref().unwrap_or_default()).0;
                h.get(..MAX_SEARCH_HEADER).unwrap_or(h)
            };
            match &mut job.then {
                Then::Search => {}
                Then::Sort(s) => s.add(
                    id,
                    u,
                    header(),
                    crate::sort::Facts {
                        internal_date: m.date,
                        size: m.size,
                    },
                ),
                Then::Thread(t) => t.add(id, u, header(), m.date),
            }
        }
        sel.folder.save_header_cache(&job.hc);
        if let Some(reply) = failure {
            if job.ret.as_ref().is_some_and(|r| r.save) {
                self.save_result(Vec::new());
            }
            self.line(&format!("{} {}", job.tag, reply.text()));
            return;
        }
        let update = job.ret.as_ref().is_some_and(|r| r.update);
        let mut sorted = None;
        let (verb, hits) = match job.then {
            Then::Search => ("SEARCH", job.hits),
            // CONTEXT=SORT keeps the values the result is ordered by
            Then::Sort(s) if update => {
                let k = s.finish_keyed();
                let ids = k.ids();
                sorted = Some(k);
                ("SORT", ids)
            }
            Then::Sort(s) => ("SORT", s.finish()),
            Then::Thread(t) => {
                let threads = t.finish();
                let sep = if threads.is_empty() { "" } else { " " };
                self.line(&format!("* THREAD{sep}{threads}"));
                self.report(job.uid);
                self.ok(&job.tag, "Thread completed");
                return;
            }
        };
        match &job.ret {
            Some(opts) => {
                if opts.save {
                    let saved = opts.to_save(&hits);
                    let uids = self.uids_of(&saved, job.uid);
                    self.save_result(uids);
                }
                if opts.update {
                    // kept by UID, whatever the answer names them by
                    let mut uids = self.uids_of(&hits, job.uid);
                    if let Some(k) = sorted.as_mut()
                        && !job.uid
                    {
                        let view: Vec<u32> = self
                            .sel
                            .as_ref()
                            .map(|s| s.view.iter().map(|v| v.0).collect())
                            .unwrap_or_default();
                        k.map_ids(|n| view.get((n as usize).wrapping_sub(1)).copied().unwrap_or(0));
                    }
                    if sorted.is_some() {
                        uids.clear();
                    } else {
                        uids.sort_unstable();
                    }
                    let key = std::mem::replace(&mut job.key, Key::All);
                    // a kept sort places new messages by their header's keys
                    let needs = job
                        .needs
                        .max(u8::from(sorted.as_ref().is_some_and(|k| k.needs_header())));
                    let kept = (job.uid, needs, job.began);
                    if let Err(why) = self.add_context(&job.tag, kept, key, uids, sorted.take()) {
                        let mut t = Vec::new();
                        crate::reply::string(&mut t, job.tag.as_bytes());
                        self.line(&format!("* NO [NOUPDATE {}] {why}", String::from_utf8_lossy(&t)));
                    }
                }
                if !opts.only_save() {
                    let mut line = crate::esearch::line(&job.tag, job.uid, opts, &hits);
                    // RFC 7162 §3.1.5: the highest MODSEQ of the hits
                    if let Some(h) = job.modseq.filter(|_| !hits.is_empty()) {
                        line.push_str(&format!(" MODSEQ {h}"));
                    }
                    self.line(&line);
                }
            }
            None => {
                let mut line = format!("* {verb}");
                for h in &hits {
                    line.push_str(&format!(" {h}"));
                }
                // RFC 7162 §3.1.5: the highest MODSEQ of the hits
                if let Some(h) = job.modseq.filter(|_| !hits.is_empty()) {
                    line.push_str(&format!(" (MODSEQ {h})"));
                }
                self.line(&line);
            }
        }
        self.report(job.uid);
        let done = if verb == "SORT" {
            "Sort completed"
        } else {
            "Search completed"
        };
        self.ok(&job.tag, done);
    }

    /// The UIDs of hits named by UID (`uid`) or by sequence number in the view.
    fn uids_of(&self, hits: &[u32], uid: bool) -> Vec<u32> {
        let Some(sel) = &self.sel else { return Vec::new() };
        if uid {
            return hits.to_vec();
        }
        hits.iter()
            .filter_map(|&s| sel.view.get((s as usize).checked_sub(1)?).map(|v| v.0))
            .collect()
    }
}

/// Tests the message at index `i` of the view against `key` again (an update context,
/// [`crate::context`]): whether it matches, its header (when `needs` says so) and the
/// facts a sort places it by; `None` when it is gone.
pub(crate) fn test_message(
    sel: &mut crate::session::Selected,
    key: &Key,
    needs: u8,
    hc: &mut HeaderCache,
    i: usize,
) -> Result<Option<(bool, Vec<u8>, crate::sort::Facts)>, Reply> {
    let u = sel.view[i].0;
    let Some(m) = sel.folder.get(u).cloned() else {
        return Ok(None);
    };
    let raw: Option<Vec<u8>> = match needs {
        0 => None,
        1 => sel.folder.cached_header(hc, u)?.map(|h| h.into_owned()),
        _ => sel.folder.read(u)?,
    };
    let ctx = Ctx {
        seq: i as u32 + 1,
        count: sel.view.len() as u32,
        uid: u,
        largest_uid: sel.view.last().map_or(0, |v| v.0),
        flags: sel.shown(u, m.flags),
        size: m.size,
        date: m.date,
        modseq: m.modseq,
        guid: m.guid,
        saved: m.saved,
        raw: raw.as_deref(),
    };
    let hit = key.eval(&ctx);
    let h = mime::split(raw.as_deref().unwrap_or_default()).0;
    let header = h.get(..MAX_SEARCH_HEADER).unwrap_or(h).to_vec();
    let facts = crate::sort::Facts {
        internal_date: m.date,
        size: m.size,
    };
    Ok(Some((hit, header, facts)))
}

/// A SEARCH (SORT, THREAD) in progress: its parsed key and the messages done so far.
pub struct SearchJob {
    tag: String,
    key: Key,
    needs: u8,
    uid: bool,
    ret: Option<ReturnOpts>,
    then: Then,
    /// The next message (index in the view) to look at.
    pos: usize,
    count: u32,
    largest_uid: u32,
    /// The hits so far, by UID or sequence number as the answer names them.
    hits: Vec<u32>,
    hc: HeaderCache,
    /// With a MODSEQ key: the highest MODSEQ of the hits so far.
    modseq: Option<u64>,
    /// The folder's HIGHESTMODSEQ when the search began: an update context
    /// ([`crate::context`]) tests what changed since then.
    began: u64,
}

#[cfg(test)]
mod tests {
    fn matches(key: super::Key, raw: &[u8]) -> bool {
        key.eval(&super::Ctx {
            seq: 1,
            count: 1,
            uid: 1,
            largest_uid: 1,
            flags: Default::default(),
            size: raw.len() as u64,
            date: 0,
            modseq: 1,
            guid: 0,
            saved: 0,
            raw: Some(raw),
        })
    }

    #[test]
    fn address_keys_leave_comments_out_and_sent_keys_use_the_written_date() {
        use super::Key;
        let raw = b"From: Ann (the boss) <ann (x) @ (y) example.test>\r\nTo: =?UTF-8?Q?J=C3=BCrgen?= <j@x.test>\r\n\
                    Date: Sun, 25 Mar 2007 00:00:00 +0200\r\n\r\nbody\r\n";
        let addr = |n: &str, s: &str| Key::Address(n.into(), s.as_bytes().to_vec());
        assert!(matches(addr("FROM", "ann@example.test"), raw));
        assert!(matches(addr("FROM", "Ann <ann@"), raw));
        assert!(!matches(addr("FROM", "boss"), raw), "comments are not searched");
        assert!(matches(addr("TO", "jürgen"), raw), "encoded names match decoded");
        assert!(!matches(addr("CC", "ann"), raw));
        let day = crate::parse::date("25-Mar-2007").unwrap();
        assert!(matches(Key::Sent(std::cmp::Ordering::Equal, true, day), raw));
        assert!(!matches(Key::Sent(std::cmp::Ordering::Less, false, day), raw));
        assert!(!matches(
            Key::Sent(std::cmp::Ordering::Equal, true, day),
            b"Subject: x\r\n\r\n"
        ));
    }

    #[test]
    fn encoded_words_are_searched_decoded() {
        assert!(super::decoded_contains(
            b"=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=",
            "grüße".as_bytes()
        ));
        assert!(super::decoded_contains(
            b"=?UTF-8?Q?J=C3=BCrgen?= <j@x.test>",
            "JÜRGEN".as_bytes()
        ));
        assert!(super::decoded_contains(b"=?ISO-8859-1?Q?K=F6ln?=", "köln".as_bytes()));
        assert!(!super::decoded_contains(
            b"=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=",
            b"paris"
        ));
        assert!(
            !super::decoded_contains(b"plain text", b"plain"),
            "only encoded values are decoded"
        );
    }

    #[test]
    fn substring_is_case_insensitive() {
        assert!(super::contains(b"Hello World", b"wORLD"));
        assert!(!super::contains(b"Hello", b"world"));
        assert!(super::contains(b"x", b""));
        // a long needle: same answers, linear time on a worst case for naive search
        let mut hay = vec![b'a'; 2_000_000];
        let mut needle = vec![b'A'; 100_000];
        needle.push(b'b');
        assert!(!super::contains(&hay, &needle));
        hay.extend_from_slice(b"B");
        assert!(super::contains(&hay, &needle));
    }
}
