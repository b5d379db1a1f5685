//! Time values in settings: `300`, `"300s"`, `"5m"`, `"2h"`, `"5d"`, `"1w"`, as Postfix writes them.
//!
//! A bare integer is seconds. The value is kept in seconds and printed back in the largest
//! unit that divides it exactly, so `postern config` shows what an administrator would write.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A duration setting with one-second resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Seconds(pub u64);

impl Seconds {
    /// The value as a [`std::time::Duration`].
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }

    /// Parses `"300"`, `"300s"`, `"5m"`, `"2h"`, `"5d"` or `"1w"`.
    pub fn parse(text: &str) -> Result<Seconds, String> {
        let text = text.trim();
        let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
            Some(at) => text.split_at(at),
            None => (text, "s"),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("bad time value {text:?}: expected a number with an optional unit s, m, h, d or w"))?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            "w" => 7 * 86400,
            _ => return Err(format!("bad time unit in {text:?}: expected s, m, h, d or w")),
        };
        n.checked_mul(mult)
            .map(Seconds)
            .ok_or_else(|| format!("time value {text:?} is too large"))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        for (unit, size) in [("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)] {
            if s != 0 && s.is_multiple_of(size) {
                return write!(f, "{}{unit}", s / size);
            }
        }
        write!(f, "{s}s")
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Seconds(n)),
            Raw::Text(t) => Seconds::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_prints_back() {
        assert_eq!(Seconds::parse("300").unwrap(), Seconds(300));
        assert_eq!(Seconds::parse("5d").unwrap(), Seconds(5 * 86400));
        assert_eq!(Seconds::parse("90s").unwrap().to_string(), "90s");
        assert_eq!(Seconds::parse("120").unwrap().to_string(), "2m");
        assert_eq!(Seconds(0).to_string(), "0s");
        assert!(Seconds::parse("5y").is_err());
        assert!(Seconds::parse("").is_err());
        assert!(Seconds::parse("99999999999999999999w").is_err());
    }
}
