//! The dead-letter queue: listing, replaying and discarding.

use super::*;

pub(super) async fn dlq_change(
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

pub(super) async fn list_dead(store: &SqlStore, q: &DlqQuery) -> Result<Vec<DeadItem>> {
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
    let rows = query.bind(q.limit as i64).fetch_all(&store.reads).await?;
    rows.iter()
        .map(|r| {
            Ok(DeadItem {
                id: DeliveryId::stored(r.try_get("id")?),
                queue: r.try_get("destination")?,
                message_id: MessageId::stored(r.try_get("message_id")?),
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

pub(super) async fn replay_dead(
    store: &SqlStore,
    queue: &str,
    id: &str,
    actor: &str,
    now: i64,
) -> Result<DlqChange> {
    let (queue, id, actor) = (queue.to_string(), id.to_string(), actor.to_string());
    store
        .write(move |w| {
            Box::pin(async move { dlq_change(w, &queue, &id, &actor, now, true).await })
        })
        .await
}

pub(super) async fn replay_all_dead(
    store: &SqlStore,
    queue: &str,
    filter: &ReplayFilter,
    actor: &str,
    now: i64,
) -> Result<u64> {
    let (queue, filter, actor) = (queue.to_string(), filter.clone(), actor.to_string());
    store.write(move |w| {
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

pub(super) async fn discard_all_dead(
    store: &SqlStore,
    queue: &str,
    actor: &str,
    now: i64,
) -> Result<u64> {
    let (queue, actor) = (queue.to_string(), actor.to_string());
    store.write(move |w| {
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

pub(super) async fn discard_dead(
    store: &SqlStore,
    queue: &str,
    id: &str,
    actor: &str,
    now: i64,
) -> Result<DlqChange> {
    let (queue, id, actor) = (queue.to_string(), id.to_string(), actor.to_string());
    store
        .write(move |w| {
            Box::pin(async move { dlq_change(w, &queue, &id, &actor, now, false).await })
        })
        .await
}

pub(super) async fn resend(
    store: &SqlStore,
    message: &str,
    destination: &str,
    delivery: DeliveryId,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let (message, destination, actor) = (
        message.to_string(),
        destination.to_string(),
        actor.to_string(),
    );
    store
        .write(move |w| {
            Box::pin(async move {
                let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM messages WHERE id = $1")
                    .bind(&message)
                    .fetch_optional(&mut w.conn)
                    .await?;
                if exists.is_none() {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO deliveries (id, message_id, destination, status, next_attempt_at, manual, created_at, updated_at)
                     VALUES ($1, $2, $3, 'pending', $4, 1, $4, $4)",
                )
                .bind(delivery.as_str())
                .bind(&message)
                .bind(&destination)
                .bind(now)
                .execute(&mut w.conn)
                .await?;
                w.new_work = true;
                let detail = json!({"destination": destination, "delivery": delivery.as_str()});
                audit(w, &new_audit(now, &actor, "message.resent", &message, detail)).await?;
                Ok(true)
            })
        })
        .await
}
