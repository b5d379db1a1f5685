//! `postern status` on a mail hub (issue 15): per mailbox server of `replica_relays`, how
//! many copies it is still owed — pending recipients whose fixed route is that relay, in
//! `hold/`, `incoming/`, `active/` and `deferred/` — how old the oldest is, and the last
//! reason one was deferred (from the defer logs).

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

/// Prints the table when this host copies mail to replicas (or still owes copies).
pub fn print(config: &Config) {
    let relays = &config.main.replica_relays;
    let owed = owed(Path::new(&config.main.queue_directory), relays);
    if owed.is_empty() {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!();
    println!(
        "{:<32} {:>11} {:>8}  last reason",
        "replica relay", "copies owed", "oldest"
    );
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
    use super::host_of;

    #[test]
    fn hosts_of_nexthops() {
        assert_eq!(host_of("[198.18.0.31]:25"), "198.18.0.31");
        assert_eq!(host_of("[::1]:25"), "::1");
        assert_eq!(host_of("mb.example.test:25"), "mb.example.test");
        assert_eq!(host_of("mb.example.test"), "mb.example.test");
    }
}
