//! Error alerts (DESIGN §9): a report is validated, grouped, folded into its group and — when
//! the group alerts — turned into an `error.reported` message, all in one store transaction
//! (see `herald_core::error_report` for the rules). The alert is an ordinary message: routed
//! by `to` or by `events` + `filter`, delivered, retried and audited like any other.

use crate::ingest::{self, IngestError};
use crate::state::AppState;
use herald_core::clock::rfc3339;
use herald_core::duration::format_duration;
use herald_core::error_report::{EVENT_TYPE, ErrorAlert, ErrorReport, group};
use herald_core::ids::{DeliveryId, ErrorGroupId, MessageId};
use herald_core::message::{Message, MessageBody, Severity};
use herald_store::{ErrorOccurrence, NewDelivery, NewMessage};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// The 202 body of `POST /api/v1/errors`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reported {
    /// The group's id.
    pub group: String,
    pub new_group: bool,
    /// Whether this report sent an alert (otherwise it was folded into the group).
    pub alerted: bool,
    /// The alert message, when one was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// Validates, groups and records one report; sends its alert if the group alerts.
pub async fn report(
    state: &AppState,
    report: ErrorReport,
    actor: &str,
) -> Result<Reported, IngestError> {
    let report = report.validate().map_err(IngestError::Invalid)?;
    record(state, report, actor).await
}

/// [`report`] for a report already validated.
pub async fn record(
    state: &AppState,
    report: ErrorReport,
    actor: &str,
) -> Result<Reported, IngestError> {
    if let Some(to) = &report.to {
        ingest::check_to(state, to, None)?;
    }
    let g = group(&report);
    let now = herald_core::clock::now_ms();
    let event = serde_json::to_string(&report).map_err(|e| IngestError::Internal(e.to_string()))?;
    let occ = ErrorOccurrence {
        new_id: ErrorGroupId::new(),
        key: g.key.clone(),
        service: report.service().to_string(),
        fingerprint: g.fingerprint.clone(),
        title: g.title.clone(),
        culprit: g.culprit.clone(),
        level: report.level.clone().unwrap_or_else(|| "error".into()),
        environment: report.environment.clone(),
        event,
        policy: state.config.errors.policy(),
        now,
        actor: actor.to_string(),
    };
    let window = format_duration(state.config.errors.window.0);
    let builder_state = state.clone();
    let builder_actor = actor.to_string();
    let outcome = state
        .store
        .record_error(
            occ,
            Box::new(move |grp, decision| {
                let s = &grp.state;
                let alert = ErrorAlert {
                    group: grp.id.clone(),
                    reason: decision.reason,
                    title: g.title,
                    culprit: g.culprit,
                    count: s.count,
                    folded: decision.folded,
                    window_count: s.window_count,
                    window,
                    first_seen: rfc3339(s.first_seen),
                    last_seen: rfc3339(s.last_seen),
                    report,
                };
                alert_message(&builder_state, alert, now, &builder_actor)
            }),
        )
        .await?;
    metrics::counter!("herald_error_reports_total").increment(1);
    let message_id = outcome.alert.as_ref().map(|(_, id)| id.clone());
    if let Some((d, _)) = &outcome.alert {
        metrics::counter!("herald_error_alerts_total", "reason" => d.reason.as_str()).increment(1);
        state.dispatch.dispatcher.wake();
    }
    Ok(Reported {
        group: outcome.group.id,
        new_group: outcome.new_group,
        alerted: message_id.is_some(),
        message_id: message_id.map(MessageId::into_string),
    })
}

/// The `error.reported` message for an alert, routed like any message.
fn alert_message(
    state: &AppState,
    alert: ErrorAlert,
    now: i64,
    actor: &str,
) -> Result<NewMessage, String> {
    let payload = match serde_json::to_value(&alert).map_err(|e| e.to_string())? {
        Value::Object(o) => o,
        _ => return Err("an alert serializes to an object".into()),
    };
    let message = Message {
        id: MessageId::new(),
        event_type: EVENT_TYPE.to_string(),
        idempotency_key: None,
        created_at: now,
        body: MessageBody {
            text: Some(alert.text()),
            title: Some(alert.headline()),
            severity: Severity::Error,
            payload,
            to: alert.report.to.clone(),
            ..Default::default()
        },
    };
    // `to` was checked before the transaction; a destination deleted since is dropped.
    let destinations = ingest::route(state, &message, None).unwrap_or_else(|_| {
        message
            .body
            .to
            .iter()
            .flatten()
            .filter(|n| state.destinations.get(n).is_some())
            .cloned()
            .collect()
    });
    let body = serde_json::to_string(&message.body).map_err(|e| e.to_string())?;
    Ok(NewMessage {
        id: message.id,
        event_type: message.event_type,
        body,
        created_at: now,
        deliveries: destinations
            .into_iter()
            .map(|d| NewDelivery {
                id: DeliveryId::new(),
                destination: d,
                lease: None,
            })
            .collect(),
        idempotency: None,
        actor: actor.to_string(),
        tenant: None,
    })
}
