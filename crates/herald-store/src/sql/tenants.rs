//! Tenants and the event-type catalog.

use super::*;

/// The key range of a tenant's destinations (`<id>.` up to, not including, `<id>/`).
pub(super) fn destination_range(tenant: &str) -> (String, String) {
    (format!("{tenant}."), format!("{tenant}/"))
}

pub(super) async fn put_tenant(
    store: &SqlStore,
    t: TenantRecord,
    actor: &str,
) -> Result<TenantPut> {
    let actor = actor.to_string();
    store
        .write(move |w| {
            Box::pin(async move {
                if let Some(uid) = &t.uid {
                    let taken: Option<String> =
                        sqlx::query_scalar("SELECT id FROM tenants WHERE uid = $1 AND id <> $2")
                            .bind(uid)
                            .bind(&t.id)
                            .fetch_optional(&mut w.conn)
                            .await?;
                    if taken.is_some() {
                        return Ok(TenantPut::UidTaken);
                    }
                }
                let existed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
                    .bind(&t.id)
                    .fetch_optional(&mut w.conn)
                    .await?;
                let metadata = serde_json::to_string(&t.metadata).unwrap_or_else(|_| "{}".into());
                sqlx::query(
                    "INSERT INTO tenants (id, uid, name, metadata, rate_limit, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (id) DO UPDATE SET uid = excluded.uid, name = excluded.name,
                         metadata = excluded.metadata, rate_limit = excluded.rate_limit, updated_at = excluded.updated_at",
                )
                .bind(&t.id)
                .bind(&t.uid)
                .bind(&t.name)
                .bind(&metadata)
                .bind(t.rate_limit.map(i64::from))
                .bind(t.created_at)
                .bind(t.updated_at)
                .execute(&mut w.conn)
                .await?;
                w.config_changed = true;
                let action = if existed.is_some() { "tenant.updated" } else { "tenant.created" };
                let detail = json!({"tenant": t.id, "uid": t.uid, "name": t.name, "rate_limit": t.rate_limit});
                audit(w, &new_audit(t.updated_at, &actor, action, &t.id, detail)).await?;
                Ok(if existed.is_some() { TenantPut::Updated } else { TenantPut::Created })
            })
        })
        .await
}

fn tenant_from_row(r: &AnyRow) -> Result<TenantRecord> {
    let metadata: String = r.try_get("metadata")?;
    let rate_limit: Option<i64> = r.try_get("rate_limit")?;
    Ok(TenantRecord {
        id: r.try_get("id")?,
        uid: r.try_get("uid")?,
        name: r.try_get("name")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("tenant metadata: {e}")))?,
        rate_limit: rate_limit.map(|n| n.clamp(0, u32::MAX as i64) as u32),
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub(super) async fn get_tenant(store: &SqlStore, id_or_uid: &str) -> Result<Option<TenantRecord>> {
    let row = sqlx::query("SELECT * FROM tenants WHERE id = $1 OR uid = $1 ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1")
        .bind(id_or_uid)
        .fetch_optional(&store.reads)
        .await?;
    row.map(|r| tenant_from_row(&r)).transpose()
}

pub(super) async fn list_tenants(
    store: &SqlStore,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<TenantRecord>> {
    let rows = sqlx::query("SELECT * FROM tenants WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&store.reads)
        .await?;
    rows.iter().map(tenant_from_row).collect()
}

pub(super) async fn delete_tenant(
    store: &SqlStore,
    id: &str,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let (id, actor) = (id.to_string(), actor.to_string());
    store
        .write(move |w| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM tenants WHERE id = $1")
                    .bind(&id)
                    .execute(&mut w.conn)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Ok(false);
                }
                let (from, to) = destination_range(&id);
                let discarded = sqlx::query(
                    "UPDATE deliveries SET status = 'discarded', lease_until = NULL, lease_token = NULL, updated_at = $1
                     WHERE destination > $2 AND destination < $3 AND status IN ('pending', 'in_flight', 'dead')",
                )
                .bind(now)
                .bind(&from)
                .bind(&to)
                .execute(&mut w.conn)
                .await?
                .rows_affected();
                let destinations = sqlx::query("DELETE FROM destinations WHERE name > $1 AND name < $2")
                    .bind(&from)
                    .bind(&to)
                    .execute(&mut w.conn)
                    .await?
                    .rows_affected();
                w.config_changed = true;
                let detail = json!({"tenant": id, "destinations": destinations, "discarded_deliveries": discarded});
                audit(w, &new_audit(now, &actor, "tenant.deleted", &id, detail)).await?;
                Ok(true)
            })
        })
        .await
}

pub(super) async fn put_event_type(
    store: &SqlStore,
    e: EventTypeRecord,
    actor: &str,
) -> Result<bool> {
    let actor = actor.to_string();
    store
        .write(move |w| {
            Box::pin(async move {
                let existed: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM event_types WHERE name = $1")
                        .bind(&e.name)
                        .fetch_optional(&mut w.conn)
                        .await?;
                sqlx::query(
                    "INSERT INTO event_types (name, description, schemas, archived, deprecated, feature_flag, group_name, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (name) DO UPDATE SET description = excluded.description, schemas = excluded.schemas,
                         archived = excluded.archived, deprecated = excluded.deprecated, feature_flag = excluded.feature_flag,
                         group_name = excluded.group_name, updated_at = excluded.updated_at",
                )
                .bind(&e.name)
                .bind(&e.description)
                .bind(&e.schemas)
                .bind(e.archived as i64)
                .bind(e.deprecated as i64)
                .bind(&e.feature_flag)
                .bind(&e.group_name)
                .bind(e.created_at)
                .bind(e.updated_at)
                .execute(&mut w.conn)
                .await?;
                let action = if existed.is_some() { "event_type.updated" } else { "event_type.created" };
                let detail = json!({"archived": e.archived, "deprecated": e.deprecated});
                audit(w, &new_audit(e.updated_at, &actor, action, &e.name, detail)).await?;
                Ok(existed.is_none())
            })
        })
        .await
}

fn event_type_from_row(r: &AnyRow) -> Result<EventTypeRecord> {
    Ok(EventTypeRecord {
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        schemas: r.try_get("schemas")?,
        archived: r.try_get::<i64, _>("archived")? != 0,
        deprecated: r.try_get::<i64, _>("deprecated")? != 0,
        feature_flag: r.try_get("feature_flag")?,
        group_name: r.try_get("group_name")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub(super) async fn get_event_type(
    store: &SqlStore,
    name: &str,
) -> Result<Option<EventTypeRecord>> {
    let row = sqlx::query("SELECT * FROM event_types WHERE name = $1")
        .bind(name)
        .fetch_optional(&store.reads)
        .await?;
    row.map(|r| event_type_from_row(&r)).transpose()
}

pub(super) async fn list_event_types(
    store: &SqlStore,
    after: Option<&str>,
    limit: u32,
    include_archived: bool,
) -> Result<Vec<EventTypeRecord>> {
    let rows = sqlx::query(
        "SELECT * FROM event_types WHERE name > $1 AND (archived = 0 OR $2 = 1) ORDER BY name LIMIT $3",
    )
    .bind(after.unwrap_or(""))
    .bind(include_archived as i64)
    .bind(limit as i64)
    .fetch_all(&store.reads)
    .await?;
    rows.iter().map(event_type_from_row).collect()
}

pub(super) async fn delete_event_type(
    store: &SqlStore,
    name: &str,
    expunge: bool,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let (name, actor) = (name.to_string(), actor.to_string());
    store
        .write(move |w| {
            Box::pin(async move {
                let q = if expunge {
                    sqlx::query("DELETE FROM event_types WHERE name = $1").bind(&name)
                } else {
                    sqlx::query(
                        "UPDATE event_types SET archived = 1, updated_at = $2 WHERE name = $1",
                    )
                    .bind(&name)
                    .bind(now)
                };
                let n = q.execute(&mut w.conn).await?.rows_affected();
                if n > 0 {
                    let action = if expunge {
                        "event_type.deleted"
                    } else {
                        "event_type.archived"
                    };
                    audit(w, &new_audit(now, &actor, action, &name, json!({}))).await?;
                }
                Ok(n > 0)
            })
        })
        .await
}
