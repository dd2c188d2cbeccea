//! Fresh Postgres databases for tests, from `HERALD_TEST_POSTGRES_URL`.
//!
//! CI sets the variable (the project's machines run Postgres at 127.0.0.1:5432, trust auth)
//! and a test fails when that server is unreachable. Where it is unset and `CI` is not set,
//! Postgres tests skip with a loud message instead.

use sqlx::{AnyConnection, AssertSqlSafe, Connection};

pub const ENV: &str = "HERALD_TEST_POSTGRES_URL";

/// The URL of a new, empty database on the test server, or `None` (printed loudly) when no
/// server is configured outside CI.
pub async fn fresh_database(label: &str) -> Option<String> {
    let base = match std::env::var(ENV) {
        Ok(u) if !u.is_empty() => u,
        _ if std::env::var_os("CI").is_some() => {
            panic!("{ENV} must be set in CI (e.g. postgres://postgres@127.0.0.1:5432/test)")
        }
        _ => {
            eprintln!(
                "\n*** SKIPPED on Postgres ({label}): {ENV} is not set. \
                 Set it (e.g. postgres://postgres@127.0.0.1:5432/test) to run this test on Postgres. ***\n"
            );
            return None;
        }
    };
    Some(
        create_database(&base, label)
            .await
            .unwrap_or_else(|e| panic!("{ENV}={base}: {e}")),
    )
}

/// Creates a new, empty database on the server of `base` and returns its URL.
pub async fn create_database(base: &str, label: &str) -> Result<String, String> {
    sqlx::any::install_default_drivers();
    let mut admin = AnyConnection::connect(base)
        .await
        .map_err(|e| format!("Postgres is unreachable: {e}"))?;
    let name = format!(
        "herald_t_{}_{}",
        label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect::<String>()
            .to_lowercase(),
        &uuid_like()
    );
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .map_err(|e| format!("cannot create the database {name}: {e}"))?;
    let _ = admin.close().await;
    Ok(with_database(base, &name))
}

/// One number from a query with one BIGINT parameter (tests that look into the database).
pub async fn query_i64(url: &str, sql: &str, arg: i64) -> i64 {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
        .bind(arg)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
    n
}

/// Runs statements without parameters (e.g. a test damaging a row on purpose).
pub async fn execute(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

/// The first column of every row of a query without parameters, as text.
pub async fn query_strings(url: &str, sql: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
    rows
}

/// `postgres://u@h:p/db?x` with the database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:04x}",
        nanos & 0xffff_ffff_ffff,
        std::process::id() & 0xffff
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database() {
        assert_eq!(
            super::with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://127.0.0.1/test?sslmode=disable", "x"),
            "postgres://127.0.0.1/x?sslmode=disable"
        );
    }
}
