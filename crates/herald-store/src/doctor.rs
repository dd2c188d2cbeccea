//! Checking a store for damage without changing it (`herald doctor`, and the check
//! `herald serve` makes before it opens a SQLite database).
//!
//! Everything here reads through a connection of its own — read-only on SQLite — and never
//! migrates, never releases leases and never writes: a damaged database is left exactly as
//! it was found, for a backup to replace or an expert to look at.
//!
//! ```no_run
//! # async fn demo() {
//! use herald_store::{Location, doctor};
//! let report = doctor::examine(&Location::Sqlite("herald-data/herald.db".into())).await;
//! for c in &report {
//!     println!("{} {}: {}", if c.ok { "ok" } else { "FAILED" }, c.name, c.detail);
//! }
//! # }
//! ```

use crate::{Location, Result, StoreError};
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
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            ok: true,
            detail: detail.into(),
        }
    }

    fn failed(name: &'static str, detail: impl Into<String>) -> Self {
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

/// Opens a connection that cannot write (SQLite) or only reads (Postgres).
async fn read_only(location: &Location) -> Result<AnyConnection> {
    sqlx::any::install_default_drivers();
    match location {
        Location::Sqlite(path) => {
            if !path.exists() {
                return Err(StoreError::Unavailable(format!(
                    "{} does not exist",
                    path.display()
                )));
            }
            Ok(AnyConnection::connect(&format!("sqlite://{}?mode=ro", path.display())).await?)
        }
        Location::Postgres(url) => Ok(AnyConnection::connect(url).await?),
    }
}

/// `PRAGMA integrity_check` (or the faster `quick_check`) of a SQLite file: the problems
/// it reports, none when the file is sound. A file SQLite cannot even open as a database
/// is one problem.
pub async fn sqlite_check(path: &Path, quick: bool) -> Result<Vec<String>> {
    let mut conn = read_only(&Location::Sqlite(path.to_path_buf())).await?;
    let pragma = if quick {
        "PRAGMA quick_check(20)"
    } else {
        "PRAGMA integrity_check(100)"
    };
    let found: std::result::Result<Vec<String>, sqlx::Error> =
        sqlx::query_scalar(pragma).fetch_all(&mut conn).await;
    let _ = conn.close().await;
    match found {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Ok(Vec::new()),
        Ok(lines) => Ok(lines),
        Err(e) => match StoreError::from(e) {
            StoreError::Damaged(d) => Ok(vec![d]),
            other => Err(other),
        },
    }
}

/// Every check, in order: the database answers and is sound, its schema is one this
/// Herald knows, the audit chain verifies, and no row points at nothing.
pub async fn examine(location: &Location) -> Vec<Check> {
    let mut report = Vec::new();
    if let Location::Sqlite(path) = location {
        match sqlite_check(path, false).await {
            Ok(problems) if problems.is_empty() => {
                report.push(Check::ok("integrity", "PRAGMA integrity_check: ok"))
            }
            Ok(problems) => report.push(Check::failed("integrity", problems.join("; "))),
            Err(e) => {
                report.push(Check::failed("integrity", e.to_string()));
                return report;
            }
        }
    }
    let mut conn = match read_only(location).await {
        Ok(c) => {
            report.push(Check::ok("reachable", location.describe()));
            c
        }
        Err(e) => {
            report.push(Check::failed(
                "reachable",
                format!("{}: {e}", location.describe()),
            ));
            return report;
        }
    };
    report.push(schema(&mut conn).await);
    report.push(audit_chain(location).await);
    for (what, sql) in ORPHANS {
        let n: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(AssertSqlSafe(*sql))
            .fetch_one(&mut conn)
            .await;
        report.push(match n {
            Ok(0) => Check::ok("orphans", format!("no {what}")),
            Ok(n) => Check::failed("orphans", format!("{n} {what}")),
            Err(e) => Check::failed("orphans", format!("{what}: {e}")),
        });
    }
    let _ = conn.close().await;
    report
}

async fn schema(conn: &mut AnyConnection) -> Check {
    let known = crate::sql::latest_schema();
    let found: std::result::Result<Option<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut *conn)
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

async fn audit_chain(location: &Location) -> Check {
    let url = match location {
        Location::Sqlite(path) => format!("sqlite://{}?mode=ro", path.display()),
        Location::Postgres(url) => url.clone(),
    };
    let pool = match sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
    {
        Ok(p) => p,
        Err(e) => return Check::failed("audit chain", e.to_string()),
    };
    let verified = crate::verify_pages(herald_core::audit::ChainVerifier::new(), |after, limit| {
        let pool = pool.clone();
        async move {
            let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await?;
            rows.iter().map(crate::sql::audit_from_row).collect()
        }
    })
    .await;
    pool.close().await;
    match verified {
        Ok(v) if v.ok => Check::ok(
            "audit chain",
            format!(
                "{} entries, {} checkpoints (hashes verified; `herald audit verify` also checks the signatures)",
                v.entries, v.checkpoints
            ),
        ),
        Ok(v) => Check::failed(
            "audit chain",
            format!(
                "broken at seq {}: {}",
                v.broken_at.unwrap_or_default(),
                v.reason.unwrap_or_default()
            ),
        ),
        Err(e) => Check::failed("audit chain", e.to_string()),
    }
}
