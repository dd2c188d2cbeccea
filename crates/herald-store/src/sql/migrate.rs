//! The schema: one set of migrations for both databases, applied under a lock.

use super::*;

pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_resilience.sql")),
    (3, include_str!("../../migrations/0003_cluster.sql")),
    (5, include_str!("../../migrations/0005_error_groups.sql")),
    (6, include_str!("../../migrations/0006_dashboard.sql")),
    (8, include_str!("../../migrations/0008_ui_sessions.sql")),
    (
        9,
        include_str!("../../migrations/0009_attempt_exchange.sql"),
    ),
    (10, include_str!("../../migrations/0010_tenants.sql")),
];

/// The schema version this Herald migrates to.
pub fn latest_schema() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Applies every migration this Herald knows (idempotent) and returns the schema version.
pub async fn migrate_to_latest(conn: &mut AnyConnection) -> Result<i64> {
    migrate(conn).await?;
    Ok(MIGRATIONS.last().map(|m| m.0).unwrap_or(0))
}

/// Key of the Postgres advisory lock held while migrating (nodes starting together).
pub(super) const MIGRATION_LOCK: i64 = 0x6865_7261_6c65;

pub(super) async fn migrate(conn: &mut AnyConnection) -> Result<()> {
    let postgres = conn.backend_name() == "PostgreSQL";
    if postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let result = migrate_locked(conn).await;
    if postgres {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await;
    }
    result
}

pub(super) async fn migrate_locked(conn: &mut AnyConnection) -> Result<()> {
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .execute(&mut *conn)
        .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await?;
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(*sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Migration(format!("v{version}: {e}")))?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(herald_core::clock::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    if let Some(max) = applied.iter().max()
        && *max > MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
    {
        return Err(StoreError::Migration(format!(
            "the database has schema v{max}, newer than this Herald knows; upgrade Herald"
        )));
    }
    Ok(())
}

pub(super) async fn exec(
    conn: &mut AnyConnection,
    sql: &'static str,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::raw_sql(sql).execute(conn).await.map(|_| ())
}
