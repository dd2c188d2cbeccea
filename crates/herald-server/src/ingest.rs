//! Accepting messages: validate → route → lease what the dispatcher has room for → one
//! durable commit (message, deliveries, idempotency record, audit entry) → hand the leased
//! deliveries to the dispatcher, wake it for the rest → 202.

use crate::state::AppState;
use base64::Engine;
use herald_core::ValidationErrors;
use herald_core::audit::canonical_json;
use herald_core::ids::{DeliveryId, MessageId, destination_key};
use herald_core::message::{AttachmentLimits, Message, MessageBody, MessageInput, check_file};
use herald_core::template::context;
use herald_store::{AcceptOutcome, IdempotencyRecord, NewDelivery, NewMessage, StoreError};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use utoipa::ToSchema;

/// The 202 body of `POST /api/v1/messages`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageAccepted {
    pub id: String,
    pub event_type: String,
    pub deliveries: Vec<DeliveryRef>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryRef {
    pub id: String,
    pub destination: String,
    pub status: String,
}

/// Why a message (or an error report) was not accepted. The API turns it into a problem
/// document (`api::problem`); nothing here knows HTTP.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The input breaks a rule, field by field.
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("this Idempotency-Key was already used with a different request body")]
    KeyConflict,
    /// A destination's filter ran past its byte or time budget on this message.
    #[error(
        "the filter of destination {destination} stopped on this message: {reason}; nothing was accepted (simplify the filter)"
    )]
    FilterOverBudget { destination: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl IngestError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        IngestError::Invalid(ValidationErrors::single(field, message))
    }
}

/// The answer for one submitted message.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The 202 body (replayed verbatim for an idempotent repeat).
    pub body: Value,
    pub replayed: bool,
}

/// One message to submit: the parsed input and the `Idempotency-Key` header, if any.
pub struct Submission {
    pub input: MessageInput,
    pub header_key: Option<String>,
    /// Part of what a repeat must match to be a replay, beside the event type and body
    /// (the Svix-compatible API's `Idempotency-Key` next to an `eventId` as the key).
    pub replay_context: Option<String>,
}

/// Who submits messages.
pub struct Submitter {
    /// Recorded in the audit log, and the scope of idempotency keys: one client's keys
    /// never meet another's, so a key tells nobody what another token sent.
    pub actor: String,
    /// Sees why an attachment URL could not be fetched (admins). Others get a generic
    /// message, with the details in the server log only: a fetch error can reveal what an
    /// internal name resolves to.
    pub sees_fetch_errors: bool,
    /// The tenant the messages belong to (`None`: the operator's): they are routed only to
    /// its destinations, and `to` names its destinations.
    pub tenant: Option<String>,
    /// Keys are remembered per tenant, whoever sends (Svix's `eventId`), not per token.
    pub keys_per_tenant: bool,
}

impl Submitter {
    pub fn of(caller: &crate::auth::Caller) -> Self {
        Submitter {
            actor: caller.actor(),
            sees_fetch_errors: caller.can(crate::auth::Scope::Admin),
            tenant: caller.tenant.clone(),
            keys_per_tenant: false,
        }
    }

    /// Herald itself (operational messages).
    pub fn system(name: &str) -> Self {
        Submitter {
            actor: name.to_string(),
            sees_fetch_errors: true,
            tenant: None,
            keys_per_tenant: false,
        }
    }

    /// For messages of one tenant (Svix-compatible API, operational events).
    pub fn in_tenant(mut self, tenant: Option<String>) -> Self {
        self.tenant = tenant;
        self
    }

    /// The key an `Idempotency-Key` is stored under: the client's key within its scope
    /// (and its tenant).
    fn scoped_key(&self, key: &str) -> String {
        match &self.tenant {
            Some(t) if self.keys_per_tenant => format!("tenant\u{1f}{t}\u{1f}{key}"),
            Some(t) => format!("{}\u{1f}{t}\u{1f}{key}", self.actor),
            None => format!("{}\u{1f}{key}", self.actor),
        }
    }
}

/// Validates, routes and stores messages in one commit. Results are in input order.
pub async fn submit(
    state: &AppState,
    subs: Vec<Submission>,
    who: &Submitter,
) -> Result<Vec<Result<Accepted, IngestError>>, IngestError> {
    let now = herald_core::clock::now_ms();
    let mut results: Vec<Option<Result<Accepted, IngestError>>> = Vec::with_capacity(subs.len());
    let mut batch = Vec::new();
    let mut parsed = Vec::new();
    let mut slots = Vec::new();
    // In a cluster a destination may have been created on another node a moment ago.
    if state.store.remote_signals().is_some()
        && subs.iter().any(|s| {
            s.input.to.iter().flatten().any(|n| {
                state
                    .destinations
                    .get(&destination_key(who.tenant.as_deref(), n))
                    .is_none()
            })
        })
        && let Err(e) = state
            .destinations
            .reload(state.store.as_ref(), &state.secrets)
            .await
    {
        tracing::warn!(error = %e, "reloading destinations failed");
    }
    for sub in subs {
        match prepare(state, sub, now, who).await {
            Ok((msg, message, body)) => {
                slots.push((results.len(), body));
                results.push(None);
                batch.push(msg);
                parsed.push(message);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    if !batch.is_empty() {
        let leases =
            state
                .dispatch
                .dispatcher
                .lease_at_accept(&state.dispatch, &mut batch, &parsed, now);
        let wake = !leases.all;
        let outcomes = if leases.is_empty() {
            state.store.accept_messages(batch).await?
        } else {
            // A task of its own, so that what was leased reaches the ready queue even if
            // the client hangs up while the commit is under way.
            let dispatch = state.dispatch.clone();
            tokio::spawn(async move {
                let outcomes = dispatch.store.accept_messages(batch).await;
                let stored = outcomes.as_deref().ok();
                dispatch
                    .dispatcher
                    .accept_committed(&dispatch, leases, stored)
                    .await;
                outcomes
            })
            .await
            .map_err(|e| IngestError::Internal(format!("accepting failed: {e}")))??
        };
        let mut any_new = false;
        let mut replayed = 0u64;
        for ((slot, body), outcome) in slots.into_iter().zip(outcomes) {
            results[slot] = Some(match outcome {
                AcceptOutcome::Accepted => {
                    any_new = true;
                    Ok(Accepted {
                        body,
                        replayed: false,
                    })
                }
                AcceptOutcome::Replayed { response } => {
                    replayed += 1;
                    serde_json::from_str(&response)
                        .map(|body| Accepted {
                            body,
                            replayed: true,
                        })
                        .map_err(|e| {
                            IngestError::Internal(format!(
                                "stored idempotent response unreadable: {e}"
                            ))
                        })
                }
                AcceptOutcome::KeyConflict => Err(IngestError::KeyConflict),
            });
        }
        if any_new && wake {
            state.dispatch.dispatcher.wake();
        }
        let accepted = results
            .iter()
            .filter(|r| matches!(r, Some(Ok(a)) if !a.replayed))
            .count();
        metrics::counter!("herald_messages_accepted_total").increment(accepted as u64);
        metrics::counter!("herald_messages_replayed_total").increment(replayed);
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every slot is filled"))
        .collect())
}

async fn prepare(
    state: &AppState,
    sub: Submission,
    now: i64,
    who: &Submitter,
) -> Result<(NewMessage, Arc<Message>, Value), IngestError> {
    let limits = AttachmentLimits {
        total: state.config.max_attachment_bytes,
        per_file: state.config.max_attachment_file_bytes,
    };
    let (event_type, key, mut body) = sub
        .input
        .validate_with(sub.header_key.as_deref(), limits)
        .map_err(IngestError::Invalid)?;
    // What was asked, before `url` attachments are fetched: a repeat with the same key is
    // the same request even if the file behind the URL changed since. Only a keyed request
    // is ever compared, so only a keyed one is hashed.
    let request_hash = key
        .as_ref()
        .map(|_| request_hash(&event_type, &body, sub.replay_context.as_deref()));
    fetch_attachments(state, &mut body, limits, who.sees_fetch_errors).await?;
    let message = Message {
        id: MessageId::new(),
        event_type,
        idempotency_key: key,
        created_at: now,
        body,
    };
    let destinations = route(state, &message, who.tenant.as_deref())?;
    let deliveries: Vec<NewDelivery> = destinations
        .into_iter()
        .map(|d| NewDelivery {
            id: DeliveryId::new(),
            destination: d,
            lease: None,
        })
        .collect();
    let accepted = MessageAccepted {
        id: message.id.to_string(),
        event_type: message.event_type.clone(),
        deliveries: deliveries
            .iter()
            .map(|d| DeliveryRef {
                id: d.id.to_string(),
                destination: d.destination.clone(),
                status: "pending".into(),
            })
            .collect(),
    };
    let response =
        serde_json::to_value(&accepted).map_err(|e| IngestError::Internal(e.to_string()))?;
    let body_json =
        serde_json::to_string(&message.body).map_err(|e| IngestError::Internal(e.to_string()))?;
    let idempotency =
        message
            .idempotency_key
            .as_ref()
            .zip(request_hash)
            .map(|(key, request_hash)| IdempotencyRecord {
                key: key.clone(),
                scoped_key: who.scoped_key(key),
                request_hash,
                response: response.to_string(),
                expires_at: now + state.config.idempotency_ttl.0.as_millis() as i64,
            });
    Ok((
        NewMessage {
            id: message.id.clone(),
            event_type: message.event_type.clone(),
            body: body_json,
            created_at: now,
            deliveries,
            idempotency,
            actor: who.actor.clone(),
            tenant: who.tenant.clone(),
        },
        // Kept parsed for the attempts of deliveries leased at accept (serialised once for
        // the store, never parsed back in this process).
        Arc::new(message),
        response,
    ))
}

/// Fetches every `url` attachment once, through the SSRF guard, and keeps its bytes as
/// `data` (the `url` stays, for channels that show pictures by address). Any failure is a
/// 422 naming the attachment; why it failed only for `detailed` callers (and the log).
async fn fetch_attachments(
    state: &AppState,
    body: &mut MessageBody,
    limits: AttachmentLimits,
    detailed: bool,
) -> Result<(), IngestError> {
    let mut total: usize = body.attachments.iter().map(|a| a.size()).sum();
    let mut errs = ValidationErrors::new();
    let timeout = state.config.attachment_fetch_timeout.0;
    for (i, a) in body.attachments.iter_mut().enumerate() {
        let Some(url) = a.url.clone().filter(|_| a.data.is_none()) else {
            continue;
        };
        let room = limits.per_file.min(limits.total.saturating_sub(total));
        let field = format!("attachments[{i}].url");
        match state.channels.http.fetch(&url, room, timeout).await {
            Ok(bytes) => match check_file(a, &bytes, limits) {
                Ok(()) => {
                    total += bytes.len();
                    a.data = Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
                }
                Err(e) => errs.push(field, format!("the downloaded file: {e}")),
            },
            Err(e) => {
                tracing::warn!(%field, url = %url, error = %e, "could not fetch an attachment URL");
                errs.push(
                    field,
                    if detailed {
                        format!(
                            "could not fetch the attachment: {e} (limit left for it: {room} bytes)"
                        )
                    } else {
                        "could not fetch the attachment URL".to_string()
                    },
                )
            }
        }
    }
    errs.into_result().map_err(IngestError::Invalid)
}

/// SHA-256 over the canonical form of what was asked, so key order and whitespace do not
/// make an identical request look different.
fn request_hash(event_type: &str, body: &MessageBody, context: Option<&str>) -> String {
    let mut v = json!({"event_type": event_type, "body": body});
    if let Some(c) = context {
        v["context"] = json!(c);
    }
    hex::encode(Sha256::digest(canonical_json(&v).as_bytes()))
}

/// The keys of the destinations named in `to` (names of `tenant`'s destinations), or a
/// 422 naming those that do not exist.
pub(crate) fn check_to(
    state: &AppState,
    to: &[String],
    tenant: Option<&str>,
) -> Result<Vec<String>, IngestError> {
    let keys: Vec<String> = to.iter().map(|n| destination_key(tenant, n)).collect();
    let unknown: Vec<&str> = to
        .iter()
        .zip(&keys)
        .filter(|(_, k)| state.destinations.get(k).is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    if unknown.is_empty() {
        Ok(keys)
    } else {
        Err(IngestError::field(
            "to",
            format!("unknown destination(s): {}", unknown.join(", ")),
        ))
    }
}

/// The keys of the destinations a message of `tenant` goes to: its explicit `to`, or every
/// enabled destination of the tenant whose `events` and `filter` accept it.
pub(crate) fn route(
    state: &AppState,
    message: &Message,
    tenant: Option<&str>,
) -> Result<Vec<String>, IngestError> {
    if let Some(to) = &message.body.to {
        return check_to(state, to, tenant);
    }
    let mut out = Vec::new();
    for d in state.destinations.of_tenant(tenant) {
        if !d.enabled() || !d.spec.accepts_event(&message.event_type) {
            continue;
        }
        if let Some(filter) = &d.spec.filter {
            let ctx = context(message, &d.name, d.spec.kind.name(), 1);
            match state.channels.templates.eval_bool(filter, &ctx) {
                Ok(true) => {}
                Ok(false) => continue,
                // A filter that runs past its byte or time budget on this message refuses
                // the message, rather than silently routing it nowhere.
                Err(e) if e.over_budget => {
                    return Err(IngestError::FilterOverBudget {
                        destination: d.name.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    tracing::warn!(destination = %d.name, error = %e, "filter failed; message not routed there");
                    continue;
                }
            }
        }
        out.push(d.name.clone());
    }
    Ok(out)
}
