//! # herald-core
//!
//! Herald's domain, free of I/O: what a message, a destination, a delivery and an attempt
//! are; how long to wait before the next attempt; how an HTTP answer is classified; how a
//! webhook is signed; how templates render; how the audit chain is hashed.
//!
//! Everything here is deterministic given its inputs (the clock and the random jitter are
//! passed in or isolated in [`clock`] and [`retry`]), so the store, the channels and the
//! server can share one definition of each rule.
//!
//! ```
//! use herald_core::{duration::parse_duration, retry::RetryPolicy};
//! use std::time::Duration;
//!
//! assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
//! let policy = RetryPolicy::default();
//! assert_eq!(policy.max_attempts(), 11);
//! // the second attempt waits 5 s (before jitter)
//! assert_eq!(policy.base_delay(1), Some(Duration::from_secs(5)));
//! ```

pub mod apprise;
pub mod attachment;
pub mod audit;
pub mod breaker;
pub mod classify;
pub mod clock;
pub mod crypto;
pub mod delivery;
pub mod destination;
pub mod duration;
pub mod error;
pub mod error_report;
pub mod glob;
pub mod ids;
pub mod kinds;
pub mod message;
pub mod netpolicy;
pub mod rate_limit;
pub mod redact;
pub mod retry;
pub mod retry_after;
pub mod scope;
pub mod secret_ref;
pub mod sentry;
pub mod signature;
pub mod template;

pub use error::{FieldError, ValidationErrors};
