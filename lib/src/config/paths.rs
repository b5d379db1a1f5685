//! Path settings and the one rule for relative paths.
//!
//! A relative path in main.toml resolves, once, when the configuration is loaded:
//! - what the configuration itself names and an administrator keeps beside main.toml —
//!   certificates, keys, CA files, and the tables (`alias_maps`, `transport_maps`,
//!   `header_checks`, ... through [`super::table_file`]) — against the **config
//!   directory** ([`Base::Config`]);
//! - what the mail system writes or runs — the queue, mailboxes, the mbox spool, the log
//!   file, the daemon programs — against the config directory's **parent**, the
//!   installation root ([`Base::Root`]), so a copy of `etc/` in `/some/dir/etc` runs
//!   entirely inside `/some/dir` (`queue_directory = "var/spool"` is `/some/dir/var/spool`).
//!
//! Each path setting names its base in the registry (`path Config` / `path Root` in
//! [`super::main_cf`]); `postern config --doc KEY` prints it. After loading, every
//! [`ConfigPath`] is absolute (or empty, or one of the words a setting allows, such as
//! `maillog_file = "syslog"`), so daemons use it as it is.

use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

/// What a relative path setting is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// The config directory (the `-c` directory holding main.toml).
    Config,
    /// The config directory's parent, the installation root.
    Root,
}

impl Base {
    /// The words `postern config --doc` prints.
    pub fn describe(self) -> &'static str {
        match self {
            Base::Config => "the config directory",
            Base::Root => "the config directory's parent",
        }
    }

    /// The directory a relative path is joined to.
    pub fn dir(self, config_dir: &Path) -> &Path {
        match self {
            Base::Config => config_dir,
            Base::Root => config_dir.parent().unwrap_or(config_dir),
        }
    }
}

/// A file or directory setting: the text as written until the configuration is loaded,
/// an absolute path after. Reads as a `String` (`&*p`, `p.is_empty()`, `Path::new(&p)`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigPath(pub String);

/// Values of path settings that are words, not paths (`maillog_file`).
const WORDS: &[&str] = &["syslog", "-"];

impl ConfigPath {
    /// Makes a relative path absolute against `base` (empty values and words stay).
    pub(super) fn resolve(&mut self, base: Base, config_dir: &Path) {
        let p = self.0.trim();
        if p.is_empty() || WORDS.contains(&p) || Path::new(p).is_absolute() {
            return;
        }
        self.0 = base.dir(config_dir).join(p).to_string_lossy().into_owned();
    }

    /// The path.
    pub fn path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl From<&str> for ConfigPath {
    fn from(s: &str) -> ConfigPath {
        ConfigPath(s.into())
    }
}

impl std::ops::Deref for ConfigPath {
    type Target = String;

    fn deref(&self) -> &String {
        &self.0
    }
}

impl std::ops::DerefMut for ConfigPath {
    fn deref_mut(&mut self) -> &mut String {
        &mut self.0
    }
}

impl AsRef<Path> for ConfigPath {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl AsRef<OsStr> for ConfigPath {
    fn as_ref(&self) -> &OsStr {
        OsStr::new(&self.0)
    }
}

impl AsRef<str> for ConfigPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for ConfigPath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl super::registry::SettingType for ConfigPath {
    fn kind() -> String {
        "path".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_per_base() {
        let dir = Path::new("/srv/postern/etc");
        let mut cert = ConfigPath::from("tls/cert.pem");
        cert.resolve(Base::Config, dir);
        assert_eq!(cert.path(), Path::new("/srv/postern/etc/tls/cert.pem"));
        let mut queue = ConfigPath::from("var/spool");
        queue.resolve(Base::Root, dir);
        assert_eq!(queue.path(), Path::new("/srv/postern/var/spool"));
        for word in ["syslog", "-", "", "/abs/x"] {
            let mut p = ConfigPath::from(word);
            p.resolve(Base::Root, dir);
            assert_eq!(p, word);
        }
    }
}
