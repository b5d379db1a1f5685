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
    let mut reason = err.message().trim().to_string();
    // serde lists every expected field; the key and line are what helps.
    if let Some(cut) = reason.find(", expected one of") {
        reason.truncate(cut);
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
