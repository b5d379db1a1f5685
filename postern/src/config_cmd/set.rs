//! `postern config set`: edits main.toml and master.toml in place with toml_edit, so that
//! comments and layout stay; validates the result before anything is written.
//!
//! Security stance: the files are replaced only after the edited texts load cleanly
//! (validated from a private temporary copy of the config directory), each by an atomic
//! rename that keeps its mode and owner; concurrent editors are serialised by a lock on the
//! config directory. An invalid assignment leaves both files byte-identical.

use super::Target;
use crate::files::{DirLock, write_atomic};
use postern_lib::config::{Config, MAIN_FILE, MASTER_FILE, MainConfig};
use std::path::Path;
use std::process::ExitCode;
use toml_edit::{DocumentMut, InlineTable, Item, TableLike, Value};

/// What type a setting has, for the conveniences of unquoted values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A string: a number or boolean is taken as its text.
    Text,
    /// A list: a string is split at commas and white space.
    List,
    /// A list of words (command arguments): a string is split at white space.
    Words,
    /// Anything else: taken as parsed.
    Other,
}

/// Runs `postern config set ASSIGNMENT...`.
pub fn run(dir: &Path, assignments: &[String]) -> Result<ExitCode, String> {
    if assignments.is_empty() {
        return Err("config set: expected KEY=VALUE or NAME/TYPE.FIELD=VALUE".into());
    }
    let _lock = DirLock::exclusive(dir)?;
    let main_path = dir.join(MAIN_FILE);
    let master_path = dir.join(MASTER_FILE);
    let main_text = read(&main_path)?;
    let master_text = read(&master_path)?;
    let mut main_doc = parse_doc(&main_path, &main_text)?;
    let mut master_doc: Option<DocumentMut> = None;
    let defaults = toml::Table::try_from(MainConfig::default()).map_err(|e| format!("cannot list settings: {e}"))?;
    let main_shape = |key: &str| -> Result<Shape, String> {
        let value = defaults.get(key).ok_or_else(|| {
            format!(
                "{}: unknown setting {key:?}{}; no file was changed",
                main_path.display(),
                postern_lib::config::did_you_mean(key, defaults.keys().map(String::as_str))
            )
        })?;
        Ok(match value {
            toml::Value::String(_) => Shape::Text,
            toml::Value::Array(_) => Shape::List,
            _ => Shape::Other,
        })
    };

    for a in assignments {
        let (key, raw) = a.split_once('=').ok_or_else(|| format!("{a:?} is not KEY=VALUE"))?;
        let key = key.trim();
        match Target::parse(key)? {
            Target::Main(name) => {
                let value = parse_value(raw, main_shape(name)?);
                set_value(main_doc.as_table_mut(), name, value);
            }
            Target::Service { field: None, .. } => {
                return Err(format!("{key:?}: name a field, e.g. {key}.listen=VALUE"));
            }
            Target::Service {
                name,
                kind,
                field: Some(field),
            } => {
                let doc = match &mut master_doc {
                    Some(d) => d,
                    None => master_doc.insert(parse_doc(&master_path, &master_text)?),
                };
                let entry = find_service(doc, name, kind).ok_or_else(|| {
                    format!(
                        "{}: no service {name}/{kind}; no file was changed",
                        master_path.display()
                    )
                })?;
                match field.split_once('.') {
                    Some((_, opt)) => {
                        let value = parse_value(raw, main_shape(opt)?);
                        if entry.get("options").and_then(Item::as_table_like).is_none() {
                            entry.insert("options", Item::Value(Value::InlineTable(InlineTable::new())));
                        }
                        let options = entry.get_mut("options").and_then(Item::as_table_like_mut);
                        let options =
                            options.ok_or_else(|| format!("{key}: options of {name}/{kind} is not a table"))?;
                        set_value(options, opt, value);
                    }
                    None => {
                        let shape = match field {
                            "name" | "type" | "command" | "listen" => Shape::Text,
                            "args" => Shape::Words,
                            _ => Shape::Other,
                        };
                        set_value(entry, field, parse_value(raw, shape));
                    }
                }
            }
        }
    }

    let new_main = main_doc.to_string();
    let new_master = master_doc.map_or_else(|| master_text.clone(), |d| d.to_string());
    validate(dir, &new_main, &new_master)?;
    if new_main != main_text {
        write_atomic(&main_path, new_main.as_bytes(), 0o644)?;
    }
    if new_master != master_text {
        write_atomic(&master_path, new_master.as_bytes(), 0o644)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn parse_doc(path: &Path, text: &str) -> Result<DocumentMut, String> {
    text.parse::<DocumentMut>().map_err(|e| {
        let line = e
            .span()
            .map(|s| text.bytes().take(s.start).filter(|&b| b == b'\n').count() + 1);
        let at = line.map(|l| format!(":{l}")).unwrap_or_default();
        format!("{}{at}: not valid TOML: {}", path.display(), e.message())
    })
}

/// The `[[service]]` table with this name and type (an array of tables, or an inline array
/// of inline tables).
fn find_service<'d>(doc: &'d mut DocumentMut, name: &str, kind: &str) -> Option<&'d mut dyn TableLike> {
    let is_it = |t: &dyn TableLike| {
        t.get("name").and_then(Item::as_str) == Some(name) && t.get("type").and_then(Item::as_str) == Some(kind)
    };
    match doc.get_mut("service")? {
        Item::ArrayOfTables(tables) => tables.iter_mut().find(|t| is_it(*t)).map(|t| t as &mut dyn TableLike),
        Item::Value(Value::Array(array)) => array
            .iter_mut()
            .filter_map(Value::as_inline_table_mut)
            .find(|t| is_it(*t))
            .map(|t| t as &mut dyn TableLike),
        _ => None,
    }
}

/// Parses the text after `=`: a TOML value, else a string; then the shape's conveniences.
fn parse_value(raw: &str, shape: Shape) -> Value {
    let raw = raw.trim();
    let list = |c: char| c == ',' || c.is_whitespace();
    let mut value = match raw.parse::<Value>() {
        Ok(v @ (Value::Array(_) | Value::InlineTable(_))) => v,
        Ok(Value::String(s)) => match shape {
            Shape::List => split(s.value(), list),
            Shape::Words => split(s.value(), char::is_whitespace),
            Shape::Text | Shape::Other => Value::String(s),
        },
        Ok(v) if shape == Shape::Other => v,
        _ => match shape {
            Shape::List => split(raw, list),
            Shape::Words => split(raw, char::is_whitespace),
            Shape::Text | Shape::Other => Value::from(raw),
        },
    };
    value.decor_mut().clear();
    value
}

fn split(text: &str, sep: impl Fn(char) -> bool) -> Value {
    Value::Array(text.split(sep).filter(|w| !w.is_empty()).collect())
}

/// Sets `key` in `table`, keeping the comments around an existing value.
fn set_value(table: &mut dyn TableLike, key: &str, mut value: Value) {
    match table.get_mut(key) {
        Some(item) => {
            if let Some(old) = item.as_value() {
                *value.decor_mut() = old.decor().clone();
            }
            *item = Item::Value(value);
        }
        None => {
            table.insert(key, Item::Value(value));
        }
    }
}

/// Loads the edited texts from a private temporary copy of the config directory; the
/// loader's error, with the real directory's name in it, when they are not valid.
fn validate(dir: &Path, main: &str, master: &str) -> Result<(), String> {
    let tmp = tempfile::Builder::new()
        .prefix("postern-config-set.")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory to check the result: {e}"))?;
    let etc = tmp.path().join("etc");
    let write = |name: &str, text: &str| std::fs::write(etc.join(name), text);
    std::fs::create_dir(&etc)
        .and_then(|()| write(MAIN_FILE, main))
        .and_then(|()| write(MASTER_FILE, master))
        .map_err(|e| format!("cannot write a temporary copy to check the result: {e}"))?;
    match Config::load(&etc) {
        Ok(_) => Ok(()),
        Err(e) => {
            let real = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            let msg = e
                .to_string()
                .replace(&etc.display().to_string(), &real.display().to_string());
            Err(format!("{msg}; no file was changed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(raw: &str, shape: Shape) -> String {
        parse_value(raw, shape).to_string()
    }

    #[test]
    fn values() {
        assert_eq!(shown("mx.example.test", Shape::Text), "\"mx.example.test\"");
        assert_eq!(shown("\"quoted\"", Shape::Text), "\"quoted\"");
        assert_eq!(shown("2048", Shape::Other), "2048");
        assert_eq!(shown("2048", Shape::Text), "\"2048\"");
        assert_eq!(shown("127.0.0.1:30025", Shape::Text), "\"127.0.0.1:30025\"");
        assert_eq!(shown("[\"127.0.0.2/32\"]", Shape::List), "[\"127.0.0.2/32\"]");
        assert_eq!(
            shown("example.test, localhost", Shape::List),
            "[\"example.test\", \"localhost\"]"
        );
        assert_eq!(shown("-v -o x", Shape::Words), "[\"-v\", \"-o\", \"x\"]");
        assert_eq!(shown("\"big\"", Shape::Other), "\"big\"");
        assert_eq!(shown("", Shape::Text), "\"\"");
        assert_eq!(shown(" true ", Shape::Other), "true");
    }

    #[test]
    fn edits_keep_comments() {
        let mut doc: DocumentMut = "# top\nmyhostname = \"a.b\" # trailing\n\n# about size\nmessage_size_limit = 1\n"
            .parse()
            .unwrap();
        set_value(
            doc.as_table_mut(),
            "myhostname",
            parse_value("mx.example.test", Shape::Text),
        );
        set_value(
            doc.as_table_mut(),
            "message_size_limit",
            parse_value("2048", Shape::Other),
        );
        set_value(
            doc.as_table_mut(),
            "relayhost",
            parse_value("[relay.example.test]:25", Shape::Text),
        );
        assert_eq!(
            doc.to_string(),
            "# top\nmyhostname = \"mx.example.test\" # trailing\n\n# about size\nmessage_size_limit = 2048\nrelayhost = \"[relay.example.test]:25\"\n"
        );
    }

    #[test]
    fn services_are_found_in_both_forms() {
        let mut doc: DocumentMut =
            "[[service]]\nname = \"smtp\"\ntype = \"inet\"\n\n[[service]]\nname = \"smtp\"\ntype = \"unix\"\n"
                .parse()
                .unwrap();
        let t = find_service(&mut doc, "smtp", "unix").unwrap();
        set_value(t, "command", parse_value("smtp", Shape::Text));
        assert!(
            doc.to_string().ends_with("type = \"unix\"\ncommand = \"smtp\"\n"),
            "{doc}"
        );
        assert!(find_service(&mut doc, "smtp", "nope").is_none());
        let mut doc: DocumentMut = "service = [{ name = \"a\", type = \"inet\" }]\n".parse().unwrap();
        let t = find_service(&mut doc, "a", "inet").unwrap();
        set_value(t, "listen", parse_value("2525", Shape::Text));
        let back: toml::Table = toml::from_str(&doc.to_string()).unwrap();
        assert_eq!(back["service"][0]["listen"].as_str(), Some("2525"));
    }
}
