//! The portal's pages and actions. Each action checks the session's CSRF token, calls the
//! domain code the Svix-compatible API calls, and redirects back (post/redirect/get).

use super::{Customer, PortalError, render};
use crate::api::svix::endpoints::{self as ep, EndpointIn};
use crate::api::svix::messages as msgs;
use crate::auth::AuthError;
use crate::state::AppState;
use crate::ui::session;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use herald_core::clock::{parse_rfc3339, rfc3339};
use herald_core::delivery::AttemptOutcome;
use herald_core::destination::KindSpec;
use herald_core::ids::{DeliveryId, MessageId, split_destination_key};
use herald_core::message::MessageBody;
use herald_core::secret_ref::is_sensitive_header;
use herald_store::{DeliveryQuery, MessageQuery};
use minijinja::context;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

type PortalResult<T> = Result<T, PortalError>;

/// Rows per list page.
const PAGE: u32 = 50;

#[derive(Deserialize)]
pub struct AccessQuery {
    #[serde(default)]
    token: String,
}

/// `GET /portal/access?token=…`: a portal access token becomes a session for its tenant.
pub async fn access(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AccessQuery>,
) -> PortalResult<Response> {
    let caller = match state
        .auth
        .authenticate(state.store.as_ref(), q.token.trim())
        .await
    {
        Ok(c) => c,
        Err(AuthError::NoToken | AuthError::Invalid) => {
            return Err(PortalError::new(
                StatusCode::UNAUTHORIZED,
                "This portal link is not valid: it expired or was revoked. Ask for a new one.",
            ));
        }
        Err(e) => return Err(crate::ui::UiError::from(e).into()),
    };
    let Some(tenant) = caller.tenant.clone() else {
        return Err(PortalError::new(
            StatusCode::FORBIDDEN,
            "This token is the operator's: it opens the dashboard (/ui), not a customer portal.",
        ));
    };
    let remaining = match &caller.token_id {
        Some(id) => state
            .store
            .get_token(id)
            .await?
            .and_then(|t| t.expires_at)
            .map(|e| (e - herald_core::clock::now_ms()).max(1_000))
            .unwrap_or(state.config.portal.access_ttl.0.as_millis() as i64),
        None => state.config.portal.access_ttl.0.as_millis() as i64,
    };
    let ttl = Duration::from_millis(remaining as u64).min(state.config.portal.access_ttl.0);
    tracing::info!(%tenant, actor = %caller.actor(), "portal sign-in");
    let id = session::create_for(&state, caller, ttl).await?;
    let mut resp = Redirect::to("/portal").into_response();
    let cookie = HeaderValue::from_str(&session::set_portal_cookie(&id, &headers, ttl))
        .map_err(|_| PortalError::new(StatusCode::INTERNAL_SERVER_ERROR, "cookie"))?;
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(resp)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn signout(
    State(state): State<AppState>,
    c: Customer,
    Form(f): Form<CsrfForm>,
) -> PortalResult<Response> {
    c.user.check_csrf(&f.csrf)?;
    session::end(&state, &c.user.session_id).await?;
    let mut resp = (
        StatusCode::OK,
        "Signed out of the portal. Open it again from your link.",
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_portal_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `GET /portal/theme.css`: the tenant's accent colour.
pub async fn theme(c: Customer) -> Response {
    let accent = super::brand(&c.tenant)
        .accent
        .unwrap_or_else(|| "#2563eb".into());
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!(
            ":root {{ --accent: {accent}; }}\n.portal header.bar {{ border-bottom: 3px solid var(--accent); }}\n.portal button.primary {{ background: var(--accent); border-color: var(--accent); color: #fff; }}\n.portal a {{ color: var(--accent); }}\n.portal fieldset label {{ display: inline-flex; align-items: center; gap: .4em; margin: 0 1.2em .4em 0; }}\n.portal fieldset input[type=checkbox] {{ width: auto; margin: 0; }}\n"
        ),
    )
        .into_response()
}

/// The event types an endpoint can pick (the catalog, without archived ones).
async fn catalog(state: &AppState) -> PortalResult<Vec<String>> {
    Ok(state
        .store
        .list_event_types(None, 1000, false)
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect())
}

/// `GET /portal`: the tenant's endpoints and a form for a new one.
pub async fn endpoints(State(state): State<AppState>, c: Customer) -> PortalResult<Response> {
    let mut list = state.destinations.of_tenant(Some(&c.tenant.id));
    list.reverse();
    let rows: Vec<_> = list
        .iter()
        .map(|e| {
            let out = ep::endpoint_out(e);
            context! {
                id => out.id,
                url => url_of(e),
                description => e.spec.description.clone().unwrap_or_default(),
                enabled => e.enabled(),
                events => e.spec.events.join(", "),
                created_at => rfc3339(e.created_at),
            }
        })
        .collect();
    Ok(render(
        &state,
        &c,
        "endpoints",
        "portal_endpoints.html",
        context! { endpoints => rows, event_types => catalog(&state).await? },
    ))
}

fn url_of(e: &crate::destinations::DestinationEntry) -> String {
    match &e.spec.kind {
        KindSpec::Webhook(w) => w.url.clone(),
        _ => String::new(),
    }
}

/// The endpoint form: a URL, a description and the event types ticked (none: all).
#[derive(Deserialize)]
pub struct EndpointForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
    /// Ticked event types, one form field each (`event_type=a&event_type=b`), read from
    /// the raw form.
    #[serde(skip)]
    event_types: Vec<String>,
}

/// Parses a form that may repeat `event_type`.
fn endpoint_form(body: &str) -> EndpointForm {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap_or_default();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    EndpointForm {
        csrf: get("csrf"),
        url: get("url").trim().to_string(),
        description: get("description").trim().to_string(),
        event_types: pairs
            .iter()
            .filter(|(n, _)| n == "event_type")
            .map(|(_, v)| v.clone())
            .collect(),
    }
}

fn input_from(f: EndpointForm, base: Option<EndpointIn>) -> EndpointIn {
    let mut input = base.unwrap_or_default();
    input.url = Some(f.url);
    input.description = Some(f.description);
    input.event_types = (!f.event_types.is_empty()).then_some(f.event_types);
    input.filter_types = None;
    input
}

/// `POST /portal/endpoints`: a new endpoint.
pub async fn create(
    State(state): State<AppState>,
    c: Customer,
    body: String,
) -> PortalResult<Response> {
    let f = endpoint_form(&body);
    c.user.check_csrf(&f.csrf)?;
    let e = ep::create_endpoint(&state, &c.user.caller, &c.tenant, input_from(f, None)).await?;
    let id = split_destination_key(&e.name).1.to_string();
    Ok(Redirect::to(&format!("/portal/endpoints/{id}")).into_response())
}

fn find(
    state: &AppState,
    c: &Customer,
    id: &str,
) -> PortalResult<std::sync::Arc<crate::destinations::DestinationEntry>> {
    Ok(ep::find(state, &c.tenant, id)?)
}

#[derive(Deserialize, Default)]
pub struct EndpointQuery {
    /// Shown once after a reveal or a rotation.
    #[serde(default)]
    notice: Option<String>,
}

/// `GET /portal/endpoints/{ep}`: the endpoint, its settings, secret, headers, the test and
/// recover forms, and the latest messages sent to it.
pub async fn endpoint(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
    Query(q): Query<EndpointQuery>,
) -> PortalResult<Response> {
    let e = find(&state, &c, &id)?;
    endpoint_page(&state, &c, &e, None, q.notice).await
}

async fn endpoint_page(
    state: &AppState,
    c: &Customer,
    e: &crate::destinations::DestinationEntry,
    secret: Option<String>,
    notice: Option<String>,
) -> PortalResult<Response> {
    let id = split_destination_key(&e.name).1.to_string();
    let headers: Vec<_> = match &e.spec.kind {
        KindSpec::Webhook(w) => w
            .headers
            .iter()
            .map(|(k, v)| {
                let sensitive = is_sensitive_header(k);
                context! { name => k, value => if sensitive { "••••••".to_string() } else { v.clone() }, sensitive }
            })
            .collect(),
        _ => Vec::new(),
    };
    let overlap: Vec<String> = match &e.spec.kind {
        KindSpec::Webhook(w) => w
            .retired_secrets
            .iter()
            .filter(|r| parse_rfc3339(&r.until).is_some_and(|u| u > herald_core::clock::now_ms()))
            .map(|r| r.until.clone())
            .collect(),
        _ => Vec::new(),
    };
    let deliveries = state
        .store
        .list_deliveries(&DeliveryQuery {
            destination: Some(e.name.clone()),
            limit: 20,
            ..Default::default()
        })
        .await?;
    let mut recent = Vec::new();
    for d in deliveries {
        if let Some(m) = state.store.get_message(&d.message_id).await? {
            recent.push(context! {
                message_id => m.id.to_string(),
                event_type => m.event_type,
                status => d.status.as_str(),
                attempts => d.attempt_count,
                at => rfc3339(d.created_at),
            });
        }
    }
    let picked: Vec<String> = if e.spec.events == ["*"] {
        Vec::new()
    } else {
        e.spec.events.clone()
    };
    Ok(render(
        state,
        c,
        "endpoints",
        "portal_endpoint.html",
        context! {
            id,
            url => url_of(e),
            description => e.spec.description.clone().unwrap_or_default(),
            enabled => e.enabled(),
            disabled_reason => e.disabled_reason(),
            picked,
            event_types => catalog(state).await?,
            headers,
            overlap,
            secret,
            notice,
            recent,
            since_default => rfc3339(herald_core::clock::now_ms() - 86_400_000),
        },
    ))
}

/// `POST /portal/endpoints/{ep}/edit`: URL, description and event types.
pub async fn edit(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
    body: String,
) -> PortalResult<Response> {
    let f = endpoint_form(&body);
    c.user.check_csrf(&f.csrf)?;
    let e = find(&state, &c, &id)?;
    let input = input_from(f, Some(ep::input_of(&e)));
    ep::update_endpoint(&state, &c.user.caller, &c.tenant, &e, input).await?;
    Ok(back(&id, "Saved."))
}

fn back(id: &str, notice: &str) -> Response {
    let q = serde_urlencoded::to_string([("notice", notice)]).unwrap_or_default();
    Redirect::to(&format!("/portal/endpoints/{id}?{q}")).into_response()
}

#[derive(Deserialize)]
pub struct StateForm {
    #[serde(default)]
    csrf: String,
    /// `enable` or `disable`.
    #[serde(default)]
    to: String,
}

/// `POST /portal/endpoints/{ep}/state`: enable or disable it.
pub async fn set_state(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
    Form(f): Form<StateForm>,
) -> PortalResult<Response> {
    c.user.check_csrf(&f.csrf)?;
    let e = find(&state, &c, &id)?;
    let mut input = ep::input_of(&e);
    input.disabled = Some(match f.to.as_str() {
        "enable" => false,
        "disable" => true,
        _ => {
            return Err(PortalError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "to: enable or disable",
            ));
        }
    });
    if f.to == "enable" {
        // A disabled endpoint is also re-armed (its breaker and failure streak cleared).
        state
            .store
            .enable_destination(
                &e.name,
                &c.user.caller.actor(),
                herald_core::clock::now_ms(),
            )
            .await?;
    }
    ep::update_endpoint(&state, &c.user.caller, &c.tenant, &e, input).await?;
    Ok(back(
        &id,
        if f.to == "enable" {
            "Enabled."
        } else {
            "Disabled."
        },
    ))
}

/// `POST /portal/endpoints/{ep}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PortalResult<Response> {
    c.user.check_csrf(&f.csrf)?;
    let e = find(&state, &c, &id)?;
    ep::delete_endpoint(&state, &c.user.caller, &e).await?;
    Ok(Redirect::to("/portal").into_response())
}

/// `POST /portal/endpoints/{ep}/secret`: shows the signing secret (audited).
pub async fn reveal(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PortalResult<Response> {
    c.user.check_csrf(&f.csrf)?;
    let e = find(&state, &c, &id)?;
    let secret = ep::reveal_secret(&state, &c.user.caller, &c.tenant, &e).await?;
    endpoint_page(&state, &c, &e, Some(secret), None).await
}

/// `POST /portal/endpoints/{ep}/rotate`: a new secret; the old one signs for 24 h more.
pub async fn rotate(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PortalResult<Response> {
    c.user.check_csrf(&f.csrf)?;
    let e = find(&state, &c, &id)?;
    let new = ep::rotate_secret(&state, &c.user.caller, &e, None, None).await?;
    let e = find(&state, &c, &id)?;
    endpoint_page(
        &state,
        &c,
        &e,
        Some(new),
        Some("Rotated: the old secret keeps signing beside this one for 24 hours.".into()),
    )
    .await
}

#[derive(Deserialize)]
pub struct HeadersForm {
    #[serde(default)]
    csrf: String,
    /// One `Name: value` per line; the whole set.
    #[serde(default)]
    headers: String,
}

/// `POST /portal/endpoints/{ep}/headers`: replaces the custom headers. A sensitive header
/// left as its mask keeps its stored value.
pub async fn headers(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
    Form(f): Form<HeadersForm>,
) -> PortalResult<Response> {
    c.user.check_csrf(&f.csrf)?;
    let e = find(&state, &c, &id)?;
    let stored = match &e.spec.kind {
        KindSpec::Webhook(w) => w.headers.clone(),
        _ => BTreeMap::new(),
    };
    let mut given = BTreeMap::new();
    for (n, line) in f.headers.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(PortalError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("headers, line {}: write it as `Name: value`", n + 1),
            ));
        };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        let v = if v == "••••••" {
            stored.get(&k).cloned().unwrap_or_default()
        } else {
            v
        };
        given.insert(k, Some(v));
    }
    ep::set_headers(&state, &c.user.caller, &e, given, Vec::new(), true).await?;
    Ok(back(&id, "Headers saved."))
}

#[derive(Deserialize)]
pub struct TestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    event_type: String,
}

/// `POST /portal/endpoints/{ep}/test`: a test event to this endpoint only.
pub async fn test(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
    Form(f): Form<TestForm>,
) -> PortalResult<Response> {
    c.user.check_csrf(&f.csrf)?;
    let e = find(&state, &c, &id)?;
    let event_type = if f.event_type.is_empty() {
        "svix.ping".to_string()
    } else {
        f.event_type
    };
    let out = msgs::send(
        &state,
        &c.user.caller,
        &c.tenant,
        msgs::Outgoing {
            event_type,
            payload: serde_json::json!({"test": true, "sent_from": "portal"}),
            event_id: None,
            replay_context: None,
            to: Some(vec![split_destination_key(&e.name).1.to_string()]),
        },
    )
    .await?;
    Ok(Redirect::to(&format!("/portal/messages/{}", out.id())).into_response())
}

#[derive(Deserialize)]
pub struct RecoverForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    since: String,
}

/// `POST /portal/endpoints/{ep}/recover`: sends again what failed since a time.
pub async fn recover(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
    Form(f): Form<RecoverForm>,
) -> PortalResult<Response> {
    c.user.check_csrf(&f.csrf)?;
    let e = find(&state, &c, &id)?;
    let since = parse_rfc3339(f.since.trim()).ok_or_else(|| {
        PortalError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "since: an RFC 3339 time, e.g. 2026-12-07T10:00:00Z",
        )
    })?;
    let n = ep::recover_since(&state, &c.user.caller, &e, since).await?;
    Ok(back(&id, &format!("Recovering {n} failed message(s).")))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    before: Option<String>,
}

/// `GET /portal/messages`: the tenant's messages, newest first.
pub async fn messages(
    State(state): State<AppState>,
    c: Customer,
    Query(q): Query<ListQuery>,
) -> PortalResult<Response> {
    let list = state
        .store
        .list_messages(&MessageQuery {
            tenant: Some(c.tenant.id.clone()),
            before_id: q.before.filter(|b| MessageId::parse(b).is_some()),
            limit: PAGE + 1,
            ..Default::default()
        })
        .await?;
    let more = list.len() > PAGE as usize;
    let rows: Vec<_> = list
        .iter()
        .take(PAGE as usize)
        .map(|m| {
            context! {
                id => m.id.to_string(),
                event_type => m.event_type.clone(),
                event_id => m.idempotency_key.clone(),
                at => rfc3339(m.created_at),
            }
        })
        .collect();
    let next = more
        .then(|| list.get(PAGE as usize - 1).map(|m| m.id.to_string()))
        .flatten();
    Ok(render(
        &state,
        &c,
        "messages",
        "portal_messages.html",
        context! { messages => rows, next },
    ))
}

/// `GET /portal/messages/{id}`: the payload, each endpoint's delivery and every attempt
/// with its request (headers masked) and answer.
pub async fn message(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
) -> PortalResult<Response> {
    let m = own_message(&state, &c, &id).await?;
    let payload = serde_json::from_str::<MessageBody>(&m.body)
        .map(|b| serde_json::to_string_pretty(&b.payload).unwrap_or_default())
        .unwrap_or_default();
    let attempts = state.store.list_message_attempts(&m.id, 500).await?;
    let deliveries = state
        .store
        .list_deliveries(&DeliveryQuery {
            message_id: Some(m.id.to_string()),
            limit: 100,
            ..Default::default()
        })
        .await?;
    let rows: Vec<_> = deliveries
        .iter()
        .map(|d| {
            let endpoint = split_destination_key(&d.destination).1.to_string();
            let tries: Vec<_> = attempts
                .iter()
                .filter(|a| a.delivery_id == d.id)
                .map(|a| {
                    let request = a.attempt.exchange.as_ref().map(|x| {
                        let headers: Vec<String> = x
                            .request_headers
                            .iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect();
                        format!(
                            "{} {}\n{}\n\n{}",
                            x.method,
                            x.url,
                            headers.join("\n"),
                            x.request_body
                        )
                    });
                    context! {
                        number => a.attempt.number,
                        at => rfc3339(a.attempt.started_at),
                        delivered => a.attempt.outcome == AttemptOutcome::Delivered,
                        status_code => a.attempt.status_code,
                        duration_ms => a.attempt.duration_ms,
                        error => a.attempt.error.clone(),
                        response => a.attempt.response_excerpt.clone(),
                        manual => a.manual,
                        request,
                    }
                })
                .collect();
            context! {
                endpoint,
                live => state.destinations.get(&d.destination).is_some(),
                status => d.status.as_str(),
                attempts => tries,
            }
        })
        .collect();
    let endpoints: Vec<String> = state
        .destinations
        .of_tenant(Some(&c.tenant.id))
        .iter()
        .map(|e| split_destination_key(&e.name).1.to_string())
        .collect();
    Ok(render(
        &state,
        &c,
        "messages",
        "portal_message.html",
        context! {
            id => m.id.to_string(),
            event_type => m.event_type,
            event_id => m.idempotency_key,
            at => rfc3339(m.created_at),
            payload,
            deliveries => rows,
            endpoints,
        },
    ))
}

async fn own_message(
    state: &AppState,
    c: &Customer,
    id: &str,
) -> PortalResult<herald_store::MessageRecord> {
    let not_found = || PortalError::new(StatusCode::NOT_FOUND, "No such message.");
    let id = MessageId::parse(id).ok_or_else(not_found)?;
    match state.store.get_message(&id).await? {
        Some(m) if m.tenant.as_deref() == Some(c.tenant.id.as_str()) => Ok(m),
        _ => Err(not_found()),
    }
}

#[derive(Deserialize)]
pub struct ResendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    endpoint: String,
}

/// `POST /portal/messages/{id}/resend`: one more delivery of the message to an endpoint.
pub async fn resend(
    State(state): State<AppState>,
    c: Customer,
    Path(id): Path<String>,
    Form(f): Form<ResendForm>,
) -> PortalResult<Response> {
    c.user.check_csrf(&f.csrf)?;
    let m = own_message(&state, &c, &id).await?;
    let e = find(&state, &c, &f.endpoint)?;
    let now = herald_core::clock::now_ms();
    state
        .store
        .resend(
            &m.id,
            &e.name,
            DeliveryId::new(),
            &c.user.caller.actor(),
            now,
        )
        .await?;
    state.dispatch.dispatcher.wake();
    Ok(Redirect::to(&format!("/portal/messages/{}", m.id)).into_response())
}
