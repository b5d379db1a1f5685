//! The password data: `etc/users` (always), `/etc/shadow` (with `auth_system_users`) and
//! the master users (`auth_master_users_file`, same format as `etc/users`), kept parsed in memory and re-read when the file changes. A change is noticed by
//! `stat` (device, inode, size, modification time) at most once per [`RECHECK`], which
//! needs only search permission on the directories; the file itself is opened through
//! the [`Opener`]. Virtual users win over system accounts of the same name.

use crate::opener::{Opener, Paths, Which};
use postern_lib::users::{MAX_FILE_SIZE, Users};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the files' metadata is checked for a change.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Most system accounts read from /etc/shadow.
pub const MAX_SHADOW_USERS: usize = 100_000;

type Signature = (u64, u64, u64, i64, i64);

/// What auth needs to know about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Canonical name.
    pub name: String,
    /// Password hash.
    pub hash: String,
    /// Quota in bytes.
    pub quota: Option<u64>,
}

#[derive(Debug)]
struct Source {
    which: Which,
    path: PathBuf,
    sig: Option<Signature>,
    loaded: bool,
}

/// The accounts auth answers for.
#[derive(Debug)]
pub struct Backend {
    opener: Opener,
    users_src: Source,
    shadow_src: Option<Source>,
    master_src: Option<Source>,
    users: Users,
    masters: Users,
    shadow: HashMap<String, String>,
    checked: Option<Instant>,
    error: Option<String>,
}

fn signature(path: &Path) -> Option<Signature> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

fn read_bounded(file: std::fs::File, what: &Path) -> Result<String, String> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", what.display()))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(format!("{}: larger than {MAX_FILE_SIZE} bytes", what.display()));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", what.display()))
}

/// Parses /etc/shadow: `name:hash:...`; locked or empty hashes (`!`, `*`, ``) are left out.
pub fn parse_shadow(text: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        if map.len() >= MAX_SHADOW_USERS {
            break;
        }
        let mut fields = line.split(':');
        let (Some(name), Some(hash)) = (fields.next(), fields.next()) else {
            continue;
        };
        if name.is_empty() || hash.is_empty() || hash.starts_with('!') || hash.starts_with('*') {
            continue;
        }
        if postern_lib::users::check_name(name).is_err() {
            continue;
        }
        map.insert(name.to_string(), hash.to_string());
    }
    map
}

impl Backend {
    /// A backend reading `CONFIG_DIR/users`, /etc/shadow when `system_users`, and the
    /// master users file when one is configured.
    pub fn new(opener: Opener, paths: &Paths, system_users: bool) -> Backend {
        let src = |which| {
            crate::opener::path_of(paths, which).map(|path| Source {
                which,
                path,
                sig: None,
                loaded: false,
            })
        };
        Backend {
            opener,
            users_src: src(Which::Users).unwrap_or(Source {
                which: Which::Users,
                path: postern_lib::users::path(&paths.config_dir),
                sig: None,
                loaded: false,
            }),
            shadow_src: if system_users { src(Which::Shadow) } else { None },
            master_src: src(Which::MasterUsers),
            users: Users::default(),
            masters: Users::default(),
            shadow: HashMap::new(),
            checked: None,
            error: None,
        }
    }

    /// Re-reads changed files (at most once per [`RECHECK`] unless `force`). Returns an
    /// error when a file could not be read; the previous contents stay in use then only
    /// if they were ever loaded.
    pub fn refresh(&mut self, now: Instant, force: bool) -> Result<(), String> {
        if !force && self.checked.is_some_and(|t| now.saturating_duration_since(t) < RECHECK) {
            return match &self.error {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            };
        }
        self.checked = Some(now);
        self.error = None;
        for which in [Which::Users, Which::Shadow, Which::MasterUsers] {
            let Some(src) = self.source(which) else { continue };
            let sig = signature(&src.path);
            if src.loaded && sig == src.sig {
                continue;
            }
            let loaded = match which {
                Which::Users => self.load_users(),
                Which::Shadow => self.load_shadow(),
                Which::MasterUsers => self.load_masters(),
            };
            match (loaded, self.source(which)) {
                (Ok(()), Some(src)) => {
                    src.sig = sig;
                    src.loaded = true;
                }
                (Ok(()), None) => {}
                (Err(e), _) => self.error = Some(e),
            }
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The source of `which`, when it is read.
    fn source(&mut self, which: Which) -> Option<&mut Source> {
        match which {
            Which::Users => Some(&mut self.users_src),
            Which::Shadow => self.shadow_src.as_mut(),
            Which::MasterUsers => self.master_src.as_mut(),
        }
    }

    fn load_masters(&mut self) -> Result<(), String> {
        let Some(src) = &self.master_src else { return Ok(()) };
        let path = src.path.clone();
        let masters = match self.opener.open(Which::MasterUsers)? {
            None => {
                tracing::warn!("{}: no such file: no master users", path.display());
                Users::default()
            }
            Some(file) => {
                let text = read_bounded(file, &path)?;
                Users::parse(&text).map_err(|(line, reason)| format!("{}:{line}: {reason}", path.display()))?
            }
        };
        tracing::info!("loaded {}: {} master users", path.display(), masters.list().count());
        self.masters = masters;
        Ok(())
    }

    /// Whether master users are configured (`auth_master_users_file` is set).
    pub fn has_masters(&self) -> bool {
        self.master_src.is_some()
    }

    /// The master user called `name` (from `auth_master_users_file` only).
    pub fn master(&self, name: &str) -> Option<Account> {
        self.masters.get(name).map(|u| Account {
            name: u.name.clone(),
            hash: u.hash.clone(),
            quota: None,
        })
    }

    fn load_users(&mut self) -> Result<(), String> {
        let path = self.users_src.path.clone();
        let users = match self.opener.open(self.users_src.which)? {
            None => Users::default(),
            Some(file) => {
                let text = read_bounded(file, &path)?;
                Users::parse(&text).map_err(|(line, reason)| format!("{}:{line}: {reason}", path.display()))?
            }
        };
        let count = users.list().count();
        if self.users_src.loaded {
            tracing::info!("reloaded {}: {count} users", path.display());
        }
        self.users = users;
        Ok(())
    }

    fn load_shadow(&mut self) -> Result<(), String> {
        let path = PathBuf::from(crate::opener::SHADOW);
        self.shadow = match self.opener.open(Which::Shadow)? {
            None => HashMap::new(),
            Some(file) => parse_shadow(&read_bounded(file, &path)?),
        };
        Ok(())
    }

    /// Whether the users file was ever read (after a failed re-read the last good
    /// contents stay in use).
    pub fn ready(&self) -> bool {
        self.users_src.loaded
    }

    /// The virtual user (of `etc/users`) called `name`, never a system account.
    pub fn virtual_account(&self, name: &str) -> Option<Account> {
        self.users.get(name).map(|u| Account {
            name: u.name.clone(),
            hash: u.hash.clone(),
            quota: u.quota,
        })
    }

    /// The account called `name` (virtual users first, then system accounts).
    pub fn account(&self, name: &str) -> Option<Account> {
        if let Some(a) = self.virtual_account(name) {
            return Some(a);
        }
        self.shadow.get(name).map(|hash| Account {
            name: name.to_string(),
            hash: hash.clone(),
            quota: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_skips_locked_and_odd_lines() {
        let m = parse_shadow(
            "root:!:19000::::::\nbob:$y$j9T$abc$def:19000:0:99999:7:::\ndaemon:*:1\nBad Name:$6$x$y:1\nnohash\n",
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("bob").map(String::as_str), Some("$y$j9T$abc$def"));
    }

    #[test]
    fn reloads_when_the_file_changes() {
        let dir = tempdir();
        let path = dir.join("users");
        std::fs::write(&path, "alice:$6$salt$hash\n").expect("write");
        let paths = Paths::new(&dir);
        let mut b = Backend::new(Opener::Direct(paths.clone()), &paths, false);
        let t0 = Instant::now();
        b.refresh(t0, false).expect("load");
        assert!(b.account("alice").is_some());
        assert!(b.account("bob").is_none());
        std::fs::write(dir.join("users.new"), "bob:$6$salt$hash:100\n").expect("write");
        std::fs::rename(dir.join("users.new"), &path).expect("rename");
        b.refresh(t0, false).expect("cached");
        assert!(b.account("bob").is_none(), "not re-checked within RECHECK");
        b.refresh(t0 + RECHECK, false).expect("reload");
        assert_eq!(b.account("bob").and_then(|a| a.quota), Some(100));
        assert!(b.account("alice").is_none());
        std::fs::write(&path, "broken line\n").expect("write");
        assert!(b.refresh(t0 + RECHECK * 2, false).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("postern-auth-backend-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }
}
