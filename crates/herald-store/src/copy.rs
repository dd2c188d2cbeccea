//! Copies a whole store to another database (`herald migrate-store`): SQLite → Postgres
//! when one node grows into a cluster, or back.
//!
//! Both schemas are first brought to this Herald's version; the target must be empty. Every
//! table is copied row by row, with multi-row INSERTs, inside one target transaction: the
//! copy lands whole or not at all. The source is read inside one transaction too, so a copy
//! taken while a node is still running is a consistent snapshot (stop the nodes first
//! anyway: what they accept after the snapshot is not copied).

use crate::sql::{Dialect, connect, migrate_to_latest};
use crate::{Location, Result, StoreError};
use futures_util::TryStreamExt;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Connection, Row};

/// Tables in an order that satisfies their foreign keys; tables added later (not listed)
/// are copied after these, by name.
const ORDER: &[&str] = &[
    "meta",
    "tokens",
    "destinations",
    "messages",
    "deliveries",
    "attempts",
    "idempotency_keys",
    "audit_log",
];

/// Rows per INSERT statement.
const ROWS: usize = 100;

/// Rows copied per table, in copy order.
pub type CopyReport = Vec<(String, u64)>;

/// Copies every row of `from` into the empty store at `to`; `progress` hears each table as
/// it is done.
pub async fn copy_store(
    from: &Location,
    to: &Location,
    mut progress: impl FnMut(&str, u64),
) -> Result<CopyReport> {
    if from == to {
        return Err(StoreError::Migration(
            "the source and the target are the same database".into(),
        ));
    }
    let (mut src, src_dialect) = connect(from).await?;
    migrate_to_latest(&mut src).await?;
    let (mut dst, dst_dialect) = connect(to).await?;
    migrate_to_latest(&mut dst).await?;

    let target_tables = tables(&mut dst, dst_dialect).await?;
    let tables = ordered(tables(&mut src, src_dialect).await?);
    for t in &tables {
        if !target_tables.contains(t) {
            return Err(StoreError::Migration(format!(
                "table {t} exists in the source but not in the target"
            )));
        }
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}")))
            .fetch_one(&mut dst)
            .await?;
        if n > 0 {
            return Err(StoreError::Migration(format!(
                "the target is not empty (table {t} has {n} rows); copy into a new database"
            )));
        }
    }

    let mut report = Vec::with_capacity(tables.len());
    let mut read = src.begin().await?;
    let mut write = dst.begin().await?;
    for t in &tables {
        let columns = columns_of(&mut write, dst_dialect, t).await?;
        let source_columns = columns_of(&mut read, src_dialect, t).await?;
        let columns: Vec<(String, Kind)> = columns
            .into_iter()
            .filter(|(c, _)| source_columns.iter().any(|(s, _)| s == c))
            .collect();
        let list = columns
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let select = format!("SELECT {list} FROM {t}");
        let mut rows = sqlx::query(AssertSqlSafe(select)).fetch(&mut *read);
        let mut batch = Vec::with_capacity(ROWS);
        let mut copied = 0u64;
        while let Some(row) = rows.try_next().await? {
            batch.push(row);
            if batch.len() == ROWS {
                copied += insert(&mut write, t, &list, &columns, &batch).await?;
                batch.clear();
            }
        }
        drop(rows);
        if !batch.is_empty() {
            copied += insert(&mut write, t, &list, &columns, &batch).await?;
        }
        progress(t, copied);
        report.push((t.clone(), copied));
    }
    write.commit().await?;
    read.rollback().await?;
    Ok(report)
}

async fn insert(
    conn: &mut AnyConnection,
    table: &str,
    list: &str,
    columns: &[(String, Kind)],
    rows: &[sqlx::any::AnyRow],
) -> Result<u64> {
    let sql = crate::sql::values_sql(
        &format!("INSERT INTO {table} ({list})"),
        rows.len(),
        columns.len(),
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for row in rows {
        for (i, (name, kind)) in columns.iter().enumerate() {
            q = bind(q, row, i, *kind).map_err(|e| {
                StoreError::Corrupt(format!("{table}.{name}: cannot read the value: {e}"))
            })?;
        }
    }
    q.execute(&mut *conn).await?;
    Ok(rows.len() as u64)
}

/// A column's type, as both databases name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Text,
    Bytes,
}

impl Kind {
    fn of(declared: &str) -> Kind {
        let d = declared.to_ascii_uppercase();
        if d.contains("INT") {
            Kind::Int
        } else if d.contains("REAL")
            || d.contains("DOUB")
            || d.contains("FLOA")
            || d.contains("NUMERIC")
        {
            Kind::Float
        } else if d.contains("BLOB") || d.contains("BYTEA") {
            Kind::Bytes
        } else {
            Kind::Text
        }
    }
}

fn bind<'q>(
    q: Query<'q, Any, AnyArguments>,
    row: &sqlx::any::AnyRow,
    i: usize,
    kind: Kind,
) -> std::result::Result<Query<'q, Any, AnyArguments>, sqlx::Error> {
    Ok(match kind {
        Kind::Int => q.bind(row.try_get::<Option<i64>, _>(i)?),
        Kind::Float => q.bind(row.try_get::<Option<f64>, _>(i)?),
        Kind::Text => q.bind(row.try_get::<Option<String>, _>(i)?),
        Kind::Bytes => q.bind(row.try_get::<Option<Vec<u8>>, _>(i)?),
    })
}

fn ordered(mut tables: Vec<String>) -> Vec<String> {
    tables.retain(|t| t != "schema_migrations");
    tables.sort_by_key(|t| {
        (
            ORDER.iter().position(|o| o == t).unwrap_or(ORDER.len()),
            t.clone(),
        )
    });
    tables
}

async fn tables(conn: &mut AnyConnection, dialect: Dialect) -> Result<Vec<String>> {
    let sql = match dialect {
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        Dialect::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        }
    };
    Ok(sqlx::query_scalar(sql).fetch_all(conn).await?)
}

/// A table's columns with their declared types, in table order.
async fn columns_of(
    conn: &mut AnyConnection,
    dialect: Dialect,
    table: &str,
) -> Result<Vec<(String, Kind)>> {
    let sql = match dialect {
        Dialect::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
        Dialect::Postgres => {
            "SELECT CAST(column_name AS TEXT) AS name, CAST(data_type AS TEXT) AS type FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
        }
    };
    let rows = sqlx::query(sql).bind(table).fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get("name")?;
            let declared: String = r.try_get("type")?;
            Ok((name, Kind::of(&declared)))
        })
        .collect()
}
