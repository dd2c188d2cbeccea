//! Wall-clock helpers. Scheduling columns are epoch milliseconds in every store.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 text (UTC, millisecond precision) for epoch milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let dt = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let dt = dt
        .replace_nanosecond((ms.rem_euclid(1000) as u32) * 1_000_000)
        .unwrap_or(dt);
    dt.format(&Rfc3339).unwrap_or_else(|_| ms.to_string())
}

/// Parses RFC 3339 text to epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|dt| (dt.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let s = rfc3339(1_614_265_330_123);
        assert_eq!(s, "2021-02-25T15:02:10.123Z");
        assert_eq!(parse_rfc3339(&s), Some(1_614_265_330_123));
    }
}
