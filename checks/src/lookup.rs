//! Postfix's `regexp:` lookup table (regexp_table(5)) for tables whose result is text, not
//! an action: the first rule whose pattern matches the key gives its result, with `$1`..`$9`
//! and `${name}` replaced by the match's groups. Same file syntax and bounds as the
//! `header_checks` tables of this module (patterns case-insensitive by default, `!` to
//! negate, continuation lines); a rule without a result is an error.
//!
//! ```text
//! # each user owns NAME@example.test and NAME+anything@example.test
//! /^([^@+]+)(\+[^@]*)?@example\.test$/   ${1}
//! ```

use super::{ChecksError, MAX_TEXT, logical_lines, parse_pattern, truncate};
use regex::Regex;
use std::path::Path;

/// A loaded lookup table.
#[derive(Debug, Clone)]
pub struct LookupTable {
    rules: Vec<(Regex, bool, String)>,
}

impl LookupTable {
    /// Reads and compiles the table at `path`.
    pub fn load(path: &Path) -> Result<LookupTable, ChecksError> {
        let text = std::fs::read(path).map_err(|source| ChecksError::Io {
            path: path.to_owned(),
            source,
        })?;
        LookupTable::parse(path, &String::from_utf8_lossy(&text))
    }

    /// Compiles a table from `text`; `path` is used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<LookupTable, ChecksError> {
        let err = |line: usize, reason: String| ChecksError::Syntax {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut rules = Vec::new();
        for (n, l) in logical_lines(text).map_err(|(n, r)| err(n, r))? {
            let (regex, negate, result) = parse_pattern(&l).map_err(|r| err(n, r))?;
            if result.is_empty() {
                return Err(err(n, "missing result".into()));
            }
            rules.push((regex, negate, result.to_owned()));
        }
        Ok(LookupTable { rules })
    }

    /// The result of the first rule matching `key`, groups expanded.
    pub fn lookup(&self, key: &str) -> Option<String> {
        for (regex, negate, result) in &self.rules {
            if *negate {
                if !regex.is_match(key) {
                    return Some(result.clone());
                }
                continue;
            }
            if let Some(caps) = regex.captures(key) {
                let mut out = String::new();
                caps.expand(result, &mut out);
                truncate(&mut out, MAX_TEXT);
                return Some(out);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_with_groups() {
        let t = LookupTable::parse(
            Path::new("t"),
            "# owners\n/^postmaster@/ alice, bob\n/^([^@+]+)(\\+[^@]*)?@example\\.test$/ ${1}\n!/@/ nobody\n",
        )
        .expect("parse");
        assert_eq!(t.lookup("postmaster@example.test").as_deref(), Some("alice, bob"));
        assert_eq!(t.lookup("Carol@EXAMPLE.test").as_deref(), Some("Carol"));
        assert_eq!(t.lookup("carol+lists@example.test").as_deref(), Some("carol"));
        assert_eq!(t.lookup("carol@example.org"), None);
        assert_eq!(t.lookup("local").as_deref(), Some("nobody"));
    }

    #[test]
    fn a_rule_needs_a_result() {
        let e = LookupTable::parse(Path::new("t"), "/x/\n").expect_err("no result");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
