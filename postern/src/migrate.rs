//! `postern migrate [--apply] [MAIN_CF]`: reads a Postfix `main.cf` (default
//! `/etc/postfix/main.cf`) and prints the `main.toml` equivalents of the settings it
//! recognises; with `--apply` it also writes them into this configuration's main.toml
//! through `postern config set` (comments kept, the result validated before any file
//! changes).
//!
//! A setting is recognised when main.toml has the same name: its value is converted by the
//! type main.toml gives it (`yes`/`no` → booleans, lists split at commas and white space,
//! Postfix times without a unit get that parameter's Postfix default unit, table types
//! such as `hash:` dropped because Postern reads the text file itself, `myorigin =
//! /etc/mailname` read from the file), and then checked exactly as `postern config set`
//! and smtpd would check it (restriction lists through smtpd's own parser). What cannot
//! be converted is printed as a comment with the reason, for the administrator to
//! review; settings that only concern Postfix's own machinery (`compatibility_level`,
//! `alias_database`, ...) are listed as not needed. Nothing is guessed silently.

use postern_lib::config::{Config, MAIN_FILE, MASTER_FILE, MainConfig};
use std::path::Path;
use std::process::ExitCode;

/// Postfix settings that Postern does not need at all (its design makes them moot).
const NOT_NEEDED: &[(&str, &str)] = &[
    ("compatibility_level", "Postern has one behaviour"),
    ("biff", "no comsat notification"),
    ("append_dot_mydomain", "addresses are canonicalised by trivial-rewrite"),
    ("readme_directory", "documentation is the README"),
    ("html_directory", "documentation is the README"),
    ("manpage_directory", "documentation is the README"),
    ("sample_directory", "documentation is the README"),
    (
        "alias_database",
        "alias files are read directly; no newaliases compile step",
    ),
    ("inet_protocols", "the listen addresses in master.toml decide"),
    ("smtpd_tls_session_cache_database", "no session cache database"),
    ("smtp_tls_session_cache_database", "no session cache database"),
    ("data_directory", "state lives in the queue directory"),
    ("command_directory", "set by `postern install --prefix`"),
    ("setgid_group", "postdrop's group is made by `postern install`"),
    ("mailbox_size_limit", "quotas are per user in etc/users"),
    ("smtp_tls_CApath", "the system's trust anchors are used"),
    ("smtpd_sasl_type", "AUTH is checked by Postern's own auth daemon"),
    ("smtpd_sasl_path", "AUTH is checked by Postern's own auth daemon"),
];

/// What to do instead, for Postfix settings that live elsewhere in Postern.
const HINTS: &[(&str, &str)] = &[
    (
        "inet_interfaces",
        "listen addresses are per service in master.toml: postern config set 'smtp/inet.listen=ADDR:25'",
    ),
    (
        "mailbox_command",
        "deliver through an alias or .forward |command instead",
    ),
    (
        "virtual_mailbox_domains",
        "list the domains in mydestination; users in etc/users",
    ),
    (
        "smtpd_tls_chain_files",
        "use smtpd_tls_cert_file and smtpd_tls_key_file",
    ),
];

/// Postfix's default unit of time settings given without one (`s` for the rest).
const TIME_UNITS: &[(&str, char)] = &[
    ("maximal_queue_lifetime", 'd'),
    ("bounce_queue_lifetime", 'd'),
    ("delay_warning_time", 'h'),
];

/// Postfix's built-in values that main.cf files refer to but main.toml has no setting for.
const CONSTANTS: &[(&str, &str)] = &[("mail_name", "Postern")];

/// Table types whose source is a plain text file Postern reads as it is.
const TEXT_TABLE_TYPES: &[&str] = &["hash", "lmdb", "btree", "cdb", "dbm", "texthash", "sdbm"];

/// One converted setting, or why it could not be.
enum Outcome {
    /// `key = value`, value in TOML syntax.
    Converted(String, String),
    /// Left out on purpose.
    NotNeeded(String, String, &'static str),
    /// Needs a human.
    Unsupported(String, String, String),
}

/// Runs the command: `rest` is `[--apply] [MAIN_CF]`.
pub fn run(dir: &Path, rest: &[String]) -> Result<ExitCode, String> {
    let apply = rest.iter().any(|a| a == "--apply");
    let files: Vec<&String> = rest.iter().filter(|a| *a != "--apply").collect();
    let path = match files.as_slice() {
        [] => Path::new("/etc/postfix/main.cf"),
        [p] => Path::new(p.as_str()),
        [_, extra, ..] => return Err(format!("migrate: unexpected argument {extra:?}")),
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("migrate: {}: {e}", path.display()))?;
    let outcomes = convert(&text)?;
    print!("{}", render(path, &outcomes));
    if apply {
        let assignments: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Converted(k, v) => Some(format!("{k}={v}")),
                _ => None,
            })
            .collect();
        if !assignments.is_empty() {
            crate::config_cmd::set::run(dir, &assignments)?;
            eprintln!(
                "postern: migrate: wrote {} settings into {}",
                assignments.len(),
                dir.join(MAIN_FILE).display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Converts every setting of a main.cf text, in file order (a later duplicate wins, as
/// in Postfix).
fn convert(text: &str) -> Result<Vec<Outcome>, String> {
    let defaults = toml::Table::try_from(MainConfig::default()).map_err(|e| format!("cannot list settings: {e}"))?;
    let settings = parse_main_cf(text);
    let mut out: Vec<Outcome> = Vec::new();
    for (key, value) in &settings {
        let outcome = match (NOT_NEEDED.iter().find(|(k, _)| k == key), defaults.get(key)) {
            (Some((_, why)), _) => Outcome::NotNeeded(key.clone(), value.clone(), why),
            (None, None) if value.is_empty() => Outcome::NotNeeded(key.clone(), value.clone(), "empty"),
            (None, None) => {
                let why = HINTS
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or("no such setting in Postern", |(_, h)| h);
                Outcome::Unsupported(key.clone(), value.clone(), why.into())
            }
            (None, Some(default)) => match convert_value(key, value, default, &settings) {
                Ok(v) => match check(key, &v) {
                    Ok(()) => Outcome::Converted(key.clone(), v),
                    Err(e) => Outcome::Unsupported(key.clone(), value.clone(), e),
                },
                Err(e) => Outcome::Unsupported(key.clone(), value.clone(), e),
            },
        };
        out.retain(|o| outcome_key(o) != key);
        out.push(outcome);
    }
    Ok(out)
}

fn outcome_key(o: &Outcome) -> &str {
    match o {
        Outcome::Converted(k, _) | Outcome::NotNeeded(k, _, _) | Outcome::Unsupported(k, _, _) => k,
    }
}

/// main.cf's logical lines: `name = value`, a line starting with white space continues
/// the previous one, `#` at the start of a line is a comment.
fn parse_main_cf(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(trimmed);
            }
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Converts one value to TOML text by the type of main.toml's default for `key`.
fn convert_value(key: &str, raw: &str, default: &toml::Value, all: &[(String, String)]) -> Result<String, String> {
    let raw = expand_constants(raw, all)?;
    let value = match default {
        toml::Value::Boolean(_) => match raw.as_str() {
            "yes" | "true" => toml::Value::Boolean(true),
            "no" | "false" => toml::Value::Boolean(false),
            other => return Err(format!("{other:?} is not yes or no")),
        },
        toml::Value::Integer(_) => {
            let n: i64 = raw.parse().map_err(|_| format!("{raw:?} is not a whole number"))?;
            toml::Value::Integer(n)
        }
        toml::Value::String(d) if is_time(d) => toml::Value::String(time(key, &raw)?),
        toml::Value::String(_) if key == "myorigin" && raw.starts_with('/') => {
            let name = std::fs::read_to_string(&raw).map_err(|e| format!("cannot read {raw}: {e}"))?;
            toml::Value::String(name.trim().to_string())
        }
        toml::Value::String(_) => toml::Value::String(strip_table_type(&raw)?),
        toml::Value::Array(_) => {
            let words = raw.split([',', ' ', '\t']).filter(|w| !w.is_empty());
            let mut items = Vec::new();
            for w in words {
                items.push(toml::Value::String(strip_table_type(w)?));
            }
            toml::Value::Array(items)
        }
        other => return Err(format!("settings of type {} are not converted", other.type_str())),
    };
    Ok(value.to_string())
}

/// Replaces references to Postfix constants main.toml does not have (`$mail_name`);
/// a reference to any other setting main.toml lacks is an error.
fn expand_constants(raw: &str, all: &[(String, String)]) -> Result<String, String> {
    let mut text = raw.to_string();
    for (name, value) in CONSTANTS {
        text = text
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    let defaults = toml::Table::try_from(MainConfig::default()).map_err(|e| e.to_string())?;
    let mut rest = text.as_str();
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !defaults.contains_key(&name) {
            let hint = if all.iter().any(|(k, _)| *k == name) {
                "set in main.cf but not a Postern setting"
            } else {
                "a Postfix built-in"
            };
            return Err(format!("refers to ${name} ({hint})"));
        }
    }
    Ok(text)
}

/// `hash:/etc/aliases` → `/etc/aliases`; database types Postern cannot read are refused.
fn strip_table_type(word: &str) -> Result<String, String> {
    match word.split_once(':') {
        Some((ty, path)) if path.starts_with('/') && TEXT_TABLE_TYPES.contains(&ty) => Ok(path.to_string()),
        Some((ty, path)) if path.starts_with('/') && matches!(ty, "regexp" | "pcre") => Ok(word.to_string()),
        Some((ty, _))
            if ty.chars().all(|c| c.is_ascii_lowercase()) && !matches!(ty, "inet" | "unix" | "error" | "local") =>
        {
            Err(format!("{ty}: tables are not supported"))
        }
        _ => Ok(word.to_string()),
    }
}

fn is_time(default: &str) -> bool {
    default.len() > 1
        && default.ends_with(['s', 'm', 'h', 'd', 'w'])
        && default[..default.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

/// A Postfix time value in main.toml's form: a bare number gets the parameter's unit.
fn time(key: &str, raw: &str) -> Result<String, String> {
    let unit = TIME_UNITS.iter().find(|(k, _)| *k == key).map_or('s', |(_, u)| *u);
    let text = if raw.bytes().all(|b| b.is_ascii_digit()) {
        format!("{raw}{unit}")
    } else {
        raw.to_string()
    };
    postern_lib::config::Seconds::parse(&text).map(|_| text.clone())
}

/// Checks one converted setting as main.toml's loader and smtpd would.
fn check(key: &str, value: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let text = format!("{key} = {value}\n");
    // Settings that must be consistent with others are checked against the defaults,
    // so a lone value that is fine only with other changes is still reported.
    let required = if key == "myhostname" {
        ""
    } else {
        "myhostname = \"mail.example.com\"\n"
    };
    Config::load_texts(dir.path(), &format!("{required}{text}"), "").map_err(|e| {
        e.to_string()
            .replace(&dir.path().join(MAIN_FILE).display().to_string(), "main.toml")
    })?;
    let _ = MASTER_FILE;
    if key.starts_with("smtpd_") && key.ends_with("_restrictions") {
        let items: Vec<String> = toml::from_str::<toml::Table>(&text)
            .ok()
            .and_then(|t| t.get(key).cloned())
            .and_then(|v| v.try_into().ok())
            .unwrap_or_default();
        let mut load = |file: &str| {
            let body = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            smtpd_engine::protocol::policy::AccessTable::parse(&body).map_err(|(line, e)| format!("{file}:{line}: {e}"))
        };
        smtpd_engine::protocol::policy::parse_list(&items, &mut load)?;
    }
    Ok(())
}

/// The report: the TOML to paste, then the settings left out and why.
fn render(path: &Path, outcomes: &[Outcome]) -> String {
    let mut s = format!("# main.toml equivalents of {} (postern migrate)\n", path.display());
    for o in outcomes {
        if let Outcome::Converted(k, v) = o {
            s.push_str(&format!("{k} = {v}\n"));
        }
    }
    let mut section = |title: &str, pick: &dyn Fn(&Outcome) -> Option<String>| {
        let lines: Vec<String> = outcomes.iter().filter_map(pick).collect();
        if !lines.is_empty() {
            s.push_str(&format!("\n# {title}\n"));
            for l in lines {
                s.push_str(&format!("#   {l}\n"));
            }
        }
    };
    section("Not converted, review by hand:", &|o| match o {
        Outcome::Unsupported(k, v, why) => Some(format!("{k} = {v}    ({why})")),
        _ => None,
    });
    section("Not needed by Postern:", &|o| match o {
        Outcome::NotNeeded(k, v, why) => Some(format!("{k} = {v}    ({why})")),
        _ => None,
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converted(text: &str) -> Vec<(String, String)> {
        convert(text)
            .unwrap()
            .into_iter()
            .filter_map(|o| match o {
                Outcome::Converted(k, v) => Some((k, v)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn continuation_lines_and_comments() {
        let s = parse_main_cf("# c\nmydestination = a,\n  b\n\trelay.example\nx=1\n");
        assert_eq!(
            s,
            vec![
                ("mydestination".to_string(), "a, b relay.example".to_string()),
                ("x".to_string(), "1".to_string())
            ]
        );
    }

    #[test]
    fn types_follow_main_toml() {
        let got = converted(
            "smtpd_sasl_auth_enable = yes\nmessage_size_limit = 20480000\nmaximal_queue_lifetime = 3\n\
             delay_warning_time = 4\nsmtpd_timeout = 60\nalias_maps = hash:/etc/aliases\n\
             mynetworks = 127.0.0.0/8 [::1]/128\nsmtpd_banner = $myhostname ESMTP $mail_name\n",
        );
        let want = [
            ("smtpd_sasl_auth_enable", "true"),
            ("message_size_limit", "20480000"),
            ("maximal_queue_lifetime", "\"3d\""),
            ("delay_warning_time", "\"4h\""),
            ("smtpd_timeout", "\"60s\""),
            ("alias_maps", "[\"/etc/aliases\"]"),
            ("mynetworks", "[\"127.0.0.0/8\", \"[::1]/128\"]"),
            ("smtpd_banner", "\"$myhostname ESMTP Postern\""),
        ];
        let want: Vec<(String, String)> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn unsupported_values_are_reported_not_converted() {
        let out = convert(
            "alias_maps = mysql:/etc/postfix/a.cf\nsmtpd_relay_restrictions = permit_mynetworks reject_unverified_recipient\n\
             smtpd_banner = $myhostname $data_directory\nsoft_bounce = yes\nbiff = no\nsmtpd_sasl_auth_enable = maybe\n",
        )
        .unwrap();
        let text = render(Path::new("main.cf"), &out);
        assert!(!text.lines().any(|l| !l.starts_with('#') && !l.is_empty()), "{text}");
        assert!(
            text.contains("alias_maps = mysql:/etc/postfix/a.cf    (mysql: tables are not supported)"),
            "{text}"
        );
        assert!(
            text.contains("(unknown restriction \"reject_unverified_recipient\")"),
            "{text}"
        );
        assert!(text.contains("refers to $data_directory"), "{text}");
        assert!(
            text.contains("soft_bounce = yes    (no such setting in Postern)"),
            "{text}"
        );
        assert!(text.contains("biff = no    (no comsat notification)"), "{text}");
        assert!(text.contains("\"maybe\" is not yes or no"), "{text}");
    }
}
