//! Per-destination rate limits: a token bucket.
//!
//! `"5/s"`, `"60/m"`, `"1000/h"`, or `{"rate": "5/s", "burst": 10}`. The bucket holds at most
//! `burst` tokens (default: the per-second rate rounded up, at least 1) and refills at
//! `rate`. The bucket is plain state with explicit times, so a store can keep it in a row
//! and make the limit hold for a whole cluster.

use crate::error::ValidationErrors;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A destination's `rate_limit` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RateLimitSpec {
    /// `"5/s"`.
    Rate(String),
    Full {
        rate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        burst: Option<u32>,
    },
}

/// A validated limit: `per_ms` tokens per millisecond, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_ms: f64,
    pub burst: f64,
}

const MAX_COUNT: u32 = 1_000_000;

fn parse_rate(s: &str) -> Result<(u32, i64), String> {
    let (count, unit) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected <count>/<s|m|h>, e.g. \"5/s\""))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: the count must be a whole number"))?;
    if count == 0 || count > MAX_COUNT {
        return Err(format!(
            "{s:?}: the count must be between 1 and {MAX_COUNT}"
        ));
    }
    let period_ms = match unit.trim() {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("{s:?}: unit {other:?} must be s, m or h")),
    };
    Ok((count, period_ms))
}

impl RateLimit {
    pub fn from_spec(spec: &RateLimitSpec, field: &str) -> Result<Self, ValidationErrors> {
        let (rate, burst) = match spec {
            RateLimitSpec::Rate(r) => (r, None),
            RateLimitSpec::Full { rate, burst } => (rate, *burst),
        };
        let (count, period_ms) =
            parse_rate(rate).map_err(|e| ValidationErrors::single(field, e))?;
        let per_ms = count as f64 / period_ms as f64;
        let burst = match burst {
            Some(0) => {
                return Err(ValidationErrors::single(
                    format!("{field}.burst"),
                    "must be at least 1",
                ));
            }
            Some(b) if b > MAX_COUNT => {
                return Err(ValidationErrors::single(
                    format!("{field}.burst"),
                    format!("at most {MAX_COUNT}"),
                ));
            }
            Some(b) => b as f64,
            None => (per_ms * 1000.0).ceil().max(1.0),
        };
        Ok(RateLimit { per_ms, burst })
    }
}

/// Token-bucket state: `tokens` as of `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenBucket {
    pub tokens: f64,
    pub at_ms: i64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(limit: &RateLimit, now_ms: i64) -> Self {
        TokenBucket {
            tokens: limit.burst,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, limit: &RateLimit, now_ms: i64) {
        if now_ms > self.at_ms {
            self.tokens =
                (self.tokens + (now_ms - self.at_ms) as f64 * limit.per_ms).min(limit.burst);
            self.at_ms = now_ms;
        }
    }

    /// Whole tokens available now.
    pub fn available(&mut self, limit: &RateLimit, now_ms: i64) -> u32 {
        self.refill(limit, now_ms);
        // A hair of tolerance for floating-point refill arithmetic.
        (self.tokens + 1e-9).floor().max(0.0) as u32
    }

    /// Spends `n` tokens (callers take at most what [`available`](Self::available) said).
    pub fn take(&mut self, limit: &RateLimit, n: u32, now_ms: i64) {
        self.refill(limit, now_ms);
        self.tokens -= n as f64;
    }

    /// When the next whole token will be there.
    pub fn next_token_at(&self, limit: &RateLimit) -> i64 {
        if self.tokens >= 1.0 {
            return self.at_ms;
        }
        self.at_ms + ((1.0 - self.tokens) / limit.per_ms).ceil() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(s: &str) -> RateLimit {
        RateLimit::from_spec(&RateLimitSpec::Rate(s.into()), "rate_limit").unwrap()
    }

    #[test]
    fn parses_rates_and_default_bursts() {
        assert_eq!(limit("5/s").burst, 5.0);
        assert_eq!(limit("60/m").burst, 1.0);
        assert_eq!(limit("1000/h").burst, 1.0);
        assert_eq!(limit("150/m").burst, 3.0);
        let full = RateLimit::from_spec(
            &RateLimitSpec::Full {
                rate: "1/s".into(),
                burst: Some(10),
            },
            "rate_limit",
        )
        .unwrap();
        assert_eq!(full.burst, 10.0);
        for bad in ["5", "0/s", "5/d", "x/s", "-1/s"] {
            assert!(
                RateLimit::from_spec(&RateLimitSpec::Rate(bad.into()), "rate_limit").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn refills_at_the_rate() {
        let l = limit("2/s");
        let mut b = TokenBucket::full(&l, 0);
        assert_eq!(b.available(&l, 0), 2);
        b.take(&l, 2, 0);
        assert_eq!(b.available(&l, 0), 0);
        assert_eq!(b.next_token_at(&l), 500);
        assert_eq!(b.available(&l, 499), 0);
        assert_eq!(b.available(&l, 500), 1);
        assert_eq!(b.available(&l, 10_000), 2, "never above the burst");
    }

    proptest! {
        /// Over any run of takes, what was spent never exceeds the burst plus what the rate
        /// refilled: the bucket cannot be talked into sending faster than its limit.
        #[test]
        fn never_exceeds_burst_plus_rate(count in 1u32..50, unit in 0usize..3, burst in proptest::option::of(1u32..20),
                                         steps in proptest::collection::vec((0i64..2_000, 0u32..10), 1..200)) {
            let unit = ["s", "m", "h"][unit];
            let l = RateLimit::from_spec(&RateLimitSpec::Full { rate: format!("{count}/{unit}"), burst }, "r").unwrap();
            let mut b = TokenBucket::full(&l, 0);
            let (mut now, mut spent) = (0i64, 0u64);
            for (dt, want) in steps {
                now += dt;
                let n = want.min(b.available(&l, now));
                b.take(&l, n, now);
                spent += n as u64;
                prop_assert!(b.tokens >= -1e-6, "never overdrawn");
                prop_assert!(spent as f64 <= l.burst + l.per_ms * now as f64 + 1e-6);
            }
        }

        /// Asking for tokens at the advertised time always yields one.
        #[test]
        fn next_token_at_is_honest(count in 1u32..100, spend in 0u32..5, at in 0i64..10_000) {
            let l = RateLimit::from_spec(&RateLimitSpec::Rate(format!("{count}/s")), "r").unwrap();
            let mut b = TokenBucket::full(&l, at);
            let n = spend.min(b.available(&l, at));
            b.take(&l, n, at);
            let t = b.next_token_at(&l);
            prop_assert!(t >= at);
            prop_assert!(b.available(&l, t) >= 1);
        }
    }
}
