//! Destinations: the stored configuration and its state (breaker, pause, probe).

use super::*;

pub(super) async fn put_destination(
    store: &SqlStore,
    row: DestinationRow,
    actor: &str,
) -> Result<bool> {
    let actor = actor.to_string();
    store.write(move |w| {
        Box::pin(async move {
            let existed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM destinations WHERE name = $1").bind(&row.name).fetch_optional(&mut w.conn).await?;
            sqlx::query(
                "INSERT INTO destinations (name, kind, spec, enabled, disabled_reason, paused_until, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, spec = excluded.spec, enabled = excluded.enabled,
                     disabled_reason = excluded.disabled_reason, updated_at = excluded.updated_at",
            )
            .bind(&row.name)
            .bind(&row.kind)
            .bind(&row.sealed_spec)
            .bind(row.enabled as i64)
            .bind(&row.disabled_reason)
            .bind(row.paused_until)
            .bind(row.created_at)
            .bind(row.updated_at)
            .execute(&mut w.conn)
            .await?;
            w.config_changed = true;
            let action = if existed.is_some() { "destination.updated" } else { "destination.created" };
            audit(w, &new_audit(row.updated_at, &actor, action, &row.name, json!({"kind": row.kind, "enabled": row.enabled}))).await?;
            Ok(existed.is_none())
        })
    })
    .await
}

pub(super) async fn get_destination(
    store: &SqlStore,
    name: &str,
) -> Result<Option<DestinationRow>> {
    let row = sqlx::query("SELECT * FROM destinations WHERE name = $1")
        .bind(name)
        .fetch_optional(&store.reads)
        .await?;
    row.map(|r| destination_from_row(&r)).transpose()
}

pub(super) async fn list_destinations(store: &SqlStore) -> Result<Vec<DestinationRow>> {
    let rows = sqlx::query("SELECT * FROM destinations ORDER BY name")
        .fetch_all(&store.reads)
        .await?;
    rows.iter().map(destination_from_row).collect()
}

pub(super) async fn delete_destination(
    store: &SqlStore,
    name: &str,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let (name, actor) = (name.to_string(), actor.to_string());
    store.write(move |w| {
        Box::pin(async move {
            let n = sqlx::query("DELETE FROM destinations WHERE name = $1").bind(&name).execute(&mut w.conn).await?.rows_affected();
            if n == 0 {
                return Ok(false);
            }
            let discarded = sqlx::query(
                "UPDATE deliveries SET status = 'discarded', lease_until = NULL, lease_token = NULL, updated_at = $1
                 WHERE destination = $2 AND status IN ('pending', 'in_flight', 'dead')",
            )
            .bind(now)
            .bind(&name)
            .execute(&mut w.conn)
            .await?
            .rows_affected();
            w.config_changed = true;
            audit(w, &new_audit(now, &actor, "destination.deleted", &name, json!({"discarded_deliveries": discarded}))).await?;
            Ok(true)
        })
    })
    .await
}

pub(super) async fn enable_destination(
    store: &SqlStore,
    name: &str,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let (name, actor) = (name.to_string(), actor.to_string());
    store.write(move |w| {
        Box::pin(async move {
            let n = sqlx::query(
                "UPDATE destinations SET enabled = 1, disabled_reason = NULL, paused_until = NULL, breaker = NULL, failing_since = NULL, updated_at = $1
                 WHERE name = $2",
            )
            .bind(now)
            .bind(&name)
            .execute(&mut w.conn)
            .await?
            .rows_affected();
            if n > 0 {
                w.new_work = true;
                w.config_changed = true;
                audit(w, &new_audit(now, &actor, "destination.enabled", &name, json!({}))).await?;
            }
            Ok(n > 0)
        })
    })
    .await
}

pub(super) async fn hold_destination(
    store: &SqlStore,
    name: &str,
    hold: DestinationHold,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let (name, actor) = (name.to_string(), actor.to_string());
    store.write(move |w| {
        Box::pin(async move {
            let (sql, action, detail) = match &hold {
                DestinationHold::Pause { until } => (
                    "UPDATE destinations SET paused_until = $1, updated_at = $2 WHERE name = $3",
                    "destination.paused",
                    json!({"until": rfc3339(*until)}),
                ),
                DestinationHold::Disable { reason } => (
                    "UPDATE destinations SET enabled = 0, disabled_reason = $1, updated_at = $2 WHERE name = $3",
                    "destination.disabled",
                    json!({"reason": reason}),
                ),
            };
            let q = sqlx::query(sql);
            let q = match &hold {
                DestinationHold::Pause { until } => q.bind(*until),
                DestinationHold::Disable { reason } => q.bind(reason.clone()),
            };
            let n = q
                .bind(now)
                .bind(&name)
                .execute(&mut w.conn)
                .await?
                .rows_affected();
            if n > 0 {
                w.config_changed = true;
                audit(w, &new_audit(now, &actor, action, &name, detail)).await?;
            }
            Ok(n > 0)
        })
    })
    .await
}

pub(super) async fn start_probe(
    store: &SqlStore,
    name: &str,
    deadline: i64,
    now: i64,
) -> Result<Option<String>> {
    let name = name.to_string();
    store
        .write(move |w| {
            Box::pin(async move {
                let stored = locked_breaker(w, &name).await?;
                let mut b = Breaker::from_stored(stored.as_deref());
                if b.permit(now) != Permit::Probe {
                    return Ok(None);
                }
                let transition = b.start_probe(deadline);
                let json = serde_json::to_string(&b).unwrap_or_default();
                sqlx::query("UPDATE destinations SET breaker = $1 WHERE name = $2")
                    .bind(&json)
                    .bind(&name)
                    .execute(&mut w.conn)
                    .await?;
                if let Some(t) = transition {
                    let detail: Value = serde_json::to_value(&b).unwrap_or(Value::Null);
                    audit(w, &new_audit(now, "dispatcher", t.action(), &name, detail)).await?;
                }
                Ok(Some(json))
            })
        })
        .await
}
