//! Sign-in with an API token (read or admin scope), and sign-out.

use super::session::{self, UiUser};
use super::{UiError, UiResult, render_public};
use crate::auth::{AuthError, Scope};
use crate::state::AppState;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

pub async fn form(State(state): State<AppState>, headers: HeaderMap) -> UiResult {
    if session::user(&state, &headers).await?.is_some() {
        return Ok(Redirect::to("/ui").into_response());
    }
    Ok(render_public(
        StatusCode::OK,
        "signin.html",
        context! { error => None::<String> },
    ))
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

fn refuse(status: StatusCode, error: &str) -> Response {
    render_public(status, "signin.html", context! { error })
}

pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(input): Form<SignIn>,
) -> UiResult {
    session::check_origin(&headers)?;
    let token = input.token.trim();
    if token.is_empty() {
        return Ok(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Paste an API token.",
        ));
    }
    let caller = match state.auth.authenticate(state.store.as_ref(), token).await {
        Ok(c) => c,
        Err(AuthError::NoToken | AuthError::Invalid) => {
            return Ok(refuse(
                StatusCode::UNAUTHORIZED,
                "That token is not valid (wrong, or revoked).",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if caller.tenant.is_some() {
        return Ok(refuse(
            StatusCode::FORBIDDEN,
            "That token belongs to one tenant: it opens that tenant's portal, not the operator's dashboard.",
        ));
    }
    if !caller.can(Scope::Read) {
        return Ok(refuse(
            StatusCode::FORBIDDEN,
            "That token can only send messages; the dashboard needs a read or admin token.",
        ));
    }
    tracing::info!(actor = %caller.actor(), "dashboard sign-in");
    let id = session::create(&state, caller).await?;
    let mut resp = Redirect::to("/ui").into_response();
    let cookie = HeaderValue::from_str(&session::set_cookie(&id, &headers))
        .map_err(|_| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cookie"))?;
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(resp)
}

#[derive(Deserialize)]
pub struct SignOut {
    /// Missing counts as wrong (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
}

pub async fn signout(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Form(input): Form<SignOut>,
) -> UiResult {
    session::check_origin(&headers)?;
    // Signing out needs the CSRF token too (else any page could sign you out), but not the
    // admin scope.
    user.check_csrf(&input.csrf)?;
    session::end(&state, &user.session_id).await?;
    let mut resp = Redirect::to("/ui/signin").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::clear_cookie())
            .map_err(|_| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cookie"))?,
    );
    Ok(resp)
}
