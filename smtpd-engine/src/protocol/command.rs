//! Parsing one SMTP command line (RFC 5321 section 4.1, with the ESMTP parameters of
//! SIZE, BODY, SMTPUTF8, DSN, AUTH and CHUNKING) into a typed [`Command`]. Pure, bounded
//! and total: any byte string yields a command or an error reply, never a panic.
//! [`fuzz_command`] is the entry point for the fuzzer.

use super::reply::{Reply, common};
use postern_lib::address::{AddressError, Path, parse_path};
use postern_lib::dsn::Dsn;
use postern_lib::strbuf::trim_ascii_ws;

/// The longest parameter value we keep (ENVID, ORCPT are at most 100 and 500 octets).
const MAX_PARAM: usize = 512;

/// `BODY=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
}

/// The arguments of MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailArgs {
    /// The reverse-path.
    pub path: Option<Path>,
    /// `SIZE=`.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<Body>,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// DSN `RET=`.
    pub ret: Option<String>,
    /// DSN `ENVID=` (xtext-decoded).
    pub envid: Option<String>,
}

/// The arguments of RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptArgs {
    /// The forward-path; `None` for a bare `<postmaster>`.
    pub path: Path,
    /// Whether it was `<postmaster>` without a domain.
    pub bare_postmaster: bool,
    /// DSN `NOTIFY=` keywords.
    pub notify: Vec<String>,
    /// DSN `ORCPT=` as `type;decoded-address`.
    pub orcpt: Option<String>,
}

/// A SASL mechanism we offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mech {
    /// RFC 4616.
    Plain,
    /// The de-facto LOGIN mechanism.
    Login,
}

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO name`.
    Helo(String),
    /// `EHLO name`.
    Ehlo(String),
    /// `MAIL FROM:<path> params`.
    Mail(MailArgs),
    /// `RCPT TO:<path> params`.
    Rcpt(RcptArgs),
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]`.
    Bdat {
        /// Octets that follow.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY`.
    Vrfy,
    /// `HELP`.
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mech [initial-response]`.
    Auth {
        /// The mechanism.
        mech: Mech,
        /// The initial response, still base64.
        initial: Option<String>,
    },
}

/// Parses a command line (without its line ending).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    if line.contains(&0) {
        return Err(Reply::new(500, Dsn::SYNTAX_ERROR, "Error: NUL character in command"));
    }
    let line = trim_ascii_ws(line);
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (
            line.get(..i).unwrap_or_default(),
            trim_ascii_ws(line.get(i + 1..).unwrap_or_default()),
        ),
        None => (line, &b""[..]),
    };
    let verb = verb.to_ascii_uppercase();
    let no_arg = |c: Command, usage: &str| {
        if arg.is_empty() {
            Ok(c)
        } else {
            Err(common::syntax(usage))
        }
    };
    match verb.as_slice() {
        b"HELO" => domain_arg(arg, "HELO hostname").map(Command::Helo),
        b"EHLO" => domain_arg(arg, "EHLO hostname").map(Command::Ehlo),
        b"MAIL" => mail(arg).map(Command::Mail),
        b"RCPT" => rcpt(arg).map(Command::Rcpt),
        b"DATA" => no_arg(Command::Data, "DATA"),
        b"BDAT" => bdat(arg),
        b"RSET" => no_arg(Command::Rset, "RSET"),
        b"NOOP" => Ok(Command::Noop),
        b"QUIT" => Ok(Command::Quit),
        b"VRFY" if !arg.is_empty() => Ok(Command::Vrfy),
        b"VRFY" => Err(common::syntax("VRFY address")),
        b"HELP" => Ok(Command::Help),
        b"STARTTLS" => no_arg(Command::StartTls, "STARTTLS"),
        b"AUTH" => auth(arg),
        _ => Err(Reply::new(502, Dsn::SYNTAX_ERROR, "Error: command not recognized")),
    }
}

/// Fuzz entry point: parses `bytes` as a command line and checks the invariants the rest
/// of the session relies on (an error reply is a well-formed 5xx).
pub fn fuzz_command(bytes: &[u8]) {
    match parse(bytes) {
        Ok(_) => {}
        Err(r) => {
            assert!((500..600).contains(&r.code), "parse errors are permanent");
            let wire = r.to_bytes();
            assert!(wire.ends_with(b"\r\n"));
            assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), r.lines.len().max(1));
        }
    }
}

fn domain_arg(arg: &[u8], usage: &str) -> Result<String, Reply> {
    if arg.is_empty() || arg.len() > 255 || arg.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(common::syntax(usage));
    }
    Ok(String::from_utf8_lossy(arg).into_owned())
}

/// Splits off the path after `FROM:`/`TO:` (a space after the colon is tolerated, as
/// every MTA does).
fn path_part<'a>(arg: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let rest = postern_lib::strbuf::strip_prefix_ignore_ascii_case(arg, prefix)?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

fn address_reply(e: AddressError, what: &str) -> Reply {
    match e {
        AddressError::NonAscii => Reply::new(
            553,
            Dsn::NEEDS_SMTPUTF8,
            format!("Error: {what} address needs SMTPUTF8"),
        ),
        AddressError::NoBrackets => common::syntax(if what == "sender" {
            "MAIL FROM:<address>"
        } else {
            "RCPT TO:<address>"
        }),
        other => Reply::new(
            501,
            Dsn::BAD_ADDRESS_SYNTAX,
            format!("Error: bad {what} address syntax ({other})"),
        ),
    }
}

/// `KEY=VALUE` or `KEY` parameters, upper-cased keys.
fn params(rest: &[u8]) -> Result<Vec<(String, Option<String>)>, Reply> {
    let mut out = Vec::new();
    for p in rest.split(|&b| b == b' ').filter(|p| !p.is_empty()) {
        if p.len() > MAX_PARAM || out.len() >= 16 {
            return Err(Reply::new(501, Dsn::INVALID_ARGUMENTS, "Error: parameter too long"));
        }
        let text =
            std::str::from_utf8(p).map_err(|_| Reply::new(501, Dsn::INVALID_ARGUMENTS, "Error: bad parameter"))?;
        match text.split_once('=') {
            Some((k, v)) => out.push((k.to_ascii_uppercase(), Some(v.to_string()))),
            None => out.push((text.to_ascii_uppercase(), None)),
        }
    }
    Ok(out)
}

fn unsupported(k: &str) -> Reply {
    Reply::new(555, Dsn::INVALID_ARGUMENTS, format!("Unsupported option: {k}"))
}

/// Decodes xtext (RFC 3461 section 4): `+HH` escapes. `None` for bad syntax, for text
/// that is not UTF-8, and for a decoded control character (`+0D+0A`, `+00`, ...): such a
/// value would be dropped later, or split a line of a queue file, a report or a log, so it
/// is refused when given, as Postfix refuses it.
pub fn xtext_decode(s: &str) -> Option<String> {
    let text = xtext_unquote(s)?;
    (!text.chars().any(char::is_control)).then_some(text)
}

fn xtext_unquote(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'+' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if (b'!'..=b'~').contains(&c) && c != b'=' {
            out.push(c);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

fn mail(arg: &[u8]) -> Result<MailArgs, Reply> {
    let p = path_part(arg, b"FROM:").ok_or_else(|| common::syntax("MAIL FROM:<address>"))?;
    let (path, rest) = parse_path(p, true, true).map_err(|e| address_reply(e, "sender"))?;
    let mut m = MailArgs {
        path: Some(path),
        ..MailArgs::default()
    };
    for (k, v) in params(rest)? {
        match (k.as_str(), v) {
            ("SIZE", Some(v)) => m.size = Some(v.parse().map_err(|_| common::syntax("SIZE=number"))?),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => m.body = Some(Body::SevenBit),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => m.body = Some(Body::EightBitMime),
            ("SMTPUTF8", None) => m.smtputf8 = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS") => {
                m.ret = Some(v.to_ascii_uppercase())
            }
            ("ENVID", Some(v)) => {
                // RFC 3461 section 4.4: printable ASCII, at most 100 characters, once.
                let d = xtext_decode(&v)
                    .filter(|d| !d.is_empty() && d.len() <= 100 && d.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
                    .filter(|_| m.envid.is_none());
                m.envid = Some(d.ok_or_else(|| Reply::new(501, Dsn::INVALID_ARGUMENTS, "Bad ENVID parameter syntax"))?);
            }
            ("AUTH", Some(_)) => {}
            (k, _) => return Err(unsupported(k)),
        }
    }
    if let Some(Path::Addr(a)) = &m.path
        && a.is_utf8()
        && !m.smtputf8
    {
        return Err(address_reply(AddressError::NonAscii, "sender"));
    }
    Ok(m)
}

fn rcpt(arg: &[u8]) -> Result<RcptArgs, Reply> {
    let p = path_part(arg, b"TO:").ok_or_else(|| common::syntax("RCPT TO:<address>"))?;
    let (path, rest, bare_postmaster) = match postern_lib::strbuf::strip_prefix_ignore_ascii_case(p, b"<postmaster>") {
        Some(rest) => (Path::Null, rest, true),
        None => {
            let (path, rest) = parse_path(p, true, false).map_err(|e| address_reply(e, "recipient"))?;
            (path, rest, false)
        }
    };
    let mut r = RcptArgs {
        path,
        bare_postmaster,
        notify: Vec::new(),
        orcpt: None,
    };
    for (k, v) in params(rest)? {
        match (k.as_str(), v) {
            ("NOTIFY", Some(v)) => {
                let words: Vec<String> = v.split(',').map(str::to_ascii_uppercase).collect();
                let valid = words
                    .iter()
                    .all(|w| matches!(w.as_str(), "NEVER" | "SUCCESS" | "FAILURE" | "DELAY"));
                if !valid || (words.len() > 1 && words.iter().any(|w| w == "NEVER")) {
                    return Err(common::syntax("NOTIFY=NEVER or SUCCESS,FAILURE,DELAY"));
                }
                r.notify = words;
            }
            ("ORCPT", Some(v)) => {
                // RFC 3461 section 4.2: `addr-type ";" xtext`, once.
                let bad = || Reply::new(501, Dsn::INVALID_ARGUMENTS, "Error: Bad ORCPT parameter syntax");
                let (ty, addr) = v.split_once(';').ok_or_else(bad)?;
                if ty.is_empty() || !ty.bytes().all(|b| b.is_ascii_graphic()) || r.orcpt.is_some() {
                    return Err(bad());
                }
                let addr = xtext_decode(addr).filter(|a| !a.is_empty()).ok_or_else(bad)?;
                r.orcpt = Some(format!("{};{addr}", ty.to_ascii_lowercase()));
            }
            (k, _) => return Err(unsupported(k)),
        }
    }
    Ok(r)
}

fn bdat(arg: &[u8]) -> Result<Command, Reply> {
    let usage = || common::syntax("BDAT size [LAST]");
    let text = std::str::from_utf8(arg).map_err(|_| usage())?;
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let size = words.next().and_then(|s| s.parse::<u64>().ok()).ok_or_else(usage)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(usage()),
    };
    if words.next().is_some() {
        return Err(usage());
    }
    Ok(Command::Bdat { size, last })
}

fn auth(arg: &[u8]) -> Result<Command, Reply> {
    let text = std::str::from_utf8(arg).map_err(|_| common::syntax("AUTH mechanism"))?;
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let mech = match words.next() {
        Some(m) if m.eq_ignore_ascii_case("PLAIN") => Mech::Plain,
        Some(m) if m.eq_ignore_ascii_case("LOGIN") => Mech::Login,
        Some(_) => {
            return Err(Reply::new(
                504,
                Dsn::INVALID_ARGUMENTS,
                "Error: Unsupported authentication mechanism",
            ));
        }
        None => return Err(common::syntax("AUTH mechanism")),
    };
    let initial = words.next().map(String::from);
    if words.next().is_some() {
        return Err(common::syntax("AUTH mechanism [initial-response]"));
    }
    Ok(Command::Auth { mech, initial })
}
