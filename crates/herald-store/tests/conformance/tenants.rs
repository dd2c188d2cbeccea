//! Tenants, the event-type catalog, messages by tenant, attempts by destination and
//! resends — on both databases.

use super::*;
use std::collections::BTreeMap;

fn tenant(id: &str, uid: Option<&str>) -> TenantRecord {
    let now = herald_core::clock::now_ms();
    TenantRecord {
        id: id.into(),
        uid: uid.map(str::to_string),
        name: format!("tenant {id}"),
        metadata: BTreeMap::from([("plan".to_string(), "pro".to_string())]),
        rate_limit: Some(10),
        created_at: now,
        updated_at: now,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_found_by_id_or_uid_and_deleted_with_their_destinations() {
    for be in backends("tenants").await {
        let store = be.a.clone();
        let (a, b) = ("app_0001", "app_0002");
        assert_eq!(
            store
                .put_tenant(tenant(a, Some("acme")), "test")
                .await
                .unwrap(),
            TenantPut::Created,
            "{}",
            be.name
        );
        assert_eq!(
            store
                .put_tenant(tenant(b, Some("acme")), "test")
                .await
                .unwrap(),
            TenantPut::UidTaken
        );
        assert_eq!(
            store.put_tenant(tenant(b, None), "test").await.unwrap(),
            TenantPut::Created
        );
        assert_eq!(
            store
                .put_tenant(tenant(a, Some("acme")), "test")
                .await
                .unwrap(),
            TenantPut::Updated
        );
        let got = store.get_tenant("acme").await.unwrap().unwrap();
        assert_eq!(got.id, a);
        assert_eq!(got.metadata["plan"], "pro");
        assert_eq!(got.rate_limit, Some(10));
        assert_eq!(store.get_tenant(b).await.unwrap().unwrap().uid, None);
        let page = store.list_tenants(None, 1).await.unwrap();
        assert_eq!(page.len(), 1);
        let rest = store.list_tenants(Some(&page[0].id), 10).await.unwrap();
        assert_eq!(rest.len(), 1);

        // A's destinations are one key range; B's and the operator's are outside it.
        for name in [
            format!("{a}.ep_1"),
            format!("{a}.ep_2"),
            format!("{b}.ep_1"),
            "app_0001-ops".to_string(),
        ] {
            destination(&store, &name).await;
        }
        store
            .accept_messages(vec![message(&format!("{a}.ep_1"), None)])
            .await
            .unwrap();
        assert!(
            store
                .delete_tenant(a, "test", herald_core::clock::now_ms())
                .await
                .unwrap()
        );
        assert!(!store.delete_tenant(a, "test", 0).await.unwrap());
        let left: Vec<String> = store
            .list_destinations()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(left, ["app_0001-ops".to_string(), format!("{b}.ep_1")]);
        let open = store
            .list_deliveries(&DeliveryQuery {
                destination: Some(format!("{a}.ep_1")),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(open.iter().all(|d| d.status == DeliveryStatus::Discarded));
        assert!(store.get_tenant("acme").await.unwrap().is_none());
        let chain = whole_chain(&store).await;
        assert!(chain.iter().any(|e| e.action == "tenant.deleted"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_are_archived_or_expunged() {
    for be in backends("event_types").await {
        let store = be.a.clone();
        let now = herald_core::clock::now_ms();
        for name in ["invoice.paid", "user.signup"] {
            let created = store
                .put_event_type(
                    EventTypeRecord {
                        name: name.into(),
                        description: "d".into(),
                        schemas: Some(r#"{"1":{"type":"object"}}"#.into()),
                        archived: false,
                        deprecated: false,
                        feature_flag: None,
                        group_name: None,
                        created_at: now,
                        updated_at: now,
                    },
                    "test",
                )
                .await
                .unwrap();
            assert!(created, "{}", be.name);
        }
        assert!(
            store
                .delete_event_type("invoice.paid", false, "t", now)
                .await
                .unwrap()
        );
        let live = store.list_event_types(None, 10, false).await.unwrap();
        assert_eq!(live.len(), 1);
        let all = store.list_event_types(None, 10, true).await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].archived);
        assert!(
            store
                .delete_event_type("invoice.paid", true, "t", now)
                .await
                .unwrap()
        );
        assert!(
            store
                .get_event_type("invoice.paid")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            !store
                .delete_event_type("nope", true, "t", now)
                .await
                .unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_list_by_tenant_and_resends_are_manual_attempts() {
    for be in backends("tenant_messages").await {
        let store = be.a.clone();
        let dest = "app_0009.ep_1";
        destination(&store, dest).await;
        let mut mine = message(dest, Some(("evt-1", "h")));
        mine.tenant = Some("app_0009".into());
        mine.event_type = "user.signup".into();
        let operators = message("ops", None);
        store
            .accept_messages(vec![mine.clone(), operators.clone()])
            .await
            .unwrap();
        let listed = store
            .list_messages(&MessageQuery {
                tenant: Some("app_0009".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "{}", be.name);
        assert_eq!(listed[0].tenant.as_deref(), Some("app_0009"));
        let typed = store
            .list_messages(&MessageQuery {
                tenant: Some("app_0009".into()),
                event_types: vec!["invoice.paid".into(), "user.signup".into()],
                idempotency_key: Some("evt-1".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(typed.len(), 1);
        let operator_only = store
            .list_messages(&MessageQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(operator_only.len(), 1);
        assert_eq!(operator_only[0].id, operators.id);

        // Delivered once, then resent: the resend's attempt is manual.
        let now = herald_core::clock::now_ms();
        let c = store
            .claim(claim(now, "l1", dest, 1, 10_000))
            .await
            .unwrap();
        let mut f = finish(
            &c.claimed[0],
            NextState::Delivered,
            AttemptOutcome::Delivered,
            now,
        );
        f.attempt.as_mut().unwrap().number = 1;
        f.attempt.as_mut().unwrap().started_at = now;
        store.finish_attempt(f).await.unwrap();
        assert!(
            store
                .resend(&mine.id, dest, DeliveryId::new(), "test", now + 1)
                .await
                .unwrap()
        );
        assert!(
            !store
                .resend(&MessageId::new(), dest, DeliveryId::new(), "test", now + 1)
                .await
                .unwrap()
        );
        let c = store
            .claim(claim(now + 2, "l2", dest, 1, 10_000))
            .await
            .unwrap();
        assert_eq!(c.claimed.len(), 1);
        let mut f = finish(
            &c.claimed[0],
            NextState::Delivered,
            AttemptOutcome::Delivered,
            now + 2,
        );
        f.attempt.as_mut().unwrap().number = 1;
        f.attempt.as_mut().unwrap().started_at = now + 2;
        store.finish_attempt(f).await.unwrap();

        let by_dest = store
            .list_destination_attempts(dest, None, 10)
            .await
            .unwrap();
        assert_eq!(by_dest.len(), 2);
        assert!(by_dest[0].manual && !by_dest[1].manual, "newest first");
        let next = store
            .list_destination_attempts(
                dest,
                Some(AttemptCursor {
                    started_at: by_dest[0].attempt.started_at,
                    delivery_id: by_dest[0].delivery_id.to_string(),
                    number: by_dest[0].attempt.number,
                }),
                10,
            )
            .await
            .unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].delivery_id, by_dest[1].delivery_id);
        let by_message = store.list_message_attempts(&mine.id, 10).await.unwrap();
        assert_eq!(by_message.len(), 2);
        assert_eq!(by_message[0].destination, dest);
    }
}
