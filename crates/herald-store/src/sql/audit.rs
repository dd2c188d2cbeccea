//! The audit chain: entries appended inside the caller's transaction, chained to the head
//! the writer holds.

use super::*;

pub(super) async fn read_audit_head(conn: &mut AnyConnection) -> Result<(i64, String)> {
    let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(conn)
        .await?;
    Ok(match head {
        Some(r) => (r.try_get("seq")?, r.try_get("hash")?),
        None => (0, GENESIS.to_string()),
    })
}

/// Chains the group's staged audit entries (and checkpoints) onto the head and writes them
/// with multi-row INSERTs. On Postgres the head is read under a transaction-scoped advisory
/// lock, so the writers of several nodes append one chain, in turn, each for the moment
/// between this append and its commit.
pub(super) async fn append_staged(w: &mut Writer) -> Result<()> {
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
pub(super) async fn insert_chained(w: &mut Writer, entries: &[NewAudit]) -> Result<()> {
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
pub(super) async fn audit(w: &mut Writer, a: &NewAudit) -> Result<()> {
    w.staged.push(a.clone());
    Ok(())
}

/// Stages several audit entries, in order.
pub(super) async fn audit_many(w: &mut Writer, entries: &[NewAudit]) -> Result<()> {
    w.staged.extend_from_slice(entries);
    Ok(())
}

pub(super) fn new_audit(
    at: i64,
    actor: &str,
    action: &str,
    resource: &str,
    detail: Value,
) -> NewAudit {
    NewAudit {
        at,
        actor: actor.to_string(),
        action: action.to_string(),
        resource: resource.to_string(),
        detail,
    }
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

pub(super) async fn append_audit(store: &SqlStore, entries: Vec<NewAudit>) -> Result<()> {
    store
        .write(move |w| {
            Box::pin(async move {
                for e in &entries {
                    audit(w, e).await?;
                }
                Ok(())
            })
        })
        .await
}

pub(super) async fn append_checkpoint(
    store: &SqlStore,
    sign: CheckpointFn,
    now: i64,
) -> Result<Option<i64>> {
    let slot = Arc::new(std::sync::Mutex::new(None));
    let staged = slot.clone();
    store
        .write(move |w| {
            Box::pin(async move {
                w.checkpoints.push(staged);
                w.checkpoint_signers.push((sign, now));
                Ok(())
            })
        })
        .await?;
    Ok(slot.lock().ok().and_then(|s| *s))
}

pub(super) async fn list_audit(
    store: &SqlStore,
    after: i64,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&store.reads)
        .await?;
    rows.iter().map(audit_from_row).collect()
}

pub(super) async fn list_recent_audit(
    store: &SqlStore,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let rows = sqlx::query("SELECT * FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT $2")
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit as i64)
        .fetch_all(&store.reads)
        .await?;
    rows.iter().map(audit_from_row).collect()
}
