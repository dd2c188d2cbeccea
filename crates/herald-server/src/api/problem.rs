//! Every API error, mapped to RFC 9457 `application/problem+json` in one place.

use crate::attachments::AttachmentError;
use crate::auth::AuthError;
use crate::destinations::DestinationError;
use crate::ingest::IngestError;
use crate::tenants::TenantError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::error::{FieldError, ValidationErrors};
use herald_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Validation(ValidationErrors),
    #[error("{0}")]
    Unprocessable(String),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// 424: nothing the request depends on could take it (Apprise's "not sent").
    #[error("{0}")]
    FailedDependency(String),
    #[error("storage is unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(ValidationErrors::single(field, message))
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Validation(_) | ApiError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request body too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::FailedDependency(_) => (
                StatusCode::FAILED_DEPENDENCY,
                "failed-dependency",
                "Failed dependency",
            ),
            ApiError::Store(StoreError::Full(_)) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
            ),
            ApiError::Store(StoreError::Damaged(_) | StoreError::Corrupt(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Storage is damaged",
            ),
            ApiError::Store(e) if e.fault().is_some() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Store(_) | ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        let (detail, errors) = match self {
            ApiError::Validation(v) => (v.summary(), Some(v.0.clone())),
            // Never leak database internals; the log has them.
            ApiError::Store(StoreError::CommitUnknown(_)) => {
                (STORE_OUTCOME_UNKNOWN.to_string(), None)
            }
            ApiError::Store(StoreError::Full(_)) => (STORE_FULL.to_string(), None),
            ApiError::Store(StoreError::Damaged(_) | StoreError::Corrupt(_)) => {
                (STORE_DAMAGED.to_string(), None)
            }
            ApiError::Store(e) if e.fault().is_some() => (STORE_UNAVAILABLE.to_string(), None),
            ApiError::Store(_) | ApiError::Internal(_) => (
                "the server could not complete the request; see its log".to_string(),
                None,
            ),
            other => (other.to_string(), None),
        };
        Problem {
            kind: format!("urn:herald:problem:{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }
}

// The domain's errors, each mapped to its status here and nowhere else.

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Store(s) => ApiError::Store(s),
            AuthError::MissingScope(_) => ApiError::Forbidden(e.to_string()),
            AuthError::OutsideTenant => ApiError::NotFound(e.to_string()),
            AuthError::NoToken | AuthError::Invalid => ApiError::Unauthorized(e.to_string()),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(v) => ApiError::Validation(v),
            IngestError::KeyConflict | IngestError::FilterOverBudget { .. } => {
                ApiError::Unprocessable(e.to_string())
            }
            IngestError::Store(s) => ApiError::Store(s),
            IngestError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::Invalid(v) => ApiError::Validation(v),
            TenantError::NotFound(_) => ApiError::NotFound(e.to_string()),
            TenantError::UidTaken(_) => ApiError::Conflict(e.to_string()),
            TenantError::Store(s) => ApiError::Store(s),
        }
    }
}

impl From<AttachmentError> for ApiError {
    fn from(e: AttachmentError) -> Self {
        match e {
            AttachmentError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            AttachmentError::Unreadable(m) => ApiError::Internal(m),
            AttachmentError::Store(s) => ApiError::Store(s),
        }
    }
}

impl From<DestinationError> for ApiError {
    fn from(e: DestinationError) -> Self {
        match e {
            DestinationError::Invalid(v) => ApiError::Validation(v),
            DestinationError::Store(s) => ApiError::Store(s),
            DestinationError::Internal(m) => ApiError::Internal(m),
        }
    }
}

const STORE_UNAVAILABLE: &str = "storage is unavailable for the moment; nothing was stored. Retry after the time in Retry-After";
const STORE_OUTCOME_UNKNOWN: &str = "the connection to the database broke while committing, so the request may or may not have been stored. Retry it with the same Idempotency-Key to get the original answer once storage is back (without one, a retry may store it twice)";
const STORE_FULL: &str = "the disk holding Herald's database is full; nothing was stored. Retry once an operator has freed space";
const STORE_DAMAGED: &str =
    "the database is damaged; nothing was stored. An operator should run `herald doctor`";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            // A storage fault is logged once by the store (when it goes down and up), not
            // once per request.
            ApiError::Store(e) if e.fault().is_some() => {
                tracing::debug!(error = %self, "request failed: storage fault")
            }
            ApiError::Store(_) | ApiError::Internal(_) => {
                tracing::error!(error = %self, "request failed")
            }
            _ => {}
        }
        problem_response(&self.problem())
    }
}

pub fn problem_response(p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(p).unwrap_or_default();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was never read: the connection cannot carry another request,
        // and saying so keeps clients from racing a reused connection into an error.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // Storage trouble heals by itself (503) or needs an operator (507): say when to retry.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if status == StatusCode::INSUFFICIENT_STORAGE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    }
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: StoreError) -> (u16, Option<String>, Problem) {
        let api = ApiError::Store(e);
        let p = api.problem();
        let resp = problem_response(&p);
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_string());
        (resp.status().as_u16(), retry, p)
    }

    #[test]
    fn storage_faults_are_503_or_507_with_retry_after_and_only_bugs_are_500() {
        let (status, retry, p) = answer(StoreError::Unavailable("refused".into()));
        assert_eq!((status, retry.as_deref()), (503, Some("1")));
        assert_eq!(p.kind, "urn:herald:problem:unavailable");
        assert!(!p.detail.contains("refused"), "no database internals");

        let (status, retry, p) = answer(StoreError::Full("0 bytes free".into()));
        assert_eq!((status, retry.as_deref()), (507, Some("30")));
        assert_eq!(p.kind, "urn:herald:problem:insufficient-storage");

        let (status, _, p) = answer(StoreError::CommitUnknown("eof".into()));
        assert_eq!(status, 503);
        assert!(p.detail.contains("Idempotency-Key"), "{}", p.detail);

        for e in [
            StoreError::Io("fsync".into()),
            StoreError::Damaged("malformed".into()),
            StoreError::Closed,
        ] {
            assert_eq!(answer(e).0, 503);
        }
        let (status, retry, p) = answer(StoreError::Migration("v9: syntax error".into()));
        assert_eq!((status, retry), (500, None));
        assert_eq!(p.kind, "urn:herald:problem:internal");
    }
}
