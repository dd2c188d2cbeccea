//! Destinations as the server holds them: validated, sealed at rest, and cached decrypted
//! in memory ([`crate::destination_cache`]) for routing and dispatching.

pub use crate::destination_cache::{DestinationCache, DestinationEntry, Exposure};
use crate::state::AppState;
use herald_channels::Attempt;
use herald_core::ValidationErrors;
use herald_core::breaker::Breaker;
use herald_core::clock::{now_ms, rfc3339};
use herald_core::delivery::{AttemptOutcome, SendReport};
use herald_core::destination::{DestinationSpec, KindSpec};
use herald_core::ids::{MessageId, split_destination_key};
use herald_core::message::{Message, MessageBody};
use herald_store::NewAudit;
use herald_store::{DestinationHold, DestinationRow, StoreError};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use utoipa::ToSchema;

/// Why a destination could not be saved or changed.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The settings break a rule, field by field.
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl DestinationError {
    fn field(field: &str, message: impl Into<String>) -> Self {
        DestinationError::Invalid(ValidationErrors::single(field, message))
    }
}

/// The result of a put.
pub struct PutOutcome {
    pub created: bool,
    pub entry: Arc<DestinationEntry>,
    /// A webhook secret generated for this destination, shown once.
    pub generated_secret: Option<String>,
    /// What will go wrong at the first attempt although the settings are valid (an
    /// address the SSRF guard blocks), one line per field.
    pub warnings: Vec<String>,
}

/// Addresses of `spec` that the SSRF guard would refuse, as `field: why`.
fn blocked_addresses(state: &AppState, name: &str, spec: &DestinationSpec) -> Vec<String> {
    let warnings: Vec<String> = spec
        .kind
        .outbound_urls()
        .into_iter()
        .filter_map(|(field, url)| {
            state
                .channels
                .http
                .would_block(url)
                .map(|why| format!("{field}: {why}"))
        })
        .collect();
    for w in &warnings {
        tracing::warn!(destination = %name, warning = %w, "destination saved with an address the SSRF guard blocks");
    }
    warnings
}

/// Validates and stores a destination under its key (its name, or `<tenant>.<name>` for a
/// tenant's), then refreshes the cache and wakes the dispatcher.
pub async fn put(
    state: &AppState,
    name: &str,
    mut spec: DestinationSpec,
    actor: &str,
) -> Result<PutOutcome, DestinationError> {
    let (tenant, local) = split_destination_key(name);
    spec.validate(local, &state.channels.templates)
        .map_err(DestinationError::Invalid)?;
    if tenant.is_some() && spec.fallback.is_some() {
        return Err(DestinationError::field(
            "fallback",
            "a tenant's destinations have no fallback (fallbacks are the operator's)",
        ));
    }
    check_fallback(state, name, &spec)?;
    herald_channels::secrets::check_kind(&spec.kind, &state.channels.secrets)
        .map_err(|(field, why)| DestinationError::field(&field, why))?;
    let warnings = blocked_addresses(state, name, &spec);
    let generated_secret = spec.complete();
    spec.name = None;
    let now = herald_core::clock::now_ms();
    let created_at = state
        .destinations
        .get(name)
        .map(|e| e.created_at)
        .unwrap_or(now);
    let json = serde_json::to_vec(&spec).map_err(|e| DestinationError::Internal(e.to_string()))?;
    let row = DestinationRow {
        name: name.to_string(),
        kind: spec.kind.name().to_string(),
        sealed_spec: state.secrets.seal(&json),
        enabled: spec.enabled,
        disabled_reason: None,
        paused_until: None,
        breaker: None,
        failing_since: None,
        last_success_at: None,
        created_at,
        updated_at: now,
    };
    let created = state.store.put_destination(row.clone(), actor).await?;
    // Re-read: the row keeps its live state (pause, breaker) across a replace.
    let stored = state.store.get_destination(name).await?.unwrap_or(row);
    let entry =
        DestinationEntry::from_row(stored, &state.secrets).map_err(DestinationError::Internal)?;
    let entry = state.destinations.insert(entry);
    state.dispatch.dispatcher.wake();
    Ok(PutOutcome {
        created,
        entry,
        generated_secret,
        warnings,
    })
}

/// The fallback must exist and the chain it starts must not come back to `name`.
fn check_fallback(
    state: &AppState,
    name: &str,
    spec: &DestinationSpec,
) -> Result<(), DestinationError> {
    let Some(f) = &spec.fallback else {
        return Ok(());
    };
    let mut chain = vec![name.to_string()];
    let mut next = Some(f.destination.clone());
    while let Some(d) = next {
        if chain.contains(&d) {
            chain.push(d);
            return Err(DestinationError::field(
                "fallback.destination",
                format!("fallback cycle: {}", chain.join(" → ")),
            ));
        }
        let entry = state.destinations.get(&d).ok_or_else(|| {
            DestinationError::field(
                "fallback.destination",
                format!("no destination {d:?} (create the fallback first)"),
            )
        })?;
        chain.push(d);
        next = entry.spec.fallback.as_ref().map(|f| f.destination.clone());
    }
    Ok(())
}

/// Destinations whose fallback is `name`.
pub fn fallback_referrers(state: &AppState, name: &str) -> Vec<String> {
    state
        .destinations
        .all()
        .iter()
        .filter(|e| {
            e.spec
                .fallback
                .as_ref()
                .is_some_and(|f| f.destination == name)
        })
        .map(|e| e.name.clone())
        .collect()
}

/// Re-enables a destination and refreshes its cached state.
pub async fn enable(state: &AppState, name: &str, actor: &str) -> Result<bool, DestinationError> {
    if !state
        .store
        .enable_destination(name, actor, herald_core::clock::now_ms())
        .await?
    {
        return Ok(false);
    }
    if let Some(row) = state.store.get_destination(name).await? {
        state.destinations.insert(
            DestinationEntry::from_row(row, &state.secrets).map_err(DestinationError::Internal)?,
        );
    }
    state.dispatch.dispatcher.wake();
    Ok(true)
}

/// A test message sent straight to a destination, outside the queue.
pub struct TestSend {
    pub message_id: MessageId,
    pub started_at: i64,
    pub duration_ms: i64,
    pub report: SendReport,
}

/// Sends a `herald.test` message to `e` at once (not queued, not retried) and audits it as
/// `destination.tested` with its outcome (the API's `POST …/test` and the dashboard).
pub async fn send_test(
    state: &AppState,
    e: &DestinationEntry,
    actor: &str,
) -> Result<TestSend, DestinationError> {
    let now = now_ms();
    let message = Message {
        id: MessageId::new(),
        event_type: "herald.test".into(),
        idempotency_key: None,
        created_at: now,
        body: MessageBody {
            title: Some("Herald test message".into()),
            text: Some(format!(
                "This is a test message from Herald to the destination \"{}\".",
                e.name
            )),
            ..Default::default()
        },
    };
    let t0 = Instant::now();
    let report = state
        .channels
        .send(&Attempt {
            message: &message,
            destination: &e.name,
            spec: &e.spec,
            number: 1,
        })
        .await;
    let duration_ms = t0.elapsed().as_millis() as i64;
    let outcome = report.verdict.outcome();
    state
        .store
        .append_audit(vec![NewAudit {
            at: now,
            actor: actor.to_string(),
            action: "destination.tested".into(),
            resource: e.name.clone(),
            detail: json!({"message_id": message.id, "outcome": outcome, "status_code": report.status_code}),
        }])
        .await?;
    if outcome != AttemptOutcome::Delivered {
        tracing::info!(destination = %e.name, status = report.status_code, error = report.error.as_deref(), "test send did not deliver");
    }
    Ok(TestSend {
        message_id: message.id,
        started_at: now,
        duration_ms,
        report,
    })
}

/// Settings edited from the masked copy an admin is shown (the dashboard's form): every
/// value still equal to its mask is taken from the stored settings, so saving the form as
/// shown changes nothing and an edit never overwrites a secret with its mask.
pub fn unmask_edit(stored: &DestinationSpec, edited: serde_json::Value) -> serde_json::Value {
    let secret = serde_json::to_value(stored).unwrap_or_default();
    let masked = serde_json::to_value(stored.masked()).unwrap_or_default();
    restore_masked(edited, &masked, &secret)
}

fn restore_masked(
    edited: serde_json::Value,
    masked: &serde_json::Value,
    secret: &serde_json::Value,
) -> serde_json::Value {
    use serde_json::Value;
    match (edited, masked, secret) {
        (Value::String(v), Value::String(m), s) if &v == m && s != masked => s.clone(),
        (Value::Object(mut o), Value::Object(m), Value::Object(s)) => {
            for (k, v) in o.iter_mut() {
                if let (Some(mv), Some(sv)) = (m.get(k), s.get(k)) {
                    *v = restore_masked(v.take(), mv, sv);
                }
            }
            Value::Object(o)
        }
        (Value::Array(a), Value::Array(m), Value::Array(s)) => Value::Array(
            a.into_iter()
                .enumerate()
                .map(|(i, v)| match (m.get(i), s.get(i)) {
                    (Some(mv), Some(sv)) => restore_masked(v, mv, sv),
                    _ => v,
                })
                .collect(),
        ),
        (v, _, _) => v,
    }
}

/// Longest pause an operator can set by hand.
pub const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// What an operator asks: pause for a while, or disable with an optional reason.
pub enum HoldRequest<'a> {
    Pause(std::time::Duration),
    Disable(Option<&'a str>),
}

/// Holds a destination back by hand, audited, and refreshes its cached state at once (other
/// nodes reload on the store's notice). `false`: no such destination.
pub async fn hold(
    state: &AppState,
    name: &str,
    request: HoldRequest<'_>,
    actor: &str,
) -> Result<bool, DestinationError> {
    let now = now_ms();
    let hold = match request {
        HoldRequest::Pause(d) => {
            if d.is_zero() || d > MAX_PAUSE {
                return Err(DestinationError::field("for", "give a pause from 1s to 7d"));
            }
            DestinationHold::Pause {
                until: now + d.as_millis() as i64,
            }
        }
        HoldRequest::Disable(reason) => {
            let reason = reason.map(str::trim).filter(|r| !r.is_empty());
            if reason.is_some_and(|r| r.chars().count() > 200 || r.chars().any(char::is_control)) {
                return Err(DestinationError::field(
                    "reason",
                    "at most 200 characters without control characters",
                ));
            }
            DestinationHold::Disable {
                reason: match reason {
                    Some(r) => format!("disabled by {actor}: {r}"),
                    None => format!("disabled by {actor}"),
                },
            }
        }
    };
    if !state.store.hold_destination(name, hold, actor, now).await? {
        return Ok(false);
    }
    if let Some(row) = state.store.get_destination(name).await? {
        state.destinations.insert(
            DestinationEntry::from_row(row, &state.secrets).map_err(DestinationError::Internal)?,
        );
    }
    Ok(true)
}

/// Deletes a destination (its unfinished deliveries are discarded).
pub async fn delete(state: &AppState, name: &str, actor: &str) -> Result<bool, StoreError> {
    let deleted = state
        .store
        .delete_destination(name, actor, herald_core::clock::now_ms())
        .await?;
    if deleted {
        state.destinations.remove(name);
    }
    Ok(deleted)
}

/// Applies the destinations declared in the configuration file, writing only those that
/// changed.
pub async fn apply_config(state: &AppState) -> Result<(), String> {
    // A destination is applied after the one it falls back to.
    let mut order: Vec<&String> = Vec::new();
    let declared = &state.config.destinations;
    while order.len() < declared.len() {
        let before = order.len();
        for (name, spec) in declared {
            let ready = spec.fallback.as_ref().is_none_or(|f| {
                !declared.contains_key(&f.destination) || order.contains(&&f.destination)
            });
            if !order.contains(&name) && ready {
                order.push(name);
            }
        }
        if order.len() == before {
            return Err("destinations in the configuration form a fallback cycle".into());
        }
    }
    for name in order {
        let spec = &declared[name];
        let mut spec = spec.clone();
        spec.name = None;
        let existing = state.destinations.get(name);
        // A secret generated on an earlier start is kept, not generated anew.
        if let (KindSpec::Webhook(w), Some(e)) = (&mut spec.kind, &existing)
            && let (None, KindSpec::Webhook(old)) = (&w.secret, &e.spec.kind)
        {
            w.secret = old.secret.clone();
        }
        if existing.is_some_and(|e| e.spec == spec) {
            continue;
        }
        put(state, name, spec, "config")
            .await
            .map_err(|e| match e {
                DestinationError::Invalid(v) => format!("destination {name}: {}", v.summary()),
                other => format!("destination {name}: {other}"),
            })?;
    }
    Ok(())
}

#[derive(Serialize, ToSchema)]
pub struct CircuitView {
    /// `closed`, `open`, `half_open`, or `disabled` when the destination has no breaker.
    pub state: String,
    pub consecutive_failures: u32,
    pub opened_at: Option<String>,
    pub next_probe_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DestinationHealth {
    pub name: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub circuit: CircuitView,
    pub paused_until: Option<String>,
    pub rate_limit: Option<String>,
    pub pending: u64,
    pub in_flight: u64,
    pub dead: u64,
    /// Share of attempts in the last hour that delivered (null without attempts).
    pub success_rate_1h: Option<f64>,
    pub attempts_1h: u64,
}

fn circuit(e: &DestinationEntry) -> CircuitView {
    if e.spec.breaker().is_none() {
        return CircuitView {
            state: "disabled".into(),
            consecutive_failures: 0,
            opened_at: None,
            next_probe_at: None,
        };
    }
    let b = e.breaker.lock().expect("breaker lock").clone();
    let (opened_at, next_probe_at) = match b {
        Breaker::Closed { .. } => (None, None),
        Breaker::Open {
            opened_at,
            next_probe_at,
            ..
        } => (Some(opened_at), Some(next_probe_at)),
        Breaker::HalfOpen { opened_at, .. } => (Some(opened_at), None),
    };
    CircuitView {
        state: b.name().into(),
        consecutive_failures: b.consecutive_failures(),
        opened_at: opened_at.map(rfc3339),
        next_probe_at: next_probe_at.map(rfc3339),
    }
}

/// What the health endpoint and the dashboard show for one destination.
pub async fn health_of(
    state: &AppState,
    e: &DestinationEntry,
) -> Result<DestinationHealth, StoreError> {
    let counts = state.store.queue_counts(&e.name).await?;
    let stats = state
        .store
        .attempt_stats(&e.name, now_ms() - 3_600_000)
        .await?;
    Ok(DestinationHealth {
        name: e.name.clone(),
        enabled: e.enabled(),
        disabled_reason: e.disabled_reason(),
        circuit: circuit(e),
        paused_until: e.paused_until().filter(|p| *p > now_ms()).map(rfc3339),
        rate_limit: e.spec.rate_limit.as_ref().map(|r| {
            serde_json::to_value(r)
                .map(|v| v.to_string())
                .unwrap_or_default()
        }),
        pending: counts.pending,
        in_flight: counts.in_flight,
        dead: counts.dead,
        success_rate_1h: (stats.total > 0).then(|| stats.delivered as f64 / stats.total as f64),
        attempts_1h: stats.total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> DestinationSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_edit_of_the_masked_copy_keeps_the_secrets_it_did_not_change() {
        let stored = spec(
            json!({"kind": "webhook", "url": "https://hooks.example.com/in",
            "secret": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
            "headers": {"x-api-key": "sekret", "x-team": "ops"}}),
        );
        let mut shown = serde_json::to_value(stored.masked()).unwrap();
        assert_ne!(
            shown,
            serde_json::to_value(&stored).unwrap(),
            "the copy is masked"
        );
        // Saved as shown: nothing changes.
        assert_eq!(
            spec(unmask_edit(&stored, shown.clone())),
            stored,
            "the masks become the stored secrets again"
        );
        // One secret and a plain field changed: those take the new values, the rest stays.
        shown["headers"]["x-api-key"] = json!("new-key");
        shown["timeout"] = json!("5s");
        let edited = spec(unmask_edit(&stored, shown));
        let v = serde_json::to_value(&edited).unwrap();
        assert_eq!(v["headers"]["x-api-key"], "new-key");
        assert_eq!(v["headers"]["x-team"], "ops");
        assert_eq!(v["timeout"], "5s");
        assert_eq!(
            v["secret"],
            serde_json::to_value(&stored).unwrap()["secret"]
        );
    }
}
