//! Why a pending delivery is not being attempted right now, read from its destination's
//! live state (the [destination cache](crate::destination_cache)): disabled, paused by a
//! Retry-After, circuit open, rate limited, or simply not due yet. The API shows it on a
//! pending delivery as `waiting`, so nobody has to guess from timestamps.

use crate::destination_cache::{DestinationCache, DestinationEntry};
use herald_core::breaker::{Breaker, Permit};
use herald_core::clock::rfc3339;
use herald_core::delivery::DeliveryStatus;
use herald_store::DeliveryRecord;
use serde::Serialize;
use utoipa::ToSchema;

/// What holds a delivery back, the strongest reason first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// The destination is disabled (a 410, a vanished webhook, sustained failure) until an
    /// admin enables it again.
    Disabled,
    /// The receiver asked for a pause (429 or 503 with Retry-After).
    Paused,
    /// The circuit breaker is open: no attempt until the next probe.
    CircuitOpen,
    /// The breaker is half-open and its one probe is running; the rest wait for its result.
    Probing,
    /// The destination's `rate_limit` is spent for now.
    RateLimited,
    /// The next attempt (a retry after backoff) is scheduled for later.
    Scheduled,
}

/// A pending delivery's wait, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Waiting {
    pub reason: WaitReason,
    /// When the wait ends, if that is known (RFC 3339).
    pub until: Option<String>,
    /// The wait in words, e.g. `circuit open until 2026-12-07T11:22:36.512Z`.
    pub detail: String,
}

/// The part of a destination's live state that can hold a delivery back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DestinationNow {
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// Epoch ms until which no attempt is made.
    pub paused_until: Option<i64>,
    /// `None` when the destination has no circuit breaker.
    pub breaker: Option<Breaker>,
    /// The last claim round got fewer deliveries than it asked for because the
    /// destination's rate limit ran out.
    pub rate_limited: bool,
}

impl DestinationNow {
    pub fn of(e: &DestinationEntry) -> Self {
        DestinationNow {
            enabled: e.enabled(),
            disabled_reason: e.disabled_reason(),
            paused_until: e.paused_until(),
            breaker: e
                .spec
                .breaker()
                .map(|_| e.breaker.lock().expect("breaker lock").clone()),
            rate_limited: e.spec.rate_limit().is_some() && e.rate_limited(),
        }
    }
}

/// Why a delivery in `status`, next due at `next_attempt_at`, waits at `now` on a
/// destination in state `dest`; `None` when it does not wait (not pending, or due and
/// free to go).
pub fn waiting(
    dest: &DestinationNow,
    status: DeliveryStatus,
    next_attempt_at: Option<i64>,
    now: i64,
) -> Option<Waiting> {
    if status != DeliveryStatus::Pending {
        return None;
    }
    let wait = |reason, until: Option<i64>, detail: String| {
        Some(Waiting {
            reason,
            until: until.map(rfc3339),
            detail,
        })
    };
    if !dest.enabled {
        let detail = match &dest.disabled_reason {
            Some(r) => format!("destination disabled: {r}"),
            None => "destination disabled".to_string(),
        };
        return wait(WaitReason::Disabled, None, detail);
    }
    if let Some(p) = dest.paused_until.filter(|p| *p > now) {
        return wait(
            WaitReason::Paused,
            Some(p),
            format!("paused by Retry-After until {}", rfc3339(p)),
        );
    }
    if let Some(b) = &dest.breaker
        && let Permit::Blocked { until } = b.permit(now)
    {
        return match b {
            Breaker::Open { .. } => wait(
                WaitReason::CircuitOpen,
                Some(until),
                format!("circuit open until {}", rfc3339(until)),
            ),
            _ => wait(
                WaitReason::Probing,
                Some(until),
                "circuit half-open: a probe is running; the others wait for its answer".to_string(),
            ),
        };
    }
    if let Some(at) = next_attempt_at.filter(|at| *at > now) {
        return wait(
            WaitReason::Scheduled,
            Some(at),
            format!("next attempt at {}", rfc3339(at)),
        );
    }
    if dest.rate_limited {
        return wait(
            WaitReason::RateLimited,
            None,
            "rate limited: the destination's rate_limit allows no attempt at the moment"
                .to_string(),
        );
    }
    None
}

/// [`waiting`] for a stored delivery, its destination read from the cache.
pub fn for_delivery(cache: &DestinationCache, d: &DeliveryRecord, now: i64) -> Option<Waiting> {
    if d.status != DeliveryStatus::Pending {
        return None;
    }
    let dest = DestinationNow::of(cache.get(&d.destination)?.as_ref());
    waiting(&dest, d.status, d.next_attempt_at, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_765_106_556_000; // 2025-12-07T11:22:36Z

    fn open() -> DestinationNow {
        DestinationNow {
            enabled: true,
            ..Default::default()
        }
    }

    fn why(dest: &DestinationNow, next: Option<i64>) -> Option<Waiting> {
        waiting(dest, DeliveryStatus::Pending, next, NOW)
    }

    #[test]
    fn a_due_delivery_on_a_free_destination_does_not_wait() {
        assert_eq!(why(&open(), Some(NOW - 1)), None);
        assert_eq!(why(&open(), None), None);
    }

    #[test]
    fn only_pending_deliveries_wait() {
        let disabled = DestinationNow::default();
        for s in DeliveryStatus::ALL {
            let w = waiting(&disabled, s, None, NOW);
            assert_eq!(w.is_some(), s == DeliveryStatus::Pending, "{s:?}");
        }
    }

    #[test]
    fn a_disabled_destination_says_why_before_anything_else() {
        let d = DestinationNow {
            enabled: false,
            disabled_reason: Some("410 Gone: the receiver is gone".into()),
            paused_until: Some(NOW + 60_000),
            ..Default::default()
        };
        let w = why(&d, Some(NOW + 5_000)).unwrap();
        assert_eq!(w.reason, WaitReason::Disabled);
        assert_eq!(
            w.detail,
            "destination disabled: 410 Gone: the receiver is gone"
        );
        assert_eq!(w.until, None);
        let bare = why(&DestinationNow::default(), None).unwrap();
        assert_eq!(bare.detail, "destination disabled");
    }

    #[test]
    fn a_retry_after_pause_names_its_end_and_an_expired_one_is_ignored() {
        let mut d = open();
        d.paused_until = Some(NOW + 60_000);
        let w = why(&d, None).unwrap();
        assert_eq!(w.reason, WaitReason::Paused);
        assert_eq!(w.until.as_deref(), Some("2025-12-07T11:23:36Z"));
        assert_eq!(w.detail, "paused by Retry-After until 2025-12-07T11:23:36Z");
        d.paused_until = Some(NOW - 1);
        assert_eq!(why(&d, None), None);
    }

    #[test]
    fn an_open_circuit_waits_for_its_probe_and_a_due_probe_does_not_wait() {
        let mut d = open();
        d.breaker = Some(Breaker::Open {
            consecutive_failures: 5,
            opened_at: NOW - 1_000,
            cooldown_ms: 30_000,
            next_probe_at: NOW + 29_000,
        });
        let w = why(&d, Some(NOW + 100)).unwrap();
        assert_eq!(w.reason, WaitReason::CircuitOpen);
        assert_eq!(w.detail, "circuit open until 2025-12-07T11:23:05Z");
        d.breaker = Some(Breaker::Open {
            consecutive_failures: 5,
            opened_at: NOW - 31_000,
            cooldown_ms: 30_000,
            next_probe_at: NOW - 1_000,
        });
        assert_eq!(why(&d, None), None, "the probe may go now");
        d.breaker = Some(Breaker::HalfOpen {
            consecutive_failures: 5,
            opened_at: NOW - 31_000,
            cooldown_ms: 30_000,
            probe_deadline: NOW + 10_000,
        });
        assert_eq!(why(&d, None).unwrap().reason, WaitReason::Probing);
        d.breaker = Some(Breaker::default());
        assert_eq!(why(&d, None), None, "a closed breaker holds nothing back");
    }

    #[test]
    fn a_retry_in_backoff_is_scheduled_and_a_spent_rate_limit_holds_a_due_one() {
        let w = why(&open(), Some(NOW + 2_000)).unwrap();
        assert_eq!(w.reason, WaitReason::Scheduled);
        assert_eq!(w.detail, "next attempt at 2025-12-07T11:22:38Z");
        let mut d = open();
        d.rate_limited = true;
        let w = why(&d, Some(NOW)).unwrap();
        assert_eq!(w.reason, WaitReason::RateLimited);
        assert!(w.detail.starts_with("rate limited"), "{}", w.detail);
        assert_eq!(
            why(&d, Some(NOW + 2_000)).unwrap().reason,
            WaitReason::Scheduled,
            "not due yet: the limit is not what it waits for"
        );
    }
}
