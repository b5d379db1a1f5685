//! `postern config`: show and change settings, like Postfix's postconf.
//!
//! ```text
//! postern config                      every effective main.toml setting, defaults included, sorted
//! postern config KEY...               `KEY = VALUE` for each main.toml setting named
//! postern config NAME/TYPE            a master.toml entry as effective (limits resolved)
//! postern config NAME/TYPE.FIELD      one field of it (`smtp/inet.listen`, `smtp/inet.options.KEY`)
//! postern config set ASSIGNMENT...    edit main.toml / master.toml in place, comments kept
//! postern config --doc [KEY...]       doc, type, default, bounds, readers and value ([`doc`])
//! ```
//!
//! Values are printed in TOML syntax. An assignment is `KEY=VALUE` (main.toml) or
//! `NAME/TYPE.FIELD=VALUE` (the `[[service]]` entry of master.toml with that name and type;
//! `NAME/TYPE.options.KEY=VALUE` for a per-service override). VALUE is a TOML value; text
//! that is not valid TOML is taken as a string, so `myhostname=mx.example.test` and
//! `smtp/inet.listen=127.0.0.1:2525` need no quotes. Where a setting is a string, a number
//! or boolean is taken as its text (`listen=2525`); where it is a list, a string is split
//! at commas and white space (`mydestination=example.test, localhost`).
//!
//! All assignments of one invocation are applied together: both files are edited in memory
//! (with toml_edit, so comments and layout stay), the result is loaded and validated from a
//! temporary copy, and only when it is valid are the changed files replaced atomically,
//! keeping their mode and owner. An invalid result changes nothing, and the loader's error
//! (file, line, key) is reported. Editors of one config directory are serialised by a lock
//! on the directory.

pub(crate) mod doc;
pub(crate) mod set;

use postern_lib::config::{Config, Service};
use std::path::Path;
use std::process::ExitCode;

/// The fields of a master.toml `[[service]]` entry.
pub(crate) const SERVICE_FIELDS: &[&str] = &[
    "name",
    "type",
    "listen",
    "command",
    "args",
    "unprivileged",
    "maxproc",
    "min_procs",
    "max_use",
    "max_idle",
    "max_conns",
    "wakeup",
    "options",
];

/// Runs `postern config ARGS`.
pub fn run(dir: &Path, rest: &[String]) -> Result<ExitCode, String> {
    match rest.split_first() {
        Some((cmd, assignments)) if cmd == "set" => set::run(dir, assignments),
        Some((cmd, keys)) if cmd == "--doc" => doc::run(dir, keys),
        _ => show(dir, rest),
    }
}

/// What a KEY on the command line names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// A main.toml setting.
    Main(&'a str),
    /// A master.toml entry, or one field of it (`options.KEY` for an override).
    Service {
        name: &'a str,
        kind: &'a str,
        field: Option<&'a str>,
    },
}

impl Target<'_> {
    pub(crate) fn parse(key: &str) -> Result<Target<'_>, String> {
        let Some((name, rest)) = key.split_once('/') else {
            return Ok(Target::Main(key));
        };
        let (kind, field) = match rest.split_once('.') {
            Some((k, f)) => (k, Some(f)),
            None => (rest, None),
        };
        if name.is_empty() || !matches!(kind, "inet" | "unix") {
            return Err(format!(
                "{key:?}: expected NAME/TYPE or NAME/TYPE.FIELD with TYPE inet or unix"
            ));
        }
        if let Some(f) = field {
            let base = f.split_once('.').map_or(f, |(b, _)| b);
            if !SERVICE_FIELDS.contains(&base) || (base != "options" && f != base) {
                return Err(format!(
                    "{key:?}: unknown field {f:?} of a master.toml service (fields: {})",
                    SERVICE_FIELDS.join(", ")
                ));
            }
        }
        Ok(Target::Service { name, kind, field })
    }
}

fn show(dir: &Path, keys: &[String]) -> Result<ExitCode, String> {
    let cfg = Config::load(dir).map_err(|e| e.to_string())?;
    let main = toml::Table::try_from(&cfg.main).map_err(|e| format!("cannot render settings: {e}"))?;
    let mut out = String::new();
    if keys.is_empty() {
        let mut names: Vec<&String> = main.keys().collect();
        names.sort();
        for name in names {
            out.push_str(&assignment(name, &main[name.as_str()])?);
        }
    }
    for key in keys {
        match Target::parse(key)? {
            Target::Main(name) => {
                let value = main.get(name).ok_or_else(|| {
                    format!(
                        "unknown setting {name:?}{}",
                        postern_lib::config::did_you_mean(name, main.keys().map(String::as_str))
                    )
                })?;
                out.push_str(&assignment(name, value)?);
            }
            Target::Service { name, kind, field } => {
                let svc_key = format!("{name}/{kind}");
                let svc = cfg
                    .service(&svc_key)
                    .ok_or_else(|| format!("no service {svc_key} in master.toml"))?;
                let table = effective_entry(svc)?;
                match field {
                    None => {
                        out.push_str("[[service]]\n");
                        for field in SERVICE_FIELDS {
                            if let Some(value) = table.get(*field) {
                                out.push_str(&assignment(field, value)?);
                            }
                        }
                    }
                    Some(f) => {
                        let value = match f.split_once('.') {
                            Some((_, opt)) => {
                                let m = cfg.main_for(&svc_key).map_err(|e| e.to_string())?;
                                let m =
                                    toml::Table::try_from(&m).map_err(|e| format!("cannot render settings: {e}"))?;
                                m.get(opt).cloned().ok_or_else(|| format!("unknown setting {opt:?}"))?
                            }
                            None => table
                                .get(f)
                                .cloned()
                                .unwrap_or_else(|| toml::Value::Table(toml::Table::new())),
                        };
                        out.push_str(&assignment(key, &value)?);
                    }
                }
            }
        }
    }
    crate::files::print(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// `key = value\n` with the value in TOML syntax.
fn assignment(key: &str, value: &toml::Value) -> Result<String, String> {
    let mut text = String::new();
    serde::Serialize::serialize(value, toml::ser::ValueSerializer::new(&mut text))
        .map_err(|e| format!("cannot render {key}: {e}"))?;
    Ok(format!("{key} = {text}\n"))
}

/// A service entry with the limits it gets from main.toml filled in.
fn effective_entry(svc: &Service) -> Result<toml::Table, String> {
    let err = |e: toml::ser::Error| format!("cannot render {}: {e}", svc.key());
    let mut t = toml::Table::try_from(&svc.entry).map_err(err)?;
    let listen = match svc.listen.as_slice() {
        [one] => toml::Value::String(one.clone()),
        many => toml::Value::Array(many.iter().cloned().map(toml::Value::String).collect()),
    };
    t.insert("listen".into(), listen);
    for (k, v) in [
        ("maxproc", svc.maxproc),
        ("max_use", svc.max_use),
        ("max_conns", svc.max_conns),
    ] {
        t.insert(k.into(), toml::Value::Integer(i64::from(v)));
    }
    t.insert("max_idle".into(), toml::Value::String(svc.max_idle.to_string()));
    if svc.entry.options.is_empty() {
        t.remove("options");
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("myhostname"), Ok(Target::Main("myhostname")));
        assert_eq!(
            Target::parse("smtp/inet"),
            Ok(Target::Service {
                name: "smtp",
                kind: "inet",
                field: None
            })
        );
        assert_eq!(
            Target::parse("smtp.x/unix.options.message_size_limit"),
            Ok(Target::Service {
                name: "smtp.x",
                kind: "unix",
                field: Some("options.message_size_limit")
            })
        );
        assert!(
            Target::parse("smtp/tcp.listen")
                .unwrap_err()
                .contains("TYPE inet or unix")
        );
        assert!(
            Target::parse("smtp/inet.lisen")
                .unwrap_err()
                .contains("unknown field \"lisen\"")
        );
        assert!(Target::parse("smtp/inet.listen.x").is_err());
        assert!(Target::parse("/inet").is_err());
    }
}
