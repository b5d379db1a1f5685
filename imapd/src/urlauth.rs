//! URLAUTH (RFC 4467): `GENURLAUTH`, `URLFETCH` and `RESETKEY`, with the one mechanism
//! `INTERNAL`; URLAUTH=BINARY (RFC 5524): `URLFETCH (url [BODYPARTSTRUCTURE] [BODY |
//! BINARY])` answered `url (BODYPARTSTRUCTURE (...) BINARY {n}...)` as Dovecot answers it
//! — BINARY with the part's Content-Transfer-Encoding undone (`~{n}` when it holds NULs,
//! `BINARY NIL` for an encoding not known here), BODYPARTSTRUCTURE only for a URL naming
//! a body part (the message or part numbers; NIL for HEADER, TEXT, n.MIME).
//!
//! A URLAUTH URL is an absolute IMAP URL (RFC 5092) into the user's own mailboxes,
//! `imap://user@host/MAILBOX;UIDVALIDITY=v/;UID=u[/;SECTION=s][/;PARTIAL=o.l]`
//! `[;EXPIRE=date-time];URLAUTH=access`, the path as [`crate::imap_url`] parses it. The
//! part up to the access identifier is the *rump*; GENURLAUTH answers it followed by
//! `:internal:` and the token: the first 128 bits of HMAC-SHA256 of the rump under the
//! user's mailbox access key, in hex ([`token`]). URLFETCH recomputes it and compares in
//! constant time ([`token_matches`]).
//!
//! The key: 256 bits from the OS's random source (ring's `SystemRandom`, as the replicator
//! uses), one per user, in hex in the mailbox root's [`KEY_FILE`] (mode 0600, created
//! with `O_EXCL`, read with the safe-open checks), made at the first GENURLAUTH.
//! `RESETKEY [mailbox [mech ...]]` replaces it (written atomically): every URL the user
//! made before stops working — also for `RESETKEY mailbox`, which RFC 4467 lets reset
//! only that mailbox's URLs (one key per user, not per mailbox).
//!
//! Access (RFC 4467 §3): `user+NAME` and `submit+NAME` are served to a session logged in
//! as NAME (Postern's submission service has no identity of its own), `authuser` to any
//! session of the URL's owner; `anonymous` is refused at GENURLAUTH (`NO [BADURL]`).
//! URLFETCH serves only URLs into the logged-in user's own mailboxes, so a URL of another
//! user is `NIL` whatever its access; also `NIL`: a URL that does not parse, is not this
//! server's (host other than `myhostname`), has expired, carries a wrong token or one
//! made before the last RESETKEY, or names a message or section that is gone.
//! GENURLAUTH refuses with `NO [BADURL url] reason` what it cannot authorize.
//!
//! Bounds: [`MAX_URLS`] URLs a command, [`crate::imap_url::MAX_URL`] bytes a URL, a
//! URLFETCH answer of [`MAX_ANSWER`] bytes before its last URL.

use crate::imap_url::{MAX_URL, Url, bad_url, parse_url};
use crate::parse::{Arg, Command};
use crate::reply::{no_nuls, string};
use crate::session::{Reply, Session};
use postern_lib::safe_open::{self, Expect, SafeOpenError};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::io::{Read, Write};
use std::path::Path;
use zeroize::Zeroizing;

/// The file in the mailbox root with the user's mailbox access key, in hex.
pub const KEY_FILE: &str = "postern-urlauth-key";
/// Most URLs in one GENURLAUTH or URLFETCH.
pub const MAX_URLS: usize = 64;
/// Bytes of URLFETCH answer after which no further URL is fetched (the command is then
/// `NO [LIMIT]`, nothing sent): one URL is always answered, however large its part.
pub const MAX_ANSWER: usize = 64 << 20;
/// The one URLAUTH mechanism.
pub const MECH: &str = "INTERNAL";
/// Bytes of key.
const KEY_BYTES: usize = 32;
/// Bytes of HMAC kept in a token (128 bits, 32 hex digits).
const TOKEN_BYTES: usize = 16;

/// Who may fetch a URL (RFC 4467 §3).
#[derive(Debug, PartialEq)]
pub enum Access {
    /// `submit+NAME`.
    Submit(String),
    /// `user+NAME`.
    User(String),
    /// `authuser`.
    AuthUser,
    /// `anonymous`.
    Anonymous,
}

/// A parsed URLAUTH URL.
#[derive(Debug, PartialEq)]
pub struct AuthUrl {
    /// The URL's user (the owner of the mailbox), decoded.
    pub user: String,
    /// The host, without port, lower case.
    pub host: String,
    /// Mailbox, message, section and partial.
    pub path: Url,
    /// `;EXPIRE=`, in seconds since the epoch.
    pub expire: Option<i64>,
    /// The access identifier.
    pub access: Access,
    /// The URL up to and including the access identifier.
    pub rump: String,
    /// The mechanism (upper case) and token after the rump, when there are.
    pub verifier: Option<(String, String)>,
}

/// `s` without the ASCII prefix `p`, compared without case.
fn strip_ci<'a>(s: &'a str, p: &str) -> Option<&'a str> {
    let head = s.get(..p.len())?;
    head.eq_ignore_ascii_case(p).then(|| &s[p.len()..])
}

/// Byte index of the last `needle` (ASCII) in `s`, compared without case.
fn rfind_ci(s: &str, needle: &str) -> Option<usize> {
    s.to_ascii_uppercase().rfind(&needle.to_ascii_uppercase())
}

/// An RFC 3339 date-time (`2026-12-07T08:00:00Z`, `...T09:00:00.5+01:00`) in seconds
/// since the epoch.
pub fn rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if !(20..=40).contains(&b.len()) || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = s.get(r)?;
        d.bytes().all(|c| c.is_ascii_digit()).then(|| d.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) => {
            let two = |a: &u8, b: &u8| i64::from((a - b'0') * 10 + (b - b'0'));
            let (oh, om) = (two(h1, h2), two(m1, m2));
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = postern_lib::date::days_from_civil(y, mo as u32, d as u32);
    Some(days * 86400 + h * 3600 + mi * 60 + sec - offset)
}

/// Parses a URLAUTH URL, with or without its verifier; `Err` says what is wrong.
pub fn parse_auth_url(url: &str) -> Result<AuthUrl, &'static str> {
    if url.len() > MAX_URL {
        return Err("URL too long");
    }
    const SCHEME: &str = "imap://";
    let rest = strip_ci(url, SCHEME).ok_or("not an absolute IMAP URL (imap://user@host/...)")?;
    let authority = rest.split('/').next().unwrap_or("");
    let path_start = SCHEME.len() + authority.len();
    let (userinfo, host) = authority.rsplit_once('@').ok_or("no user in the URL")?;
    let user = match rfind_ci(userinfo, ";AUTH=") {
        Some(i) => &userinfo[..i],
        None => userinfo,
    };
    let user = crate::imap_url::decode(user)
        .filter(|u| !u.is_empty())
        .ok_or("bad user in the URL")?;
    // host, [IPv6] or host:port, [IPv6]:port
    let (host, port) = match host.strip_prefix('[') {
        Some(v6) => {
            let (addr, rest) = v6.split_once(']').ok_or("bad host")?;
            if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return Err("bad host");
            }
            let port = match rest {
                "" => None,
                r => Some(r.strip_prefix(':').ok_or("bad host")?),
            };
            (&host[..addr.len() + 2], port)
        }
        None => match host.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        },
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err("bad port");
    }
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b)) {
        return Err("bad host");
    }
    let ua = rfind_ci(url, ";URLAUTH=")
        .filter(|&i| i > path_start)
        .ok_or("no ;URLAUTH= in the URL")?;
    let after = &url[ua + ";URLAUTH=".len()..];
    let (access_s, verifier) = match after.split_once(':') {
        Some((a, v)) => (a, Some(v)),
        None => (after, None),
    };
    let rump = url[..ua + ";URLAUTH=".len() + access_s.len()].to_string();
    let access = match access_s.to_ascii_lowercase().as_str() {
        "authuser" => Access::AuthUser,
        "anonymous" => Access::Anonymous,
        a => {
            let name = |p: &str| {
                crate::imap_url::decode(&access_s[p.len()..])
                    .filter(|u| !u.is_empty())
                    .ok_or("bad URLAUTH access")
            };
            if a.starts_with("submit+") {
                Access::Submit(name("submit+")?)
            } else if a.starts_with("user+") {
                Access::User(name("user+")?)
            } else {
                return Err("bad URLAUTH access");
            }
        }
    };
    let verifier = match verifier {
        Some(v) => {
            let (m, t) = v.split_once(':').ok_or("bad URLAUTH verifier")?;
            Some((m.to_ascii_uppercase(), t.to_string()))
        }
        None => None,
    };
    let before = &url[..ua];
    let (path_end, expire) = match rfind_ci(before, ";EXPIRE=").filter(|&i| i > path_start) {
        Some(i) => (i, Some(rfc3339(&before[i + ";EXPIRE=".len()..]).ok_or("bad EXPIRE")?)),
        None => (ua, None),
    };
    let path = parse_url(&url[path_start..path_end])?;
    if path.validity.is_none() {
        return Err("a URLAUTH URL needs the mailbox's UIDVALIDITY");
    }
    Ok(AuthUrl {
        user,
        host: host.to_ascii_lowercase(),
        path,
        expire,
        access,
        rump,
        verifier,
    })
}

/// The token of `rump` under `key`: 32 hex digits.
pub fn token(key: &[u8], rump: &str) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), rump.as_bytes());
    tag.as_ref()[..TOKEN_BYTES].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` (hex, either case) is the token of `rump`, compared in constant time
/// (the time depends only on the lengths).
pub fn token_matches(key: &[u8], rump: &str, given: &str) -> bool {
    let want = token(key, rump);
    let given = given.to_ascii_lowercase();
    if given.len() != want.len() {
        return false;
    }
    let diff = want.bytes().zip(given.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// A key from the key file's text.
fn parse_key(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let t = text.trim_end();
    if t.len() != KEY_BYTES * 2 {
        return None;
    }
    let mut key = Zeroizing::new(vec![0u8; KEY_BYTES]);
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// A new key, as the key file's text.
fn new_key_text() -> Result<Zeroizing<String>, String> {
    let mut b = Zeroizing::new([0u8; KEY_BYTES]);
    SystemRandom::new()
        .fill(&mut b[..])
        .map_err(|_| "no randomness".to_string())?;
    let mut t = Zeroizing::new(String::with_capacity(KEY_BYTES * 2 + 1));
    for x in b.iter() {
        t.push_str(&format!("{x:02x}"));
    }
    t.push('\n');
    Ok(t)
}

/// The user's key from `root`'s [`KEY_FILE`]; `None` when there is none.
pub fn read_key(root: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let path = root.join(KEY_FILE);
    let mut f = match safe_open::open_read(&path, &Expect::current_user()) {
        Ok(f) => f,
        Err(SafeOpenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut text = Zeroizing::new(String::new());
    (&mut f)
        .take(200)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    parse_key(&text)
        .map(Some)
        .ok_or_else(|| format!("{}: not a key", path.display()))
}

/// The user's key, made if there is none yet (two sessions making one at once: the
/// second reads the first's).
pub fn key(root: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    if let Some(k) = read_key(root)? {
        return Ok(k);
    }
    let text = new_key_text()?;
    match safe_open::create_excl(root, KEY_FILE, 0o600) {
        Ok(mut f) => {
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("{}: {e}", root.join(KEY_FILE).display()))?;
            safe_open::fsync_dir(root).map_err(|e| e.to_string())?;
            parse_key(&text).ok_or_else(|| "new key".to_string())
        }
        Err(SafeOpenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(root)?.ok_or_else(|| "key file vanished".to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Replaces the user's key with a new one.
pub fn reset_key(root: &Path) -> Result<(), String> {
    let text = new_key_text()?;
    safe_open::write_atomic(root, KEY_FILE, 0o600, |f| f.write_all(text.as_bytes())).map_err(|e| e.to_string())
}

/// What an RFC 5524 URLFETCH item asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Want {
    /// `BODYPARTSTRUCTURE`.
    pub structure: bool,
    /// `BODY`: the data as it is.
    pub body: bool,
    /// `BINARY`: the data with its Content-Transfer-Encoding undone.
    pub binary: bool,
}

impl Want {
    /// The parameters after the URL.
    fn parse(params: &[Arg]) -> Result<Want, Reply> {
        let mut w = Want::default();
        for p in params {
            let flag = match p.keyword().as_deref() {
                Some("BODYPARTSTRUCTURE") => &mut w.structure,
                Some("BODY") => &mut w.body,
                Some("BINARY") => &mut w.binary,
                _ => {
                    return Err(Reply::Bad(
                        "Unknown URLFETCH parameter (BODYPARTSTRUCTURE, BODY, BINARY)".into(),
                    ));
                }
            };
            if std::mem::replace(flag, true) {
                return Err(Reply::Bad("Repeated URLFETCH parameter".into()));
            }
        }
        if w.body && w.binary {
            return Err(Reply::Bad("URLFETCH takes BODY or BINARY, not both".into()));
        }
        Ok(w)
    }
}

/// Seconds since the epoch now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Session {
    /// GENURLAUTH, URLFETCH and RESETKEY.
    pub(crate) fn urlauth_command(&mut self, c: &Command) -> Result<(), Reply> {
        match c.name.as_str() {
            "GENURLAUTH" => self.genurlauth(c),
            "URLFETCH" => self.urlfetch(c),
            _ => self.resetkey(c),
        }
    }

    fn server_error(&self, e: &str) -> Reply {
        tracing::warn!("URLAUTH: {e}, {}", self.who());
        Reply::No("[SERVERBUG] Internal error".into())
    }

    /// `GENURLAUTH url INTERNAL ...`.
    fn genurlauth(&mut self, c: &Command) -> Result<(), Reply> {
        if c.args.is_empty() || !c.args.len().is_multiple_of(2) {
            return Err(Reply::Bad("GENURLAUTH needs URL and mechanism pairs".into()));
        }
        if c.args.len() / 2 > MAX_URLS {
            return Err(Reply::Bad(format!("[LIMIT] More than {MAX_URLS} URLs")));
        }
        let me = self.user.clone().unwrap_or_default();
        let mut rumps = Vec::with_capacity(c.args.len() / 2);
        for pair in c.args.chunks(2) {
            let url = pair[0].text().ok_or(Reply::Bad("Invalid URL".into()))?;
            if pair[1].text().is_none_or(|m| !m.eq_ignore_ascii_case(MECH)) {
                return Err(Reply::Bad("Unknown URLAUTH mechanism (INTERNAL is offered)".into()));
            }
            let refuse = |why: &str| {
                tracing::info!("GENURLAUTH: refused ({why}), {}", self.who());
                bad_url(&url, why)
            };
            let u = parse_auth_url(&url).map_err(&refuse)?;
            if u.verifier.is_some() {
                return Err(refuse("the URL already has a URLAUTH verifier"));
            }
            if u.user != me {
                return Err(refuse("the URL is not the logged-in user's"));
            }
            if !u.host.eq_ignore_ascii_case(&self.settings.hostname) {
                return Err(refuse("the URL is not this server's"));
            }
            if u.access == Access::Anonymous {
                return Err(refuse("anonymous access is not offered"));
            }
            if u.expire.is_some_and(|t| t <= now()) {
                return Err(refuse("the URL has expired"));
            }
            self.url_bytes(&u.path, &url)?;
            rumps.push(u.rump);
        }
        let root = self.store()?.root().to_path_buf();
        let key = key(&root).map_err(|e| self.server_error(&e))?;
        let mut out = b"* GENURLAUTH".to_vec();
        for rump in rumps {
            out.push(b' ');
            let full = format!("{rump}:internal:{}", token(&key, &rump));
            string(&mut out, full.as_bytes());
        }
        self.out.extend_from_slice(&out);
        self.line("");
        self.ok(&c.tag, "GENURLAUTH completed");
        Ok(())
    }

    /// The path of a URLAUTH URL this session may fetch; `None` (NIL) when it may not, the
    /// reason logged.
    fn url_authorized(&mut self, url: &str) -> Option<Url> {
        let me = self.user.clone().unwrap_or_default();
        let why = match parse_auth_url(url) {
            Err(why) => why,
            Ok(u) => match (&u.verifier, &u.access) {
                (None, _) => "no URLAUTH verifier",
                (Some((m, _)), _) if m != MECH => "unknown mechanism",
                _ if u.user != me => "another user's mailbox",
                _ if !u.host.eq_ignore_ascii_case(&self.settings.hostname) => "not this server's",
                _ if u.expire.is_some_and(|t| t <= now()) => "expired",
                (_, Access::Submit(n) | Access::User(n)) if *n != me => "access is another user's",
                (_, Access::Anonymous) => "anonymous access",
                (Some((_, tok)), _) => {
                    let root = self.store().ok()?.root().to_path_buf();
                    match read_key(&root) {
                        Err(e) => {
                            self.server_error(&e);
                            "no key"
                        }
                        Ok(None) => "no key",
                        Ok(Some(key)) if !token_matches(&key, &u.rump, tok) => "wrong token",
                        Ok(Some(_)) => return Some(u.path),
                    }
                }
            },
        };
        self.nil(why);
        None
    }

    /// Logs why a URL is answered NIL.
    fn nil(&self, why: &str) {
        tracing::info!("URLFETCH: NIL ({why}), {}", self.who());
    }

    /// The bytes a URLAUTH URL gives this session, `None` for NIL.
    fn url_fetch_one(&mut self, url: &str) -> Option<Vec<u8>> {
        let u = self.url_authorized(url)?;
        let got = self.url_bytes(&u, url);
        got.inspect_err(|_| self.nil("nothing there")).ok()
    }

    /// RFC 5524's `(url [BODYPARTSTRUCTURE] [BODY | BINARY])`: the metadata list that
    /// answers it, `None` for NIL.
    fn url_fetch_extended(&mut self, url: &str, want: Want) -> Option<Vec<u8>> {
        let u = self.url_authorized(url)?;
        let whole = Url {
            mailbox: u.mailbox.clone(),
            validity: u.validity,
            uid: u.uid,
            section: String::new(),
            partial: None,
        };
        let Ok(raw) = self.url_bytes(&whole, url) else {
            self.nil("nothing there");
            return None;
        };
        let tree = crate::mime::Tree::new(&raw);
        let section = u.section.to_ascii_uppercase();
        let mut out = b"(".to_vec();
        if want.structure {
            let Some(part) = crate::mime::part_at(&tree, &section) else {
                self.nil("no such body part for BODYPARTSTRUCTURE");
                return None;
            };
            out.extend_from_slice(b"BODYPARTSTRUCTURE ");
            crate::mime::body_structure(&mut out, part, true);
        }
        if want.binary || want.body {
            if want.structure {
                out.push(b' ');
            }
            let data = if want.binary {
                match crate::binary::content(&tree, &section) {
                    Ok(Some(d)) => Some(d),
                    Ok(None) => {
                        self.nil("no such section");
                        return None;
                    }
                    // an encoding not known here: BINARY NIL (RFC 5524 §3.2)
                    Err(()) => None,
                }
            } else {
                let Some(d) = crate::mime::section_of(&tree, &section) else {
                    self.nil("no such section");
                    return None;
                };
                Some(d.into_owned())
            };
            out.extend_from_slice(if want.binary { b"BINARY " } else { b"BODY " });
            match data.map(|d| crate::imap_url::partial(d, u.partial)) {
                Some(mut d) => {
                    if want.binary && memchr::memchr(0, &d).is_some() {
                        out.push(b'~');
                    } else {
                        no_nuls(&mut d);
                    }
                    out.extend_from_slice(format!("{{{}}}\r\n", d.len()).as_bytes());
                    out.extend_from_slice(&d);
                }
                None => out.extend_from_slice(b"NIL"),
            }
        }
        out.push(b')');
        Some(out)
    }

    /// `URLFETCH url ...`: one `* URLFETCH` answer with each URL and its data or NIL.
    fn urlfetch(&mut self, c: &Command) -> Result<(), Reply> {
        if c.args.is_empty() {
            return Err(Reply::Bad("URLFETCH needs URLs".into()));
        }
        if c.args.len() > MAX_URLS {
            return Err(Reply::Bad(format!("[LIMIT] More than {MAX_URLS} URLs")));
        }
        let mut items = Vec::with_capacity(c.args.len());
        for a in &c.args {
            items.push(match a {
                Arg::List(l) => {
                    let url = l.first().and_then(Arg::text).ok_or(Reply::Bad("Invalid URL".into()))?;
                    (url, Some(Want::parse(&l[1..])?))
                }
                a => (a.text().ok_or(Reply::Bad("Invalid URL".into()))?, None),
            });
        }
        let start = self.out.len();
        self.out.extend_from_slice(b"* URLFETCH");
        for (url, want) in items {
            if self.out.len() - start > MAX_ANSWER {
                self.out.truncate(start);
                tracing::info!("URLFETCH: answer over {MAX_ANSWER} bytes, {}", self.who());
                return Err(Reply::No(format!(
                    "[LIMIT] The answer would be larger than {MAX_ANSWER} bytes: fetch fewer URLs at once"
                )));
            }
            self.out.push(b' ');
            let mut shown = Vec::new();
            string(&mut shown, url.as_bytes());
            self.out.extend_from_slice(&shown);
            let answer = match want {
                Some(want) => self.url_fetch_extended(&url, want),
                None => self.url_fetch_one(&url).map(|mut bytes| {
                    no_nuls(&mut bytes);
                    let mut a = format!("{{{}}}\r\n", bytes.len()).into_bytes();
                    a.extend_from_slice(&bytes);
                    a
                }),
            };
            self.out.push(b' ');
            self.out.extend_from_slice(answer.as_deref().unwrap_or(b"NIL"));
        }
        self.line("");
        self.ok(&c.tag, "URLFETCH completed");
        Ok(())
    }

    /// `RESETKEY [mailbox [mechanism ...]]`.
    fn resetkey(&mut self, c: &Command) -> Result<(), Reply> {
        if let Some(name) = c.args.first() {
            let name = name.text().ok_or(Reply::Bad("Invalid mailbox name".into()))?;
            let name = postern_mailbox::Store::canonical(&name);
            if !self.store()?.folder_path(&name)?.join("cur").is_dir() {
                return Err(Reply::No("[NONEXISTENT] No such mailbox".into()));
            }
            if c.args[1..]
                .iter()
                .any(|m| m.text().is_none_or(|m| !m.eq_ignore_ascii_case(MECH)))
            {
                return Err(Reply::Bad("Unknown URLAUTH mechanism (INTERNAL is offered)".into()));
            }
        }
        let root = self.store()?.root().to_path_buf();
        reset_key(&root).map_err(|e| self.server_error(&e))?;
        tracing::info!("RESETKEY, {}", self.who());
        self.ok(&c.tag, "[URLMECH INTERNAL] RESETKEY completed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "imap://alice@mail.example.test/INBOX;UIDVALIDITY=7/;UID=3/;SECTION=1;EXPIRE=2030-01-02T03:04:05Z;URLAUTH=user+alice";

    #[test]
    fn urlauth_urls_parse_and_bad_ones_say_why() {
        let u = parse_auth_url(&format!("{URL}:INTERNAL:00ff")).unwrap();
        assert_eq!((u.user.as_str(), u.host.as_str()), ("alice", "mail.example.test"));
        assert_eq!(
            (u.path.mailbox.as_str(), u.path.validity, u.path.uid),
            ("INBOX", Some(7), 3)
        );
        assert_eq!(u.path.section, "1");
        assert_eq!(u.expire, Some(1_893_553_445));
        assert_eq!(u.access, Access::User("alice".into()));
        assert_eq!(u.rump, URL);
        assert_eq!(u.verifier, Some(("INTERNAL".into(), "00ff".into())));
        let u =
            parse_auth_url("IMAP://a%40b;AUTH=*@Host:143/My%20Box;UIDVALIDITY=1/;UID=2/;PARTIAL=0.10;urlauth=authuser")
                .unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.path.mailbox.as_str()),
            ("a@b", "host", "My Box")
        );
        assert_eq!(
            (u.access, u.expire, u.path.partial),
            (Access::AuthUser, None, Some((0, Some(10))))
        );
        for (bad, why) in [
            ("/INBOX/;UID=1", "not an absolute IMAP URL (imap://user@host/...)"),
            (
                "imap://host/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser",
                "no user in the URL",
            ),
            ("imap://a@h/INBOX;UIDVALIDITY=1/;UID=1", "no ;URLAUTH= in the URL"),
            (
                "imap://a@h/INBOX/;UID=1;URLAUTH=authuser",
                "a URLAUTH URL needs the mailbox's UIDVALIDITY",
            ),
            (
                "imap://a@h/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=root",
                "bad URLAUTH access",
            ),
            (
                "imap://a@h/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=user+",
                "bad URLAUTH access",
            ),
            (
                "imap://a@h/INBOX;UIDVALIDITY=1/;UID=1;EXPIRE=tomorrow;URLAUTH=authuser",
                "bad EXPIRE",
            ),
            (
                "imap://a@h/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser:internal",
                "bad URLAUTH verifier",
            ),
            ("imap://a@h:x/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser", "bad port"),
            ("imap://a@h%20x/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser", "bad host"),
            (
                "imap://a;URLAUTH=x@h/INBOX;UIDVALIDITY=1/;UID=1",
                "no ;URLAUTH= in the URL",
            ),
        ] {
            assert_eq!(parse_auth_url(bad).err(), Some(why), "{bad}");
        }
        for (url, host) in [
            ("imap://a@[::1]/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser", "[::1]"),
            (
                "imap://a@[::1]:993/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser",
                "[::1]",
            ),
            (
                "imap://a@10.0.0.1:143/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser",
                "10.0.0.1",
            ),
        ] {
            assert_eq!(parse_auth_url(url).map(|u| u.host), Ok(host.to_string()), "{url}");
        }
        for bad in [
            "imap://a@[::1/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser",
            "imap://a@[::1]x/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser",
            "imap://a@[zz]/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser",
        ] {
            assert_eq!(parse_auth_url(bad).err(), Some("bad host"), "{bad}");
        }
        assert_eq!(
            parse_auth_url("imap://a@h:/INBOX;UIDVALIDITY=1/;UID=1;URLAUTH=authuser").err(),
            Some("bad port")
        );
        let long = format!(
            "imap://a@h/{};UIDVALIDITY=1/;UID=1;URLAUTH=authuser",
            "x".repeat(MAX_URL)
        );
        assert_eq!(parse_auth_url(&long).err(), Some("URL too long"));
    }

    #[test]
    fn dates_are_rfc3339_with_offsets_and_fractions() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339("1970-01-01T01:00:00.123+01:00"), Some(0));
        assert_eq!(rfc3339("1969-12-31T23:30:00-00:30"), Some(0));
        for bad in [
            "1970-01-01 00:00:00Z",
            "1970-13-01T00:00:00Z",
            "1970-01-01T00:00:00",
            "1970-01-01T00:00:00+1:00",
            "1970-01-01T00:00:00.Z",
            "x970-01-01T00:00:00Z",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_are_128_bits_of_hmac_sha256_and_compare_exactly() {
        let key = [7u8; KEY_BYTES];
        let t = token(&key, URL);
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?")
        assert_eq!(
            token(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c7"
        );
        assert!(token_matches(&key, URL, &t));
        assert!(token_matches(&key, URL, &t.to_ascii_uppercase()));
        let mut tampered = t.clone().into_bytes();
        tampered[31] = if tampered[31] == b'0' { b'1' } else { b'0' };
        assert!(!token_matches(&key, URL, &String::from_utf8(tampered).unwrap()));
        assert!(!token_matches(&key, URL, &t[..30]));
        assert!(!token_matches(&key, &format!("{URL}x"), &t));
        assert!(!token_matches(&[8u8; KEY_BYTES], URL, &t));
    }

    #[test]
    fn the_key_file_is_made_once_mode_0600_and_reset_replaces_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(read_key(dir.path()).unwrap().is_none());
        let k1 = key(dir.path()).unwrap();
        assert_eq!(k1.len(), KEY_BYTES);
        let meta = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(*key(dir.path()).unwrap(), *k1);
        reset_key(dir.path()).unwrap();
        let k2 = read_key(dir.path()).unwrap().unwrap();
        assert_ne!(*k2, *k1);
        let meta = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        std::fs::write(dir.path().join(KEY_FILE), "short\n").unwrap();
        assert!(read_key(dir.path()).is_err());
    }
}
