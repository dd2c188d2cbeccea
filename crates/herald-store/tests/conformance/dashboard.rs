//! The dashboard's queries and sessions.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_search_by_key_count_the_hour_and_page_the_audit_log_newest_first() {
    for be in backends("dashboard").await {
        let store = be.a.clone();
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
                lease_token: LeaseToken::stored("l".into()),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_session_opened_on_one_node_is_known_to_the_other_until_it_ends() {
    for be in backends("sessions").await {
        let now = herald_core::clock::now_ms();
        let s = SessionRecord {
            id_hash: "h1".into(),
            token_id: Some("tok".into()),
            name: "ops".into(),
            scopes: vec![herald_core::scope::Scope::Read],
            csrf: "c".into(),
            created_at: now,
            expires_at: now + 1_000,
            tenant: Some("app_1".into()),
        };
        be.a.create_session(s.clone()).await.unwrap();
        assert_eq!(
            be.b.get_session("h1", now).await.unwrap(),
            Some(s.clone()),
            "{}",
            be.name
        );
        assert_eq!(
            be.b.get_session("h1", now + 1_000).await.unwrap(),
            None,
            "expired"
        );
        assert_eq!(be.b.get_session("other", now).await.unwrap(), None);
        be.b.delete_session("h1").await.unwrap();
        assert_eq!(
            be.a.get_session("h1", now).await.unwrap(),
            None,
            "{}: signed out everywhere",
            be.name
        );
    }
}
