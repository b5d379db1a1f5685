//! Configuration errors: each one names the file, the line (when known) and the key, so an
//! administrator can go straight to the mistake.

use std::fmt;
use std::path::PathBuf;

/// A configuration file could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable).
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown, or a value has the wrong type or
    /// fails validation.
    Invalid {
        /// The file.
        file: PathBuf,
        /// The 1-based line, when it could be found.
        line: Option<usize>,
        /// The key (`myhostname`, `service smtp/inet: maxproc`), when known.
        key: Option<String>,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => write!(f, "{}: cannot read: {source}", file.display()),
            ConfigError::Invalid {
                file,
                line,
                key,
                reason,
            } => {
                write!(f, "{}", file.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                match key {
                    Some(key) => write!(f, ": {key}: {reason}"),
                    None => write!(f, ": {reason}"),
                }
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The 1-based line of byte offset `at` in `text`.
pub(super) fn line_of_offset(text: &str, at: usize) -> usize {
    text.as_bytes().iter().take(at).filter(|&&b| b == b'\n').count() + 1
}

/// The line where top-level `key` is assigned in `text`, if it can be found.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if let Some(rest) = l.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(n + 1);
        }
    }
    None
}

/// Turns a toml deserialisation error into a file/line/key error.
pub(super) fn from_toml(file: &std::path::Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let line = err.span().map(|s| line_of_offset(text, s.start));
    let mut reason = plain_type_error(err.message().trim());
    // serde lists every expected field; the key and line are what helps, and the nearest
    // known name when the key is a typo.
    if let Some(cut) = reason.find(", expected one of") {
        let suggestion = reason
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(unknown, _)| did_you_mean(unknown, reason[cut..].split('`').skip(1).step_by(2)))
            .unwrap_or_default();
        reason.truncate(cut);
        reason.push_str(&suggestion);
        if let Some(rest) = reason.strip_prefix("unknown field ") {
            reason = format!("unknown setting {rest}");
        }
    }
    let key = line.and_then(|l| text.lines().nth(l - 1)).and_then(|l| {
        let k = l.split('=').next()?.trim();
        (!k.is_empty() && !k.starts_with('[') && !k.starts_with('#')).then(|| k.to_string())
    });
    ConfigError::Invalid {
        file: file.to_path_buf(),
        line,
        key,
        reason,
    }
}

/// serde's type errors in words an administrator uses (`invalid type: string "10MB",
/// expected u64` → `"10MB" is not a whole number`).
fn plain_type_error(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("invalid type: ") else {
        return msg.to_string();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return msg.to_string();
    };
    let value = found
        .strip_prefix("string ")
        .map(str::to_string)
        .or_else(|| found.strip_prefix("integer ").map(|n| n.trim_matches('`').to_string()))
        .unwrap_or_else(|| found.to_string());
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => format!("{value} is not a whole number"),
        "a boolean" => format!("{value} is not true or false (written without quotes)"),
        "a string" => format!("{value} must be written in double quotes"),
        "a sequence" => format!("{value} is not a list: write [\"...\", \"...\"]"),
        other => format!("{value} is not {other}"),
    }
}

/// ` (did you mean `NAME`?)` for the name among `known` nearest to `unknown`, when it is
/// near enough to be a typo (at most a third of its letters differ); else empty.
pub fn did_you_mean<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    known
        .into_iter()
        .map(|k| (edit_distance(unknown, k), k))
        .filter(|(d, _)| *d > 0 && *d <= unknown.len().max(3) / 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance (small inputs: key names).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod words {
    #[test]
    fn plain_errors_and_suggestions() {
        assert_eq!(
            super::plain_type_error("invalid type: string \"ten\", expected u64"),
            "\"ten\" is not a whole number"
        );
        assert_eq!(
            super::plain_type_error("invalid type: integer `5`, expected a string"),
            "5 must be written in double quotes"
        );
        assert_eq!(
            super::did_you_mean("mesage_size_limit", ["myhostname", "message_size_limit"]),
            " (did you mean `message_size_limit`?)"
        );
        assert_eq!(super::did_you_mean("bogus_key", ["myhostname", "relayhost"]), "");
    }
}
