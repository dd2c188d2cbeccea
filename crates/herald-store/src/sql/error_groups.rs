//! Error reports folded into groups, and the alerting decisions taken with them.

use super::*;

pub(super) const GROUP_COLS: &str = "id, group_key, service, fingerprint, title, culprit, level, environment, status, report_count, first_seen, last_seen, window_start, window_count, prev_window_count, last_alert_at, folded, pending_reason, last_event, last_message_id, resolved_at, updated_at";

pub(super) fn group_from_row(r: &AnyRow) -> Result<ErrorGroupRecord> {
    let status: String = r.try_get("status")?;
    let pending: Option<String> = r.try_get("pending_reason")?;
    Ok(ErrorGroupRecord {
        id: r.try_get("id")?,
        key: r.try_get("group_key")?,
        service: r.try_get("service")?,
        fingerprint: r.try_get("fingerprint")?,
        title: r.try_get("title")?,
        culprit: r.try_get("culprit")?,
        level: r.try_get("level")?,
        environment: r.try_get("environment")?,
        state: GroupState {
            status: GroupStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("error group status {status:?}")))?,
            count: r.try_get("report_count")?,
            first_seen: r.try_get("first_seen")?,
            last_seen: r.try_get("last_seen")?,
            window_start: r.try_get("window_start")?,
            window_count: r.try_get("window_count")?,
            prev_window_count: r.try_get("prev_window_count")?,
            last_alert_at: r.try_get("last_alert_at")?,
            folded: r.try_get("folded")?,
            pending: pending.as_deref().and_then(AlertReason::parse),
        },
        last_event: r.try_get("last_event")?,
        last_message_id: r.try_get("last_message_id")?,
        resolved_at: r.try_get("resolved_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Folds one report into its group and accepts the alert it causes, in the caller's
/// transaction. The group is inserted if absent (`ON CONFLICT DO NOTHING`), then read —
/// on Postgres `FOR UPDATE`, so nodes sharing the database serialize on the row too.
pub(super) async fn record_error_in(
    w: &mut Writer,
    occ: &ErrorOccurrence,
    alert: AlertBuilder,
) -> Result<ErrorOutcome> {
    let (fresh, fresh_alert) = observe(None, occ.now, &occ.policy);
    let inserted = sqlx::query(
        "INSERT INTO error_groups (id, group_key, service, fingerprint, title, culprit, level, environment, status, report_count,
            first_seen, last_seen, window_start, window_count, prev_window_count, last_alert_at, folded, pending_reason, last_event, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, NULL, $18, $19)
         ON CONFLICT (group_key) DO NOTHING",
    )
    .bind(occ.new_id.as_str())
    .bind(&occ.key)
    .bind(&occ.service)
    .bind(&occ.fingerprint)
    .bind(&occ.title)
    .bind(&occ.culprit)
    .bind(&occ.level)
    .bind(&occ.environment)
    .bind(fresh.status.as_str())
    .bind(fresh.count)
    .bind(fresh.first_seen)
    .bind(fresh.last_seen)
    .bind(fresh.window_start)
    .bind(fresh.window_count)
    .bind(fresh.prev_window_count)
    .bind(fresh.last_alert_at)
    .bind(fresh.folded)
    .bind(&occ.event)
    .bind(occ.now)
    .execute(&mut w.conn)
    .await?
    .rows_affected();
    let new_group = inserted == 1;
    let lock = match w.dialect {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE",
    };
    let sql = format!("SELECT {GROUP_COLS} FROM error_groups WHERE group_key = $1{lock}");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(&occ.key)
        .fetch_one(&mut w.conn)
        .await?;
    let mut group = group_from_row(&row)?;
    let decision = if new_group {
        audit(
            w,
            &new_audit(
                occ.now,
                &occ.actor,
                "error_group.created",
                &group.id,
                json!({"service": occ.service, "title": occ.title}),
            ),
        )
        .await?;
        fresh_alert
    } else {
        let (state, decision) = observe(Some(&group.state), occ.now, &occ.policy);
        group.state = state;
        group.level = occ.level.clone();
        group.environment = occ.environment.clone();
        group.last_event = occ.event.clone();
        group.updated_at = occ.now;
        decision
    };
    let mut sent = None;
    if let Some(d) = decision {
        let message = alert(&group, &d).map_err(StoreError::Corrupt)?;
        let id = message.id.clone();
        accept_batch(w, &[&message]).await?;
        group.last_message_id = Some(id.to_string());
        sent = Some((d, id));
    }
    let s = &group.state;
    sqlx::query(
        "UPDATE error_groups SET level = $1, environment = $2, status = $3, report_count = $4, last_seen = $5, window_start = $6,
            window_count = $7, prev_window_count = $8, last_alert_at = $9, folded = $10, pending_reason = $11, last_event = $12,
            last_message_id = $13, updated_at = $14
         WHERE id = $15",
    )
    .bind(&group.level)
    .bind(&group.environment)
    .bind(s.status.as_str())
    .bind(s.count)
    .bind(s.last_seen)
    .bind(s.window_start)
    .bind(s.window_count)
    .bind(s.prev_window_count)
    .bind(s.last_alert_at)
    .bind(s.folded)
    .bind(s.pending.map(AlertReason::as_str))
    .bind(&group.last_event)
    .bind(&group.last_message_id)
    .bind(group.updated_at)
    .bind(&group.id)
    .execute(&mut w.conn)
    .await?;
    Ok(ErrorOutcome {
        group,
        new_group,
        alert: sent,
    })
}

pub(super) async fn record_error(
    store: &SqlStore,
    occ: ErrorOccurrence,
    alert: AlertBuilder,
) -> Result<ErrorOutcome> {
    store
        .write(move |w| Box::pin(async move { record_error_in(w, &occ, alert).await }))
        .await
}

pub(super) async fn get_error_group(
    store: &SqlStore,
    id: &str,
) -> Result<Option<ErrorGroupRecord>> {
    let sql = format!("SELECT {GROUP_COLS} FROM error_groups WHERE id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&store.reads)
        .await?;
    row.map(|r| group_from_row(&r)).transpose()
}

pub(super) async fn list_error_groups(
    store: &SqlStore,
    q: &ErrorGroupQuery,
) -> Result<Vec<ErrorGroupRecord>> {
    let mut f = Filtered::new(format!("SELECT {GROUP_COLS} FROM error_groups WHERE 1 = 1"));
    f.and(q.status.is_some(), "status = ?");
    f.and(q.service.is_some(), "service = ?");
    f.and(q.before.is_some(), "id < ?");
    let sql = f.newest_first("id");
    let mut query = sqlx::query(AssertSqlSafe(sql));
    if let Some(s) = q.status {
        query = query.bind(s.as_str());
    }
    if let Some(s) = &q.service {
        query = query.bind(s);
    }
    if let Some(b) = &q.before {
        query = query.bind(b);
    }
    let rows = query.bind(q.limit as i64).fetch_all(&store.reads).await?;
    rows.iter().map(group_from_row).collect()
}

pub(super) async fn set_error_group_status(
    store: &SqlStore,
    id: &str,
    status: GroupStatus,
    actor: &str,
    now: i64,
) -> Result<Option<ErrorGroupRecord>> {
    let (id, actor) = (id.to_string(), actor.to_string());
    store.write(move |w| {
        Box::pin(async move {
            // Resolving drops an alert held back by the window: it is moot now.
            let n = sqlx::query(
                "UPDATE error_groups SET status = $1, resolved_at = CASE WHEN $1 = 'resolved' THEN $2 ELSE NULL END,
                    pending_reason = CASE WHEN $1 = 'resolved' THEN NULL ELSE pending_reason END, updated_at = $2
                 WHERE id = $3",
            )
            .bind(status.as_str())
            .bind(now)
            .bind(&id)
            .execute(&mut w.conn)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(None);
            }
            let action = format!("error_group.{}", status.as_str());
            audit(w, &new_audit(now, &actor, &action, &id, json!({}))).await?;
            let sql = format!("SELECT {GROUP_COLS} FROM error_groups WHERE id = $1");
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(&id)
                .fetch_one(&mut w.conn)
                .await?;
            group_from_row(&row).map(Some)
        })
    })
    .await
}
