//! The fast sink: answers every request `200 ok` and counts it, noting when each message id
//! arrived (for latency): its first copy, or its `n`-th when a message goes to `n`
//! destinations ([`Sink::track_copies`]).

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Default)]
pub struct Inner {
    pub count: AtomicU64,
    /// Arrivals by message id, only while tracking.
    tracking: Mutex<Option<Tracking>>,
}

/// Arrivals by message id (`webhook-id`, or `svix-id` for Svix-signed endpoints).
#[derive(Default)]
struct Tracking {
    /// Copies of a message that make it arrived (1: its first).
    copies: u32,
    /// Message id → when it arrived.
    arrived: HashMap<String, Instant>,
    /// Copies seen of messages not arrived yet (only when `copies` > 1).
    partial: HashMap<String, u32>,
}

impl Tracking {
    fn note(&mut self, id: &str, now: Instant) {
        if self.arrived.contains_key(id) {
            return;
        }
        if self.copies > 1 {
            let seen = self.partial.entry(id.to_string()).or_insert(0);
            *seen += 1;
            if *seen < self.copies {
                return;
            }
            self.partial.remove(id);
        }
        self.arrived.insert(id.to_string(), now);
    }
}

#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    pub inner: Arc<Inner>,
}

impl Sink {
    pub async fn start() -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("sink: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let inner = Arc::new(Inner::default());
        let app = Router::new().fallback(receive).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sink { addr, inner })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// Starts noting arrivals per message id: a message has arrived with its first copy.
    pub fn track(&self) {
        self.track_copies(1);
    }

    /// Starts noting arrivals per message id: a message has arrived when `copies` requests
    /// carrying its id have (one per destination it was routed to; the sink answers 200,
    /// so there are no retries to count twice).
    pub fn track_copies(&self, copies: u32) {
        *self.inner.tracking.lock().expect("sink lock") = Some(Tracking {
            copies,
            ..Tracking::default()
        });
    }

    /// Keeps in `ids` only the messages that have not arrived yet (while tracking).
    pub fn retain_missing(&self, ids: &mut Vec<String>) {
        if let Some(t) = self.inner.tracking.lock().expect("sink lock").as_ref() {
            ids.retain(|id| !t.arrived.contains_key(id));
        }
    }

    /// The arrivals noted so far; tracking stops.
    pub fn arrivals(&self) -> HashMap<String, Instant> {
        self.inner
            .tracking
            .lock()
            .expect("sink lock")
            .take()
            .map(|t| t.arrived)
            .unwrap_or_default()
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> &'static str {
    inner.count.fetch_add(1, Ordering::Relaxed);
    if let Some(t) = inner.tracking.lock().expect("sink lock").as_mut()
        && let Some(id) = ["webhook-id", "svix-id"]
            .iter()
            .find_map(|h| headers.get(*h))
            .and_then(|v| v.to_str().ok())
    {
        t.note(id, Instant::now());
    }
    "ok"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_arrives_with_its_last_copy() {
        let mut t = Tracking {
            copies: 3,
            ..Tracking::default()
        };
        let (a, b, c) = (
            Instant::now(),
            Instant::now() + std::time::Duration::from_millis(1),
            Instant::now() + std::time::Duration::from_millis(2),
        );
        t.note("m1", a);
        t.note("m1", b);
        assert!(!t.arrived.contains_key("m1"));
        t.note("m1", c);
        t.note("m1", c + std::time::Duration::from_millis(5));
        assert_eq!(t.arrived.get("m1"), Some(&c));
        assert!(t.partial.is_empty());
        let mut first = Tracking {
            copies: 1,
            ..Tracking::default()
        };
        first.note("m2", a);
        first.note("m2", b);
        assert_eq!(first.arrived.get("m2"), Some(&a));
    }
}
