//! Rows to records, and the SQL text helpers every topic shares.

use super::*;

pub(super) const DELIVERY_COLS: &str = "d.id, d.message_id, d.destination, d.status, d.attempt_count, d.budget_base, d.next_attempt_at, d.last_status_code, d.last_error, d.fallback_of, d.dead_at, d.created_at, d.updated_at";

pub(super) fn delivery_from_row(r: &AnyRow) -> Result<DeliveryRecord> {
    let status: String = r.try_get("status")?;
    Ok(DeliveryRecord {
        id: DeliveryId::stored(r.try_get("id")?),
        message_id: MessageId::stored(r.try_get("message_id")?),
        destination: r.try_get("destination")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status {status:?}")))?,
        attempt_count: r.try_get::<i64, _>("attempt_count")? as u32,
        budget_base: r.try_get::<i64, _>("budget_base")? as u32,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_status_code: r
            .try_get::<Option<i64>, _>("last_status_code")?
            .map(|c| c as u16),
        last_error: r.try_get("last_error")?,
        fallback_of: r.try_get("fallback_of")?,
        dead_at: r.try_get("dead_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub(super) fn message_from_row(r: &AnyRow, prefix: &str) -> Result<MessageRecord> {
    let col = |c: &str| format!("{prefix}{c}");
    Ok(MessageRecord {
        id: MessageId::stored(r.try_get(col("id").as_str())?),
        event_type: r.try_get(col("event_type").as_str())?,
        idempotency_key: r.try_get(col("idempotency_key").as_str())?,
        body: r.try_get(col("body").as_str())?,
        created_at: r.try_get(col("created_at").as_str())?,
        tenant: r.try_get(col("tenant").as_str())?,
    })
}

pub(super) fn destination_from_row(r: &AnyRow) -> Result<DestinationRow> {
    Ok(DestinationRow {
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        sealed_spec: r.try_get("spec")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        disabled_reason: r.try_get("disabled_reason")?,
        paused_until: r.try_get("paused_until")?,
        breaker: r.try_get("breaker")?,
        failing_since: r.try_get("failing_since")?,
        last_success_at: r.try_get("last_success_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub(super) fn token_from_row(r: &AnyRow) -> Result<TokenRecord> {
    let scopes: String = r.try_get("scopes")?;
    Ok(TokenRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        hash: r.try_get("hash")?,
        scopes: Scope::parse_list(&scopes),
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
        tenant: r.try_get("tenant")?,
        expires_at: r.try_get("expires_at")?,
    })
}

/// `head VALUES ($1, …), (…)` for `rows` rows of `cols` columns. Numbered placeholders are
/// read by both SQLite and Postgres (sqlx's query builder for `Any` writes `?`, which
/// Postgres does not accept).
pub(crate) fn values_sql(head: &str, rows: usize, cols: usize) -> String {
    values_sql_for(Dialect::Postgres, head, rows, cols)
}

/// [`values_sql`] for the writer's database. SQLite gets anonymous `?` placeholders: it
/// looks a `$N` up by name in a list, so parsing and binding a statement of n `$N`s costs
/// n² string comparisons (with 1 600 placeholders, more than the rows' insert itself).
pub(super) fn values_sql_for(dialect: Dialect, head: &str, rows: usize, cols: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(head.len() + 10 + rows * cols * 6);
    s.push_str(head);
    s.push_str(" VALUES ");
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            let sep = if c == 0 { "" } else { ", " };
            let _ = match dialect {
                Dialect::Sqlite => write!(s, "{sep}?"),
                Dialect::Postgres => write!(s, "{sep}${}", r * cols + c + 1),
            };
        }
        s.push(')');
    }
    s
}

impl Filtered {
    pub(super) fn new(select: impl Into<String>) -> Self {
        Filtered {
            sql: select.into(),
            n: 0,
        }
    }

    /// Appends ` AND <fragment>` when `on`, each `?` becoming the next numbered placeholder.
    pub(super) fn and(&mut self, on: bool, fragment: &str) {
        if on {
            self.sql.push_str(" AND ");
            let mut parts = fragment.split('?');
            if let Some(first) = parts.next() {
                self.sql.push_str(first);
            }
            for part in parts {
                self.n += 1;
                self.sql.push_str(&format!("${}", self.n));
                self.sql.push_str(part);
            }
        }
    }

    /// Appends a fixed condition without placeholders.
    pub(super) fn and_fixed(&mut self, condition: &str) {
        self.sql.push_str(" AND ");
        self.sql.push_str(condition);
    }

    /// The query, newest first by `id`, with the limit as the last placeholder.
    pub(super) fn newest_first(self, id: &str) -> String {
        format!("{} ORDER BY {id} DESC LIMIT ${}", self.sql, self.n + 1)
    }
}

/// Rows per multi-row INSERT (SQLite allows 32 766 bound values per statement).
pub(super) const ROWS_PER_INSERT: usize = 128;

/// Splits rows into multi-row INSERT chunks of a power-of-two size (128, then the binary
/// digits of the rest), so a handful of statement texts recur and stay in the
/// connection's prepared-statement cache instead of one new text per group size.
pub(super) fn insert_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let n = if rows.len() >= ROWS_PER_INSERT {
            ROWS_PER_INSERT
        } else {
            1 << rows.len().ilog2()
        };
        let (chunk, rest) = rows.split_at(n);
        rows = rest;
        Some(chunk)
    })
}

/// `?, ?, …` (SQLite) or `$1, $2, …` (Postgres): `n` placeholders for an `IN` list.
pub(super) fn placeholders(dialect: Dialect, n: usize) -> String {
    let one = |i: usize| match dialect {
        Dialect::Sqlite => "?".to_string(),
        Dialect::Postgres => format!("${}", i + 1),
    };
    (0..n).map(one).collect::<Vec<_>>().join(", ")
}

pub(super) fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(db)) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_chunks_cover_every_row_in_power_of_two_sizes() {
        for n in [0usize, 1, 2, 3, 7, 127, 128, 129, 300, 513] {
            let rows: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = insert_chunks(&rows).collect();
            assert_eq!(chunks.concat(), rows, "n = {n}: every row once, in order");
            assert!(
                chunks
                    .iter()
                    .all(|c| c.len().is_power_of_two() && c.len() <= ROWS_PER_INSERT),
                "n = {n}: {:?}",
                chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn sqlite_placeholders_are_anonymous_postgres_ones_numbered() {
        assert_eq!(
            values_sql_for(Dialect::Sqlite, "INSERT INTO t (a, b)", 2, 2),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            values_sql("INSERT INTO t (a, b)", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }
}
