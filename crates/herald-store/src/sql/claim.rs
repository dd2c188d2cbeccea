//! Claiming due deliveries under leases, spending rate-limit tokens and honouring breakers
//! and pauses in the same transaction.

use super::*;

pub(super) async fn claim_in(w: &mut Writer, req: &ClaimRequest) -> Result<ClaimResult> {
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
            "SELECT {DELIVERY_COLS}, m.id AS m_id, m.event_type AS m_event_type, m.idempotency_key AS m_idempotency_key, m.body AS m_body, m.created_at AS m_created_at, m.tenant AS m_tenant
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

pub(super) fn breaker_closed(stored: Option<&str>) -> bool {
    Breaker::from_stored(stored).permit(i64::MIN) == Permit::Any
}

/// Reads a destination's token bucket under its row lock (Postgres) and refills it to
/// `now`: the bucket and the whole tokens available.
pub(super) async fn take_bucket(
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
pub(super) async fn claim_due(
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
            .bind(req.lease_token.as_str())
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
pub(super) async fn claim_head(
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
        .bind(req.lease_token.as_str())
        .bind(req.now)
        .bind(&id)
        .execute(&mut w.conn)
        .await?
        .rows_affected();
    Ok((if n > 0 { vec![id] } else { Vec::new() }, None))
}

pub(super) async fn claim(store: &SqlStore, req: ClaimRequest) -> Result<ClaimResult> {
    store
        .write(move |w| Box::pin(async move { claim_in(w, &req).await }))
        .await
}

pub(super) async fn release(
    store: &SqlStore,
    leases: Vec<(DeliveryId, LeaseToken)>,
    now: i64,
) -> Result<()> {
    store.write(move |w| {
        Box::pin(async move {
            for (id, token) in &leases {
                sqlx::query(
                    "UPDATE deliveries SET status = 'pending', lease_until = NULL, lease_token = NULL, next_attempt_at = $1, updated_at = $1
                     WHERE id = $2 AND lease_token = $3 AND status = 'in_flight'",
                )
                .bind(now)
                .bind(id.as_str())
                .bind(token.as_str())
                .execute(&mut w.conn)
                .await?;
            }
            Ok(())
        })
    })
    .await
}
