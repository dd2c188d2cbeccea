//! The store conformance suite: every story runs on the SQLite store (real files) and on the
//! Postgres store (a fresh database on a real server), the cluster stories with two stores
//! ("nodes") on one database: group commit, leases, the shared audit chain, idempotency,
//! rate limits, breakers and pauses that hold across nodes.

use herald_core::audit::verify_chain;
use herald_core::delivery::{AttemptOutcome, DeliveryStatus};
use herald_core::ids::{DeliveryId, ErrorGroupId, LeaseToken, MessageId};
use herald_store::Location;
use herald_store::sql::{SqlStore, StoreOptions};
use herald_store::*;
use std::sync::Arc;

mod accept;
mod claim;
mod dashboard;
mod error_groups;
mod finish;
mod lifecycle;
mod tenants;
mod writer;

/// One store under test: "two nodes" are two stores on one database (on SQLite, where one
/// process owns the file, both are the same store).
struct Backend {
    name: &'static str,
    a: Arc<SqlStore>,
    b: Arc<SqlStore>,
    _dir: tempfile::TempDir,
}

/// The SQLite store on a fresh file, and the Postgres store on a fresh database when
/// `HERALD_TEST_POSTGRES_URL` is set: every story runs on both.
async fn backends(label: &str) -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open_sqlite(&dir).await;
    let mut v = vec![Backend {
        name: "sqlite",
        a: sqlite.clone(),
        b: sqlite,
        _dir: dir,
    }];
    if let Some(url) = herald_testkit::postgres::fresh_database(label).await {
        let a = Arc::new(
            SqlStore::open_postgres(&url, StoreOptions::default())
                .await
                .unwrap(),
        );
        let b = Arc::new(
            SqlStore::open_postgres(&url, StoreOptions::default())
                .await
                .unwrap(),
        );
        v.push(Backend {
            name: "postgres",
            a,
            b,
            _dir: tempfile::tempdir().unwrap(),
        });
    }
    v
}

async fn open_sqlite(dir: &tempfile::TempDir) -> Arc<SqlStore> {
    Arc::new(
        SqlStore::open(&dir.path().join("herald.db"), StoreOptions::default())
            .await
            .unwrap(),
    )
}

fn message(dest: &str, key: Option<(&str, &str)>) -> NewMessage {
    let id = MessageId::new();
    NewMessage {
        id: id.clone(),
        event_type: "test".into(),
        body: r#"{"text":"hi"}"#.into(),
        created_at: herald_core::clock::now_ms(),
        deliveries: vec![NewDelivery {
            id: DeliveryId::new(),
            destination: dest.into(),
            lease: None,
        }],
        idempotency: key.map(|(k, h)| IdempotencyRecord {
            key: k.into(),
            scoped_key: format!("test/{k}"),
            request_hash: h.into(),
            response: format!("{{\"id\":\"{id}\"}}"),
            expires_at: i64::MAX,
        }),
        actor: "test".into(),
        tenant: None,
    }
}

/// A message whose delivery is leased at accept (as the dispatcher does on a single node).
fn leased_message(dest: &str, token: &str, until: i64) -> NewMessage {
    let mut m = message(dest, None);
    m.deliveries[0].lease = Some(AcceptLease {
        token: LeaseToken::stored(token.into()),
        until,
    });
    m
}

fn claim(now: i64, token: &str, dest: &str, n: u32, lease_ms: i64) -> ClaimRequest {
    ClaimRequest {
        now,
        lease_token: LeaseToken::stored(token.into()),
        queues: vec![QueueClaim {
            destination: dest.into(),
            capacity: n,
            lease_ms,
            ordered: false,
            rate_limit: None,
            require_closed_breaker: false,
        }],
    }
}

fn attempt(outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        number: 0,
        started_at: 0,
        duration_ms: 1,
        outcome,
        status_code: Some(200),
        error_class: None,
        error: None,
        response_excerpt: String::new(),
        exchange: None,
    }
}

async fn destination(store: &SqlStore, name: &str) {
    let now = herald_core::clock::now_ms();
    store
        .put_destination(
            DestinationRow {
                name: name.into(),
                kind: "webhook".into(),
                sealed_spec: "sealed".into(),
                enabled: true,
                disabled_reason: None,
                paused_until: None,
                breaker: None,
                failing_since: None,
                last_success_at: None,
                created_at: now,
                updated_at: now,
            },
            "test",
        )
        .await
        .unwrap();
}

fn finish(
    c: &ClaimedDelivery,
    next: NextState,
    outcome: AttemptOutcome,
    now: i64,
) -> FinishAttempt {
    FinishAttempt {
        delivery_id: c.delivery.id.clone(),
        lease_token: c.lease_token.clone(),
        destination: c.delivery.destination.clone(),
        attempt: Some(attempt(outcome)),
        next,
        breaker: None,
        disable_if_failing_since: None,
        pause_destination_until: None,
        disable_destination: None,
        now,
    }
}

async fn whole_chain(store: &SqlStore) -> Vec<herald_core::audit::AuditEntry> {
    let mut all = Vec::new();
    loop {
        let page = store
            .list_audit(
                all.last()
                    .map_or(0, |e: &herald_core::audit::AuditEntry| e.seq),
                1000,
            )
            .await
            .unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}
