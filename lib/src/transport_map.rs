//! Lookup tables in plain files, as trivial-rewrite reads them: `transport_maps` and
//! `virtual_alias_maps`, reloaded when the file changes (no compile step, no `postmap`).
//!
//! ```text
//! # comment
//! example.com        smtp:[mx.example.com]:25
//! .example.com       smtp:[mx.example.com]:25     (any subdomain)
//! slow.example       slow:                        (own transport, default nexthop)
//! *                  smtp:[relay.example]         (everything else)
//! alice@example.org  bob@example.test, carol@example.test
//! ```
//!
//! A line is a key, white space, and a value (the rest of the line, trimmed); a line
//! starting with white space continues the previous value. Keys are compared lower-cased.
//! [`Table`] is one parsed file; [`TableSet`] is a list of files searched in order, each
//! reloaded when its modification time or size changes (checked at most once a second).
//! [`transport_lookup`] is the transport_maps search order of Postfix's transport(5):
//! the full address, then the domain, then `.parent` domains from the longest, then `*`.
//!
//! Security stance: files are opened with [`crate::safe_open::open_read`] (no symlink,
//! regular file, one link), at most [`MAX_FILE_SIZE`] bytes are read and at most
//! [`MAX_ENTRIES`] entries kept; a malformed line is an error naming file and line.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::safe_open::{Expect, open_read};

/// Largest table file read.
pub const MAX_FILE_SIZE: u64 = 16 << 20;
/// Most entries in one table.
pub const MAX_ENTRIES: usize = 1_000_000;
/// How often a [`TableSet`] looks at its files' metadata.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A table that could not be read or parsed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be opened or read.
    #[error("{file}: {reason}")]
    Io {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A line is not `key value`.
    #[error("{file}, line {line}: {reason}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One parsed table file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    map: HashMap<String, String>,
}

impl Table {
    /// Parses table text. Errors give the 1-based line and the reason.
    pub fn parse(text: &str) -> Result<Table, (usize, &'static str)> {
        let mut map: HashMap<String, String> = HashMap::new();
        let mut last: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                let key = last.as_ref().ok_or((n, "continuation line without an entry"))?;
                if let Some(v) = map.get_mut(key) {
                    v.push(' ');
                    v.push_str(trimmed);
                }
                continue;
            }
            let (key, value) = match trimmed.split_once([' ', '\t']) {
                Some((k, v)) => (k, v.trim()),
                None => return Err((n, "expected a key and a value")),
            };
            if value.is_empty() {
                return Err((n, "expected a key and a value"));
            }
            if map.len() >= MAX_ENTRIES {
                return Err((n, "too many entries"));
            }
            let key = key.to_lowercase();
            // The first entry for a key wins, as in Postfix's tables.
            map.entry(key.clone()).or_insert_with(|| value.to_string());
            last = Some(key);
        }
        Ok(Table { map })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Table, TableError> {
        let file = path.display().to_string();
        let f = open_read(path, &Expect::any()).map_err(|e| TableError::Io {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        let mut bytes = Vec::new();
        f.take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| TableError::Io {
                file: file.clone(),
                reason: e.to_string(),
            })?;
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(TableError::Io {
                file,
                reason: format!("larger than {MAX_FILE_SIZE} bytes"),
            });
        }
        let text = String::from_utf8_lossy(&bytes);
        Table::parse(&text).map_err(|(line, reason)| TableError::Syntax { file, line, reason })
    }

    /// The value of `key` (compared lower-cased).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(&key.to_lowercase()).map(String::as_str)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[derive(Debug)]
struct Loaded {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    table: Table,
}

/// Table files searched in order, reloaded when they change.
#[derive(Debug)]
pub struct TableSet {
    files: Vec<Loaded>,
    checked: Option<Instant>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let md = std::fs::symlink_metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

impl TableSet {
    /// Loads every file now; an error names the first file that failed.
    pub fn load(paths: &[PathBuf]) -> Result<TableSet, TableError> {
        let mut files = Vec::new();
        for p in paths {
            let st = stamp(p);
            files.push(Loaded {
                path: p.clone(),
                stamp: st,
                table: Table::load(p)?,
            });
        }
        Ok(TableSet {
            files,
            checked: Some(Instant::now()),
        })
    }

    /// Reloads files whose modification time or size changed (at most once per
    /// [`RELOAD_CHECK`]). On error the old contents stay in use and the error is returned.
    pub fn refresh(&mut self) -> Result<bool, TableError> {
        if self.checked.is_some_and(|t| t.elapsed() < RELOAD_CHECK) {
            return Ok(false);
        }
        self.checked = Some(Instant::now());
        let mut changed = false;
        for f in &mut self.files {
            let st = stamp(&f.path);
            if st != f.stamp {
                f.table = Table::load(&f.path)?;
                f.stamp = st;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// The first value of `key` in the files, in order.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.files.iter().find_map(|f| f.table.get(key))
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// A transport table value `transport:nexthop`; either part may be empty (keep the
/// default). A value without `:` is a transport alone.
pub fn split_transport(value: &str) -> (&str, &str) {
    match value.split_once(':') {
        Some((t, n)) => (t.trim(), n.trim()),
        None => (value.trim(), ""),
    }
}

/// Looks up `address` (`local@domain`, domain already lower-case) in a transport table:
/// the full address, the domain, `.parent` domains from the longest, then `*`. Returns
/// the table value.
pub fn transport_lookup<'a>(lookup: impl Fn(&str) -> Option<&'a str>, address: &str) -> Option<&'a str> {
    if let Some(v) = lookup(address) {
        return Some(v);
    }
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or(address);
    if let Some(v) = lookup(domain) {
        return Some(v);
    }
    let mut rest = domain;
    while let Some((_, parent)) = rest.split_once('.') {
        if let Some(v) = lookup(&format!(".{parent}")) {
            return Some(v);
        }
        rest = parent;
    }
    lookup("*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_lookup_order() {
        let t = Table::parse(
            "# c\nExample.COM smtp:[mx.example.com]:25\n.example.com relay:\n*  smtp:[fallback]\n\
             bob@example.com local:\nlist@x.test a@x.test,\n  b@x.test\n",
        )
        .unwrap();
        let get = |k: &str| t.get(k);
        assert_eq!(transport_lookup(get, "a@example.com"), Some("smtp:[mx.example.com]:25"));
        assert_eq!(transport_lookup(get, "bob@example.com"), Some("local:"));
        assert_eq!(transport_lookup(get, "a@deep.sub.example.com"), Some("relay:"));
        assert_eq!(transport_lookup(get, "a@other.org"), Some("smtp:[fallback]"));
        assert_eq!(t.get("list@x.test"), Some("a@x.test, b@x.test"));
        assert_eq!(split_transport("smtp:[h]:25"), ("smtp", "[h]:25"));
        assert_eq!(split_transport("local"), ("local", ""));
        assert_eq!(split_transport(":[h]"), ("", "[h]"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(Table::parse("ok v\nlonely\n"), Err((2, "expected a key and a value")));
        assert_eq!(Table::parse("  cont\n"), Err((1, "continuation line without an entry")));
    }

    #[test]
    fn reloads_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("transport");
        std::fs::write(&p, "a.test x:\n").unwrap();
        let mut set = TableSet::load(std::slice::from_ref(&p)).unwrap();
        assert_eq!(set.get("a.test"), Some("x:"));
        std::fs::write(&p, "a.test yy:longer\n").unwrap();
        set.checked = None;
        assert!(set.refresh().unwrap());
        assert_eq!(set.get("a.test"), Some("yy:longer"));
    }
}
