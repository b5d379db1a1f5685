//! Dates as mail needs them: the RFC 5322 `Date:` form (`Sun, 22 Nov 2026 17:49:46 +0000`)
//! for headers and reports, and the classic syslog stamp (`Nov 22 17:49:46`) for logs.
//! Always UTC: daemons never depend on the host's time zone files.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (H. Hinnant's
/// algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn parts(t: SystemTime) -> (u64, i64, u32, u32, u64) {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86400) as i64;
    let (y, m, d) = civil_from_days(days);
    (secs, y, m, d, secs % 86400)
}

fn month(m: u32) -> &'static str {
    MONTHS.get(m.saturating_sub(1) as usize).copied().unwrap_or("Jan")
}

/// `Sun, 22 Nov 2026 17:49:46 +0000`.
pub fn rfc5322(t: SystemTime) -> String {
    let (secs, y, m, d, rem) = parts(t);
    let wday = DAYS[((secs / 86400) % 7) as usize];
    format!(
        "{wday}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        month(m),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// [`rfc5322`] of a time in seconds since the epoch.
pub fn rfc5322_secs(secs: u64) -> String {
    rfc5322(UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// `Nov 22 17:49:46`.
pub fn syslog_stamp(t: SystemTime) -> String {
    let (_, _, m, d, rem) = parts(t);
    format!(
        "{} {d:>2} {:02}:{:02}:{:02}",
        month(m),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for z in [-1000, 0, 11_016, 20_414, 100_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        let t = UNIX_EPOCH + Duration::from_secs(20_414 * 86400 + 17 * 3600 + 49 * 60 + 46);
        assert_eq!(syslog_stamp(t), "Nov 22 17:49:46");
        assert_eq!(rfc5322(t), "Sat, 22 Nov 2025 17:49:46 +0000");
        assert_eq!(rfc5322(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
    }
}
