//! Accepting messages: the message, its deliveries and its idempotency record in one go.

use super::*;

/// Accepts a batch: idempotency keys resolved one by one (a repeat inside the batch sees
/// the earlier message), then every new row written with a few multi-row INSERTs — the
/// per-statement cost, not the bytes, is what a write costs here.
pub(super) async fn accept_batch(
    w: &mut Writer,
    batch: &[&NewMessage],
) -> Result<Vec<AcceptOutcome>> {
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
            "INSERT INTO messages (id, event_type, idempotency_key, body, created_at, tenant)",
            chunk.len(),
            6,
        )));
        for m in chunk {
            q = q
                .bind(m.id.as_str())
                .bind(&m.event_type)
                .bind(m.idempotency.as_ref().map(|i| &i.key))
                .bind(&m.body)
                .bind(m.created_at)
                .bind(&m.tenant);
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
                .bind(d.id.as_str())
                .bind(m.id.as_str())
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
                .bind(m.id.as_str())
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
            let mut detail = json!({"event_type": m.event_type, "destinations": destinations});
            if let Some(t) = &m.tenant {
                detail["tenant"] = json!(t);
            }
            new_audit(
                m.created_at,
                &m.actor,
                "message.accepted",
                m.id.as_str(),
                detail,
            )
        })
        .collect();
    audit_many(w, &entries).await?;
    w.new_work |= !deliveries.is_empty();
    Ok(outcomes)
}

pub(super) fn replay_or_conflict(
    stored_hash: &str,
    request_hash: &str,
    response: &str,
) -> AcceptOutcome {
    if stored_hash == request_hash {
        AcceptOutcome::Replayed {
            response: response.to_string(),
        }
    } else {
        AcceptOutcome::KeyConflict
    }
}

pub(super) async fn accept_messages(
    store: &SqlStore,
    batch: Vec<NewMessage>,
) -> Result<Vec<AcceptOutcome>> {
    let batch = Arc::new(batch);
    let mut tries = 0;
    loop {
        let (tx, rx) = oneshot::channel();
        let job = AcceptJob {
            batch: batch.clone(),
            reply: tx,
        };
        store
            .jobs
            .send(Msg::Accept(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        let answer = rx.await.map_err(|_| store.not_run())?;
        match answer {
            // Another node stored the same idempotency key between our look-up and our
            // insert (it committed first): look again, and it is a replay.
            Err(e) if is_unique_violation(&e) && tries < 3 => tries += 1,
            other => return other,
        }
    }
}

pub(super) async fn get_message(store: &SqlStore, id: &str) -> Result<Option<MessageRecord>> {
    let row = sqlx::query(
        "SELECT id, event_type, idempotency_key, body, created_at, tenant FROM messages WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&store.reads)
    .await?;
    row.map(|r| message_from_row(&r, "")).transpose()
}

pub(super) async fn count_messages_since(store: &SqlStore, since: i64) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE created_at >= $1")
        .bind(since)
        .fetch_one(&store.reads)
        .await?;
    Ok(n as u64)
}

pub(super) async fn list_messages(
    store: &SqlStore,
    q: &MessageQuery,
) -> Result<Vec<MessageRecord>> {
    let mut f = Filtered::new(
        "SELECT id, event_type, idempotency_key, body, created_at, tenant FROM messages WHERE 1 = 1",
    );
    let types = q.event_types.len();
    if q.tenant.is_some() {
        f.and(true, "tenant = ?");
    } else {
        f.and_fixed("tenant IS NULL");
    }
    if types > 0 {
        let marks = vec!["?"; types].join(", ");
        f.and(true, &format!("event_type IN ({marks})"));
    }
    f.and(q.idempotency_key.is_some(), "idempotency_key = ?");
    f.and(q.before_id.is_some(), "id < ?");
    f.and(q.created_before.is_some(), "created_at < ?");
    f.and(q.created_after.is_some(), "created_at > ?");
    let sql = f.newest_first("id");
    let mut query = sqlx::query(AssertSqlSafe(sql));
    if let Some(t) = &q.tenant {
        query = query.bind(t);
    }
    for t in &q.event_types {
        query = query.bind(t);
    }
    if let Some(k) = &q.idempotency_key {
        query = query.bind(k);
    }
    if let Some(b) = &q.before_id {
        query = query.bind(b);
    }
    if let Some(b) = q.created_before {
        query = query.bind(b);
    }
    if let Some(a) = q.created_after {
        query = query.bind(a);
    }
    let rows = query.bind(q.limit as i64).fetch_all(&store.reads).await?;
    rows.iter().map(|r| message_from_row(r, "")).collect()
}
