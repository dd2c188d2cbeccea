//! One group commit: every job in its own savepoint of one transaction, one commit, then
//! the answers.

use super::*;

/// Runs jobs in one transaction, each inside its own savepoint, appends their audit
/// entries, commits once, then answers every caller. The accepts waiting are written first,
/// together as one batch (a few multi-row INSERTs for all of them); should that batch fail,
/// it is undone and each accept runs on its own, so one bad request fails alone. A storage
/// fault stops the group: nothing more runs, all is rolled back, every caller is told.
/// When the transaction cannot begin, nothing ran and the work is handed back.
pub(super) async fn commit_group(
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
pub(super) async fn finish_group(w: &mut Writer) -> std::result::Result<(), GroupFailure> {
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
pub(super) fn fault_of(e: sqlx::Error) -> (Fault, String) {
    let e = StoreError::from(e);
    (e.fault().unwrap_or(Fault::Unavailable), e.detail())
}

/// Writes several callers' accepts as one batch in one savepoint; `Ok(None)` (and nothing
/// written) if it failed on its own, `Err` on a storage fault (the group must stop).
pub(super) async fn accept_together(
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
pub(super) async fn notify_work(w: &mut Writer) -> Result<()> {
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
