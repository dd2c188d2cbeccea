//! The fast sink: answers every request `200 ok` and counts it, noting when each message id
//! first arrived (for latency).

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
    /// webhook-id → first arrival, only while `track` is on.
    pub arrivals: Mutex<Option<HashMap<String, Instant>>>,
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

    /// Starts noting arrivals per message id.
    pub fn track(&self) {
        *self.inner.arrivals.lock().expect("sink lock") = Some(HashMap::new());
    }

    /// Keeps in `ids` only the messages that have not arrived yet (while tracking).
    pub fn retain_missing(&self, ids: &mut Vec<String>) {
        if let Some(map) = self.inner.arrivals.lock().expect("sink lock").as_ref() {
            ids.retain(|id| !map.contains_key(id));
        }
    }

    /// The arrivals noted so far; tracking stops.
    pub fn arrivals(&self) -> HashMap<String, Instant> {
        self.inner
            .arrivals
            .lock()
            .expect("sink lock")
            .take()
            .unwrap_or_default()
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> &'static str {
    inner.count.fetch_add(1, Ordering::Relaxed);
    if let Some(map) = inner.arrivals.lock().expect("sink lock").as_mut()
        && let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok())
    {
        map.entry(id.to_string()).or_insert_with(Instant::now);
    }
    "ok"
}
