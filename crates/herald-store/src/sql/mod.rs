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
//!
//! One file per topic: this one holds the types, settings and [`SqlStore`] itself;
//! `migrate` the schema; `writer` and `group` the writer task and its group commit;
//! `audit` the chain; `rows` the row mapping and SQL helpers; `accept`, `claim`, `finish`,
//! `dlq`, `error_groups`, `destinations`, `deliveries`, `access` (tokens, sessions), `tenants`
//! (tenants and the event-type catalog) and
//! `meta` (readiness, settings, pruning) what their names say; `store` maps each [`Store`]
//! method to the function of its topic.

use crate::health::{Fault, Health, HealthState};
use crate::model::*;
use crate::{CheckpointFn, Result, Store, StoreError};
use async_trait::async_trait;
use herald_core::audit::{AuditEntry, CHECKPOINT_ACTION, GENESIS, entry_hash};
use herald_core::breaker::{Breaker, Permit};
use herald_core::clock::rfc3339;
use herald_core::delivery::{AttemptOutcome, DeliveryStatus, ErrorClass};
use herald_core::error_report::{AlertReason, GroupState, GroupStatus, observe};
use herald_core::ids::{DeliveryId, ErrorGroupId, LeaseToken, MessageId};
use herald_core::rate_limit::{RateLimit, TokenBucket};
use herald_core::scope::Scope;
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

mod accept;
mod access;
mod audit;
mod claim;
mod deliveries;
mod destinations;
mod dlq;
mod error_groups;
mod finish;
mod group;
mod meta;
mod migrate;
mod rows;
mod store;
mod tenants;
mod writer;

use accept::*;
use audit::*;
use finish::*;
use group::*;
use migrate::*;
use rows::*;
use writer::*;

pub(crate) use audit::audit_from_row;
pub use migrate::latest_schema;
pub use migrate::migrate_to_latest;
pub(crate) use rows::values_sql;

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

/// A list query from optional filters, newest first: only fixed fragments are spliced in,
/// every value is bound, in the order the filters were added (then the limit).
struct Filtered {
    sql: String,
    n: usize,
}
