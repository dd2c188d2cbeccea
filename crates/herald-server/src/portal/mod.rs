//! The customer portal at `/portal`: one tenant's customer fixes their own endpoints —
//! makes, edits, disables and deletes them, reveals and rotates secrets, picks event types,
//! sets headers, sends a test event, reads messages with every attempt, resends one or
//! recovers what failed. Server-rendered like `/ui` (minijinja, no script, no CDN) under a
//! strict CSP whose `frame-ancestors` is configurable (`[portal]`), so the platform can
//! embed it in its own settings page; the tenant's name, logo and accent colour brand it.
//!
//! It is opened from a link that `POST /api/v1/auth/app-portal-access/{app}` (or
//! `POST /api/v1/tenants/{id}/portal-access`) returns: a short-lived token confined to the
//! tenant, which `/portal/access` turns into a session for that tenant only. Everything
//! goes through the same domain code as the Svix-compatible API, with the session's
//! tenant-confined caller — another tenant's ids are simply not found.

mod pages;

use crate::api::svix::SvixError;
use crate::state::AppState;
use crate::ui::UiError;
use crate::ui::session::{self, UiUser};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herald_store::TenantRecord;
use minijinja::{Environment, Value, context};
use std::sync::OnceLock;

/// The portal's routes (merged into the main router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal", get(pages::endpoints))
        .route("/portal/access", get(pages::access))
        .route("/portal/signout", post(pages::signout))
        .route("/portal/theme.css", get(pages::theme))
        .route("/portal/endpoints", post(pages::create))
        .route("/portal/endpoints/{ep}", get(pages::endpoint))
        .route("/portal/endpoints/{ep}/edit", post(pages::edit))
        .route("/portal/endpoints/{ep}/state", post(pages::set_state))
        .route("/portal/endpoints/{ep}/delete", post(pages::delete))
        .route("/portal/endpoints/{ep}/secret", post(pages::reveal))
        .route("/portal/endpoints/{ep}/rotate", post(pages::rotate))
        .route("/portal/endpoints/{ep}/headers", post(pages::headers))
        .route("/portal/endpoints/{ep}/test", post(pages::test))
        .route("/portal/endpoints/{ep}/recover", post(pages::recover))
        .route("/portal/messages", get(pages::messages))
        .route("/portal/messages/{id}", get(pages::message))
        .route("/portal/messages/{id}/resend", post(pages::resend))
        .layer(DefaultBodyLimit::max(64 * 1024))
}

const TEMPLATES: &[(&str, &str)] = &[
    ("portal_base.html", include_str!("templates/base.html")),
    (
        "portal_endpoints.html",
        include_str!("templates/endpoints.html"),
    ),
    (
        "portal_endpoint.html",
        include_str!("templates/endpoint.html"),
    ),
    (
        "portal_messages.html",
        include_str!("templates/messages.html"),
    ),
    (
        "portal_message.html",
        include_str!("templates/message.html"),
    ),
    ("portal_error.html", include_str!("templates/error.html")),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "portal template does not parse");
            }
        }
        env
    })
}

/// A signed-in customer: the session (confined to one tenant) and the tenant.
pub struct Customer {
    pub user: UiUser,
    pub tenant: TenantRecord,
}

impl FromRequestParts<AppState> for Customer {
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = session::portal_user(state, &parts.headers)
            .await
            .map_err(PortalError::from)?
            .ok_or_else(PortalError::signed_out)?;
        let id = user.caller.tenant.clone().unwrap_or_default();
        let tenant = state
            .store
            .get_tenant(&id)
            .await
            .map_err(|e| PortalError::from(UiError::from(e)))?
            .ok_or_else(PortalError::signed_out)?;
        if parts.method != axum::http::Method::GET {
            session::check_origin(&parts.headers)?;
        }
        Ok(Customer { user, tenant })
    }
}

/// The tenant's look: its name, and from its metadata `portal_logo_url` (an https URL)
/// and `portal_accent` (`#rrggbb`).
struct Brand {
    name: String,
    logo: Option<String>,
    accent: Option<String>,
}

fn brand(t: &TenantRecord) -> Brand {
    let logo = t
        .metadata
        .get("portal_logo_url")
        .filter(|u| u.starts_with("https://") && !u.contains(['"', '\'', ' ', ';', '<', '>', '\\']))
        .cloned();
    let accent = t
        .metadata
        .get("portal_accent")
        .filter(|c| {
            c.len() == 7 && c.starts_with('#') && c[1..].bytes().all(|b| b.is_ascii_hexdigit())
        })
        .cloned();
    Brand {
        name: t.name.clone(),
        logo,
        accent,
    }
}

/// The origin of an https URL (`https://host[:port]`), for the CSP's `img-src`.
fn origin_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("https://{host}"))
}

fn csp(state: &AppState, logo: Option<&str>) -> String {
    let ancestors = if state.config.portal.frame_ancestors.is_empty() {
        "'none'".to_string()
    } else {
        state.config.portal.frame_ancestors.join(" ")
    };
    let img = match logo.and_then(origin_of) {
        Some(o) => format!("'self' data: {o}"),
        None => "'self' data:".into(),
    };
    format!(
        "default-src 'none'; script-src 'none'; style-src 'self'; img-src {img}; form-action 'self'; frame-ancestors {ancestors}; base-uri 'none'"
    )
}

fn html(
    state: &AppState,
    status: StatusCode,
    name: &str,
    ctx: Value,
    logo: Option<&str>,
) -> Response {
    let body = env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| {
            tracing::error!(template = name, error = %e, "portal page failed to render");
            "<!doctype html><title>Portal</title><p>This page failed to render.</p>".to_string()
        });
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&csp(state, logo)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Same-origin: the browser then sends `Origin` with the portal's own form posts (with
    // `no-referrer` it sends `Origin: null`, which the origin check refuses).
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// Renders a page of the portal for `c`; `page` names the active tab.
fn render(state: &AppState, c: &Customer, page: &str, name: &str, ctx: Value) -> Response {
    let b = brand(&c.tenant);
    let base = context! {
        brand => b.name,
        logo => b.logo.clone(),
        accent => b.accent.is_some(),
        page,
        csrf => c.user.csrf.clone(),
        css => crate::ui::css_url(),
    };
    html(
        state,
        StatusCode::OK,
        name,
        context! { ..base, ..ctx },
        b.logo.as_deref(),
    )
}

/// A portal error page (never problem+json).
#[derive(Debug)]
pub struct PortalError {
    status: StatusCode,
    message: String,
}

impl PortalError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PortalError {
            status,
            message: message.into(),
        }
    }

    fn signed_out() -> Self {
        PortalError::new(
            StatusCode::UNAUTHORIZED,
            "This portal session has ended. Open the portal again from the link you were given.",
        )
    }
}

impl From<UiError> for PortalError {
    fn from(e: UiError) -> Self {
        PortalError::new(e.status(), e.message())
    }
}

impl From<SvixError> for PortalError {
    fn from(e: SvixError) -> Self {
        match e {
            SvixError::Http { status, detail, .. } => PortalError::new(status, detail),
            SvixError::Validation(errors) => PortalError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                errors
                    .into_iter()
                    .map(|(loc, msg)| {
                        let field = loc.into_iter().skip(1).collect::<Vec<_>>().join(".");
                        if field.is_empty() {
                            msg
                        } else {
                            format!("{field}: {msg}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            SvixError::TooMany { retry_after_s } => PortalError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many messages at once; try again in {retry_after_s} s."),
            ),
        }
    }
}

impl From<herald_store::StoreError> for PortalError {
    fn from(e: herald_store::StoreError) -> Self {
        UiError::from(e).into()
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let ctx = context! {
            status => self.status.as_u16(),
            message => self.message,
            css => crate::ui::css_url(),
        };
        let mut state_free = html_static(self.status, ctx);
        state_free
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        state_free
    }
}

/// An error page, rendered without the state (no tenant, the strictest CSP).
fn html_static(status: StatusCode, ctx: Value) -> Response {
    let body = env()
        .get_template("portal_error.html")
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|_| "<!doctype html><title>Portal</title><p>Error.</p>".into());
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES {
            assert!(env().get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn only_a_clean_https_logo_and_a_hex_accent_are_taken() {
        let mut t = TenantRecord {
            id: "app_1".into(),
            uid: None,
            name: "Acme".into(),
            metadata: Default::default(),
            rate_limit: None,
            created_at: 0,
            updated_at: 0,
        };
        t.metadata.insert(
            "portal_logo_url".into(),
            "https://cdn.acme.test/logo.png".into(),
        );
        t.metadata.insert("portal_accent".into(), "#12ab34".into());
        let b = brand(&t);
        assert_eq!(b.logo.as_deref(), Some("https://cdn.acme.test/logo.png"));
        assert_eq!(b.accent.as_deref(), Some("#12ab34"));
        assert_eq!(
            origin_of("https://cdn.acme.test/logo.png").as_deref(),
            Some("https://cdn.acme.test")
        );
        t.metadata
            .insert("portal_logo_url".into(), "javascript:alert(1)".into());
        t.metadata.insert("portal_accent".into(), "red;}".into());
        let b = brand(&t);
        assert!(b.logo.is_none() && b.accent.is_none());
    }
}
