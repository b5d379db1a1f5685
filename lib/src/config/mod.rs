//! Configuration: `main.toml` (global settings) and `master.toml` (the service table).
//!
//! [`Config::load`] reads both files from a config directory, applies defaults, expands
//! `$name` references, resolves relative paths, and validates everything; any problem is a
//! [`ConfigError`] naming the file, the line and the key. Unknown keys are an error.
//! Nothing here panics on a malformed file.
//!
//! The config directory is given with `-c`; by default it is the `etc/` of the checkout
//! when the running program lives in `target/<profile>/` of one, and `/etc/postern`
//! otherwise ([`default_config_dir`]).

mod cidr;
mod duration;
mod error;
mod expand;
mod main_cf;
mod master_cf;
mod paths;
mod registry;
mod replica;
mod size;
mod values;

pub use cidr::Cidr;
pub use duration::Seconds;
pub use error::ConfigError;
pub use error::did_you_mean;
pub use main_cf::{MainConfig, SETTINGS};
pub use master_cf::{Listen, ServiceEntry, ServiceType};
pub use paths::{Base, ConfigPath};
pub use registry::{SettingInfo, render};
pub use size::parse_bytes;
pub use values::{BareNewline, MailboxFormat, MilterAction, MirrorUnreachable, SmtpTlsLevel, SmtpdTlsLevel};

use std::path::{Path, PathBuf};

/// The file names inside a config directory.
pub const MAIN_FILE: &str = "main.toml";
/// The service table.
pub const MASTER_FILE: &str = "master.toml";

/// A service of master.toml with every limit resolved against main.toml.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// The entry as written.
    pub entry: ServiceEntry,
    /// Listen addresses (inet: `ADDR:PORT`; unix: absolute socket paths).
    pub listen: Vec<String>,
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Effective limits.
    pub maxproc: u32,
    /// Effective max_use.
    pub max_use: u32,
    /// Effective max_idle.
    pub max_idle: Seconds,
    /// Effective per-process connection limit.
    pub max_conns: u32,
}

impl Service {
    /// `NAME/TYPE`, the key of the entry.
    pub fn key(&self) -> String {
        format!("{}/{}", self.entry.name, self.entry.kind.as_str())
    }
}

/// Both files, loaded and validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// The config directory.
    pub dir: PathBuf,
    /// main.toml with defaults, references expanded and paths made absolute.
    pub main: MainConfig,
    /// The service table, in file order.
    pub services: Vec<Service>,
    /// The merged main table before typing, to apply per-service overrides.
    merged: toml::Table,
}

impl Config {
    /// Loads and validates `dir/main.toml` and `dir/master.toml`.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let (main, master) = Config::read_texts(dir)?;
        Config::load_texts(dir, &main, &master)
    }

    /// Reads the two files' texts.
    pub fn read_texts(dir: &Path) -> Result<(String, String), ConfigError> {
        let dir = absolute(dir);
        Ok((read(&dir.join(MAIN_FILE))?, read(&dir.join(MASTER_FILE))?))
    }

    /// Validates the given texts as if they were `dir`'s two files (errors still name
    /// those files). Master hands children the texts it validated this way, so a file
    /// broken on disk after a refused reload never reaches a new child.
    pub fn load_texts(dir: &Path, text: &str, mtext: &str) -> Result<Config, ConfigError> {
        let dir = absolute(dir);
        let main_path = dir.join(MAIN_FILE);
        let file_table: toml::Table = toml::from_str(text).map_err(|e| error::from_toml(&main_path, text, &e))?;
        // Type-check the file alone first so that errors point at its own lines.
        let _: MainConfig = toml::from_str(text).map_err(|e| error::from_toml(&main_path, text, &e))?;
        let mut merged = defaults_table();
        merged.extend(file_table);
        let main = typed_main(&dir, &main_path, text, merged.clone())?;

        let master_path = dir.join(MASTER_FILE);
        let mfile: master_cf::MasterFile =
            toml::from_str(mtext).map_err(|e| error::from_toml(&master_path, mtext, &e))?;
        let mut services = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for entry in mfile.service {
            let svc = resolve_service(&dir, &main, &merged, &master_path, mtext, entry)?;
            if !seen.insert(svc.key()) {
                return Err(invalid(
                    &master_path,
                    mtext,
                    &svc.entry.name,
                    Some(svc.key()),
                    "service defined twice".into(),
                ));
            }
            services.push(svc);
        }
        Ok(Config {
            dir,
            main,
            services,
            merged,
        })
    }

    /// The settings as service `key` (`NAME/TYPE`) sees them: main.toml plus its `options`.
    pub fn main_for(&self, key: &str) -> Result<MainConfig, ConfigError> {
        let Some(svc) = self.services.iter().find(|s| s.key() == key) else {
            return Ok(self.main.clone());
        };
        if svc.entry.options.is_empty() {
            return Ok(self.main.clone());
        }
        let mut merged = self.merged.clone();
        merged.extend(svc.entry.options.clone());
        let path = self.dir.join(MASTER_FILE);
        typed_main(&self.dir, &path, "", merged)
    }

    /// The service with key `NAME/TYPE`.
    pub fn service(&self, key: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.key() == key)
    }

    /// The pid/lock file of master for this queue.
    pub fn pid_file(&self) -> PathBuf {
        Path::new(&self.main.queue_directory).join("pid").join("master.pid")
    }

    /// The validated configuration master hands to its children.
    pub fn snapshot_file(&self) -> PathBuf {
        Path::new(&self.main.queue_directory).join("pid").join("config.json")
    }

    /// The control socket master answers `status` on (next to the pid file, mode 0600).
    pub fn control_socket(&self) -> PathBuf {
        Path::new(&self.main.queue_directory).join("pid").join("master.ctl")
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })
}

fn invalid(file: &Path, text: &str, key_in_text: &str, key: Option<String>, reason: String) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        line: error::line_of_key(text, key_in_text).or_else(|| {
            text.lines()
                .position(|l| l.contains(&format!("\"{key_in_text}\"")))
                .map(|n| n + 1)
        }),
        key,
        reason,
    }
}

fn defaults_table() -> toml::Table {
    let mut t = toml::Table::try_from(MainConfig::default()).unwrap_or_default();
    let host = system_hostname();
    let domain = host
        .split_once('.')
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| "localdomain".into());
    let host = if host.contains('.') {
        host
    } else {
        format!("{host}.{domain}")
    };
    t.insert("myhostname".into(), toml::Value::String(host));
    t.insert("mydomain".into(), toml::Value::String(domain));
    t
}

fn typed_main(dir: &Path, path: &Path, text: &str, mut merged: toml::Table) -> Result<MainConfig, ConfigError> {
    expand::expand_table(&mut merged).map_err(|(key, reason)| invalid(path, text, &key, Some(key.clone()), reason))?;
    let mut main: MainConfig = merged.try_into().map_err(|e: toml::de::Error| ConfigError::Invalid {
        file: path.to_path_buf(),
        line: None,
        key: None,
        reason: e.message().to_string(),
    })?;
    main.resolve_paths(dir);
    if main.daemon_directory.is_empty() {
        main.daemon_directory = ConfigPath(exe_dir().to_string_lossy().into_owned());
    }
    main.validate()
        .map_err(|(key, reason)| invalid(path, text, key, Some(key.into()), reason))?;
    Ok(main)
}

fn resolve_service(
    dir: &Path,
    main: &MainConfig,
    merged: &toml::Table,
    path: &Path,
    text: &str,
    entry: ServiceEntry,
) -> Result<Service, ConfigError> {
    let key = format!("{}/{}", entry.name, entry.kind.as_str());
    let bad =
        |field: &str, reason: String| invalid(path, text, &entry.name, Some(format!("service {key}: {field}")), reason);
    if entry.name.is_empty()
        || !entry
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(bad("name", format!("{:?} is not a valid service name", entry.name)));
    }
    if entry.command.is_empty() {
        return Err(bad("command", "must not be empty".into()));
    }
    let listen = match (&entry.listen, entry.kind) {
        (Some(l), ServiceType::Inet) => {
            let addrs = l.addrs();
            for a in &addrs {
                parse_inet(a).map_err(|r| bad("listen", r))?;
            }
            addrs
        }
        (None, ServiceType::Inet) => return Err(bad("listen", "an inet service needs ADDR:PORT".into())),
        (l, ServiceType::Unix) => {
            let rel = l
                .as_ref()
                .map(|l| l.addrs())
                .unwrap_or_else(|| vec![format!("private/{}", entry.name)]);
            rel.iter()
                .map(|r| Path::new(&main.queue_directory).join(r).to_string_lossy().into_owned())
                .collect()
        }
    };
    if listen.is_empty() {
        return Err(bad("listen", "no address given".into()));
    }
    if entry.wakeup.0 > 0 && entry.kind != ServiceType::Unix {
        return Err(bad("wakeup", "only a unix service can be woken up".into()));
    }
    let maxproc = entry.maxproc.unwrap_or(main.default_process_limit);
    if maxproc == 0 {
        return Err(bad("maxproc", "must be at least 1".into()));
    }
    if entry.min_procs > maxproc {
        return Err(bad(
            "min_procs",
            format!("{} is more than maxproc {maxproc}", entry.min_procs),
        ));
    }
    let max_use = entry.max_use.unwrap_or(main.max_use);
    if max_use == 0 {
        return Err(bad("max_use", "must be at least 1".into()));
    }
    let max_conns = entry.max_conns.unwrap_or(main.default_connection_limit);
    if max_conns == 0 {
        return Err(bad("max_conns", "must be at least 1".into()));
    }
    if !entry.options.is_empty() {
        let mut m = merged.clone();
        m.extend(entry.options.clone());
        typed_main(dir, path, text, m).map_err(|e| match e {
            ConfigError::Invalid { reason, .. } => bad("options", reason),
            other => other,
        })?;
    }
    let program = if Path::new(&entry.command).is_absolute() {
        PathBuf::from(&entry.command)
    } else {
        Path::new(&main.daemon_directory).join(&entry.command)
    };
    Ok(Service {
        listen,
        program,
        maxproc,
        max_use,
        max_idle: entry.max_idle.unwrap_or(main.max_idle),
        max_conns,
        entry,
    })
}

/// Parses an inet listen address: `ADDR:PORT`, `[V6]:PORT`, or `*:PORT` / `PORT` (all
/// addresses).
pub fn parse_inet(text: &str) -> Result<std::net::SocketAddr, String> {
    let t = text.trim();
    let t = t
        .strip_prefix("*:")
        .map(|p| format!("0.0.0.0:{p}"))
        .unwrap_or_else(|| t.to_string());
    if let Ok(port) = t.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([0, 0, 0, 0], port)));
    }
    t.parse()
        .map_err(|_| format!("{text:?} is not ADDR:PORT (e.g. 127.0.0.1:2525 or [::1]:2525)"))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The directory holding the running executable.
pub fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `etc/` of the checkout when the running program is `target/<profile>/NAME` of a
/// checkout that has one, else `/etc/postern`.
pub fn default_config_dir() -> PathBuf {
    let exe = exe_dir();
    if exe.parent().and_then(Path::file_name).is_some_and(|n| n == "target")
        && let Some(root) = exe.parent().and_then(Path::parent)
        && root.join("etc").join(MAIN_FILE).is_file()
    {
        return root.join("etc");
    }
    PathBuf::from("/etc/postern")
}

/// The file a table setting names (`transport_maps`, `header_checks`, ...): relative
/// names resolve against the config directory, a `regexp:`/`pcre:` type prefix is
/// dropped, and an empty setting names no file.
pub fn table_file(config_dir: &Path, setting: &str) -> Option<PathBuf> {
    let s = setting.trim();
    let s = s
        .strip_prefix("regexp:")
        .or_else(|| s.strip_prefix("pcre:"))
        .unwrap_or(s);
    (!s.is_empty()).then(|| config_dir.join(s))
}

pub use postern_util::hostname::system_hostname;

#[cfg(test)]
mod tests;
