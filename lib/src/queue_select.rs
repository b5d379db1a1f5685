//! Selecting queued messages by sender, recipient, domain, queue, age and defer reason:
//! the one selection `postsuper` (delete, hold, release, requeue) and `postqueue` (list,
//! flush) share, so `postsuper -d ALL --reason 'Connection refused' --dry-run` replaces the
//! usual awk pipeline over `mailq`.
//!
//! | option | a message matches when |
//! | --- | --- |
//! | `--from ADDR` | its envelope sender is ADDR (`<>`, `''` or `MAILER-DAEMON`: the null sender) |
//! | `--from DOMAIN`, `--from @DOMAIN` | its sender's domain is DOMAIN |
//! | `--to ADDR` / `--to DOMAIN` | a recipient still to be delivered is ADDR / in DOMAIN |
//! | `--domain DOMAIN` | a pending recipient is in DOMAIN (as `postqueue -s DOMAIN`) |
//! | `--reason TEXT` | a pending recipient's defer reason contains TEXT (any case) |
//! | `--older AGE` / `--younger AGE` | it arrived at least / less than AGE ago (`90s`, `30m`, `2h`, `2d`, `1w`) |
//! | `--queue NAME` | it is in queue NAME (`maildrop`, `hold`, `incoming`, `active`, `deferred`); repeatable |
//!
//! Every option given must hold (AND); `--to`, `--domain` and `--reason` must hold for
//! the same recipient. Addresses and domains compare without case and without a trailing
//! dot. A file that cannot be read matches only a selection with no content criterion.
//! The walk is [`crate::queue_scan::scan`]: one message summarised at a time, so memory is
//! bounded whatever the queue holds.

use std::path::Path;

use crate::config::Seconds;
use crate::queue_scan::{Entry, LISTED_QUEUES, Summary, scan};

/// The options a [`Selection`] takes (each followed by one value).
pub const OPTIONS: &[&str] = &[
    "--from",
    "--to",
    "--domain",
    "--reason",
    "--older",
    "--younger",
    "--queue",
];

/// Longest value of an option.
const MAX_VALUE: usize = 1024;

/// What to select; the default selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Sender address or domain (lower case); `Some("")` is the null sender.
    pub from: Option<String>,
    /// Recipient address or domain (lower case).
    pub to: Option<String>,
    /// Recipient domain (lower case, no trailing dot).
    pub domain: Option<String>,
    /// Text the defer reason contains (lower case).
    pub reason: Option<String>,
    /// Minimum age in seconds.
    pub older: Option<u64>,
    /// Maximum age in seconds (exclusive).
    pub younger: Option<u64>,
    /// Queues to look in (empty: the command's default).
    pub queues: Vec<String>,
}

impl Selection {
    /// Whether `flag` is one of [`OPTIONS`].
    pub fn takes(flag: &str) -> bool {
        OPTIONS.contains(&flag)
    }

    /// Sets option `flag` (one of [`OPTIONS`]) to `value`.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<(), String> {
        if value.len() > MAX_VALUE || value.chars().any(char::is_control) {
            return Err(format!("{flag}: value too long or with control characters"));
        }
        let lower = value.trim().to_ascii_lowercase();
        match flag {
            "--from" => {
                let null = matches!(lower.as_str(), "" | "<>" | "mailer-daemon");
                self.from = Some(if null { String::new() } else { normalise(&lower) });
            }
            "--to" => self.to = Some(non_empty(flag, normalise(&lower))?),
            "--domain" => {
                let d = normalise(lower.trim_start_matches('@'));
                if d.contains('@') {
                    return Err(format!("{flag}: {value:?} is not a domain"));
                }
                self.domain = Some(non_empty(flag, d)?);
            }
            "--reason" => self.reason = Some(non_empty(flag, lower)?),
            "--older" => self.older = Some(Seconds::parse(value).map_err(|e| format!("{flag}: {e}"))?.0),
            "--younger" => self.younger = Some(Seconds::parse(value).map_err(|e| format!("{flag}: {e}"))?.0),
            "--queue" => {
                if !LISTED_QUEUES.contains(&lower.as_str()) {
                    return Err(format!(
                        "{flag}: unknown queue {value:?} (one of {})",
                        LISTED_QUEUES.join(", ")
                    ));
                }
                if !self.queues.contains(&lower) {
                    self.queues.push(lower);
                }
            }
            _ => return Err(format!("unknown selection option {flag}")),
        }
        Ok(())
    }

    /// Whether a content criterion (anything but `--queue`) is set.
    pub fn has_criteria(&self) -> bool {
        self.from.is_some()
            || self.to.is_some()
            || self.domain.is_some()
            || self.reason.is_some()
            || self.older.is_some()
            || self.younger.is_some()
    }

    /// The queues to walk: those of `defaults` that `--queue` names, or all of `defaults`
    /// when `--queue` was not given.
    pub fn queues<'a>(&self, defaults: &[&'a str]) -> Vec<&'a str> {
        defaults
            .iter()
            .copied()
            .filter(|q| self.queues.is_empty() || self.queues.iter().any(|s| s == q))
            .collect()
    }

    /// Whether `entry` matches, `now` being seconds since the epoch.
    pub fn matches(&self, entry: &Entry, now: u64) -> bool {
        if !self.queues.is_empty() && !self.queues.contains(&entry.file.queue) {
            return false;
        }
        let Summary::Message {
            arrival,
            sender,
            recipients,
        } = &entry.summary
        else {
            return !self.has_criteria();
        };
        let age = now.saturating_sub(*arrival);
        if self.older.is_some_and(|o| age < o) || self.younger.is_some_and(|y| age >= y) {
            return false;
        }
        if let Some(from) = &self.from {
            let ok = if from.is_empty() {
                sender.is_empty()
            } else {
                !sender.is_empty() && address_matches(from, sender)
            };
            if !ok {
                return false;
            }
        }
        if self.to.is_none() && self.domain.is_none() && self.reason.is_none() {
            return true;
        }
        recipients.iter().any(|r| {
            self.to.as_deref().is_none_or(|to| address_matches(to, &r.address))
                && self.domain.as_deref().is_none_or(|d| in_domain(&r.address, d))
                && self.reason.as_deref().is_none_or(|why| {
                    r.delay_reason
                        .as_deref()
                        .is_some_and(|have| have.to_ascii_lowercase().contains(why))
                })
        })
    }
}

fn non_empty(flag: &str, v: String) -> Result<String, String> {
    if v.is_empty() {
        Err(format!("{flag}: empty value"))
    } else {
        Ok(v)
    }
}

/// Lower case without a trailing dot or enclosing angle brackets.
fn normalise(s: &str) -> String {
    let s = s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(s);
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `address` is matched by `pattern` (already lower case): the whole address when
/// the pattern has a local part, else the domain (`example.test` or `@example.test`).
pub fn address_matches(pattern: &str, address: &str) -> bool {
    match pattern.rsplit_once('@') {
        Some((local, _)) if !local.is_empty() => normalise(address) == pattern,
        Some((_, domain)) => in_domain(address, domain),
        None => in_domain(address, pattern),
    }
}

/// Whether `address` is in `domain` (lower case, no trailing dot).
pub fn in_domain(address: &str, domain: &str) -> bool {
    address
        .rsplit_once('@')
        .is_some_and(|(_, d)| d.trim_end_matches('.').eq_ignore_ascii_case(domain))
}

/// Calls `each` for every message of `queues` that `selection` matches.
pub fn select(
    queue_dir: &Path,
    queues: &[&str],
    selection: &Selection,
    now: u64,
    mut each: impl FnMut(Entry),
) -> std::io::Result<()> {
    scan(queue_dir, queues, |e| {
        if selection.matches(&e, now) {
            each(e);
        }
    })
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One line describing a selected message for a dry run: `deferred, from=<a@b>,
/// to=<c@d>,<e@f> +3 more`.
pub fn describe(e: &Entry) -> String {
    match &e.summary {
        Summary::Message { sender, recipients, .. } => {
            let shown: Vec<String> = recipients.iter().take(3).map(|r| format!("<{}>", r.address)).collect();
            let more = recipients.len().saturating_sub(3);
            let more = if more > 0 {
                format!(" +{more} more")
            } else {
                String::new()
            };
            format!("{}, from=<{sender}>, to={}{more}", e.file.queue, shown.join(","))
        }
        Summary::Maildrop { uid, .. } => format!("{}, maildrop file of uid {uid}", e.file.queue),
        Summary::Unreadable { reason } => format!("{}, unreadable: {reason}", e.file.queue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue_id::QueueId;
    use crate::queue_scan::{ListedRecipient, QueuedFile};

    fn entry(queue: &str, arrival: u64, sender: &str, rcpts: &[(&str, Option<&str>)]) -> Entry {
        let id = QueueId::new();
        Entry {
            file: QueuedFile {
                queue: queue.into(),
                id,
                relative: id.as_str().into(),
                path: id.as_str().into(),
            },
            size: 100,
            summary: Summary::Message {
                arrival,
                sender: sender.into(),
                recipients: rcpts
                    .iter()
                    .map(|(a, r)| ListedRecipient {
                        address: a.to_string(),
                        delay_reason: r.map(String::from),
                    })
                    .collect(),
            },
        }
    }

    fn sel(opts: &[(&str, &str)]) -> Selection {
        let mut s = Selection::default();
        for (f, v) in opts {
            s.set(f, v).unwrap();
        }
        s
    }

    #[test]
    fn criteria_combine() {
        let now = 1_000_000;
        let e = entry(
            "deferred",
            now - 3 * 86400,
            "Alice@Example.TEST",
            &[
                ("bob@remote.test", Some("connect to x: Connection refused")),
                ("carol@other.test", Some("450 mailbox busy")),
            ],
        );
        assert!(Selection::default().matches(&e, now));
        assert!(sel(&[("--from", "alice@example.test")]).matches(&e, now));
        assert!(sel(&[("--from", "@example.test")]).matches(&e, now));
        assert!(sel(&[("--from", "example.test.")]).matches(&e, now));
        assert!(!sel(&[("--from", "<>")]).matches(&e, now));
        assert!(sel(&[("--to", "BOB@remote.test")]).matches(&e, now));
        assert!(sel(&[("--domain", "other.test")]).matches(&e, now));
        assert!(!sel(&[("--domain", "sub.other.test")]).matches(&e, now));
        assert!(sel(&[("--reason", "connection REFUSED")]).matches(&e, now));
        // --to and --reason must hold for the same recipient.
        assert!(!sel(&[("--to", "carol@other.test"), ("--reason", "refused")]).matches(&e, now));
        assert!(sel(&[("--to", "carol@other.test"), ("--reason", "busy")]).matches(&e, now));
        assert!(sel(&[("--older", "2d")]).matches(&e, now));
        assert!(!sel(&[("--older", "4d")]).matches(&e, now));
        assert!(sel(&[("--younger", "4d")]).matches(&e, now));
        assert!(!sel(&[("--younger", "3d")]).matches(&e, now));
        assert!(sel(&[("--queue", "deferred")]).matches(&e, now));
        assert!(!sel(&[("--queue", "hold")]).matches(&e, now));
    }

    #[test]
    fn null_sender_and_bad_values() {
        let e = entry("hold", 0, "", &[("postmaster@x.test", None)]);
        assert!(sel(&[("--from", "<>")]).matches(&e, 10));
        assert!(sel(&[("--from", "MAILER-DAEMON")]).matches(&e, 10));
        assert!(!sel(&[("--from", "x.test")]).matches(&e, 10));
        // No defer reason: --reason does not match.
        assert!(!sel(&[("--reason", "refused")]).matches(&e, 10));
        let mut s = Selection::default();
        assert!(s.set("--older", "2 days").is_err());
        assert!(s.set("--queue", "../etc").is_err());
        assert!(s.set("--to", "").is_err());
        assert!(s.set("--domain", "a@b").is_err());
        assert!(s.set("--reason", "a\nb").is_err());
    }

    #[test]
    fn unreadable_only_without_criteria() {
        let mut e = entry("deferred", 0, "a@b", &[]);
        e.summary = Summary::Unreadable { reason: "bad".into() };
        assert!(Selection::default().matches(&e, 0));
        assert!(sel(&[("--queue", "deferred")]).matches(&e, 0));
        assert!(!sel(&[("--older", "1s")]).matches(&e, 0));
    }

    #[test]
    fn queue_restriction() {
        let s = sel(&[("--queue", "hold"), ("--queue", "deferred")]);
        assert_eq!(
            s.queues(&["hold", "incoming", "active", "deferred"]),
            vec!["hold", "deferred"]
        );
        assert_eq!(Selection::default().queues(&["hold"]), vec!["hold"]);
    }
}
