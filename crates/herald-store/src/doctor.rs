//! Checking a store for damage without changing it (`herald doctor`, and the check
//! `herald serve` makes before it opens a SQLite database).
//!
//! Everything here reads through connections of its own — read-only on SQLite (`mode=ro`)
//! and read-only transactions on Postgres — and never migrates, never releases leases and
//! never writes: a damaged database is left exactly as it was found, for a backup to
//! replace or an expert to look at. The integrity check comes first, so nothing else has
//! touched a damaged file before it is named.
//!
//! ```no_run
//! # async fn demo() {
//! use herald_core::audit::ChainVerifier;
//! use herald_store::{Location, doctor};
//! let location = Location::Sqlite("herald-data/herald.db".into());
//! for c in doctor::examine(&location, ChainVerifier::new()).await {
//!     println!("{} {}: {}", if c.ok { "ok" } else { "FAILED" }, c.name, c.detail);
//! }
//! # }
//! ```

use crate::{Location, Result, StoreError};
use herald_core::audit::ChainVerifier;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AssertSqlSafe, Connection};
use std::path::Path;

/// One check and what it found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            ok: true,
            detail: detail.into(),
        }
    }

    pub fn failed(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            ok: false,
            detail: detail.into(),
        }
    }
}

/// Rows that point at nothing, each a query counting them.
const ORPHANS: &[(&str, &str)] = &[
    (
        "deliveries whose message is missing",
        "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = d.message_id)",
    ),
    (
        "attempts whose delivery is missing",
        "SELECT COUNT(*) FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)",
    ),
    (
        "pending deliveries to a destination that no longer exists",
        "SELECT COUNT(*) FROM deliveries d WHERE d.status IN ('pending', 'in_flight') AND NOT EXISTS (SELECT 1 FROM destinations x WHERE x.name = d.destination)",
    ),
];

/// The URL of a connection that cannot write (SQLite); a missing file is an error (never
/// created).
fn read_only_url(location: &Location) -> Result<String> {
    match location {
        Location::Sqlite(path) if !path.exists() => Err(StoreError::Unavailable(format!(
            "{} does not exist",
            path.display()
        ))),
        Location::Sqlite(path) => Ok(format!("sqlite://{}?mode=ro", path.display())),
        Location::Postgres(url) => Ok(url.clone()),
    }
}

/// `PRAGMA integrity_check` (or the faster `quick_check`) of a SQLite file: the problems
/// it reports, none when the file is sound. A file SQLite cannot even open or read as a
/// database is one problem.
pub async fn sqlite_check(path: &Path, quick: bool) -> Result<Vec<String>> {
    sqlx::any::install_default_drivers();
    let url = read_only_url(&Location::Sqlite(path.to_path_buf()))?;
    let pragma = if quick {
        "PRAGMA quick_check(20)"
    } else {
        "PRAGMA integrity_check(100)"
    };
    let found = match AnyConnection::connect(&url).await {
        Ok(mut conn) => {
            let found = sqlx::query_scalar::<_, String>(pragma)
                .fetch_all(&mut conn)
                .await;
            let _ = conn.close().await;
            found
        }
        Err(e) => Err(e),
    };
    match found {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Ok(Vec::new()),
        // A line may hold several problems ("*** in database main ***\nOn tree page …").
        Ok(lines) => Ok(lines
            .iter()
            .flat_map(|l| l.lines())
            .filter(|l| !l.starts_with("*** in database"))
            .map(str::to_string)
            .collect()),
        Err(e) => match StoreError::from(e) {
            StoreError::Damaged(d) => Ok(vec![d]),
            other => Err(other),
        },
    }
}

/// A read-only look at one store, once [`open`] found it reachable.
pub struct Session {
    pool: AnyPool,
}

/// The checks that come first, in order: the database is sound (SQLite `integrity_check`;
/// on Postgres no invalid index, and `amcheck`'s b-tree check when that extension is
/// installed), it answers, and its schema is one this Herald knows. The session is `None`
/// when the database cannot be reached; the other checks need it.
pub async fn open(location: &Location) -> (Vec<Check>, Option<Session>) {
    sqlx::any::install_default_drivers();
    let mut report = Vec::new();
    if let Location::Sqlite(path) = location {
        report.push(match sqlite_check(path, false).await {
            Ok(problems) if problems.is_empty() => Check::ok("integrity", "integrity_check: ok"),
            Ok(problems) => Check::failed("integrity", problems.join("; ")),
            Err(e) => Check::failed("integrity", e.to_string()),
        });
    }
    let pool = match read_only_url(location) {
        Ok(url) => AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    if conn.backend_name() == "PostgreSQL" {
                        sqlx::raw_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(StoreError::from),
        Err(e) => Err(e),
    };
    let session = match pool {
        Ok(pool) => {
            report.push(Check::ok("reachable", location.describe()));
            Session { pool }
        }
        Err(e) => {
            report.push(Check::failed(
                "reachable",
                format!("{}: {e}", location.describe()),
            ));
            return (report, None);
        }
    };
    if let Location::Postgres(_) = location {
        report.push(session.postgres_integrity().await);
    }
    report.push(session.schema().await);
    (report, Some(session))
}

/// Every check with `v` for the audit chain (give it the public key to check checkpoint
/// signatures too): [`open`]'s, then [`Session::audit_chain`] and [`Session::orphans`].
pub async fn examine(location: &Location, v: ChainVerifier) -> Vec<Check> {
    let (mut report, session) = open(location).await;
    if let Some(session) = session {
        report.push(session.audit_chain(v).await);
        report.extend(session.orphans().await);
        session.close().await;
    }
    report
}

impl Session {
    /// A value of the `meta` table (the sealed key check, the sealed signing key).
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn schema(&self) -> Check {
        let known = crate::sql::latest_schema();
        let found: std::result::Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
                .fetch_one(&self.pool)
                .await;
        match found {
            Ok(Some(v)) if v == known => Check::ok("schema", format!("v{v}")),
            Ok(Some(v)) if v < known => Check::ok(
                "schema",
                format!("v{v}; `herald serve` or `herald migrate` brings it to v{known}"),
            ),
            Ok(Some(v)) => Check::failed(
                "schema",
                format!("v{v} is newer than this Herald (v{known}): upgrade Herald"),
            ),
            Ok(None) => Check::failed("schema", "no migrations applied: not a Herald database"),
            Err(e) => Check::failed("schema", format!("cannot read schema_migrations: {e}")),
        }
    }

    /// What Postgres can tell cheaply: an index left invalid (a failed concurrent build)
    /// and, with `amcheck` installed, each b-tree index's structure.
    async fn postgres_integrity(&self) -> Check {
        const INDEXES: &str = "SELECT c.relname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_am a ON a.oid = c.relam \
             WHERE n.nspname = current_schema() AND a.amname = 'btree' AND i.indisvalid = $1 \
             ORDER BY 1";
        let invalid: std::result::Result<Vec<String>, sqlx::Error> = sqlx::query_scalar(INDEXES)
            .bind(false)
            .fetch_all(&self.pool)
            .await;
        match invalid {
            Ok(v) if v.is_empty() => {}
            Ok(v) => {
                return Check::failed(
                    "integrity",
                    format!("invalid indexes (REINDEX them): {}", v.join(", ")),
                );
            }
            Err(e) => return Check::failed("integrity", format!("cannot list indexes: {e}")),
        }
        let amcheck: std::result::Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_extension WHERE extname = 'amcheck'")
                .fetch_one(&self.pool)
                .await;
        if !matches!(amcheck, Ok(n) if n > 0) {
            return Check::ok(
                "integrity",
                "indexes valid (install the amcheck extension to have their structure checked too)",
            );
        }
        let indexes: Vec<String> = match sqlx::query_scalar(INDEXES)
            .bind(true)
            .fetch_all(&self.pool)
            .await
        {
            Ok(v) => v,
            Err(e) => return Check::failed("integrity", format!("cannot list indexes: {e}")),
        };
        for index in &indexes {
            let checked: std::result::Result<Option<String>, sqlx::Error> =
                sqlx::query_scalar("SELECT bt_index_check($1::regclass)::text")
                    .bind(index)
                    .fetch_one(&self.pool)
                    .await;
            match checked.map_err(StoreError::from) {
                Ok(_) => {}
                Err(e @ StoreError::Damaged(_)) => {
                    return Check::failed("integrity", format!("index {index}: {}", e.detail()));
                }
                Err(e) => {
                    return Check::ok(
                        "integrity",
                        format!("indexes valid; amcheck could not run: {}", e.detail()),
                    );
                }
            }
        }
        Check::ok(
            "integrity",
            format!(
                "indexes valid; amcheck: {} b-tree indexes sound",
                indexes.len()
            ),
        )
    }

    /// The whole audit chain through `v` ([`crate::verify_pages`]): an entry changed or
    /// unreadable is named by its `seq`.
    pub async fn audit_chain(&self, v: ChainVerifier) -> Check {
        let verified = crate::verify_pages(v, |after, limit| {
            let pool = self.pool.clone();
            async move {
                let rows =
                    sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                        .bind(after)
                        .bind(i64::from(limit))
                        .fetch_all(&pool)
                        .await?;
                rows.iter().map(crate::sql::audit_from_row).collect()
            }
        })
        .await;
        match verified {
            Ok(v) if v.ok => Check::ok(
                "audit chain",
                format!(
                    "{} entries, {} checkpoints; hashes verified, {}",
                    v.entries,
                    v.checkpoints,
                    if v.signatures_checked {
                        "checkpoint signatures verified"
                    } else {
                        "checkpoint signatures not checked"
                    }
                ),
            ),
            Ok(v) => Check::failed(
                "audit chain",
                format!(
                    "broken at seq {}: {} ({} entries verified before it)",
                    v.broken_at.unwrap_or_default(),
                    v.reason.unwrap_or_default(),
                    v.entries
                ),
            ),
            Err(e) => Check::failed("audit chain", e.to_string()),
        }
    }

    /// Rows that point at nothing: one check each.
    pub async fn orphans(&self) -> Vec<Check> {
        let mut report = Vec::new();
        for (what, sql) in ORPHANS {
            let n: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(AssertSqlSafe(*sql))
                .fetch_one(&self.pool)
                .await;
            report.push(match n {
                Ok(0) => Check::ok("orphans", format!("no {what}")),
                Ok(n) => Check::failed("orphans", format!("{n} {what}")),
                Err(e) => Check::failed("orphans", format!("{what}: {e}")),
            });
        }
        report
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}
