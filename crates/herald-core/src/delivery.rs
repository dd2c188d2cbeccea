//! Deliveries and attempts: the state machine every store method moves along.
//!
//! ```text
//!              claim (lease)             2xx
//!   pending ───────────────▶ in_flight ─────────▶ delivered
//!      ▲                        │  │
//!      │   retryable, budget    │  │ permanent, or budget spent
//!      └────────────────────────┘  ├────────────────────────────▶ dead ──replay──▶ pending
//!        (or lease expired)        │                               │
//!                                  │ fallback (when = failure)     └──discard──▶ discarded
//!                                  └────────────────────────────▶ failed_over
//! ```
//!
//! `delivered`, `dead`, `failed_over` and `discarded` are terminal; only `dead` can be
//! replayed (back to `pending` with a fresh attempt budget, history kept) or discarded.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (`next_attempt_at`).
    Pending,
    /// Leased by a worker until `lease_until`.
    InFlight,
    Delivered,
    /// In the dead-letter queue.
    Dead,
    /// Handed to a fallback destination.
    FailedOver,
    /// Removed from the DLQ by an operator.
    Discarded,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 6] = [
        Self::Pending,
        Self::InFlight,
        Self::Delivered,
        Self::Dead,
        Self::FailedOver,
        Self::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "in_flight",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::FailedOver => "failed_over",
            Self::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::InFlight)
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    Retry,
    Permanent,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::Permanent => "permanent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Delivered, Self::Retry, Self::Permanent]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// A channel's judgement of one send.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Try again; not before `after` when the provider said so. `pause_destination` holds
    /// back every delivery to the destination until then (a 429).
    Retry {
        after: Option<Duration>,
        pause_destination: bool,
    },
    /// Never try this delivery again. `disable_destination` carries the reason when the
    /// receiver is gone for good (410, a deleted webhook).
    Permanent {
        disable_destination: Option<String>,
    },
}

impl Verdict {
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            Verdict::Delivered => AttemptOutcome::Delivered,
            Verdict::Retry { .. } => AttemptOutcome::Retry,
            Verdict::Permanent { .. } => AttemptOutcome::Permanent,
        }
    }

    pub fn retry() -> Self {
        Verdict::Retry {
            after: None,
            pause_destination: false,
        }
    }

    pub fn permanent() -> Self {
        Verdict::Permanent {
            disable_destination: None,
        }
    }
}

/// What a channel reports about one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct SendReport {
    pub verdict: Verdict,
    pub status_code: Option<u16>,
    /// A short machine-readable class: `http_status`, `timeout`, `connect`, `ssrf_blocked`,
    /// `provider_error`, `template`, `config`, `secret_ref`…
    pub error_class: Option<String>,
    pub error: Option<String>,
    /// At most [`MAX_EXCERPT`] bytes of the answer; never a secret.
    pub response_excerpt: String,
}

impl SendReport {
    pub fn delivered(status_code: Option<u16>, excerpt: String) -> Self {
        SendReport {
            verdict: Verdict::Delivered,
            status_code,
            error_class: None,
            error: None,
            response_excerpt: excerpt,
        }
    }

    pub fn failed(verdict: Verdict, class: &str, error: impl Into<String>) -> Self {
        SendReport {
            verdict,
            status_code: None,
            error_class: Some(class.to_string()),
            error: Some(error.into()),
            response_excerpt: String::new(),
        }
    }
}

/// Largest response excerpt kept with an attempt.
pub const MAX_EXCERPT: usize = 4096;

/// The first [`MAX_EXCERPT`] bytes of a response body as text, cut on a character boundary.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_EXCERPT + 4)]);
    truncate_chars(&text, MAX_EXCERPT).to_string()
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        assert!(DeliveryStatus::Dead.is_terminal());
        assert!(!DeliveryStatus::Pending.is_terminal());
    }

    #[test]
    fn excerpt_cuts_on_char_boundary() {
        let body = "한".repeat(3000);
        let e = excerpt(body.as_bytes());
        assert!(e.len() <= MAX_EXCERPT);
        assert!(e.chars().all(|c| c == '한'));
    }
}
