//! The canonical form of an envelope address as it is stored in a queue file: `user`
//! becomes `user@myorigin`, the domain is lower-cased without a trailing dot, angle
//! brackets go, the null sender stays empty. cleanup writes every sender and recipient in
//! this form; trivial-rewrite's `Rewrite` request ([`crate::proto::resolve`]) answers
//! with it (after its syntax check).
//!
//! Lenient by design: cleanup's clients (smtpd, pickup) checked the syntax already, and
//! what cleanup stores is bounded by [`storable`], not by the grammar.

/// `user` → `user@myorigin`; the domain lower-cased without a trailing dot; `<>` and the
/// empty string stay empty (the null sender). Angle brackets around the address are
/// removed.
pub fn canonical(addr: &str, myorigin: &str) -> String {
    let a = addr.trim();
    let a = a.strip_prefix('<').and_then(|x| x.strip_suffix('>')).unwrap_or(a);
    if a.is_empty() {
        return String::new();
    }
    match a.rsplit_once('@') {
        Some((local, domain)) if !domain.is_empty() => {
            format!("{local}@{}", domain.trim_end_matches('.').to_ascii_lowercase())
        }
        Some((local, _)) => format!("{local}@{}", myorigin.to_ascii_lowercase()),
        None => format!("{a}@{}", myorigin.to_ascii_lowercase()),
    }
}

/// Whether an address can be stored: no control characters, bounded length.
pub fn storable(a: &str) -> bool {
    a.len() <= 1000 && !a.bytes().any(|b| b < 0x20 || b == 0x7f)
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn forms() {
        assert_eq!(canonical("bob", "example.test"), "bob@example.test");
        assert_eq!(canonical("<Bob@Example.TEST.>", "x"), "Bob@example.test");
        assert_eq!(canonical("<>", "x"), "");
        assert_eq!(canonical("\"a@b\"@C.test", "x"), "\"a@b\"@c.test");
        assert_eq!(canonical("bob@", "Ex.test"), "bob@ex.test");
    }
}
