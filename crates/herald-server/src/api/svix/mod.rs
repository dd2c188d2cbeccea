//! The Svix-compatible API: Svix's paths under `/api/v1/`, its camelCase JSON, its list
//! envelope and its error bodies, so the official svix SDKs work against Herald with
//! `server_url` set (docs/svix-compatibility.md maps it route by route). Applications are
//! Herald's tenants, endpoints their `webhook` destinations (signing `svix-*`), messages
//! and attempts Herald's own: the domain modules do the work, this layer only translates.

mod apps;
pub(crate) mod endpoints;
mod event_types;
pub(crate) mod messages;
mod operational;

use super::extract::read_json_body;
use super::problem::ApiError;
use crate::auth::{AuthError, Caller, Scope};
use crate::state::AppState;
use crate::tenants::TenantError;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herald_core::clock::rfc3339;
use herald_store::TenantRecord;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Marks a response whose error body is already in its final (Svix) shape, so the
/// router's problem+json rewriting leaves it alone.
#[derive(Clone, Copy)]
pub struct Shaped;

/// An error as Svix answers it: `{"code", "detail"}`, or for validation a 422
/// `{"detail": [{"loc", "msg", "type"}]}`.
#[derive(Debug)]
pub enum SvixError {
    Http {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    Validation(Vec<(Vec<String>, String)>),
    /// The application's `throttleRate` is spent: 429 with `Retry-After`.
    TooMany {
        retry_after_s: u64,
    },
}

impl SvixError {
    pub fn not_found(what: &str) -> Self {
        SvixError::Http {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            detail: format!("{what} not found"),
        }
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        SvixError::Http {
            status: StatusCode::CONFLICT,
            code: "conflict",
            detail: detail.into(),
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        SvixError::Http {
            status: StatusCode::BAD_REQUEST,
            code,
            detail: detail.into(),
        }
    }

    /// A 422 for one field of the body (`loc` is `["body", <field path>…]`).
    pub fn body_field(field: &str, msg: impl Into<String>) -> Self {
        SvixError::Validation(vec![(loc("body", field), msg.into())])
    }

    pub fn not_implemented(what: &str) -> Self {
        SvixError::Http {
            status: StatusCode::NOT_IMPLEMENTED,
            code: "not_implemented",
            detail: format!(
                "{what} is not implemented by Herald's Svix-compatible API (see docs/svix-compatibility.md)"
            ),
        }
    }
}

fn loc(root: &str, field: &str) -> Vec<String> {
    std::iter::once(root.to_string())
        .chain(
            field
                .split(['.', '['])
                .map(|p| p.trim_end_matches(']'))
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        )
        .collect()
}

impl From<ApiError> for SvixError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let code = match &e {
            ApiError::Validation(v) => {
                return SvixError::Validation(
                    v.0.iter()
                        .map(|f| (loc("body", &f.field), f.message.clone()))
                        .collect(),
                );
            }
            ApiError::Unprocessable(m) => {
                return SvixError::Validation(vec![(vec!["body".into()], m.clone())]);
            }
            ApiError::BadRequest(_) => "generic_error",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::Unauthorized(_) => "authentication_failed",
            ApiError::Forbidden(_) => "insufficient access",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            _ if status.is_server_error() => "server_error",
            _ => "generic_error",
        };
        // The problem document's detail hides storage internals the same way.
        SvixError::Http {
            status,
            code,
            detail: e.problem().detail,
        }
    }
}

impl From<AuthError> for SvixError {
    fn from(e: AuthError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<herald_store::StoreError> for SvixError {
    fn from(e: herald_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<TenantError> for SvixError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::NotFound(_) => SvixError::not_found("Application"),
            TenantError::UidTaken(_) => {
                SvixError::conflict("An application with that id or uid already exists")
            }
            other => ApiError::from(other).into(),
        }
    }
}

impl From<crate::destinations::DestinationError> for SvixError {
    fn from(e: crate::destinations::DestinationError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for SvixError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, body) = match self {
            SvixError::TooMany { retry_after_s } => {
                retry_after = Some(retry_after_s);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({"code": "rate_limited", "detail": "the application's throttleRate is spent; retry after Retry-After"}),
                )
            }
            SvixError::Http {
                status,
                code,
                detail,
            } => (status, json!({"code": code, "detail": detail})),
            SvixError::Validation(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"detail": errors
                    .into_iter()
                    .map(|(loc, msg)| json!({"loc": loc, "msg": msg, "type": "value_error"}))
                    .collect::<Vec<_>>()}),
            ),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(s) = retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        resp.extensions_mut().insert(Shaped);
        resp
    }
}

pub type SvixResult<T> = Result<T, SvixError>;

/// The caller, with Svix's 401 body when the token is missing or wrong.
pub struct SvixCaller(pub Caller);

impl FromRequestParts<AppState> for SvixCaller {
    type Rejection = SvixError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Caller::from_request_parts(parts, state)
            .await
            .map(SvixCaller)
            .map_err(SvixError::from)
    }
}

/// A JSON body: unknown fields are ignored (the SDKs send fields of Svix's hosted API),
/// a wrong shape is a 422 naming the field.
pub struct SvixJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for SvixJson<T> {
    type Rejection = SvixError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_json_body(req, state).await?;
        let bytes = if bytes.is_empty() {
            axum::body::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        super::extract::parse_json(&bytes)
            .map(SvixJson)
            .map_err(SvixError::from)
    }
}

/// The query string as `T`; a bad value is a 422 at `["query", field]`.
pub fn query<T: DeserializeOwned>(uri: &Uri) -> SvixResult<T> {
    let q = uri.query().unwrap_or("");
    serde_urlencoded::from_str(q)
        .map_err(|e| SvixError::Validation(vec![(vec!["query".into()], e.to_string())]))
}

/// The list envelope: `{data, iterator, prevIterator, done}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    pub prev_iterator: Option<String>,
    pub done: bool,
}

/// The `limit` of a list: default 50, at most 250.
pub fn limit(given: Option<u32>) -> SvixResult<u32> {
    match given.unwrap_or(50) {
        0 => Err(SvixError::Validation(vec![(
            vec!["query".into(), "limit".into()],
            "Given limit must be at least 1".into(),
        )])),
        n if n > 250 => Err(SvixError::Validation(vec![(
            vec!["query".into(), "limit".into()],
            "Given limit must not exceed 250".into(),
        )])),
        n => Ok(n),
    }
}

/// A page from `limit + 1` items fetched: the iterator is the last item's key.
pub fn page<T, K: Fn(&T) -> String>(mut items: Vec<T>, limit: u32, key: K) -> ListResponse<T> {
    let done = items.len() <= limit as usize;
    items.truncate(limit as usize);
    ListResponse {
        iterator: items.last().map(&key),
        prev_iterator: items.first().map(|i| format!("-{}", key(i))),
        data: items,
        done,
    }
}

/// Times as Svix writes them (RFC 3339, UTC, `Z`).
pub fn time(ms: i64) -> String {
    rfc3339(ms)
}

/// Reads a time given in a query or body: RFC 3339, or naive (read as UTC, as the 1.x
/// SDK sends naive datetimes without their offset).
pub fn parse_time(s: &str, field: &str) -> SvixResult<i64> {
    herald_core::clock::parse_rfc3339(s)
        .or_else(|| herald_core::clock::parse_rfc3339(&format!("{s}Z")))
        .ok_or_else(|| {
            SvixError::Validation(vec![(
                loc("query", field),
                format!("{s:?} is not an RFC 3339 time"),
            )])
        })
}

/// The application named in a path (id or uid) that the caller may see; 404 otherwise.
pub async fn app(state: &AppState, caller: &Caller, id_or_uid: &str) -> SvixResult<TenantRecord> {
    Ok(crate::tenants::find(state, caller, id_or_uid).await?)
}

/// The caller needs `scope` (a tenant's token stays inside its tenant).
pub fn require(caller: &Caller, scope: Scope) -> SvixResult<()> {
    Ok(caller.require_scope(scope)?)
}

/// `GET /api/v1/health`: whether the store answers.
async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(json!({"database": {"status": "ok"}, "queue": {"status": "ok"}})),
        )
            .into_response(),
        Err(e) => {
            let mut resp = (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"database": {"status": "error", "detail": e.detail()}})),
            )
                .into_response();
            resp.extensions_mut().insert(Shaped);
            resp
        }
    }
}

/// Svix routes Herald does not implement: a clear 501, never a 500 or an empty 404.
async fn not_implemented(uri: Uri) -> SvixError {
    SvixError::not_implemented(uri.path())
}

/// The routes, to be nested under `/api/v1`.
pub fn router() -> Router<AppState> {
    let r: Router<AppState> = Router::new()
        .route("/app", get(apps::list).post(apps::create))
        .route(
            "/app/{app_id}",
            get(apps::get)
                .put(apps::put)
                .patch(apps::patch)
                .delete(apps::delete),
        )
        .route(
            "/app/{app_id}/endpoint",
            get(endpoints::list).post(endpoints::create),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}",
            get(endpoints::get)
                .put(endpoints::put)
                .patch(endpoints::patch)
                .delete(endpoints::delete),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/secret",
            get(endpoints::secret),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
            post(endpoints::rotate),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/headers",
            get(endpoints::headers)
                .put(endpoints::put_headers)
                .patch(endpoints::patch_headers),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/recover",
            post(endpoints::recover),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/send-example",
            post(endpoints::send_example),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/stats",
            get(endpoints::stats),
        )
        .route(
            "/app/{app_id}/msg",
            get(messages::list).post(messages::create),
        )
        .route("/app/{app_id}/msg/{msg_id}", get(messages::get))
        .route(
            "/app/{app_id}/attempt/msg/{msg_id}",
            get(messages::attempts_of_message),
        )
        .route(
            "/app/{app_id}/attempt/endpoint/{endpoint_id}",
            get(messages::attempts_of_endpoint),
        )
        .route(
            "/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}",
            get(messages::attempt),
        )
        .route(
            "/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
            post(messages::resend),
        )
        .route(
            "/event-type",
            get(event_types::list).post(event_types::create),
        )
        .route(
            "/event-type/{name}",
            get(event_types::get)
                .put(event_types::put)
                .patch(event_types::patch)
                .delete(event_types::delete),
        )
        .route("/health", get(health))
        // Known Svix routes Herald does not serve (yet).
        .route(
            "/auth/app-portal-access/{app_id}",
            post(apps::portal_access),
        )
        .route("/auth/dashboard-access/{app_id}", post(apps::portal_access))
        .route("/auth/logout", post(not_implemented))
        .route(
            "/operational-webhook/endpoint",
            get(operational::list).post(operational::create),
        )
        .route(
            "/operational-webhook/endpoint/{endpoint_id}",
            get(operational::get)
                .put(operational::put)
                .delete(operational::delete),
        )
        .route(
            "/operational-webhook/endpoint/{endpoint_id}/secret",
            get(operational::secret),
        )
        .route(
            "/operational-webhook/endpoint/{endpoint_id}/secret/rotate",
            post(operational::rotate),
        )
        .route(
            "/app/{app_id}/msg/{msg_id}/content",
            axum::routing::delete(not_implemented),
        )
        .route(
            "/app/{app_id}/msg/expunge-all-contents",
            post(not_implemented),
        )
        .route(
            "/app/{app_id}/integration",
            axum::routing::any(not_implemented),
        )
        .route(
            "/app/{app_id}/integration/{*rest}",
            axum::routing::any(not_implemented),
        )
        .route(
            "/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content",
            axum::routing::delete(not_implemented),
        )
        .route("/background-task", axum::routing::any(not_implemented))
        .route(
            "/background-task/{*rest}",
            axum::routing::any(not_implemented),
        )
        .route("/stats/{*rest}", axum::routing::any(not_implemented))
        .route(
            "/app/{app_id}/msg/{msg_id}/endpoint",
            get(messages::attempted_endpoints),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/msg",
            get(messages::attempted_messages),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/transformation",
            axum::routing::any(not_implemented),
        );
    r
}
