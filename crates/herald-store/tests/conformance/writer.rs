//! The writer: group commits and the audit chain under concurrent callers.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits_and_keep_one_valid_audit_chain() {
    for be in backends("auditchain").await {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = if i % 2 == 0 {
                    be.a.clone()
                } else {
                    be.b.clone()
                };
                tokio::spawn(async move {
                    s.accept_messages(vec![message("hook", None)])
                        .await
                        .unwrap()
                })
            })
            .collect();
        // Checkpoints from both nodes while they write.
        let mut checkpoints = 0;
        for s in [&be.a, &be.b, &be.a] {
            let sign: CheckpointFn =
                Box::new(|seq, hash| serde_json::json!({"seq": seq, "hash": hash}));
            if s.append_checkpoint(sign, herald_core::clock::now_ms())
                .await
                .unwrap()
                .is_some()
            {
                checkpoints += 1;
            }
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), vec![AcceptOutcome::Accepted]);
        }
        let (commits, jobs) = be.a.writer_stats();
        println!(
            "group commit ({}): {jobs} store calls in {commits} commits",
            be.name
        );
        assert!(
            commits < jobs,
            "{}: concurrent callers must share commits ({commits} commits for {jobs} jobs)",
            be.name
        );
        let audit = whole_chain(&be.a).await;
        assert_eq!(audit.len(), 200 + checkpoints, "{}", be.name);
        let v = verify_chain(&audit);
        assert!(
            v.ok,
            "{}: one valid chain from both writers: {v:?}",
            be.name
        );
    }
}

/// Accepts waiting together are written as one batch; one that cannot be written (here: a
/// message id that exists already) fails alone and the others are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_written_together_fail_alone() {
    for be in backends("acceptsalone").await {
        let first = message("hook", None);
        let taken = first.id.clone();
        be.a.accept_messages(vec![first]).await.unwrap();
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let s = be.a.clone();
                let mut m = message("hook", None);
                if i == 30 {
                    m.id = taken.clone();
                }
                let id = m.id.clone();
                tokio::spawn(async move { (i, id, s.accept_messages(vec![m]).await) })
            })
            .collect();
        for t in tasks {
            let (i, id, result) = t.await.unwrap();
            if i == 30 {
                assert!(result.is_err(), "{}: a duplicate id is refused", be.name);
                continue;
            }
            assert_eq!(
                result.unwrap(),
                vec![AcceptOutcome::Accepted],
                "{}",
                be.name
            );
            assert!(
                be.a.get_message(&id).await.unwrap().is_some(),
                "{}: {id} stored",
                be.name
            );
        }
        let audit = whole_chain(&be.a).await;
        assert_eq!(
            audit.len(),
            60,
            "{}: one entry per accepted message",
            be.name
        );
        assert!(verify_chain(&audit).ok, "{}", be.name);
    }
}
