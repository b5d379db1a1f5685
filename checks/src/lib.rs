//! # postern-checks — `header_checks` and `body_checks`: Postfix-style regexp tables and
//! their actions
//!
//! Its own crate so that only the programs that read such tables (cleanup, smtpd through
//! `smtpd-engine`'s `regexp:` sender login maps, `postern check`) link the regex engine.
//!
//!
//! A table is a text file of rules, tried top to bottom; the first rule whose pattern
//! matches decides (Postfix's `regexp:` table type, regexp_table(5)):
//!
//! ```text
//! # comment; blank lines are ignored; a line starting with white space continues the last
//! /^Subject: .*viagra/     REJECT no spam here
//! /^X-Spam-Flag: YES/      HOLD
//! !/^From: .*@example\.org/ DUNNO
//! /^Received: .*dialup/    WARN dial-up relay $0
//! /^X-Internal:/           IGNORE
//! ```
//!
//! The pattern is delimited by `/` (or any other punctuation character put first); `!`
//! before it inverts the match. Flags after the closing delimiter: `i` toggles case
//! sensitivity (patterns are **case-insensitive by default**, as in Postfix), `m` multi-line
//! mode, `x` extended syntax. `$1`..`$9` and `${name}` in the text are replaced by the
//! match's groups.
//!
//! Actions: `REJECT [text]` (the message is refused, 550 5.7.1), `DISCARD [text]` (accepted
//! and dropped), `HOLD [text]` (queued on hold), `WARN [text]` (logged only), `IGNORE` (the
//! header field or body line is deleted), `OK` and `DUNNO` (no action; stop looking at this
//! field). Postfix's FILTER, REDIRECT, BCC, PREPEND and REPLACE are not implemented and are
//! refused when the table is loaded.
//!
//! header_checks see each logical header field as one string, `Name: value` with the
//! line breaks of a folded field kept as `\n`; body_checks see each body line without its
//! line end. Errors name the file and the line.
//!
//! **Reloading**: [`Table::load`] reads a file once; [`Cached`] keeps the loaded table and
//! reloads it when the file's modification time, size or inode changes, so an edit takes
//! effect with the next message (cleanup checks once per message).
//!
//! # Security stance
//!
//! Tables come from the administrator, but are still bounded: at most [`MAX_RULES`] rules,
//! [`MAX_LINE`] bytes per rule, and compiled patterns limited to [`REGEX_SIZE_LIMIT`] bytes
//! (the `regex` crate runs in linear time, so no pattern can make a match blow up).
#![forbid(unsafe_code)]

pub mod lookup;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};
use thiserror::Error;

/// Most rules in one table.
pub const MAX_RULES: usize = 10_000;
/// Longest rule (with continuation lines), in bytes.
pub const MAX_LINE: usize = 8192;
/// Compiled size limit of one pattern.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest text an action may carry after `$N` expansion.
pub const MAX_TEXT: usize = 1000;

/// Errors from loading a table.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum ChecksError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The table file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A rule is malformed.
    #[error("{path}, line {line}: {reason}")]
    Syntax {
        /// The table file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// What a matching rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Refuse the message with this text (empty: the default text).
    Reject(String),
    /// Accept and drop the message.
    Discard(String),
    /// Queue the message on hold.
    Hold(String),
    /// Log and go on.
    Warn(String),
    /// Delete this header field or body line.
    Ignore,
    /// No action (OK, DUNNO, or no rule matched).
    Dunno,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reject,
    Discard,
    Hold,
    Warn,
    Ignore,
    Dunno,
}

#[derive(Debug, Clone)]
struct Rule {
    regex: Regex,
    negate: bool,
    kind: Kind,
    text: String,
    line: usize,
}

/// A loaded table.
#[derive(Debug, Clone)]
pub struct Table {
    path: PathBuf,
    rules: Vec<Rule>,
}

/// The outcome of [`Table::check`]: the action and the line of the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub action: Action,
    /// The rule's line in the file (0 when no rule matched).
    pub line: usize,
}

impl Table {
    /// Reads and compiles the table at `path`.
    pub fn load(path: &Path) -> Result<Table, ChecksError> {
        let text = std::fs::read(path).map_err(|source| ChecksError::Io {
            path: path.to_owned(),
            source,
        })?;
        Table::parse(path, &String::from_utf8_lossy(&text))
    }

    /// Compiles a table from `text`; `path` is used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Table, ChecksError> {
        let err = |line: usize, reason: String| ChecksError::Syntax {
            path: path.to_owned(),
            line,
            reason,
        };
        let logical = logical_lines(text).map_err(|(n, r)| err(n, r))?;
        let mut rules = Vec::with_capacity(logical.len());
        for (n, l) in logical {
            rules.push(parse_rule(&l, n).map_err(|r| err(n, r))?);
        }
        Ok(Table {
            path: path.to_owned(),
            rules,
        })
    }

    /// The file the table came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the table has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Finds the first rule matching `text` and returns its action with `$N` expanded.
    pub fn check(&self, text: &str) -> Verdict {
        for rule in &self.rules {
            let text_out = if rule.negate {
                if rule.regex.is_match(text) {
                    continue;
                }
                rule.text.clone()
            } else {
                let Some(caps) = rule.regex.captures(text) else {
                    continue;
                };
                let mut out = String::new();
                caps.expand(&rule.text, &mut out);
                truncate(&mut out, MAX_TEXT);
                out
            };
            let action = match rule.kind {
                Kind::Reject => Action::Reject(text_out),
                Kind::Discard => Action::Discard(text_out),
                Kind::Hold => Action::Hold(text_out),
                Kind::Warn => Action::Warn(text_out),
                Kind::Ignore => Action::Ignore,
                Kind::Dunno => Action::Dunno,
            };
            return Verdict {
                action,
                line: rule.line,
            };
        }
        Verdict {
            action: Action::Dunno,
            line: 0,
        }
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// The rules of a table's text: comments and blank lines dropped, continuation lines
/// joined, each with its first line number; an error is (line, reason).
pub(crate) fn logical_lines(text: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    let mut logical: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            match logical.last_mut() {
                Some((_, l)) => {
                    l.push(' ');
                    l.push_str(trimmed);
                    if l.len() > MAX_LINE {
                        return Err((n, format!("rule longer than {MAX_LINE} bytes")));
                    }
                }
                None => return Err((n, "continuation line without a rule before it".into())),
            }
            continue;
        }
        if trimmed.len() > MAX_LINE {
            return Err((n, format!("rule longer than {MAX_LINE} bytes")));
        }
        if logical.len() >= MAX_RULES {
            return Err((n, format!("more than {MAX_RULES} rules")));
        }
        logical.push((n, trimmed.to_owned()));
    }
    Ok(logical)
}

fn parse_rule(line: &str, n: usize) -> Result<Rule, String> {
    let (regex, negate, action) = parse_pattern(line)?;
    let (word, text) = match action.find(char::is_whitespace) {
        Some(i) => (&action[..i], action[i..].trim()),
        None => (action, ""),
    };
    let kind = match word.to_ascii_uppercase().as_str() {
        "REJECT" => Kind::Reject,
        "DISCARD" => Kind::Discard,
        "HOLD" => Kind::Hold,
        "WARN" => Kind::Warn,
        "IGNORE" => Kind::Ignore,
        "OK" | "DUNNO" => Kind::Dunno,
        "" => return Err("missing action".into()),
        "FILTER" | "REDIRECT" | "BCC" | "PREPEND" | "REPLACE" | "INFO" | "STRIP" => {
            return Err(format!("action {word} is not supported by Postern"));
        }
        _ => return Err(format!("unknown action {word:?}")),
    };
    Ok(Rule {
        regex,
        negate,
        kind,
        text: text.to_owned(),
        line: n,
    })
}

/// The `[!]/pattern/flags` at the start of a rule: the compiled pattern, whether it is
/// negated, and the rest of the line (trimmed).
pub(crate) fn parse_pattern(line: &str) -> Result<(Regex, bool, &str), String> {
    let (negate, rest) = match line.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, line),
    };
    let delim = rest.chars().next().ok_or("missing pattern")?;
    if delim.is_alphanumeric() || delim.is_whitespace() || delim == '\\' {
        return Err(format!(
            "pattern must start with a delimiter such as '/', found {delim:?}"
        ));
    }
    let body = &rest[delim.len_utf8()..];
    // The pattern ends at the next unescaped delimiter.
    let mut end = None;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delim {
            end = Some(i);
            break;
        }
    }
    let end = end.ok_or_else(|| format!("missing closing {delim:?} after the pattern"))?;
    let pattern = &body[..end];
    let after = &body[end + delim.len_utf8()..];
    let flag_end = after.find(char::is_whitespace).unwrap_or(after.len());
    let (flags, action) = after.split_at(flag_end);
    let mut icase = true;
    let mut b = RegexBuilder::new(pattern);
    for f in flags.chars() {
        match f {
            'i' => icase = !icase,
            'm' => {
                b.multi_line(true);
            }
            'x' => {
                b.ignore_whitespace(true);
            }
            other => return Err(format!("unknown pattern flag {other:?}")),
        }
    }
    let regex = b
        .case_insensitive(icase)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("bad pattern: {e}"))?;
    Ok((regex, negate, action.trim()))
}

/// What identifies a version of a file: inode, size, modification time (s, ns).
type Stamp = (u64, u64, i64, i64);

/// A table that reloads itself when its file changes.
#[derive(Debug, Default)]
pub struct Cached {
    loaded: Option<(PathBuf, Stamp, Table)>,
}

impl Cached {
    /// No table yet.
    pub fn new() -> Cached {
        Cached { loaded: None }
    }

    /// The table at `path`, reloaded if the file changed since the last call (`None` for an
    /// empty path: no table configured).
    pub fn get(&mut self, path: &Path) -> Result<Option<&Table>, ChecksError> {
        if path.as_os_str().is_empty() {
            self.loaded = None;
            return Ok(None);
        }
        let meta = std::fs::metadata(path).map_err(|source| ChecksError::Io {
            path: path.to_owned(),
            source,
        })?;
        use std::os::unix::fs::MetadataExt;
        let stamp = (meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec());
        let fresh = matches!(&self.loaded, Some((p, s, _)) if p == path && *s == stamp);
        if !fresh {
            let t = Table::load(path)?;
            self.loaded = Some((path.to_owned(), stamp, t));
        }
        Ok(self.loaded.as_ref().map(|(_, _, t)| t))
    }
}
