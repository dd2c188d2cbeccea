//! Operational messages: what Herald itself has to say (a destination it disabled), sent
//! through ingest like any message, to the destinations that asked for `herald.*` events.
//! About a tenant's endpoints Herald also tells the platform's *operational webhooks*
//! (Svix's `/operational-webhook/endpoint`): Svix-shaped `{"type", "data"}` events
//! (`endpoint.disabled`, `message.attempt.exhausted`) that reach only those endpoints —
//! never a customer's.

use crate::dispatch::DispatchEvent;
use crate::state::AppState;
use herald_core::clock::{now_ms, rfc3339};
use herald_core::ids::split_destination_key;
use herald_core::message::{MessageInput, Severity};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Event type of the message Herald sends when it disables a destination.
pub const DISABLED_EVENT: &str = "herald.destination.disabled";

/// The key prefix of operational webhook endpoints: a tenant of its own that no tenant's
/// id can be (ids are `app_…`) and that no operator's message is routed to.
pub const OPERATIONAL_TENANT: &str = "opwh";

/// The operational events Herald sends, as Svix names them.
pub const OPERATIONAL_EVENTS: &[&str] = &["endpoint.disabled", "message.attempt.exhausted"];

/// Acts on the dispatcher's events until every sender is gone.
pub(crate) async fn run(state: AppState, mut events: mpsc::UnboundedReceiver<DispatchEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            DispatchEvent::DestinationDisabled {
                destination,
                reason,
            } => {
                announce_disabled(&state, &destination, &reason).await;
                if let (Some(tenant), endpoint) = split_destination_key(&destination) {
                    let data = json!({
                        "appId": tenant,
                        "appUid": app_uid(&state, tenant).await,
                        "endpointId": endpoint,
                        "endpointUid": endpoint_uid(&state, &destination),
                        "failSince": rfc3339(now_ms()),
                        "reason": reason,
                    });
                    tell_platform(&state, "endpoint.disabled", data).await;
                }
            }
            DispatchEvent::AttemptsExhausted {
                delivery_id,
                destination,
                status_code,
            } => {
                let (Some(tenant), endpoint) = split_destination_key(&destination) else {
                    continue;
                };
                let message = match state.store.get_delivery(&delivery_id).await {
                    Ok(Some(d)) => d.message_id.to_string(),
                    _ => String::new(),
                };
                let data = json!({
                    "appId": tenant,
                    "appUid": app_uid(&state, tenant).await,
                    "msgId": message,
                    "endpointId": endpoint,
                    "endpointUid": endpoint_uid(&state, &destination),
                    "lastAttempt": {
                        "responseStatusCode": status_code.unwrap_or(0),
                        "timestamp": rfc3339(now_ms()),
                    },
                });
                tell_platform(&state, "message.attempt.exhausted", data).await;
            }
        }
    }
}

/// Sends the operational message `herald.destination.disabled`, routed like any other.
async fn announce_disabled(state: &AppState, destination: &str, reason: &str) {
    let input = MessageInput {
        event_type: Some(DISABLED_EVENT.to_string()),
        title: Some(format!("Herald disabled the destination \"{destination}\"")),
        text: Some(format!(
            "Deliveries to \"{destination}\" are stopped: {reason}. Fix the receiver, then re-enable it with POST /api/v1/destinations/{destination}/enable."
        )),
        severity: Some(Severity::Error),
        payload: Some(serde_json::Map::from_iter([
            (
                "destination".to_string(),
                serde_json::Value::from(destination),
            ),
            ("reason".to_string(), serde_json::Value::from(reason)),
        ])),
        ..Default::default()
    };
    let sub = crate::ingest::Submission {
        input,
        header_key: None,
        replay_context: None,
    };
    let herald = crate::ingest::Submitter::system("herald");
    match crate::ingest::submit(state, vec![sub], &herald).await {
        Ok(r) => {
            if let Some(Err(e)) = r.into_iter().next() {
                tracing::error!(error = %e, "could not send the destination-disabled message");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not send the destination-disabled message"),
    }
}

async fn app_uid(state: &AppState, tenant: &str) -> Option<String> {
    state.store.get_tenant(tenant).await.ok().flatten()?.uid
}

fn endpoint_uid(state: &AppState, key: &str) -> Option<String> {
    state.destinations.get(key)?.spec.uid.clone()
}

/// Sends a Svix-shaped operational event to the platform's operational webhooks (only
/// there: they are a tenant of their own).
async fn tell_platform(state: &AppState, event_type: &str, data: Value) {
    if state
        .destinations
        .of_tenant(Some(OPERATIONAL_TENANT))
        .is_empty()
    {
        return;
    }
    let input = MessageInput {
        event_type: Some(event_type.to_string()),
        payload: Some(serde_json::Map::from_iter([
            ("type".to_string(), Value::from(event_type)),
            ("data".to_string(), data),
        ])),
        ..Default::default()
    };
    let sub = crate::ingest::Submission {
        input,
        header_key: None,
        replay_context: None,
    };
    let herald =
        crate::ingest::Submitter::system("herald").in_tenant(Some(OPERATIONAL_TENANT.to_string()));
    match crate::ingest::submit(state, vec![sub], &herald).await {
        Ok(r) => {
            if let Some(Err(e)) = r.into_iter().next() {
                tracing::error!(error = %e, event_type, "could not send the operational event");
            }
        }
        Err(e) => tracing::error!(error = %e, event_type, "could not send the operational event"),
    }
}
