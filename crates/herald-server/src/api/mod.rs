//! The HTTP API (DESIGN §6): one module per resource; handlers extract, call the domain and
//! map the result. Every error leaves as problem+json.

pub mod apprise;
pub mod audit;
pub mod caller;
pub mod deliveries;
pub mod destinations;
pub mod dlq;
pub mod errors;
pub mod extract;
pub mod health;
pub mod messages;
pub mod openapi;
pub mod problem;
pub mod sentry;
pub mod svix;
pub mod tenants;
pub mod tokens;
pub mod views;

use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use extract::BodyLimit;
use problem::{ApiError, Problem, problem_response};
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

/// The whole router.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let max_message = state.config.max_message_bytes;
    let messages = Router::new()
        .route("/messages", post(messages::create))
        .route("/messages/batch", post(messages::batch))
        .layer(DefaultBodyLimit::max(max_message))
        .layer(axum::Extension(BodyLimit(max_message)));
    let v1 = Router::new()
        .route("/messages/{id}", get(messages::get))
        .route("/messages/{id}/attachments/{n}", get(messages::attachment))
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/{id}", get(deliveries::get))
        .route("/destinations", get(destinations::list))
        .route(
            "/destinations/{name}",
            put(destinations::put)
                .get(destinations::get)
                .delete(destinations::delete),
        )
        .route("/destinations/{name}/health", get(destinations::health))
        .route("/destinations/{name}/test", post(destinations::test))
        .route("/destinations/{name}/enable", post(destinations::enable))
        .route("/destinations/{name}/pause", post(destinations::pause))
        .route("/destinations/{name}/disable", post(destinations::disable))
        .route("/dlq", get(dlq::list))
        .route("/dlq/{queue}/replay", post(dlq::replay_all))
        .route("/dlq/{queue}/replay/{item_id}", post(dlq::replay_one))
        .route(
            "/dlq/{queue}/{item_id}",
            axum::routing::delete(dlq::discard),
        )
        .route("/audit", get(audit::list))
        .route("/audit/verify", get(audit::verify))
        .route("/audit/public-key", get(audit::public_key))
        .route("/audit/checkpoint", post(audit::checkpoint))
        .route("/errors", post(errors::create))
        .route("/error-groups", get(errors::list))
        .route("/error-groups/{id}", get(errors::get))
        .route("/error-groups/{id}/resolve", post(errors::resolve))
        .route("/error-groups/{id}/unresolve", post(errors::unresolve))
        .route("/tenants", post(tenants::create).get(tenants::list))
        .route(
            "/tenants/{id}",
            get(tenants::get)
                .put(tenants::put)
                .patch(tenants::patch)
                .delete(tenants::delete),
        )
        .route("/tenants/{id}/portal-access", post(tenants::portal_access))
        .route("/tokens", post(tokens::create).get(tokens::list))
        .route("/tokens/{id}", axum::routing::delete(tokens::revoke))
        .merge(svix::router())
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::Extension(BodyLimit(max_body)))
        .merge(messages);
    // Sentry SDKs compress: the compressed body is capped first, then what it inflates to.
    let max_inflated = state.config.max_decompressed_bytes;
    let sentry = Router::new()
        .route("/api/{project_id}/envelope/", post(sentry::envelope))
        .route("/api/{project_id}/store/", post(sentry::store))
        .layer(DefaultBodyLimit::max(max_inflated))
        .layer(axum::Extension(BodyLimit(max_inflated)))
        .layer(RequestDecompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(max_body));
    let notify = Router::new()
        .route("/notify/{key}", post(apprise::notify))
        .route("/notify", post(apprise::notify_by_header))
        .route("/notify/", post(apprise::notify_by_header))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::Extension(BodyLimit(max_body)));
    Router::new()
        .nest("/api/v1", v1)
        .merge(sentry)
        .merge(notify)
        .route("/api/openapi.json", get(openapi::spec))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(crate::ui::router())
        .merge(crate::portal::router())
        .fallback(not_found)
        .layer(axum::middleware::map_response(problems_everywhere))
        .layer(PropagateRequestIdLayer::x_request_id())
        // Failures are logged where they are understood (a bug at error, a storage fault
        // once per outage by the store), not once per 5xx response here.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// One span per request (info level, so it reaches logs and OTLP traces), named by the
/// route, not the raw path, and carrying the request id.
fn request_span(req: &axum::http::Request<Body>) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str())
        .unwrap_or("unmatched");
    tracing::info_span!("request", method = %req.method(), route, request_id)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Turns any error response that is not already problem+json (the framework's own
/// rejections: 405, 413 on raw bodies, path errors) into one.
async fn problems_everywhere(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // Problem documents pass, and so do the dashboard's HTML error pages and the
    // Svix-compatible API's own error bodies.
    if resp.extensions().get::<svix::Shaped>().is_some() {
        return resp;
    }
    let done = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json") || v.starts_with("text/html"));
    if done {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let slug = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::NOT_FOUND => "not-found",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let p = Problem {
        kind: format!("urn:herald:problem:{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail: if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text
        },
        errors: None,
    };
    let mut out = problem_response(&p);
    for (k, v) in parts.headers.iter() {
        if k == header::ALLOW || k == "x-request-id" {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}

/// An empty 204.
pub fn no_content() -> Response {
    (StatusCode::NO_CONTENT, Body::empty()).into_response()
}
