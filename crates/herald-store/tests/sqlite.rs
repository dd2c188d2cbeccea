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

fn occurrence(key: &str, now: i64) -> ErrorOccurrence {
    ErrorOccurrence {
        new_id: new_id("grp"),
        key: key.into(),
        service: "shop".into(),
        fingerprint: "ZeroDivisionError · shop.views in divide".into(),
        title: "ZeroDivisionError: division by zero".into(),
        culprit: Some("shop.views in divide".into()),
        level: "error".into(),
        environment: Some("production".into()),
        event: r#"{"message":"boom"}"#.into(),
        policy: herald_core::error_report::AlertPolicy::default(),
        now,
        actor: "token:test".into(),
    }
}

fn alert_builder() -> AlertBuilder {
    Box::new(|g, d| {
        let mut m = message("alerts", None);
        m.event_type = "error.reported".into();
        m.body = format!(r#"{{"text":"{} {}"}}"#, g.id, d.reason.as_str());
        Ok(m)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_of_a_new_group_alert_once_and_the_alert_commits_with_the_group() {
    use herald_core::error_report::{AlertReason, GroupStatus};
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let now = herald_core::clock::now_ms();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.record_error(occurrence("k1", now + i), alert_builder())
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let alerts: Vec<_> = outcomes.iter().filter_map(|o| o.alert.clone()).collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].0.reason, AlertReason::New);
    assert_eq!(outcomes.iter().filter(|o| o.new_group).count(), 1);
    let gid = outcomes[0].group.id.clone();
    assert!(outcomes.iter().all(|o| o.group.id == gid));
    let g = store.get_error_group(&gid).await.unwrap().unwrap();
    assert_eq!((g.state.count, g.state.folded), (40, 39));
    assert_eq!(g.last_message_id.as_deref(), Some(alerts[0].1.as_str()));
    let m = store.get_message(&alerts[0].1).await.unwrap().unwrap();
    assert_eq!(m.event_type, "error.reported");

    // Resolved, then seen again inside the window: the regression waits (pending).
    let r = store
        .set_error_group_status(&gid, GroupStatus::Resolved, "token:test", now + 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.state.status, GroupStatus::Resolved);
    let o = store
        .record_error(occurrence("k1", now + 60), alert_builder())
        .await
        .unwrap();
    assert!(o.alert.is_none());
    assert_eq!(o.group.state.pending, Some(AlertReason::Regression));
    let listed = store
        .list_error_groups(&ErrorGroupQuery {
            status: Some(GroupStatus::Unresolved),
            service: Some("shop".into()),
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state.pending, Some(AlertReason::Regression));
    assert!(
        store
            .set_error_group_status("grp_nope", GroupStatus::Resolved, "t", now)
            .await
            .unwrap()
            .is_none()
    );
}
