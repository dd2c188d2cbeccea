//! A stored attachment served as a download, as it was sent: the API
//! (`GET /api/v1/messages/{id}/attachments/{n}`) and the dashboard both answer with this.

use crate::state::AppState;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::attachment::content_disposition;
use herald_core::ids::MessageId;
use herald_core::message::MessageBody;
use herald_store::StoreError;

/// Why an attachment cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("message {message:?} has no attachment {n:?}")]
    NotFound { message: String, n: String },
    /// What the store holds cannot be read back (a bug or a damaged row).
    #[error("{0}")]
    Unreadable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Attachment `n` (its position, from 0) of message `id`: the declared `Content-Type`,
/// `Content-Disposition: attachment` with the filename (RFC 6266), and headers that keep a
/// browser from running it in Herald's origin.
pub async fn download(state: &AppState, id: &str, n: &str) -> Result<Response, AttachmentError> {
    let not_found = || AttachmentError::NotFound {
        message: id.to_string(),
        n: n.to_string(),
    };
    let index: usize = n.parse().map_err(|_| not_found())?;
    let Some(message) = MessageId::parse(id) else {
        return Err(not_found());
    };
    let m = state
        .store
        .get_message(&message)
        .await?
        .ok_or_else(not_found)?;
    let body: MessageBody = serde_json::from_str(&m.body)
        .map_err(|e| AttachmentError::Unreadable(format!("stored message unreadable: {e}")))?;
    let att = body.attachments.get(index).ok_or_else(not_found)?;
    let bytes = att
        .bytes()
        .map_err(|e| AttachmentError::Unreadable(format!("stored attachment unreadable: {e}")))?;
    let content_type = HeaderValue::from_str(&att.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let disposition = HeaderValue::from_str(&content_disposition(&att.filename))
        .map_err(|e| AttachmentError::Unreadable(format!("content-disposition: {e}")))?;
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_DISPOSITION, disposition);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Whatever the declared type, a browser must not run it in Herald's origin.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(resp)
}
