//! Reading deliveries, attempts and their statistics.

use super::*;

pub(super) async fn get_delivery(store: &SqlStore, id: &str) -> Result<Option<DeliveryRecord>> {
    let sql = format!("SELECT {DELIVERY_COLS} FROM deliveries d WHERE d.id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&store.reads)
        .await?;
    row.map(|r| delivery_from_row(&r)).transpose()
}

pub(super) async fn list_deliveries(
    store: &SqlStore,
    q: &DeliveryQuery,
) -> Result<Vec<DeliveryRecord>> {
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
    let rows = query.bind(q.limit as i64).fetch_all(&store.reads).await?;
    rows.iter().map(delivery_from_row).collect()
}

pub(super) async fn list_attempts(
    store: &SqlStore,
    delivery_id: &str,
) -> Result<Vec<AttemptRecord>> {
    let rows = sqlx::query(
        "SELECT number, started_at, duration_ms, outcome, status_code, error_class, error, response_excerpt, exchange FROM attempts WHERE delivery_id = $1 ORDER BY number",
    )
    .bind(delivery_id)
    .fetch_all(&store.reads)
    .await?;
    rows.iter().map(attempt_from_row).collect()
}

fn attempt_from_row(r: &AnyRow) -> Result<AttemptRecord> {
    let outcome: String = r.try_get("outcome")?;
    Ok(AttemptRecord {
        number: r.try_get::<i64, _>("number")? as u32,
        started_at: r.try_get("started_at")?,
        duration_ms: r.try_get("duration_ms")?,
        outcome: AttemptOutcome::parse(&outcome)
            .ok_or_else(|| StoreError::Corrupt(format!("attempt outcome {outcome:?}")))?,
        status_code: r
            .try_get::<Option<i64>, _>("status_code")?
            .map(|c| c as u16),
        error_class: r
            .try_get::<Option<String>, _>("error_class")?
            .as_deref()
            .and_then(ErrorClass::parse),
        error: r.try_get("error")?,
        response_excerpt: r.try_get("response_excerpt")?,
        exchange: r
            .try_get::<Option<String>, _>("exchange")?
            .and_then(|s| serde_json::from_str(&s).ok()),
    })
}

pub(super) async fn list_destination_attempts(
    store: &SqlStore,
    destination: &str,
    after: Option<AttemptCursor>,
    limit: u32,
) -> Result<Vec<DestinationAttempt>> {
    let cursor = after.unwrap_or(AttemptCursor {
        started_at: i64::MAX,
        delivery_id: String::new(),
        number: 0,
    });
    let sql = format!(
        "SELECT {ATTEMPT_WITH_DELIVERY} WHERE a.destination = $1
           AND (a.started_at < $2 OR (a.started_at = $2 AND (a.delivery_id < $3 OR (a.delivery_id = $3 AND a.number < $4))))
         ORDER BY a.started_at DESC, a.delivery_id DESC, a.number DESC LIMIT $5"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(destination)
        .bind(cursor.started_at)
        .bind(&cursor.delivery_id)
        .bind(cursor.number as i64)
        .bind(limit as i64)
        .fetch_all(&store.reads)
        .await?;
    rows.iter().map(destination_attempt_from_row).collect()
}

/// An attempt joined with its delivery, for [`DestinationAttempt`].
const ATTEMPT_WITH_DELIVERY: &str = "a.delivery_id, d.message_id, d.destination,
    CASE WHEN d.manual = 1 OR (d.budget_base > 0 AND a.number > d.budget_base) THEN 1 ELSE 0 END AS manual,
    a.number, a.started_at, a.duration_ms, a.outcome, a.status_code, a.error_class, a.error, a.response_excerpt, a.exchange
    FROM attempts a JOIN deliveries d ON d.id = a.delivery_id";

fn destination_attempt_from_row(r: &AnyRow) -> Result<DestinationAttempt> {
    Ok(DestinationAttempt {
        delivery_id: DeliveryId::stored(r.try_get("delivery_id")?),
        message_id: MessageId::stored(r.try_get("message_id")?),
        destination: r.try_get("destination")?,
        manual: r.try_get::<i64, _>("manual")? != 0,
        attempt: attempt_from_row(r)?,
    })
}

pub(super) async fn list_message_attempts(
    store: &SqlStore,
    message: &str,
    limit: u32,
) -> Result<Vec<DestinationAttempt>> {
    let sql = format!(
        "SELECT {ATTEMPT_WITH_DELIVERY} WHERE d.message_id = $1
         ORDER BY a.started_at DESC, a.delivery_id DESC, a.number DESC LIMIT $2"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(message)
        .bind(limit as i64)
        .fetch_all(&store.reads)
        .await?;
    rows.iter().map(destination_attempt_from_row).collect()
}

pub(super) async fn queue_counts(store: &SqlStore, destination: &str) -> Result<QueueCounts> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS n FROM deliveries WHERE destination = $1 AND status IN ('pending', 'in_flight', 'dead') GROUP BY status",
    )
    .bind(destination)
    .fetch_all(&store.reads)
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

pub(super) async fn attempt_stats(
    store: &SqlStore,
    destination: &str,
    since: i64,
) -> Result<AttemptStats> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS total, CAST(COALESCE(SUM(CASE WHEN outcome = 'delivered' THEN 1 ELSE 0 END), 0) AS BIGINT) AS delivered FROM attempts WHERE destination = $1 AND started_at >= $2",
    )
    .bind(destination)
    .bind(since)
    .fetch_one(&store.reads)
    .await?;
    Ok(AttemptStats {
        total: row.try_get::<i64, _>("total")? as u64,
        delivered: row.try_get::<i64, _>("delivered")? as u64,
    })
}

pub(super) async fn last_failure(
    store: &SqlStore,
    destination: &str,
    since: i64,
) -> Result<Option<LastFailure>> {
    let row = sqlx::query(
        "SELECT started_at, status_code, error FROM attempts
         WHERE destination = $1 AND started_at >= $2 AND outcome <> 'delivered'
         ORDER BY started_at DESC LIMIT 1",
    )
    .bind(destination)
    .bind(since)
    .fetch_optional(&store.reads)
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
