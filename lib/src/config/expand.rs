//! `$name` and `${name}` references between string settings, as in Postfix's main.cf.
//!
//! Expansion works on the merged TOML table before it is turned into typed settings, so
//! every string and every string inside a list can refer to any other string setting.
//! References nest up to a fixed depth (a loop is an error, not a hang); `$$` is a literal
//! dollar sign.

use toml::{Table, Value};

const MAX_DEPTH: usize = 10;

/// Expands every string value of `table` in place. Returns (key, reason) on failure.
pub(super) fn expand_table(table: &mut Table) -> Result<(), (String, String)> {
    let snapshot = table.clone();
    for (key, value) in table.iter_mut() {
        expand_value(value, &snapshot, 0).map_err(|e| (key.clone(), e))?;
    }
    Ok(())
}

fn expand_value(value: &mut Value, vars: &Table, depth: usize) -> Result<(), String> {
    match value {
        Value::String(s) => *s = expand_str(s, vars, depth)?,
        Value::Array(items) => {
            for item in items {
                expand_value(item, vars, depth)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands references in one string.
pub(super) fn expand_str(text: &str, vars: &Table, depth: usize) -> Result<String, String> {
    if depth > MAX_DEPTH {
        return Err("references nest too deeply (a loop?)".into());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| format!("unterminated ${{ in {text:?}"))?;
            (&inner[..end], &inner[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            return Err(format!("a lone $ in {text:?} (write $$ for a dollar sign)"));
        }
        match vars.get(name) {
            Some(Value::String(v)) => out.push_str(&expand_str(v, vars, depth + 1)?),
            Some(_) => return Err(format!("${name} does not name a text setting")),
            None => return Err(format!("${name} names no setting")),
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_nested_and_refuses_loops() {
        let mut t: Table = toml::from_str(
            "myhostname = 'mx.example.test'\nmydomain = 'example.test'\nmyorigin = '$myhostname'\nmydestination = ['${mydomain}', 'localhost.$mydomain', 'x$$y']",
        )
        .unwrap();
        expand_table(&mut t).unwrap();
        assert_eq!(t["myorigin"].as_str(), Some("mx.example.test"));
        let d: Vec<_> = t["mydestination"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(d, ["example.test", "localhost.example.test", "x$y"]);
        let mut looped: Table = toml::from_str("a = '$b'\nb = '$a'").unwrap();
        assert!(expand_table(&mut looped).is_err());
        let mut unknown: Table = toml::from_str("a = '$nope'").unwrap();
        assert!(expand_table(&mut unknown).unwrap_err().1.contains("nope"));
    }
}
