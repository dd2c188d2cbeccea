//! # herald-server
//!
//! The running Herald: the v1 HTTP API ([`api`]), authentication ([`auth`]), ingest
//! ([`ingest`]), the dispatcher ([`dispatch`]) and the glue that starts and stops them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! let mut config = herald_server::config::Config::default();
//! config.listen = "127.0.0.1:0".into();
//! let herald = herald_server::start(config).await?;
//! println!("listening on {}", herald.addr);
//! herald.shutdown().await;
//! # Ok(()) }
//! ```

pub mod alerts;
pub mod api;
pub mod attachments;
pub mod audit;
pub mod auth;
pub mod config;
pub mod destination_cache;
pub mod destinations;
pub mod dispatch;
pub mod ingest;
pub mod keys;
pub mod listener;
pub mod operational;
pub mod portal;
pub mod state;
pub mod telemetry;
pub mod tenants;
pub mod ui;
pub mod waiting;

pub use herald_channels::client::install_crypto_provider;

use auth::{Authenticator, Scope, new_token};
use config::{Config, Database};
use destination_cache::DestinationCache;
use dispatch::{DispatchContext, DispatchSettings, Dispatcher};
use herald_channels::Channels;
use herald_core::crypto::SecretBox;
use herald_core::netpolicy::NetPolicy;
use herald_store::Store;
use herald_store::sql::{SqlStore, StoreOptions};
use state::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often expired idempotency keys and old messages are pruned and the audit log is
/// checkpointed.
const UPKEEP_EVERY: Duration = Duration::from_secs(60);

/// A started Herald.
pub struct Herald {
    pub addr: SocketAddr,
    /// The admin token created on first start (print it: it is shown only once).
    pub created_admin_token: Option<String>,
    pub state: AppState,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    dispatcher: JoinHandle<()>,
    watcher: JoinHandle<()>,
    upkeep: JoinHandle<()>,
}

/// Opens the configured store (creating directories as needed) and checks the master key.
pub async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, SecretBox), String> {
    let database = config.database()?;
    if let Database::Sqlite(path) = &database
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
    let secrets = keys::load_master_key(config.master_key.as_deref(), &config.data_dir)?;
    if let Database::Sqlite(path) = &database {
        refuse_damaged(path, config).await?;
    }
    let store = open_database(&database, config).await?;
    keys::verify_key(store.as_ref(), &secrets)
        .await
        .map_err(|e| match &database {
            Database::Postgres(_) => format!(
                "{e}; every node of a cluster must be started with the same HERALD_MASTER_KEY"
            ),
            Database::Sqlite(_) => e,
        })?;
    Ok((store, secrets))
}

/// Refuses a SQLite database that `PRAGMA quick_check` finds damaged (files up to
/// `[store] quick_check_max_bytes`), saying what to run, before anything writes to it.
async fn refuse_damaged(path: &std::path::Path, config: &Config) -> Result<(), String> {
    let max = config.store.quick_check_max_bytes;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // a new database
    };
    if max == 0 || meta.len() > max {
        return Ok(());
    }
    let problems = herald_store::doctor::sqlite_check(path, true)
        .await
        .map_err(|e| format!("cannot check {}: {e}", path.display()))?;
    if problems.is_empty() {
        return Ok(());
    }
    // The doctor's command line for this very database.
    let doctor = match &config.database_url {
        None => format!("herald doctor --data-dir {}", config.data_dir.display()),
        Some(_) => format!("herald doctor --database-url sqlite://{}", path.display()),
    };
    Err(format!(
        "the database {} is damaged ({}); Herald will not serve it. Run `{doctor}` for a full report, then restore the latest backup (docs/operations.md#backup-and-restore)",
        path.display(),
        problems.join("; "),
    ))
}

/// Opens a database and applies its migrations (no key check).
pub async fn open_database(database: &Database, config: &Config) -> Result<Arc<dyn Store>, String> {
    let opts = StoreOptions {
        synchronous_full: config.sqlite_synchronous == "full",
        read_connections: config.database_read_connections,
    };
    // A Postgres that is not up yet (a cluster starting before its database) is waited
    // for, with backoff, up to `[store] connect_timeout`; any other error ends start-up.
    let deadline = std::time::Instant::now() + config.store.connect_timeout.0;
    let mut wait = Duration::from_millis(250);
    let mut tries = 0u32;
    loop {
        tries += 1;
        let store = match database {
            Database::Sqlite(path) => SqlStore::open(path, opts.clone()).await,
            Database::Postgres(url) => SqlStore::open_postgres(url, opts.clone()).await,
        };
        let e = match store {
            Ok(store) => {
                if tries > 1 {
                    tracing::info!(tries, "the database answered; starting");
                }
                return Ok(Arc::new(store));
            }
            Err(e) => e,
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let remote = matches!(database, Database::Postgres(_));
        if !remote || e.fault() != Some(herald_store::health::Fault::Unavailable) || left.is_zero()
        {
            let waited = if tries > 1 {
                format!(
                    " (gave up after {tries} tries in {:?})",
                    config.store.connect_timeout.0
                )
            } else {
                String::new()
            };
            return Err(format!("cannot open {}: {e}{waited}", database.describe()));
        }
        tracing::warn!(
            database = %database.describe(),
            error = %e,
            try_no = tries,
            retry_in_ms = wait.min(left).as_millis() as u64,
            "the database does not answer yet; retrying"
        );
        tokio::time::sleep(wait.min(left)).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Opens the store, applies configuration and starts serving.
pub async fn start(config: Config) -> Result<Herald, String> {
    config.check()?;
    let config = Arc::new(config);
    let policy = NetPolicy::with_allowed(&config.allow_networks)?;
    telemetry::prometheus();
    let (store, secrets) = open_store(&config).await?;
    let signer = keys::load_signer(store.as_ref(), &secrets).await?;

    let channels = Channels::new(policy, config.secret_policy()).map_err(|e| e.to_string())?;
    let destinations = Arc::new(DestinationCache::default());
    let (events, dispatcher_events) = tokio::sync::mpsc::unbounded_channel();
    let dispatch = DispatchContext {
        store: store.clone(),
        destinations: destinations.clone(),
        channels: channels.clone(),
        settings: DispatchSettings {
            concurrency: config.concurrency,
            destination_concurrency: config.destination_concurrency,
            lease: config.lease.0,
            max_retry_after: config.max_retry_after.0,
        },
        dispatcher: Dispatcher::new(),
        events,
    };
    let state = AppState {
        store: store.clone(),
        secrets: Arc::new(secrets),
        channels,
        destinations,
        dispatch,
        auth: Arc::new(Authenticator::new(config.admin_token.clone())),
        signer: Arc::new(signer),
        config: config.clone(),
        quotas: Arc::default(),
    };
    state
        .destinations
        .reload(store.as_ref(), &state.secrets)
        .await?;
    destinations::apply_config(&state).await?;
    let created_admin_token = bootstrap_admin(&state).await?;

    listener::raise_nofile_limit();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = watch::channel(false);
    let app = api::router(state.clone());
    let limits = listener::Limits {
        header_timeout: config.http.header_timeout.0,
        idle_timeout: config.http.idle_timeout.0,
        max_connections: config.http.max_connections,
    };
    let server = tokio::spawn(listener::serve(listener, app, limits, stopped.clone()));
    let dispatcher = state.dispatch.dispatcher.spawn(state.dispatch.clone());
    tokio::spawn(operational::run(state.clone(), dispatcher_events));
    let watcher = tokio::spawn(watch_config(state.clone(), stopped.clone()));
    let upkeep = tokio::spawn(upkeep(state.clone(), stopped));
    telemetry::spawn_metrics_upkeep();
    tracing::info!(%addr, "herald is serving");
    Ok(Herald {
        addr,
        created_admin_token,
        state,
        stop,
        server,
        dispatcher,
        watcher,
        upkeep,
    })
}

/// Creates the first admin token when the store has none and no fixed token is configured.
async fn bootstrap_admin(state: &AppState) -> Result<Option<String>, String> {
    if state.config.admin_token.is_some() {
        return Ok(None);
    }
    let tokens = state.store.list_tokens().await.map_err(|e| e.to_string())?;
    if tokens
        .iter()
        .any(|t| t.revoked_at.is_none() && t.scopes.contains(&Scope::Admin))
    {
        return Ok(None);
    }
    let t = new_token("admin", &[Scope::Admin], None, herald_core::clock::now_ms());
    state
        .store
        .create_token(t.record, "system")
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(t.token))
}

/// How often destinations are re-read from the store (changes made by other nodes).
const RELOAD: Duration = Duration::from_secs(10);

/// Keeps this node's copies of shared configuration fresh: destinations re-read every
/// [`RELOAD`] and at once when another node says they changed (Postgres `NOTIFY`, which also
/// makes revoked tokens stop working here at once); token use recorded on the way.
async fn watch_config(state: AppState, mut stopped: watch::Receiver<bool>) {
    let remote = state.store.remote_signals();
    loop {
        let remote_change = async {
            match &remote {
                Some(r) => r.config.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = remote_change => state.auth.forget_all(),
            _ = tokio::time::sleep(RELOAD) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        if let Err(e) = state
            .destinations
            .reload(state.store.as_ref(), &state.secrets)
            .await
        {
            tracing::error!(error = %e, "reloading destinations failed");
        }
        state.dispatch.dispatcher.wake();
        state.auth.flush_last_used(state.store.as_ref()).await;
    }
}

async fn upkeep(state: AppState, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(UPKEEP_EVERY) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let now = herald_core::clock::now_ms();
        let cutoff = now - state.config.retention.0.as_millis() as i64;
        match state.store.prune(now, cutoff).await {
            Ok(n) if n > 0 => tracing::info!(
                removed = n,
                "pruned expired idempotency keys and old messages"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
        audit::checkpoint(&state).await;
    }
}

impl Herald {
    /// Graceful shutdown: stop taking requests, let attempts in flight finish (up to the
    /// grace period, then release their leases), record token use, close the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        self.state
            .dispatch
            .dispatcher
            .shutdown(&self.state.dispatch, self.state.config.shutdown_grace.0)
            .await;
        let _ = self.dispatcher.await;
        let _ = self.watcher.await;
        let _ = self.upkeep.await;
        self.state
            .auth
            .flush_last_used(self.state.store.as_ref())
            .await;
        self.state.store.close().await;
        tracing::info!("herald stopped");
    }
}
