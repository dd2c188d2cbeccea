//! The writer task: it owns the only write connection, reconnects with backoff, and runs
//! every waiting job as one group.

use super::*;

impl GroupFailure {
    pub(super) fn error(&self) -> StoreError {
        let msg = self.message.clone();
        match self.fault {
            _ if self.outcome_unknown => StoreError::CommitUnknown(msg),
            Some(fault) => StoreError::from_fault(fault, msg),
            // A commit refused for another reason was rolled back: safe to retry.
            None => StoreError::Unavailable(format!("the commit failed: {msg}")),
        }
    }
}

/// A job running `f` whose result goes to `tx` once the commit is known.
pub(super) fn job<T, F>(f: F, tx: oneshot::Sender<Result<T>>) -> Job
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
pub(super) fn reply<T: Send + 'static>(result: Result<T>, tx: oneshot::Sender<Result<T>>) -> Reply {
    Box::new(move |failure: Option<&GroupFailure>| {
        let _ = tx.send(match failure {
            None => result,
            Some(f) => Err(f.error()),
        });
    })
}

/// An accept on its own, as an ordinary job in its own savepoint.
pub(super) fn accept_job(a: AcceptJob) -> Job {
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

/// Connects the writer (SQLite: its pragmas), migrates, and reads the audit head.
pub(super) async fn open_writer(
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
pub(super) async fn connect_writer(
    dialect: Dialect,
    url: &str,
    opts: &StoreOptions,
) -> Result<AnyConnection> {
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
    } else {
        sqlx::raw_sql(POSTGRES_WRITER_SETTINGS)
            .execute(&mut conn)
            .await?;
    }
    Ok(conn)
}

/// The writer's session on Postgres. A node frozen in the middle of a transaction
/// (SIGSTOP, a VM paused, a stalled disk under its process) would otherwise keep that
/// transaction's locks — the audit chain's advisory lock among them — for as long as it is
/// frozen, and every other node's commits would wait behind it. Herald sends a
/// transaction's statements back to back, so a session idle inside one for seconds belongs
/// to such a node: Postgres ends it, its locks go, and the node reconnects when it wakes.
const POSTGRES_WRITER_SETTINGS: &str = "SET idle_in_transaction_session_timeout = '5s'";

impl Writer {
    /// Opens a fresh connection in place of a broken one and re-reads the audit head (a
    /// commit whose outcome was unknown may have moved it). On failure the store stays
    /// down and the next try waits longer.
    pub(super) async fn reconnect(&mut self) -> bool {
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

    pub(super) fn wait_longer(&mut self) {
        self.next_try = tokio::time::Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Notes a group that did not commit: the store is down, and a broken connection is
    /// reopened before its next use.
    pub(super) fn failed(&mut self, f: &GroupFailure) {
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
    pub(super) async fn probe(&mut self) {
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
pub(super) async fn heartbeat(w: &mut Writer) -> Result<()> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ('heartbeat', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(herald_core::clock::now_ms().to_string())
        .execute(&mut w.conn)
        .await?;
    Ok(())
}

pub(super) async fn run_writer(mut w: Writer, mut rx: mpsc::Receiver<Msg>) {
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
pub(super) async fn run_group(w: &mut Writer, jobs: Vec<Job>, accepts: Vec<AcceptJob>) {
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
