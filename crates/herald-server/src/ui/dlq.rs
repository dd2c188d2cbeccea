//! The dead-letter queue: per-queue counts, the dead deliveries (cursor-paged), and replay or
//! discard of one item or a whole queue, each behind a confirmation page.

use super::session::{self, UiUser};
use super::{PAGE_SIZE, UiError, UiResult, render, when};
use crate::state::AppState;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use herald_core::clock::now_ms;
use herald_store::{DlqChange, DlqQuery, ReplayFilter};
use minijinja::context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize)]
pub struct DlqParams {
    #[serde(default)]
    queue: String,
    #[serde(default)]
    cursor: String,
    /// What the last action did (shown once after the redirect).
    #[serde(default)]
    done: String,
    #[serde(default)]
    n: u64,
}

pub async fn page(
    State(state): State<AppState>,
    user: UiUser,
    Query(p): Query<DlqParams>,
) -> UiResult {
    let mut queues = Vec::new();
    for e in state.destinations.of_tenant(None) {
        let dead = state.store.queue_counts(&e.name).await?.dead;
        queues.push(context! { name => e.name.clone(), dead, selected => e.name == p.queue });
    }
    let queue = (!p.queue.is_empty()).then(|| p.queue.clone());
    let items = state
        .store
        .list_dead(&DlqQuery {
            queue: queue.clone(),
            before: (!p.cursor.is_empty()).then(|| p.cursor.clone()),
            limit: PAGE_SIZE,
        })
        .await?;
    let next = (items.len() as u32 == PAGE_SIZE)
        .then(|| items.last().map(|i| i.id.clone()))
        .flatten()
        .map(|cursor| {
            serde_urlencoded::to_string([("queue", p.queue.as_str()), ("cursor", cursor.as_str())])
                .unwrap_or_default()
        });
    let notice = match p.done.as_str() {
        "replayed" => Some(format!(
            "Replayed {} {}: back to pending with a fresh retry budget.",
            p.n,
            plural(p.n)
        )),
        "discarded" => Some(format!("Discarded {} {}.", p.n, plural(p.n))),
        _ => None,
    };
    Ok(render(
        &user,
        "/ui/dlq",
        "dlq.html",
        context! {
            queues,
            queue,
            items => items.iter().map(|i| context! {
                id => i.id.clone(),
                queue => i.queue.clone(),
                message_id => i.message_id.clone(),
                event_type => i.event_type.clone(),
                attempts => i.attempt_count,
                last_status_code => i.last_status_code,
                last_error => i.last_error.clone(),
                dead_at => when(i.dead_at),
            }).collect::<Vec<_>>(),
            next,
            paged => !p.cursor.is_empty(),
            notice,
        },
    ))
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "delivery" } else { "deliveries" }
}

/// One item (`id` set) or a whole queue.
#[derive(Debug, Deserialize, Serialize)]
pub struct Target {
    queue: String,
    #[serde(default)]
    id: String,
}

#[derive(Debug, Deserialize)]
pub struct ConfirmParams {
    action: String,
    #[serde(flatten)]
    target: Target,
}

/// Asks before acting: the page holds the POST form (with the CSRF token).
pub async fn confirm(
    State(state): State<AppState>,
    user: UiUser,
    Query(p): Query<ConfirmParams>,
) -> UiResult {
    if !matches!(p.action.as_str(), "replay" | "discard") {
        return Err(UiError::new(StatusCode::BAD_REQUEST, "Unknown action."));
    }
    user.require_write()?;
    if state.destinations.get(&p.target.queue).is_none() {
        return Err(UiError::new(
            StatusCode::NOT_FOUND,
            format!("No queue {:?}.", p.target.queue),
        ));
    }
    let count = if p.target.id.is_empty() {
        state.store.queue_counts(&p.target.queue).await?.dead
    } else {
        1
    };
    Ok(render(
        &user,
        "/ui/dlq",
        "confirm.html",
        context! {
            action => p.action,
            queue => p.target.queue,
            id => (!p.target.id.is_empty()).then_some(p.target.id),
            count,
            what => plural(count),
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    /// Missing counts as wrong (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    target: Target,
}

fn done(action: &str, queue: &str, n: u64) -> axum::response::Response {
    let q = serde_urlencoded::to_string([("queue", queue), ("done", action)]).unwrap_or_default();
    Redirect::to(&format!("/ui/dlq?{q}&n={n}")).into_response()
}

fn one(change: DlqChange, t: &Target) -> Result<u64, UiError> {
    match change {
        DlqChange::Done => Ok(1),
        DlqChange::NotFound => Err(UiError::new(
            StatusCode::NOT_FOUND,
            format!("No delivery {:?} in queue {:?}.", t.id, t.queue),
        )),
        DlqChange::NotDead => Err(UiError::new(
            StatusCode::CONFLICT,
            format!(
                "Delivery {:?} is no longer dead-lettered (replayed or discarded already).",
                t.id
            ),
        )),
    }
}

/// Checks a state-changing form: origin, CSRF token, admin scope, and a known queue.
fn check(
    state: &AppState,
    user: &UiUser,
    headers: &HeaderMap,
    f: &ActionForm,
) -> Result<(), UiError> {
    session::check_origin(headers)?;
    user.check_action(&f.csrf)?;
    if state.destinations.get(&f.target.queue).is_none() {
        return Err(UiError::new(
            StatusCode::NOT_FOUND,
            format!("No queue {:?}.", f.target.queue),
        ));
    }
    Ok(())
}

pub async fn replay(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> UiResult {
    check(&state, &user, &headers, &f)?;
    let (actor, now, t) = (user.caller.actor(), now_ms(), &f.target);
    let n = if t.id.is_empty() {
        state
            .store
            .replay_all_dead(&t.queue, &ReplayFilter::default(), &actor, now)
            .await?
    } else {
        one(
            state
                .store
                .replay_dead(&t.queue, &t.id, &actor, now)
                .await?,
            t,
        )?
    };
    state.dispatch.dispatcher.wake();
    Ok(done("replayed", &t.queue, n))
}

pub async fn discard(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> UiResult {
    check(&state, &user, &headers, &f)?;
    let (actor, now, t) = (user.caller.actor(), now_ms(), &f.target);
    let n = if t.id.is_empty() {
        state.store.discard_all_dead(&t.queue, &actor, now).await?
    } else {
        one(
            state
                .store
                .discard_dead(&t.queue, &t.id, &actor, now)
                .await?,
            t,
        )?
    };
    Ok(done("discarded", &t.queue, n))
}
