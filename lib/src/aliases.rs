//! `etc/aliases`: the local alias table, in the format of Postfix's and sendmail's
//! aliases(5).
//!
//! ```text
//! # comment
//! postmaster: root
//! root:       alice, bob@example.test
//! staff:      alice,
//!             bob            # a line starting with white space continues the previous one
//! ```
//!
//! A key is the text before the first `:`, trimmed and lower-cased (keys may be quoted,
//! `"a b": c`). Targets are separated by commas; each is kept as written (an address, a
//! local name, `|command`, `/file` or `:include:/file` — what they mean is the local
//! delivery agent's business). smtpd only asks whether a key exists (recipient validation,
//! `reject_unlisted_recipient`); local reads the targets.
//!
//! Security stance: at most [`MAX_FILE_SIZE`] bytes are read, and a malformed line is an
//! error naming the file and line, never a panic. A later duplicate key adds its targets to the
//! earlier one, as Postfix's `postalias` warns and keeps the first; we keep both and say so
//! in [`Aliases::duplicates`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The largest aliases file [`Aliases::load`] reads.
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// Errors from loading the aliases file.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AliasesError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_SIZE`].
    #[error("{0}: larger than {MAX_FILE_SIZE} bytes")]
    TooLarge(String),
    /// A line is not `name: targets`.
    #[error("{file}, line {line}: {reason}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The parsed table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    map: BTreeMap<String, Vec<String>>,
    duplicates: Vec<String>,
}

impl Aliases {
    /// Reads and parses the file at `path`. A missing file is an empty table.
    pub fn load(path: &Path) -> Result<Aliases, AliasesError> {
        let name = path.display().to_string();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Aliases::default()),
            Err(source) => return Err(AliasesError::Io { file: name, source }),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| AliasesError::Io {
                file: name.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(AliasesError::TooLarge(name));
        }
        let text = String::from_utf8_lossy(&bytes);
        Self::parse(&text).map_err(|(line, reason)| AliasesError::Syntax {
            file: name,
            line,
            reason,
        })
    }

    /// Parses the text of an aliases file; an error is (line, reason).
    pub fn parse(text: &str) -> Result<Aliases, (usize, String)> {
        let mut out = Aliases::default();
        // (line number, logical line) after joining continuations.
        let mut logical: Vec<(usize, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = strip_comment(raw);
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                match logical.last_mut() {
                    Some((_, prev)) => {
                        prev.push(' ');
                        prev.push_str(line.trim());
                    }
                    None => return Err((i + 1, "continuation line without an alias before it".into())),
                }
            } else {
                logical.push((i + 1, line.trim_end().to_string()));
            }
        }
        for (n, line) in logical {
            let (key, targets) = split_key(&line).ok_or((n, "expected NAME: TARGET, ...".to_string()))?;
            if key.is_empty() {
                return Err((n, "empty alias name".into()));
            }
            let targets: Vec<String> = targets
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect();
            if targets.is_empty() {
                return Err((n, format!("alias {key:?} has no targets")));
            }
            match out.map.get_mut(&key) {
                Some(existing) => {
                    existing.extend(targets);
                    out.duplicates.push(key);
                }
                None => {
                    out.map.insert(key, targets);
                }
            }
        }
        Ok(out)
    }

    /// Whether `name` (any case) is an alias.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(&name.to_lowercase())
    }

    /// The targets of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.map.get(&name.to_lowercase()).map(Vec::as_slice)
    }

    /// Every alias and its targets, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Names that appeared more than once (their targets were merged).
    pub fn duplicates(&self) -> &[String] {
        &self.duplicates
    }

    /// How many aliases.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The targets of a `.forward` or `:include:` file: one or more per line, separated by
/// commas, `#` comments and blank lines ignored; a comma inside double quotes
/// (`"|cmd a,b"`) does not split. Each target is trimmed and kept as written.
pub fn parse_list(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = strip_comment(raw);
        let mut quoted = false;
        let mut start = 0;
        for (i, c) in line.char_indices() {
            if c == '"' {
                quoted = !quoted;
            } else if c == ',' && !quoted {
                out.push(line.get(start..i).unwrap_or_default().trim().to_string());
                start = i + 1;
            }
        }
        out.push(line.get(start..).unwrap_or_default().trim().to_string());
    }
    out.retain(|t| !t.is_empty());
    out
}

/// Drops a `#` comment: a whole-line comment, or one after white space.
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    let mut prev_ws = false;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == '#' && prev_ws && !quoted {
            return line.get(..i).unwrap_or(line);
        }
        prev_ws = c == ' ' || c == '\t';
    }
    line
}

/// `key: rest` with an optionally quoted key, lower-cased.
fn split_key(line: &str) -> Option<(String, &str)> {
    let line = line.trim_start();
    if let Some(q) = line.strip_prefix('"') {
        let end = q.find('"')?;
        let key = q.get(..end)?;
        let rest = q.get(end + 1..)?.trim_start().strip_prefix(':')?;
        return Some((key.to_lowercase(), rest));
    }
    let (key, rest) = line.split_once(':')?;
    let key = key.trim();
    if key.contains([' ', '\t']) {
        return None;
    }
    Some((key.to_lowercase(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let a = Aliases::parse(
            "# header\nPostmaster: root\nroot: alice, bob@example.test # inline\nstaff: alice,\n  bob\n\t, carol\n\"a b\": x\n",
        )
        .unwrap();
        assert_eq!(a.get("postmaster"), Some(&["root".to_string()][..]));
        assert!(a.contains("POSTMASTER"));
        assert_eq!(a.get("root").unwrap(), ["alice", "bob@example.test"]);
        assert_eq!(a.get("staff").unwrap(), ["alice", "bob", "carol"]);
        assert_eq!(a.get("a b").unwrap(), ["x"]);
        assert_eq!(a.len(), 4);
        assert!(!a.contains("nobody"));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(Aliases::parse("a: b\n  c\nbad line\n").unwrap_err().0, 3);
        assert_eq!(Aliases::parse("  orphan\n").unwrap_err().0, 1);
        assert_eq!(Aliases::parse("x:\n").unwrap_err().0, 1);
        assert_eq!(Aliases::parse(": y\n").unwrap_err().0, 1);
    }

    #[test]
    fn duplicates_merge() {
        let a = Aliases::parse("x: a\nX: b\n").unwrap();
        assert_eq!(a.get("x").unwrap(), ["a", "b"]);
        assert_eq!(a.duplicates(), ["x"]);
    }

    #[test]
    fn lists_split_on_commas_and_lines_outside_quotes() {
        let l = parse_list("# mine\nbob, \"|/bin/cat a,b\" # note\n\n  carol@example.org\n,\n");
        assert_eq!(l, vec!["bob", "\"|/bin/cat a,b\"", "carol@example.org"]);
    }

    #[test]
    fn missing_file_is_empty() {
        let a = Aliases::load(Path::new("/nonexistent/aliases")).unwrap();
        assert!(a.is_empty());
    }

    #[test]
    fn never_panics_on_garbage() {
        for s in ["\u{0}:\u{0}", "\"", "\":", "\"a\"", "a:,,,", "#\n#", ":::::"] {
            let _ = Aliases::parse(s);
        }
    }
}
