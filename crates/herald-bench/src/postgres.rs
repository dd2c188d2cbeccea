//! What Postgres did for a bench database: commits and rows written
//! (`pg_stat_database`), statements (`pg_stat_statements`, when the server loads it) and
//! the server's CPU time (`/proc`, when it runs on this machine).
//!
//! `pg_stat_database` lags: a busy backend publishes its counts at most once a second and
//! an idle one within ten, but every backend publishes when it exits. So a run reads the
//! counters once before its first request and again after its nodes have stopped.

use crate::cpu;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::time::{Duration, Instant};

/// A connection to the bench database that reads its statistics.
pub struct Probe {
    conn: PgConnection,
    /// Why statements cannot be counted, when they cannot.
    statements: Result<(), String>,
    /// The server's main process, when it runs on this machine.
    postmaster: Option<u32>,
}

/// Cumulative counters of the bench database.
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    pub commits: i64,
    /// Rows inserted, updated and deleted.
    pub rows: i64,
    pub statements: Option<i64>,
}

const STATEMENTS: &str = "SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements \
     WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND query NOT LIKE '%pg_stat%'";

impl Probe {
    /// Connects to the database at `url` and makes `pg_stat_statements` available there
    /// if the server can.
    pub async fn connect(url: &str) -> Result<Self, String> {
        let mut conn = PgConnection::connect(url)
            .await
            .map_err(|e| format!("Postgres statistics: {e}"))?;
        let statements = enable_statements(&mut conn).await;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        // Our backend's parent is the server, if the server is a process of this machine.
        let postmaster = u32::try_from(pid)
            .ok()
            .filter(|p| cpu::command(*p).as_deref() == Some("postgres"))
            .and_then(cpu::parent)
            .filter(|p| cpu::command(*p).as_deref() == Some("postgres"));
        Ok(Probe {
            conn,
            statements,
            postmaster,
        })
    }

    /// Why statements are not counted, if they are not.
    pub fn statements_unavailable(&self) -> Option<&str> {
        self.statements.as_ref().err().map(String::as_str)
    }

    /// Why the server's CPU is not measured, if it is not.
    pub fn cpu_unavailable(&self) -> Option<&str> {
        match self.postmaster {
            Some(_) => None,
            None => Some("the Postgres server is not a process of this machine"),
        }
    }

    pub async fn counters(&mut self) -> Result<Counters, String> {
        let (commits, rows): (i64, i64) = sqlx::query_as(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted \
             FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| format!("pg_stat_database: {e}"))?;
        let statements = match self.statements {
            Ok(()) => Some(
                sqlx::query_scalar(STATEMENTS)
                    .fetch_one(&mut self.conn)
                    .await
                    .map_err(|e| format!("pg_stat_statements: {e}"))?,
            ),
            Err(_) => None,
        };
        Ok(Counters {
            commits,
            rows,
            statements,
        })
    }

    /// CPU ticks of the server's processes that work for this database: the main
    /// process, its background processes (WAL writer, checkpointer, …) and the backends
    /// connected to this database, not this probe's own nor those of other databases.
    pub async fn server_cpu(&mut self) -> Result<Option<cpu::Sample>, String> {
        let Some(postmaster) = self.postmaster else {
            return Ok(None);
        };
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
             AND (datname = current_database() OR backend_type <> 'client backend')",
        )
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| format!("pg_stat_activity: {e}"))?;
        let pids = pids.into_iter().filter_map(|p| u32::try_from(p).ok());
        Ok(Some(cpu::Sample::of(
            std::iter::once(postmaster).chain(pids),
        )))
    }

    /// Waits until no other connection to this database is left (so every backend has
    /// published its counts), at most `bound`.
    pub async fn wait_alone(&mut self, bound: Duration) -> Result<(), String> {
        let deadline = Instant::now() + bound;
        loop {
            let others: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| format!("pg_stat_activity: {e}"))?;
            if others == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{others} connections to the bench database still open {bound:?} after its nodes stopped"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// `Ok` when `pg_stat_statements` can be read in this database (created here if need be),
/// else why not.
async fn enable_statements(conn: &mut PgConnection) -> Result<(), String> {
    let present: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| format!("pg_extension: {e}"))?;
    if present.is_none() {
        sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut *conn)
            .await
            .map_err(|e| format!("the extension cannot be created: {e}"))?;
    }
    sqlx::query_scalar::<_, i64>(STATEMENTS)
        .fetch_one(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| format!("{e}"))
}

/// Drops a bench database (its URL from `create_database`) on the server of `base`.
pub async fn drop_database(base: &str, url: &str) -> Result<(), String> {
    let name = url
        .split('?')
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .ok_or_else(|| format!("not a bench database: {url}"))?;
    let mut admin = PgConnection::connect(base)
        .await
        .map_err(|e| format!("Postgres: {e}"))?;
    let r = sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .map(|_| ())
    .map_err(|e| format!("cannot drop {name}: {e}"));
    let _ = admin.close().await;
    r
}
