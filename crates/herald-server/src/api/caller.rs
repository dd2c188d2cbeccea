//! The caller of an API request, from its `Authorization: Bearer` header: HTTP glue around
//! [`Authenticator`](crate::auth::Authenticator), which knows nothing of HTTP requests.

use crate::api::problem::ApiError;
use crate::auth::Caller;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("missing `Authorization: Bearer <token>`".into())
        })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into())
            })?;
        state
            .auth
            .authenticate(state.store.as_ref(), token.trim())
            .await
            .map_err(ApiError::from)
    }
}
