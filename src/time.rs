//! Wall-clock helpers. Payloads carry Unix seconds (compact on metered links); month
//! boundaries are computed in UTC without a calendar crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, UTC. A clock before 1970 (an RTC-less gateway right
/// after boot) reads as 0 rather than failing.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// (year, month 1-12, day 1-31) of a Unix timestamp, UTC. Howard Hinnant's
/// `civil_from_days` algorithm (public domain, "chrono-Compatible Low-Level Date
/// Algorithms").
pub fn civil_from_unix(secs: u64) -> (i64, u32, u32) {
    let z = (secs / 86_400) as i64 + 719_468;
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

/// Unix seconds as RFC 3339 UTC text (CSV files and screens).
pub fn utc_text(secs: u64) -> String {
    let (y, m, d) = civil_from_unix(secs);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// The month key "YYYY-MM" (UTC) a timestamp falls in; usage is accumulated per key.
pub fn month_key(secs: u64) -> String {
    let (y, m, _) = civil_from_unix(secs);
    format!("{y:04}-{m:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_instants() {
        assert_eq!(civil_from_unix(0), (1970, 1, 1));
        // 2000-02-29T12:00:00Z, a leap day in a century leap year.
        assert_eq!(civil_from_unix(951_825_600), (2000, 2, 29));
        // 2026-11-30T23:59:59Z and one second later.
        assert_eq!(month_key(1_796_083_199), "2026-11");
        assert_eq!(month_key(1_796_083_200), "2026-12");
    }
}
