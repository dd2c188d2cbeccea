//! The store as a whole: copied to another database, reopened after a crash.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_copies_whole_into_an_empty_database_and_its_chain_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = open_sqlite(&dir).await;
    destination(&src, "hook").await;
    let batch: Vec<_> = (0..250)
        .map(|i| message("hook", Some((&format!("k{i}"), "h"))))
        .collect();
    src.accept_messages(batch).await.unwrap();
    let c = src
        .claim(claim(herald_core::clock::now_ms(), "l", "hook", 3, 600_000))
        .await
        .unwrap()
        .claimed;
    for d in &c {
        src.finish_attempt(finish(
            d,
            NextState::Delivered,
            AttemptOutcome::Delivered,
            herald_core::clock::now_ms(),
        ))
        .await
        .unwrap();
    }
    src.close().await;
    let from = Location::Sqlite(dir.path().join("herald.db"));

    let mut targets = vec![Location::Sqlite(dir.path().join("copy.db"))];
    if let Some(url) = herald_testkit::postgres::fresh_database("copy").await {
        targets.push(Location::Postgres(url));
    }
    for to in targets {
        let report = herald_store::copy::copy_store(&from, &to, |_, _| {})
            .await
            .unwrap();
        let rows = |t: &str| report.iter().find(|(n, _)| n == t).map(|r| r.1);
        assert_eq!(rows("messages"), Some(250), "{}", to.describe());
        assert_eq!(rows("deliveries"), Some(250));
        assert_eq!(rows("attempts"), Some(3));
        assert_eq!(rows("idempotency_keys"), Some(250));
        assert_eq!(rows("destinations"), Some(1));
        let copy = match &to {
            Location::Sqlite(p) => SqlStore::open(p, StoreOptions::default()).await.unwrap(),
            Location::Postgres(u) => SqlStore::open_postgres(u, StoreOptions::default())
                .await
                .unwrap(),
        };
        let chain = whole_chain(&copy).await;
        assert_eq!(chain.len() as u64, rows("audit_log").unwrap());
        assert!(
            verify_chain(&chain).ok,
            "{}: the copied chain verifies",
            to.describe()
        );
        // The copy is a working store: a repeat key is a replay, new messages chain on.
        let again = copy
            .accept_messages(vec![message("hook", Some(("k7", "h")))])
            .await
            .unwrap();
        assert!(matches!(again[0], AcceptOutcome::Replayed { .. }));
        copy.accept_messages(vec![message("hook", None)])
            .await
            .unwrap();
        assert!(verify_chain(&whole_chain(&copy).await).ok);
        copy.close().await;
        let err = herald_store::copy::copy_store(&from, &to, |_, _| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }
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
