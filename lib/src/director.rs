//! The director (issue 16): which pair of mailbox servers holds a user's mailbox, when a
//! site has more than one pair.
//!
//! The pairs are `director_pairs` entries, each a name and the addresses of that pair:
//!
//! ```text
//! "p1 imap=10.0.1.1:1143,10.0.1.2:1143 pop3=10.0.1.1:1100,10.0.1.2:1100 replicator=10.0.1.1:1190,10.0.1.2:1190"
//! ```
//!
//! (`imap`/`pop3`: where a proxy logs a user of that pair in, as `USER*MASTER`, in order
//! of preference — the pair's own proxies, which sync the pair before their OK;
//! `replicator`: the pair's replicators, which `postern user move` merges with; `smtp`,
//! optional: the pair's mailbox servers' SMTP, where a hub sends its copies of mail for
//! the pair's users, see below.)
//!
//! **Hubs follow the director.** A hub (`replica_domains`) with `director_pairs` set sends
//! the copies of a message for `USER@DOMAIN` in a replica domain to the `smtp=`
//! addresses of USER's pair (one copy per address, each its own delivery, as with
//! `replica_relays`), found when cleanup queues the message ([`hub_relays`]): so mail
//! accepted after `postern user move` switched the user lands on the new pair. The
//! director's key is the local part, lower-cased (the mailbox name of a replica domain's
//! address). A pair without `smtp=`, or a table entry naming an unknown pair: the copies
//! go to `replica_relays` as without a director (the latter logged). Limit: copies queued
//! before the switch keep their route; one still owed after the move's last merge lands in
//! the emptied old copy.
//!
//! A user's pair is found by **consistent hashing** ([`Ring`]): every pair owns
//! `director_vnodes` points on a 64-bit ring (the hash of `NAME#i`), a user belongs to the
//! pair owning the first point at or after the hash of the user name. It depends only on
//! the pair names and the user name — not on the order of the list, not on the host, not
//! on the program version — so every proxy and `postern user where` agree, and adding
//! one pair to N takes about 1/(N+1) of the users, all to the new pair; no user moves
//! between the old pairs.
//!
//! Exceptions are the per-user table `director_user_map` (`USER PAIR` lines, the format of
//! [`crate::transport_map`] tables, reloaded when the file changes, checked at most once a
//! second): `postern user move` writes the user's new pair there when it has moved the
//! mailbox. A table entry naming a pair that is not configured is an error for that user
//! (the login is refused as temporarily unavailable, never sent to a pair where the
//! mailbox is not).
//!
//! The hash is FNV-1a (64 bit) followed by MurmurHash3's 64-bit finaliser: fixed here
//! forever, because changing it would move users without their mailboxes.
//!
//! Security stance: the table is read with the bounds of [`crate::transport_map`]; pair
//! entries are checked when the configuration is read (at most [`MAX_PAIRS`] pairs,
//! [`MAX_ADDRESSES`] addresses per protocol, names of `[A-Za-z0-9._-]`, 1 to 32 bytes).

use crate::transport_map::Table;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Most pairs.
pub const MAX_PAIRS: usize = 256;
/// Most addresses per protocol in one pair.
pub const MAX_ADDRESSES: usize = 16;
/// Most virtual nodes per pair.
pub const MAX_VNODES: u32 = 1000;

/// One pair of mailbox servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pair {
    /// Its name (`p1`).
    pub name: String,
    /// IMAP addresses (`host:port`), in order of preference.
    pub imap: Vec<String>,
    /// POP3 addresses.
    pub pop3: Vec<String>,
    /// The pair's replicators.
    pub replicator: Vec<String>,
    /// The pair's mailbox servers' SMTP (`host:port`), for hubs.
    pub smtp: Vec<String>,
}

/// Whether `n` is a pair name.
pub fn valid_name(n: &str) -> bool {
    (1..=32).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_host_port(hp: &str) -> bool {
    hp.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) && h.bytes().all(|b| b.is_ascii_graphic())
    })
}

impl Pair {
    /// Parses one `director_pairs` entry.
    pub fn parse(entry: &str) -> Result<Pair, String> {
        let mut words = entry.split_whitespace();
        let name = words.next().unwrap_or_default();
        if !valid_name(name) {
            return Err(format!(
                "{entry:?}: {name:?} is not a pair name ([A-Za-z0-9._-], 1 to 32)"
            ));
        }
        let mut p = Pair {
            name: name.to_string(),
            ..Pair::default()
        };
        for w in words {
            let Some((key, list)) = w.split_once('=') else {
                return Err(format!("{entry:?}: {w:?} is not imap=, pop3=, replicator= or smtp="));
            };
            let field = match key {
                "imap" => &mut p.imap,
                "pop3" => &mut p.pop3,
                "replicator" => &mut p.replicator,
                "smtp" => &mut p.smtp,
                _ => return Err(format!("{entry:?}: {key:?} is not imap, pop3, replicator or smtp")),
            };
            for hp in list.split(',') {
                if !valid_host_port(hp) {
                    return Err(format!("{entry:?}: {hp:?} is not host:port"));
                }
                if field.len() >= MAX_ADDRESSES {
                    return Err(format!("{entry:?}: more than {MAX_ADDRESSES} {key} addresses"));
                }
                field.push(hp.to_string());
            }
        }
        if p.imap.is_empty() && p.pop3.is_empty() {
            return Err(format!("{entry:?}: neither imap= nor pop3= addresses"));
        }
        Ok(p)
    }

    /// The routes of a hub's copies for this pair (`smtp:[HOST]:PORT` per `smtp=` address).
    pub fn relays(&self) -> Vec<String> {
        self.smtp
            .iter()
            .filter_map(|hp| hp.rsplit_once(':'))
            .map(|(h, port)| format!("smtp:[{}]:{port}", h.trim_matches(['[', ']'])))
            .collect()
    }
}

/// Parses every entry; names must differ.
pub fn parse_pairs(list: &[String]) -> Result<Vec<Pair>, String> {
    if list.len() > MAX_PAIRS {
        return Err(format!("more than {MAX_PAIRS} pairs"));
    }
    let mut out: Vec<Pair> = Vec::new();
    for e in list {
        let p = Pair::parse(e)?;
        if out.iter().any(|o| o.name == p.name) {
            return Err(format!("pair {:?} is listed twice", p.name));
        }
        out.push(p);
    }
    Ok(out)
}

/// The `director_pairs` check.
pub fn check_pairs(list: &[String]) -> Result<(), String> {
    parse_pairs(list).map(drop)
}

/// The ring's hash of a key (see the module doc: fixed forever).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The consistent-hashing ring over pair names.
#[derive(Clone, Debug)]
pub struct Ring {
    /// `(point, index of the owning name)`, ascending by point, then name.
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// The ring of `names` (indexes into it are what [`Ring::locate`] returns), each
    /// with `vnodes` points (at least one).
    pub fn new<S: AsRef<str>>(names: &[S], vnodes: u32) -> Ring {
        let vnodes = vnodes.clamp(1, MAX_VNODES);
        let mut points: Vec<(u64, usize)> = Vec::with_capacity(names.len() * vnodes as usize);
        for (i, n) in names.iter().enumerate() {
            for v in 0..vnodes {
                points.push((hash64(format!("{}#{v}", n.as_ref()).as_bytes()), i));
            }
        }
        // (ties broken by name, so the list's order never matters)
        points.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| names[a.1].as_ref().cmp(names[b.1].as_ref())));
        Ring { points }
    }

    /// The index of the name owning `key`; `None` for an empty ring.
    pub fn locate(&self, key: &str) -> Option<usize> {
        let h = hash64(key.as_bytes());
        let i = self.points.partition_point(|&(p, _)| p < h);
        self.points.get(i).or_else(|| self.points.first()).map(|&(_, n)| n)
    }
}

/// Where a user's pair came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The ring.
    Ring,
    /// `director_user_map`.
    Map,
}

/// The pairs, the ring and the exceptions table.
#[derive(Debug)]
pub struct Director {
    pairs: Vec<Pair>,
    ring: Ring,
    map: Option<Mutex<MapFile>>,
}

impl Director {
    /// From the settings; `None` when `director_pairs` is empty (no director).
    pub fn from_config(m: &crate::config::MainConfig) -> Result<Option<Director>, String> {
        if m.director_pairs.is_empty() {
            return Ok(None);
        }
        let pairs = parse_pairs(&m.director_pairs)?;
        let map = (!m.director_user_map.is_empty()).then(|| m.director_user_map.path().to_path_buf());
        let d = Director::new(pairs, m.director_vnodes, map)?;
        if !m.director_pair.is_empty() && d.index(&m.director_pair).is_none() {
            return Err(format!("director_pair {:?} is not in director_pairs", m.director_pair));
        }
        Ok(Some(d))
    }

    /// A director over `pairs`; `map`: the exceptions table (a missing file is empty).
    pub fn new(pairs: Vec<Pair>, vnodes: u32, map: Option<PathBuf>) -> Result<Director, String> {
        if pairs.is_empty() {
            return Err("no pairs".into());
        }
        let names: Vec<&str> = pairs.iter().map(|p| p.name.as_str()).collect();
        let ring = Ring::new(&names, vnodes);
        let map = match map {
            Some(path) => {
                let mut m = MapFile {
                    path,
                    stamp: None,
                    table: Table::default(),
                    checked: None,
                };
                m.refresh().map_err(|e| format!("director_user_map: {e}"))?;
                Some(Mutex::new(m))
            }
            None => None,
        };
        Ok(Director { pairs, ring, map })
    }

    /// The pairs, as configured.
    pub fn pairs(&self) -> &[Pair] {
        &self.pairs
    }

    /// The index of the pair named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.pairs.iter().position(|p| p.name == name)
    }

    /// The pair the ring gives `user` (the table not consulted).
    pub fn ring_pair(&self, user: &str) -> usize {
        self.ring.locate(user).unwrap_or(0)
    }

    /// The exceptions table's path, if one is configured.
    pub fn map_path(&self) -> Option<PathBuf> {
        let m = self.map.as_ref()?;
        Some(m.lock().unwrap_or_else(|e| e.into_inner()).path.clone())
    }

    /// `user`'s pair: the table's entry, else the ring's. `Err` when the table names a
    /// pair that is not configured.
    pub fn pair_of(&self, user: &str) -> Result<(usize, Source), String> {
        if let Some(m) = &self.map {
            let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
            if m.checked.is_none_or(|t| t.elapsed() >= RELOAD_CHECK)
                && let Err(e) = m.refresh()
            {
                tracing::warn!("director_user_map {e} (the old contents stay in use)");
            }
            let path = m.path.clone();
            if let Some(name) = m.table.get(user) {
                return match self.index(name) {
                    Some(i) => Ok((i, Source::Map)),
                    None => Err(format!(
                        "director_user_map {}: {user} is on pair {name:?}, which is not in director_pairs",
                        path.display()
                    )),
                };
            }
        }
        Ok((self.ring_pair(user), Source::Ring))
    }
}

/// The director of this process's configuration, built once per distinct
/// `director_pairs`/`director_user_map`/`director_vnodes` (a long-lived daemon asks per
/// message; the table inside reloads itself). `None`: no director, or one that cannot be
/// built (logged).
pub fn shared(m: &crate::config::MainConfig) -> Option<std::sync::Arc<Director>> {
    type Key = (Vec<String>, String, u32);
    static CACHE: Mutex<Option<(Key, Option<std::sync::Arc<Director>>)>> = Mutex::new(None);
    if m.director_pairs.is_empty() {
        return None;
    }
    let key: Key = (
        m.director_pairs.clone(),
        m.director_user_map.path().display().to_string(),
        m.director_vnodes,
    );
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, d)) = c.as_ref()
        && *k == key
    {
        return d.clone();
    }
    let d = match Director::from_config(m) {
        Ok(d) => d.map(std::sync::Arc::new),
        Err(e) => {
            tracing::warn!("director: {e} (hub copies go to replica_relays)");
            None
        }
    };
    *c = Some((key, d.clone()));
    d
}

/// On a hub: the routes of the copies of mail for `address` (in a replica domain) — its
/// user's pair's `smtp=` addresses; `None` when there is no director or that pair has
/// none (the caller uses `replica_relays`).
pub fn hub_relays(m: &crate::config::MainConfig, address: &str) -> Option<Vec<String>> {
    let d = shared(m)?;
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l).to_lowercase();
    let i = match d.pair_of(&local) {
        Ok((i, _)) => i,
        Err(e) => {
            tracing::warn!("director: {e} (its copies go to replica_relays)");
            return None;
        }
    };
    let pair = d.pairs().get(i)?;
    let relays = pair.relays();
    if relays.is_empty() {
        return None;
    }
    tracing::info!(
        "director: {address} is on pair {}: copies to {}",
        pair.name,
        relays.join(", ")
    );
    Some(relays)
}

/// How often the exceptions table's file is looked at.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The exceptions table and the stamp of the file it was read from. A missing file is an
/// empty table (and is read once it appears).
#[derive(Debug)]
struct MapFile {
    path: PathBuf,
    stamp: Option<(SystemTime, u64, u64)>,
    table: Table,
    checked: Option<Instant>,
}

impl MapFile {
    fn refresh(&mut self) -> Result<(), String> {
        self.checked = Some(Instant::now());
        let stamp = std::fs::symlink_metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len(), std::os::unix::fs::MetadataExt::ino(&m))));
        if stamp == self.stamp {
            return Ok(());
        }
        self.table = match stamp {
            None => Table::default(),
            Some(_) => Table::load(&self.path).map_err(|e| e.to_string())?,
        };
        self.stamp = stamp;
        Ok(())
    }
}

/// Sets `user`'s entry in the exceptions table at `path` to `pair` (`None`: removes it).
pub fn set_map_entry(path: &Path, user: &str, pair: Option<&str>) -> Result<(), String> {
    edit_map(path, &[(user.to_string(), pair.map(str::to_string))])
}

/// Applies `changes` to the exceptions table at `path`: each user's entries are removed,
/// and `USER PAIR` appended for a `Some(PAIR)`; every other line is kept. The file is
/// replaced atomically and durably (mode 0644); a table that does not parse is left
/// alone (an error). The caller serialises writers (a lock on the config directory).
pub fn edit_map(path: &Path, changes: &[(String, Option<String>)]) -> Result<(), String> {
    let shown = path.display();
    for (user, pair) in changes {
        if user.is_empty() || !user.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{user:?} cannot be a table key"));
        }
        if let Some(p) = pair
            && !valid_name(p)
        {
            return Err(format!("{p:?} is not a pair name"));
        }
    }
    let text = if path.exists() {
        let t = read_bounded(path)?;
        Table::parse(&t).map_err(|(l, why)| format!("{shown}, line {l}: {why}"))?;
        t
    } else {
        String::new()
    };
    let keys: std::collections::HashSet<String> = changes.iter().map(|(u, _)| u.to_lowercase()).collect();
    let mut out = String::with_capacity(text.len() + 64 * changes.len());
    let mut skipping = false;
    for line in text.lines() {
        let t = line.trim();
        if line.starts_with([' ', '\t']) && !t.is_empty() && !t.starts_with('#') {
            // a continuation belongs to the entry above it
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        skipping = !t.is_empty()
            && !t.starts_with('#')
            && t.split([' ', '\t'])
                .next()
                .is_some_and(|k| keys.contains(&k.to_lowercase()));
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (user, pair) in changes {
        if let Some(p) = pair {
            out.push_str(&format!("{user} {p}\n"));
        }
    }
    let dir = path.parent().ok_or_else(|| format!("{shown}: no directory"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{shown}: not a file name"))?;
    crate::safe_open::write_atomic(dir, name, 0o644, |f| std::io::Write::write_all(f, out.as_bytes()))
        .map_err(|e| format!("{shown}: {e}"))
}

/// The entries of the exceptions table at `path` (`(user, pair)`, in file order; the
/// first of a user's entries, as lookups see it). A missing file has none.
pub fn map_entries(path: &Path) -> Result<Vec<(String, String)>, String> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = read_bounded(path)?;
    let table = Table::parse(&text).map_err(|(l, why)| format!("{}, line {l}: {why}", path.display()))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || line.starts_with([' ', '\t']) {
            continue;
        }
        let Some(key) = t.split([' ', '\t']).next() else {
            continue;
        };
        if seen.insert(key.to_lowercase())
            && let Some(v) = table.get(key)
        {
            out.push((key.to_string(), v.to_string()));
        }
    }
    Ok(out)
}

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = crate::safe_open::open_read(path, &crate::safe_open::Expect::any())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(crate::transport_map::MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > crate::transport_map::MAX_FILE_SIZE {
        return Err(format!("{}: too large", path.display()));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))
}

#[cfg(test)]
mod tests;
