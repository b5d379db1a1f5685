//! SORT (RFC 5256) and SORT=DISPLAY (RFC 5957): the sort criteria, the values each
//! message is sorted by, and the ordering. The messages to sort are a SEARCH's hits
//! ([`crate::cmd_search`] finds them a work slice at a time and hands each hit's header
//! to [`Sorter::add`], so reading and parsing headers never holds the process for long);
//! the final ordering of the precomputed values is one `O(n log n)` sort.
//!
//! Keys: ARRIVAL (internal date), CC, FROM, TO (the addr-mailbox, i.e. local part, of
//! the first address), DATE (the Date: header in UTC, the internal date when it is
//! missing or unparsable: RFC 5256 §2.2), SIZE, SUBJECT (the base subject,
//! [`crate::base_subject`]), DISPLAYFROM, DISPLAYTO (RFC 5957: the first address's
//! display name, RFC 2047-decoded, or its addr-spec when it has none). Strings compare
//! with [`crate::collate::DEFAULT`] (the subject mapped before its base subject is
//! taken, as Dovecot does); messages equal in every key keep mailbox order.

use crate::parse::Arg;
use crate::session::Reply;
use crate::sort_cache::{Keys, Shared};
use mail_parser::{Addr, Address, Message as Parsed};
use std::cmp::Ordering;

/// Most criteria in one SORT.
pub const MAX_CRITERIA: usize = 16;

/// A sort key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Internal date.
    Arrival,
    /// First Cc's mailbox.
    Cc,
    /// Sent date.
    Date,
    /// First From's mailbox.
    From,
    /// RFC822.SIZE.
    Size,
    /// Base subject.
    Subject,
    /// First To's mailbox.
    To,
    /// First From's display name or address (RFC 5957).
    DisplayFrom,
    /// First To's display name or address (RFC 5957).
    DisplayTo,
}

/// One criterion: a key, maybe reversed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Criterion {
    /// The key.
    pub key: SortKey,
    /// REVERSE.
    pub reverse: bool,
}

/// Parses the parenthesised list of sort criteria: `BAD` for an empty list, an unknown
/// key, a REVERSE without a key, or more than [`MAX_CRITERIA`].
pub fn parse_criteria(arg: Option<&Arg>) -> Result<Vec<Criterion>, Reply> {
    let Some(Arg::List(items)) = arg else {
        return Err(Reply::Bad("Missing sort criteria".into()));
    };
    let mut out = Vec::new();
    let mut reverse = false;
    for item in items {
        let word = item
            .keyword()
            .ok_or_else(|| Reply::Bad("Invalid sort criterion".into()))?;
        let key = match word.as_str() {
            "REVERSE" if !reverse => {
                reverse = true;
                continue;
            }
            "ARRIVAL" => SortKey::Arrival,
            "CC" => SortKey::Cc,
            "DATE" => SortKey::Date,
            "FROM" => SortKey::From,
            "SIZE" => SortKey::Size,
            "SUBJECT" => SortKey::Subject,
            "TO" => SortKey::To,
            "DISPLAYFROM" => SortKey::DisplayFrom,
            "DISPLAYTO" => SortKey::DisplayTo,
            _ => {
                return Err(Reply::Bad(format!(
                    "Unknown sort criterion {}",
                    word.chars().take(40).collect::<String>().escape_default()
                )));
            }
        };
        out.push(Criterion { key, reverse });
        reverse = false;
        if out.len() > MAX_CRITERIA {
            return Err(Reply::Bad(format!("[LIMIT] More than {MAX_CRITERIA} sort criteria")));
        }
    }
    if reverse || out.is_empty() {
        return Err(Reply::Bad("Missing sort key".into()));
    }
    Ok(out)
}

/// Whether sorting by `criteria` needs the messages' headers.
pub fn needs_header(criteria: &[Criterion]) -> bool {
    criteria
        .iter()
        .any(|c| !matches!(c.key, SortKey::Arrival | SortKey::Size))
}

/// A value a message is sorted by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Num(i64),
    Str(Vec<u8>),
}

/// What a message is known by while it is sorted: the number to answer with, and its
/// values, one per criterion.
struct Entry {
    id: u32,
    values: Vec<Value>,
}

/// Collects the hits of a SORT and orders them.
pub struct Sorter {
    criteria: Vec<Criterion>,
    entries: Vec<Entry>,
    /// The folder's cached keys ([`crate::sort_cache`]), once bound.
    cache: Option<Shared>,
}

/// The facts of a message outside its header.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    /// Internal date, seconds since the epoch.
    pub internal_date: i64,
    /// RFC822.SIZE.
    pub size: u64,
}

impl Sorter {
    /// A sorter for `criteria`.
    pub fn new(criteria: Vec<Criterion>) -> Sorter {
        Sorter {
            criteria,
            entries: Vec::new(),
            cache: None,
        }
    }

    /// Uses (and fills) the cached keys of the folder sorted.
    pub fn bind(&mut self, folder: &postern_mailbox::folder::Folder) {
        if self.needs_header() {
            self.cache = crate::sort_cache::bind(folder);
        }
    }

    /// Whether [`Sorter::add`] needs message `uid`'s header (not when no criterion
    /// needs headers or its keys are cached).
    pub fn needs_header_of(&self, uid: u32) -> bool {
        self.needs_header() && self.cache.as_ref().is_none_or(|c| c.borrow().get(uid).is_none())
    }

    /// Whether the criteria need the messages' headers.
    pub fn needs_header(&self) -> bool {
        needs_header(&self.criteria)
    }

    /// Adds a hit, in ascending mailbox order: `id` is what the answer names it by,
    /// `uid` its UID, `header` its header (empty when [`Sorter::needs_header_of`] said
    /// it is not needed).
    pub fn add(&mut self, id: u32, uid: u32, header: &[u8], facts: Facts) {
        let keys = match self.needs_header() {
            true => Some(crate::sort_cache::keys_of(
                self.cache.as_ref(),
                uid,
                header,
                facts.internal_date,
            )),
            false => None,
        };
        let e = entry(&self.criteria, id, keys.as_deref(), facts);
        self.entries.push(e);
    }

    /// The hits in sorted order.
    pub fn finish(self) -> Vec<u32> {
        self.finish_keyed().ids()
    }

    /// The hits in sorted order, with the values they were sorted by (for a sort that
    /// is kept up to date: CONTEXT=SORT, [`crate::context`]).
    pub fn finish_keyed(mut self) -> Keyed {
        let criteria = self.criteria;
        // stable: messages equal in every key stay in mailbox order (RFC 5256)
        self.entries.sort_by(|a, b| compare(&criteria, a, b));
        Keyed {
            criteria,
            entries: self.entries,
        }
    }
}

/// A sort's result kept with its values, so that messages can be placed in it or taken
/// out of it one by one: the ids must be UIDs (equal values are then ordered by UID,
/// which is mailbox order).
pub struct Keyed {
    criteria: Vec<Criterion>,
    entries: Vec<Entry>,
}

impl Keyed {
    /// The ids in sorted order.
    pub fn ids(&self) -> Vec<u32> {
        self.entries.iter().map(|e| e.id).collect()
    }

    /// Whether the criteria need the messages' headers.
    pub fn needs_header(&self) -> bool {
        needs_header(&self.criteria)
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Renames every id (sequence numbers to UIDs).
    pub fn map_ids(&mut self, f: impl Fn(u32) -> u32) {
        for e in &mut self.entries {
            e.id = f(e.id);
        }
    }

    /// Takes `id` out: its position (from 0), when it was in.
    pub fn remove(&mut self, id: u32) -> Option<usize> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        self.entries.remove(i);
        Some(i)
    }

    /// Places `id` where it sorts: its position (from 0).
    pub fn insert(&mut self, id: u32, header: &[u8], facts: Facts) -> usize {
        let keys = self.needs_header().then(|| Keys::parse(header, facts.internal_date));
        let e = entry(&self.criteria, id, keys.as_ref(), facts);
        let criteria = &self.criteria;
        let i = self
            .entries
            .partition_point(|x| compare(criteria, x, &e).then(x.id.cmp(&e.id)) == Ordering::Less);
        self.entries.insert(i, e);
        i
    }
}

/// A message's sort entry, from its keys (`None` when no criterion needs the header).
fn entry(criteria: &[Criterion], id: u32, keys: Option<&Keys>, facts: Facts) -> Entry {
    let none = Keys::default();
    let k = keys.unwrap_or(&none);
    let values = criteria.iter().map(|c| value(c.key, k, facts)).collect();
    Entry { id, values }
}

/// The order of two entries by the criteria alone.
fn compare(criteria: &[Criterion], a: &Entry, b: &Entry) -> Ordering {
    for (i, c) in criteria.iter().enumerate() {
        let o = a.values[i].cmp(&b.values[i]);
        let o = if c.reverse { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// The sent date (RFC 5256 §2.2): the Date: header in UTC, or the internal date when
/// there is none that parses.
pub fn sent_date(parsed: Option<&Parsed<'_>>, internal_date: i64) -> i64 {
    parsed
        .and_then(|m| m.date())
        .filter(|d| d.is_valid())
        .map_or(internal_date, |d| d.to_timestamp())
}

/// The decoded Subject (empty when there is none).
pub fn subject<'p>(parsed: Option<&'p Parsed<'_>>) -> &'p str {
    parsed.and_then(|m| m.subject()).unwrap_or("")
}

/// The first address of the From (`to`: To, `cc`: Cc) field.
fn first_addr<'p>(parsed: Option<&'p Parsed<'p>>, key: SortKey) -> Option<&'p Addr<'p>> {
    let m = parsed?;
    let list: Option<&Address<'_>> = match key {
        SortKey::To | SortKey::DisplayTo => m.to(),
        SortKey::Cc => m.cc(),
        _ => m.from(),
    };
    list?.first()
}

/// The sort keys of a parsed header (the thread ids left empty).
pub(crate) fn keys(parsed: Option<&Parsed<'_>>, internal_date: i64) -> Keys {
    let cmp = crate::collate::DEFAULT;
    // the subject's key first, then its base subject (as Dovecot does: a fullwidth colon
    // or a no-break space in a leader works as ':' and ' '), not mapped again
    let folded = cmp.key(subject(parsed));
    let (subject, reply) = crate::base_subject::base_subject(std::str::from_utf8(&folded).unwrap_or_default());
    // the addr-mailbox: the local part
    let local = |key| {
        let a = first_addr(parsed, key).and_then(|a| a.address.as_deref()).unwrap_or("");
        cmp.key(a.rsplit_once('@').map_or(a, |(l, _)| l))
    };
    let display = |key| {
        let Some(a) = first_addr(parsed, key) else {
            return Vec::new();
        };
        let name = a.name.as_deref().map(str::trim).unwrap_or("");
        let shown = if name.is_empty() {
            a.address.as_deref().unwrap_or("")
        } else {
            name
        };
        cmp.key(shown)
    };
    Keys {
        sent: sent_date(parsed, internal_date),
        subject: subject.into_bytes(),
        reply,
        from: local(SortKey::From),
        to: local(SortKey::To),
        cc: local(SortKey::Cc),
        display_from: display(SortKey::DisplayFrom),
        display_to: display(SortKey::DisplayTo),
        msgid: None,
        refs: Vec::new(),
    }
}

fn value(key: SortKey, k: &Keys, facts: Facts) -> Value {
    match key {
        SortKey::Arrival => Value::Num(facts.internal_date),
        SortKey::Size => Value::Num(facts.size as i64),
        SortKey::Date => Value::Num(k.sent),
        SortKey::Subject => Value::Str(k.subject.clone()),
        SortKey::From => Value::Str(k.from.clone()),
        SortKey::To => Value::Str(k.to.clone()),
        SortKey::Cc => Value::Str(k.cc.clone()),
        SortKey::DisplayFrom => Value::Str(k.display_from.clone()),
        SortKey::DisplayTo => Value::Str(k.display_to.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sort(criteria: &str, msgs: &[&str]) -> Vec<u32> {
        let cmd = crate::parse::command(format!("t SORT ({criteria})").as_bytes()).unwrap();
        let mut s = Sorter::new(parse_criteria(cmd.args.first()).unwrap());
        for (i, m) in msgs.iter().enumerate() {
            let header = format!("{m}\r\n\r\n");
            s.add(
                i as u32 + 1,
                i as u32 + 1,
                header.as_bytes(),
                Facts {
                    internal_date: 1000 - i as i64,
                    size: header.len() as u64,
                },
            );
        }
        s.finish()
    }

    #[test]
    fn criteria_parse_and_refuse() {
        let p = |s: &str| parse_criteria(crate::parse::command(s.as_bytes()).unwrap().args.first());
        assert_eq!(
            p("t SORT (REVERSE date subject)").unwrap(),
            vec![
                Criterion {
                    key: SortKey::Date,
                    reverse: true
                },
                Criterion {
                    key: SortKey::Subject,
                    reverse: false
                }
            ]
        );
        for bad in [
            "t SORT ()",
            "t SORT (REVERSE)",
            "t SORT (FOO)",
            "t SORT DATE",
            "t SORT (REVERSE REVERSE DATE)",
        ] {
            assert!(matches!(p(bad), Err(Reply::Bad(_))), "{bad}");
        }
    }

    #[test]
    fn keys_order_as_rfc_5256_and_5957_say() {
        let msgs = [
            "Subject: a\r\nFrom: Zed <b@x.test>\r\nDate: Sun, 25 Mar 2007 00:00:00 +0200",
            "Subject: C\r\nFrom: a@y.test\r\nDate: Sat, 24 Mar 2007 23:30:00 +0000",
            "Subject: b\r\nFrom: \"\" <c@x.test>\r\nTo: Ann <z@x.test>",
            "Subject: _",
            "Subject: [foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)",
            "Subject: b (a)",
            "Subject: Re: [FWD: c]",
            "Subject: [xyz]",
            "X-Nothing: here",
        ];
        assert_eq!(sort("SUBJECT", &msgs), [9, 1, 3, 5, 6, 2, 7, 8, 4]);
        assert_eq!(sort("REVERSE SUBJECT", &msgs), [4, 8, 2, 7, 6, 3, 5, 1, 9]);
        // no From sorts first (empty), then mailbox local parts a, b, c
        assert_eq!(sort("FROM", &msgs), [4, 5, 6, 7, 8, 9, 2, 1, 3]);
        // display: "" name falls back to the address; a name wins over its address
        assert_eq!(sort("DISPLAYFROM", &msgs), [4, 5, 6, 7, 8, 9, 2, 3, 1]);
        assert_eq!(sort("DISPLAYTO", &msgs)[8], 3);
        // arrival: internal dates descend with the sequence number here
        assert_eq!(sort("ARRIVAL", &msgs[..3]), [3, 2, 1]);
        // date: message 1 is 22:00 UTC on the 24th, before message 2's 23:30; message 3
        // has no Date: its internal date (998 s after the epoch) is earliest
        assert_eq!(sort("DATE", &msgs[..3]), [3, 1, 2]);
        assert_eq!(sort("REVERSE DATE", &msgs[..3]), [2, 1, 3]);
        assert_eq!(
            sort("SIZE", &["Subject: aaa", "Subject: a", "Subject: aa", "Subject: a"]),
            [2, 4, 3, 1]
        );
        assert_eq!(
            sort(
                "REVERSE SIZE",
                &["Subject: aaa", "Subject: a", "Subject: aa", "Subject: a"]
            ),
            [1, 3, 2, 4],
            "ties stay in mailbox order when reversed"
        );
        // within one base subject, the larger first: 3's header is longer than 5's, 2's
        // than 7's
        assert_eq!(sort("SUBJECT REVERSE SIZE", &msgs), [9, 1, 3, 5, 6, 2, 7, 8, 4]);
        assert_eq!(sort("SUBJECT SIZE", &msgs), [9, 1, 5, 3, 6, 7, 2, 8, 4]);
    }
}
