//! LIST and LSUB: RFC 3501's forms, LIST-EXTENDED (RFC 5258: selection options
//! SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE; return options SUBSCRIBED, CHILDREN,
//! SPECIAL-USE; several patterns), LIST-STATUS (RFC 5819: `RETURN (STATUS (...))`) and
//! the attributes `\HasChildren`/`\HasNoChildren`, RFC 6154's special-use ones,
//! `\Subscribed`, and `\NonExistent` (or `\Noselect` in a plain RFC 3501 LIST) for names
//! that are only hierarchy levels or subscriptions. LSUB with a final `%` lists the
//! unsubscribed parents of subscribed names as `\Noselect` (RFC 3501 §6.3.9); RECURSIVEMATCH
//! gives CHILDINFO only for subscribed descendants the patterns do not match themselves.

use crate::list_pattern::{MAX_PATTERN, Pattern, PatternError};
use crate::parse::{Arg, Command};
use crate::reply::astring;
use crate::session::{Reply, Session};
use postern_mailbox::SEPARATOR;
use std::collections::BTreeSet;

/// Most patterns in one LIST-EXTENDED command.
pub const MAX_PATTERNS: usize = 64;

/// One pattern (reference included), compiled as given and upper-cased (for INBOX, which
/// matches in any case), and whether it ends in `%` (RFC 3501 §6.3.8).
struct Compiled {
    exact: Pattern,
    upper: Pattern,
    final_percent: bool,
}

impl Compiled {
    fn new(full: &str) -> Result<Compiled, PatternError> {
        let sep = SEPARATOR as u8;
        Ok(Compiled {
            exact: Pattern::new(full.as_bytes(), sep)?,
            upper: Pattern::new(full.to_ascii_uppercase().as_bytes(), sep)?,
            final_percent: full.ends_with('%'),
        })
    }

    /// Whether `name` matches, INBOX in any case.
    fn hit(&self, name: &str) -> bool {
        self.exact.matches(name.as_bytes()) || name == "INBOX" && self.upper.matches(b"INBOX")
    }
}

/// The patterns of a command compiled, within [`MAX_PATTERNS`] and [`MAX_PATTERN`] bytes
/// in all; `NO [LIMIT]` otherwise.
fn compile(reference: &str, patterns: &[String], who: &str) -> Result<Vec<Compiled>, Reply> {
    let total: usize = patterns.iter().map(|p| reference.len() + p.len()).sum();
    if patterns.len() > MAX_PATTERNS || total > MAX_PATTERN {
        tracing::info!("LIST refused: {} patterns of {total} bytes, {who}", patterns.len());
        return Err(Reply::No(format!(
            "[LIMIT] LIST patterns too long: at most {MAX_PATTERNS} patterns of {MAX_PATTERN} bytes in all"
        )));
    }
    patterns
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| Compiled::new(&format!("{reference}{p}")))
        .collect::<Result<_, _>>()
        .map_err(|e| Reply::No(format!("[LIMIT] LIST {e}")))
}

/// What a LIST command asked for.
#[derive(Default)]
struct Options {
    /// The extended syntax was used (selection options, several patterns or RETURN).
    extended: bool,
    subscribed_only: bool,
    recursive: bool,
    special_only: bool,
    return_subscribed: bool,
    status: Option<Vec<Arg>>,
}

fn options(c: &Command) -> Result<(Options, String, Vec<String>), Reply> {
    let mut o = Options::default();
    let mut args = c.args.as_slice();
    if let Some(Arg::List(sel)) = args.first() {
        o.extended = true;
        for s in sel {
            match s.keyword().as_deref() {
                Some("SUBSCRIBED") => o.subscribed_only = true,
                Some("REMOTE") => {}
                Some("RECURSIVEMATCH") => o.recursive = true,
                Some("SPECIAL-USE") => o.special_only = true,
                _ => return Err(Reply::Bad("Unknown LIST selection option".into())),
            }
        }
        if o.recursive && !o.subscribed_only && !o.special_only {
            return Err(Reply::Bad("RECURSIVEMATCH needs another selection option".into()));
        }
        args = &args[1..];
    }
    let reference = args
        .first()
        .and_then(Arg::text)
        .ok_or(Reply::Bad("LIST needs a reference and a pattern".into()))?;
    let patterns = match args.get(1) {
        Some(Arg::List(ps)) => {
            o.extended = true;
            ps.iter().map(Arg::text).collect::<Option<Vec<String>>>()
        }
        Some(a) => a.text().map(|p| vec![p]),
        None => None,
    };
    let patterns = patterns
        .filter(|p| !p.is_empty())
        .ok_or(Reply::Bad("LIST needs a reference and a pattern".into()))?;
    match &args[2..] {
        [] => {}
        [ret, Arg::List(items)] if ret.keyword().as_deref() == Some("RETURN") => {
            o.extended = true;
            let mut i = 0;
            while let Some(item) = items.get(i) {
                match item.keyword().as_deref() {
                    Some("SUBSCRIBED") => o.return_subscribed = true,
                    Some("CHILDREN") | Some("SPECIAL-USE") => {}
                    Some("STATUS") => match items.get(i + 1) {
                        Some(Arg::List(st)) if !st.is_empty() => {
                            o.status = Some(st.clone());
                            i += 1;
                        }
                        _ => return Err(Reply::Bad("RETURN STATUS needs a list of items".into())),
                    },
                    _ => return Err(Reply::Bad("Unknown LIST return option".into())),
                }
                i += 1;
            }
        }
        _ => return Err(Reply::Bad("Invalid LIST arguments".into())),
    }
    if c.name == "LSUB" && o.extended {
        return Err(Reply::Bad("LSUB takes a reference and one pattern".into()));
    }
    Ok((o, reference, patterns))
}

/// `a.b.c` → `a`, `a.b`.
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices(SEPARATOR).map(move |(i, _)| &name[..i])
}

impl Session {
    pub(crate) fn list(&mut self, c: &Command) -> Result<(), Reply> {
        let cmd = c.name.as_str();
        let (o, reference, patterns) = options(c)?;
        if patterns.len() == 1 && patterns[0].is_empty() {
            self.line(&format!("* {cmd} (\\Noselect) \"{SEPARATOR}\" \"\""));
            self.ok(&c.tag, &format!("{cmd} completed"));
            return Ok(());
        }
        let full = compile(&reference, &patterns, &self.who())?;
        let hit = |name: &str| full.iter().any(|p| p.hit(name));
        // RFC 3501 §6.3.8: a hierarchy level that is no folder is listed when a pattern
        // ending in `%` matches it
        let level_hit = |name: &str| full.iter().any(|p| p.final_percent && p.hit(name));
        let store = self.store()?;
        let existing: BTreeSet<String> = store.list()?.into_iter().collect();
        let subs: BTreeSet<String> = store.subscriptions().into_iter().collect();
        let extended = o.extended || self.rev2;
        let lsub = cmd == "LSUB";
        let selecting_subs = o.subscribed_only || lsub;
        // candidates: the folders, the subscriptions, and every hierarchy level above them
        let mut names: BTreeSet<&str> = existing.iter().map(String::as_str).collect();
        names.extend(subs.iter().map(String::as_str));
        let levels: Vec<&str> = names.iter().flat_map(|n| ancestors(n)).collect();
        names.extend(levels);
        let has_child = |name: &str, set: &BTreeSet<String>| {
            let prefix = format!("{name}{SEPARATOR}");
            set.range(prefix.clone()..)
                .next()
                .is_some_and(|n| n.starts_with(&prefix))
        };
        let mut lines = Vec::new();
        let mut status_of = Vec::new();
        let mut ordered: Vec<&str> = names.into_iter().collect();
        // INBOX first, as clients expect
        if let Some(i) = ordered.iter().position(|n| *n == "INBOX") {
            let inbox = ordered.remove(i);
            ordered.insert(0, inbox);
        }
        for name in ordered {
            if !hit(name) {
                continue;
            }
            let exists = existing.contains(name);
            let subscribed = subs.contains(name);
            let special = if exists { store.special_uses(name) } else { Vec::new() };
            // RFC 5258 §3.5: CHILDINFO for a name with subscribed descendants that do not
            // match the patterns themselves (those that do are listed on their own)
            let childinfo = selecting_subs && o.recursive && {
                let prefix = format!("{name}{SEPARATOR}");
                subs.range(prefix.clone()..)
                    .take_while(|n| n.starts_with(&prefix))
                    .any(|n| !hit(n))
            };
            // RFC 3501 §6.3.9: LSUB with a final `%` lists the unsubscribed parent of a
            // subscribed name, as \Noselect
            let lsub_parent = lsub && !subscribed && level_hit(name) && has_child(name, &subs);
            let selected = if selecting_subs {
                subscribed || childinfo || lsub_parent
            } else if o.special_only {
                !special.is_empty()
            } else {
                exists || has_child(name, &existing) && level_hit(name)
            };
            if !selected {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if lsub_parent {
                attrs.push("\\Noselect");
            } else if !exists {
                attrs.push(if extended && !lsub {
                    "\\NonExistent"
                } else {
                    "\\Noselect"
                });
            }
            if !lsub {
                if has_child(name, &existing) {
                    attrs.push("\\HasChildren");
                } else if exists {
                    attrs.push("\\HasNoChildren");
                }
                attrs.extend(special.iter().copied());
                if subscribed && (o.subscribed_only || o.return_subscribed) {
                    attrs.push("\\Subscribed");
                }
            }
            let mut line = format!("* {cmd} ({}) \"{SEPARATOR}\" {}", attrs.join(" "), astring(name));
            if childinfo {
                line.push_str(" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            lines.push(line);
            if o.status.is_some() && exists {
                status_of.push((lines.len(), name.to_string()));
            }
        }
        // LIST-STATUS: each STATUS right after its LIST line
        let mut statuses = Vec::new();
        if let Some(items) = &o.status {
            for (at, name) in &status_of {
                if let Ok(folder) = store.folder(name) {
                    statuses.push((
                        *at,
                        format!("* STATUS {} ({})", astring(name), self.status_items(&folder, items)?),
                    ));
                }
            }
        }
        let mut next = statuses.into_iter().peekable();
        for (i, l) in lines.into_iter().enumerate() {
            self.line(&l);
            while let Some((_, s)) = next.next_if(|(at, _)| *at == i + 1) {
                self.line(&s);
            }
        }
        self.ok(&c.tag, &format!("{cmd} completed"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Compiled, ancestors, compile};

    #[test]
    fn list_patterns() {
        let c = Compiled::new("inbox").unwrap();
        assert!(c.hit("INBOX") && !c.hit("Inbox.x"));
        let c = Compiled::new("S%").unwrap();
        assert!(c.hit("Sent") && !c.hit("Sent.x") && c.final_percent);
        assert_eq!(ancestors("a.b.c").collect::<Vec<_>>(), ["a", "a.b"]);
        let star = format!("{}Q", "*".repeat(100));
        assert_eq!(compile("", &[star], "from x").map(|v| v.len()).ok(), Some(1));
        assert!(compile("", &["*".repeat(1025)], "from x").is_err());
        assert!(compile("", &vec!["a".to_string(); 65], "from x").is_err());
    }
}
