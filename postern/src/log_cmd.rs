//! `postern log`: one message's timeline from the mail log.
//!
//! ```text
//! postern [-c CONFIG_DIR] log QUEUE_ID [--all] [--follow] [--file PATH]
//! postern [-c CONFIG_DIR] log --message-id MESSAGE_ID [--follow] [--file PATH]
//! ```
//!
//! Prints, in log order, every line about the message: smtpd's `connect from` (the last
//! one of the same smtpd process before the message's `client=` line) and its
//! `disconnect from`, then every line carrying the queue ID — smtpd's `client=`, pickup's
//! `uid=`, cleanup's `message-id=`, qmgr's `from=`, each delivery agent's `to=... status=`,
//! bounce's `sender non-delivery notification: NEWID` — up to qmgr's `removed` (and says
//! on stderr `postern: the non-delivery notice is NEWID: postern log NEWID`).
//!
//! **Reused queue IDs.** A queue ID's lifetime ends at its `removed` line; a later line
//! with the same ID starts a new lifetime (Postern's IDs are unique across restarts, but a
//! log may be older than that, or come from Postfix, whose short IDs do repeat). The
//! latest lifetime is shown, with a note on stderr when there were more; `--all` shows
//! each, under a `-- QUEUE_ID: lifetime N of M --` line.
//!
//! **`--message-id`** (with or without the angle brackets) finds the queue IDs through
//! cleanup's `QUEUE_ID: message-id=<...>` lines and shows the lifetime of each that holds
//! that line (a message forwarded or requeued has several).
//!
//! **`--follow`** keeps reading what is appended until the message's `removed` line (or
//! Ctrl-C), across a rotation (the path names a new file) or a truncation.
//!
//! The log is `maillog_file`; with `maillog_file = "syslog"` it is `/var/log/mail.log`
//! (Debian's), and `--file PATH` reads another file. The log is read as it is, one line at
//! a time ([`postern_lib::maillog::Tail`]: lines longer than its maximum are skipped): memory holds the lines of the
//! lifetime being shown, at most [`MAX_LINES`], and one `connect from` line per smtpd
//! process, whatever the log's size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use postern_lib::maillog::{Tail as LogReader, looks_like_queue_id, parse};

/// Most lines kept per lifetime.
pub const MAX_LINES: usize = 100_000;
/// Most smtpd processes whose last `connect from` is remembered.
const MAX_PIDS: usize = 10_000;
/// Where syslog puts mail logs on Debian.
const SYSLOG_FILE: &str = "/var/log/mail.log";

const USAGE: &str = "usage: postern [-c CONFIG_DIR] log QUEUE_ID [--all] [--follow] [--file PATH] | log --message-id ID [--follow] [--file PATH]";

/// What to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    Id(String),
    MessageId(String),
}

/// The lifetimes of one or more queue IDs, collected while reading the log.
#[derive(Default)]
pub struct Timelines {
    /// Per queue ID, its lifetimes, each the lines in order; the last may be open.
    lifetimes: HashMap<String, Vec<Lifetime>>,
    /// Last `connect from` line per smtpd process.
    connects: HashMap<String, String>,
    /// smtpd processes whose next `disconnect from` belongs to a lifetime: process → ID.
    disconnects: HashMap<String, String>,
    /// Keep every lifetime (else only the latest).
    keep_all: bool,
    /// How many lifetimes each ID had.
    counts: HashMap<String, usize>,
}

/// One lifetime of a queue ID.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Its lines.
    pub lines: Vec<String>,
    /// Ended by `removed`.
    pub closed: bool,
    /// Holds the `message-id=` being looked for.
    pub marked: bool,
}

impl Timelines {
    /// Collects the lines of `ids` (more may be added with [`Timelines::watch`]).
    pub fn new(ids: &[String], keep_all: bool) -> Timelines {
        let mut t = Timelines {
            keep_all,
            ..Timelines::default()
        };
        for id in ids {
            t.watch(id);
        }
        t
    }

    /// Starts collecting `id`'s lines from now on.
    pub fn watch(&mut self, id: &str) {
        self.lifetimes.entry(id.to_string()).or_default();
    }

    /// Takes one log line.
    pub fn line(&mut self, line: &str) {
        let Some(p) = parse(line) else {
            return;
        };
        if p.text.starts_with("connect from ") {
            if self.connects.len() >= MAX_PIDS && !self.connects.contains_key(p.process) {
                self.connects.clear();
            }
            self.connects.insert(p.process.to_string(), line.to_string());
            return;
        }
        if p.text.starts_with("disconnect from ") {
            if let Some(id) = self.disconnects.remove(p.process)
                && let Some(l) = self.lifetimes.get_mut(&id).and_then(|v| v.last_mut())
            {
                push(l, line);
            }
            return;
        }
        let Some(id) = p.queue_id else {
            return;
        };
        let keep_all = self.keep_all;
        let Some(lives) = self.lifetimes.get_mut(id) else {
            return;
        };
        let fresh = lives.last().is_none_or(|l| l.closed);
        if fresh {
            *self.counts.entry(id.to_string()).or_default() += 1;
            if !keep_all && lives.last().is_some_and(|l| !l.marked) {
                lives.pop();
            }
            lives.push(Lifetime::default());
        }
        let life = lives.last_mut().expect("pushed above");
        let rest = &p.text[id.len() + 2..];
        if rest.starts_with("client=") && p.program.ends_with("smtpd") {
            if let Some(c) = self.connects.get(p.process) {
                push(life, c);
            }
            if self.disconnects.len() < MAX_PIDS {
                self.disconnects.insert(p.process.to_string(), id.to_string());
            }
        }
        push(life, line);
        if rest == "removed" {
            life.closed = true;
        }
    }

    /// Marks the open lifetime of `id` as the one holding the wanted Message-ID.
    fn mark(&mut self, id: &str) {
        if let Some(l) = self.lifetimes.get_mut(id).and_then(|v| v.last_mut()) {
            l.marked = true;
        }
    }

    /// The lifetimes collected for `id`.
    pub fn of(&self, id: &str) -> &[Lifetime] {
        self.lifetimes.get(id).map_or(&[], Vec::as_slice)
    }

    /// How many lifetimes `id` had in the log.
    pub fn count(&self, id: &str) -> usize {
        self.counts.get(id).copied().unwrap_or(0)
    }
}

fn push(life: &mut Lifetime, line: &str) {
    if life.lines.len() < MAX_LINES {
        life.lines.push(line.to_string());
    }
}

/// The Message-ID in a cleanup line's text (`ID: message-id=<x@y>`), without brackets.
fn message_id_of(text: &str) -> Option<&str> {
    let (_, v) = text.split_once(": message-id=")?;
    Some(v.trim().trim_start_matches('<').trim_end_matches('>'))
}

/// `postern log ARGS`.
pub fn run(dir: &Path, args: &[String]) -> Result<ExitCode, String> {
    let mut wanted = None;
    let mut all = false;
    let mut follow = false;
    let mut file: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--all" => all = true,
            "--follow" | "-f" => follow = true,
            "--file" => file = Some(PathBuf::from(it.next().ok_or(USAGE)?)),
            "--message-id" => {
                let v = it.next().ok_or(USAGE)?;
                let v = v.trim().trim_start_matches('<').trim_end_matches('>');
                if v.is_empty() || v.len() > 998 || v.chars().any(char::is_control) {
                    return Err(format!("invalid Message-ID {v:?}"));
                }
                wanted = Some(Wanted::MessageId(v.to_string()));
            }
            id if !id.starts_with('-') && wanted.is_none() => {
                if !looks_like_queue_id(id) {
                    return Err(format!("{id:?} is not a queue ID (as shown by mailq)\n{USAGE}"));
                }
                wanted = Some(Wanted::Id(id.to_string()));
            }
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    let wanted = wanted.ok_or(USAGE)?;
    let path = match file {
        Some(f) => f,
        None => log_path(dir)?,
    };
    let mut state = Search::new(wanted, all);
    if matches!(state.wanted, Wanted::MessageId(_)) {
        // First pass: which queue IDs carried that Message-ID, so that the second pass
        // has their lines from the start (smtpd's come before cleanup's).
        LogReader::open(&path)?.each_line(|l| state.prime(l))?;
    }
    let mut reader = LogReader::open(&path)?;
    reader.each_line(|l| state.line(l))?;
    if state.ids().is_empty() && !follow {
        eprintln!("postern: {} is not in {}", state.describe(), path.display());
        return Ok(ExitCode::FAILURE);
    }
    let mut out = std::io::stdout().lock();
    state.print(&mut out)?;
    if follow {
        use std::io::Write as _;
        let _ = out.flush();
        drop(out);
        state.printed_all();
        while !state.done() {
            std::thread::sleep(Duration::from_millis(250));
            let _ = reader.reopen_if_rotated(&path);
            reader.each_line(|l| state.line(l))?;
            let mut out = std::io::stdout().lock();
            state.print_new(&mut out)?;
            let _ = out.flush();
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The log file named by the configuration.
fn log_path(dir: &Path) -> Result<PathBuf, String> {
    let config = postern_lib::config::Config::load(dir).map_err(|e| e.to_string())?;
    match config.main.maillog_file.as_str() {
        "syslog" => Ok(PathBuf::from(SYSLOG_FILE)),
        "" | "-" => {
            Err("maillog_file is \"-\" (the log goes to standard error); name the file with --file PATH".into())
        }
        p => Ok(PathBuf::from(p)),
    }
}

/// The search in progress: lifetimes of the wanted IDs, and for `--message-id`, the IDs
/// found so far.
struct Search {
    wanted: Wanted,
    timelines: Timelines,
    ids: Vec<String>,
    /// Lines already printed, per (ID, lifetime index), for `--follow`.
    printed: HashMap<(String, usize), usize>,
}

impl Search {
    fn new(wanted: Wanted, all: bool) -> Search {
        let ids = match &wanted {
            Wanted::Id(id) => vec![id.clone()],
            Wanted::MessageId(_) => Vec::new(),
        };
        Search {
            timelines: Timelines::new(&ids, all),
            wanted,
            ids: Vec::new(),
            printed: HashMap::new(),
        }
    }

    fn describe(&self) -> String {
        match &self.wanted {
            Wanted::Id(id) => format!("queue ID {id}"),
            Wanted::MessageId(m) => format!("Message-ID <{m}>"),
        }
    }

    /// First pass of `--message-id`: watch the queue IDs of its cleanup lines.
    fn prime(&mut self, line: &str) {
        if let Wanted::MessageId(mid) = &self.wanted
            && self.timelines.lifetimes.len() < MAX_PIDS
            && let Some(p) = parse(line)
            && let Some(id) = p.queue_id
            && message_id_of(p.text).is_some_and(|m| m == mid)
        {
            self.timelines.watch(id);
        }
    }

    fn line(&mut self, line: &str) {
        if let Wanted::MessageId(mid) = &self.wanted
            && let Some(p) = parse(line)
            && let Some(id) = p.queue_id
            && message_id_of(p.text).is_some_and(|m| m == mid)
        {
            let id = id.to_string();
            if !self.timelines.lifetimes.contains_key(&id) {
                self.timelines.watch(&id);
            }
            self.timelines.line(line);
            self.timelines.mark(&id);
            return;
        }
        self.timelines.line(line);
    }

    /// IDs with something to show.
    fn ids(&mut self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .timelines
            .lifetimes
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        // In log order: by the first line's position is not kept; queue IDs sort by time.
        ids.sort();
        self.ids = ids.clone();
        ids
    }

    /// The lifetimes to show: (ID, index, lifetime).
    fn shown(&self) -> Vec<(String, usize, usize, &Lifetime)> {
        let mut out = Vec::new();
        for id in &self.ids {
            let lives = self.timelines.of(id);
            let total = lives.len();
            for (i, l) in lives.iter().enumerate() {
                let keep = match self.wanted {
                    Wanted::Id(_) => self.timelines.keep_all || i + 1 == total,
                    Wanted::MessageId(_) => l.marked,
                };
                if keep {
                    out.push((id.clone(), i, total, l));
                }
            }
        }
        out
    }

    fn print(&mut self, out: &mut impl std::io::Write) -> Result<(), String> {
        let shown = self.shown();
        let many = shown.len() > 1;
        let mut text = String::new();
        for (id, i, total, life) in &shown {
            if many {
                let n = if self.timelines.keep_all || matches!(self.wanted, Wanted::MessageId(_)) {
                    format!("-- {id}: lifetime {} of {total} --\n", i + 1)
                } else {
                    format!("-- {id} --\n")
                };
                text.push_str(&n);
            }
            for l in &life.lines {
                text.push_str(l);
                text.push('\n');
                // bounce's `ID: sender non-delivery notification: NEWID`: say where the
                // notice's own timeline is.
                if let Some((kind, new_id)) = l.split_once(" notification: ")
                    && looks_like_queue_id(new_id.trim())
                {
                    let kind = kind.rsplit(": sender ").next().unwrap_or("the");
                    eprintln!("postern: the {kind} notice is {0}: postern log {0}", new_id.trim());
                }
            }
        }
        if let Wanted::Id(id) = &self.wanted {
            let n = self.timelines.count(id);
            if n > 1 && !self.timelines.keep_all {
                eprintln!(
                    "postern: queue ID {id} was used {n} times in this log; showing the latest (--all shows each)"
                );
            }
        }
        write_text(out, &text)
    }

    fn printed_all(&mut self) {
        let marks: Vec<((String, usize), usize)> = self
            .shown()
            .into_iter()
            .map(|(id, i, _, l)| ((id, i), l.lines.len()))
            .collect();
        self.printed.extend(marks);
    }

    fn print_new(&mut self, out: &mut impl std::io::Write) -> Result<(), String> {
        self.ids();
        let mut text = String::new();
        let mut marks = Vec::new();
        for (id, i, _, life) in self.shown() {
            let from = self.printed.get(&(id.clone(), i)).copied().unwrap_or(0);
            for l in life.lines.iter().skip(from) {
                text.push_str(l);
                text.push('\n');
            }
            marks.push(((id, i), life.lines.len()));
        }
        self.printed.extend(marks);
        write_text(out, &text)
    }

    /// Every lifetime shown has ended (`--follow` stops).
    fn done(&self) -> bool {
        let shown = self.shown();
        !shown.is_empty() && shown.iter().all(|(_, _, _, l)| l.closed)
    }
}

fn write_text(out: &mut impl std::io::Write, text: &str) -> Result<(), String> {
    match out.write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("write: {e}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
Dec  6 20:54:14 vm postern/smtpd[100]: connect from unknown[127.0.0.1]
Dec  6 20:54:14 vm postern/smtpd[100]: AAAA11111: client=unknown[127.0.0.1]
Dec  6 20:54:14 vm postern/cleanup[101]: AAAA11111: message-id=<m1@example.test>
Dec  6 20:54:14 vm postern/smtpd[200]: connect from other[127.0.0.2]
Dec  6 20:54:14 vm postern/qmgr[50]: AAAA11111: from=<a@example.test>, size=285, nrcpt=1 (queue active)
Dec  6 20:54:14 vm postern/smtpd[200]: BBBB22222: client=other[127.0.0.2]
Dec  6 20:54:14 vm postern/smtpd[100]: disconnect from unknown[127.0.0.1]
Dec  6 20:54:14 vm postern/local[102]: AAAA11111: to=<bob@example.test>, relay=local, delay=0.02, dsn=2.0.0, status=sent (delivered to maildir)
Dec  6 20:54:14 vm postern/qmgr[50]: AAAA11111: removed
Dec  6 20:54:15 vm postern/cleanup[101]: BBBB22222: message-id=<m2@example.test>
Dec  6 20:55:00 vm postern/smtpd[100]: connect from third[127.0.0.3]
Dec  6 20:55:00 vm postern/smtpd[100]: AAAA11111: client=third[127.0.0.3]
Dec  6 20:55:00 vm postern/cleanup[101]: AAAA11111: message-id=<m3@example.test>
Dec  6 20:55:00 vm postern/qmgr[50]: AAAA11111: from=<c@example.test>, size=300, nrcpt=1 (queue active)
Dec  6 20:55:01 vm postern/smtp[103]: AAAA11111: to=<x@remote.test>, relay=none, dsn=4.4.1, status=deferred (connect to x: Connection refused)
";

    fn run_search(wanted: Wanted, all: bool) -> (Search, String) {
        let mut s = Search::new(wanted, all);
        for l in LOG.lines() {
            s.prime(l);
        }
        for l in LOG.lines() {
            s.line(l);
        }
        s.ids();
        let mut out = Vec::new();
        s.print(&mut out).unwrap();
        (s, String::from_utf8(out).unwrap())
    }

    #[test]
    fn latest_lifetime_of_a_reused_id() {
        let (s, out) = run_search(Wanted::Id("AAAA11111".into()), false);
        assert_eq!(s.timelines.count("AAAA11111"), 2);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[0].ends_with("smtpd[100]: connect from third[127.0.0.3]"));
        assert!(lines[1].ends_with("AAAA11111: client=third[127.0.0.3]"));
        assert!(lines[4].contains("status=deferred"));
        assert!(!out.contains("m1@"), "{out}");
        assert!(!s.done());
    }

    #[test]
    fn every_lifetime_with_all() {
        let (s, out) = run_search(Wanted::Id("AAAA11111".into()), true);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "-- AAAA11111: lifetime 1 of 2 --");
        // smtpd's connect, client, cleanup, qmgr, smtpd's disconnect, local, removed.
        assert!(lines[1].ends_with("connect from unknown[127.0.0.1]"));
        assert!(lines[2].ends_with("AAAA11111: client=unknown[127.0.0.1]"));
        assert!(lines[3].contains("message-id=<m1@example.test>"));
        assert!(lines[4].contains("(queue active)"));
        assert!(lines[5].ends_with("disconnect from unknown[127.0.0.1]"));
        assert!(lines[6].contains("status=sent"));
        assert!(lines[7].ends_with("AAAA11111: removed"));
        assert_eq!(lines[8], "-- AAAA11111: lifetime 2 of 2 --");
        assert!(!out.contains("BBBB22222"), "{out}");
        assert!(!out.contains("127.0.0.2"), "{out}");
        assert_eq!(s.shown().len(), 2);
    }

    #[test]
    fn by_message_id_picks_the_right_lifetime() {
        let (s, out) = run_search(Wanted::MessageId("m1@example.test".into()), false);
        assert!(
            out.lines().next().unwrap().ends_with("connect from unknown[127.0.0.1]"),
            "{out}"
        );
        assert!(out.contains("message-id=<m1@example.test>"), "{out}");
        assert!(out.lines().last().unwrap().ends_with("AAAA11111: removed"), "{out}");
        assert!(!out.contains("m3@"), "{out}");
        assert!(s.done());
        let (_, out) = run_search(Wanted::MessageId("m2@example.test".into()), false);
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(
            out.lines().next().unwrap().ends_with("connect from other[127.0.0.2]"),
            "{out}"
        );
        let (_, out) = run_search(Wanted::MessageId("m3@example.test".into()), false);
        assert!(out.contains("status=deferred"), "{out}");
        assert!(!out.contains("m1@"), "{out}");
    }
}
