//! Operational messages: what Herald itself has to say (a destination it disabled), sent
//! through ingest like any message, to the destinations that asked for `herald.*` events.

use crate::dispatch::DispatchEvent;
use crate::state::AppState;
use herald_core::message::{MessageInput, Severity};
use tokio::sync::mpsc;

/// Event type of the message Herald sends when it disables a destination.
pub const DISABLED_EVENT: &str = "herald.destination.disabled";

/// Acts on the dispatcher's events until every sender is gone.
pub(crate) async fn run(state: AppState, mut events: mpsc::UnboundedReceiver<DispatchEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            DispatchEvent::DestinationDisabled {
                destination,
                reason,
            } => announce_disabled(&state, &destination, &reason).await,
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
