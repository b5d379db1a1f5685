//! Where mail to postmaster goes: `postern check` says when it has nowhere to go, and
//! `postern start` (and `check --fix`) gives it a home in the development layout.
//!
//! Bounces that cannot be returned, and the double bounces after them, go to
//! `bounce_notice_recipient` (`postmaster`). The name is followed through `alias_maps` as
//! local does (local names, `name@local-domain`, `\name`; files, commands, `:include:`
//! and remote addresses count as a destination) to the users it ends at, and each must be
//! a mailbox user of `CONFIG_DIR/users` or, with `local_system_users`, an account in the
//! password file. Otherwise local would bounce postmaster's mail and, a double bounce
//! being the end of the line, the mail would be gone.
//!
//! The shipped `etc/aliases` sends `root`, `MAILER-DAEMON` and `abuse` to `postmaster`,
//! the mailbox user of that name. When the alias files route some name to `postmaster`
//! and no such user or account exists, `postern start` creates the mailbox user
//! `postmaster` (Maildir `var/mail/postmaster/`) with a random password nobody knows;
//! `postern user passwd postmaster` sets one to read it over IMAP or POP3. The installed
//! layout (`postern install`) routes postmaster to `root` in `/etc/aliases`, as Debian
//! does, and root's mail goes to `/var/mail/root`.

use postern_lib::address::Destinations;
use postern_lib::aliases::Aliases;
use postern_lib::config::Config;
use postern_lib::users::{self, Users};
use std::io::Read;

/// How deep aliases are followed (local's limit).
const MAX_DEPTH: usize = 20;

/// Where postmaster's mail ends.
#[derive(Debug, Default)]
pub struct Route {
    /// Users it reaches that exist (or another kind of destination: file, command, remote).
    pub delivered: Vec<String>,
    /// Local names it reaches that are no user: mail to them would bounce.
    pub missing: Vec<String>,
    /// Whether some alias names `postmaster` as a target: the alias files mean a
    /// `postmaster` mailbox.
    pub designated: bool,
}

/// Follows `bounce_notice_recipient` through the alias files.
pub fn route(cfg: &Config) -> Result<Route, String> {
    let m = &cfg.main;
    let tables: Vec<Aliases> = m
        .alias_maps
        .iter()
        .filter(|f| !f.trim().is_empty())
        .map(|f| Aliases::load(&cfg.dir.join(f.trim())).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let users = Users::load(&users::path(&cfg.dir)).map_err(|e| e.to_string())?;
    let dest = Destinations::new(&m.mydestination, &m.relay_domains);
    let start = m.bounce_notice_recipient.to_lowercase();
    let mut r = Route {
        designated: tables.iter().flat_map(|t| t.iter()).any(|(_, targets)| {
            targets
                .iter()
                .any(|t| local_name(t, &dest).as_deref() == Some("postmaster"))
        }),
        ..Route::default()
    };
    let mut seen = Vec::new();
    walk(&start, None, 0, &tables, &dest, &mut seen, &mut |name| {
        let exists = users.get(name).is_some()
            || (m.local_system_users && nix::unistd::User::from_name(name).ok().flatten().is_some());
        if exists {
            r.delivered.push(name.to_string());
        } else {
            r.missing.push(name.to_string());
        }
    });
    if start.contains('@') && local_name(&start, &dest).is_none() {
        r.delivered.push(start);
    }
    Ok(r)
}

/// A target's local name when it stays on this host as a user or alias name.
fn local_name(target: &str, dest: &Destinations) -> Option<String> {
    let t = target.trim().trim_matches('"');
    if t.starts_with(['|', '/']) || t.starts_with(":include:") {
        return None;
    }
    let t = t.strip_prefix('\\').unwrap_or(t);
    match t.rsplit_once('@') {
        Some((l, d)) if dest.is_local_domain(&d.trim_end_matches('.').to_lowercase()) => Some(l.to_lowercase()),
        Some(_) => None,
        None => Some(t.to_lowercase()),
    }
}

fn walk(
    name: &str,
    parent: Option<&str>,
    depth: usize,
    tables: &[Aliases],
    dest: &Destinations,
    seen: &mut Vec<String>,
    user: &mut dyn FnMut(&str),
) {
    let targets = tables.iter().find_map(|t| t.get(name));
    let Some(targets) = targets.filter(|_| parent != Some(name) && depth <= MAX_DEPTH) else {
        return user(name);
    };
    if seen.iter().any(|s| s == name) {
        return;
    }
    seen.push(name.to_string());
    for t in targets {
        match local_name(t, dest) {
            Some(l) if t.trim().starts_with('\\') => user(&l),
            Some(l) => walk(&l, Some(name), depth + 1, tables, dest, seen, user),
            None => {} // a file, command, include or remote address: somewhere to go
        }
    }
}

/// One line for `postern check` when postmaster's mail has nowhere to go (`None` when it
/// has, or when it is the `postmaster` user that `postern start` creates).
pub fn problem(cfg: &Config, r: &Route) -> Option<String> {
    let missing: Vec<&String> = r
        .missing
        .iter()
        .filter(|n| !(r.designated && *n == "postmaster"))
        .collect();
    let name = missing.first()?;
    let files = cfg.main.alias_maps.join(", ");
    Some(format!(
        "mail to {} has nowhere to go: it reaches {name}, which is not a mailbox user (bounces that cannot be returned would be lost); fix: postern user add {name}, or send {} to a user in {}",
        cfg.main.bounce_notice_recipient,
        cfg.main.bounce_notice_recipient,
        if files.is_empty() {
            "an alias file (alias_maps)".into()
        } else {
            files
        },
    ))
}

/// When the alias files route mail to `postmaster` and no such user exists, creates the
/// mailbox user `postmaster` with a random password. Returns the line to tell the admin.
pub fn ensure_mailbox(cfg: &Config) -> Result<Option<String>, String> {
    let r = route(cfg)?;
    if !(r.designated && r.missing.iter().any(|n| n == "postmaster")) {
        return Ok(None);
    }
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let hash = postern_password::hash_argon2id(&secret).map_err(|e| e.to_string())?;
    let _lock = crate::files::DirLock::exclusive(&cfg.dir)?;
    let path = users::path(&cfg.dir);
    let mut u = Users::load(&path).map_err(|e| e.to_string())?;
    if u.get("postmaster").is_some() {
        return Ok(None);
    }
    u.add("postmaster", &hash, None).map_err(|e| e.to_string())?;
    u.save(&path).map_err(|e| e.to_string())?;
    Ok(Some(format!(
        "created the mailbox user postmaster for mail to postmaster (and what {} sends there); read it after: postern user passwd postmaster",
        cfg.main.alias_maps.join(", ")
    )))
}
