//! The audit log: read it in order, verify the hash chain.

use super::extract::parse_query;
use super::problem::{ApiResult, Problem};
use crate::auth::{Caller, Scope};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use herald_core::audit::{AuditEntry, Verification};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Entries with `seq` greater than this (default 0).
    pub after: Option<i64>,
    /// 1–1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// Audit entries, oldest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Json<AuditPage>> {
    caller.require(Scope::Read)?;
    let p: AuditParams = parse_query(&uri)?;
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let items = state
        .store
        .list_audit(p.after.unwrap_or(0).max(0), limit)
        .await?;
    let next_after = if items.len() as u32 == limit {
        items.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_after }))
}

/// Verifies the whole chain from the first entry, checkpoint signatures included.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", responses((status = 200, body = Verification)), security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Verification>> {
    caller.require(Scope::Read)?;
    Ok(Json(crate::audit::verify_chain(&state).await?))
}

#[derive(Serialize, ToSchema)]
pub struct PublicKey {
    pub algorithm: &'static str,
    /// Base64 of the ed25519 public key that signs checkpoints.
    pub public_key: String,
}

/// The key that signs audit checkpoints, for offline verification of an export
/// (`herald audit verify --file chain.jsonl --public-key <key>`).
#[utoipa::path(get, path = "/api/v1/audit/public-key", tag = "audit", responses((status = 200, body = PublicKey)), security(("bearer" = [])))]
pub async fn public_key(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<PublicKey>> {
    caller.require(Scope::Read)?;
    Ok(Json(PublicKey {
        algorithm: "ed25519",
        public_key: state.signer.public_key(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct CheckpointResult {
    /// The checkpoint's `seq`, or null when the head already was a checkpoint.
    pub seq: Option<i64>,
}

/// Append a signed checkpoint now (Herald also does so every minute when there is news).
#[utoipa::path(post, path = "/api/v1/audit/checkpoint", tag = "audit", responses((status = 200, body = CheckpointResult)), security(("bearer" = [])))]
pub async fn checkpoint(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<CheckpointResult>> {
    caller.require(Scope::Admin)?;
    Ok(Json(CheckpointResult {
        seq: crate::audit::checkpoint(&state).await,
    }))
}
