//! The per-destination circuit breaker.
//!
//! ```text
//!   closed ──(failure_threshold consecutive retryable failures)──▶ open
//!     ▲                                                            │ cooldown elapsed
//!     │ probe succeeds (or the receiver answers at all)            ▼
//!     └──────────────────────────────────────────────────────── half_open ──probe fails──▶ open
//!                                                                            (cooldown doubles,
//!                                                                             up to max_cooldown)
//! ```
//!
//! While open, no attempt is made and no attempt budget is spent; after the cooldown one
//! probe is let through. State is plain data with explicit times, so the store keeps it and
//! a restart (or another node) sees the same breaker.

use crate::duration::HumanDuration;
use crate::error::ValidationErrors;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// A destination's `circuit_breaker` setting: `false` disables it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BreakerSpec {
    Enabled(bool),
    Config {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_threshold: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cooldown: Option<HumanDuration>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_cooldown: Option<HumanDuration>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub cooldown_ms: i64,
    pub max_cooldown_ms: i64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cooldown_ms: 30_000,
            max_cooldown_ms: 600_000,
        }
    }
}

impl BreakerConfig {
    /// `None` when the breaker is disabled.
    pub fn from_spec(
        spec: Option<&BreakerSpec>,
        field: &str,
    ) -> Result<Option<Self>, ValidationErrors> {
        let d = BreakerConfig::default();
        let ms = |h: Option<HumanDuration>, default: i64| {
            h.map(|h| h.0.as_millis() as i64).unwrap_or(default)
        };
        match spec {
            None | Some(BreakerSpec::Enabled(true)) => Ok(Some(d)),
            Some(BreakerSpec::Enabled(false)) => Ok(None),
            Some(BreakerSpec::Config {
                failure_threshold,
                cooldown,
                max_cooldown,
            }) => {
                let c = BreakerConfig {
                    failure_threshold: failure_threshold.unwrap_or(d.failure_threshold),
                    cooldown_ms: ms(*cooldown, d.cooldown_ms),
                    max_cooldown_ms: ms(*max_cooldown, d.max_cooldown_ms.max(ms(*cooldown, 0))),
                };
                let mut errs = ValidationErrors::new();
                if !(1..=1000).contains(&c.failure_threshold) {
                    errs.push(
                        format!("{field}.failure_threshold"),
                        "must be between 1 and 1000",
                    );
                }
                if c.cooldown_ms < 1
                    || c.cooldown_ms > Duration::from_secs(86_400).as_millis() as i64
                {
                    errs.push(format!("{field}.cooldown"), "must be between 1ms and 1d");
                }
                if c.max_cooldown_ms < c.cooldown_ms
                    || c.max_cooldown_ms > Duration::from_secs(7 * 86_400).as_millis() as i64
                {
                    errs.push(
                        format!("{field}.max_cooldown"),
                        "must be at least `cooldown` and at most 7d",
                    );
                }
                errs.into_result().map(|_| Some(c))
            }
        }
    }
}

/// Breaker state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Breaker {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        consecutive_failures: u32,
        opened_at: i64,
        cooldown_ms: i64,
        next_probe_at: i64,
    },
    /// One probe is running; it may run until `probe_deadline` (then another may start).
    HalfOpen {
        consecutive_failures: u32,
        opened_at: i64,
        cooldown_ms: i64,
        probe_deadline: i64,
    },
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::Closed {
            consecutive_failures: 0,
        }
    }
}

/// What the breaker allows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: attempts as capacity allows.
    Any,
    /// Cooldown elapsed: exactly one probe ([`Breaker::start_probe`] first).
    Probe,
    /// Open (or a probe is running): no attempt until this time.
    Blocked { until: i64 },
}

/// A state change worth recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    HalfOpened,
    Closed,
    Reopened,
}

impl Transition {
    pub fn action(self) -> &'static str {
        match self {
            Transition::Opened => "breaker.opened",
            Transition::HalfOpened => "breaker.half_opened",
            Transition::Closed => "breaker.closed",
            Transition::Reopened => "breaker.reopened",
        }
    }
}

impl Breaker {
    /// A breaker as the store keeps it (JSON; `None` when it never tripped). An unreadable
    /// state counts as closed: the next attempt rewrites it.
    pub fn from_stored(stored: Option<&str>) -> Breaker {
        stored
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    pub fn name(&self) -> &'static str {
        match self {
            Breaker::Closed { .. } => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen { .. } => "half_open",
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        match self {
            Breaker::Closed {
                consecutive_failures,
            }
            | Breaker::Open {
                consecutive_failures,
                ..
            }
            | Breaker::HalfOpen {
                consecutive_failures,
                ..
            } => *consecutive_failures,
        }
    }

    pub fn permit(&self, now: i64) -> Permit {
        match *self {
            Breaker::Closed { .. } => Permit::Any,
            Breaker::Open { next_probe_at, .. } if now >= next_probe_at => Permit::Probe,
            Breaker::Open { next_probe_at, .. } => Permit::Blocked {
                until: next_probe_at,
            },
            Breaker::HalfOpen { probe_deadline, .. } if now >= probe_deadline => Permit::Probe,
            Breaker::HalfOpen { probe_deadline, .. } => Permit::Blocked {
                until: probe_deadline,
            },
        }
    }

    /// Lets one probe through until `deadline` (its lease).
    pub fn start_probe(&mut self, deadline: i64) -> Option<Transition> {
        match *self {
            Breaker::Open {
                consecutive_failures,
                opened_at,
                cooldown_ms,
                ..
            } => {
                *self = Breaker::HalfOpen {
                    consecutive_failures,
                    opened_at,
                    cooldown_ms,
                    probe_deadline: deadline,
                };
                Some(Transition::HalfOpened)
            }
            Breaker::HalfOpen {
                ref mut probe_deadline,
                ..
            } => {
                *probe_deadline = deadline;
                None
            }
            Breaker::Closed { .. } => None,
        }
    }

    /// The receiver answered (delivered, or a permanent answer: it is reachable).
    pub fn on_answer(&mut self) -> Option<Transition> {
        let was_closed = matches!(self, Breaker::Closed { .. });
        *self = Breaker::Closed {
            consecutive_failures: 0,
        };
        (!was_closed).then_some(Transition::Closed)
    }

    /// A retryable failure (5xx, 429, timeout, connection error).
    pub fn on_retryable_failure(&mut self, cfg: &BreakerConfig, now: i64) -> Option<Transition> {
        match *self {
            Breaker::Closed {
                consecutive_failures,
            } => {
                let n = consecutive_failures + 1;
                if n >= cfg.failure_threshold {
                    *self = Breaker::Open {
                        consecutive_failures: n,
                        opened_at: now,
                        cooldown_ms: cfg.cooldown_ms,
                        next_probe_at: now + cfg.cooldown_ms,
                    };
                    Some(Transition::Opened)
                } else {
                    *self = Breaker::Closed {
                        consecutive_failures: n,
                    };
                    None
                }
            }
            Breaker::HalfOpen {
                consecutive_failures,
                cooldown_ms,
                ..
            } => {
                let cooldown_ms = (cooldown_ms * 2).min(cfg.max_cooldown_ms);
                *self = Breaker::Open {
                    consecutive_failures: consecutive_failures + 1,
                    opened_at: now,
                    cooldown_ms,
                    next_probe_at: now + cooldown_ms,
                };
                Some(Transition::Reopened)
            }
            // A straggler that started before the breaker opened: count it, change nothing.
            Breaker::Open {
                ref mut consecutive_failures,
                ..
            } => {
                *consecutive_failures += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            cooldown_ms: 1_000,
            max_cooldown_ms: 4_000,
        }
    }

    #[test]
    fn opens_probes_doubles_and_closes() {
        let c = cfg();
        let mut b = Breaker::default();
        assert_eq!(b.on_retryable_failure(&c, 0), None);
        assert_eq!(b.on_retryable_failure(&c, 0), None);
        assert_eq!(b.on_retryable_failure(&c, 10), Some(Transition::Opened));
        assert_eq!(b.permit(500), Permit::Blocked { until: 1_010 });
        assert_eq!(b.permit(1_010), Permit::Probe);
        assert_eq!(b.start_probe(2_000), Some(Transition::HalfOpened));
        assert_eq!(
            b.permit(1_500),
            Permit::Blocked { until: 2_000 },
            "one probe at a time"
        );
        assert_eq!(
            b.on_retryable_failure(&c, 1_600),
            Some(Transition::Reopened)
        );
        assert_eq!(
            b.permit(1_600),
            Permit::Blocked { until: 3_600 },
            "cooldown doubled"
        );
        b.start_probe(4_000);
        b.on_retryable_failure(&c, 3_700);
        b.start_probe(10_000);
        b.on_retryable_failure(&c, 8_000);
        assert_eq!(
            b.permit(8_000),
            Permit::Blocked { until: 12_000 },
            "capped at max_cooldown"
        );
        b.start_probe(20_000);
        assert_eq!(b.on_answer(), Some(Transition::Closed));
        assert_eq!(b.permit(0), Permit::Any);
        assert_eq!(b.consecutive_failures(), 0);
    }

    #[test]
    fn spec_forms() {
        assert_eq!(
            BreakerConfig::from_spec(None, "cb").unwrap(),
            Some(BreakerConfig::default())
        );
        assert_eq!(
            BreakerConfig::from_spec(Some(&BreakerSpec::Enabled(false)), "cb").unwrap(),
            None
        );
        let bad = BreakerSpec::Config {
            failure_threshold: Some(0),
            cooldown: None,
            max_cooldown: None,
        };
        assert!(BreakerConfig::from_spec(Some(&bad), "cb").is_err());
    }

    proptest! {
        /// Whatever happens, an open breaker never permits more than one probe at a time,
        /// and a closed breaker never holds `failure_threshold` consecutive failures.
        #[test]
        fn invariants(events in proptest::collection::vec((0u8..3, 0i64..3_000), 1..300)) {
            let c = cfg();
            let mut b = Breaker::default();
            let mut now = 0;
            for (kind, dt) in events {
                now += dt;
                match kind {
                    0 => { b.on_retryable_failure(&c, now); }
                    1 => { b.on_answer(); }
                    _ => {
                        if b.permit(now) == Permit::Probe {
                            b.start_probe(now + 500);
                            prop_assert!(matches!(b.permit(now), Permit::Blocked { .. }), "a second probe is refused");
                        }
                    }
                }
                if let Breaker::Closed { consecutive_failures } = b {
                    prop_assert!(consecutive_failures < c.failure_threshold);
                }
                if let Breaker::Open { cooldown_ms, next_probe_at, opened_at, .. } = b {
                    prop_assert!(cooldown_ms <= c.max_cooldown_ms);
                    prop_assert_eq!(next_probe_at, opened_at + cooldown_ms);
                }
            }
        }
    }
}
