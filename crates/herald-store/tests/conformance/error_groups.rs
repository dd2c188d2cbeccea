//! Error groups: concurrent reports and their alerts.

use super::*;

fn occurrence(key: &str, now: i64) -> ErrorOccurrence {
    ErrorOccurrence {
        new_id: ErrorGroupId::new(),
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
    for be in backends("errorgroups").await {
        let store = be.a.clone();
        let now = herald_core::clock::now_ms();
        let mut tasks = Vec::new();
        for i in 0..40 {
            // Both nodes report at once.
            let s = if i % 2 == 0 {
                be.a.clone()
            } else {
                be.b.clone()
            };
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
        assert_eq!(alerts.len(), 1, "{}: one alert for the cluster", be.name);
        assert_eq!(alerts[0].0.reason, AlertReason::New);
        assert_eq!(outcomes.iter().filter(|o| o.new_group).count(), 1);
        let gid = outcomes[0].group.id.clone();
        assert!(outcomes.iter().all(|o| o.group.id == gid));
        let g = store
            .get_error_group(&ErrorGroupId::stored(gid.clone()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((g.state.count, g.state.folded), (40, 39));
        assert_eq!(g.last_message_id.as_deref(), Some(alerts[0].1.as_str()));
        let m = store.get_message(&alerts[0].1).await.unwrap().unwrap();
        assert_eq!(m.event_type, "error.reported");

        // Resolved, then seen again inside the window: the regression waits (pending).
        let r = store
            .set_error_group_status(
                &ErrorGroupId::stored(gid.clone()),
                GroupStatus::Resolved,
                "token:test",
                now + 50,
            )
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
                .set_error_group_status(
                    &ErrorGroupId::stored("grp_nope".into()),
                    GroupStatus::Resolved,
                    "t",
                    now
                )
                .await
                .unwrap()
                .is_none()
        );
    }
}
