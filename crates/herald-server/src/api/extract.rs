//! Request extractors whose failures are problem+json: JSON bodies (syntax → 400, shape or
//! type → 422 naming the field, too large → 413) and query strings (→ 422).

use super::problem::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::Uri;
use serde::de::DeserializeOwned;

/// A JSON body.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_json_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Reads a request body. The content type is not enforced (curl's `-d` sends
/// `application/x-www-form-urlencoded`); the body must simply parse as JSON.
pub async fn read_json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = body_limit(&req);
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(limit)
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    })
}

/// The body limit in force, for the 413 message.
fn body_limit(req: &Request) -> usize {
    req.extensions()
        .get::<BodyLimit>()
        .map(|b| b.0)
        .unwrap_or(1 << 20)
}

/// Set by the router next to `DefaultBodyLimit` so errors can name the limit.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Parses JSON: syntax errors are 400, wrong shapes 422 with the field's path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => {
                ApiError::BadRequest(format!("malformed JSON: {inner}"))
            }
            serde_json::error::Category::Data => {
                let msg = strip_position(&inner.to_string());
                // A tagged enum (a destination's `kind`) reports its tag at the top level.
                let field = match path.as_str() {
                    "." if msg.contains("variant") || msg.contains("`kind`") => "kind".to_string(),
                    "." => "body".to_string(),
                    _ => path,
                };
                ApiError::field(&field, msg)
            }
        }
    })
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Parses the query string into `T`; a bad value is a 422.
pub fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::field("query", e.body_text()))
}
