//! Sizes in bytes with an optional unit, for the byte-count settings
//! (`message_size_limit = "10MB"`): a TOML integer as before, or a string of digits and a
//! unit `k`/`kb`/`kib`, `m`/`mb`/`mib`, `g`/`gb`/`gib` (any case; multiples of 1024, as
//! Dovecot's sizes). Written without quotes a size must be a plain number.

/// Parses `"10MB"`, `"512k"`, `"1g"`, `"1024"`; `None` for anything else (or an overflow).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `deserialize_with` for a byte-count setting: an integer, or a string [`parse_bytes`] reads.
pub fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Bytes)
}

const EXPECTED: &str = "a size: a number of bytes, or one with a unit (10240000, \"10MB\", \"512k\", \"1g\")";

struct Bytes;

impl serde::de::Visitor<'_> for Bytes {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u64, E> {
        Ok(n)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u64, E> {
        u64::try_from(n).map_err(|_| E::custom(format!("{n} is not {EXPECTED}")))
    }

    fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<u64, E> {
        parse_bytes(t).ok_or_else(|| E::custom(format!("{t:?} is not {EXPECTED}")))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn units() {
        assert_eq!(parse_bytes("10240000"), Some(10_240_000));
        assert_eq!(parse_bytes("10MB"), Some(10 << 20));
        assert_eq!(parse_bytes("10m"), Some(10 << 20));
        assert_eq!(parse_bytes("512 KiB"), Some(512 << 10));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("10 apples"), None);
        assert_eq!(parse_bytes("MB"), None);
        assert_eq!(parse_bytes("99999999999999999999g"), None);
    }
}
