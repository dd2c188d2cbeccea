//! The operator dashboard at `/ui`: server-rendered pages (minijinja, HTML auto-escaped)
//! with a vendored htmx for in-place updates, all embedded in the binary: no CDN, works
//! offline. One file per page; sessions, sign-in and CSRF live in [`session`] and
//! [`signin`]. Every list is paged and every query an index range, so the pages stay fast
//! at hundreds of thousands of deliveries.
//!
//! The dashboard is outside `/api/v1` and deliberately absent from the OpenAPI document.

pub mod audit;
pub mod deliveries;
pub mod destinations;
pub mod dlq;
pub mod errors;
pub mod overview;
pub mod session;
pub mod signin;

use crate::api::problem::ApiError;
use crate::attachments::AttachmentError;
use crate::auth::AuthError;
use crate::destinations::DestinationError;
use crate::ingest::IngestError;
use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use herald_store::StoreError;
use minijinja::{Environment, Value, context};
use session::UiUser;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The pages in the navigation bar: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/ui", "Overview"),
    ("/ui/destinations", "Destinations"),
    ("/ui/deliveries", "Deliveries"),
    ("/ui/dlq", "Dead letters"),
    ("/ui/errors", "Errors"),
    ("/ui/audit", "Audit log"),
];

/// Rows per page on every list.
pub const PAGE_SIZE: u32 = 50;

const HTMX: &str = include_str!("../../assets/htmx-2.0.11.min.js");
const CSS: &str = include_str!("../../assets/herald.css");

/// The dashboard's routes (merged into the main router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/signin", get(signin::form).post(signin::submit))
        .route("/ui/signout", post(signin::signout))
        .route("/ui/destinations", get(destinations::page))
        .route("/ui/destinations/{name}", get(destinations::detail))
        .route("/ui/destinations/{name}/test", post(destinations::test))
        .route("/ui/destinations/{name}/enable", post(destinations::enable))
        .route("/ui/destinations/{name}/pause", post(destinations::pause))
        .route("/ui/destinations/{name}/edit", post(destinations::edit))
        .route(
            "/ui/destinations/{name}/disable",
            post(destinations::disable),
        )
        .route("/ui/deliveries", get(deliveries::page))
        .route("/ui/deliveries/{id}", get(deliveries::detail))
        .route(
            "/ui/messages/{id}/attachments/{n}",
            get(deliveries::attachment),
        )
        .route("/ui/dlq", get(dlq::page))
        .route("/ui/dlq/confirm", get(dlq::confirm))
        .route("/ui/dlq/replay", post(dlq::replay))
        .route("/ui/dlq/discard", post(dlq::discard))
        .route("/ui/errors", get(errors::page))
        .route("/ui/errors/status", post(errors::act))
        .route("/ui/audit", get(audit::page))
        .route("/ui/audit/verify", get(audit::verify))
        .route("/ui/assets/{file}", get(asset))
        // Forms are a few short fields.
        .layer(DefaultBodyLimit::max(16 * 1024))
}

/// Every template, compiled in.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("public.html", include_str!("templates/public.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("error.html", include_str!("templates/error.html")),
    ("overview.html", include_str!("templates/overview.html")),
    (
        "destinations.html",
        include_str!("templates/destinations.html"),
    ),
    (
        "destination.html",
        include_str!("templates/destination.html"),
    ),
    ("deliveries.html", include_str!("templates/deliveries.html")),
    ("delivery.html", include_str!("templates/delivery.html")),
    ("dlq.html", include_str!("templates/dlq.html")),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("errors.html", include_str!("templates/errors.html")),
    ("verify.html", include_str!("templates/verify.html")),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // `.html` names get HTML auto-escaping (minijinja's default callback).
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                // The templates are compiled in; a broken one fails the unit test below.
                tracing::error!(template = name, error = %e, "dashboard template does not parse");
            }
        }
        env
    })
}

/// Asset URLs carry a hash of their content, so they can be cached for a year.
fn asset_url(name: &str, body: &str) -> String {
    let hash = hex::encode(&Sha256::digest(body.as_bytes())[..6]);
    format!("/ui/assets/{name}?v={hash}")
}

fn asset_urls() -> &'static (String, String) {
    static URLS: OnceLock<(String, String)> = OnceLock::new();
    URLS.get_or_init(|| {
        (
            asset_url("herald.css", CSS),
            asset_url("htmx-2.0.11.min.js", HTMX),
        )
    })
}

/// The dashboard's stylesheet URL (the portal uses it too).
pub fn css_url() -> Value {
    Value::from_safe_string(asset_urls().0.clone())
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "herald.css" => (CSS, "text/css; charset=utf-8"),
        "htmx-2.0.11.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        _ => return UiError::new(StatusCode::NOT_FOUND, "No such file.").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// Renders a template as an HTML response with the dashboard's security headers.
fn html(status: StatusCode, name: &str, ctx: Value) -> Response {
    let body = env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| {
            tracing::error!(template = name, error = %e, "dashboard page failed to render");
            "<!doctype html><title>Herald</title><p>This page failed to render; see the server log.</p>".to_string()
        });
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// Renders a page of the signed-in dashboard: `page` names the active nav entry.
pub fn render(user: &UiUser, page: &str, name: &str, ctx: Value) -> Response {
    let base = context! {
        nav => NAV.iter().map(|(path, label)| context! { path, label, active => *path == page }).collect::<Vec<_>>(),
        user => user.caller.name.clone(),
        scopes => user.caller.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
        can_write => user.can_write(),
        csrf => user.csrf.clone(),
        css => Value::from_safe_string(asset_urls().0.clone()),
        htmx => Value::from_safe_string(asset_urls().1.clone()),
    };
    html(StatusCode::OK, name, context! { ..base, ..ctx })
}

/// Renders a page shown without a session (sign-in, errors).
fn render_public(status: StatusCode, name: &str, ctx: Value) -> Response {
    let base = context! {
        css => Value::from_safe_string(asset_urls().0.clone()),
        htmx => Value::from_safe_string(asset_urls().1.clone()),
    };
    html(status, name, context! { ..base, ..ctx })
}

/// An error page (the dashboard never answers problem+json).
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
    sign_in: bool,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        UiError {
            status,
            message: message.into(),
            sign_in: false,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> String {
        self.message.clone()
    }

    /// Sends the browser to the sign-in page.
    pub fn sign_in() -> Self {
        UiError {
            status: StatusCode::SEE_OTHER,
            message: String::new(),
            sign_in: true,
        }
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        let fault = matches!(&e, ApiError::Store(s) if s.fault().is_some());
        if matches!(e, ApiError::Store(_) | ApiError::Internal(_)) && !fault {
            tracing::error!(error = %e, "dashboard request failed");
        }
        UiError::new(e.status(), e.problem().detail)
    }
}

/// The domain's errors reach the dashboard with the status and wording the API gives them.
macro_rules! via_api {
    ($($error:ty),*) => {$(
        impl From<$error> for UiError {
            fn from(e: $error) -> Self {
                ApiError::from(e).into()
            }
        }
    )*};
}
via_api!(
    StoreError,
    AuthError,
    IngestError,
    DestinationError,
    AttachmentError
);

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if self.sign_in {
            let mut resp = Redirect::to("/ui/signin").into_response();
            // htmx requests follow redirects inside XHR; tell htmx to navigate instead.
            resp.headers_mut()
                .insert("hx-redirect", HeaderValue::from_static("/ui/signin"));
            return resp;
        }
        let title = self.status.canonical_reason().unwrap_or("Error");
        render_public(
            self.status,
            "error.html",
            context! { status => self.status.as_u16(), title, message => self.message },
        )
    }
}

pub type UiResult = Result<Response, UiError>;

/// Epoch ms as `2026-12-01 22:43:41 UTC` (the dashboard's one time format).
pub fn when(ms: i64) -> String {
    let s = herald_core::clock::rfc3339(ms);
    // rfc3339 gives 2026-12-01T22:43:41.123Z; drop the fraction for reading.
    match (s.get(..10), s.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => s,
    }
}

/// Epoch ms relative to now: `in 3m`, `5s ago`.
pub fn ago(ms: i64, now: i64) -> String {
    let d = (now - ms).abs() / 1000;
    let span = match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m", d / 60),
        3600..86400 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86400),
    };
    if ms > now {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes_html() {
        let env = env();
        for (name, _) in TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name} does not parse");
        }
        let out = env
            .get_template("error.html")
            .unwrap()
            .render(
                context! { status => 400, title => "Bad", message => "<script>alert(1)</script>" },
            )
            .unwrap();
        assert!(out.contains("&lt;script&gt;"), "{out}");
        assert!(!out.contains("<script>alert"));
    }

    #[test]
    fn times_read_as_utc_and_relative() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(ago(0, 5_000), "5s ago");
        assert_eq!(ago(190_000, 10_000), "in 3m");
    }
}
