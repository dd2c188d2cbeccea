//! Error groups (`POST /api/v1/errors`, the Sentry and Django ingest): newest first,
//! filtered by status and service, cursor-paged; each with its counts, when it was first
//! and last seen, what the last alert was, and — for admin sessions — resolve / reopen.

use super::session::{self, UiUser};
use super::{PAGE_SIZE, UiError, UiResult, ago, render, when};
use crate::state::AppState;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use herald_core::clock::now_ms;
use herald_core::error_report::GroupStatus;
use herald_core::ids::ErrorGroupId;
use herald_store::ErrorGroupQuery;
use minijinja::context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Params {
    /// `unresolved` (default), `resolved` or `all`.
    #[serde(default)]
    status: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    cursor: String,
    /// What the last action did (shown once after the redirect).
    #[serde(default)]
    done: String,
}

fn status_filter(s: &str) -> Result<Option<GroupStatus>, UiError> {
    match s {
        "" | "unresolved" => Ok(Some(GroupStatus::Unresolved)),
        "resolved" => Ok(Some(GroupStatus::Resolved)),
        "all" => Ok(None),
        other => Err(UiError::new(
            StatusCode::BAD_REQUEST,
            format!("Unknown status {other:?}: unresolved, resolved or all."),
        )),
    }
}

pub async fn page(
    State(state): State<AppState>,
    user: UiUser,
    Query(p): Query<Params>,
) -> UiResult {
    let status = status_filter(&p.status)?;
    let groups = state
        .store
        .list_error_groups(&ErrorGroupQuery {
            status,
            service: (!p.service.is_empty()).then(|| p.service.clone()),
            before: (!p.cursor.is_empty()).then(|| p.cursor.clone()),
            limit: PAGE_SIZE,
        })
        .await?;
    let now = now_ms();
    let shown = if p.status.is_empty() {
        "unresolved"
    } else {
        p.status.as_str()
    };
    let next = (groups.len() as u32 == PAGE_SIZE)
        .then(|| groups.last().map(|g| g.id.clone()))
        .flatten()
        .map(|cursor| {
            serde_urlencoded::to_string([
                ("status", shown),
                ("service", p.service.as_str()),
                ("cursor", cursor.as_str()),
            ])
            .unwrap_or_default()
        });
    let notice = match p.done.as_str() {
        "resolved" => Some("Resolved: the next report of this error alerts as a regression."),
        "unresolved" => Some("Reopened."),
        _ => None,
    };
    Ok(render(
        &user,
        "/ui/errors",
        "errors.html",
        context! {
            groups => groups.iter().map(|g| context! {
                id => g.id.clone(),
                title => g.title.clone(),
                service => g.service.clone(),
                environment => g.environment.clone(),
                culprit => g.culprit.clone(),
                level => g.level.clone(),
                status => match g.state.status { GroupStatus::Resolved => "resolved", GroupStatus::Unresolved => "unresolved" },
                count => g.state.count,
                window_count => g.state.window_count,
                first_seen => when(g.state.first_seen),
                last_seen => ago(g.state.last_seen, now),
                last_alert => g.state.last_alert_at.map(|t| ago(t, now)),
                folded => g.state.folded,
                pending => g.state.pending.map(|r| r.as_str()),
                alert_message => g.last_message_id.clone(),
            }).collect::<Vec<_>>(),
            status => shown,
            service => p.service,
            next,
            paged => !p.cursor.is_empty(),
            notice,
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    /// Missing counts as wrong (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
    id: String,
    /// `resolve` or `unresolve`.
    action: String,
}

/// Resolves or reopens a group: origin, CSRF token and admin scope checked, audited.
pub async fn act(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> UiResult {
    session::check_origin(&headers)?;
    user.check_action(&f.csrf)?;
    let (status, done) = match f.action.as_str() {
        "resolve" => (GroupStatus::Resolved, "resolved"),
        "unresolve" => (GroupStatus::Unresolved, "unresolved"),
        _ => return Err(UiError::new(StatusCode::BAD_REQUEST, "Unknown action.")),
    };
    let changed = match ErrorGroupId::parse(&f.id) {
        Some(group) => {
            state
                .store
                .set_error_group_status(&group, status, &user.caller.actor(), now_ms())
                .await?
        }
        None => None,
    };
    if changed.is_none() {
        return Err(UiError::new(
            StatusCode::NOT_FOUND,
            format!("No error group {:?}.", f.id),
        ));
    }
    let back = if done == "resolved" {
        "unresolved"
    } else {
        "resolved"
    };
    Ok(Redirect::to(&format!("/ui/errors?status={back}&done={done}")).into_response())
}
