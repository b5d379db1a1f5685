//! `postern config --doc [KEY...]`: what the settings registry
//! ([`postern_lib::config::SETTINGS`]) says of each main.toml setting, and its effective
//! value.
//!
//! ```text
//! message_size_limit
//!   Largest message accepted, in bytes (envelope and headers included).
//!   type: size (bytes; or with a unit: "10MB", "512k", "1g")
//!   default: 10240000
//!   bounds: at least 1024
//!   read by: smtpd postern postdrop pickup cleanup
//!   value: 10240000
//! ```
//!
//! Without KEY, every setting in the order of the registry, separated by empty lines. The
//! `value:` line is the effective value of main.toml (references expanded, paths
//! resolved); when main.toml does not load, the docs are still printed, without values,
//! and the loader's error follows on standard error (exit status 1).

use postern_lib::config::{Config, SETTINGS, SettingInfo, did_you_mean, render};
use std::path::Path;
use std::process::ExitCode;

/// Runs `postern config --doc KEYS`.
pub fn run(dir: &Path, keys: &[String]) -> Result<ExitCode, String> {
    let mut infos = Vec::new();
    for key in keys {
        let info = SettingInfo::find(key).ok_or_else(|| {
            format!(
                "unknown setting {key:?}{}",
                did_you_mean(key, SETTINGS.iter().map(|s| s.name))
            )
        })?;
        infos.push(info);
    }
    if keys.is_empty() {
        infos.extend(SETTINGS.iter());
    }
    let loaded = Config::load(dir);
    let values = match &loaded {
        Ok(cfg) => Some(toml::Table::try_from(&cfg.main).map_err(|e| format!("cannot render settings: {e}"))?),
        Err(_) => None,
    };
    let out: Vec<String> = infos.iter().map(|i| entry(i, values.as_ref())).collect();
    crate::files::print(&out.join("\n"))?;
    match loaded {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(format!("{e} (values not shown)")),
    }
}

/// One setting's block.
fn entry(info: &SettingInfo, values: Option<&toml::Table>) -> String {
    let mut s = format!(
        "{}\n  {}\n  type: {}\n  default: {}\n",
        info.name,
        info.doc(),
        (info.kind)(),
        (info.default)()
    );
    if let Some(bounds) = info.bounds {
        s.push_str(&format!("  bounds: {}\n", bounds()));
    }
    s.push_str(&format!("  read by: {}\n", info.readers));
    if let Some(v) = values.and_then(|t| t.get(info.name)) {
        s.push_str(&format!("  value: {}\n", render(v)));
    }
    s
}
