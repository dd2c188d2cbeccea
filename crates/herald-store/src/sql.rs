//! The SQL store: embedded SQLite for one node, Postgres for a cluster of nodes.
//!
//! * SQLite: WAL journal, `synchronous=FULL` by default: a commit survives power loss.
//!   Postgres: its own durable commit; several nodes share the database. Deliveries are
//!   claimed with `FOR UPDATE SKIP LOCKED` under leases; rate-limit buckets, breakers and
//!   pauses live in the destination rows and are read or spent in the claim and attempt
//!   transactions; the audit chain is appended under a transaction-scoped advisory lock;
//!   `NOTIFY` tells the other nodes about new work and changed configuration.
//! * One writer task (per node, on a thread of its own) owns the only write connection.
//!   Callers send it jobs; it takes every job that is waiting, runs each inside its own
//!   savepoint of one transaction, commits once, and only then answers each caller (group
//!   commit). One fsync serves many requests.
//! * Reads go to a small pool of read-only connections and never wait for the writer.
//! * The writer also owns the head of the audit chain, so appending an entry costs an
//!   insert inside the caller's transaction, never a commit of its own.

use crate::health::{Fault, Health, HealthState};
use crate::model::*;
use crate::{CheckpointFn, Result, Store, StoreError};
use async_trait::async_trait;
use herald_core::audit::{AuditEntry, CHECKPOINT_ACTION, GENESIS, entry_hash};
use herald_core::breaker::{Breaker, Permit};
use herald_core::clock::rfc3339;
use herald_core::delivery::{AttemptOutcome, DeliveryStatus};
use herald_core::error_report::{AlertReason, GroupState, GroupStatus, observe};
use herald_core::rate_limit::{RateLimit, TokenBucket};
use serde_json::{Value, json};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection, Row};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_resilience.sql")),
    (3, include_str!("../migrations/0003_cluster.sql")),
    (5, include_str!("../migrations/0005_error_groups.sql")),
    (6, include_str!("../migrations/0006_dashboard.sql")),
    (8, include_str!("../migrations/0008_ui_sessions.sql")),
];
/// Which SQL database the store talks to; the schema and almost all SQL are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Connection settings of the writer: WAL, durability, waits, foreign keys, and an 8 MB page
/// cache per connection (the OS page cache holds the rest of the file; 16 MB each kept
/// Herald at the edge of 100 MB resident with a million deliveries pending).
const PRAGMAS_FULL: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -8000;";
const PRAGMAS_NORMAL: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -8000;";
const READ_PRAGMAS: &str =
    "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -8000;";
/// Most jobs one commit carries.
const MAX_GROUP: usize = 512;
/// How long one connection attempt of the writer may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Reconnect and probe backoff: from the first to the longest wait.
const BACKOFF_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a read waits for a pooled connection before the store is called unavailable.
const READ_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// A readiness check younger than this trusts the last successful commit; older, it makes one.
const FRESH_COMMIT_MS: i64 = 2_000;
/// A SQLite store with less free space than this is not ready (its next commit may fail).
const MIN_FREE_BYTES: u64 = 1 << 20;

/// Tuning for [`SqlStore::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `FULL` (default) survives power loss; `NORMAL` only process crashes.
    pub synchronous_full: bool,
    pub read_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            synchronous_full: true,
            read_connections: 4,
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Reply = Box<dyn FnOnce(Option<&GroupFailure>) + Send>;
type Job = Box<dyn for<'c> FnOnce(&'c mut Writer) -> BoxFuture<'c, (JobStatus, Reply)> + Send>;

/// How a job's own work went, before the commit.
enum JobStatus {
    Done,
    /// Its own error (rolled back to its savepoint; the group goes on).
    Failed,
    /// A storage fault: the transaction cannot be trusted, so the whole group stops.
    Fault(Fault, String),
}

/// Why a group did not commit, as each of its callers is told.
#[derive(Debug, Clone)]
struct GroupFailure {
    fault: Option<Fault>,
    /// The connection broke during `COMMIT` itself: the work may be durable.
    outcome_unknown: bool,
    message: String,
}

impl GroupFailure {
    fn error(&self) -> StoreError {
        let msg = self.message.clone();
        match self.fault {
            _ if self.outcome_unknown => StoreError::CommitUnknown(msg),
            Some(fault) => StoreError::from_fault(fault, msg),
            // A commit refused for another reason was rolled back: safe to retry.
            None => StoreError::Unavailable(format!("the commit failed: {msg}")),
        }
    }
}

enum Msg {
    Job(Job),
    /// Accepts are not closures: those waiting together are written as one batch.
    Accept(AcceptJob),
    /// Commit what is queued, close the connection, then acknowledge.
    Close(oneshot::Sender<()>),
}

/// Messages to accept, and where their outcomes go once committed.
struct AcceptJob {
    batch: Arc<Vec<NewMessage>>,
    reply: oneshot::Sender<Result<Vec<AcceptOutcome>>>,
}

/// State owned by the writer task.
pub struct Writer {
    conn: AnyConnection,
    dialect: Dialect,
    url: String,
    opts: StoreOptions,
    stats: Arc<WriterStats>,
    health: Arc<Health>,
    /// The connection met a fault that makes it unusable: reopen before the next use.
    broken: bool,
    /// No reconnect or probe before this instant; the wait doubles up to [`BACKOFF_MAX`].
    next_try: tokio::time::Instant,
    backoff: std::time::Duration,
    /// `(seq, hash)` of the last audit entry (on Postgres re-read under a lock at each
    /// commit, since other nodes append too).
    audit_head: (i64, String),
    /// Audit entries of this group's jobs, chained and written just before the commit.
    staged: Vec<NewAudit>,
    /// Checkpoints asked for in this group: each attests the head after the staged entries.
    checkpoints: Vec<Arc<std::sync::Mutex<Option<i64>>>>,
    checkpoint_signers: Vec<(CheckpointFn, i64)>,
    /// Set by jobs that created due work other nodes should hear about (Postgres NOTIFY).
    new_work: bool,
    /// Set by jobs that changed a destination or revoked a token (Postgres NOTIFY).
    config_changed: bool,
}

/// Key of the Postgres advisory lock that serialises appends to the audit chain.
const AUDIT_LOCK: i64 = 0x6865_7261_6c64; // "herald"
/// Postgres channel on which nodes announce new due deliveries.
pub const WORK_CHANNEL: &str = "herald_work";
/// Postgres channel on which nodes announce changed destinations and revoked tokens.
pub const CONFIG_CHANNEL: &str = "herald_config";

/// The implementation of [`Store`] on SQLite ([`SqlStore::open`]) or Postgres
/// ([`SqlStore::open_postgres`]).
pub struct SqlStore {
    jobs: mpsc::Sender<Msg>,
    reads: AnyPool,
    stats: Arc<WriterStats>,
    health: Arc<Health>,
    /// SQLite: the directory of the database file, whose free space readiness checks.
    db_dir: Option<std::path::PathBuf>,
    dialect: Dialect,
    /// Postgres only: woken by other nodes' `NOTIFY`.
    remote: Option<crate::RemoteSignals>,
    listener: Option<tokio::task::AbortHandle>,
}

/// Counters of the writer, to see group commit at work.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Jobs (store calls) those commits carried.
    pub jobs: AtomicU64,
}

impl SqlStore {
    /// Opens (creating if needed) the database file, applies migrations and starts the
    /// writer. Leases left by a previous process are released: SQLite serves one node.
    pub async fn open(path: &Path, opts: StoreOptions) -> Result<Self> {
        let url = |mode: &str| format!("sqlite://{}?mode={mode}", path.display());
        Self::open_any(Dialect::Sqlite, &url("rwc"), &url("ro"), opts).await
    }

    /// Opens a Postgres database (`postgres://…`) with the same schema and SQL, shared with
    /// the other nodes of a cluster, and starts listening for their `NOTIFY`s.
    pub async fn open_postgres(url: &str, opts: StoreOptions) -> Result<Self> {
        let mut store = Self::open_any(Dialect::Postgres, url, url, opts).await?;
        let signals = crate::RemoteSignals::default();
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen_all([WORK_CHANNEL, CONFIG_CHANNEL]).await?;
        let wake = signals.clone();
        let task = tokio::spawn(async move {
            let mut backoff = BACKOFF_FIRST;
            let mut lost = false;
            loop {
                // `try_recv` says `None` when the connection broke; the next call reconnects
                // and listens again. Polling covers the gap, a re-read what was missed.
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        if lost {
                            lost = false;
                            backoff = BACKOFF_FIRST;
                            metrics::counter!("herald_store_reconnects_total", "connection" => "listen").increment(1);
                            tracing::info!("store: postgres LISTEN connection restored");
                        }
                        if n.channel() == CONFIG_CHANNEL {
                            wake.config.notify_one()
                        } else {
                            wake.work.notify_one()
                        }
                    }
                    Ok(None) => {
                        if !lost {
                            tracing::warn!("store: postgres LISTEN connection lost; reconnecting");
                        }
                        lost = true;
                        wake.work.notify_one();
                        wake.config.notify_one();
                    }
                    Err(e) => {
                        if !lost {
                            tracing::warn!(error = %e, "store: postgres LISTEN connection lost; reconnecting with backoff");
                        }
                        lost = true;
                        wake.work.notify_one();
                        wake.config.notify_one();
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        });
        store.remote = Some(signals);
        store.listener = Some(task.abort_handle());
        Ok(store)
    }

    async fn open_any(
        dialect: Dialect,
        write_url: &str,
        read_url: &str,
        opts: StoreOptions,
    ) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (tx, rx) = mpsc::channel::<Msg>(4096);
        let stats = Arc::new(WriterStats::default());
        let health = Arc::new(Health::default());
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let (url, writer_stats, writer_opts) = (write_url.to_string(), stats.clone(), opts.clone());
        let writer_health = health.clone();
        // The writer runs on a thread of its own: every statement of a group commit is a
        // round trip to the database, and on the shared runtime each one would wait its
        // turn behind every HTTP task, stretching the one serial section of Herald.
        let cannot_start =
            |e: std::io::Error| StoreError::Unavailable(format!("cannot start the writer: {e}"));
        std::thread::Builder::new()
            .name("herald-writer".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(cannot_start(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match open_writer(dialect, &url, writer_opts, writer_stats, writer_health).await
                    {
                        Ok(w) => {
                            let _ = ready_tx.send(Ok(()));
                            run_writer(w, rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(cannot_start)?;
        ready_rx.await.map_err(|_| StoreError::Closed)??;
        let reads = AnyPoolOptions::new()
            .max_connections(opts.read_connections.max(1))
            // A dead pooled connection is found by the ping before use and replaced; while
            // the database is down, a read fails within this instead of hanging.
            .acquire_timeout(READ_ACQUIRE_TIMEOUT)
            .test_before_acquire(true)
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
        metrics::gauge!("herald_store_up").set(1.0);
        Ok(SqlStore {
            jobs: tx,
            reads,
            stats,
            health,
            db_dir: match dialect {
                Dialect::Sqlite => sqlite_dir(write_url),
                Dialect::Postgres => None,
            },
            dialect,
            remote: None,
            listener: None,
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
        self.jobs
            .send(Msg::Job(job(f, tx)))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| self.not_run())?
    }

    /// Why the writer dropped a job without running it: the store is down (it fails jobs
    /// at once while it waits to reconnect), or the writer stopped.
    fn not_run(&self) -> StoreError {
        match self.health.state() {
            HealthState::Down { fault, detail, .. } => StoreError::from_fault(fault, detail),
            HealthState::Up => StoreError::Unavailable("the writer is not running".into()),
        }
    }

    /// Free space where the SQLite file lives is too low for the next commit.
    fn disk_full(&self) -> Option<StoreError> {
        let free = free_bytes(self.db_dir.as_deref()?)?;
        (free < MIN_FREE_BYTES).then(|| {
            StoreError::Full(format!(
                "{free} bytes free where the database lives (at least {MIN_FREE_BYTES} needed)"
            ))
        })
    }
}

/// The directory of a `sqlite://PATH?mode=…` URL.
fn sqlite_dir(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("sqlite://")?;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Some(Path::new(path).parent()?.to_path_buf())
}

/// Bytes available to Herald on the file system holding `dir` (`None` if unknown).
#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid NUL-terminated string and `st` a properly sized, zeroed
    // struct that statvfs only writes into.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// A job running `f` whose result goes to `tx` once the commit is known.
fn job<T, F>(f: F, tx: oneshot::Sender<Result<T>>) -> Job
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut Writer) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    Box::new(move |w: &mut Writer| {
        Box::pin(async move {
            let result = f(w).await;
            let status = match &result {
                Ok(_) => JobStatus::Done,
                Err(e) => match e.fault() {
                    Some(fault) => JobStatus::Fault(fault, e.detail()),
                    None => JobStatus::Failed,
                },
            };
            (status, reply(result, tx))
        })
    })
}

/// Answers `tx` with `result`, or with the commit's error.
fn reply<T: Send + 'static>(result: Result<T>, tx: oneshot::Sender<Result<T>>) -> Reply {
    Box::new(move |failure: Option<&GroupFailure>| {
        let _ = tx.send(match failure {
            None => result,
            Some(f) => Err(f.error()),
        });
    })
}

/// An accept on its own, as an ordinary job in its own savepoint.
fn accept_job(a: AcceptJob) -> Job {
    let batch = a.batch;
    job(
        move |w| {
            Box::pin(async move {
                let refs: Vec<&NewMessage> = batch.iter().collect();
                accept_batch(w, &refs).await
            })
        },
        a.reply,
    )
}

/// Connects to a location with the writer's settings (SQLite: WAL, `synchronous=FULL`).
pub async fn connect(location: &crate::Location) -> Result<(AnyConnection, Dialect)> {
    sqlx::any::install_default_drivers();
    match location {
        crate::Location::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Migration(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            let mut conn =
                AnyConnection::connect(&format!("sqlite://{}?mode=rwc", path.display())).await?;
            sqlx::raw_sql(PRAGMAS_FULL).execute(&mut conn).await?;
            Ok((conn, Dialect::Sqlite))
        }
        crate::Location::Postgres(url) => {
            Ok((AnyConnection::connect(url).await?, Dialect::Postgres))
        }
    }
}

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
const MIGRATION_LOCK: i64 = 0x6865_7261_6c65;

async fn migrate(conn: &mut AnyConnection) -> Result<()> {
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

async fn migrate_locked(conn: &mut AnyConnection) -> Result<()> {
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

/// Connects the writer (SQLite: its pragmas), migrates, and reads the audit head.
async fn open_writer(
    dialect: Dialect,
    url: &str,
    opts: StoreOptions,
    stats: Arc<WriterStats>,
    health: Arc<Health>,
) -> Result<Writer> {
    let mut conn = connect_writer(dialect, url, &opts).await?;
    migrate(&mut conn).await?;
    if dialect == Dialect::Sqlite {
        // One node owns a SQLite file: leases left by a previous process are void.
        let now = herald_core::clock::now_ms();
        sqlx::query("UPDATE deliveries SET status = 'pending', lease_until = NULL, lease_token = NULL, next_attempt_at = $1, updated_at = $1 WHERE status = 'in_flight'")
            .bind(now)
            .execute(&mut conn)
            .await?;
    }
    let audit_head = read_audit_head(&mut conn).await?;
    Ok(Writer {
        conn,
        dialect,
        url: url.to_string(),
        opts,
        stats,
        health,
        broken: false,
        next_try: tokio::time::Instant::now(),
        backoff: BACKOFF_FIRST,
        audit_head,
        staged: Vec::new(),
        checkpoints: Vec::new(),
        checkpoint_signers: Vec::new(),
        new_work: false,
        config_changed: false,
    })
}

/// One connection with the writer's settings, within [`CONNECT_TIMEOUT`].
async fn connect_writer(dialect: Dialect, url: &str, opts: &StoreOptions) -> Result<AnyConnection> {
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(url))
        .await
        .map_err(|_| StoreError::Unavailable("connecting to the database timed out".into()))??;
    if dialect == Dialect::Sqlite {
        let pragmas: &'static str = if opts.synchronous_full {
            PRAGMAS_FULL
        } else {
            PRAGMAS_NORMAL
        };
        sqlx::raw_sql(pragmas).execute(&mut conn).await?;
    }
    Ok(conn)
}

async fn read_audit_head(conn: &mut AnyConnection) -> Result<(i64, String)> {
    let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(conn)
        .await?;
    Ok(match head {
        Some(r) => (r.try_get("seq")?, r.try_get("hash")?),
        None => (0, GENESIS.to_string()),
    })
}

impl Writer {
    /// Opens a fresh connection in place of a broken one and re-reads the audit head (a
    /// commit whose outcome was unknown may have moved it). On failure the store stays
    /// down and the next try waits longer.
    async fn reconnect(&mut self) -> bool {
        let fresh = async {
            let mut conn = connect_writer(self.dialect, &self.url, &self.opts).await?;
            let head = read_audit_head(&mut conn).await?;
            Ok::<_, StoreError>((conn, head))
        };
        match fresh.await {
            Ok((conn, head)) => {
                // The old connection is dead: drop it rather than wait on a goodbye.
                drop(std::mem::replace(&mut self.conn, conn));
                self.audit_head = head;
                self.broken = false;
                metrics::counter!("herald_store_reconnects_total", "connection" => "writer")
                    .increment(1);
                // The outage's end is logged once, at the first commit that succeeds.
                tracing::debug!("store: the writer reconnected to the database");
                true
            }
            Err(e) => {
                let fault = e.fault().unwrap_or(Fault::Unavailable);
                self.health
                    .fault(fault, &e.detail(), herald_core::clock::now_ms());
                self.wait_longer();
                false
            }
        }
    }

    fn wait_longer(&mut self) {
        self.next_try = tokio::time::Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Notes a group that did not commit: the store is down, and a broken connection is
    /// reopened before its next use.
    fn failed(&mut self, f: &GroupFailure) {
        let fault = f.fault.unwrap_or(Fault::Unavailable);
        if f.fault.is_some() || f.outcome_unknown {
            self.health
                .fault(fault, &f.message, herald_core::clock::now_ms());
        }
        if f.outcome_unknown || f.fault.is_some_and(Fault::breaks_connection) {
            self.broken = true;
        }
        if !self.health.is_up() {
            self.wait_longer();
        }
    }

    /// While the store is down: one real commit (a heartbeat in `meta`), reconnecting first
    /// if needed, so readiness and the dispatcher see the store back without waiting for
    /// traffic.
    async fn probe(&mut self) {
        // A heartbeat may fit in a full disk's reused WAL pages: with too little space left
        // the store stays down without a try, instead of flapping up and down.
        if self.dialect == Dialect::Sqlite
            && let Some(free) = sqlite_dir(&self.url).and_then(|d| free_bytes(&d))
            && free < MIN_FREE_BYTES
        {
            self.wait_longer();
            return;
        }
        if self.broken && !self.reconnect().await {
            return;
        }
        let (tx, _answer) = oneshot::channel::<Result<()>>();
        let beat = job(
            |w: &mut Writer| {
                Box::pin(async move {
                    heartbeat(w).await?;
                    Ok(())
                })
            },
            tx,
        );
        if let Err((jobs, _)) = commit_group(self, vec![beat], Vec::new()).await {
            drop(jobs);
        }
    }
}

/// Writes the time into `meta` (a commit that touches the disk).
async fn heartbeat(w: &mut Writer) -> Result<()> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ('heartbeat', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(herald_core::clock::now_ms().to_string())
        .execute(&mut w.conn)
        .await?;
    Ok(())
}

async fn run_writer(mut w: Writer, mut rx: mpsc::Receiver<Msg>) {
    loop {
        let first = if w.health.is_up() && !w.broken {
            rx.recv().await
        } else {
            tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(w.next_try) => {
                    w.probe().await;
                    continue;
                }
            }
        };
        let Some(first) = first else { return };
        let (mut jobs, mut accepts) = (Vec::new(), Vec::new());
        let mut closing = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Job(j) => jobs.push(j),
                Msg::Accept(a) => accepts.push(a),
                Msg::Close(ack) => closing = Some(ack),
            }
            if closing.is_none() && jobs.len() + accepts.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        if !jobs.is_empty() || !accepts.is_empty() {
            run_group(&mut w, jobs, accepts).await;
        }
        if let Some(ack) = closing {
            rx.close();
            let (mut rest, mut accepts) = (Vec::new(), Vec::new());
            while let Ok(msg) = rx.try_recv() {
                match msg {
                    Msg::Job(j) => rest.push(j),
                    Msg::Accept(a) => accepts.push(a),
                    Msg::Close(_) => {}
                }
            }
            if !rest.is_empty() || !accepts.is_empty() {
                run_group(&mut w, rest, accepts).await;
            }
            let _ = w.conn.close().await;
            let _ = ack.send(());
            return;
        }
    }
}

/// Commits a group on a working connection. A broken one is reopened first, unless the
/// last try was too recent: then the jobs are dropped at once, and their callers hear the
/// store is down (a fast 503 rather than a queue of waiting requests). A group that could
/// not even begin ran nothing, so it is tried once more on a fresh connection.
async fn run_group(w: &mut Writer, jobs: Vec<Job>, accepts: Vec<AcceptJob>) {
    if w.broken && (tokio::time::Instant::now() < w.next_try || !w.reconnect().await) {
        return;
    }
    let Err((jobs, accepts)) = commit_group(w, jobs, accepts).await else {
        return;
    };
    if w.broken && w.reconnect().await {
        let _ = commit_group(w, jobs, accepts).await;
    }
}

/// Runs jobs in one transaction, each inside its own savepoint, appends their audit
/// entries, commits once, then answers every caller. The accepts waiting are written first,
/// together as one batch (a few multi-row INSERTs for all of them); should that batch fail,
/// it is undone and each accept runs on its own, so one bad request fails alone. A storage
/// fault stops the group: nothing more runs, all is rolled back, every caller is told.
/// When the transaction cannot begin, nothing ran and the work is handed back.
async fn commit_group(
    w: &mut Writer,
    mut jobs: Vec<Job>,
    accepts: Vec<AcceptJob>,
) -> std::result::Result<(), (Vec<Job>, Vec<AcceptJob>)> {
    let started = std::time::Instant::now();
    let head_before = w.audit_head.clone();
    w.staged.clear();
    w.checkpoints.clear();
    w.checkpoint_signers.clear();
    w.new_work = false;
    w.config_changed = false;
    let begin = match w.dialect {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    };
    if let Err(e) = exec(&mut w.conn, begin).await {
        let e = StoreError::from(e);
        w.failed(&GroupFailure {
            fault: Some(e.fault().unwrap_or(Fault::Unavailable)),
            outcome_unknown: false,
            message: e.detail(),
        });
        return Err((jobs, accepts));
    }
    let mut replies = Vec::with_capacity(jobs.len() + accepts.len());
    let mut fault: Option<(Fault, String)> = None;
    let together = if accepts.len() > 1 {
        match accept_together(w, &accepts).await {
            Ok(outcomes) => outcomes,
            Err(f) => {
                fault = Some(f);
                None
            }
        }
    } else {
        None
    };
    match together {
        Some(mut outcomes) => {
            for a in accepts {
                let rest = outcomes.split_off(a.batch.len().min(outcomes.len()));
                replies.push(reply(Ok(std::mem::replace(&mut outcomes, rest)), a.reply));
            }
        }
        None => {
            let mut own: Vec<Job> = accepts.into_iter().map(accept_job).collect();
            own.append(&mut jobs);
            jobs = own;
        }
    }
    let mut jobs = jobs.into_iter();
    while fault.is_none() {
        let Some(job) = jobs.next() else { break };
        let saved = (w.staged.len(), w.checkpoints.len());
        if let Err(e) = exec(&mut w.conn, "SAVEPOINT job").await {
            fault = Some(fault_of(e));
            // The job never ran: dropped with the others, its caller hears the store is down.
            replies.push(Box::new(move |_| drop(job)));
            break;
        }
        let (status, reply) = job(w).await;
        replies.push(reply);
        let end = match status {
            JobStatus::Done => "RELEASE job",
            JobStatus::Failed => "ROLLBACK TO job; RELEASE job",
            JobStatus::Fault(f, msg) => {
                fault = Some((f, msg));
                break;
            }
        };
        if end != "RELEASE job" {
            w.staged.truncate(saved.0);
            w.checkpoints.truncate(saved.1);
            w.checkpoint_signers.truncate(saved.1);
        }
        if let Err(e) = exec(&mut w.conn, end).await {
            fault = Some(fault_of(e));
        }
    }
    // Jobs after a fault never run; dropped once the store is marked down, their callers
    // hear why.
    let never_ran = jobs;
    let result = match fault {
        Some((f, message)) => Err(GroupFailure {
            fault: Some(f),
            outcome_unknown: false,
            message,
        }),
        None => finish_group(w).await,
    };
    match result {
        Ok(()) => {
            w.stats.commits.fetch_add(1, Ordering::Relaxed);
            w.stats
                .jobs
                .fetch_add(replies.len() as u64, Ordering::Relaxed);
            w.health.commit_succeeded(herald_core::clock::now_ms());
            w.backoff = BACKOFF_FIRST;
            metrics::histogram!("herald_store_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("herald_store_commit_jobs").record(replies.len() as f64);
            replies.into_iter().for_each(|r| r(None));
        }
        Err(failure) => {
            if w.health.is_up() && failure.fault.is_none() {
                tracing::error!(error = %failure.message, "store: commit failed");
            }
            let _ = exec(&mut w.conn, "ROLLBACK").await;
            w.audit_head = head_before;
            for slot in &w.checkpoints {
                if let Ok(mut s) = slot.lock() {
                    *s = None;
                }
            }
            w.failed(&failure);
            metrics::counter!("herald_store_failed_commits_total").increment(1);
            replies.into_iter().for_each(|r| r(Some(&failure)));
        }
    }
    drop(never_ran);
    Ok(())
}

/// Appends the group's audit entries, notifies, and commits. A `COMMIT` that fails with a
/// storage fault other than a full disk (SQLite then rolls back) leaves its outcome unknown.
async fn finish_group(w: &mut Writer) -> std::result::Result<(), GroupFailure> {
    let before = match append_staged(w).await {
        Ok(()) => notify_work(w).await,
        Err(e) => Err(e),
    };
    if let Err(e) = before {
        return Err(GroupFailure {
            fault: e.fault(),
            outcome_unknown: false,
            message: e.detail(),
        });
    }
    exec(&mut w.conn, "COMMIT").await.map_err(|e| {
        let e = StoreError::from(e);
        let fault = e.fault();
        GroupFailure {
            fault,
            outcome_unknown: fault.is_some_and(|f| f != Fault::Full),
            message: e.detail(),
        }
    })
}

/// The fault behind a failed statement of the writer's own (a savepoint, say).
fn fault_of(e: sqlx::Error) -> (Fault, String) {
    let e = StoreError::from(e);
    (e.fault().unwrap_or(Fault::Unavailable), e.detail())
}

/// Writes several callers' accepts as one batch in one savepoint; `Ok(None)` (and nothing
/// written) if it failed on its own, `Err` on a storage fault (the group must stop).
async fn accept_together(
    w: &mut Writer,
    accepts: &[AcceptJob],
) -> std::result::Result<Option<Vec<AcceptOutcome>>, (Fault, String)> {
    let staged = w.staged.len();
    exec(&mut w.conn, "SAVEPOINT accepts")
        .await
        .map_err(fault_of)?;
    let all: Vec<&NewMessage> = accepts.iter().flat_map(|a| a.batch.iter()).collect();
    let result = accept_batch(w, &all).await;
    if let Err(e) = &result
        && let Some(f) = e.fault()
    {
        return Err((f, e.detail()));
    }
    let end = match result {
        Ok(_) => "RELEASE accepts",
        Err(_) => "ROLLBACK TO accepts; RELEASE accepts",
    };
    if result.is_err() {
        w.staged.truncate(staged);
    }
    exec(&mut w.conn, end).await.map_err(fault_of)?;
    Ok(result.ok())
}

/// Tells the other nodes (Postgres `NOTIFY`, delivered at commit) that due work appeared.
async fn notify_work(w: &mut Writer) -> Result<()> {
    if w.dialect != Dialect::Postgres {
        return Ok(());
    }
    for (raised, channel) in [
        (w.new_work, WORK_CHANNEL),
        (w.config_changed, CONFIG_CHANNEL),
    ] {
        if raised {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(channel)
                .execute(&mut w.conn)
                .await?;
        }
    }
    Ok(())
}

/// Chains the group's staged audit entries (and checkpoints) onto the head and writes them
/// with multi-row INSERTs. On Postgres the head is read under a transaction-scoped advisory
/// lock, so the writers of several nodes append one chain, in turn, each for the moment
/// between this append and its commit.
async fn append_staged(w: &mut Writer) -> Result<()> {
    if w.staged.is_empty() && w.checkpoints.is_empty() {
        return Ok(());
    }
    if w.dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut w.conn)
            .await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut w.conn)
            .await?;
        w.audit_head = match head {
            Some(r) => (r.try_get("seq")?, r.try_get("hash")?),
            None => (0, GENESIS.to_string()),
        };
    }
    let staged = std::mem::take(&mut w.staged);
    let mut last_action = match staged.last() {
        Some(a) => Some(a.action.clone()),
        None if w.audit_head.0 == 0 => None,
        None => Some(
            sqlx::query_scalar::<_, String>("SELECT action FROM audit_log WHERE seq = $1")
                .bind(w.audit_head.0)
                .fetch_one(&mut w.conn)
                .await?,
        ),
    };
    insert_chained(w, &staged).await?;
    let signers = std::mem::take(&mut w.checkpoint_signers);
    let slots = w.checkpoints.clone();
    for ((sign, at), slot) in signers.into_iter().zip(slots) {
        // Nothing to attest on an empty log or right after another checkpoint.
        if last_action.is_none() || last_action.as_deref() == Some(CHECKPOINT_ACTION) {
            continue;
        }
        let (seq, hash) = w.audit_head.clone();
        let detail = sign(seq, &hash);
        let entry = new_audit(at, "system", CHECKPOINT_ACTION, "audit", detail);
        insert_chained(w, std::slice::from_ref(&entry)).await?;
        last_action = Some(CHECKPOINT_ACTION.to_string());
        if let Ok(mut s) = slot.lock() {
            *s = Some(seq + 1);
        }
    }
    Ok(())
}

/// Writes entries after the head, chaining their hashes in order, and moves the head.
async fn insert_chained(w: &mut Writer, entries: &[NewAudit]) -> Result<()> {
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
    for chunk in insert_chunks(&rows) {
        let mut q = sqlx::query(AssertSqlSafe(values_sql_for(
            w.dialect,
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

/// Stages one audit entry; it is written, chained, with the rest of the group's.
async fn audit(w: &mut Writer, a: &NewAudit) -> Result<()> {
    w.staged.push(a.clone());
    Ok(())
}

/// Stages several audit entries, in order.
async fn audit_many(w: &mut Writer, entries: &[NewAudit]) -> Result<()> {
    w.staged.extend_from_slice(entries);
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
pub(crate) fn values_sql(head: &str, rows: usize, cols: usize) -> String {
    values_sql_for(Dialect::Postgres, head, rows, cols)
}

/// [`values_sql`] for the writer's database. SQLite gets anonymous `?` placeholders: it
/// looks a `$N` up by name in a list, so parsing and binding a statement of n `$N`s costs
/// n² string comparisons (with 1 600 placeholders, more than the rows' insert itself).
fn values_sql_for(dialect: Dialect, head: &str, rows: usize, cols: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(head.len() + 10 + rows * cols * 6);
    s.push_str(head);
    s.push_str(" VALUES ");
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            let sep = if c == 0 { "" } else { ", " };
            let _ = match dialect {
                Dialect::Sqlite => write!(s, "{sep}?"),
                Dialect::Postgres => write!(s, "{sep}${}", r * cols + c + 1),
            };
        }
        s.push(')');
    }
    s
}

/// A list query from optional filters, newest first: only fixed fragments are spliced in,
/// every value is bound, in the order the filters were added (then the limit).
struct Filtered {
    sql: String,
    n: usize,
}

impl Filtered {
    fn new(select: impl Into<String>) -> Self {
        Filtered {
            sql: select.into(),
            n: 0,
        }
    }

    /// Appends ` AND <fragment>` when `on`, its `?` becoming the next numbered placeholder.
    fn and(&mut self, on: bool, fragment: &str) {
        if on {
            self.n += 1;
            self.sql.push_str(" AND ");
            self.sql
                .push_str(&fragment.replace('?', &format!("${}", self.n)));
        }
    }

    /// The query, newest first by `id`, with the limit as the last placeholder.
    fn newest_first(self, id: &str) -> String {
        format!("{} ORDER BY {id} DESC LIMIT ${}", self.sql, self.n + 1)
    }
}

/// Rows per multi-row INSERT (SQLite allows 32 766 bound values per statement).
const ROWS_PER_INSERT: usize = 128;

/// Splits rows into multi-row INSERT chunks of a power-of-two size (128, then the binary
/// digits of the rest), so a handful of statement texts recur and stay in the
/// connection's prepared-statement cache instead of one new text per group size.
fn insert_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let n = if rows.len() >= ROWS_PER_INSERT {
            ROWS_PER_INSERT
        } else {
            1 << rows.len().ilog2()
        };
        let (chunk, rest) = rows.split_at(n);
        rows = rest;
        Some(chunk)
    })
}

/// Accepts a batch: idempotency keys resolved one by one (a repeat inside the batch sees
/// the earlier message), then every new row written with a few multi-row INSERTs — the
/// per-statement cost, not the bytes, is what a write costs here.
async fn accept_batch(w: &mut Writer, batch: &[&NewMessage]) -> Result<Vec<AcceptOutcome>> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut new: Vec<&NewMessage> = Vec::with_capacity(batch.len());
    let mut keys_here: HashMap<&str, (&str, &str)> = HashMap::new();
    for m in batch {
        if let Some(idem) = &m.idempotency {
            if let Some((hash, response)) = keys_here.get(idem.scoped_key.as_str()) {
                outcomes.push(replay_or_conflict(hash, &idem.request_hash, response));
                continue;
            }
            let existing = sqlx::query(
                "SELECT request_hash, response, expires_at FROM idempotency_keys WHERE key = $1",
            )
            .bind(&idem.scoped_key)
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
                    .bind(&idem.scoped_key)
                    .execute(&mut w.conn)
                    .await?;
            }
            keys_here.insert(&idem.scoped_key, (&idem.request_hash, &idem.response));
        }
        new.push(*m);
        outcomes.push(AcceptOutcome::Accepted);
    }
    for chunk in insert_chunks(&new) {
        let mut q = sqlx::query(AssertSqlSafe(values_sql_for(
            w.dialect,
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
    for chunk in insert_chunks(&deliveries) {
        let mut q = sqlx::query(AssertSqlSafe(values_sql_for(
            w.dialect,
            "INSERT INTO deliveries (id, message_id, destination, status, next_attempt_at, lease_until, lease_token, created_at, updated_at)",
            chunk.len(),
            9,
        )));
        for (m, d) in chunk {
            // A shared store leaves every new delivery for a claim (see `single_node`).
            let lease = d.lease.as_ref().filter(|_| w.dialect == Dialect::Sqlite);
            q = q
                .bind(&d.id)
                .bind(&m.id)
                .bind(&d.destination)
                .bind(if lease.is_some() {
                    "in_flight"
                } else {
                    "pending"
                })
                .bind(m.created_at)
                .bind(lease.map(|l| l.until))
                .bind(lease.map(|l| l.token.as_str()))
                .bind(m.created_at)
                .bind(m.created_at);
        }
        q.execute(&mut w.conn).await?;
    }
    let keyed: Vec<(&NewMessage, &IdempotencyRecord)> = new
        .iter()
        .filter_map(|m| m.idempotency.as_ref().map(|i| (*m, i)))
        .collect();
    for chunk in insert_chunks(&keyed) {
        let mut q = sqlx::query(AssertSqlSafe(values_sql_for(
            w.dialect,
            "INSERT INTO idempotency_keys (key, request_hash, message_id, response, created_at, expires_at)",
            chunk.len(),
            6,
        )));
        for (m, i) in chunk {
            q = q
                .bind(&i.scoped_key)
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
    w.new_work |= !deliveries.is_empty();
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
    // SQLite is told the partial index of leases: its planner would otherwise walk every
    // in-flight row (deliveries_status) at every claim.
    let recover = match w.dialect {
        Dialect::Sqlite => {
            "UPDATE deliveries INDEXED BY deliveries_lease SET status = 'pending', lease_until = NULL, lease_token = NULL, next_attempt_at = $1, updated_at = $1 WHERE status = 'in_flight' AND lease_until <= $1"
        }
        Dialect::Postgres => {
            "UPDATE deliveries SET status = 'pending', lease_until = NULL, lease_token = NULL, next_attempt_at = $1, updated_at = $1 WHERE status = 'in_flight' AND lease_until <= $1"
        }
    };
    result.recovered = sqlx::query(recover)
        .bind(req.now)
        .execute(&mut w.conn)
        .await?
        .rows_affected();
    if result.recovered > 0 {
        w.new_work = true;
    }
    let rows = sqlx::query(
        "SELECT name, enabled, disabled_reason, paused_until, breaker FROM destinations",
    )
    .fetch_all(&mut w.conn)
    .await?;
    for r in &rows {
        result.destinations.push(DestinationState {
            name: r.try_get("name")?,
            enabled: r.try_get::<i64, _>("enabled")? != 0,
            disabled_reason: r.try_get("disabled_reason")?,
            paused_until: r.try_get("paused_until")?,
            breaker: r.try_get("breaker")?,
        });
    }
    let mut leased: Vec<String> = Vec::new();
    for q in &req.queues {
        // What other nodes decided wins over this node's view: disabled, paused, tripped.
        let mut capacity = q.capacity;
        if let Some(state) = result.destinations.iter().find(|d| d.name == q.destination) {
            if !state.enabled {
                continue;
            }
            if let Some(p) = state.paused_until.filter(|p| *p > req.now) {
                capacity = 0;
                result.next_due_at = Some(result.next_due_at.map_or(p, |c: i64| c.min(p)));
            }
            if q.require_closed_breaker && !breaker_closed(state.breaker.as_deref()) {
                capacity = 0;
            }
        }
        let mut bucket = None;
        if let (Some(limit), true) = (&q.rate_limit, capacity > 0) {
            let (b, available) = take_bucket(w, &q.destination, limit, req.now).await?;
            if available < capacity {
                capacity = available;
                result.rate_limited.push(q.destination.clone());
                let at = b.next_token_at(limit);
                result.next_due_at = Some(result.next_due_at.map_or(at, |c: i64| c.min(at)));
            }
            bucket = Some((b, limit));
        }
        let q = QueueClaim {
            capacity,
            ..q.clone()
        };
        let (claimed, next) = if q.ordered {
            claim_head(w, req, &q).await?
        } else {
            claim_due(w, req, &q).await?
        };
        if let Some((mut b, limit)) = bucket {
            b.take(limit, claimed.len() as u32, req.now);
            sqlx::query("UPDATE destinations SET bucket = $1 WHERE name = $2")
                .bind(serde_json::to_string(&b).unwrap_or_default())
                .bind(&q.destination)
                .execute(&mut w.conn)
                .await?;
        }
        leased.extend(claimed);
        if let Some(n) = next.filter(|n| *n > req.now) {
            result.next_due_at = Some(result.next_due_at.map_or(n, |c: i64| c.min(n)));
        }
    }
    // The leased rows with their messages, looked up by id (not by lease token, which has
    // no index).
    for chunk in insert_chunks(&leased) {
        let sql = format!(
            "SELECT {DELIVERY_COLS}, m.id AS m_id, m.event_type AS m_event_type, m.idempotency_key AS m_idempotency_key, m.body AS m_body, m.created_at AS m_created_at
             FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.id IN ({})",
            placeholders(w.dialect, chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id);
        }
        for r in &q.fetch_all(&mut w.conn).await? {
            result.claimed.push(ClaimedDelivery {
                delivery: delivery_from_row(r)?,
                message: message_from_row(r, "m_")?,
                lease_token: req.lease_token.clone(),
            });
        }
    }
    result.claimed.sort_by_key(|c| c.delivery.next_attempt_at);
    Ok(result)
}

/// `?, ?, …` (SQLite) or `$1, $2, …` (Postgres): `n` placeholders for an `IN` list.
fn placeholders(dialect: Dialect, n: usize) -> String {
    let one = |i: usize| match dialect {
        Dialect::Sqlite => "?".to_string(),
        Dialect::Postgres => format!("${}", i + 1),
    };
    (0..n).map(one).collect::<Vec<_>>().join(", ")
}

fn breaker_closed(stored: Option<&str>) -> bool {
    stored_breaker(stored).permit(i64::MIN) == Permit::Any
}

/// The stored breaker state; an unreadable one counts as closed (it is rewritten on the
/// next attempt).
fn stored_breaker(stored: Option<&str>) -> Breaker {
    stored
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Reads a destination's token bucket under its row lock (Postgres) and refills it to
/// `now`: the bucket and the whole tokens available.
async fn take_bucket(
    w: &mut Writer,
    destination: &str,
    limit: &RateLimit,
    now: i64,
) -> Result<(TokenBucket, u32)> {
    let sql = match w.dialect {
        Dialect::Sqlite => "SELECT bucket FROM destinations WHERE name = $1",
        Dialect::Postgres => "SELECT bucket FROM destinations WHERE name = $1 FOR UPDATE",
    };
    let stored: Option<String> = sqlx::query_scalar(sql)
        .bind(destination)
        .fetch_optional(&mut w.conn)
        .await?
        .flatten();
    let mut b = stored
        .and_then(|s| serde_json::from_str::<TokenBucket>(&s).ok())
        // A changed limit may leave more tokens than the new burst: never more than it.
        .map(|b| TokenBucket {
            tokens: b.tokens.min(limit.burst),
            ..b
        })
        .unwrap_or_else(|| TokenBucket::full(limit, now));
    let available = b.available(limit, now);
    Ok((b, available))
}

/// Leases up to `capacity` due deliveries of a queue; returns the ids leased and the
/// queue's earliest `next_attempt_at`. On Postgres the rows are picked with
/// `FOR UPDATE SKIP LOCKED`, so nodes claiming at once never wait for, or take, the same
/// deliveries.
async fn claim_due(
    w: &mut Writer,
    req: &ClaimRequest,
    q: &QueueClaim,
) -> Result<(Vec<String>, Option<i64>)> {
    let mut claimed = Vec::new();
    if q.capacity > 0 {
        let sql = match w.dialect {
            Dialect::Sqlite => {
                "UPDATE deliveries SET status = 'in_flight', lease_until = $1, lease_token = $2, updated_at = $3
                 WHERE id IN (SELECT id FROM deliveries WHERE destination = $4 AND status = 'pending' AND next_attempt_at <= $3
                              ORDER BY next_attempt_at LIMIT $5) RETURNING id"
            }
            Dialect::Postgres => {
                "UPDATE deliveries SET status = 'in_flight', lease_until = $1, lease_token = $2, updated_at = $3
                 WHERE id IN (SELECT id FROM deliveries WHERE destination = $4 AND status = 'pending' AND next_attempt_at <= $3
                              ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING id"
            }
        };
        claimed = sqlx::query_scalar(sql)
            .bind(req.now + q.lease_ms)
            .bind(&req.lease_token)
            .bind(req.now)
            .bind(&q.destination)
            .bind(q.capacity as i64)
            .fetch_all(&mut w.conn)
            .await?;
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
/// is pending (not already in flight, on any node) and due.
async fn claim_head(
    w: &mut Writer,
    req: &ClaimRequest,
    q: &QueueClaim,
) -> Result<(Vec<String>, Option<i64>)> {
    let head = sqlx::query(
        "SELECT id, status, next_attempt_at FROM deliveries WHERE destination = $1 AND status IN ('pending', 'in_flight')
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(&q.destination)
    .fetch_optional(&mut w.conn)
    .await?;
    let Some(head) = head else {
        return Ok((Vec::new(), None));
    };
    let status: String = head.try_get("status")?;
    let next: Option<i64> = head.try_get("next_attempt_at")?;
    if status != "pending" {
        return Ok((Vec::new(), None));
    }
    if q.capacity == 0 || next.is_some_and(|n| n > req.now) {
        return Ok((Vec::new(), next));
    }
    let id: String = head.try_get("id")?;
    // The status check re-reads the row under its lock (Postgres), so of two nodes seeing
    // the same head only one leases it.
    let n = sqlx::query("UPDATE deliveries SET status = 'in_flight', lease_until = $1, lease_token = $2, updated_at = $3 WHERE id = $4 AND status = 'pending'")
        .bind(req.now + q.lease_ms)
        .bind(&req.lease_token)
        .bind(req.now)
        .bind(&id)
        .execute(&mut w.conn)
        .await?
        .rows_affected();
    Ok((if n > 0 { vec![id] } else { Vec::new() }, None))
}

async fn finish_in(w: &mut Writer, f: &FinishAttempt) -> Result<FinishOutcome> {
    let status = f.next.status().as_str();
    let next_at = match &f.next {
        NextState::Retry { at } => Some(*at),
        _ => None,
    };
    let dead_at = (f.next == NextState::Dead).then_some(f.now);
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
        ..Default::default()
    };
    if let Some(a) = a {
        insert_attempts(w, &[(f, a, number)]).await?;
    }
    let action = f.next.audit_action();
    let fallback = match &f.next {
        NextState::FailedOver {
            fallback,
            new_delivery_id,
        } => Some((fallback, new_delivery_id)),
        _ => None,
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
        w.new_work = true;
    }
    let detail = attempt_detail(f, number, &message_id, next_at, fallback);
    audit(
        w,
        &new_audit(f.now, "dispatcher", action, &f.delivery_id, detail),
    )
    .await?;

    if let Some(a) = a {
        // Only rows that change are written (and, on Postgres, locked): a healthy
        // destination's row is touched at most once a second, not once per attempt.
        if a.outcome == AttemptOutcome::Delivered {
            mark_healthy(w, &f.destination, f.now).await?;
        } else {
            sqlx::query(
                "UPDATE destinations SET failing_since = $1 WHERE name = $2 AND failing_since IS NULL",
            )
            .bind(f.now)
            .bind(&f.destination)
            .execute(&mut w.conn)
            .await?;
        }
    }
    if let Some(event) = &f.breaker {
        let (json, transition) = apply_breaker(w, &f.destination, event, f.now).await?;
        outcome.breaker_transition = transition;
        outcome.breaker = Some(json);
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
            w.config_changed = true;
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

/// Applies an attempt's answer to the destination's stored breaker, under the row lock
/// (Postgres), so every node's failures count; a closed breaker that stays closed is only
/// read (no lock, no write). Returns the stored state (JSON) and the audited transition.
async fn apply_breaker(
    w: &mut Writer,
    destination: &str,
    event: &BreakerEvent,
    now: i64,
) -> Result<(String, Option<String>)> {
    let apply = |stored: Option<&str>| {
        let mut b = stored_breaker(stored);
        let before = b.clone();
        let transition = if event.failure {
            b.on_retryable_failure(&event.config, now)
        } else {
            b.on_answer()
        };
        let changed = b != before;
        (b, transition, changed)
    };
    let seen: Option<String> =
        sqlx::query_scalar("SELECT breaker FROM destinations WHERE name = $1")
            .bind(destination)
            .fetch_optional(&mut w.conn)
            .await?
            .flatten();
    let (mut b, mut transition, mut changed) = apply(seen.as_deref());
    if changed && w.dialect == Dialect::Postgres {
        let stored = locked_breaker(w, destination).await?;
        (b, transition, changed) = apply(stored.as_deref());
    }
    let json = serde_json::to_string(&b).unwrap_or_default();
    if changed {
        sqlx::query("UPDATE destinations SET breaker = $1 WHERE name = $2")
            .bind(&json)
            .bind(destination)
            .execute(&mut w.conn)
            .await?;
    }
    let transition = match transition {
        Some(t) => {
            let detail: Value = serde_json::to_value(&b).unwrap_or(Value::Null);
            audit(
                w,
                &new_audit(now, "dispatcher", t.action(), destination, detail),
            )
            .await?;
            Some(t.action().to_string())
        }
        None => None,
    };
    Ok((json, transition))
}

/// Records a successful attempt's destination health: only rows that change are written
/// (and, on Postgres, locked), so a healthy destination's row is touched at most once a
/// second, not once per attempt.
async fn mark_healthy(w: &mut Writer, destination: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE destinations SET failing_since = NULL, last_success_at = $1 WHERE name = $2
         AND (failing_since IS NOT NULL OR last_success_at IS NULL OR last_success_at < $1 - 1000)",
    )
    .bind(now)
    .bind(destination)
    .execute(&mut w.conn)
    .await?;
    Ok(())
}

/// The audit detail of a recorded attempt (or of a hand-over without one).
fn attempt_detail(
    f: &FinishAttempt,
    number: i64,
    message_id: &str,
    next_at: Option<i64>,
    fallback: Option<(&String, &String)>,
) -> Value {
    let a = f.attempt.as_ref();
    json!({
        "message_id": message_id,
        "destination": f.destination,
        "attempt": a.map(|_| number),
        "outcome": a.map(|a| a.outcome.as_str()),
        "status_code": a.and_then(|a| a.status_code),
        "error_class": a.and_then(|a| a.error_class.clone()),
        "duration_ms": a.map(|a| a.duration_ms),
        "next_attempt_at": next_at.map(rfc3339),
        "fallback": fallback.map(|(d, id)| json!({"destination": d, "delivery_id": id})),
    })
}

/// An attempt that delivered and changes nothing else (no pause, no disablement).
fn plain_success(f: &FinishAttempt) -> bool {
    f.attempt
        .as_ref()
        .is_some_and(|a| a.outcome == AttemptOutcome::Delivered)
        && matches!(f.next, NextState::Delivered)
        && f.pause_destination_until.is_none()
        && f.disable_destination.is_none()
}

/// Records a batch of finished attempts in the writer's transaction. Where every attempt
/// of a destination in the batch delivered (the common case under load), they are written
/// together: one multi-row `UPDATE … FROM (VALUES …)`, one multi-row INSERT of attempts,
/// and the destination's health and breaker applied once — what applying them one by one
/// would leave, since after the first success the rest change nothing. Any other
/// destination's attempts are recorded one by one, in order ([`finish_in`]).
async fn finish_many(w: &mut Writer, batch: &[FinishAttempt]) -> Result<Vec<FinishOutcome>> {
    let mut out = vec![FinishOutcome::default(); batch.len()];
    let mut mixed: HashSet<&str> = HashSet::new();
    let mut seen = HashSet::new();
    for f in batch {
        // A delivery twice in one batch (not expected) is recorded in order, one by one.
        if !plain_success(f) || !seen.insert(f.delivery_id.as_str()) {
            mixed.insert(f.destination.as_str());
        }
    }
    let (together, one_by_one): (Vec<usize>, Vec<usize>) =
        (0..batch.len()).partition(|&i| !mixed.contains(batch[i].destination.as_str()));
    if together.len() > 1 {
        record_successes(w, batch, &together, &mut out).await?;
    } else {
        for &i in &together {
            out[i] = finish_in(w, &batch[i]).await?;
        }
    }
    for i in one_by_one {
        out[i] = finish_in(w, &batch[i]).await?;
    }
    Ok(out)
}

/// Writes attempt rows (the finish, the attempt, its number) with multi-row INSERTs.
async fn insert_attempts(
    w: &mut Writer,
    rows: &[(&FinishAttempt, &AttemptRecord, i64)],
) -> Result<()> {
    for chunk in insert_chunks(rows) {
        let mut q = sqlx::query(AssertSqlSafe(values_sql_for(
            w.dialect,
            "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, status_code, error_class, error, response_excerpt, destination)",
            chunk.len(),
            10,
        )));
        for &(f, a, number) in chunk {
            q = q
                .bind(&f.delivery_id)
                .bind(number)
                .bind(a.started_at)
                .bind(a.duration_ms)
                .bind(a.outcome.as_str())
                .bind(a.status_code.map(i64::from))
                .bind(&a.error_class)
                .bind(&a.error)
                .bind(&a.response_excerpt)
                .bind(&f.destination);
        }
        q.execute(&mut w.conn).await?;
    }
    Ok(())
}

/// The plain successes of [`finish_many`], written with multi-row statements.
async fn record_successes(
    w: &mut Writer,
    batch: &[FinishAttempt],
    idx: &[usize],
    out: &mut [FinishOutcome],
) -> Result<()> {
    let mut stored: HashMap<String, (i64, String)> = HashMap::with_capacity(idx.len());
    for chunk in insert_chunks(idx) {
        let values = values_sql_for(
            w.dialect,
            "WITH v(vid, vtoken, vcode, verror, vnow) AS (",
            chunk.len(),
            5,
        );
        // `+status` keeps SQLite's planner off the status index: it would walk every
        // in-flight row and scan the values for each, instead of one key lookup per value.
        let status = match w.dialect {
            Dialect::Sqlite => "+deliveries.status",
            Dialect::Postgres => "deliveries.status",
        };
        let sql = format!(
            "{values}) UPDATE deliveries SET status = 'delivered', attempt_count = attempt_count + 1, next_attempt_at = NULL,
                    lease_until = NULL, lease_token = NULL, last_status_code = v.vcode, last_error = v.verror, dead_at = NULL, updated_at = v.vnow
             FROM v WHERE deliveries.id = v.vid AND deliveries.lease_token = v.vtoken AND {status} = 'in_flight'
             RETURNING id, attempt_count, message_id"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for &i in chunk {
            let f = &batch[i];
            let a = f.attempt.as_ref();
            q = q
                .bind(&f.delivery_id)
                .bind(&f.lease_token)
                .bind(a.and_then(|a| a.status_code).map(i64::from))
                .bind(a.and_then(|a| a.error.clone()))
                .bind(f.now);
        }
        for r in q.fetch_all(&mut w.conn).await? {
            stored.insert(
                r.try_get("id")?,
                (r.try_get("attempt_count")?, r.try_get("message_id")?),
            );
        }
    }
    // Only the attempts whose lease still held were recorded.
    let recorded: Vec<(usize, &AttemptRecord, i64)> = idx
        .iter()
        .filter_map(|&i| {
            let f = &batch[i];
            let (number, _) = stored.get(&f.delivery_id)?;
            Some((i, f.attempt.as_ref()?, *number))
        })
        .collect();
    let rows: Vec<_> = recorded
        .iter()
        .map(|&(i, a, number)| (&batch[i], a, number))
        .collect();
    insert_attempts(w, &rows).await?;
    // Per destination, in the order they first appear: its newest success, and its
    // breaker event.
    let mut destinations: Vec<(&str, i64, Option<&BreakerEvent>, Vec<usize>)> = Vec::new();
    for &(i, _, number) in &recorded {
        let f = &batch[i];
        let message_id = &stored[&f.delivery_id].1;
        let detail = attempt_detail(f, number, message_id, None, None);
        audit(
            w,
            &new_audit(
                f.now,
                "dispatcher",
                NextState::Delivered.audit_action(),
                &f.delivery_id,
                detail,
            ),
        )
        .await?;
        out[i].recorded = true;
        match destinations.iter_mut().find(|d| d.0 == f.destination) {
            Some(d) => {
                d.1 = d.1.max(f.now);
                d.2 = d.2.or(f.breaker.as_ref());
                d.3.push(i);
            }
            None => destinations.push((&f.destination, f.now, f.breaker.as_ref(), vec![i])),
        }
    }
    for (destination, now, breaker, list) in destinations {
        mark_healthy(w, destination, now).await?;
        if let Some(event) = breaker {
            let (json, transition) = apply_breaker(w, destination, event, now).await?;
            out[list[0]].breaker_transition = transition;
            for i in list {
                out[i].breaker = Some(json.clone());
            }
        }
    }
    Ok(())
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(db)) if db.is_unique_violation())
}

/// A destination's stored breaker, read under its row lock on Postgres.
async fn locked_breaker(w: &mut Writer, destination: &str) -> Result<Option<String>> {
    let sql = match w.dialect {
        Dialect::Sqlite => "SELECT breaker FROM destinations WHERE name = $1",
        Dialect::Postgres => "SELECT breaker FROM destinations WHERE name = $1 FOR UPDATE",
    };
    Ok(sqlx::query_scalar(sql)
        .bind(destination)
        .fetch_optional(&mut w.conn)
        .await?
        .flatten())
}

pub(crate) fn audit_from_row(r: &AnyRow) -> Result<AuditEntry> {
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
    w.new_work |= replay;
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

const GROUP_COLS: &str = "id, group_key, service, fingerprint, title, culprit, level, environment, status, report_count, first_seen, last_seen, window_start, window_count, prev_window_count, last_alert_at, folded, pending_reason, last_event, last_message_id, resolved_at, updated_at";

fn group_from_row(r: &AnyRow) -> Result<ErrorGroupRecord> {
    let status: String = r.try_get("status")?;
    let pending: Option<String> = r.try_get("pending_reason")?;
    Ok(ErrorGroupRecord {
        id: r.try_get("id")?,
        key: r.try_get("group_key")?,
        service: r.try_get("service")?,
        fingerprint: r.try_get("fingerprint")?,
        title: r.try_get("title")?,
        culprit: r.try_get("culprit")?,
        level: r.try_get("level")?,
        environment: r.try_get("environment")?,
        state: GroupState {
            status: GroupStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("error group status {status:?}")))?,
            count: r.try_get("report_count")?,
            first_seen: r.try_get("first_seen")?,
            last_seen: r.try_get("last_seen")?,
            window_start: r.try_get("window_start")?,
            window_count: r.try_get("window_count")?,
            prev_window_count: r.try_get("prev_window_count")?,
            last_alert_at: r.try_get("last_alert_at")?,
            folded: r.try_get("folded")?,
            pending: pending.as_deref().and_then(AlertReason::parse),
        },
        last_event: r.try_get("last_event")?,
        last_message_id: r.try_get("last_message_id")?,
        resolved_at: r.try_get("resolved_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Folds one report into its group and accepts the alert it causes, in the caller's
/// transaction. The group is inserted if absent (`ON CONFLICT DO NOTHING`), then read —
/// on Postgres `FOR UPDATE`, so nodes sharing the database serialize on the row too.
async fn record_error_in(
    w: &mut Writer,
    occ: &ErrorOccurrence,
    alert: AlertBuilder,
) -> Result<ErrorOutcome> {
    let (fresh, fresh_alert) = observe(None, occ.now, &occ.policy);
    let inserted = sqlx::query(
        "INSERT INTO error_groups (id, group_key, service, fingerprint, title, culprit, level, environment, status, report_count,
            first_seen, last_seen, window_start, window_count, prev_window_count, last_alert_at, folded, pending_reason, last_event, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, NULL, $18, $19)
         ON CONFLICT (group_key) DO NOTHING",
    )
    .bind(&occ.new_id)
    .bind(&occ.key)
    .bind(&occ.service)
    .bind(&occ.fingerprint)
    .bind(&occ.title)
    .bind(&occ.culprit)
    .bind(&occ.level)
    .bind(&occ.environment)
    .bind(fresh.status.as_str())
    .bind(fresh.count)
    .bind(fresh.first_seen)
    .bind(fresh.last_seen)
    .bind(fresh.window_start)
    .bind(fresh.window_count)
    .bind(fresh.prev_window_count)
    .bind(fresh.last_alert_at)
    .bind(fresh.folded)
    .bind(&occ.event)
    .bind(occ.now)
    .execute(&mut w.conn)
    .await?
    .rows_affected();
    let new_group = inserted == 1;
    let lock = match w.dialect {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE",
    };
    let sql = format!("SELECT {GROUP_COLS} FROM error_groups WHERE group_key = $1{lock}");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(&occ.key)
        .fetch_one(&mut w.conn)
        .await?;
    let mut group = group_from_row(&row)?;
    let decision = if new_group {
        audit(
            w,
            &new_audit(
                occ.now,
                &occ.actor,
                "error_group.created",
                &group.id,
                json!({"service": occ.service, "title": occ.title}),
            ),
        )
        .await?;
        fresh_alert
    } else {
        let (state, decision) = observe(Some(&group.state), occ.now, &occ.policy);
        group.state = state;
        group.level = occ.level.clone();
        group.environment = occ.environment.clone();
        group.last_event = occ.event.clone();
        group.updated_at = occ.now;
        decision
    };
    let mut sent = None;
    if let Some(d) = decision {
        let message = alert(&group, &d).map_err(StoreError::Corrupt)?;
        let id = message.id.clone();
        accept_batch(w, &[&message]).await?;
        group.last_message_id = Some(id.clone());
        sent = Some((d, id));
    }
    let s = &group.state;
    sqlx::query(
        "UPDATE error_groups SET level = $1, environment = $2, status = $3, report_count = $4, last_seen = $5, window_start = $6,
            window_count = $7, prev_window_count = $8, last_alert_at = $9, folded = $10, pending_reason = $11, last_event = $12,
            last_message_id = $13, updated_at = $14
         WHERE id = $15",
    )
    .bind(&group.level)
    .bind(&group.environment)
    .bind(s.status.as_str())
    .bind(s.count)
    .bind(s.last_seen)
    .bind(s.window_start)
    .bind(s.window_count)
    .bind(s.prev_window_count)
    .bind(s.last_alert_at)
    .bind(s.folded)
    .bind(s.pending.map(AlertReason::as_str))
    .bind(&group.last_event)
    .bind(&group.last_message_id)
    .bind(group.updated_at)
    .bind(&group.id)
    .execute(&mut w.conn)
    .await?;
    Ok(ErrorOutcome {
        group,
        new_group,
        alert: sent,
    })
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<()> {
        if self.jobs.is_closed() {
            return Err(StoreError::Closed);
        }
        if let HealthState::Down { fault, detail, .. } = self.health.state() {
            return Err(StoreError::from_fault(fault, detail));
        }
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        if let Some(full) = self.disk_full() {
            return Err(full);
        }
        if herald_core::clock::now_ms() - self.health.last_commit_ms() > FRESH_COMMIT_MS {
            // Nothing committed lately: prove the writer can, with a heartbeat.
            let probe = self.write(|w| Box::pin(heartbeat(w)));
            tokio::time::timeout(std::time::Duration::from_secs(5), probe)
                .await
                .map_err(|_| StoreError::Unavailable("a probe commit took over 5 s".into()))??;
        }
        Ok(())
    }

    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    async fn accept_messages(&self, batch: Vec<NewMessage>) -> Result<Vec<AcceptOutcome>> {
        let batch = Arc::new(batch);
        let mut tries = 0;
        loop {
            let (tx, rx) = oneshot::channel();
            let job = AcceptJob {
                batch: batch.clone(),
                reply: tx,
            };
            self.jobs
                .send(Msg::Accept(job))
                .await
                .map_err(|_| StoreError::Closed)?;
            let answer = rx.await.map_err(|_| self.not_run())?;
            match answer {
                // Another node stored the same idempotency key between our look-up and our
                // insert (it committed first): look again, and it is a replay.
                Err(e) if is_unique_violation(&e) && tries < 3 => tries += 1,
                other => return other,
            }
        }
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
        let mut f = Filtered::new(format!(
            "SELECT {DELIVERY_COLS} FROM deliveries d WHERE 1 = 1"
        ));
        f.and(q.destination.is_some(), "d.destination = ?");
        f.and(q.status.is_some(), "d.status = ?");
        f.and(q.message_id.is_some(), "d.message_id = ?");
        f.and(
            q.idempotency_key.is_some(),
            "d.message_id IN (SELECT id FROM messages WHERE idempotency_key = ?)",
        );
        f.and(q.before.is_some(), "d.id < ?");
        let sql = f.newest_first("d.id");
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
                w.config_changed = true;
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
                w.config_changed = true;
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
                    w.new_work = true;
                    w.config_changed = true;
                    audit(w, &new_audit(now, &actor, "destination.enabled", &name, json!({}))).await?;
                }
                Ok(n > 0)
            })
        })
        .await
    }

    async fn start_probe(&self, name: &str, deadline: i64, now: i64) -> Result<Option<String>> {
        let name = name.to_string();
        self.write(move |w| {
            Box::pin(async move {
                let stored = locked_breaker(w, &name).await?;
                let mut b = stored_breaker(stored.as_deref());
                if b.permit(now) != Permit::Probe {
                    return Ok(None);
                }
                let transition = b.start_probe(deadline);
                let json = serde_json::to_string(&b).unwrap_or_default();
                sqlx::query("UPDATE destinations SET breaker = $1 WHERE name = $2")
                    .bind(&json)
                    .bind(&name)
                    .execute(&mut w.conn)
                    .await?;
                if let Some(t) = transition {
                    let detail: Value = serde_json::to_value(&b).unwrap_or(Value::Null);
                    audit(w, &new_audit(now, "dispatcher", t.action(), &name, detail)).await?;
                }
                Ok(Some(json))
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
        self.write(move |w| Box::pin(async move { finish_many(w, &batch).await }))
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
        let mut f = Filtered::new(
            "SELECT d.id, d.destination, d.message_id, m.event_type, d.attempt_count, d.last_error, d.last_status_code, d.dead_at
             FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.status = 'dead'",
        );
        f.and(q.queue.is_some(), "d.destination = ?");
        f.and(q.before.is_some(), "d.id < ?");
        let sql = f.newest_first("d.id");
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
                w.new_work |= n > 0;
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

    async fn record_error(
        &self,
        occ: ErrorOccurrence,
        alert: AlertBuilder,
    ) -> Result<ErrorOutcome> {
        self.write(move |w| Box::pin(async move { record_error_in(w, &occ, alert).await }))
            .await
    }

    async fn get_error_group(&self, id: &str) -> Result<Option<ErrorGroupRecord>> {
        let sql = format!("SELECT {GROUP_COLS} FROM error_groups WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|r| group_from_row(&r)).transpose()
    }

    async fn list_error_groups(&self, q: &ErrorGroupQuery) -> Result<Vec<ErrorGroupRecord>> {
        let mut f = Filtered::new(format!("SELECT {GROUP_COLS} FROM error_groups WHERE 1 = 1"));
        f.and(q.status.is_some(), "status = ?");
        f.and(q.service.is_some(), "service = ?");
        f.and(q.before.is_some(), "id < ?");
        let sql = f.newest_first("id");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(s) = q.status {
            query = query.bind(s.as_str());
        }
        if let Some(s) = &q.service {
            query = query.bind(s);
        }
        if let Some(b) = &q.before {
            query = query.bind(b);
        }
        let rows = query.bind(q.limit as i64).fetch_all(&self.reads).await?;
        rows.iter().map(group_from_row).collect()
    }

    async fn set_error_group_status(
        &self,
        id: &str,
        status: GroupStatus,
        actor: &str,
        now: i64,
    ) -> Result<Option<ErrorGroupRecord>> {
        let (id, actor) = (id.to_string(), actor.to_string());
        self.write(move |w| {
            Box::pin(async move {
                // Resolving drops an alert held back by the window: it is moot now.
                let n = sqlx::query(
                    "UPDATE error_groups SET status = $1, resolved_at = CASE WHEN $1 = 'resolved' THEN $2 ELSE NULL END,
                        pending_reason = CASE WHEN $1 = 'resolved' THEN NULL ELSE pending_reason END, updated_at = $2
                     WHERE id = $3",
                )
                .bind(status.as_str())
                .bind(now)
                .bind(&id)
                .execute(&mut w.conn)
                .await?
                .rows_affected();
                if n == 0 {
                    return Ok(None);
                }
                let action = format!("error_group.{}", status.as_str());
                audit(w, &new_audit(now, &actor, &action, &id, json!({}))).await?;
                let sql = format!("SELECT {GROUP_COLS} FROM error_groups WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql))
                    .bind(&id)
                    .fetch_one(&mut w.conn)
                    .await?;
                group_from_row(&row).map(Some)
            })
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
                    w.config_changed = true;
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
        let slot = Arc::new(std::sync::Mutex::new(None));
        let staged = slot.clone();
        self.write(move |w| {
            Box::pin(async move {
                w.checkpoints.push(staged);
                w.checkpoint_signers.push((sign, now));
                Ok(())
            })
        })
        .await?;
        Ok(slot.lock().ok().and_then(|s| *s))
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

    async fn create_session(&self, s: SessionRecord) -> Result<()> {
        self.write(move |w| {
            Box::pin(async move {
                sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
                    .bind(s.created_at)
                    .execute(&mut w.conn)
                    .await?;
                sqlx::query(
                    "INSERT INTO ui_sessions (id_hash, token_id, name, scopes, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&s.id_hash)
                .bind(&s.token_id)
                .bind(&s.name)
                .bind(s.scopes.join(" "))
                .bind(&s.csrf)
                .bind(s.created_at)
                .bind(s.expires_at)
                .execute(&mut w.conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn get_session(&self, id_hash: &str, now: i64) -> Result<Option<SessionRecord>> {
        let row = sqlx::query("SELECT * FROM ui_sessions WHERE id_hash = $1 AND expires_at > $2")
            .bind(id_hash)
            .bind(now)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|r| {
            let scopes: String = r.try_get("scopes")?;
            Ok(SessionRecord {
                id_hash: r.try_get("id_hash")?,
                token_id: r.try_get("token_id")?,
                name: r.try_get("name")?,
                scopes: scopes.split_whitespace().map(str::to_string).collect(),
                csrf: r.try_get("csrf")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        let id_hash = id_hash.to_string();
        self.write(move |w| {
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

    async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.jobs.send(Msg::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
        if let Some(l) = &self.listener {
            l.abort();
        }
        self.reads.close().await;
    }

    fn remote_signals(&self) -> Option<crate::RemoteSignals> {
        self.remote.clone()
    }

    fn single_node(&self) -> bool {
        self.dialect == Dialect::Sqlite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_chunks_cover_every_row_in_power_of_two_sizes() {
        for n in [0usize, 1, 2, 3, 7, 127, 128, 129, 300, 513] {
            let rows: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = insert_chunks(&rows).collect();
            assert_eq!(chunks.concat(), rows, "n = {n}: every row once, in order");
            assert!(
                chunks
                    .iter()
                    .all(|c| c.len().is_power_of_two() && c.len() <= ROWS_PER_INSERT),
                "n = {n}: {:?}",
                chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn sqlite_placeholders_are_anonymous_postgres_ones_numbered() {
        assert_eq!(
            values_sql_for(Dialect::Sqlite, "INSERT INTO t (a, b)", 2, 2),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            values_sql("INSERT INTO t (a, b)", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }
}
