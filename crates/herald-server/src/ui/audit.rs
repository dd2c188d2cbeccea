//! The audit log: the most recent entries, newest first, paged by `seq`, and chain
//! verification on request (it walks the whole chain: seconds at hundreds of thousands of
//! entries, so not on every page view).

use super::session::UiUser;
use super::{PAGE_SIZE, UiResult, render};
use crate::audit::verify_chain;
use crate::state::AppState;
use axum::extract::{Query, State};
use minijinja::context;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    /// Entries older than this `seq`.
    before: Option<i64>,
}

pub async fn page(
    State(state): State<AppState>,
    user: UiUser,
    Query(p): Query<AuditParams>,
) -> UiResult {
    let entries = state.store.list_recent_audit(p.before, PAGE_SIZE).await?;
    let head = match p.before {
        None => entries.first().map(|e| e.seq),
        Some(_) => state
            .store
            .list_recent_audit(None, 1)
            .await?
            .first()
            .map(|e| e.seq),
    };
    let next = (entries.len() as u32 == PAGE_SIZE)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(render(
        &user,
        "/ui/audit",
        "audit.html",
        context! {
            entries => entries.iter().map(|e| context! {
                seq => e.seq,
                at => herald_core::clock::parse_rfc3339(&e.at).map(super::when).unwrap_or_else(|| e.at.clone()),
                actor => e.actor.clone(),
                action => e.action.clone(),
                resource => e.resource.clone(),
                detail => e.detail.to_string(),
                hash => e.hash.get(..12).unwrap_or(&e.hash).to_string(),
            }).collect::<Vec<_>>(),
            next,
            head,
            paged => p.before.is_some(),
        },
    ))
}

/// The verification panel (an htmx fragment).
pub async fn verify(State(state): State<AppState>, user: UiUser) -> UiResult {
    let v = verify_chain(&state).await?;
    Ok(render(&user, "/ui/audit", "verify.html", context! { v }))
}
