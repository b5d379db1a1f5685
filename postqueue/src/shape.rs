//! `postqueue --shape`: Postfix's `qshape` — how many recipients (or, with `-s`, messages
//! by sender domain) wait per domain, by age.
//!
//! ```text
//!                          T  5 10 20 40 80 160 320 640 1280 1280+
//!                  TOTAL  6  3  0  1  0  0   0   0   0    0     2
//!            remote.test  4  2  0  1  0  0   0   0   0    0     1
//!             other.test  2  1  0  0  0  0   0   0   0    0     1
//! ```
//!
//! As qshape: `T` is the total; each further column counts the messages younger than its
//! heading in minutes (and at least as old as the previous one); the last column (`1280+`)
//! has no limit. Ages are from the message's arrival time. Options, as qshape's: `-s`
//! sender domains instead of recipient domains (one count per message), `-p` rows for
//! parent domains too (`.example.com`, shown when it has at least `-m N` subdomains,
//! default 5; never a top-level domain), `-b N` buckets
//! (default 10), `-t MINUTES` the first bucket (default 5), `-l` linear buckets (multiples
//! of `-t`) instead of doubling, `-w WIDTH` the line width (default 80, counts end at that
//! column), `-n N` only the N largest domains; queue names (`incoming`, `active`,
//! `deferred`, `hold`, `maildrop`) pick the queues, by default incoming and active, as
//! qshape. Rows are sorted by total, largest first, then by name; `TOTAL` comes first.
//! The selection options of [`postern_lib::queue_select`] narrow what is counted.
//!
//! Domains are lower-cased, taken after the last `@`, with one leading and trailing dot
//! dropped; the null sender counts as `MAILER-DAEMON`. Only recipients still to be
//! delivered count. Memory holds one counter row per domain, never a message: at most
//! [`MAX_DOMAINS`] rows, the rest counted under `(other domains)`.

use std::collections::HashMap;

use postern_lib::queue_scan::{Entry, Summary};
use postern_lib::strbuf::printable_bounded;

/// Most distinct domains kept; more are counted together.
pub const MAX_DOMAINS: usize = 100_000;
/// The row holding the domains beyond [`MAX_DOMAINS`].
const OTHER: &str = "(other domains)";
/// Narrowest domain column (qshape's).
const MIN_DOMAIN_WIDTH: usize = 18;
/// Most buckets.
const MAX_BUCKETS: usize = 64;

/// qshape's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Sender domains (`-s`).
    pub by_sender: bool,
    /// Parent domain rows (`-p`).
    pub parents: bool,
    /// Subdomains a parent needs for its row (`-m`).
    pub min_subdomains: u64,
    /// Age buckets (`-b`).
    pub buckets: usize,
    /// First bucket in minutes (`-t`).
    pub tick: u64,
    /// Linear buckets (`-l`).
    pub linear: bool,
    /// Line width (`-w`).
    pub width: usize,
    /// Only the largest N domains (`-n`).
    pub top: Option<usize>,
    /// Queues named on the command line.
    pub queues: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            by_sender: false,
            parents: false,
            min_subdomains: 5,
            buckets: 10,
            tick: 5,
            linear: false,
            width: 80,
            top: None,
            queues: Vec::new(),
        }
    }
}

impl Options {
    /// Takes one shape option from `args` (`flag` already read). Returns false when
    /// `flag` is not a shape option.
    pub fn take(&mut self, flag: &str, args: &mut dyn Iterator<Item = String>) -> Result<bool, String> {
        let mut number = |name: &str, max: u64| -> Result<u64, String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a number"))?;
            match v.parse::<u64>() {
                Ok(n) if n > 0 && n <= max => Ok(n),
                _ => Err(format!("{name}: expected a number from 1 to {max}, not {v:?}")),
            }
        };
        match flag {
            "-s" => self.by_sender = true,
            "-p" => self.parents = true,
            "-m" => self.min_subdomains = number("-m", 1_000_000)?,
            "-l" => self.linear = true,
            "-b" => self.buckets = number("-b", MAX_BUCKETS as u64)? as usize,
            "-t" => self.tick = number("-t", 1_000_000)?,
            "-w" => self.width = (number("-w", 10_000)? as usize).max(80),
            "-n" => self.top = Some(number("-n", 1_000_000)? as usize),
            q if postern_lib::queue_scan::LISTED_QUEUES.contains(&q) => {
                if !self.queues.iter().any(|have| have == q) {
                    self.queues.push(q.to_string());
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The queues to read, in the listing's order.
    pub fn queue_list(&self) -> Vec<&'static str> {
        postern_lib::queue_scan::LISTED_QUEUES
            .iter()
            .copied()
            .filter(|q| {
                if self.queues.is_empty() {
                    matches!(*q, "incoming" | "active")
                } else {
                    self.queues.iter().any(|have| have == q)
                }
            })
            .collect()
    }
}

/// The counts: per domain, the total then one count per bucket.
pub struct Shape {
    opts: Options,
    now: u64,
    total: Vec<u64>,
    rows: HashMap<String, Vec<u64>>,
    /// Distinct subdomains seen per parent domain (`-p`).
    subdomains: HashMap<String, u64>,
}

impl Shape {
    /// An empty shape; ages are counted from `now` (seconds since the epoch).
    pub fn new(opts: Options, now: u64) -> Shape {
        let n = opts.buckets + 1;
        Shape {
            opts,
            now,
            total: vec![0; n],
            rows: HashMap::new(),
            subdomains: HashMap::new(),
        }
    }

    /// qshape's bucket of a message that arrived at `arrival`: 1 ..= buckets.
    fn bucket(&self, arrival: u64) -> usize {
        let ticks = self.now.saturating_sub(arrival) / (60 * self.opts.tick);
        let b = if ticks == 0 {
            1
        } else if self.opts.linear {
            usize::try_from(ticks.saturating_add(1)).unwrap_or(usize::MAX)
        } else {
            2 + ticks.ilog2() as usize
        };
        b.min(self.opts.buckets)
    }

    /// Counts one queue entry.
    pub fn add(&mut self, e: &Entry) {
        let Summary::Message {
            arrival,
            sender,
            recipients,
        } = &e.summary
        else {
            return;
        };
        let b = self.bucket(*arrival);
        if self.opts.by_sender {
            self.count(sender, b);
        } else {
            for r in recipients {
                self.count(&r.address, b);
            }
        }
    }

    fn count(&mut self, address: &str, bucket: usize) {
        self.total[0] += 1;
        self.total[bucket] += 1;
        let mut domain = domain_of(address);
        let mut child_was_new = false;
        loop {
            let key = if self.rows.contains_key(&domain) || self.rows.len() < MAX_DOMAINS {
                domain.clone()
            } else {
                OTHER.to_string()
            };
            let n = self.opts.buckets + 1;
            let new = !self.rows.contains_key(&key);
            let row = self.rows.entry(key.clone()).or_insert_with(|| vec![0; n]);
            row[0] += 1;
            row[bucket] += 1;
            if child_was_new {
                *self.subdomains.entry(key).or_default() += 1;
            }
            child_was_new = new;
            match self.opts.parents.then(|| parent_of(&domain)).flatten() {
                Some(p) => domain = p,
                None => break,
            }
        }
    }

    /// The table, as qshape prints it.
    pub fn render(&self) -> String {
        let n = self.opts.buckets;
        // Headings: T, then the upper age limit of each bucket, the last one open.
        let mut heads = Vec::with_capacity(n + 1);
        let mut t: u64 = 0;
        for i in 0..=n {
            heads.push(if i == 0 {
                "T".to_string()
            } else if i == n {
                format!("{t}+")
            } else {
                t.to_string()
            });
            if i + 1 < n {
                t += if t > 0 && !self.opts.linear { t } else { self.opts.tick };
            }
        }
        if n == 1 {
            heads[1] = "0+".into();
        }
        let widths: Vec<usize> = heads
            .iter()
            .zip(&self.total)
            .map(|(h, c)| {
                let l = c.to_string().len().max(h.len());
                if l > 2 { l + 1 } else { 3 }
            })
            .collect();
        let dw = self
            .opts
            .width
            .saturating_sub(widths.iter().sum())
            .max(MIN_DOMAIN_WIDTH);
        let mut out = String::new();
        line(&mut out, "", &heads, &widths, dw);
        let mut rows: Vec<(&String, &Vec<u64>)> = self.rows.iter().collect();
        rows.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then(a.0.len().cmp(&b.0.len())).then(a.0.cmp(b.0)));
        let total: Vec<String> = self.total.iter().map(u64::to_string).collect();
        line(&mut out, "TOTAL", &total, &widths, dw);
        let shown = rows.into_iter().filter(|(d, _)| {
            !d.starts_with('.') || self.subdomains.get(*d).copied().unwrap_or(0) >= self.opts.min_subdomains
        });
        for (d, counts) in shown.take(self.opts.top.unwrap_or(usize::MAX)) {
            let counts: Vec<String> = counts.iter().map(u64::to_string).collect();
            line(&mut out, d, &counts, &widths, dw);
        }
        out
    }
}

/// One row: the name right-aligned in `dw` columns (only its last `dw - 1` bytes, after
/// a `+`, when longer), then each cell right-aligned in its width.
fn line(out: &mut String, name: &str, cells: &[String], widths: &[usize], dw: usize) {
    use std::fmt::Write as _;
    if name.len() > dw {
        // A parent domain keeps its dot: `.+` and the last dw - 2 bytes.
        let marker = if name.starts_with('.') { ".+" } else { "+" };
        let mut cut = name.len() - (dw - marker.len());
        while !name.is_char_boundary(cut) {
            cut += 1;
        }
        let _ = write!(out, "{marker}{:>w$}", &name[cut..], w = dw - marker.len());
    } else {
        let _ = write!(out, "{name:>dw$}");
    }
    for (c, w) in cells.iter().zip(widths) {
        let _ = write!(out, "{c:>w$}");
    }
    out.push('\n');
}

/// The parent of a domain as qshape's `-p` has it (`a.b.example.com` → `.b.example.com`
/// → `.example.com`, never a top-level domain), or `None`.
fn parent_of(domain: &str) -> Option<String> {
    let d = domain.strip_prefix('.').unwrap_or(domain);
    let (_, rest) = d.split_once('.')?;
    rest.contains('.').then(|| format!(".{rest}"))
}

/// qshape's domain of an address: lower case, after the last `@`, `..` made `.`, one
/// leading and one trailing dot dropped; the null sender is `MAILER-DAEMON`.
pub fn domain_of(address: &str) -> String {
    if address.is_empty() {
        return "MAILER-DAEMON".into();
    }
    let lower = address.to_ascii_lowercase();
    let mut d = lower.rsplit_once('@').map_or(lower.as_str(), |(_, d)| d).to_string();
    while d.contains("..") {
        d = d.replace("..", ".");
    }
    let d = d.strip_prefix('.').unwrap_or(&d);
    let d = if d.len() > 1 {
        d.strip_suffix('.').unwrap_or(d)
    } else {
        d
    };
    printable_bounded(d.as_bytes(), 255)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::queue_id::QueueId;
    use postern_lib::queue_scan::{ListedRecipient, QueuedFile};

    fn entry(arrival: u64, sender: &str, rcpts: &[&str]) -> Entry {
        let id = QueueId::new();
        Entry {
            file: QueuedFile {
                queue: "deferred".into(),
                id,
                relative: id.as_str().into(),
                path: id.as_str().into(),
            },
            size: 1,
            summary: Summary::Message {
                arrival,
                sender: sender.into(),
                recipients: rcpts
                    .iter()
                    .map(|a| ListedRecipient {
                        address: a.to_string(),
                        delay_reason: None,
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn qshape_layout() {
        let now = 10_000_000;
        let mut s = Shape::new(Options::default(), now);
        s.add(&entry(now, "a@x.test", &["b@Remote.Test", "c@remote.test."]));
        s.add(&entry(now - 7 * 60, "", &["d@other.test"]));
        s.add(&entry(now - 30 * 60, "a@x.test", &["e@remote.test"]));
        s.add(&entry(now - 2000 * 60, "a@x.test", &["f@other.test", "g@remote.test"]));
        let want = [
            format!("{:>39}  T  5 10 20 40 80 160 320 640 1280 1280+", ""),
            format!("{:>39}  6  2  1  0  1  0   0   0   0    0     2", "TOTAL"),
            format!("{:>39}  4  2  0  0  1  0   0   0   0    0     1", "remote.test"),
            format!("{:>39}  2  0  1  0  0  0   0   0   0    0     1", "other.test"),
        ];
        assert!(want.iter().all(|l| l.len() == 80));
        let want = want.join("\n") + "\n";
        assert_eq!(s.render(), want);
        let mut s = Shape::new(
            Options {
                by_sender: true,
                ..Options::default()
            },
            now,
        );
        s.add(&entry(now, "a@x.test", &["b@r.test", "c@r.test"]));
        s.add(&entry(now - 7 * 60, "", &["d@r.test"]));
        let out = s.render();
        assert!(out.contains(&format!("\n{:>39}  2  1  1  0", "TOTAL")), "{out}");
        assert!(out.contains(&format!("\n{:>39}  1  0  1  0", "MAILER-DAEMON")), "{out}");
        assert!(out.contains(&format!("\n{:>39}  1  1  0  0", "x.test")), "{out}");
    }

    #[test]
    fn buckets_and_options() {
        let now = 1_000_000;
        let s = Shape::new(Options::default(), now);
        assert_eq!(s.bucket(now), 1);
        assert_eq!(s.bucket(now - 299), 1);
        assert_eq!(s.bucket(now - 300), 2);
        assert_eq!(s.bucket(now - 599), 2);
        assert_eq!(s.bucket(now - 600), 3);
        assert_eq!(s.bucket(now - 1279 * 60), 9);
        assert_eq!(s.bucket(now - 1280 * 60), 10);
        assert_eq!(s.bucket(now + 100), 1);
        let lin = Shape::new(
            Options {
                linear: true,
                buckets: 4,
                tick: 10,
                ..Options::default()
            },
            now,
        );
        assert_eq!(lin.bucket(now - 25 * 60), 3);
        assert_eq!(
            lin.render().lines().next().unwrap(),
            format!("{:>64}  T 10 20 30 30+", "")
        );
        let mut o = Options::default();
        let mut args = vec!["0".to_string()].into_iter();
        assert!(o.take("-b", &mut args).is_err());
        assert_eq!(o.queue_list(), vec!["incoming", "active"]);
        assert!(o.take("deferred", &mut std::iter::empty()).unwrap());
        assert_eq!(o.queue_list(), vec!["deferred"]);
    }

    #[test]
    fn parent_domains() {
        assert_eq!(parent_of("a.b.example.com").as_deref(), Some(".b.example.com"));
        assert_eq!(parent_of(".b.example.com").as_deref(), Some(".example.com"));
        assert_eq!(parent_of(".example.com"), None);
        assert_eq!(parent_of("example.com"), None);
        let opts = Options {
            parents: true,
            min_subdomains: 2,
            ..Options::default()
        };
        let mut s = Shape::new(opts, 0);
        s.add(&entry(
            0,
            "a@b",
            &["x@mx1.big.test", "y@mx2.big.test", "z@mx1.big.test", "w@small.test"],
        ));
        s.add(&entry(0, "a@b", &["v@one.lone.test"]));
        let out = s.render();
        let rows: Vec<&str> = out.lines().map(|l| l.split_whitespace().next().unwrap_or("")).collect();
        // .big.test has two subdomains (shown), .lone.test one (hidden); TOTAL counts
        // each recipient once.
        assert_eq!(
            rows,
            vec![
                "T",
                "TOTAL",
                ".big.test",
                "mx1.big.test",
                "small.test",
                "mx2.big.test",
                "one.lone.test"
            ],
            "{out}"
        );
        assert!(out.lines().nth(1).unwrap().contains("  5  5"), "{out}");
    }

    #[test]
    fn domains() {
        assert_eq!(domain_of(""), "MAILER-DAEMON");
        assert_eq!(domain_of("A@B..Example.TEST."), "b.example.test");
        assert_eq!(domain_of("root"), "root");
        assert_eq!(domain_of("\"a@b\"@x.test"), "x.test");
    }

    #[test]
    fn long_names_are_cut() {
        let mut s = Shape::new(Options::default(), 0);
        let long = "x@a-very-very-long-subdomain.of-some-organisation.example.test";
        s.add(&entry(0, "a@b", &[long]));
        let out = s.render();
        let row = out.lines().nth(2).unwrap();
        assert_eq!(row.len(), 80, "{out}");
        assert!(row.starts_with("+main.of-some-organisation.example.test  1"), "{out}");
    }
}
