//! The SQLite store on real files: group commit, leases, the audit chain, idempotency.

use herald_core::audit::verify_chain;
use herald_core::delivery::{AttemptOutcome, DeliveryStatus};
use herald_core::ids::{DELIVERY, MESSAGE, new_id};
use herald_store::sqlite::{SqliteOptions, SqliteStore};
use herald_store::*;
use std::sync::Arc;

async fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    // WIP: HERALD_TEST_POSTGRES_URL runs the same stories on a fresh Postgres database per
    // directory (the conformance suite proper comes with the Postgres store).
    if let Ok(base) = std::env::var("HERALD_TEST_POSTGRES_URL") {
        let name = format!(
            "herald_t_{}",
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_lowercase()
                .replace(['.', '-'], "_")
        );
        let mut admin: sqlx::AnyConnection = {
            sqlx::any::install_default_drivers();
            <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
                .await
                .unwrap()
        };
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await;
        let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        return Arc::new(
            SqliteStore::open_postgres(&url, SqliteOptions::default())
                .await
                .unwrap(),
        );
    }
    open_sqlite(dir).await
}

async fn open_sqlite(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    Arc::new(
        SqliteStore::open(&dir.path().join("herald.db"), SqliteOptions::default())
            .await
            .unwrap(),
    )
}

fn message(dest: &str, key: Option<(&str, &str)>) -> NewMessage {
    let id = new_id(MESSAGE);
    NewMessage {
        id: id.clone(),
        event_type: "test".into(),
        body: r#"{"text":"hi"}"#.into(),
        created_at: herald_core::clock::now_ms(),
        deliveries: vec![NewDelivery {
            id: new_id(DELIVERY),
            destination: dest.into(),
        }],
        idempotency: key.map(|(k, h)| IdempotencyRecord {
            key: k.into(),
            request_hash: h.into(),
            response: format!("{{\"id\":\"{id}\"}}"),
            expires_at: i64::MAX,
        }),
        actor: "test".into(),
    }
}

fn claim(now: i64, token: &str, dest: &str, n: u32, lease_ms: i64) -> ClaimRequest {
    ClaimRequest {
        now,
        lease_token: token.into(),
        queues: vec![QueueClaim {
            destination: dest.into(),
            capacity: n,
            lease_ms,
            ordered: false,
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits_and_keep_one_valid_audit_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move {
                s.accept_messages(vec![message("hook", None)])
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), vec![AcceptOutcome::Accepted]);
    }
    let (commits, jobs) = store.writer_stats();
    println!("group commit: {jobs} store calls in {commits} commits");
    assert!(jobs >= 200);
    assert!(
        commits < jobs,
        "concurrent callers must share commits ({commits} commits for {jobs} jobs)"
    );
    let audit = store.list_audit(0, 1000).await.unwrap();
    assert_eq!(audit.len(), 200);
    assert!(verify_chain(&audit).ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_cannot_overwrite_a_newer_claim() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store
        .accept_messages(vec![message("hook", None)])
        .await
        .unwrap();
    let now = herald_core::clock::now_ms();
    let first = store
        .claim(claim(now, "lease-a", "hook", 10, 1_000))
        .await
        .unwrap();
    assert_eq!(first.claimed.len(), 1);
    let id = first.claimed[0].delivery.id.clone();
    assert!(
        store
            .claim(claim(now, "lease-x", "hook", 10, 1_000))
            .await
            .unwrap()
            .claimed
            .is_empty(),
        "leased: not claimable"
    );

    // The first worker stalls past its lease; another takes over.
    let later = now + 5_000;
    let second = store
        .claim(claim(later, "lease-b", "hook", 10, 1_000))
        .await
        .unwrap();
    assert_eq!(second.recovered, 1);
    assert_eq!(second.claimed.len(), 1);

    let finish = |token: &str, next: NextState| FinishAttempt {
        delivery_id: id.clone(),
        lease_token: token.into(),
        destination: "hook".into(),
        attempt: Some(attempt(AttemptOutcome::Delivered)),
        next,
        breaker: None,
        disable_if_failing_since: None,
        pause_destination_until: None,
        disable_destination: None,
        now: later,
    };
    assert!(
        !store
            .finish_attempt(finish("lease-a", NextState::Dead))
            .await
            .unwrap()
            .recorded,
        "the stale worker is refused"
    );
    assert!(
        store
            .finish_attempt(finish("lease-b", NextState::Delivered))
            .await
            .unwrap()
            .recorded
    );
    let d = store.get_delivery(&id).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!(d.attempt_count, 1);
    assert_eq!(store.list_attempts(&id).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_or_conflict_within_one_batch_and_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let a = message("hook", Some(("k1", "h1")));
    let out = store
        .accept_messages(vec![
            a.clone(),
            message("hook", Some(("k1", "h1"))),
            message("hook", Some(("k1", "h2"))),
        ])
        .await
        .unwrap();
    assert_eq!(out[0], AcceptOutcome::Accepted);
    assert_eq!(
        out[1],
        AcceptOutcome::Replayed {
            response: format!("{{\"id\":\"{}\"}}", a.id)
        }
    );
    assert_eq!(out[2], AcceptOutcome::KeyConflict);
    let again = store
        .accept_messages(vec![message("hook", Some(("k1", "h1")))])
        .await
        .unwrap();
    assert!(matches!(again[0], AcceptOutcome::Replayed { .. }));
    assert_eq!(
        store
            .list_deliveries(&DeliveryQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// SQLite semantics: one node owns the file, so a restart releases its leases at once.
async fn everything_survives_reopening_and_leases_of_a_dead_process_are_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(&dir).await;
    store
        .accept_messages(vec![message("hook", None)])
        .await
        .unwrap();
    let claimed = store
        .claim(claim(
            herald_core::clock::now_ms(),
            "l",
            "hook",
            1,
            3_600_000,
        ))
        .await
        .unwrap();
    assert_eq!(claimed.claimed.len(), 1);
    drop(store); // no close: as if the process died

    let store = open_sqlite(&dir).await;
    let again = store
        .claim(claim(herald_core::clock::now_ms(), "l2", "hook", 1, 1_000))
        .await
        .unwrap();
    assert_eq!(again.claimed.len(), 1, "the old lease was released on open");
    assert!(verify_chain(&store.list_audit(0, 100).await.unwrap()).ok);
    store.close().await;
    assert!(store.ping().await.is_err(), "a closed store says so");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_search_by_key_count_the_hour_and_page_the_audit_log_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let keyed = message("hook", Some(("nightly-backup", "h")));
    store
        .accept_messages(vec![
            keyed.clone(),
            message("hook", None),
            message("crm", None),
        ])
        .await
        .unwrap();
    let found = store
        .list_deliveries(&DeliveryQuery {
            idempotency_key: Some("nightly-backup".into()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].message_id, keyed.id);
    let none = store
        .list_deliveries(&DeliveryQuery {
            idempotency_key: Some("other".into()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let now = herald_core::clock::now_ms();
    assert_eq!(store.count_messages_since(now - 60_000).await.unwrap(), 3);
    assert_eq!(store.count_messages_since(now + 60_000).await.unwrap(), 0);

    // The CRM delivery fails once with 503 and dies.
    let c = store
        .claim(claim(now, "l", "crm", 1, 10_000))
        .await
        .unwrap();
    let id = c.claimed[0].delivery.id.clone();
    store
        .finish_attempt(FinishAttempt {
            delivery_id: id.clone(),
            lease_token: "l".into(),
            destination: "crm".into(),
            attempt: Some(AttemptRecord {
                started_at: now,
                status_code: Some(503),
                error: Some("HTTP 503".into()),
                ..attempt(AttemptOutcome::Permanent)
            }),
            next: NextState::Dead,
            breaker: None,
            disable_if_failing_since: None,
            pause_destination_until: None,
            disable_destination: None,
            now,
        })
        .await
        .unwrap();
    let last = store.last_failure("crm", now - 1).await.unwrap().unwrap();
    assert_eq!((last.at, last.status_code), (now, Some(503)));
    assert!(
        store.last_failure("crm", now + 1).await.unwrap().is_none(),
        "outside the window"
    );
    assert!(store.last_failure("hook", 0).await.unwrap().is_none());

    assert_eq!(store.discard_all_dead("crm", "ops", now).await.unwrap(), 1);
    assert_eq!(
        store.get_delivery(&id).await.unwrap().unwrap().status,
        DeliveryStatus::Discarded
    );
    assert_eq!(store.discard_all_dead("crm", "ops", now).await.unwrap(), 0);

    let all = store.list_audit(0, 1000).await.unwrap();
    let newest = store.list_recent_audit(None, 2).await.unwrap();
    assert_eq!(newest.len(), 2);
    assert_eq!(newest[0].seq, all.last().unwrap().seq);
    assert_eq!(newest[0].action, "dlq.discarded_all");
    assert!(newest[0].seq > newest[1].seq);
    let older = store
        .list_recent_audit(Some(newest[1].seq), 1000)
        .await
        .unwrap();
    assert_eq!(older.len() + 2, all.len(), "the pages cover the log once");
    assert!(older.iter().all(|e| e.seq < newest[1].seq));
}

/// The dashboard's searches must stay index ranges at 100k+ deliveries: SQLite's plan for
/// each (the same SQL shapes the store builds) uses an index and needs no sort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_searches_are_index_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(&dir).await;
    store.close().await;
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", dir.path().join("herald.db").display());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let cols = "d.id, d.message_id, d.status";
    // (SQL, the index it must use, whether a sort is fine: only over one message's few
    // deliveries, one per destination.)
    for (sql, index, small_sort) in [
        (
            format!("SELECT {cols} FROM deliveries d WHERE 1 = 1 AND d.message_id IN (SELECT id FROM messages WHERE idempotency_key = 'k') ORDER BY d.id DESC LIMIT 50"),
            "messages_idempotency",
            true,
        ),
        (
            format!("SELECT {cols} FROM deliveries d WHERE 1 = 1 AND d.destination = 'a' AND d.status = 'dead' AND d.id < 'dlv_x' ORDER BY d.id DESC LIMIT 50"),
            "deliveries_dest_status",
            false,
        ),
        (
            format!("SELECT {cols} FROM deliveries d WHERE 1 = 1 AND d.message_id = 'm' ORDER BY d.id DESC LIMIT 50"),
            "deliveries_message",
            true,
        ),
        (
            "SELECT d.id, m.event_type FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.status = 'dead' AND d.destination = 'a' AND d.id < 'dlv_x' ORDER BY d.id DESC LIMIT 50".to_string(),
            "deliveries_dest_status",
            false,
        ),
        (
            "SELECT COUNT(*) FROM messages WHERE created_at >= 0".to_string(),
            "messages_created",
            false,
        ),
        (
            "SELECT started_at, status_code, error FROM attempts WHERE destination = 'a' AND started_at >= 0 AND outcome <> 'delivered' ORDER BY started_at DESC LIMIT 1".to_string(),
            "attempts_destination",
            false,
        ),
        (
            "SELECT * FROM audit_log WHERE seq < 10 ORDER BY seq DESC LIMIT 50".to_string(),
            "sqlite_autoindex_audit_log_1",
            false,
        ),
    ] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|r| sqlx::Row::try_get::<String, _>(r, "detail").unwrap())
            .collect();
        let plan = plan.join(" | ");
        assert!(plan.contains(index), "{sql}\n  plan: {plan}");
        assert!(
            small_sort || !plan.contains("TEMP B-TREE"),
            "{sql} sorts\n  plan: {plan}"
        );
    }
}
