//! `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date (IMF-fixdate, RFC 850 or
//! asctime). A date in the past means "now"; anything else is ignored. Callers clamp the
//! result to their configured maximum.

use std::time::{Duration, SystemTime};

/// Parses a `Retry-After` value relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate instead of failing.
        return Some(Duration::from_secs(
            v.parse::<u64>().unwrap_or(u64::MAX / 1_000_000),
        ));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Seconds given as a JSON number (Discord's float `retry_after`, Telegram's integer
/// `parameters.retry_after`). Negative, NaN and infinite values are ignored.
pub fn from_secs_f64(secs: f64) -> Option<Duration> {
    if secs.is_finite() && secs >= 0.0 {
        Some(Duration::from_secs_f64(secs.min(1e9)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn seconds() {
        assert_eq!(
            parse_retry_after("120", at(0)),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", at(0)), Some(Duration::ZERO));
    }

    #[test]
    fn all_three_date_forms() {
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777
        let now = at(784_111_777 - 30);
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(v, now),
                Some(Duration::from_secs(30)),
                "{v}"
            );
        }
    }

    #[test]
    fn past_date_is_zero_and_garbage_is_ignored() {
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(2_000_000_000)),
            Some(Duration::ZERO)
        );
        for v in ["", "soon", "-5", "1.5", "Sun, 32 Nov 1994 08:49:37 GMT"] {
            assert_eq!(parse_retry_after(v, at(0)), None, "{v}");
        }
    }

    #[test]
    fn floats() {
        assert_eq!(from_secs_f64(64.57), Some(Duration::from_secs_f64(64.57)));
        assert_eq!(from_secs_f64(-1.0), None);
        assert_eq!(from_secs_f64(f64::NAN), None);
    }
}
