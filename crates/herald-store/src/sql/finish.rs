//! Recording finished attempts: the delivery's next state, the attempt, the audit entry,
//! the breaker, pauses and auto-disable — one transaction per attempt, or one per batch.

use super::*;

pub(super) async fn finish_in(w: &mut Writer, f: &FinishAttempt) -> Result<FinishOutcome> {
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
    .bind(f.delivery_id.as_str())
    .bind(f.lease_token.as_str())
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
        .bind(new_id.as_str())
        .bind(&message_id)
        .bind(fallback)
        .bind(f.now)
        .bind(f.delivery_id.as_str())
        .execute(&mut w.conn)
        .await?;
        w.new_work = true;
    }
    let detail = attempt_detail(f, number, &message_id, next_at, fallback);
    audit(
        w,
        &new_audit(f.now, "dispatcher", action, f.delivery_id.as_str(), detail),
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
pub(super) async fn apply_breaker(
    w: &mut Writer,
    destination: &str,
    event: &BreakerEvent,
    now: i64,
) -> Result<(String, Option<String>)> {
    let apply = |stored: Option<&str>| {
        let mut b = Breaker::from_stored(stored);
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
pub(super) async fn mark_healthy(w: &mut Writer, destination: &str, now: i64) -> Result<()> {
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
pub(super) fn attempt_detail(
    f: &FinishAttempt,
    number: i64,
    message_id: &str,
    next_at: Option<i64>,
    fallback: Option<(&String, &DeliveryId)>,
) -> Value {
    let a = f.attempt.as_ref();
    json!({
        "message_id": message_id,
        "destination": f.destination,
        "attempt": a.map(|_| number),
        "outcome": a.map(|a| a.outcome.as_str()),
        "status_code": a.and_then(|a| a.status_code),
        "error_class": a.and_then(|a| a.error_class),
        "duration_ms": a.map(|a| a.duration_ms),
        "next_attempt_at": next_at.map(rfc3339),
        "fallback": fallback.map(|(d, id)| json!({"destination": d, "delivery_id": id})),
    })
}

/// An attempt that delivered and changes nothing else (no pause, no disablement).
pub(super) fn plain_success(f: &FinishAttempt) -> bool {
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
pub(super) async fn finish_many(
    w: &mut Writer,
    batch: &[FinishAttempt],
) -> Result<Vec<FinishOutcome>> {
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
pub(super) async fn insert_attempts(
    w: &mut Writer,
    rows: &[(&FinishAttempt, &AttemptRecord, i64)],
) -> Result<()> {
    for chunk in insert_chunks(rows) {
        let mut q = sqlx::query(AssertSqlSafe(values_sql_for(
            w.dialect,
            "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, status_code, error_class, error, response_excerpt, destination, exchange)",
            chunk.len(),
            11,
        )));
        for &(f, a, number) in chunk {
            q = q
                .bind(f.delivery_id.as_str())
                .bind(number)
                .bind(a.started_at)
                .bind(a.duration_ms)
                .bind(a.outcome.as_str())
                .bind(a.status_code.map(i64::from))
                .bind(a.error_class.map(ErrorClass::as_str))
                .bind(&a.error)
                .bind(&a.response_excerpt)
                .bind(&f.destination)
                .bind(
                    a.exchange
                        .as_ref()
                        .and_then(|x| serde_json::to_string(x).ok()),
                );
        }
        q.execute(&mut w.conn).await?;
    }
    Ok(())
}

/// The plain successes of [`finish_many`], written with multi-row statements.
pub(super) async fn record_successes(
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
                .bind(f.delivery_id.as_str())
                .bind(f.lease_token.as_str())
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
            let (number, _) = stored.get(f.delivery_id.as_str())?;
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
        let message_id = &stored[f.delivery_id.as_str()].1;
        let detail = attempt_detail(f, number, message_id, None, None);
        audit(
            w,
            &new_audit(
                f.now,
                "dispatcher",
                NextState::Delivered.audit_action(),
                f.delivery_id.as_str(),
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

/// A destination's stored breaker, read under its row lock on Postgres.
pub(super) async fn locked_breaker(w: &mut Writer, destination: &str) -> Result<Option<String>> {
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

pub(super) async fn finish_attempt(store: &SqlStore, f: FinishAttempt) -> Result<FinishOutcome> {
    store
        .write(move |w| Box::pin(async move { finish_in(w, &f).await }))
        .await
}

pub(super) async fn finish_attempts(
    store: &SqlStore,
    batch: Vec<FinishAttempt>,
) -> Result<Vec<FinishOutcome>> {
    store
        .write(move |w| Box::pin(async move { finish_many(w, &batch).await }))
        .await
}
