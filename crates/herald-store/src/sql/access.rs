//! API tokens and dashboard sessions.

use super::*;

pub(super) async fn create_token(store: &SqlStore, t: TokenRecord, actor: &str) -> Result<()> {
    let actor = actor.to_string();
    store.write(move |w| {
        Box::pin(async move {
            sqlx::query("INSERT INTO tokens (id, name, hash, scopes, created_at, tenant, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&t.id)
                .bind(&t.name)
                .bind(&t.hash)
                .bind(Scope::join(&t.scopes))
                .bind(t.created_at)
                .bind(&t.tenant)
                .bind(t.expires_at)
                .execute(&mut w.conn)
                .await?;
            audit(w, &new_audit(t.created_at, &actor, "token.created", &t.id, json!({"name": t.name, "scopes": t.scopes, "tenant": t.tenant}))).await
        })
    })
    .await
}

pub(super) async fn get_token(store: &SqlStore, id: &str) -> Result<Option<TokenRecord>> {
    let row = sqlx::query("SELECT * FROM tokens WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.reads)
        .await?;
    row.map(|r| token_from_row(&r)).transpose()
}

pub(super) async fn list_tokens(store: &SqlStore) -> Result<Vec<TokenRecord>> {
    let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_at")
        .fetch_all(&store.reads)
        .await?;
    rows.iter().map(token_from_row).collect()
}

pub(super) async fn revoke_token(
    store: &SqlStore,
    id: &str,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let (id, actor) = (id.to_string(), actor.to_string());
    store
        .write(move |w| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(&id)
                .execute(&mut w.conn)
                .await?
                .rows_affected();
                if n > 0 {
                    w.config_changed = true;
                    audit(w, &new_audit(now, &actor, "token.revoked", &id, json!({}))).await?;
                }
                Ok(n > 0)
            })
        })
        .await
}

pub(super) async fn touch_tokens(store: &SqlStore, used: Vec<(String, i64)>) -> Result<()> {
    store.write(move |w| {
        Box::pin(async move {
            for (id, at) in &used {
                sqlx::query("UPDATE tokens SET last_used_at = CASE WHEN COALESCE(last_used_at, 0) > $1 THEN last_used_at ELSE $1 END WHERE id = $2")
                    .bind(at)
                    .bind(id)
                    .execute(&mut w.conn)
                    .await?;
            }
            Ok(())
        })
    })
    .await
}

pub(super) async fn create_session(store: &SqlStore, s: SessionRecord) -> Result<()> {
    store.write(move |w| {
        Box::pin(async move {
            sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
                .bind(s.created_at)
                .execute(&mut w.conn)
                .await?;
            sqlx::query(
                "INSERT INTO ui_sessions (id_hash, token_id, name, scopes, csrf, created_at, expires_at, tenant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&s.id_hash)
            .bind(&s.token_id)
            .bind(&s.name)
            .bind(Scope::join(&s.scopes))
            .bind(&s.csrf)
            .bind(s.created_at)
            .bind(s.expires_at)
            .bind(&s.tenant)
            .execute(&mut w.conn)
            .await?;
            Ok(())
        })
    })
    .await
}

pub(super) async fn get_session(
    store: &SqlStore,
    id_hash: &str,
    now: i64,
) -> Result<Option<SessionRecord>> {
    let row = sqlx::query("SELECT * FROM ui_sessions WHERE id_hash = $1 AND expires_at > $2")
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&store.reads)
        .await?;
    row.map(|r| {
        let scopes: String = r.try_get("scopes")?;
        Ok(SessionRecord {
            id_hash: r.try_get("id_hash")?,
            token_id: r.try_get("token_id")?,
            name: r.try_get("name")?,
            scopes: Scope::parse_list(&scopes),
            csrf: r.try_get("csrf")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            tenant: r.try_get("tenant")?,
        })
    })
    .transpose()
}

pub(super) async fn delete_session(store: &SqlStore, id_hash: &str) -> Result<()> {
    let id_hash = id_hash.to_string();
    store
        .write(move |w| {
            Box::pin(async move {
                sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1")
                    .bind(&id_hash)
                    .execute(&mut w.conn)
                    .await?;
                Ok(())
            })
        })
        .await
}
