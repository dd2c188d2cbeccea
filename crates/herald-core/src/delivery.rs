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

use crate::destination::{FallbackSpec, FallbackWhen};
use crate::ids::DeliveryId;
use crate::retry::RetryPolicy;
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

/// The state a delivery moves to after an attempt (or a hand-over without one): the
/// arrows leaving `in_flight` in the diagram above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextState {
    Delivered,
    /// Back to `pending`, due at `at` (epoch ms).
    Retry {
        at: i64,
    },
    Dead,
    /// Handed to a fallback: this delivery ends `failed_over` and a new pending delivery to
    /// `fallback` (with `fallback_of` set) is created under `new_delivery_id`.
    FailedOver {
        fallback: String,
        new_delivery_id: DeliveryId,
    },
}

/// As logs show it: `delivered`, `retry at 2026-12-07T11:22:36.512Z` (RFC 3339), `dead`,
/// `failed over to backup as dlv_…`.
impl std::fmt::Display for NextState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextState::Delivered => f.write_str("delivered"),
            NextState::Retry { at } => write!(f, "retry at {}", crate::clock::rfc3339(*at)),
            NextState::Dead => f.write_str("dead"),
            NextState::FailedOver {
                fallback,
                new_delivery_id,
            } => write!(f, "failed over to {fallback} as {new_delivery_id}"),
        }
    }
}

impl NextState {
    /// The status the delivery is stored with.
    pub fn status(&self) -> DeliveryStatus {
        match self {
            NextState::Delivered => DeliveryStatus::Delivered,
            NextState::Retry { .. } => DeliveryStatus::Pending,
            NextState::Dead => DeliveryStatus::Dead,
            NextState::FailedOver { .. } => DeliveryStatus::FailedOver,
        }
    }

    /// The status it ends with, when this ends it.
    pub fn finished(&self) -> Option<DeliveryStatus> {
        Some(self.status()).filter(|s| s.is_terminal())
    }

    /// The audit action recording the transition.
    pub fn audit_action(&self) -> &'static str {
        match self {
            NextState::Delivered => "delivery.delivered",
            NextState::Retry { .. } => "delivery.retry_scheduled",
            NextState::Dead => "delivery.dead",
            NextState::FailedOver { .. } => "delivery.failed_over",
        }
    }
}

/// What a destination's configuration says about failed attempts.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryRules<'a> {
    pub retry: &'a RetryPolicy,
    pub fallback: Option<&'a FallbackSpec>,
    /// The longest `Retry-After` honoured (a longer one is cut to this).
    pub max_retry_after: Duration,
}

/// What follows one attempt: the delivery's next state, and what happens to the
/// destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub next: NextState,
    /// Hold back every delivery of the destination until then (epoch ms): a 429.
    pub pause_until: Option<i64>,
    /// Disable the destination for this reason: the receiver is gone for good.
    pub disable_destination: Option<String>,
}

/// The delivery state machine's one decision, pure: given the attempt's verdict, the
/// destination's rules, the attempts already spent from the budget (this one included),
/// the jitter draw (`0..=1`, see [`RetryPolicy::delay_at`]; drawn only for a retry) and
/// the time the attempt ended, where the delivery goes. `new_delivery_id` names the
/// fallback's delivery, and is only called when there is one.
///
/// - delivered → `delivered`;
/// - retryable → a `when = "failure"` fallback takes it at once; otherwise `pending`
///   after the policy's delay (or the receiver's `Retry-After`, up to
///   `max_retry_after`, when longer) while the budget lasts; then the fallback, else
///   `dead`. A `Retry-After` with "pause" holds the whole destination back as long;
/// - permanent → the fallback, else `dead`; "gone" also disables the destination.
pub fn decide_next(
    verdict: &Verdict,
    rules: &DeliveryRules<'_>,
    attempts_used: u32,
    jitter: impl FnOnce() -> f64,
    now: i64,
    new_delivery_id: impl FnOnce() -> DeliveryId,
) -> Decision {
    let fail_over = |f: &FallbackSpec, id: DeliveryId| NextState::FailedOver {
        fallback: f.destination.clone(),
        new_delivery_id: id,
    };
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match verdict {
        Verdict::Delivered => Decision {
            next: NextState::Delivered,
            pause_until: None,
            disable_destination: None,
        },
        &Verdict::Retry {
            after,
            pause_destination,
        } => {
            let after = after.map(|a| a.min(rules.max_retry_after));
            let next = match (
                rules.fallback,
                rules.retry.delay_at(attempts_used, jitter()),
            ) {
                (Some(f), _) if f.when == FallbackWhen::Failure => fail_over(f, new_delivery_id()),
                (_, Some(backoff)) => NextState::Retry {
                    at: now.saturating_add(ms(backoff.max(after.unwrap_or_default()))),
                },
                (Some(f), None) => fail_over(f, new_delivery_id()),
                (None, None) => NextState::Dead,
            };
            Decision {
                next,
                pause_until: after
                    .filter(|_| pause_destination)
                    .map(|a| now.saturating_add(ms(a))),
                disable_destination: None,
            }
        }
        Verdict::Permanent {
            disable_destination,
        } => Decision {
            next: rules
                .fallback
                .map_or(NextState::Dead, |f| fail_over(f, new_delivery_id())),
            pause_until: None,
            disable_destination: disable_destination.clone(),
        },
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

/// What kind of failure an attempt met, as the API and the store name it (`timeout`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The provider answered with an HTTP status that is not a success.
    HttpStatus,
    /// The provider answered 2xx but its body says it failed (Slack's `ok: false`, …).
    ProviderError,
    /// The SMTP server answered with an error reply.
    SmtpReply,
    /// No answer within the destination's timeout.
    Timeout,
    /// No connection could be made (refused, unresolvable).
    Connect,
    /// The connection broke after it was made.
    Network,
    /// The TLS handshake failed (a certificate, or a server that does not speak TLS).
    Tls,
    /// The SSRF guard refused the address.
    SsrfBlocked,
    /// The destination's settings cannot work (a missing field, an invalid header).
    Config,
    /// A template did not render.
    Template,
    /// A message's per-channel override is not valid for this channel.
    Override,
    /// A secret reference could not be resolved.
    SecretRef,
    /// An attachment could not be sent.
    Attachment,
    /// The stored message could not be read.
    Corrupt,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 14] = [
        ErrorClass::HttpStatus,
        ErrorClass::ProviderError,
        ErrorClass::SmtpReply,
        ErrorClass::Timeout,
        ErrorClass::Connect,
        ErrorClass::Network,
        ErrorClass::Tls,
        ErrorClass::SsrfBlocked,
        ErrorClass::Config,
        ErrorClass::Template,
        ErrorClass::Override,
        ErrorClass::SecretRef,
        ErrorClass::Attachment,
        ErrorClass::Corrupt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::ProviderError => "provider_error",
            ErrorClass::SmtpReply => "smtp_reply",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Network => "network",
            ErrorClass::Tls => "tls",
            ErrorClass::SsrfBlocked => "ssrf_blocked",
            ErrorClass::Config => "config",
            ErrorClass::Template => "template",
            ErrorClass::Override => "override",
            ErrorClass::SecretRef => "secret_ref",
            ErrorClass::Attachment => "attachment",
            ErrorClass::Corrupt => "corrupt",
        }
    }

    /// The class stored as `s`, if this version knows it.
    pub fn parse(s: &str) -> Option<ErrorClass> {
        ErrorClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the provider may already have received the request although no answer came
    /// back: the request was sent (or partly sent) when the wait or the connection ended,
    /// so a retry can deliver it twice. A refused connection, a blocked address or any
    /// answer at all means it was not (or that the provider said what it did).
    pub fn may_have_reached_provider(self) -> bool {
        matches!(self, ErrorClass::Timeout | ErrorClass::Network)
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a channel reports about one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct SendReport {
    pub verdict: Verdict,
    pub status_code: Option<u16>,
    /// What kind of failure, when the attempt failed.
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
    /// At most [`MAX_EXCERPT`] bytes of the answer; never a secret.
    pub response_excerpt: String,
    /// The last HTTP request of the attempt and what came back, for debugging a failed
    /// attempt (secrets masked by the channel layer); `None` for kinds that do not speak
    /// HTTP (email) and before a request was made.
    pub exchange: Option<Box<HttpExchange>>,
}

/// One HTTP request as an attempt sent it and the answer's status and headers: what an
/// operator needs to see why a receiver refused it (a wrong `body_template`, a missing
/// header). Values that could be secret are masked before it is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HttpExchange {
    pub method: String,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    /// At most [`MAX_EXCERPT`] bytes of the request body.
    pub request_body: String,
    /// `None`: no answer came (a timeout, a refused connection).
    pub status: Option<u16>,
    pub response_headers: Vec<(String, String)>,
}

impl SendReport {
    pub fn delivered(status_code: Option<u16>, excerpt: String) -> Self {
        SendReport {
            verdict: Verdict::Delivered,
            status_code,
            error_class: None,
            error: None,
            response_excerpt: excerpt,
            exchange: None,
        }
    }

    pub fn failed(verdict: Verdict, class: ErrorClass, error: impl Into<String>) -> Self {
        SendReport {
            verdict,
            status_code: None,
            error_class: Some(class),
            error: Some(error.into()),
            response_excerpt: String::new(),
            exchange: None,
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

    /// Every verdict × budget (left, spent) × fallback (none, `when = "dead"`,
    /// `when = "failure"`), written out row by row. `R5000`: pending, due 5 000 ms after
    /// the attempt; `X`: dead; `F`: failed over; `D`: delivered. Then the pause (ms after
    /// the attempt) and whether the destination is disabled.
    #[test]
    fn decide_next_follows_the_table() {
        let verdicts = |name: &str| match name {
            "delivered" => Verdict::Delivered,
            "retry" => Verdict::retry(),
            // A 429 with Retry-After 60 s: longer than the policy's 5 s.
            "429 60s" => Verdict::Retry {
                after: Some(Duration::from_secs(60)),
                pause_destination: true,
            },
            // Retry-After shorter than the policy's delay, without a pause.
            "after 1s" => Verdict::Retry {
                after: Some(Duration::from_secs(1)),
                pause_destination: false,
            },
            // Ten hours asked, one hour honoured.
            "429 10h" => Verdict::Retry {
                after: Some(Duration::from_secs(36_000)),
                pause_destination: true,
            },
            "permanent" => Verdict::permanent(),
            "gone" => Verdict::Permanent {
                disable_destination: Some("410 Gone".into()),
            },
            other => panic!("{other}"),
        };
        /// verdict, budget, fallback, next state, pause, disabled.
        type Row = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            Option<i64>,
            bool,
        );
        #[rustfmt::skip]
        let table: &[Row] = &[
            ("delivered", "left",  "none",    "D", None, false),
            ("delivered", "left",  "dead",    "D", None, false),
            ("delivered", "left",  "failure", "D", None, false),
            ("delivered", "spent", "none",    "D", None, false),
            ("delivered", "spent", "dead",    "D", None, false),
            ("delivered", "spent", "failure", "D", None, false),
            ("retry",     "left",  "none",    "R5000", None, false),
            ("retry",     "left",  "dead",    "R5000", None, false),
            ("retry",     "left",  "failure", "F", None, false),
            ("retry",     "spent", "none",    "X", None, false),
            ("retry",     "spent", "dead",    "F", None, false),
            ("retry",     "spent", "failure", "F", None, false),
            ("429 60s",   "left",  "none",    "R60000", Some(60_000), false),
            ("429 60s",   "left",  "dead",    "R60000", Some(60_000), false),
            ("429 60s",   "left",  "failure", "F", Some(60_000), false),
            ("429 60s",   "spent", "none",    "X", Some(60_000), false),
            ("429 60s",   "spent", "dead",    "F", Some(60_000), false),
            ("429 60s",   "spent", "failure", "F", Some(60_000), false),
            ("after 1s",  "left",  "none",    "R5000", None, false),
            ("after 1s",  "left",  "dead",    "R5000", None, false),
            ("after 1s",  "left",  "failure", "F", None, false),
            ("after 1s",  "spent", "none",    "X", None, false),
            ("after 1s",  "spent", "dead",    "F", None, false),
            ("after 1s",  "spent", "failure", "F", None, false),
            ("429 10h",   "left",  "none",    "R3600000", Some(3_600_000), false),
            ("429 10h",   "left",  "dead",    "R3600000", Some(3_600_000), false),
            ("429 10h",   "left",  "failure", "F", Some(3_600_000), false),
            ("429 10h",   "spent", "none",    "X", Some(3_600_000), false),
            ("429 10h",   "spent", "dead",    "F", Some(3_600_000), false),
            ("429 10h",   "spent", "failure", "F", Some(3_600_000), false),
            ("permanent", "left",  "none",    "X", None, false),
            ("permanent", "left",  "dead",    "F", None, false),
            ("permanent", "left",  "failure", "F", None, false),
            ("permanent", "spent", "none",    "X", None, false),
            ("permanent", "spent", "dead",    "F", None, false),
            ("permanent", "spent", "failure", "F", None, false),
            ("gone",      "left",  "none",    "X", None, true),
            ("gone",      "left",  "dead",    "F", None, true),
            ("gone",      "left",  "failure", "F", None, true),
            ("gone",      "spent", "none",    "X", None, true),
            ("gone",      "spent", "dead",    "F", None, true),
            ("gone",      "spent", "failure", "F", None, true),
        ];
        let policy = RetryPolicy::default();
        let now = 1_000_000;
        for &(verdict, budget, fallback, want, pause, disabled) in table {
            let spec = |when| FallbackSpec {
                destination: "backup".into(),
                when,
            };
            let fallback_spec = match fallback {
                "none" => None,
                "dead" => Some(spec(FallbackWhen::Dead)),
                _ => Some(spec(FallbackWhen::Failure)),
            };
            let rules = DeliveryRules {
                retry: &policy,
                fallback: fallback_spec.as_ref(),
                max_retry_after: Duration::from_secs(3600),
            };
            let used = if budget == "left" {
                1
            } else {
                policy.max_attempts()
            };
            let d = decide_next(
                &verdicts(verdict),
                &rules,
                used,
                || 0.5,
                now,
                || DeliveryId::stored("dl_new".into()),
            );
            let got = match &d.next {
                NextState::Delivered => "D".to_string(),
                NextState::Retry { at } => format!("R{}", at - now),
                NextState::Dead => "X".to_string(),
                NextState::FailedOver {
                    fallback,
                    new_delivery_id,
                } => {
                    assert_eq!(
                        (fallback.as_str(), new_delivery_id.as_str()),
                        ("backup", "dl_new")
                    );
                    "F".to_string()
                }
            };
            let row = format!("{verdict} / {budget} / {fallback}");
            assert_eq!(got, want, "{row}");
            assert_eq!(d.pause_until.map(|p| p - now), pause, "{row}");
            assert_eq!(d.disable_destination.is_some(), disabled, "{row}");
        }
    }

    #[test]
    fn next_states_read_plainly_in_logs() {
        assert_eq!(NextState::Delivered.to_string(), "delivered");
        assert_eq!(
            NextState::Retry { at: 0 }.to_string(),
            "retry at 1970-01-01T00:00:00Z"
        );
        let over = NextState::FailedOver {
            fallback: "backup".into(),
            new_delivery_id: DeliveryId::stored("dlv_1".into()),
        };
        assert_eq!(over.to_string(), "failed over to backup as dlv_1");
    }

    #[test]
    fn next_states_name_their_status_and_audit_action() {
        let failed_over = NextState::FailedOver {
            fallback: "b".into(),
            new_delivery_id: DeliveryId::stored("dl_1".into()),
        };
        for (next, status, finished, action) in [
            (
                NextState::Delivered,
                "delivered",
                true,
                "delivery.delivered",
            ),
            (
                NextState::Retry { at: 1 },
                "pending",
                false,
                "delivery.retry_scheduled",
            ),
            (NextState::Dead, "dead", true, "delivery.dead"),
            (failed_over, "failed_over", true, "delivery.failed_over"),
        ] {
            assert_eq!(next.status().as_str(), status);
            assert_eq!(next.finished().is_some(), finished);
            assert_eq!(next.audit_action(), action);
        }
    }

    #[test]
    fn the_jitter_draw_spans_twenty_per_cent_either_way() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_at(1, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(p.delay_at(1, 0.0), Some(Duration::from_secs(4)));
        assert_eq!(p.delay_at(1, 1.0), Some(Duration::from_secs(6)));
    }

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
