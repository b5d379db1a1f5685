//! `postern status` on a mail hub (issue 15): per mailbox server of `replica_relays`, how
//! many copies it is still owed — pending recipients whose fixed route is that relay, in
//! `hold/`, `incoming/`, `active/` and `deferred/` — how old the oldest is, and the last
//! reason one was deferred (from the defer logs).
//!
//! When the hub follows the director (issue 16: `director_pairs` entries with `smtp=`
//! addresses, [`postern_lib::director::hub_relays`]), the copies go to the user's pair, so
//! they are counted per pair: one row `pair NAME` for all the routes of its `smtp=`
//! addresses, then one row per `replica_relays` entry that is no pair's (where the copies
//! of users the director cannot place go).

use std::collections::BTreeMap;
use std::path::Path;

use postern_lib::config::Config;
use postern_lib::queue_file::{QueueFile, parse_route};
use postern_lib::queue_scan::{defer_reasons, queue_files};
use postern_lib::safe_open::{Expect, open_read};

/// What one relay is owed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Owed {
    /// Pending copies.
    pub copies: usize,
    /// Arrival (Unix seconds) of the oldest.
    pub oldest: Option<u64>,
    /// The last deferral reason found for one of them.
    pub reason: Option<String>,
}

/// The host of a nexthop: `[198.18.0.31]:25` → `198.18.0.31`.
fn host_of(nexthop: &str) -> &str {
    match nexthop.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => nexthop.rsplit_once(':').map_or(nexthop, |(h, _)| h),
    }
}

/// Copies owed per route, every route of `relays` listed (0 when none is owed).
pub fn owed(queue_dir: &Path, relays: &[String]) -> BTreeMap<String, Owed> {
    let mut out: BTreeMap<String, Owed> = relays.iter().map(|r| (r.clone(), Owed::default())).collect();
    for queue in ["hold", "incoming", "active", "deferred"] {
        for f in queue_files(queue_dir, queue).unwrap_or_default() {
            let Ok(file) = open_read(&f.path, &Expect::any()) else {
                continue;
            };
            let Ok(qf) = QueueFile::read(file) else { continue };
            let mut reasons: Option<Vec<(String, String)>> = None;
            for r in qf.recipients.iter().filter(|r| !r.status.is_final()) {
                let Some(route) = &r.route else { continue };
                let o = out.entry(route.clone()).or_default();
                o.copies += 1;
                o.oldest = Some(
                    o.oldest
                        .map_or(qf.envelope.arrival.secs, |t| t.min(qf.envelope.arrival.secs)),
                );
                let host = parse_route(route).map_or("", |(_, n)| host_of(n));
                let reasons = reasons.get_or_insert_with(|| defer_reasons(queue_dir, &f));
                if let Some((_, why)) = reasons.iter().rev().find(|(a, why)| {
                    a.eq_ignore_ascii_case(&r.spec.address) && (why.contains(route.as_str()) || why.contains(host))
                }) {
                    o.reason = Some(why.clone());
                }
            }
        }
    }
    out
}

/// On a hub (`replica_domains` set), the director's pairs that have `smtp=` addresses:
/// name and routes.
fn pair_routes(config: &Config) -> Vec<(String, Vec<String>)> {
    if config.main.replica_domains.is_empty() {
        return Vec::new();
    }
    match postern_lib::director::Director::from_config(&config.main) {
        Ok(Some(d)) => d
            .pairs()
            .iter()
            .map(|p| (p.name.clone(), p.relays()))
            .filter(|(_, r)| !r.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// The rows of the table: per pair (`pair NAME`, what its routes are owed together), then
/// per route of no pair.
fn rows(by_route: BTreeMap<String, Owed>, pairs: &[(String, Vec<String>)]) -> Vec<(String, Owed)> {
    let mut out: Vec<(String, Owed)> = pairs
        .iter()
        .map(|(name, _)| (format!("pair {name}"), Owed::default()))
        .collect();
    let mut rest = Vec::new();
    for (route, o) in by_route {
        let Some((_, (_, row))) = pairs
            .iter()
            .zip(out.iter_mut())
            .find(|((_, routes), _)| routes.contains(&route))
        else {
            rest.push((route, o));
            continue;
        };
        row.copies += o.copies;
        row.oldest = match (row.oldest, o.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if o.reason.is_some() {
            row.reason = o.reason;
        }
    }
    out.extend(rest);
    out
}

/// Prints the table when this host copies mail to replicas (or still owes copies).
pub fn print(config: &Config) {
    let pairs = pair_routes(config);
    let mut routes = config.main.replica_relays.clone();
    routes.extend(pairs.iter().flat_map(|(_, r)| r.iter().cloned()));
    let owed = rows(owed(Path::new(&config.main.queue_directory), &routes), &pairs);
    if owed.is_empty() {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!();
    let head = if pairs.is_empty() {
        "replica relay"
    } else {
        "replica relay or pair"
    };
    println!("{head:<32} {:>11} {:>8}  last reason", "copies owed", "oldest");
    for (route, o) in owed {
        let oldest = o
            .oldest
            .map_or("-".to_string(), |t| format!("{}s", now.saturating_sub(t)));
        let state = if o.copies == 0 {
            "in step".to_string()
        } else {
            o.reason.unwrap_or_default()
        };
        println!("{route:<32} {:>11} {oldest:>8}  {state}", o.copies);
    }
}

#[cfg(test)]
mod tests {
    use super::{Owed, host_of, rows};
    use std::collections::BTreeMap;

    #[test]
    fn routes_of_a_pair_are_one_row_and_other_relays_their_own() {
        let owed = |copies, oldest: Option<u64>, reason: Option<&str>| Owed {
            copies,
            oldest,
            reason: reason.map(str::to_string),
        };
        let by_route: BTreeMap<String, Owed> = [
            ("smtp:[10.0.0.1]:25", owed(2, Some(50), None)),
            ("smtp:[10.0.0.2]:25", owed(3, Some(40), Some("connection refused"))),
            ("smtp:[10.0.0.3]:25", owed(0, None, None)),
            ("smtp:[10.0.0.9]:25", owed(1, Some(70), None)),
        ]
        .into_iter()
        .map(|(r, o)| (r.to_string(), o))
        .collect();
        let pairs = vec![
            (
                "p1".to_string(),
                vec!["smtp:[10.0.0.1]:25".to_string(), "smtp:[10.0.0.2]:25".to_string()],
            ),
            ("p2".to_string(), vec!["smtp:[10.0.0.3]:25".to_string()]),
            ("p3".to_string(), vec!["smtp:[10.0.0.4]:25".to_string()]),
        ];
        let got = rows(by_route, &pairs);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pair p1", "pair p2", "pair p3", "smtp:[10.0.0.9]:25"]);
        assert_eq!(got[0].1, owed(5, Some(40), Some("connection refused")));
        assert_eq!(got[1].1, owed(0, None, None));
        assert_eq!(got[2].1, owed(0, None, None));
        assert_eq!(got[3].1, owed(1, Some(70), None));
    }

    #[test]
    fn hosts_of_nexthops() {
        assert_eq!(host_of("[198.18.0.31]:25"), "198.18.0.31");
        assert_eq!(host_of("[::1]:25"), "::1");
        assert_eq!(host_of("mb.example.test:25"), "mb.example.test");
        assert_eq!(host_of("mb.example.test"), "mb.example.test");
    }
}
