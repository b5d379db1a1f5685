//! Alias expansion: a local name to the targets it finally stands for.

use std::collections::HashSet;

use postern_lib::aliases::Aliases;

/// Deepest alias nesting.
pub const MAX_DEPTH: usize = 20;
/// Most targets one recipient may expand to.
pub const MAX_TARGETS: usize = 1000;

/// Where an expanded alias delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A local user (mailbox name, lower-case).
    User(String),
    /// Append to a file (mbox style).
    File(String),
    /// Pipe to a command (not supported yet).
    Command(String),
    /// `:include:` (not supported yet).
    Include(String),
    /// An address in another domain (re-injection not supported yet).
    Remote(String),
}

/// One final target, with the envelope sender its delivery uses (`owner-` aliases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What and where.
    pub kind: Kind,
    /// `Some(owner-NAME@myorigin)` when an owner alias applies.
    pub owner: Option<String>,
}

/// The first table that has `name`.
fn lookup<'a>(tables: &'a [Aliases], name: &str) -> Option<&'a [String]> {
    tables.iter().find_map(|t| t.get(name))
}

/// Expands the local part `name` (already lower-case; `ext_base` is the name without its
/// address extension, tried when `name` itself is no alias). `is_local(domain)` says
/// whether a domain is ours.
pub fn expand(
    tables: &[Aliases],
    name: &str,
    ext_base: Option<&str>,
    myorigin: &str,
    is_local: &dyn Fn(&str) -> bool,
) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let key = if lookup(tables, name).is_some() {
        name
    } else {
        ext_base.filter(|b| lookup(tables, b).is_some()).unwrap_or(name)
    };
    walk(tables, key, 0, &mut seen, &mut out, None, myorigin, is_local)?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn walk(
    tables: &[Aliases],
    name: &str,
    depth: usize,
    seen: &mut HashSet<String>,
    out: &mut Vec<Target>,
    owner: Option<String>,
    myorigin: &str,
    is_local: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("alias nesting deeper than {MAX_DEPTH} at {name}"));
    }
    let push = |out: &mut Vec<Target>, kind: Kind, owner: &Option<String>| -> Result<(), String> {
        if out.len() >= MAX_TARGETS {
            return Err(format!("alias expands to more than {MAX_TARGETS} targets"));
        }
        if !out.iter().any(|t| t.kind == kind) {
            out.push(Target {
                kind,
                owner: owner.clone(),
            });
        }
        Ok(())
    };
    let Some(targets) = lookup(tables, name) else {
        return push(out, Kind::User(name.to_string()), &owner);
    };
    if !seen.insert(name.to_string()) {
        // Already expanded on this path or another: a loop or a duplicate; nothing more.
        return Ok(());
    }
    let owner_name = format!("owner-{name}");
    let owner = if lookup(tables, &owner_name).is_some() {
        Some(format!("{owner_name}@{myorigin}"))
    } else {
        owner
    };
    for t in targets {
        let t = t.trim().trim_matches('"');
        if let Some(cmd) = t.strip_prefix('|') {
            push(out, Kind::Command(cmd.to_string()), &owner)?;
        } else if t.starts_with('/') {
            push(out, Kind::File(t.to_string()), &owner)?;
        } else if let Some(inc) = t.strip_prefix(":include:") {
            push(out, Kind::Include(inc.to_string()), &owner)?;
        } else {
            let local = match t.rsplit_once('@') {
                Some((l, d)) if is_local(&d.trim_end_matches('.').to_lowercase()) => l.to_lowercase(),
                Some(_) => {
                    push(out, Kind::Remote(t.to_string()), &owner)?;
                    continue;
                }
                None => t.to_lowercase(),
            };
            if local == name {
                push(out, Kind::User(local), &owner)?;
            } else {
                walk(tables, &local, depth + 1, seen, out, owner.clone(), myorigin, is_local)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(t: &[Target]) -> Vec<String> {
        t.iter()
            .map(|t| match &t.kind {
                Kind::User(u) => u.clone(),
                Kind::File(f) => format!("file:{f}"),
                Kind::Remote(r) => format!("remote:{r}"),
                Kind::Command(c) => format!("cmd:{c}"),
                Kind::Include(i) => format!("inc:{i}"),
            })
            .collect()
    }

    #[test]
    fn expands_recursively_with_loops_and_owner() {
        let a = Aliases::parse(
            "staff: alice, bob@example.test, ops\nops: carol, staff\nowner-staff: alice\n\
             self: self, dave\nremote: x@other.org\nlog: /tmp/log, |cmd\n",
        )
        .unwrap();
        let is_local = |d: &str| d == "example.test";
        let t = expand(std::slice::from_ref(&a), "staff", None, "example.test", &is_local).unwrap();
        assert_eq!(users(&t), vec!["alice", "bob", "carol"]);
        assert!(t.iter().all(|t| t.owner.as_deref() == Some("owner-staff@example.test")));
        let t = expand(std::slice::from_ref(&a), "self", None, "example.test", &is_local).unwrap();
        assert_eq!(users(&t), vec!["self", "dave"]);
        let t = expand(std::slice::from_ref(&a), "nobody", None, "example.test", &is_local).unwrap();
        assert_eq!(users(&t), vec!["nobody"]);
        let t = expand(
            std::slice::from_ref(&a),
            "staff+x",
            Some("staff"),
            "example.test",
            &is_local,
        )
        .unwrap();
        assert_eq!(users(&t).len(), 3);
        let t = expand(std::slice::from_ref(&a), "remote", None, "example.test", &is_local).unwrap();
        assert_eq!(users(&t), vec!["remote:x@other.org"]);
        let t = expand(&[a], "log", None, "example.test", &is_local).unwrap();
        assert_eq!(users(&t), vec!["file:/tmp/log", "cmd:cmd"]);
    }
}
