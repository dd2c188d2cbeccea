//! Readiness, settings kept in the database, pruning, re-sealing and closing.

use super::*;

pub(super) async fn ping(store: &SqlStore) -> Result<()> {
    if store.jobs.is_closed() {
        return Err(StoreError::Closed);
    }
    if let HealthState::Down { fault, detail, .. } = store.health.state() {
        return Err(StoreError::from_fault(fault, detail));
    }
    sqlx::query("SELECT 1").execute(&store.reads).await?;
    if let Some(full) = store.disk_full() {
        return Err(full);
    }
    if herald_core::clock::now_ms() - store.health.last_commit_ms() > FRESH_COMMIT_MS {
        // Nothing committed lately: prove the writer can, with a heartbeat.
        let probe = store.write(|w| Box::pin(heartbeat(w)));
        tokio::time::timeout(std::time::Duration::from_secs(5), probe)
            .await
            .map_err(|_| StoreError::Unavailable("a probe commit took over 5 s".into()))??;
    }
    Ok(())
}

pub(super) async fn reseal(
    store: &SqlStore,
    destinations: Vec<(String, String)>,
    meta: Vec<(String, String)>,
    actor: &str,
    now: i64,
) -> Result<()> {
    let actor = actor.to_string();
    store.write(move |w| {
        Box::pin(async move {
            for (name, sealed) in &destinations {
                sqlx::query("UPDATE destinations SET spec = $1 WHERE name = $2").bind(sealed).bind(name).execute(&mut w.conn).await?;
            }
            for (key, value) in &meta {
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2")
                    .bind(key)
                    .bind(value)
                    .execute(&mut w.conn)
                    .await?;
            }
            audit(w, &new_audit(now, &actor, "master_key.rotated", "secrets", json!({"destinations": destinations.len()}))).await
        })
    })
    .await
}

pub(super) async fn get_meta(store: &SqlStore, key: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .fetch_optional(&store.reads)
        .await?)
}

pub(super) async fn init_meta(store: &SqlStore, key: &str, value: &str) -> Result<String> {
    let (key, value) = (key.to_string(), value.to_string());
    store
        .write(move |w| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(&key)
                .bind(&value)
                .execute(&mut w.conn)
                .await?;
                Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                    .bind(&key)
                    .fetch_one(&mut w.conn)
                    .await?)
            })
        })
        .await
}

pub(super) async fn prune(store: &SqlStore, now: i64, older_than: i64) -> Result<u64> {
    store.write(move |w| {
        Box::pin(async move {
            let keys = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1").bind(now).execute(&mut w.conn).await?.rows_affected();
            sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1").bind(now).execute(&mut w.conn).await?;
            // A message goes once every delivery of it is terminal and old enough.
            let messages = sqlx::query(
                "DELETE FROM messages WHERE id IN (
                    SELECT m.id FROM messages m WHERE m.created_at < $1
                      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.status IN ('pending', 'in_flight', 'dead'))
                    LIMIT 10000)",
            )
            .bind(older_than)
            .execute(&mut w.conn)
            .await?
            .rows_affected();
            Ok(keys + messages)
        })
    })
    .await
}

pub(super) async fn close(store: &SqlStore) {
    let (ack, done) = oneshot::channel();
    if store.jobs.send(Msg::Close(ack)).await.is_ok() {
        let _ = done.await;
    }
    if let Some(l) = &store.listener {
        l.abort();
    }
    store.reads.close().await;
}
