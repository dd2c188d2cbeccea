//! The embedded SQLite store.
//!
//! * WAL journal, `synchronous=FULL` by default: a commit survives power loss.
//! * One writer task owns the only write connection. Callers send it jobs; it takes every
//!   job that is waiting, runs each inside its own savepoint of one transaction, commits
//!   once, and only then answers each caller (group commit). One fsync serves many requests.
//! * Reads go to a small pool of read-only connections and never wait for the writer.
//! * The writer also owns the head of the audit chain, so appending an entry costs an
//!   insert inside the caller's transaction, never a commit of its own.

use crate::model::*;
use crate::{CheckpointFn, Result, Store, StoreError};
use async_trait::async_trait;
use herald_core::audit::{AuditEntry, CHECKPOINT_ACTION, GENESIS, entry_hash};
use herald_core::clock::rfc3339;
use herald_core::delivery::{AttemptOutcome, DeliveryStatus};
use serde_json::{Value, json};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection, Row};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_resilience.sql")),
    (6, include_str!("../migrations/0006_dashboard.sql")),
];
/// Which SQL database the store talks to; the schema and almost all SQL are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Connection settings of the writer: WAL, durability, waits, foreign keys.
const PRAGMAS_FULL: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16000;";
const PRAGMAS_NORMAL: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16000;";
const READ_PRAGMAS: &str =
    "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16000;";
/// Most jobs one commit carries.
const MAX_GROUP: usize = 512;

/// Tuning for [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `FULL` (default) survives power loss; `NORMAL` only process crashes.
    pub synchronous_full: bool,
    pub read_connections: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous_full: true,
            read_connections: 4,
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;
type Job = Box<dyn for<'c> FnOnce(&'c mut Writer) -> BoxFuture<'c, (bool, Reply)> + Send>;

enum Msg {
    Job(Job),
    /// Commit what is queued, close the connection, then acknowledge.
    Close(oneshot::Sender<()>),
}

/// State owned by the writer task.
pub struct Writer {
    conn: AnyConnection,
    dialect: Dialect,
    stats: Arc<WriterStats>,
    /// `(seq, hash)` of the last audit entry.
    audit_head: (i64, String),
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    jobs: mpsc::Sender<Msg>,
    reads: AnyPool,
    stats: Arc<WriterStats>,
}

/// Counters of the writer, to see group commit at work.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Jobs (store calls) those commits carried.
    pub jobs: AtomicU64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, applies migrations and starts the
    /// writer. Leases left by a previous process are released: SQLite serves one node.
    pub async fn open(path: &Path, opts: SqliteOptions) -> Result<Self> {
        let url = |mode: &str| format!("sqlite://{}?mode={mode}", path.display());
        Self::open_any(Dialect::Sqlite, &url("rwc"), &url("ro"), opts).await
    }

    /// Opens a Postgres database (`postgres://…`) with the same schema and SQL.
    /// (Work in progress: one node; cluster leases and the shared audit head are next.)
    pub async fn open_postgres(url: &str, opts: SqliteOptions) -> Result<Self> {
        Self::open_any(Dialect::Postgres, url, url, opts).await
    }

    async fn open_any(
        dialect: Dialect,
        write_url: &str,
        read_url: &str,
        opts: SqliteOptions,
    ) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(write_url).await?;
        if dialect == Dialect::Sqlite {
            let pragmas: &'static str = if opts.synchronous_full {
                PRAGMAS_FULL
            } else {
                PRAGMAS_NORMAL
            };
            sqlx::raw_sql(pragmas).execute(&mut conn).await?;
        }
        migrate(&mut conn).await?;
        if dialect == Dialect::Sqlite {
            // One node owns a SQLite file: leases left by a previous process are void.
            let now = herald_core::clock::now_ms();
            sqlx::query("UPDATE deliveries SET status = 'pending', lease_until = NULL, lease_token = NULL, next_attempt_at = $1, updated_at = $1 WHERE status = 'in_flight'")
                .bind(now)
                .execute(&mut conn)
                .await?;
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut conn)
            .await?;
        let audit_head = match head {
            Some(r) => (r.try_get("seq")?, r.try_get("hash")?),
            None => (0, GENESIS.to_string()),
        };
        let reads = AnyPoolOptions::new()
            .max_connections(opts.read_connections.max(1))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        sqlx::raw_sql(READ_PRAGMAS).execute(conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(read_url)
            .await?;
        let (tx, rx) = mpsc::channel::<Msg>(4096);
        let stats = Arc::new(WriterStats::default());
        tokio::spawn(run_writer(
            Writer {
                conn,
                dialect,
                stats: stats.clone(),
                audit_head,
            },
            rx,
        ));
        Ok(SqliteStore {
            jobs: tx,
            reads,
            stats,
        })
    }

    /// `(commits, jobs)` so far: jobs per commit is the group-commit factor.
    pub fn writer_stats(&self) -> (u64, u64) {
        (
            self.stats.commits.load(Ordering::Relaxed),
            self.stats.jobs.load(Ordering::Relaxed),
        )
    }

    /// Runs `f` inside the next group commit and returns its result once that commit is
    /// durable. An error from `f` rolls back only `f`'s own work.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Writer) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |w: &mut Writer| {
            Box::pin(async move {
                let result = f(w).await;
                let ok = result.is_ok();
                let reply: Reply = Box::new(move |commit_error: Option<&str>| {
                    let _ = tx.send(match commit_error {
                        None => result,
                        Some(e) => Err(StoreError::Commit(e.to_string())),
                    });
                });
                (ok, reply)
            })
        });
        self.jobs
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await
            .map_err(|_| StoreError::Commit("the transaction could not be started".into()))?
    }
}

async fn migrate(conn: &mut AnyConnection) -> Result<()> {
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

async fn exec(conn: &mut AnyConnection, sql: &'static str) -> std::result::Result<(), sqlx::Error> {
    sqlx::raw_sql(sql).execute(conn).await.map(|_| ())
}

async fn run_writer(mut w: Writer, mut rx: mpsc::Receiver<Msg>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = Vec::new();
        let mut closing = None;
        match first {
            Msg::Job(j) => jobs.push(j),
            Msg::Close(ack) => closing = Some(ack),
        }
        while closing.is_none() && jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => jobs.push(j),
                Ok(Msg::Close(ack)) => closing = Some(ack),
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            commit_group(&mut w, jobs).await;
        }
        if let Some(ack) = closing {
            rx.close();
            let mut rest = Vec::new();
            while let Ok(msg) = rx.try_recv() {
                if let Msg::Job(j) = msg {
                    rest.push(j);
                }
            }
            if !rest.is_empty() {
                commit_group(&mut w, rest).await;
            }
            let _ = w.conn.close().await;
            let _ = ack.send(());
            return;
        }
    }
}

/// Runs jobs in one transaction, each inside its own savepoint, commits once, then answers
/// every caller.
async fn commit_group(w: &mut Writer, jobs: Vec<Job>) {
    let started = std::time::Instant::now();
    let head_before = w.audit_head.clone();
    let begin = match w.dialect {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    };
    if let Err(e) = exec(&mut w.conn, begin).await {
        // Dropping the jobs answers each caller with an error.
        tracing::error!(error = %e, "store: could not begin a transaction");
        return;
    }
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        let saved = w.audit_head.clone();
        if let Err(e) = exec(&mut w.conn, "SAVEPOINT job").await {
            tracing::error!(error = %e, "store: savepoint failed");
        }
        let (ok, reply) = job(w).await;
        let end = if ok {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if !ok {
            w.audit_head = saved;
        }
        if let Err(e) = exec(&mut w.conn, end).await {
            tracing::error!(error = %e, "store: savepoint release failed");
        }
        replies.push(reply);
    }
    match exec(&mut w.conn, "COMMIT").await {
        Ok(()) => {
            w.stats.commits.fetch_add(1, Ordering::Relaxed);
            w.stats
                .jobs
                .fetch_add(replies.len() as u64, Ordering::Relaxed);
            metrics::histogram!("herald_store_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("herald_store_commit_jobs").record(replies.len() as f64);
            replies.into_iter().for_each(|r| r(None));
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "store: commit failed");
            let _ = exec(&mut w.conn, "ROLLBACK").await;
            w.audit_head = head_before;
            replies.into_iter().for_each(|r| r(Some(&msg)));
        }
    }
}

/// Appends one audit entry inside the writer's transaction.
async fn audit(w: &mut Writer, a: &NewAudit) -> Result<()> {
    audit_many(w, std::slice::from_ref(a)).await
}

/// Appends several audit entries with multi-row INSERTs, chaining their hashes in order.
async fn audit_many(w: &mut Writer, entries: &[NewAudit]) -> Result<()> {
    let mut rows = Vec::with_capacity(entries.len());
    let (mut seq, mut prev) = w.audit_head.clone();
    for a in entries {
        seq += 1;
        let at = rfc3339(a.at);
        let detail = a.detail.to_string();
        let hash = entry_hash(&prev, seq, &at, &a.actor, &a.action, &a.resource, &a.detail);
        rows.push((
            seq,
            at,
            a,
            detail,
            std::mem::replace(&mut prev, hash.clone()),
            hash,
        ));
    }
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::query(AssertSqlSafe(values_sql(
            "INSERT INTO audit_log (seq, at, actor, action, resource, detail, prev_hash, hash)",
            chunk.len(),
            8,
        )));
        for (seq, at, a, detail, prev_hash, hash) in chunk {
            q = q
                .bind(*seq)
                .bind(at)
                .bind(&a.actor)
                .bind(&a.action)
                .bind(&a.resource)
                .bind(detail)
                .bind(prev_hash)
                .bind(hash);
        }
        q.execute(&mut w.conn).await?;
    }
    w.audit_head = (seq, prev);
    Ok(())
}

fn new_audit(at: i64, actor: &str, action: &str, resource: &str, detail: Value) -> NewAudit {
    NewAudit {
        at,
        actor: actor.to_string(),
        action: action.to_string(),
        resource: resource.to_string(),
        detail,
    }
}

const DELIVERY_COLS: &str = "d.id, d.message_id, d.destination, d.status, d.attempt_count, d.budget_base, d.next_attempt_at, d.last_status_code, d.last_error, d.fallback_of, d.dead_at, d.created_at, d.updated_at";

fn delivery_from_row(r: &AnyRow) -> Result<DeliveryRecord> {
    let status: String = r.try_get("status")?;
    Ok(DeliveryRecord {
        id: r.try_get("id")?,
        message_id: r.try_get("message_id")?,
        destination: r.try_get("destination")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status {status:?}")))?,
        attempt_count: r.try_get::<i64, _>("attempt_count")? as u32,
        budget_base: r.try_get::<i64, _>("budget_base")? as u32,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_status_code: r
            .try_get::<Option<i64>, _>("last_status_code")?
            .map(|c| c as u16),
        last_error: r.try_get("last_error")?,
        fallback_of: r.try_get("fallback_of")?,
        dead_at: r.try_get("dead_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn message_from_row(r: &AnyRow, prefix: &str) -> Result<MessageRecord> {
    let col = |c: &str| format!("{prefix}{c}");
    Ok(MessageRecord {
        id: r.try_get(col("id").as_str())?,
        event_type: r.try_get(col("event_type").as_str())?,
        idempotency_key: r.try_get(col("idempotency_key").as_str())?,
        body: r.try_get(col("body").as_str())?,
        created_at: r.try_get(col("created_at").as_str())?,
    })
}

fn destination_from_row(r: &AnyRow) -> Result<DestinationRow> {
    Ok(DestinationRow {
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        sealed_spec: r.try_get("spec")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        disabled_reason: r.try_get("disabled_reason")?,
        paused_until: r.try_get("paused_until")?,
        breaker: r.try_get("breaker")?,
        failing_since: r.try_get("failing_since")?,
        last_success_at: r.try_get("last_success_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn token_from_row(r: &AnyRow) -> Result<TokenRecord> {
    let scopes: String = r.try_get("scopes")?;
    Ok(TokenRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        hash: r.try_get("hash")?,
        scopes: scopes.split_whitespace().map(str::to_string).collect(),
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// `head VALUES ($1, …), (…)` for `rows` rows of `cols` columns. Numbered placeholders are
/// read by both SQLite and Postgres (sqlx's query builder for `Any` writes `?`, which
/// Postgres does not accept).
fn values_sql(head: &str, rows: usize, cols: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(head.len() + 10 + rows * cols * 6);
    s.push_str(head);
    s.push_str(" VALUES ");
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            let _ = write!(s, "{}${}", if c == 0 { "" } else { ", " }, r * cols + c + 1);
        }
        s.push(')');
    }
    s
}

/// Rows per multi-row INSERT (SQLite allows 32 766 bound values per statement).
const ROWS_PER_INSERT: usize = 200;

/// Accepts a batch: idempotency keys resolved one by one (a repeat inside the batch sees
/// the earlier message), then every new row written with a few multi-row INSERTs — the
/// per-statement cost, not the bytes, is what a write costs here.
async fn accept_batch(w: &mut Writer, batch: &[NewMessage]) -> Result<Vec<AcceptOutcome>> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut new: Vec<&NewMessage> = Vec::with_capacity(batch.len());
    let mut keys_here: HashMap<&str, (&str, &str)> = HashMap::new();
    for m in batch {
        if let Some(idem) = &m.idempotency {
            if let Some((hash, response)) = keys_here.get(idem.key.as_str()) {
                outcomes.push(replay_or_conflict(hash, &idem.request_hash, response));
                continue;
            }
            let existing = sqlx::query(
                "SELECT request_hash, response, expires_at FROM idempotency_keys WHERE key = $1",
            )
            .bind(&idem.key)
            .fetch_optional(&mut w.conn)
            .await?;
            if let Some(row) = existing {
                let expires_at: i64 = row.try_get("expires_at")?;
                if expires_at > m.created_at {
                    let hash: String = row.try_get("request_hash")?;
                    let response: String = row.try_get("response")?;
                    outcomes.push(replay_or_conflict(&hash, &idem.request_hash, &response));
                    continue;
                }
                sqlx::query("DELETE FROM idempotency_keys WHERE key = $1")
                    .bind(&idem.key)
                    .execute(&mut w.conn)
                    .await?;
            }
            keys_here.insert(&idem.key, (&idem.request_hash, &idem.response));
        }
        new.push(m);
        outcomes.push(AcceptOutcome::Accepted);
    }
    for chunk in new.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::query(AssertSqlSafe(values_sql(
            "INSERT INTO messages (id, event_type, idempotency_key, body, created_at)",
            chunk.len(),
            5,
        )));
        for m in chunk {
            q = q
                .bind(&m.id)
                .bind(&m.event_type)
                .bind(m.idempotency.as_ref().map(|i| &i.key))
                .bind(&m.body)
                .bind(m.created_at);
        }
        q.execute(&mut w.conn).await?;
    }
    let deliveries: Vec<(&NewMessage, &NewDelivery)> = new
        .iter()
        .flat_map(|m| m.deliveries.iter().map(move |d| (*m, d)))
        .collect();
    for chunk in deliveries.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::query(AssertSqlSafe(values_sql(
            "INSERT INTO deliveries (id, message_id, destination, status, next_attempt_at, created_at, updated_at)",
            chunk.len(),
            7,
        )));
        for (m, d) in chunk {
            q = q
                .bind(&d.id)
                .bind(&m.id)
                .bind(&d.destination)
                .bind("pending")
                .bind(m.created_at)
                .bind(m.created_at)
                .bind(m.created_at);
        }
        q.execute(&mut w.conn).await?;
    }
    let keyed: Vec<(&NewMessage, &IdempotencyRecord)> = new
        .iter()
        .filter_map(|m| m.idempotency.as_ref().map(|i| (*m, i)))
        .collect();
    for chunk in keyed.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::query(AssertSqlSafe(values_sql(
            "INSERT INTO idempotency_keys (key, request_hash, message_id, response, created_at, expires_at)",
            chunk.len(),
            6,
        )));
        for (m, i) in chunk {
            q = q
                .bind(&i.key)
                .bind(&i.request_hash)
                .bind(&m.id)
                .bind(&i.response)
                .bind(m.created_at)
                .bind(i.expires_at);
        }
        q.execute(&mut w.conn).await?;
    }
    let entries: Vec<NewAudit> = new
        .iter()
        .map(|m| {
            let destinations: Vec<&str> = m
                .deliveries
                .iter()
                .map(|d| d.destination.as_str())
                .collect();
            let detail = json!({"event_type": m.event_type, "destinations": destinations});
            new_audit(m.created_at, &m.actor, "message.accepted", &m.id, detail)
        })
        .collect();
    audit_many(w, &entries).await?;
    Ok(outcomes)
}

fn replay_or_conflict(stored_hash: &str, request_hash: &str, response: &str) -> AcceptOutcome {
    if stored_hash == request_hash {
        AcceptOutcome::Replayed {
            response: response.to_string(),
        }
    } else {
        AcceptOutcome::KeyConflict
    }
}

async fn claim_in(w: &mut Writer, req: &ClaimRequest) -> Result<ClaimResult> {
    let mut result = ClaimResult::default();
    result.recovered = sqlx::query(
        "UPDATE deliveries SET status = 'pending', lease_until = NULL, lease_token = NULL, next_attempt_at = $1, updated_at = $1 WHERE status = 'in_flight' AND lease_until <= $1",
    )
    .bind(req.now)
    .execute(&mut w.conn)
    .await?
    .rows_affected();
    let mut any = false;
    for q in &req.queues {
        let (claimed, next) = if q.ordered {
            claim_head(w, req, q).await?
        } else {
            claim_due(w, req, q).await?
        };
        any |= claimed;
        if let Some(n) = next.filter(|n| *n > req.now) {
            result.next_due_at = Some(result.next_due_at.map_or(n, |c: i64| c.min(n)));
        }
    }
    if any {
        let sql = format!(
            "SELECT {DELIVERY_COLS}, m.id AS m_id, m.event_type AS m_event_type, m.idempotency_key AS m_idempotency_key, m.body AS m_body, m.created_at AS m_created_at
             FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.lease_token = $1 AND d.status = 'in_flight' ORDER BY d.next_attempt_at"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&req.lease_token)
            .fetch_all(&mut w.conn)
            .await?;
        for r in &rows {
            result.claimed.push(ClaimedDelivery {
                delivery: delivery_from_row(r)?,
                message: message_from_row(r, "m_")?,
                lease_token: req.lease_token.clone(),
            });
        }
    }
    Ok(result)
}

/// Leases up to `capacity` due deliveries of a queue; returns whether any were leased and
/// the queue's earliest `next_attempt_at`.
async fn claim_due(
    w: &mut Writer,
    req: &ClaimRequest,
    q: &QueueClaim,
) -> Result<(bool, Option<i64>)> {
    let mut claimed = false;
    if q.capacity > 0 {
        let n = sqlx::query(
            "UPDATE deliveries SET status = 'in_flight', lease_until = $1, lease_token = $2, updated_at = $3
             WHERE id IN (SELECT id FROM deliveries WHERE destination = $4 AND status = 'pending' AND next_attempt_at <= $3
                          ORDER BY next_attempt_at LIMIT $5)",
        )
        .bind(req.now + q.lease_ms)
        .bind(&req.lease_token)
        .bind(req.now)
        .bind(&q.destination)
        .bind(q.capacity as i64)
        .execute(&mut w.conn)
        .await?
        .rows_affected();
        claimed = n > 0;
    }
    let next: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(next_attempt_at) FROM deliveries WHERE destination = $1 AND status = 'pending'",
    )
    .bind(&q.destination)
    .fetch_one(&mut w.conn)
    .await?;
    Ok((claimed, next))
}

/// FIFO: only the oldest unfinished delivery of the queue may be leased, and only when it
/// is pending (not already in flight) and due.
async fn claim_head(
    w: &mut Writer,
    req: &ClaimRequest,
    q: &QueueClaim,
) -> Result<(bool, Option<i64>)> {
    let head = sqlx::query(
        "SELECT id, status, next_attempt_at FROM deliveries WHERE destination = $1 AND status IN ('pending', 'in_flight')
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(&q.destination)
    .fetch_optional(&mut w.conn)
    .await?;
    let Some(head) = head else {
        return Ok((false, None));
    };
    let status: String = head.try_get("status")?;
    let next: Option<i64> = head.try_get("next_attempt_at")?;
    if status != "pending" {
        return Ok((false, None));
    }
    if q.capacity == 0 || next.is_some_and(|n| n > req.now) {
        return Ok((false, next));
    }
    let id: String = head.try_get("id")?;
    sqlx::query("UPDATE deliveries SET status = 'in_flight', lease_until = $1, lease_token = $2, updated_at = $3 WHERE id = $4 AND status = 'pending'")
        .bind(req.now + q.lease_ms)
        .bind(&req.lease_token)
        .bind(req.now)
        .bind(&id)
        .execute(&mut w.conn)
        .await?;
    Ok((true, None))
}

async fn finish_in(w: &mut Writer, f: &FinishAttempt) -> Result<FinishOutcome> {
    let (status, next_at, dead_at) = match &f.next {
        NextState::Delivered => ("delivered", None, None),
        NextState::Retry { at } => ("pending", Some(*at), None),
        NextState::Dead => ("dead", None, Some(f.now)),
        NextState::FailedOver { .. } => ("failed_over", None, None),
    };
    let a = f.attempt.as_ref();
    let row = sqlx::query(
        "UPDATE deliveries SET status = $1, attempt_count = attempt_count + $2, next_attempt_at = $3, lease_until = NULL, lease_token = NULL,
                last_status_code = CASE WHEN $2 = 1 THEN $4 ELSE last_status_code END,
                last_error = CASE WHEN $2 = 1 THEN $5 ELSE last_error END,
                dead_at = $6, updated_at = $7
         WHERE id = $8 AND lease_token = $9 AND status = 'in_flight'
         RETURNING attempt_count, message_id",
    )
    .bind(status)
    .bind(a.is_some() as i64)
    .bind(next_at)
    .bind(a.and_then(|a| a.status_code).map(i64::from))
    .bind(a.and_then(|a| a.error.clone()))
    .bind(dead_at)
    .bind(f.now)
    .bind(&f.delivery_id)
    .bind(&f.lease_token)
    .fetch_optional(&mut w.conn)
    .await?;
    let Some(row) = row else {
        return Ok(FinishOutcome::default());
    };
    let number: i64 = row.try_get("attempt_count")?;
    let message_id: String = row.try_get("message_id")?;
    let mut outcome = FinishOutcome {
        recorded: true,
        disabled: None,
    };
    if let Some(a) = a {
        sqlx::query(
            "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, status_code, error_class, error, response_excerpt, destination)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&f.delivery_id)
        .bind(number)
        .bind(a.started_at)
        .bind(a.duration_ms)
        .bind(a.outcome.as_str())
        .bind(a.status_code.map(i64::from))
        .bind(&a.error_class)
        .bind(&a.error)
        .bind(&a.response_excerpt)
        .bind(&f.destination)
        .execute(&mut w.conn)
        .await?;
    }
    let (action, fallback) = match &f.next {
        NextState::Delivered => ("delivery.delivered", None),
        NextState::Retry { .. } => ("delivery.retry_scheduled", None),
        NextState::Dead => ("delivery.dead", None),
        NextState::FailedOver {
            fallback,
            new_delivery_id,
        } => ("delivery.failed_over", Some((fallback, new_delivery_id))),
    };
    if let Some((fallback, new_id)) = fallback {
        sqlx::query(
            "INSERT INTO deliveries (id, message_id, destination, status, next_attempt_at, fallback_of, created_at, updated_at)
             VALUES ($1, $2, $3, 'pending', $4, $5, $4, $4)",
        )
        .bind(new_id)
        .bind(&message_id)
        .bind(fallback)
        .bind(f.now)
        .bind(&f.delivery_id)
        .execute(&mut w.conn)
        .await?;
    }
    let detail = json!({
        "message_id": message_id,
        "destination": f.destination,
        "attempt": a.map(|_| number),
        "outcome": a.map(|a| a.outcome.as_str()),
        "status_code": a.and_then(|a| a.status_code),
        "error_class": a.and_then(|a| a.error_class.clone()),
        "duration_ms": a.map(|a| a.duration_ms),
        "next_attempt_at": next_at.map(rfc3339),
        "fallback": fallback.map(|(d, id)| json!({"destination": d, "delivery_id": id})),
    });
    audit(
        w,
        &new_audit(f.now, "dispatcher", action, &f.delivery_id, detail),
    )
    .await?;

    if let Some(a) = a {
        let sql = if a.outcome == AttemptOutcome::Delivered {
            "UPDATE destinations SET failing_since = NULL, last_success_at = $1 WHERE name = $2"
        } else {
            "UPDATE destinations SET failing_since = COALESCE(failing_since, $1) WHERE name = $2"
        };
        sqlx::query(sql)
            .bind(f.now)
            .bind(&f.destination)
            .execute(&mut w.conn)
            .await?;
    }
    if let Some(b) = &f.breaker {
        sqlx::query("UPDATE destinations SET breaker = $1 WHERE name = $2")
            .bind(&b.state)
            .bind(&f.destination)
            .execute(&mut w.conn)
            .await?;
        if let Some(action) = &b.transition {
            let detail: Value = serde_json::from_str(&b.state).unwrap_or(Value::Null);
            audit(
                w,
                &new_audit(f.now, "dispatcher", action, &f.destination, detail),
            )
            .await?;
        }
    }
    if let Some(until) = f.pause_destination_until {
        sqlx::query("UPDATE destinations SET paused_until = CASE WHEN COALESCE(paused_until, 0) > $1 THEN paused_until ELSE $1 END WHERE name = $2")
            .bind(until)
            .bind(&f.destination)
            .execute(&mut w.conn)
            .await?;
        let detail = json!({"until": rfc3339(until), "reason": "retry-after"});
        audit(
            w,
            &new_audit(
                f.now,
                "dispatcher",
                "destination.paused",
                &f.destination,
                detail,
            ),
        )
        .await?;
    }
    let mut disable = f.disable_destination.clone();
    if disable.is_none()
        && let Some(cutoff) = f.disable_if_failing_since
        && a.is_some_and(|a| a.outcome != AttemptOutcome::Delivered)
    {
        let since: Option<i64> = sqlx::query_scalar(
            "SELECT failing_since FROM destinations WHERE name = $1 AND failing_since <= $2",
        )
        .bind(&f.destination)
        .bind(cutoff)
        .fetch_optional(&mut w.conn)
        .await?
        .flatten();
        disable = since.map(|s| format!("no successful delivery since {}", rfc3339(s)));
    }
    if let Some(reason) = disable {
        let changed = sqlx::query("UPDATE destinations SET enabled = 0, disabled_reason = $1, updated_at = $2 WHERE name = $3 AND enabled = 1")
            .bind(&reason)
            .bind(f.now)
            .bind(&f.destination)
            .execute(&mut w.conn)
            .await?
            .rows_affected();
        if changed > 0 {
            audit(
                w,
                &new_audit(
                    f.now,
                    "dispatcher",
                    "destination.disabled",
                    &f.destination,
                    json!({"reason": reason}),
                ),
            )
            .await?;
            outcome.disabled = Some(reason);
        }
    }
    Ok(outcome)
}

fn audit_from_row(r: &AnyRow) -> Result<AuditEntry> {
    let detail: String = r.try_get("detail")?;
    Ok(AuditEntry {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        resource: r.try_get("resource")?,
        detail: serde_json::from_str(&detail)
            .map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

async fn dlq_change(
    w: &mut Writer,
    queue: &str,
    id: &str,
    actor: &str,
    now: i64,
    replay: bool,
) -> Result<DlqChange> {
    let sql = if replay {
        "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, budget_base = attempt_count, dead_at = NULL, updated_at = $1
         WHERE id = $2 AND destination = $3 AND status = 'dead'"
    } else {
        "UPDATE deliveries SET status = 'discarded', updated_at = $1 WHERE id = $2 AND destination = $3 AND status = 'dead'"
    };
    let n = sqlx::query(sql)
        .bind(now)
        .bind(id)
        .bind(queue)
        .execute(&mut w.conn)
        .await?
        .rows_affected();
    if n == 0 {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM deliveries WHERE id = $1 AND destination = $2")
                .bind(id)
                .bind(queue)
                .fetch_optional(&mut w.conn)
                .await?;
        return Ok(if exists.is_some() {
            DlqChange::NotDead
        } else {
            DlqChange::NotFound
        });
    }
    let action = if replay {
        "dlq.replayed"
    } else {
        "dlq.discarded"
    };
    audit(
        w,
        &new_audit(now, actor, action, id, json!({"queue": queue})),
    )
    .await?;
    Ok(DlqChange::Done)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        if self.jobs.is_closed() {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    async fn accept_messages(&self, batch: Vec<NewMessage>) -> Result<Vec<AcceptOutcome>> {
        self.write(move |w| Box::pin(async move { accept_batch(w, &batch).await }))
            .await
    }

    async fn get_message(&self, id: &str) -> Result<Option<MessageRecord>> {
        let row = sqlx::query(
            "SELECT id, event_type, idempotency_key, body, created_at FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        row.map(|r| message_from_row(&r, "")).transpose()
    }

    async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRecord>> {
        let sql = format!("SELECT {DELIVERY_COLS} FROM deliveries d WHERE d.id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|r| delivery_from_row(&r)).transpose()
    }

    async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>> {
        // Only fixed fragments are spliced in; every value is bound.
        let mut sql = format!("SELECT {DELIVERY_COLS} FROM deliveries d WHERE 1 = 1");
        let mut n = 0;
        if q.destination.is_some() {
            n += 1;
            sql.push_str(&format!(" AND d.destination = ${n}"));
        }
        if q.status.is_some() {
            n += 1;
            sql.push_str(&format!(" AND d.status = ${n}"));
        }
        if q.message_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND d.message_id = ${n}"));
        }
        if q.idempotency_key.is_some() {
            n += 1;
            sql.push_str(&format!(
                " AND d.message_id IN (SELECT id FROM messages WHERE idempotency_key = ${n})"
            ));
        }
        if q.before.is_some() {
            n += 1;
            sql.push_str(&format!(" AND d.id < ${n}"));
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY d.id DESC LIMIT ${n}"));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(d) = &q.destination {
            query = query.bind(d);
        }
        if let Some(s) = q.status {
            query = query.bind(s.as_str());
        }
        if let Some(m) = &q.message_id {
            query = query.bind(m);
        }
        if let Some(k) = &q.idempotency_key {
            query = query.bind(k);
        }
        if let Some(b) = &q.before {
            query = query.bind(b);
        }
        let rows = query.bind(q.limit as i64).fetch_all(&self.reads).await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn list_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT number, started_at, duration_ms, outcome, status_code, error_class, error, response_excerpt FROM attempts WHERE delivery_id = $1 ORDER BY number",
        )
        .bind(delivery_id)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| {
                let outcome: String = r.try_get("outcome")?;
                Ok(AttemptRecord {
                    number: r.try_get::<i64, _>("number")? as u32,
                    started_at: r.try_get("started_at")?,
                    duration_ms: r.try_get("duration_ms")?,
                    outcome: AttemptOutcome::parse(&outcome).ok_or_else(|| {
                        StoreError::Corrupt(format!("attempt outcome {outcome:?}"))
                    })?,
                    status_code: r
                        .try_get::<Option<i64>, _>("status_code")?
                        .map(|c| c as u16),
                    error_class: r.try_get("error_class")?,
                    error: r.try_get("error")?,
                    response_excerpt: r.try_get("response_excerpt")?,
                })
            })
            .collect()
    }

    async fn queue_counts(&self, destination: &str) -> Result<QueueCounts> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM deliveries WHERE destination = $1 AND status IN ('pending', 'in_flight', 'dead') GROUP BY status",
        )
        .bind(destination)
        .fetch_all(&self.reads)
        .await?;
        let mut c = QueueCounts::default();
        for r in rows {
            let n = r.try_get::<i64, _>("n")? as u64;
            match r.try_get::<String, _>("status")?.as_str() {
                "pending" => c.pending = n,
                "in_flight" => c.in_flight = n,
                _ => c.dead = n,
            }
        }
        Ok(c)
    }

    async fn put_destination(&self, row: DestinationRow, actor: &str) -> Result<bool> {
        let actor = actor.to_string();
        self.write(move |w| {
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
                let action = if existed.is_some() { "destination.updated" } else { "destination.created" };
                audit(w, &new_audit(row.updated_at, &actor, action, &row.name, json!({"kind": row.kind, "enabled": row.enabled}))).await?;
                Ok(existed.is_none())
            })
        })
        .await
    }

    async fn get_destination(&self, name: &str) -> Result<Option<DestinationRow>> {
        let row = sqlx::query("SELECT * FROM destinations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|r| destination_from_row(&r)).transpose()
    }

    async fn list_destinations(&self) -> Result<Vec<DestinationRow>> {
        let rows = sqlx::query("SELECT * FROM destinations ORDER BY name")
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(destination_from_row).collect()
    }

    async fn delete_destination(&self, name: &str, actor: &str, now: i64) -> Result<bool> {
        let (name, actor) = (name.to_string(), actor.to_string());
        self.write(move |w| {
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
                audit(w, &new_audit(now, &actor, "destination.deleted", &name, json!({"discarded_deliveries": discarded}))).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn enable_destination(&self, name: &str, actor: &str, now: i64) -> Result<bool> {
        let (name, actor) = (name.to_string(), actor.to_string());
        self.write(move |w| {
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
                    audit(w, &new_audit(now, &actor, "destination.enabled", &name, json!({}))).await?;
                }
                Ok(n > 0)
            })
        })
        .await
    }

    async fn record_breaker(&self, name: &str, update: BreakerUpdate, now: i64) -> Result<()> {
        let name = name.to_string();
        self.write(move |w| {
            Box::pin(async move {
                sqlx::query("UPDATE destinations SET breaker = $1 WHERE name = $2")
                    .bind(&update.state)
                    .bind(&name)
                    .execute(&mut w.conn)
                    .await?;
                if let Some(action) = &update.transition {
                    let detail: Value = serde_json::from_str(&update.state).unwrap_or(Value::Null);
                    audit(w, &new_audit(now, "dispatcher", action, &name, detail)).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn attempt_stats(&self, destination: &str, since: i64) -> Result<AttemptStats> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, CAST(COALESCE(SUM(CASE WHEN outcome = 'delivered' THEN 1 ELSE 0 END), 0) AS BIGINT) AS delivered FROM attempts WHERE destination = $1 AND started_at >= $2",
        )
        .bind(destination)
        .bind(since)
        .fetch_one(&self.reads)
        .await?;
        Ok(AttemptStats {
            total: row.try_get::<i64, _>("total")? as u64,
            delivered: row.try_get::<i64, _>("delivered")? as u64,
        })
    }

    async fn last_failure(&self, destination: &str, since: i64) -> Result<Option<LastFailure>> {
        let row = sqlx::query(
            "SELECT started_at, status_code, error FROM attempts
             WHERE destination = $1 AND started_at >= $2 AND outcome <> 'delivered'
             ORDER BY started_at DESC LIMIT 1",
        )
        .bind(destination)
        .bind(since)
        .fetch_optional(&self.reads)
        .await?;
        row.map(|r| {
            Ok(LastFailure {
                at: r.try_get("started_at")?,
                status_code: r
                    .try_get::<Option<i64>, _>("status_code")?
                    .map(|c| c as u16),
                error: r.try_get("error")?,
            })
        })
        .transpose()
    }

    async fn count_messages_since(&self, since: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE created_at >= $1")
            .bind(since)
            .fetch_one(&self.reads)
            .await?;
        Ok(n as u64)
    }

    async fn claim(&self, req: ClaimRequest) -> Result<ClaimResult> {
        self.write(move |w| Box::pin(async move { claim_in(w, &req).await }))
            .await
    }

    async fn finish_attempt(&self, f: FinishAttempt) -> Result<FinishOutcome> {
        self.write(move |w| Box::pin(async move { finish_in(w, &f).await }))
            .await
    }

    async fn finish_attempts(&self, batch: Vec<FinishAttempt>) -> Result<Vec<FinishOutcome>> {
        self.write(move |w| {
            Box::pin(async move {
                let mut out = Vec::with_capacity(batch.len());
                for f in &batch {
                    out.push(finish_in(w, f).await?);
                }
                Ok(out)
            })
        })
        .await
    }

    async fn release(&self, leases: Vec<(String, String)>, now: i64) -> Result<()> {
        self.write(move |w| {
            Box::pin(async move {
                for (id, token) in &leases {
                    sqlx::query(
                        "UPDATE deliveries SET status = 'pending', lease_until = NULL, lease_token = NULL, next_attempt_at = $1, updated_at = $1
                         WHERE id = $2 AND lease_token = $3 AND status = 'in_flight'",
                    )
                    .bind(now)
                    .bind(id)
                    .bind(token)
                    .execute(&mut w.conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn list_dead(&self, q: &DlqQuery) -> Result<Vec<DeadItem>> {
        let mut sql = String::from(
            "SELECT d.id, d.destination, d.message_id, m.event_type, d.attempt_count, d.last_error, d.last_status_code, d.dead_at
             FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.status = 'dead'",
        );
        let mut n = 0;
        if q.queue.is_some() {
            n += 1;
            sql.push_str(&format!(" AND d.destination = ${n}"));
        }
        if q.before.is_some() {
            n += 1;
            sql.push_str(&format!(" AND d.id < ${n}"));
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY d.id DESC LIMIT ${n}"));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(queue) = &q.queue {
            query = query.bind(queue);
        }
        if let Some(b) = &q.before {
            query = query.bind(b);
        }
        let rows = query.bind(q.limit as i64).fetch_all(&self.reads).await?;
        rows.iter()
            .map(|r| {
                Ok(DeadItem {
                    id: r.try_get("id")?,
                    queue: r.try_get("destination")?,
                    message_id: r.try_get("message_id")?,
                    event_type: r.try_get("event_type")?,
                    attempt_count: r.try_get::<i64, _>("attempt_count")? as u32,
                    last_error: r.try_get("last_error")?,
                    last_status_code: r
                        .try_get::<Option<i64>, _>("last_status_code")?
                        .map(|c| c as u16),
                    dead_at: r.try_get::<Option<i64>, _>("dead_at")?.unwrap_or(0),
                })
            })
            .collect()
    }

    async fn replay_dead(&self, queue: &str, id: &str, actor: &str, now: i64) -> Result<DlqChange> {
        let (queue, id, actor) = (queue.to_string(), id.to_string(), actor.to_string());
        self.write(move |w| {
            Box::pin(async move { dlq_change(w, &queue, &id, &actor, now, true).await })
        })
        .await
    }

    async fn replay_all_dead(
        &self,
        queue: &str,
        filter: &ReplayFilter,
        actor: &str,
        now: i64,
    ) -> Result<u64> {
        let (queue, filter, actor) = (queue.to_string(), filter.clone(), actor.to_string());
        self.write(move |w| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, budget_base = attempt_count, dead_at = NULL, updated_at = $1
                     WHERE destination = $2 AND status = 'dead'
                       AND ($3 IS NULL OR message_id IN (SELECT id FROM messages WHERE event_type = $3))
                       AND ($4 IS NULL OR dead_at >= $4)",
                )
                .bind(now)
                .bind(&queue)
                .bind(&filter.event_type)
                .bind(filter.since)
                .execute(&mut w.conn)
                .await?
                .rows_affected();
                let detail = json!({"replayed": n, "event_type": filter.event_type, "since": filter.since.map(rfc3339)});
                audit(w, &new_audit(now, &actor, "dlq.replayed_all", &queue, detail)).await?;
                Ok(n)
            })
        })
        .await
    }

    async fn discard_all_dead(&self, queue: &str, actor: &str, now: i64) -> Result<u64> {
        let (queue, actor) = (queue.to_string(), actor.to_string());
        self.write(move |w| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE deliveries SET status = 'discarded', updated_at = $1 WHERE destination = $2 AND status = 'dead'",
                )
                .bind(now)
                .bind(&queue)
                .execute(&mut w.conn)
                .await?
                .rows_affected();
                let detail = json!({"discarded": n});
                audit(w, &new_audit(now, &actor, "dlq.discarded_all", &queue, detail)).await?;
                Ok(n)
            })
        })
        .await
    }

    async fn discard_dead(
        &self,
        queue: &str,
        id: &str,
        actor: &str,
        now: i64,
    ) -> Result<DlqChange> {
        let (queue, id, actor) = (queue.to_string(), id.to_string(), actor.to_string());
        self.write(move |w| {
            Box::pin(async move { dlq_change(w, &queue, &id, &actor, now, false).await })
        })
        .await
    }

    async fn create_token(&self, t: TokenRecord, actor: &str) -> Result<()> {
        let actor = actor.to_string();
        self.write(move |w| {
            Box::pin(async move {
                sqlx::query("INSERT INTO tokens (id, name, hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&t.id)
                    .bind(&t.name)
                    .bind(&t.hash)
                    .bind(t.scopes.join(" "))
                    .bind(t.created_at)
                    .execute(&mut w.conn)
                    .await?;
                audit(w, &new_audit(t.created_at, &actor, "token.created", &t.id, json!({"name": t.name, "scopes": t.scopes}))).await
            })
        })
        .await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|r| token_from_row(&r)).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_at")
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: &str, actor: &str, now: i64) -> Result<bool> {
        let (id, actor) = (id.to_string(), actor.to_string());
        self.write(move |w| {
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
                    audit(w, &new_audit(now, &actor, "token.revoked", &id, json!({}))).await?;
                }
                Ok(n > 0)
            })
        })
        .await
    }

    async fn touch_tokens(&self, used: Vec<(String, i64)>) -> Result<()> {
        self.write(move |w| {
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

    async fn append_audit(&self, entries: Vec<NewAudit>) -> Result<()> {
        self.write(move |w| {
            Box::pin(async move {
                for e in &entries {
                    audit(w, e).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn append_checkpoint(&self, sign: CheckpointFn, now: i64) -> Result<Option<i64>> {
        self.write(move |w| {
            Box::pin(async move {
                let (seq, hash) = w.audit_head.clone();
                if seq == 0 {
                    return Ok(None);
                }
                let last: String =
                    sqlx::query_scalar("SELECT action FROM audit_log WHERE seq = $1")
                        .bind(seq)
                        .fetch_one(&mut w.conn)
                        .await?;
                if last == CHECKPOINT_ACTION {
                    return Ok(None);
                }
                let detail = sign(seq, &hash);
                audit(
                    w,
                    &new_audit(now, "system", CHECKPOINT_ACTION, "audit", detail),
                )
                .await?;
                Ok(Some(seq + 1))
            })
        })
        .await
    }

    async fn reseal(
        &self,
        destinations: Vec<(String, String)>,
        meta: Vec<(String, String)>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let actor = actor.to_string();
        self.write(move |w| {
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

    async fn list_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn list_recent_audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT $2")
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit as i64)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.reads)
            .await?)
    }

    async fn init_meta(&self, key: &str, value: &str) -> Result<String> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |w| {
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

    async fn prune(&self, now: i64, older_than: i64) -> Result<u64> {
        self.write(move |w| {
            Box::pin(async move {
                let keys = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1").bind(now).execute(&mut w.conn).await?.rows_affected();
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

    async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.jobs.send(Msg::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
        self.reads.close().await;
    }
}
