//! Dashboard sessions: signing in with an API token makes a random session id, stored (as
//! its SHA-256) in the database with the caller it stands for, its CSRF token and its
//! expiry — so every node of a cluster knows it, and no load balancer stickiness is needed.
//! The browser holds only the id, in an `HttpOnly; SameSite=Strict; Path=/ui` cookie; the
//! API token itself never leaves the sign-in request. Sessions end on sign-out, on expiry,
//! and when the token they were made with stops opening Herald: a stored token revoked, or
//! the fixed admin token changed.

use super::UiError;
use crate::auth::{Caller, Scope};
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use herald_store::SessionRecord;
use rand::Rng;
use rand::distributions::Alphanumeric;
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq;

pub const COOKIE_NAME: &str = "herald_session";
/// The customer portal's cookie (`Path=/portal`): a session confined to one tenant.
pub const PORTAL_COOKIE: &str = "herald_portal";
/// A session lasts this long from sign-in (no sliding renewal).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

struct Session {
    caller: Caller,
    /// The stored token id, or the fixed admin token's digest (`env:…`).
    binding: Option<String>,
    csrf: String,
}

fn random(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// What the database keeps of a session id: its hash (a copy of the table yields no usable
/// cookies).
fn key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// What a session made with the fixed admin token keeps of that token: an HMAC-SHA256
/// keyed with the master key (the token itself is never stored, and a copy of the database
/// alone cannot test guesses against it), so the session ends when the token changes — or
/// when the master key is rotated.
fn env_binding(state: &AppState, token: &str) -> String {
    let mac = state
        .secrets
        .mac("herald dashboard session v2", token.as_bytes());
    format!("{ENV_BINDING}{}", hex::encode(mac))
}

/// Prefix of [`env_binding`] in a session's `token_id`.
const ENV_BINDING: &str = "env:";

/// Starts a session; returns its id (the cookie value). A session is bound to the token
/// it was made with: a stored token by its id (revoking it ends the session), the fixed
/// admin token by its keyed fingerprint (changing it ends the session).
pub async fn create(state: &AppState, caller: Caller) -> Result<String, UiError> {
    create_for(state, caller, SESSION_TTL).await
}

/// [`create`] for `ttl`; a caller confined to a tenant makes a portal session.
pub async fn create_for(
    state: &AppState,
    caller: Caller,
    ttl: Duration,
) -> Result<String, UiError> {
    let id = random(43);
    let now = herald_core::clock::now_ms();
    let binding = match &caller.token_id {
        Some(token_id) => token_id.clone(),
        None => env_binding(
            state,
            state.config.admin_token.as_deref().unwrap_or_default(),
        ),
    };
    state
        .store
        .create_session(SessionRecord {
            id_hash: key(&id),
            token_id: Some(binding),
            name: caller.name.clone(),
            scopes: caller.scopes.clone(),
            csrf: random(32),
            created_at: now,
            expires_at: now + ttl.as_millis() as i64,
            tenant: caller.tenant.clone(),
        })
        .await?;
    Ok(id)
}

async fn get(state: &AppState, id: &str) -> Result<Option<Session>, UiError> {
    let now = herald_core::clock::now_ms();
    Ok(state
        .store
        .get_session(&key(id), now)
        .await?
        .map(|r| Session {
            caller: Caller {
                token_id: r.token_id.clone().filter(|t| !t.starts_with(ENV_BINDING)),
                name: r.name,
                scopes: r.scopes,
                tenant: r.tenant,
            },
            binding: r.token_id,
            csrf: r.csrf,
        }))
}

/// Whether the token a session was made with still opens Herald: the stored token exists
/// and is not revoked, or the fixed admin token is the same as then.
async fn still_bound(state: &AppState, s: &Session) -> Result<bool, UiError> {
    match (&s.caller.token_id, &s.binding) {
        (Some(token_id), _) => Ok(state.store.get_token(token_id).await?.is_some_and(|t| {
            t.revoked_at.is_none()
                && t.expires_at
                    .is_none_or(|e| e > herald_core::clock::now_ms())
        })),
        // Made with the fixed admin token: the one configured now must be the same.
        (None, Some(binding)) => Ok(state.config.admin_token.as_deref().is_some_and(|t| {
            !t.is_empty() && bool::from(env_binding(state, t).as_bytes().ct_eq(binding.as_bytes()))
        })),
        // No binding (a session from before sessions were bound): void.
        (None, None) => Ok(false),
    }
}

/// Ends a session (sign-out).
pub async fn end(state: &AppState, id: &str) -> Result<(), UiError> {
    Ok(state.store.delete_session(&key(id)).await?)
}

/// The session id from the request's cookies.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE_NAME)
}

/// The value of cookie `name`.
pub fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
}

/// Whether the request came over HTTPS through a proxy that says so.
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value of a portal session. Over HTTPS it is `SameSite=None; Secure;
/// Partitioned`, so the portal also works embedded in the platform's own pages (a
/// partitioned cookie is kept per embedding site); over plain HTTP `SameSite=Lax`.
pub fn set_portal_cookie(id: &str, headers: &HeaderMap, ttl: Duration) -> String {
    let site = if over_https(headers) {
        "SameSite=None; Secure; Partitioned"
    } else {
        "SameSite=Lax"
    };
    format!(
        "{PORTAL_COOKIE}={id}; HttpOnly; {site}; Path=/portal; Max-Age={}",
        ttl.as_secs()
    )
}

pub fn clear_portal_cookie() -> String {
    format!("{PORTAL_COOKIE}=; HttpOnly; SameSite=Lax; Path=/portal; Max-Age=0")
}

/// The `Set-Cookie` value for a new session (`Secure` when the request came over HTTPS
/// through a proxy that says so).
pub fn set_cookie(id: &str, headers: &HeaderMap) -> String {
    let secure = over_https(headers);
    format!(
        "{COOKIE_NAME}={id}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0")
}

/// A signed-in operator.
#[derive(Clone)]
pub struct UiUser {
    pub caller: Caller,
    pub csrf: String,
    pub session_id: String,
}

impl UiUser {
    /// May change state (replay, discard): admin tokens only.
    pub fn can_write(&self) -> bool {
        self.caller.can(Scope::Admin)
    }

    /// Refuses a form that does not carry this session's CSRF token.
    pub fn check_csrf(&self, csrf: &str) -> Result<(), UiError> {
        if bool::from(csrf.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(UiError::new(
                StatusCode::FORBIDDEN,
                "The form was stale or forged (CSRF check failed). Reload the page and try again.",
            ))
        }
    }

    /// Refuses a read-only session.
    pub fn require_write(&self) -> Result<(), UiError> {
        if self.can_write() {
            Ok(())
        } else {
            Err(UiError::new(
                StatusCode::FORBIDDEN,
                "This session is read-only: sign in with an admin token to change anything.",
            ))
        }
    }

    /// Refuses a state-changing action: wrong CSRF token or a read-only session.
    pub fn check_action(&self, csrf: &str) -> Result<(), UiError> {
        self.check_csrf(csrf)?;
        self.require_write()
    }
}

/// Checks that a POST comes from a page of this Herald: the `Origin` header, which browsers
/// send with every POST, must name this host. (SameSite=Strict already keeps the cookie off
/// cross-site requests; this and the CSRF token are the second and third lock.)
pub fn check_origin(headers: &HeaderMap) -> Result<(), UiError> {
    let refused = || {
        UiError::new(
            StatusCode::FORBIDDEN,
            "This request came from another site (Origin check failed).",
        )
    };
    let Some(origin) = headers.get(ORIGIN) else {
        // Non-browser clients send no Origin; they still need the session and CSRF token.
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| refused())?;
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .ok_or_else(refused)?;
    // The host the browser used: `Host`, or what a reverse proxy that rewrote it reports.
    let same = [HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .any(|host| origin_host.eq_ignore_ascii_case(host.trim()));
    if same { Ok(()) } else { Err(refused()) }
}

/// Resolves the session, and re-checks that its token is still valid (revocation ends the
/// session at once).
pub async fn user(state: &AppState, headers: &HeaderMap) -> Result<Option<UiUser>, UiError> {
    session_user(state, headers, COOKIE_NAME, false).await
}

/// The customer portal's session: always confined to one tenant.
pub async fn portal_user(state: &AppState, headers: &HeaderMap) -> Result<Option<UiUser>, UiError> {
    session_user(state, headers, PORTAL_COOKIE, true).await
}

async fn session_user(
    state: &AppState,
    headers: &HeaderMap,
    cookie: &str,
    portal: bool,
) -> Result<Option<UiUser>, UiError> {
    let Some(id) = cookie_named(headers, cookie) else {
        return Ok(None);
    };
    let Some(s) = get(state, &id).await? else {
        return Ok(None);
    };
    // A portal session never opens the dashboard, nor a dashboard session the portal.
    if s.caller.tenant.is_some() != portal {
        return Ok(None);
    }
    if !still_bound(state, &s).await? {
        end(state, &id).await?;
        return Ok(None);
    }
    Ok(Some(UiUser {
        caller: s.caller,
        csrf: s.csrf,
        session_id: id,
    }))
}

impl FromRequestParts<AppState> for UiUser {
    type Rejection = UiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match user(state, &parts.headers).await? {
            Some(u) => Ok(u),
            None if parts.method == axum::http::Method::GET => Err(UiError::sign_in()),
            None => Err(UiError::new(
                StatusCode::UNAUTHORIZED,
                "You are not signed in (or the session expired). Sign in and try again.",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn caller() -> Caller {
        Caller {
            token_id: None,
            name: "ops".into(),
            scopes: vec![Scope::Read],
            tenant: None,
        }
    }

    #[test]
    fn the_session_id_is_found_among_other_cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE_NAME}=abc")).unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        assert_eq!(cookie_value(&HeaderMap::new()), None);
        assert_ne!(key("abc"), "abc", "only the hash is stored");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_the_dashboard() {
        let c = set_cookie("abc", &HeaderMap::new());
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/ui"));
        assert!(!c.contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(set_cookie("abc", &h).ends_with("; Secure"));
    }

    #[test]
    fn origin_must_name_this_host() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_origin(&h).is_ok());
        h.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(check_origin(&h).is_ok());
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(check_origin(&h).is_err());
        h.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h).is_err());
        // Behind a proxy that rewrote Host.
        h.insert(
            ORIGIN,
            HeaderValue::from_static("https://herald.example.org"),
        );
        assert!(check_origin(&h).is_err());
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("herald.example.org"),
        );
        assert!(check_origin(&h).is_ok());
    }

    #[test]
    fn read_sessions_cannot_act_and_csrf_must_match() {
        let u = UiUser {
            caller: caller(),
            csrf: "right".into(),
            session_id: "x".into(),
        };
        assert!(u.check_action("right").is_err(), "read-only");
        let admin = UiUser {
            caller: Caller {
                scopes: vec![Scope::Admin],
                ..caller()
            },
            ..u
        };
        assert!(admin.check_action("wrong").is_err());
        assert!(admin.check_action("right").is_ok());
    }
}
