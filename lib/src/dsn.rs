//! Enhanced mail system status codes (RFC 3463, `class.subject.detail`: `5.1.1`), typed.
//!
//! Every reply a daemon sends and every outcome it hands another daemon carries one; this
//! is the one place they are named, parsed and checked, instead of string literals at each
//! use. On the wire (the JSON of the IPC protocols, SMTP replies, logs, bounce notices) a
//! [`Dsn`] is the same text it always was: `"4.3.0"`.
//!
//! The named codes are the ones Postern sends; [`Dsn::temporary`] and [`Dsn::permanent`]
//! give the other class of the same condition (`5.7.1` refused → `4.7.1` refused for now).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One enhanced status code. `subject` and `detail` are at most 999 (RFC 3463's three
/// digits); `class` is 2, 4 or 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Dsn {
    class: Class,
    subject: u16,
    detail: u16,
}

/// RFC 3463's class: success, persistent transient failure, permanent failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// `2.X.X`: success.
    Success = 2,
    /// `4.X.X`: persistent transient failure — try again later.
    Transient = 4,
    /// `5.X.X`: permanent failure.
    Permanent = 5,
}

/// Why a text is not an enhanced status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an enhanced status code (class.subject.detail, class 2, 4 or 5): {0:?}")]
pub struct BadDsn(pub String);

const fn code(class: Class, subject: u16, detail: u16) -> Dsn {
    Dsn { class, subject, detail }
}

impl Dsn {
    /// `2.0.0` other or undefined status: done.
    pub const OK: Dsn = code(Class::Success, 0, 0);
    /// `2.1.0` sender address accepted.
    pub const SENDER_OK: Dsn = code(Class::Success, 1, 0);
    /// `2.1.5` destination address valid.
    pub const RECIPIENT_OK: Dsn = code(Class::Success, 1, 5);
    /// `2.7.0` security: authentication succeeded.
    pub const SECURITY_OK: Dsn = code(Class::Success, 7, 0);
    /// `5.1.1` bad destination mailbox address (user unknown).
    pub const BAD_MAILBOX: Dsn = code(Class::Permanent, 1, 1);
    /// `5.0.0` other or undefined status (a reply without an enhanced code: its class).
    pub const UNDEFINED: Dsn = code(Class::Permanent, 0, 0);
    /// `5.1.2` bad destination system address (a domain not delivered here).
    pub const BAD_SYSTEM: Dsn = code(Class::Permanent, 1, 2);
    /// `5.1.3` bad destination mailbox address syntax.
    pub const BAD_ADDRESS_SYNTAX: Dsn = code(Class::Permanent, 1, 3);
    /// `5.1.10` recipient address has null MX (RFC 7505).
    pub const NULL_MX: Dsn = code(Class::Permanent, 1, 10);
    /// `4.2.0` other or undefined mailbox status (a mailbox that cannot be written now).
    pub const MAILBOX_STATUS: Dsn = code(Class::Transient, 2, 0);
    /// `4.2.2` mailbox full (over quota).
    pub const MAILBOX_FULL: Dsn = code(Class::Transient, 2, 2);
    /// `4.3.0` other or undefined mail system status (a local service failed).
    pub const MAIL_SYSTEM: Dsn = code(Class::Transient, 3, 0);
    /// `4.3.1` mail system full (no space for the message).
    pub const SYSTEM_FULL: Dsn = code(Class::Transient, 3, 1);
    /// `4.3.2` system not accepting network messages (shutting down, too busy).
    pub const NOT_ACCEPTING: Dsn = code(Class::Transient, 3, 2);
    /// `5.3.4` message too big for system.
    pub const TOO_BIG: Dsn = code(Class::Permanent, 3, 4);
    /// `4.3.5` system incorrectly configured.
    pub const MISCONFIGURED: Dsn = code(Class::Transient, 3, 5);
    /// `4.4.1` no answer from host (no server could be reached).
    pub const NO_ANSWER: Dsn = code(Class::Transient, 4, 1);
    /// `4.4.2` bad connection (a timeout, a connection dropped).
    pub const BAD_CONNECTION: Dsn = code(Class::Transient, 4, 2);
    /// `4.4.3` directory server failure (a DNS lookup failed for now).
    pub const DIRECTORY_FAILURE: Dsn = code(Class::Transient, 4, 3);
    /// `5.4.4` unable to route (no such domain, no address for the next hop).
    pub const UNABLE_TO_ROUTE: Dsn = code(Class::Permanent, 4, 4);
    /// `5.4.6` routing loop detected (mail forwarding or alias loop).
    pub const ROUTING_LOOP: Dsn = code(Class::Permanent, 4, 6);
    /// `4.4.7` delivery time expired (`maximal_queue_lifetime`; Postfix bounces with it).
    pub const EXPIRED: Dsn = code(Class::Transient, 4, 7);
    /// `5.5.0` other or undefined protocol status.
    pub const PROTOCOL: Dsn = code(Class::Permanent, 5, 0);
    /// `5.5.1` invalid command (out of sequence).
    pub const INVALID_COMMAND: Dsn = code(Class::Permanent, 5, 1);
    /// `5.5.2` syntax error.
    pub const SYNTAX_ERROR: Dsn = code(Class::Permanent, 5, 2);
    /// `4.5.3` too many recipients.
    pub const TOO_MANY_RECIPIENTS: Dsn = code(Class::Transient, 5, 3);
    /// `5.5.4` invalid command arguments.
    pub const INVALID_ARGUMENTS: Dsn = code(Class::Permanent, 5, 4);
    /// `5.6.0` other or undefined media error (bad message content).
    pub const MEDIA: Dsn = code(Class::Permanent, 6, 0);
    /// `5.6.7` non-ASCII address without SMTPUTF8 (RFC 6531).
    pub const NEEDS_SMTPUTF8: Dsn = code(Class::Permanent, 6, 7);
    /// `5.7.0` other or undefined security status (STARTTLS first, authentication aborted).
    pub const SECURITY: Dsn = code(Class::Permanent, 7, 0);
    /// `5.7.1` delivery not authorized, message refused.
    pub const NOT_AUTHORIZED: Dsn = code(Class::Permanent, 7, 1);
    /// `4.7.4` security features not supported (TLS required but not offered).
    pub const TLS_UNAVAILABLE: Dsn = code(Class::Transient, 7, 4);
    /// `4.7.5` cryptographic failure (the TLS handshake or its policy failed).
    pub const CRYPTO_FAILURE: Dsn = code(Class::Transient, 7, 5);
    /// `5.7.8` authentication credentials invalid.
    pub const BAD_CREDENTIALS: Dsn = code(Class::Permanent, 7, 8);

    /// A code from its three parts; `None` if subject or detail has more than three digits.
    pub const fn new(class: Class, subject: u16, detail: u16) -> Option<Dsn> {
        if subject > 999 || detail > 999 {
            return None;
        }
        Some(code(class, subject, detail))
    }

    /// The class.
    pub const fn class(self) -> Class {
        self.class
    }

    /// The subject (`5.1.1` → 1).
    pub const fn subject(self) -> u16 {
        self.subject
    }

    /// The detail (`5.1.10` → 10).
    pub const fn detail(self) -> u16 {
        self.detail
    }

    /// `X.0.0` for a reply code without an enhanced code: its class (`451` → `4.0.0`); a
    /// code of no delivery class (`354` where a final reply was due) is transient.
    pub const fn of_reply(reply_code: u16) -> Dsn {
        match reply_code / 100 {
            2 => code(Class::Success, 0, 0),
            5 => Dsn::UNDEFINED,
            _ => code(Class::Transient, 0, 0),
        }
    }

    /// The same condition as a transient failure (`5.7.1` → `4.7.1`).
    pub const fn temporary(self) -> Dsn {
        code(Class::Transient, self.subject, self.detail)
    }

    /// The same condition as a permanent failure (`4.3.0` → `5.3.0`).
    pub const fn permanent(self) -> Dsn {
        code(Class::Permanent, self.subject, self.detail)
    }

    /// This code if it is of `class`, else `fallback` — for a code another process sent
    /// that must agree with the reply it goes with (a 5xx reply with a `4.X.X` code).
    pub fn or_if_not(self, class: Class, fallback: Dsn) -> Dsn {
        if self.class == class { self } else { fallback }
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class as u8, self.subject, self.detail)
    }
}

impl FromStr for Dsn {
    type Err = BadDsn;

    /// `class.subject.detail`: class one digit 2, 4 or 5, the others one to three digits.
    fn from_str(s: &str) -> Result<Dsn, BadDsn> {
        let bad = || BadDsn(s.chars().take(32).collect());
        let mut parts = s.split('.');
        let (Some(c), Some(sub), Some(det), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let class = match c {
            "2" => Class::Success,
            "4" => Class::Transient,
            "5" => Class::Permanent,
            _ => return Err(bad()),
        };
        let num = |t: &str| -> Option<u16> {
            if t.is_empty() || t.len() > 3 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        match (num(sub), num(det)) {
            (Some(subject), Some(detail)) => Ok(code(class, subject, detail)),
            _ => Err(bad()),
        }
    }
}

impl From<Dsn> for String {
    fn from(d: Dsn) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Dsn {
    type Error = BadDsn;
    fn try_from(s: String) -> Result<Dsn, BadDsn> {
        s.parse()
    }
}

impl PartialEq<str> for Dsn {
    fn eq(&self, other: &str) -> bool {
        other.parse::<Dsn>().is_ok_and(|d| d == *self)
    }
}

impl PartialEq<&str> for Dsn {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_same_text() {
        for s in ["2.0.0", "4.3.0", "5.7.1", "5.1.10", "4.999.999"] {
            let d: Dsn = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("5.1.1".parse::<Dsn>().unwrap(), Dsn::BAD_MAILBOX);
        assert_eq!(Dsn::NOT_AUTHORIZED.temporary().to_string(), "4.7.1");
        assert_eq!(Dsn::MAIL_SYSTEM.permanent().to_string(), "5.3.0");
    }

    #[test]
    fn refuses_what_is_not_a_code() {
        for s in [
            "", "5", "5.1", "5.1.1.1", "3.0.0", "5.1000.1", "5.+1.1", "5. 1.1", "5.1.", "x.1.1", "05.1.1",
        ] {
            assert!(s.parse::<Dsn>().is_err(), "{s:?}");
        }
        assert_eq!(Dsn::new(Class::Permanent, 1000, 0), None);
    }

    #[test]
    fn is_a_string_on_the_wire() {
        assert_eq!(serde_json::to_string(&Dsn::MAIL_SYSTEM).unwrap(), "\"4.3.0\"");
        assert_eq!(serde_json::from_str::<Dsn>("\"5.7.1\"").unwrap(), Dsn::NOT_AUTHORIZED);
        assert!(serde_json::from_str::<Dsn>("\"5.7\"").is_err());
    }

    #[test]
    fn names_print_their_codes() {
        for (d, s) in [
            (Dsn::UNDEFINED, "5.0.0"),
            (Dsn::BAD_SYSTEM, "5.1.2"),
            (Dsn::NULL_MX, "5.1.10"),
            (Dsn::MAILBOX_STATUS, "4.2.0"),
            (Dsn::MAILBOX_FULL, "4.2.2"),
            (Dsn::NOT_ACCEPTING, "4.3.2"),
            (Dsn::MISCONFIGURED, "4.3.5"),
            (Dsn::NO_ANSWER, "4.4.1"),
            (Dsn::DIRECTORY_FAILURE, "4.4.3"),
            (Dsn::UNABLE_TO_ROUTE, "5.4.4"),
            (Dsn::ROUTING_LOOP, "5.4.6"),
            (Dsn::EXPIRED, "4.4.7"),
            (Dsn::PROTOCOL, "5.5.0"),
            (Dsn::MEDIA, "5.6.0"),
            (Dsn::TLS_UNAVAILABLE, "4.7.4"),
            (Dsn::CRYPTO_FAILURE, "4.7.5"),
        ] {
            assert_eq!(d.to_string(), s);
            assert_eq!(s.parse::<Dsn>().unwrap(), d);
        }
        assert_eq!((Dsn::NULL_MX.subject(), Dsn::NULL_MX.detail()), (1, 10));
        assert_eq!(Dsn::of_reply(451).to_string(), "4.0.0");
        assert_eq!(Dsn::of_reply(250).to_string(), "2.0.0");
        assert_eq!(Dsn::of_reply(554), Dsn::UNDEFINED);
        assert_eq!(Dsn::of_reply(354).to_string(), "4.0.0");
    }

    #[test]
    fn a_code_of_the_wrong_class_gives_way_to_the_fallback() {
        assert_eq!(
            Dsn::MAIL_SYSTEM.or_if_not(Class::Permanent, Dsn::NOT_AUTHORIZED),
            Dsn::NOT_AUTHORIZED
        );
        assert_eq!(
            Dsn::BAD_MAILBOX.or_if_not(Class::Permanent, Dsn::NOT_AUTHORIZED),
            Dsn::BAD_MAILBOX
        );
    }
}
