//! Unit tests of the dispatcher's pieces, one module per piece, on the real SQLite store,
//! real destination entries and (where an attempt is made) a loopback fake receiver.

use super::*;
use herald_core::breaker::Breaker;
use herald_core::crypto::SecretBox;
use herald_core::destination::{DestinationSpec, SecretPolicy};
use herald_core::ids::{DeliveryId, LeaseToken, MessageId};
use herald_core::netpolicy::NetPolicy;
use herald_store::sql::{SqlStore, StoreOptions};
use herald_store::{DestinationRow, NewDelivery, NewMessage};
use herald_testkit::receiver::FakeReceiver;
use serde_json::{Value, json};

mod accept;
mod attempt;
mod capacity;
mod flaky;
mod planning;
mod ready;
mod recorder;

/// Settings with a 60 s lease and `concurrency` attempts in all (4 per destination).
fn settings(concurrency: u32) -> DispatchSettings {
    DispatchSettings {
        concurrency,
        destination_concurrency: 4,
        lease: Duration::from_secs(60),
        max_retry_after: Duration::from_secs(3600),
    }
}

/// A dispatcher's world: a SQLite store in a temporary directory, the destination cache,
/// channels that may reach 127.0.0.1 only, and a fake receiver there.
struct World {
    _dir: tempfile::TempDir,
    sql: Arc<SqlStore>,
    ctx: DispatchContext,
    secrets: SecretBox,
    rx: FakeReceiver,
    _events: mpsc::UnboundedReceiver<DispatchEvent>,
}

async fn open_sqlite(dir: &tempfile::TempDir) -> Arc<SqlStore> {
    let opts = StoreOptions {
        synchronous_full: false,
        read_connections: 1,
    };
    Arc::new(
        SqlStore::open(&dir.path().join("herald.db"), opts)
            .await
            .expect("open the SQLite store"),
    )
}

async fn world(settings: DispatchSettings) -> World {
    world_with(settings, |s| s).await
}

/// A world whose dispatcher sees the SQLite store through `wrap` (e.g. [`flaky::Flaky`]).
async fn world_with(
    settings: DispatchSettings,
    wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let sql = open_sqlite(&dir).await;
    let store = wrap(sql.clone());
    let channels = Channels::new(
        NetPolicy::with_allowed("127.0.0.1/32").expect("policy"),
        SecretPolicy::default(),
    )
    .expect("channels");
    let (events, events_rx) = mpsc::unbounded_channel();
    let ctx = DispatchContext {
        store,
        destinations: Arc::new(DestinationCache::default()),
        channels,
        settings,
        dispatcher: Dispatcher::new(),
        events,
    };
    World {
        _dir: dir,
        sql,
        ctx,
        secrets: SecretBox::new(&[7; 32]),
        rx: FakeReceiver::start().await,
        _events: events_rx,
    }
}

impl World {
    fn dispatcher(&self) -> &Dispatcher {
        &self.ctx.dispatcher
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.dispatcher()
            .inner
            .sched
            .lock()
            .expect("dispatcher lock")
    }

    /// Stores a webhook destination to the fake receiver, with `extra` settings merged in,
    /// and puts it in the cache as the API does.
    async fn destination(&self, name: &str, extra: Value) -> Arc<DestinationEntry> {
        let mut v = json!({"kind": "webhook", "url": self.rx.url(&format!("/{name}"))});
        for (k, x) in extra.as_object().expect("an object").iter() {
            v[k] = x.clone();
        }
        let mut spec: DestinationSpec = serde_json::from_value(v).expect("a destination spec");
        spec.complete();
        let now = now_ms();
        let row = DestinationRow {
            name: name.to_string(),
            kind: spec.kind.name().to_string(),
            sealed_spec: self
                .secrets
                .seal(&serde_json::to_vec(&spec).expect("spec json")),
            enabled: true,
            disabled_reason: None,
            paused_until: None,
            breaker: None,
            failing_since: None,
            last_success_at: None,
            created_at: now,
            updated_at: now,
        };
        self.sql
            .put_destination(row.clone(), "test")
            .await
            .expect("put destination");
        let entry = DestinationEntry::from_row(row, &self.secrets).expect("entry");
        self.ctx.destinations.insert(entry)
    }

    fn dest(&self, name: &str) -> Arc<DestinationEntry> {
        self.ctx.destinations.get(name).expect("destination")
    }

    /// Stores `n` messages to `dest`, their deliveries leased to this node (token, until)
    /// as at accept, and returns them as the ready queue holds them.
    async fn leased(&self, dest: &str, n: usize, lease_until: i64) -> Vec<Ready> {
        let token = LeaseToken::new();
        let batch: Vec<NewMessage> = (0..n)
            .map(|_| {
                let mut m = message(dest);
                m.deliveries[0].lease = Some(AcceptLease {
                    token: token.clone(),
                    until: lease_until,
                });
                m
            })
            .collect();
        let ids: Vec<(MessageId, DeliveryId)> = batch
            .iter()
            .map(|m| (m.id.clone(), m.deliveries[0].id.clone()))
            .collect();
        let outcomes = self.sql.accept_messages(batch).await.expect("accept");
        assert!(outcomes.iter().all(|o| *o == AcceptOutcome::Accepted));
        let mut out = Vec::new();
        for (mid, did) in ids {
            let delivery = self.sql.get_delivery(&did).await.unwrap().unwrap();
            assert_eq!(delivery.status, DeliveryStatus::InFlight);
            let message = self.sql.get_message(&mid).await.unwrap().unwrap();
            out.push(Ready {
                claim: ClaimedDelivery {
                    delivery,
                    message,
                    lease_token: token.clone(),
                },
                lease_until,
                message: None,
            });
        }
        out
    }

    fn push_ready(&self, items: Vec<Ready>) {
        let mut sched = self.sched();
        for r in items {
            sched
                .ready
                .entry(r.claim.delivery.destination.clone())
                .or_default()
                .push_back(r);
        }
    }

    async fn status(&self, delivery_id: &(impl AsRef<str> + ?Sized)) -> DeliveryStatus {
        self.sql
            .get_delivery(&DeliveryId::stored(delivery_id.as_ref().to_string()))
            .await
            .expect("get delivery")
            .expect("the delivery exists")
            .status
    }

    /// Waits until the delivery has the status (an attempt runs on its own task).
    async fn wait_status(&self, delivery_id: &(impl AsRef<str> + ?Sized), want: DeliveryStatus) {
        herald_testkit::eventually(Duration::from_secs(20), "the delivery's status", || async {
            (self.status(delivery_id).await == want).then_some(())
        })
        .await;
    }
}

/// A message to `dest`, not leased (stored `pending`).
fn message(dest: &str) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        event_type: "test".into(),
        body: r#"{"text":"hi"}"#.into(),
        created_at: now_ms(),
        deliveries: vec![NewDelivery {
            id: DeliveryId::new(),
            destination: dest.into(),
            lease: None,
        }],
        idempotency: None,
        actor: "test".into(),
        tenant: None,
    }
}

/// A delivery as the ready queue holds it, for the capacity arithmetic only (never stored).
fn unstored_ready(dest: &str) -> Ready {
    let now = now_ms();
    Ready {
        claim: ClaimedDelivery {
            delivery: DeliveryRecord {
                id: DeliveryId::new(),
                message_id: MessageId::new(),
                destination: dest.into(),
                status: DeliveryStatus::InFlight,
                attempt_count: 0,
                budget_base: 0,
                next_attempt_at: Some(now),
                last_status_code: None,
                last_error: None,
                fallback_of: None,
                dead_at: None,
                created_at: now,
                updated_at: now,
            },
            message: MessageRecord {
                id: MessageId::new(),
                event_type: "test".into(),
                idempotency_key: None,
                body: r#"{"text":"hi"}"#.into(),
                created_at: now,
                tenant: None,
            },
            lease_token: LeaseToken::new(),
        },
        lease_until: now + 60_000,
        message: None,
    }
}

/// An open breaker whose cooldown ends at `next_probe_at`.
fn open_breaker(next_probe_at: i64) -> Breaker {
    Breaker::Open {
        consecutive_failures: 5,
        opened_at: next_probe_at - 30_000,
        cooldown_ms: 30_000,
        next_probe_at,
    }
}

/// A world whose store is the SQLite store behind a [`flaky::Flaky`] set up by `configure`.
async fn flaky_world(
    settings: DispatchSettings,
    configure: impl FnOnce(&mut flaky::Flaky),
) -> (World, Arc<flaky::Flaky>) {
    let mut keep = None;
    let w = world_with(settings, |inner| {
        let mut f = flaky::Flaky::new(inner);
        configure(&mut f);
        let f = Arc::new(f);
        keep = Some(f.clone());
        f
    })
    .await;
    (w, keep.expect("wrapped"))
}
