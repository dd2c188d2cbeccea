//! `/api/v1/app/{app_id}/endpoint`: Svix endpoints, which are a tenant's `webhook`
//! destinations signing with `svix-*` headers, keyed `<app id>.<endpoint id>`.

use super::apps::check_uid;
use super::messages::{self, MessageOut};
use super::{
    ListResponse, SvixCaller, SvixError, SvixJson, SvixResult, app, limit, page, parse_time, query,
    require, time,
};
use crate::api::tenants::serde_with_null;
use crate::auth::{Caller, Scope};
use crate::destinations::{self, DestinationEntry};
use crate::operational::{OPERATIONAL_EVENTS, OPERATIONAL_TENANT};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_core::destination::{DestinationSpec, KindSpec, WebhookSpec};
use herald_core::ids::{ENDPOINT, destination_key, new_id, split_destination_key};
use herald_core::secret_ref::is_sensitive_header;
use herald_core::signature::SigningKey;
use herald_store::{NewAudit, ReplayFilter, TenantRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long a rotated-out secret keeps signing unless the request says otherwise.
const DEFAULT_GRACE_SECONDS: i64 = 86_400;
const MAX_GRACE_SECONDS: i64 = 7 * 86_400;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EndpointIn {
    pub(crate) url: Option<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) uid: Option<String>,
    #[serde(default)]
    pub(crate) disabled: Option<bool>,
    #[serde(default)]
    pub(crate) filter_types: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) event_types: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) channels: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) secret: Option<String>,
    #[serde(default)]
    pub(crate) metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(crate) throttle_rate: Option<u32>,
    #[serde(default)]
    pub(crate) rate_limit: Option<u32>,
    #[serde(default)]
    pub(crate) headers: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOut {
    pub id: String,
    uid: Option<String>,
    url: String,
    description: String,
    metadata: BTreeMap<String, String>,
    disabled: bool,
    filter_types: Option<Vec<String>>,
    event_types: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    throttle_rate: Option<u32>,
    rate_limit: Option<u32>,
    version: u32,
    created_at: String,
    updated_at: String,
}

/// The webhook settings of an endpoint (every endpoint made here is a webhook).
fn webhook(e: &DestinationEntry) -> Option<&WebhookSpec> {
    match &e.spec.kind {
        KindSpec::Webhook(w) => Some(w),
        _ => None,
    }
}

/// Event types an endpoint filters on (`None`: every event type).
fn filter_of(spec: &DestinationSpec) -> Option<Vec<String>> {
    (spec.events != ["*"]).then(|| spec.events.clone())
}

fn throttle_of(spec: &DestinationSpec) -> Option<u32> {
    spec.rate_limit()
        .map(|r| (r.per_ms * 1000.0).round().max(1.0) as u32)
}

pub fn endpoint_out(e: &DestinationEntry) -> EndpointOut {
    let (_, id) = split_destination_key(&e.name);
    let filter = filter_of(&e.spec);
    let throttle = throttle_of(&e.spec);
    EndpointOut {
        id: id.to_string(),
        uid: e.spec.uid.clone(),
        url: webhook(e).map(|w| w.url.clone()).unwrap_or_default(),
        description: e.spec.description.clone().unwrap_or_default(),
        metadata: e.spec.metadata.clone(),
        disabled: !e.enabled(),
        filter_types: filter.clone(),
        event_types: filter,
        channels: None,
        throttle_rate: throttle,
        rate_limit: throttle,
        version: 1,
        created_at: time(e.created_at),
        updated_at: time(e.updated_at),
    }
}

/// The endpoint of `app` named by id or uid; 404 otherwise.
pub fn find(
    state: &AppState,
    app: &TenantRecord,
    id_or_uid: &str,
) -> SvixResult<Arc<DestinationEntry>> {
    if let Some(e) = state
        .destinations
        .get(&destination_key(Some(&app.id), id_or_uid))
    {
        return Ok(e);
    }
    state
        .destinations
        .of_tenant(Some(&app.id))
        .into_iter()
        .find(|e| e.spec.uid.as_deref() == Some(id_or_uid))
        .ok_or_else(|| SvixError::not_found("Endpoint"))
}

/// The settings an endpoint's fields make, on top of `base` (its current settings).
async fn spec_of(
    state: &AppState,
    app: &TenantRecord,
    base: Option<&DestinationSpec>,
    input: EndpointIn,
    this: Option<&str>,
) -> SvixResult<DestinationSpec> {
    let url = input
        .url
        .ok_or_else(|| SvixError::body_field("url", "field required"))?;
    if input.channels.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(SvixError::body_field(
            "channels",
            "channels are not supported by Herald (filter by event type instead)",
        ));
    }
    if let Some(uid) = &input.uid {
        check_uid(uid, "uid")?;
        let taken = state
            .destinations
            .of_tenant(Some(&app.id))
            .into_iter()
            .any(|e| e.spec.uid.as_deref() == Some(uid) && Some(e.name.as_str()) != this);
        if taken {
            return Err(SvixError::conflict(
                "An endpoint with that uid already exists",
            ));
        }
    }
    // 2.x SDKs call the filter `eventTypes`, 1.x `filterTypes`: errors name what was sent.
    let field = if input.event_types.is_some() {
        "eventTypes"
    } else {
        "filterTypes"
    };
    let types = input.event_types.or(input.filter_types);
    let events = match types {
        None => vec!["*".to_string()],
        Some(t) if t.is_empty() => {
            return Err(SvixError::body_field(
                field,
                format!("{field} can't be empty"),
            ));
        }
        Some(t) => {
            let mut missing = Vec::new();
            for name in &t {
                // Operational webhooks filter on the operational events, others on the
                // catalog.
                let known = if app.id == OPERATIONAL_TENANT {
                    OPERATIONAL_EVENTS.contains(&name.as_str())
                } else {
                    state
                        .store
                        .get_event_type(name)
                        .await?
                        .is_some_and(|et| !et.archived)
                };
                if !known {
                    missing.push(name.as_str());
                }
            }
            if !missing.is_empty() {
                return Err(SvixError::body_field(
                    field,
                    format!(
                        "The following event types don't exist: {}",
                        missing.join(", ")
                    ),
                ));
            }
            t
        }
    };
    let base_hook = base.and_then(|b| match &b.kind {
        KindSpec::Webhook(w) => Some(w.clone()),
        _ => None,
    });
    let secret = match (input.secret, &base_hook) {
        (Some(s), _) => Some(json!(s)),
        (None, Some(w)) => w.secret.as_ref().map(|s| json!(s)),
        (None, None) => None,
    };
    let headers = input
        .headers
        .or_else(|| base_hook.as_ref().map(|w| w.headers.clone()))
        .unwrap_or_default();
    let retired = base_hook
        .as_ref()
        .map(|w| json!(w.retired_secrets))
        .unwrap_or(json!([]));
    let rate = input.throttle_rate.or(input.rate_limit);
    let v = json!({
        "kind": "webhook",
        "url": url,
        "signing": "svix",
        "secret": secret,
        "headers": headers,
        "retired_secrets": retired,
        "enabled": !input.disabled.unwrap_or(false),
        "description": input.description.filter(|d| !d.is_empty()),
        "uid": input.uid,
        "metadata": input.metadata.unwrap_or_default(),
        "events": events,
        "rate_limit": rate.map(|r| format!("{r}/s")),
    });
    let v = strip_nulls(v);
    serde_json::from_value(v).map_err(|e| SvixError::body_field("body", e.to_string()))
}

fn strip_nulls(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null());
    }
    v
}

/// Saves an endpoint's settings under its key; `true` when it was created.
async fn save(
    state: &AppState,
    caller: &Caller,
    key: &str,
    spec: DestinationSpec,
) -> SvixResult<(bool, Arc<DestinationEntry>)> {
    let out = destinations::put(state, key, spec, &caller.actor()).await?;
    Ok((out.created, out.entry))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
    iterator: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(app_id): Path<String>,
    uri: Uri,
) -> SvixResult<Json<ListResponse<EndpointOut>>> {
    require(&caller, Scope::Read)?;
    let a = app(&state, &caller, &app_id).await?;
    let q: ListQuery = query(&uri)?;
    let limit = limit(q.limit)?;
    // Newest first, as Svix lists endpoints (their ids are time-ordered).
    let mut all = state.destinations.of_tenant(Some(&a.id));
    all.reverse();
    let start = q
        .iterator
        .as_deref()
        .filter(|i| !i.starts_with('-'))
        .map(|it| {
            let key = destination_key(Some(&a.id), it);
            all.iter().position(|e| e.name < key).unwrap_or(all.len())
        })
        .unwrap_or(0);
    let items: Vec<_> = all
        .into_iter()
        .skip(start)
        .take(limit as usize + 1)
        .collect();
    let out = page(items, limit, |e| {
        split_destination_key(&e.name).1.to_string()
    });
    Ok(Json(ListResponse {
        data: out.data.iter().map(|e| endpoint_out(e)).collect(),
        iterator: out.iterator,
        prev_iterator: out.prev_iterator,
        done: out.done,
    }))
}

pub async fn create(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path(app_id): Path<String>,
    SvixJson(body): SvixJson<EndpointIn>,
) -> SvixResult<(StatusCode, Json<EndpointOut>)> {
    require(&caller, Scope::Admin)?;
    let a = app(&state, &caller, &app_id).await?;
    let e = create_endpoint(&state, &caller, &a, body).await?;
    Ok((StatusCode::CREATED, Json(endpoint_out(&e))))
}

/// Makes an endpoint of `app` (a new `ep_…` id).
pub(crate) async fn create_endpoint(
    state: &AppState,
    caller: &Caller,
    app: &TenantRecord,
    input: EndpointIn,
) -> SvixResult<Arc<DestinationEntry>> {
    let spec = spec_of(state, app, None, input, None).await?;
    let key = destination_key(Some(&app.id), &new_id(ENDPOINT));
    Ok(save(state, caller, &key, spec).await?.1)
}

/// The endpoint's fields as an [`EndpointIn`] (secret and headers left as they are).
pub(crate) fn input_of(e: &DestinationEntry) -> EndpointIn {
    let out = endpoint_out(e);
    EndpointIn {
        url: Some(out.url),
        description: Some(out.description),
        uid: out.uid,
        disabled: Some(out.disabled),
        event_types: out.event_types,
        metadata: Some(out.metadata),
        throttle_rate: out.throttle_rate,
        ..Default::default()
    }
}

/// Replaces an endpoint's fields with `input` (its secret and headers stay unless given).
pub(crate) async fn update_endpoint(
    state: &AppState,
    caller: &Caller,
    app: &TenantRecord,
    e: &DestinationEntry,
    input: EndpointIn,
) -> SvixResult<Arc<DestinationEntry>> {
    let spec = spec_of(state, app, Some(&e.spec), input, Some(&e.name)).await?;
    Ok(save(state, caller, &e.name, spec).await?.1)
}

pub async fn get(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
) -> SvixResult<Json<EndpointOut>> {
    require(&caller, Scope::Read)?;
    let a = app(&state, &caller, &app_id).await?;
    let e = find(&state, &a, &endpoint_id)?;
    Ok(Json(endpoint_out(&e)))
}

/// `PUT`: replaces the endpoint's fields (its secret and headers stay), or creates it
/// (201) when there is none.
pub async fn put(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    SvixJson(mut body): SvixJson<EndpointIn>,
) -> SvixResult<Response> {
    require(&caller, Scope::Admin)?;
    let a = app(&state, &caller, &app_id).await?;
    body.secret = None;
    body.headers = None;
    match find(&state, &a, &endpoint_id) {
        Ok(e) => {
            let spec = spec_of(&state, &a, Some(&e.spec), body, Some(&e.name)).await?;
            let (_, e) = save(&state, &caller, &e.name, spec).await?;
            Ok((StatusCode::OK, Json(endpoint_out(&e))).into_response())
        }
        Err(_) => {
            if body.uid.is_none() && !endpoint_id.starts_with("ep_") {
                body.uid = Some(endpoint_id);
            }
            let spec = spec_of(&state, &a, None, body, None).await?;
            let key = destination_key(Some(&a.id), &new_id(ENDPOINT));
            let (_, e) = save(&state, &caller, &key, spec).await?;
            Ok((StatusCode::CREATED, Json(endpoint_out(&e))).into_response())
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPatch {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, with = "serde_with_null")]
    uid: Option<Option<String>>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default, with = "serde_with_null")]
    filter_types: Option<Option<Vec<String>>>,
    #[serde(default, with = "serde_with_null")]
    event_types: Option<Option<Vec<String>>>,
    #[serde(default, with = "serde_with_null")]
    channels: Option<Option<Vec<String>>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default, with = "serde_with_null")]
    throttle_rate: Option<Option<u32>>,
    #[serde(default, with = "serde_with_null")]
    rate_limit: Option<Option<u32>>,
}

pub async fn patch(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    SvixJson(p): SvixJson<EndpointPatch>,
) -> SvixResult<Json<EndpointOut>> {
    require(&caller, Scope::Admin)?;
    let a = app(&state, &caller, &app_id).await?;
    let e = find(&state, &a, &endpoint_id)?;
    let current = endpoint_out(&e);
    let types = match p.event_types.or(p.filter_types) {
        Some(t) => t,
        None => current.filter_types.clone(),
    };
    let input = EndpointIn {
        url: Some(p.url.unwrap_or(current.url)),
        description: Some(p.description.unwrap_or(current.description)),
        uid: p.uid.unwrap_or(current.uid),
        disabled: Some(p.disabled.unwrap_or(current.disabled)),
        filter_types: None,
        event_types: types,
        channels: p.channels.flatten(),
        secret: None,
        metadata: Some(p.metadata.unwrap_or(current.metadata)),
        throttle_rate: p
            .throttle_rate
            .or(p.rate_limit)
            .unwrap_or(current.throttle_rate),
        rate_limit: None,
        headers: None,
    };
    let spec = spec_of(&state, &a, Some(&e.spec), input, Some(&e.name)).await?;
    let (_, e) = save(&state, &caller, &e.name, spec).await?;
    Ok(Json(endpoint_out(&e)))
}

pub async fn delete(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
) -> SvixResult<StatusCode> {
    require(&caller, Scope::Admin)?;
    let a = app(&state, &caller, &app_id).await?;
    let e = find(&state, &a, &endpoint_id)?;
    delete_endpoint(&state, &caller, &e).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes an endpoint; its unfinished deliveries are discarded.
pub(crate) async fn delete_endpoint(
    state: &AppState,
    caller: &Caller,
    e: &DestinationEntry,
) -> SvixResult<()> {
    let now = herald_core::clock::now_ms();
    if !state
        .store
        .delete_destination(&e.name, &caller.actor(), now)
        .await?
    {
        return Err(SvixError::not_found("Endpoint"));
    }
    state.destinations.remove(&e.name);
    Ok(())
}

/// `GET …/secret`: the current signing secret (audited `destination.revealed`).
pub async fn secret(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
) -> SvixResult<Json<Value>> {
    require(&caller, Scope::Admin)?;
    let a = app(&state, &caller, &app_id).await?;
    let e = find(&state, &a, &endpoint_id)?;
    let key = reveal_secret(&state, &caller, &a, &e).await?;
    Ok(Json(json!({"key": key})))
}

/// The endpoint's current signing secret, audited `destination.revealed`.
pub(crate) async fn reveal_secret(
    state: &AppState,
    caller: &Caller,
    app: &TenantRecord,
    e: &DestinationEntry,
) -> SvixResult<String> {
    let key = webhook(e)
        .and_then(|w| w.secret.as_ref())
        .and_then(|s| s.as_slice().first().cloned())
        .ok_or_else(|| SvixError::not_found("Endpoint secret"))?;
    state
        .store
        .append_audit(vec![NewAudit {
            at: herald_core::clock::now_ms(),
            actor: caller.actor(),
            action: "destination.revealed".into(),
            resource: e.name.clone(),
            detail: json!({"destination": e.name, "tenant": app.id, "field": "secret"}),
        }])
        .await?;
    Ok(key)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RotateIn {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    grace_period_seconds: Option<i64>,
}

/// `POST …/secret/rotate`: a new secret (given or generated); the old one keeps signing
/// beside it for the grace period (24 h by default). Answers the new key (200), which
/// both SDK lines accept.
pub async fn rotate(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    SvixJson(body): SvixJson<RotateIn>,
) -> SvixResult<Json<Value>> {
    require(&caller, Scope::Admin)?;
    let a = app(&state, &caller, &app_id).await?;
    let e = find(&state, &a, &endpoint_id)?;
    let new = rotate_secret(&state, &caller, &e, body.key, body.grace_period_seconds).await?;
    Ok(Json(json!({"key": new})))
}

/// Replaces the endpoint's secret (`key`, or a generated one); the old one keeps signing
/// for `grace` seconds (24 h by default). Returns the new secret.
pub(crate) async fn rotate_secret(
    state: &AppState,
    caller: &Caller,
    e: &DestinationEntry,
    key: Option<String>,
    grace: Option<i64>,
) -> SvixResult<String> {
    let grace = grace.unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(SvixError::body_field(
            "gracePeriodSeconds",
            format!("0–{MAX_GRACE_SECONDS} seconds"),
        ));
    }
    let new = match key {
        Some(k) => {
            SigningKey::parse(&k).map_err(|why| SvixError::body_field("key", why))?;
            k
        }
        None => SigningKey::generate(),
    };
    let mut spec = e.spec.clone();
    let KindSpec::Webhook(w) = &mut spec.kind else {
        return Err(SvixError::bad_request(
            "generic_error",
            "this endpoint is not a webhook",
        ));
    };
    let now = herald_core::clock::now_ms();
    w.rotate_secret(new.clone(), now + grace * 1000, now);
    save(state, caller, &e.name, spec).await?;
    Ok(new)
}

#[derive(Serialize)]
pub struct HeadersOut {
    headers: BTreeMap<String, String>,
    sensitive: Vec<String>,
}

pub async fn headers(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
) -> SvixResult<Json<HeadersOut>> {
    require(&caller, Scope::Read)?;
    let a = app(&state, &caller, &app_id).await?;
    let e = find(&state, &a, &endpoint_id)?;
    let all = webhook(&e).map(|w| w.headers.clone()).unwrap_or_default();
    let (sensitive, plain): (BTreeMap<_, _>, BTreeMap<_, _>) =
        all.into_iter().partition(|(k, _)| is_sensitive_header(k));
    Ok(Json(HeadersOut {
        headers: plain,
        sensitive: sensitive.into_keys().collect(),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeadersIn {
    headers: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    delete_headers: Vec<String>,
}

async fn change_headers(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    endpoint_id: &str,
    body: HeadersIn,
    replace: bool,
) -> SvixResult<StatusCode> {
    require(caller, Scope::Admin)?;
    let a = app(state, caller, app_id).await?;
    let e = find(state, &a, endpoint_id)?;
    let given = body
        .headers
        .ok_or_else(|| SvixError::body_field("headers", "field required"))?;
    set_headers(state, caller, &e, given, body.delete_headers, replace).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets headers (`None` deletes one), deletes `delete`, or with `replace` makes `given`
/// the whole set.
pub(crate) async fn set_headers(
    state: &AppState,
    caller: &Caller,
    e: &DestinationEntry,
    given: BTreeMap<String, Option<String>>,
    delete: Vec<String>,
    replace: bool,
) -> SvixResult<()> {
    let mut spec = e.spec.clone();
    let KindSpec::Webhook(w) = &mut spec.kind else {
        return Err(SvixError::bad_request(
            "generic_error",
            "this endpoint is not a webhook",
        ));
    };
    if replace {
        w.headers.clear();
    }
    for (k, v) in given {
        match v {
            Some(v) => {
                w.headers.insert(k, v);
            }
            None => {
                w.headers.remove(&k);
            }
        }
    }
    for k in delete {
        w.headers.remove(&k);
    }
    save(state, caller, &e.name, spec).await?;
    Ok(())
}

pub async fn put_headers(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    SvixJson(body): SvixJson<HeadersIn>,
) -> SvixResult<StatusCode> {
    change_headers(&state, &caller, &app_id, &endpoint_id, body, true).await
}

pub async fn patch_headers(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    SvixJson(body): SvixJson<HeadersIn>,
) -> SvixResult<StatusCode> {
    change_headers(&state, &caller, &app_id, &endpoint_id, body, false).await
}

#[derive(Deserialize)]
pub struct RecoverIn {
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

/// `POST …/recover`: every dead delivery to the endpoint since `since` is sent again (a
/// DLQ replay), at once; the task is `finished` when this answers.
pub async fn recover(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    SvixJson(body): SvixJson<RecoverIn>,
) -> SvixResult<(StatusCode, Json<Value>)> {
    require(&caller, Scope::Admin)?;
    let a = app(&state, &caller, &app_id).await?;
    let e = find(&state, &a, &endpoint_id)?;
    let since = body
        .since
        .as_deref()
        .ok_or_else(|| SvixError::body_field("since", "field required"))
        .and_then(|s| parse_time(s, "since"))?;
    if let Some(u) = body.until.as_deref() {
        // Herald replays what is dead now; `until` only has to be a time.
        parse_time(u, "until")?;
    }
    let now = herald_core::clock::now_ms();
    let n = recover_since(&state, &caller, &e, since).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "id": new_id("qtask"),
            "status": "finished",
            "task": "endpoint.recover",
            "updatedAt": time(now),
            "recovered": n,
        })),
    ))
}

/// Sends every delivery to the endpoint that died since `since` again; how many.
pub(crate) async fn recover_since(
    state: &AppState,
    caller: &Caller,
    e: &DestinationEntry,
    since: i64,
) -> SvixResult<u64> {
    let filter = ReplayFilter {
        event_type: None,
        since: Some(since),
    };
    let now = herald_core::clock::now_ms();
    let n = state
        .store
        .replay_all_dead(&e.name, &filter, &caller.actor(), now)
        .await?;
    if n > 0 {
        state.dispatch.dispatcher.wake();
    }
    Ok(n)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExampleIn {
    event_type: Option<String>,
}

/// `POST …/send-example`: a real message of the event type, to this endpoint only, with
/// the first example of the type's schema (`svix.ping`: `{"success": true}`).
pub async fn send_example(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    SvixJson(body): SvixJson<ExampleIn>,
) -> SvixResult<(StatusCode, Json<MessageOut>)> {
    require(&caller, Scope::Send)?;
    let a = app(&state, &caller, &app_id).await?;
    let e = find(&state, &a, &endpoint_id)?;
    let event_type = body
        .event_type
        .ok_or_else(|| SvixError::body_field("eventType", "field required"))?;
    let payload = if event_type == "svix.ping" {
        json!({"success": true})
    } else {
        let et = state
            .store
            .get_event_type(&event_type)
            .await?
            .ok_or_else(|| SvixError::not_found("Event type"))?;
        et.schemas
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|s| s.get("1")?.get("examples")?.get(0).cloned())
            .filter(Value::is_object)
            .ok_or_else(|| {
                SvixError::bad_request(
                    "invalid_scheme",
                    "Unable to generate example message from event-type schema",
                )
            })?
    };
    let local = split_destination_key(&e.name).1.to_string();
    let out = messages::send(
        &state,
        &caller,
        &a,
        messages::Outgoing {
            event_type,
            payload,
            event_id: None,
            replay_context: None,
            to: Some(vec![local]),
        },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// `GET …/stats`: the endpoint's attempts and deliveries by state.
pub async fn stats(
    State(state): State<AppState>,
    SvixCaller(caller): SvixCaller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
) -> SvixResult<Json<Value>> {
    require(&caller, Scope::Read)?;
    let a = app(&state, &caller, &app_id).await?;
    let e = find(&state, &a, &endpoint_id)?;
    let since = herald_core::clock::now_ms() - 28 * 86_400_000;
    let attempts = state.store.attempt_stats(&e.name, since).await?;
    let queue = state.store.queue_counts(&e.name).await?;
    Ok(Json(json!({
        "success": attempts.delivered,
        "pending": queue.pending,
        "sending": queue.in_flight,
        "fail": attempts.total - attempts.delivered,
        "canceled": 0,
    })))
}
