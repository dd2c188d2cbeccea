//! Retry schedules: how long to wait after a failed attempt before the next one.
//!
//! The default is `5s, 30s, 2m, 10m, 30m, 1h, 2h, 4h, 8h, 8h` — eleven attempts over about a
//! day — with ±20 % jitter so that deliveries failing together do not retry together.

use crate::duration::HumanDuration;
use crate::error::ValidationErrors;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

const DEFAULT_SCHEDULE_SECS: [u64; 10] = [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800];
/// Upper bound on attempts a destination may configure.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// A destination's `retry` setting as written in configuration: either an explicit
/// `schedule`, or exponential `max_attempts`/`initial`/`multiplier`/`max`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<HumanDuration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
enum Delays {
    /// Delay before attempt n+2 is `schedule[n]`.
    Fixed(Vec<Duration>),
    Exponential {
        max_attempts: u32,
        initial: Duration,
        multiplier: f64,
        max: Duration,
    },
}

/// A validated retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    delays: Delays,
    jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            delays: Delays::Fixed(
                DEFAULT_SCHEDULE_SECS
                    .iter()
                    .map(|s| Duration::from_secs(*s))
                    .collect(),
            ),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// Builds the policy from its configuration, naming invalid fields under `field`.
    pub fn from_spec(spec: Option<&RetrySpec>, field: &str) -> Result<Self, ValidationErrors> {
        let Some(spec) = spec else {
            return Ok(Self::default());
        };
        let mut errs = ValidationErrors::new();
        let jitter = spec.jitter.unwrap_or(true);
        let exp_fields = spec.max_attempts.is_some()
            || spec.initial.is_some()
            || spec.multiplier.is_some()
            || spec.max.is_some();
        let delays = match (&spec.schedule, exp_fields) {
            (Some(_), true) => {
                errs.push(field, "give either `schedule` or `max_attempts`/`initial`/`multiplier`/`max`, not both");
                Delays::Fixed(vec![])
            }
            (Some(schedule), false) => {
                if schedule.len() as u32 >= MAX_ATTEMPTS_LIMIT {
                    errs.push(
                        format!("{field}.schedule"),
                        format!("at most {} entries", MAX_ATTEMPTS_LIMIT - 1),
                    );
                }
                Delays::Fixed(schedule.iter().map(|d| d.0).collect())
            }
            (None, true) => {
                let max_attempts = spec.max_attempts.unwrap_or(11);
                if max_attempts == 0 || max_attempts > MAX_ATTEMPTS_LIMIT {
                    errs.push(
                        format!("{field}.max_attempts"),
                        format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
                    );
                }
                let multiplier = spec.multiplier.unwrap_or(2.0);
                if !(1.0..=10.0).contains(&multiplier) {
                    errs.push(format!("{field}.multiplier"), "must be between 1 and 10");
                }
                let initial = spec.initial.map(|d| d.0).unwrap_or(Duration::from_secs(5));
                let max = spec
                    .max
                    .map(|d| d.0)
                    .unwrap_or(Duration::from_secs(8 * 3600));
                if max < initial {
                    errs.push(format!("{field}.max"), "must not be shorter than `initial`");
                }
                Delays::Exponential {
                    max_attempts,
                    initial,
                    multiplier,
                    max,
                }
            }
            (None, false) => Self::default().delays,
        };
        errs.into_result()?;
        Ok(RetryPolicy { delays, jitter })
    }

    /// Total number of attempts, the first included.
    pub fn max_attempts(&self) -> u32 {
        match &self.delays {
            Delays::Fixed(s) => s.len() as u32 + 1,
            Delays::Exponential { max_attempts, .. } => *max_attempts,
        }
    }

    /// The un-jittered wait after attempt `attempts_made` (1-based) failed, or `None` when the
    /// budget is spent.
    pub fn base_delay(&self, attempts_made: u32) -> Option<Duration> {
        if attempts_made == 0 || attempts_made >= self.max_attempts() {
            return None;
        }
        let i = attempts_made - 1;
        Some(match &self.delays {
            Delays::Fixed(s) => s[i as usize],
            Delays::Exponential {
                initial,
                multiplier,
                max,
                ..
            } => {
                let secs = initial.as_secs_f64() * multiplier.powi(i as i32);
                Duration::from_secs_f64(secs.min(max.as_secs_f64()))
            }
        })
    }

    /// The wait after attempt `attempts_made` failed, with ±20 % jitter unless disabled.
    pub fn delay(&self, attempts_made: u32) -> Option<Duration> {
        self.delay_at(attempts_made, rand::thread_rng().gen_range(0.0..=1.0))
    }

    /// [`delay`](Self::delay) with the jitter drawn by the caller: `unit` in `0..=1` maps
    /// to a factor of 0.8..=1.2 (0.5: the base delay exactly).
    pub fn delay_at(&self, attempts_made: u32, unit: f64) -> Option<Duration> {
        let base = self.base_delay(attempts_made)?;
        if !self.jitter || base.is_zero() {
            return Some(base);
        }
        Some(base.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::parse_duration;

    fn hd(s: &str) -> HumanDuration {
        HumanDuration(parse_duration(s).unwrap())
    }

    #[test]
    fn default_schedule_is_eleven_attempts_over_a_day() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 11);
        let total: Duration = (1..11).map(|n| p.base_delay(n).unwrap()).sum();
        assert_eq!(
            total,
            Duration::from_secs(5 + 30 + 120 + 600 + 1800 + 3600 + 7200 + 14400 + 28800 + 28800)
        );
        assert_eq!(p.base_delay(11), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = RetryPolicy::default();
        for _ in 0..200 {
            let d = p.delay(2).unwrap().as_secs_f64();
            assert!((24.0..=36.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn explicit_schedule_without_jitter() {
        let spec = RetrySpec {
            schedule: Some(vec![hd("1s"), hd("5s")]),
            jitter: Some(false),
            ..Default::default()
        };
        let p = RetryPolicy::from_spec(Some(&spec), "retry").unwrap();
        assert_eq!(p.max_attempts(), 3);
        assert_eq!(p.delay(1), Some(Duration::from_secs(1)));
        assert_eq!(p.delay(2), Some(Duration::from_secs(5)));
        assert_eq!(p.delay(3), None);
    }

    #[test]
    fn exponential_is_capped() {
        let spec = RetrySpec {
            max_attempts: Some(8),
            initial: Some(hd("1s")),
            multiplier: Some(2.0),
            max: Some(hd("10s")),
            jitter: Some(false),
            ..Default::default()
        };
        let p = RetryPolicy::from_spec(Some(&spec), "retry").unwrap();
        let delays: Vec<u64> = (1..8).map(|n| p.delay(n).unwrap().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(p.delay(8), None);
    }

    #[test]
    fn mixing_forms_is_rejected() {
        let spec = RetrySpec {
            schedule: Some(vec![hd("1s")]),
            max_attempts: Some(3),
            ..Default::default()
        };
        let err = RetryPolicy::from_spec(Some(&spec), "retry").unwrap_err();
        assert_eq!(err.0[0].field, "retry");
    }
}
