//! Result options of SEARCH and SORT: ESEARCH (RFC 4731: `RETURN (MIN MAX COUNT ALL)`),
//! ESORT and PARTIAL (RFC 5267), and SEARCHRES (RFC 5182: `RETURN (SAVE)` keeps the
//! result as `$`, which later commands use as a sequence set). The saved result is kept
//! as UIDs with the selected folder, so messages expunged since drop out of it, and a
//! new selection starts with an empty one.

use crate::parse::{Arg, SeqSet};
use crate::session::{Reply, Session};

/// `RETURN (...)` options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReturnOpts {
    /// MIN.
    pub min: bool,
    /// MAX.
    pub max: bool,
    /// COUNT.
    pub count: bool,
    /// ALL.
    pub all: bool,
    /// SAVE (RFC 5182).
    pub save: bool,
    /// PARTIAL low:high (RFC 5267), positions from 1.
    pub partial: Option<(u32, u32)>,
    /// UPDATE (RFC 5267 CONTEXT): the result is kept up to date ([`crate::context`]).
    pub update: bool,
}

impl ReturnOpts {
    /// Parses the list after RETURN; `RETURN ()` is `RETURN (ALL)`.
    pub fn parse(list: &[Arg]) -> Result<ReturnOpts, Reply> {
        let mut o = ReturnOpts::default();
        let mut i = 0;
        while i < list.len() {
            match list[i].keyword().as_deref() {
                Some("MIN") => o.min = true,
                Some("MAX") => o.max = true,
                Some("COUNT") => o.count = true,
                Some("ALL") => o.all = true,
                Some("SAVE") => o.save = true,
                Some("UPDATE") => o.update = true,
                Some("PARTIAL") if o.partial.is_none() => {
                    i += 1;
                    let range = list.get(i).and_then(Arg::text).and_then(|r| partial_range(&r));
                    o.partial = Some(range.ok_or_else(|| Reply::Bad("Invalid PARTIAL range".into()))?);
                }
                _ => return Err(Reply::Bad("Unknown RETURN option".into())),
            }
            i += 1;
        }
        if list.is_empty() {
            o.all = true;
        }
        if o.update && (o.min || o.max || o.save || o.partial.is_some()) {
            return Err(Reply::Bad(
                "UPDATE cannot be combined with MIN, MAX, SAVE or PARTIAL".into(),
            ));
        }
        Ok(o)
    }

    /// Whether nothing but SAVE was asked: then no untagged answer at all (RFC 5182).
    pub fn only_save(&self) -> bool {
        self.save && !self.min && !self.max && !self.count && !self.all && self.partial.is_none()
    }

    /// What SAVE keeps of `hits` (in result order): all of them, or only the MIN and/or
    /// MAX ones (as [`line`] names them), or the PARTIAL ones, when those were asked
    /// without ALL or COUNT (RFC 5182 §2.4).
    pub fn to_save(&self, hits: &[u32]) -> Vec<u32> {
        if self.all || self.count {
            return hits.to_vec();
        }
        if let Some((lo, hi)) = self.partial {
            return window(hits, lo, hi).to_vec();
        }
        if self.min || self.max {
            let mut v: Vec<u32> = Vec::new();
            v.extend(hits.first().filter(|_| self.min));
            v.extend(hits.last().filter(|_| self.max && !(self.min && hits.len() == 1)));
            return v;
        }
        hits.to_vec()
    }
}

/// `low:high` of PARTIAL: two numbers from 1, either order; not `*`.
fn partial_range(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    let num = |x: &str| {
        x.parse::<u32>()
            .ok()
            .filter(|&n| n > 0 && x.bytes().all(|b| b.is_ascii_digit()))
    };
    let (a, b) = (num(a)?, num(b)?);
    Some((a.min(b), a.max(b)))
}

/// Positions `lo..=hi` (from 1) of `hits`.
fn window(hits: &[u32], lo: u32, hi: u32) -> &[u32] {
    let start = (lo as usize - 1).min(hits.len());
    let end = (hi as usize).min(hits.len());
    &hits[start..end]
}

/// Numbers in the given order as a sequence set: only ascending runs become ranges
/// ([`crate::reply::uid_set`]), so the order is kept (`5,3:4` would say 3 before 4; a
/// descending sort is written `5,4,3`).
fn ordered_set(nums: &[u32]) -> String {
    crate::reply::uid_set(nums)
}

/// `* ESEARCH (TAG "t")` and ` UID` for a UID command: the start of every ESEARCH line.
pub fn head(tag: &str, uid: bool) -> String {
    let mut quoted = Vec::new();
    crate::reply::string(&mut quoted, tag.as_bytes());
    let mut line = format!("* ESEARCH (TAG {})", String::from_utf8_lossy(&quoted));
    if uid {
        line.push_str(" UID");
    }
    line
}

/// `* ESEARCH (TAG "t") UID MIN 1 MAX 9 COUNT 3 ALL 1,4,9 PARTIAL (1:2 1,4)`: the asked
/// results of `hits`, which are ascending for SEARCH and in sort order for SORT (ESORT:
/// MIN and MAX are then the first and last in that order, ALL and PARTIAL keep it). MIN,
/// MAX and ALL are left out when nothing matched.
pub fn line(tag: &str, uid: bool, o: &ReturnOpts, hits: &[u32]) -> String {
    let mut line = head(tag, uid);
    if let (true, Some(m)) = (o.min, hits.first()) {
        line.push_str(&format!(" MIN {m}"));
    }
    if let (true, Some(m)) = (o.max, hits.last()) {
        line.push_str(&format!(" MAX {m}"));
    }
    if o.count {
        line.push_str(&format!(" COUNT {}", hits.len()));
    }
    if o.all && !hits.is_empty() {
        line.push_str(&format!(" ALL {}", ordered_set(hits)));
    }
    if let Some((lo, hi)) = o.partial {
        let part = window(hits, lo, hi);
        let set = if part.is_empty() {
            "NIL".to_string()
        } else {
            ordered_set(part)
        };
        line.push_str(&format!(" PARTIAL ({lo}:{hi} {set})"));
    }
    line
}

impl Session {
    /// Keeps `uids` as the selected folder's saved result (`$`).
    pub(crate) fn save_result(&mut self, mut uids: Vec<u32>) {
        if let Some(sel) = self.sel.as_mut() {
            uids.sort_unstable();
            uids.dedup();
            sel.saved = uids;
        }
    }

    /// `set` itself, or for `$` (RFC 5182) the saved result as a set of UIDs (`uid`) or
    /// of the sequence numbers those messages have now.
    pub(crate) fn expand_saved(&self, set: SeqSet, uid: bool) -> SeqSet {
        if !set.is_saved() {
            return set;
        }
        let Some(sel) = &self.sel else {
            return SeqSet(Vec::new());
        };
        let nums: Vec<u32> = if uid {
            sel.saved.clone()
        } else {
            sel.saved
                .iter()
                .filter_map(|u| sel.view.binary_search_by_key(u, |v| v.0).ok())
                .map(|i| i as u32 + 1)
                .collect()
        };
        SeqSet(nums.into_iter().map(|n| (n, n)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Result<ReturnOpts, Reply> {
        let c = crate::parse::command(format!("t SEARCH RETURN ({s})").as_bytes()).unwrap();
        match &c.args[1] {
            Arg::List(l) => ReturnOpts::parse(l),
            _ => unreachable!(),
        }
    }

    #[test]
    fn return_options_parse() {
        assert!(opts("").unwrap().all);
        let o = opts("MIN max Save PARTIAL 4:2").unwrap();
        assert!(o.min && o.max && o.save && !o.all && o.partial == Some((2, 4)));
        for bad in [
            "PARTIAL 1",
            "PARTIAL 1:*",
            "PARTIAL *:1",
            "PARTIAL 0:3",
            "FOO",
            "PARTIAL",
            "UPDATE MIN",
            "UPDATE SAVE",
            "PARTIAL 1:5 UPDATE",
        ] {
            assert!(opts(bad).is_err(), "{bad}");
        }
        assert!(opts("SAVE").unwrap().only_save());
    }

    #[test]
    fn lines_for_search_and_sort() {
        let all = opts("MIN MAX COUNT ALL").unwrap();
        assert_eq!(
            line("a1", true, &all, &[2, 3, 4, 9]),
            "* ESEARCH (TAG \"a1\") UID MIN 2 MAX 9 COUNT 4 ALL 2:4,9"
        );
        assert_eq!(line("b", false, &all, &[]), "* ESEARCH (TAG \"b\") COUNT 0");
        // ESORT: order kept, MIN/MAX first and last in it
        assert_eq!(
            line("c", false, &all, &[5, 4, 3, 1, 2]),
            "* ESEARCH (TAG \"c\") MIN 5 MAX 2 COUNT 5 ALL 5,4,3,1:2"
        );
        let p = opts("PARTIAL 2:4").unwrap();
        assert_eq!(
            line("d", false, &p, &[5, 4, 3, 2, 1]),
            "* ESEARCH (TAG \"d\") PARTIAL (2:4 4,3,2)"
        );
        assert_eq!(
            line("d", false, &p, &[1, 2, 3, 4, 5]),
            "* ESEARCH (TAG \"d\") PARTIAL (2:4 2:4)"
        );
        assert_eq!(line("d", false, &p, &[1]), "* ESEARCH (TAG \"d\") PARTIAL (2:4 NIL)");
        let p = opts("PARTIAL 1:6").unwrap();
        assert_eq!(
            line("e", false, &p, &[1, 2, 3, 4, 5]),
            "* ESEARCH (TAG \"e\") PARTIAL (1:6 1:5)"
        );
    }

    #[test]
    fn save_keeps_what_rfc_5182_says() {
        let hits = [3, 5, 9];
        assert_eq!(opts("SAVE").unwrap().to_save(&hits), [3, 5, 9]);
        assert_eq!(opts("SAVE MIN").unwrap().to_save(&hits), [3]);
        assert_eq!(opts("SAVE MAX MIN").unwrap().to_save(&hits), [3, 9]);
        assert_eq!(opts("SAVE MIN COUNT").unwrap().to_save(&hits), [3, 5, 9]);
        assert_eq!(opts("SAVE MIN MAX").unwrap().to_save(&[7]), [7]);
        assert_eq!(opts("SAVE MIN").unwrap().to_save(&[]), Vec::<u32>::new());
        assert_eq!(opts("SAVE PARTIAL 2:3").unwrap().to_save(&[9, 3, 5]), [3, 5]);
    }
}
