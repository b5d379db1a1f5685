//! Counters from mail log lines, as postfix_exporter derives them from Postfix's log.
//!
//! | metric | labels | counted from |
//! | --- | --- | --- |
//! | `postern_connections_total` | `service` | `connect from ...` (smtpd, submission, imapd, pop3d ...) |
//! | `postern_messages_accepted_total` | `service` | smtpd's `ID: client=...`, pickup's `ID: uid=...` |
//! | `postern_messages_rejected_total` | `service`, `code`, `reason` | `NOQUEUE: reject: ...: 550 5.1.1 <a@b>: Recipient address rejected: ...` |
//! | `postern_deliveries_total` | `transport`, `status` | a delivery agent's `ID: to=<...>, relay=..., status=sent` (`deferred`, `bounced`, ...) |
//! | `postern_bounce_notifications_total` | `kind` | bounce's `ID: sender non-delivery notification: NEWID` (`delay`, `delivery status`) |
//! | `postern_messages_removed_total` | — | qmgr's `ID: removed` |
//! | `postern_auth_failures_total` | `service` | the auth daemon's `warning: auth failure: ..., service=imap, ...` |
//! | `postern_log_problems_total` | `service`, `level` | lines with `warning:`, `error:`, `fatal:`, `panic:` |
//!
//! `service` is the last part of the logging program's name (`postern/smtpd` → `smtpd`,
//! `postern/submission` → `submission`). The `reason` of a rejection is its text with
//! anything in `<...>` or `[...]` dropped (addresses, client names) and cut at the first
//! `;`, at most [`MAX_REASON`] characters, so one reason is one series. Every family
//! keeps at most [`MAX_SERIES`] label sets; later new ones are counted under the value
//! `other`, so a hostile log cannot grow memory or the scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use postern_lib::maillog::parse;

/// Most label sets per metric family.
pub const MAX_SERIES: usize = 100;
/// Longest label value (a rejection `reason` is the long one).
pub const MAX_REASON: usize = 80;

/// One counter family: label values → count.
#[derive(Debug, Clone)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: BTreeMap<Vec<String>, u64>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Family {
        Family {
            name,
            help,
            labels,
            series: BTreeMap::new(),
        }
    }

    /// Adds one to the series `values` (or to `other` when the family is full).
    pub fn inc(&mut self, values: &[&str]) {
        let key: Vec<String> = values.iter().map(|v| clean(v, MAX_REASON)).collect();
        if let Some(n) = self.series.get_mut(&key) {
            *n += 1;
            return;
        }
        let key = if self.series.len() < MAX_SERIES {
            key
        } else {
            vec!["other".to_string(); self.labels.len()]
        };
        *self.series.entry(key).or_default() += 1;
    }

    /// The count of series `values` (tests).
    #[cfg(test)]
    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.series.get(&key).copied().unwrap_or(0)
    }

    /// Sum over all series (tests).
    #[cfg(test)]
    pub fn sum(&self) -> u64 {
        self.series.values().sum()
    }

    /// The family in the text format (`open_metrics`: OpenMetrics' TYPE name without
    /// `_total`).
    pub fn render(&self, out: &mut String, open_metrics: bool) {
        let base = if open_metrics {
            self.name.strip_suffix("_total").unwrap_or(self.name)
        } else {
            self.name
        };
        let _ = writeln!(out, "# HELP {base} {}", self.help);
        let _ = writeln!(out, "# TYPE {base} counter");
        if self.labels.is_empty() && self.series.is_empty() {
            let _ = writeln!(out, "{} 0", self.name);
        }
        for (values, n) in &self.series {
            let _ = writeln!(out, "{}{} {n}", self.name, label_text(self.labels, values));
        }
    }
}

/// `{a="x",b="y"}` (empty without labels), values escaped as the format wants.
pub fn label_text(names: &[&str], values: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{n}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// A label value: printable, no control characters, at most `max` characters.
fn clean(v: &str, max: usize) -> String {
    v.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Every counter.
#[derive(Debug, Clone)]
pub struct Counters {
    /// `postern_connections_total`.
    pub connections: Family,
    /// `postern_messages_accepted_total`.
    pub accepted: Family,
    /// `postern_messages_rejected_total`.
    pub rejected: Family,
    /// `postern_deliveries_total`.
    pub deliveries: Family,
    /// `postern_bounce_notifications_total`.
    pub notices: Family,
    /// `postern_messages_removed_total`.
    pub removed: Family,
    /// `postern_auth_failures_total`.
    pub auth_failures: Family,
    /// `postern_log_problems_total`.
    pub problems: Family,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            connections: Family::new(
                "postern_connections_total",
                "Client connections by service (connect from lines).",
                &["service"],
            ),
            accepted: Family::new(
                "postern_messages_accepted_total",
                "Messages queued by smtpd (client=) and pickup (uid=).",
                &["service"],
            ),
            rejected: Family::new(
                "postern_messages_rejected_total",
                "Rejected SMTP commands (NOQUEUE: reject:) by service, reply code and reason.",
                &["service", "code", "reason"],
            ),
            deliveries: Family::new(
                "postern_deliveries_total",
                "Delivery attempts per recipient by transport and status (sent, deferred, bounced, ...).",
                &["transport", "status"],
            ),
            notices: Family::new(
                "postern_bounce_notifications_total",
                "Notifications the bounce daemon sent by kind (non-delivery, delay, delivery status).",
                &["kind"],
            ),
            removed: Family::new(
                "postern_messages_removed_total",
                "Messages qmgr finished and removed from the queue.",
                &[],
            ),
            auth_failures: Family::new(
                "postern_auth_failures_total",
                "Failed authentications answered by the auth daemon, by service.",
                &["service"],
            ),
            problems: Family::new(
                "postern_log_problems_total",
                "Log lines with warning:, error:, fatal: or panic: by service and level.",
                &["service", "level"],
            ),
        }
    }
}

impl Counters {
    /// Counts one log line.
    pub fn line(&mut self, line: &str) {
        let Some(p) = parse(line) else {
            return;
        };
        let service = p.program.rsplit('/').next().unwrap_or(p.program);
        let text = p.text;
        let rest = match p.queue_id {
            Some(id) => &text[id.len() + 2..],
            None => text,
        };
        for level in ["warning", "error", "fatal", "panic"] {
            if rest.starts_with(level) && rest[level.len()..].starts_with(": ") {
                self.problems.inc(&[service, level]);
            }
        }
        if p.queue_id.is_none() {
            if text.starts_with("connect from ") {
                self.connections.inc(&[service]);
            } else if let Some(r) = text.strip_prefix("NOQUEUE: reject: ") {
                let (code, reason) = rejection(r);
                self.rejected.inc(&[service, code, &reason]);
            } else if let Some(r) = text.strip_prefix("warning: auth failure: ") {
                let svc = field(r, "service").unwrap_or("unknown");
                self.auth_failures.inc(&[svc]);
            }
            return;
        }
        if rest.starts_with("client=") || (rest.starts_with("uid=") && service == "pickup") {
            self.accepted.inc(&[service]);
        } else if rest.starts_with("to=<") {
            if let Some(status) = field(rest, "status") {
                let status = status.split(' ').next().unwrap_or(status);
                self.deliveries.inc(&[service, status]);
            }
        } else if let Some(r) = rest.strip_prefix("reject: ") {
            // A rejection once a queue ID was named (end of message, cleanup's checks).
            let (code, reason) = rejection(r);
            self.rejected.inc(&[service, code, &reason]);
        } else if rest == "removed" {
            self.removed.inc(&[]);
        } else if let Some(r) = rest.strip_prefix("sender ")
            && let Some((kind, _)) = r.split_once(" notification: ")
        {
            self.notices.inc(&[kind]);
        }
    }

    /// Every family in the text format.
    pub fn render(&self, out: &mut String, open_metrics: bool) {
        for f in [
            &self.connections,
            &self.accepted,
            &self.rejected,
            &self.deliveries,
            &self.notices,
            &self.removed,
            &self.auth_failures,
            &self.problems,
        ] {
            f.render(out, open_metrics);
        }
    }
}

/// The value of `, name=value` (or a leading `name=value`) in a log text, up to the next
/// `, ` or the end.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    let at = if text.starts_with(&key) {
        0
    } else {
        text.find(&format!(", {key}"))? + 2
    };
    let v = &text[at + key.len()..];
    Some(v.split(", ").next().unwrap_or(v))
}

/// The reply code and the reason of a rejection text (after `NOQUEUE: reject: `):
/// `RCPT from c[1.2.3.4]: 550 5.1.1 <a@b>: Recipient address rejected: User unknown; from=<x> ...`
/// gives `550` and `Recipient address rejected: User unknown`.
pub fn rejection(text: &str) -> (&str, String) {
    let after = text.split_once("]: ").map_or(text, |(_, r)| r);
    let mut words = after.splitn(2, ' ');
    let code = words.next().unwrap_or("");
    let code = if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) {
        code
    } else {
        return ("", reason_of(after));
    };
    let mut rest = words.next().unwrap_or("");
    // The enhanced status code, when there is one.
    if let Some((dsn, r)) = rest.split_once(' ')
        && dsn.split('.').count() == 3
        && dsn
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        rest = r;
    }
    (code, reason_of(rest))
}

/// The reason label: up to the first `;`, without `<...>` / `[...]` parts, spaces folded.
fn reason_of(text: &str) -> String {
    let text = text.split(';').next().unwrap_or(text);
    let mut out = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '<' | '[' => depth += 1,
            '>' | ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let folded: Vec<&str> = out.split_whitespace().collect();
    let s = folded.join(" ");
    let s = s.trim_start_matches(": ").trim_start_matches(':').trim();
    clean(s, MAX_REASON)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
Dec  6 20:54:14 vm postern/smtpd[1]: connect from unknown[127.0.0.1]
Dec  6 20:54:14 vm postern/submission[2]: connect from unknown[127.0.0.1]
Dec  6 20:54:14 vm postern/smtpd[1]: 8E9yuY6e204jL000: client=unknown[127.0.0.1]
Dec  6 20:54:14 vm postern/pickup[3]: 8E9yuY6e204jL001: uid=0 from=<root>
Dec  6 20:54:14 vm postern/smtpd[1]: NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <nosuch@example.test>: Recipient address rejected: User unknown in local recipient table; from=<a@b> to=<nosuch@example.test> proto=ESMTP helo=<x>
Dec  6 20:54:14 vm postern/smtpd[1]: NOQUEUE: reject: RCPT from other[10.0.0.1]: 550 5.1.1 <zz@example.test>: Recipient address rejected: User unknown in local recipient table; from=<c@d> to=<zz@example.test>
Dec  6 20:54:14 vm postern/smtpd[1]: NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 452 4.3.1 Insufficient system storage; from=<a@b> (free 10 bytes)
Dec  6 20:54:14 vm postern/local[4]: 8E9yuY6e204jL000: to=<alice@example.test>, relay=local, delay=0.02, delays=0/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)
Dec  6 20:54:14 vm postern/smtp[5]: 8E9yuY6e204jL001: to=<bob@remote.test>, relay=none, delay=0.05, dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1:3526]: Connection refused)
Dec  6 20:54:14 vm postern/smtp[5]: 8E9yuY6e204jL001: connect to 127.0.0.1[127.0.0.1:3526]: Connection refused
Dec  6 20:54:14 vm postern/bounce[6]: 8E9yuY6e204jL001: sender non-delivery notification: 8E9yuY6e204jL002
Dec  6 20:54:14 vm postern/qmgr[7]: 8E9yuY6e204jL000: removed
Dec  6 20:54:14 vm postern/auth[8]: warning: auth failure: user=bob, client=127.0.0.1, service=imap, reason=bad password
Dec  6 20:54:14 vm postern/qmgr[7]: 8E9yuY6e204jL001: warning: something odd
Dec  6 20:54:14 vm postern/smtpd[1]: 8E9yuY6e204jL003: reject: END-OF-MESSAGE from unknown[127.0.0.1]: 554 5.7.1 Message content rejected; from=<a@b>
";

    #[test]
    fn counts_each_kind() {
        let mut c = Counters::default();
        for l in LOG.lines() {
            c.line(l);
        }
        assert_eq!(c.connections.get(&["smtpd"]), 1);
        assert_eq!(c.connections.get(&["submission"]), 1);
        assert_eq!(c.accepted.get(&["smtpd"]), 1);
        assert_eq!(c.accepted.get(&["pickup"]), 1);
        assert_eq!(
            c.rejected.get(&[
                "smtpd",
                "550",
                "Recipient address rejected: User unknown in local recipient table"
            ]),
            2
        );
        assert_eq!(c.rejected.get(&["smtpd", "452", "Insufficient system storage"]), 1);
        assert_eq!(c.rejected.get(&["smtpd", "554", "Message content rejected"]), 1);
        assert_eq!(c.deliveries.get(&["local", "sent"]), 1);
        assert_eq!(c.deliveries.get(&["smtp", "deferred"]), 1);
        assert_eq!(c.deliveries.sum(), 2);
        assert_eq!(c.notices.get(&["non-delivery"]), 1);
        assert_eq!(c.removed.sum(), 1);
        assert_eq!(c.auth_failures.get(&["imap"]), 1);
        assert_eq!(c.problems.get(&["auth", "warning"]), 1);
        assert_eq!(c.problems.get(&["qmgr", "warning"]), 1);
        let mut out = String::new();
        c.render(&mut out, false);
        assert!(out.contains("# TYPE postern_deliveries_total counter\n"));
        assert!(out.contains("postern_deliveries_total{transport=\"local\",status=\"sent\"} 1\n"));
        assert!(out.contains("postern_messages_removed_total 1\n"));
        let mut om = String::new();
        c.render(&mut om, true);
        assert!(om.contains("# TYPE postern_deliveries counter\n"));
    }

    #[test]
    fn series_are_capped() {
        let mut c = Counters::default();
        for i in 0..(MAX_SERIES + 50) {
            c.line(&format!(
                "Dec  6 20:54:14 vm postern/smtpd[1]: NOQUEUE: reject: RCPT from x[1.2.3.4]: 554 5.7.1 Service unavailable; reason number {i}x: blocked"
            ));
            c.line(&format!("Dec  6 20:54:14 vm postern/s{i}[1]: connect from x[1.2.3.4]"));
        }
        assert_eq!(c.rejected.series.len(), 1, "the reason stops at ';'");
        assert_eq!(c.connections.series.len(), MAX_SERIES + 1);
        assert_eq!(c.connections.get(&["other"]), 50);
        assert_eq!(c.connections.sum(), (MAX_SERIES + 50) as u64);
    }

    #[test]
    fn hostile_labels_are_escaped() {
        let mut c = Counters::default();
        c.line("Dec  6 20:54:14 vm postern/a\"b\\c[1]: connect from x");
        let mut out = String::new();
        c.render(&mut out, false);
        assert!(
            out.contains("postern_connections_total{service=\"a\\\"b\\\\c\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn rejection_texts() {
        assert_eq!(
            rejection(
                "CONNECT from x[1.2.3.4]: 554 5.7.1 <x[1.2.3.4]>: Client host rejected: Access denied; proto=SMTP"
            ),
            ("554", "Client host rejected: Access denied".to_string())
        );
        assert_eq!(rejection("garbage"), ("", "garbage".to_string()));
    }
}
