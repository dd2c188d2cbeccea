//! Single requests with delivery live: a fixed number of clients, each posting one
//! message per request (`POST /api/v1/messages`, or an application's
//! `POST /api/v1/app/{app}/msg`) and the next as soon as the 202 is back, spread
//! round-robin over one or more nodes — the path Airflow tasks, Django handlers and most
//! webhook producers take.
//!
//! It is measured over a window: after [`WARM_UP`], the messages submitted during the
//! next `seconds` are noted (id and submit instant); deliveries of messages submitted
//! before or after the window do not count. Clients keep submitting after the window, so
//! its last messages are delivered under the same load, until every message of the window
//! has arrived at the sink or [`DRAIN`] has passed.

use crate::herald::Node;
use crate::sink::Sink;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Load before the window opens (connections made, queues at their working depth).
pub const WARM_UP: Duration = Duration::from_secs(1);
/// How long after the window's end its messages may take to arrive.
pub const DRAIN: Duration = Duration::from_secs(30);

/// What the `i`-th request of a load posts: the path and the message.
pub type Requests = Arc<dyn Fn(u64) -> (String, Value) + Send + Sync>;

struct Shared {
    start: Instant,
    end: Instant,
    /// (message id, submitted at) of every message submitted in the window.
    sent: Mutex<Vec<(String, Instant)>>,
    /// Messages accepted (202) since the load started, window or not.
    accepted: AtomicU64,
    /// Clients that have started a request after the window: once all have, `sent` is
    /// complete.
    past: AtomicUsize,
}

pub struct Load {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Result<(), String>>>,
}

/// What the load left for the measurement.
pub struct Done {
    pub window: Vec<(String, Instant)>,
    /// Every message accepted, from the first request to the last.
    pub accepted: u64,
}

impl Load {
    /// Starts `clients` clients posting `requests(i)` to `nodes` in turn; the window opens
    /// after [`WARM_UP`] and lasts `seconds`.
    pub fn start(nodes: &[Arc<Node>], clients: usize, seconds: u64, requests: Requests) -> Self {
        let start = Instant::now() + WARM_UP;
        let shared = Arc::new(Shared {
            start,
            end: start + Duration::from_secs(seconds),
            sent: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            past: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let nodes: Arc<Vec<Arc<Node>>> = Arc::new(nodes.to_vec());
        let tasks = (0..clients.max(1))
            .map(|_| {
                let (shared, stop, next, nodes, requests) = (
                    shared.clone(),
                    stop.clone(),
                    next.clone(),
                    nodes.clone(),
                    requests.clone(),
                );
                tokio::spawn(async move {
                    let mut past = false;
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let node = &nodes[i as usize % nodes.len()];
                        let t = Instant::now();
                        if !past && t >= shared.end {
                            past = true;
                            shared.past.fetch_add(1, Ordering::Relaxed);
                        }
                        let (path, message) = requests(i);
                        let id = node.submit_to(&path, &message).await?;
                        shared.accepted.fetch_add(1, Ordering::Relaxed);
                        if t >= shared.start && t < shared.end {
                            shared.sent.lock().expect("window lock").push((id, t));
                        }
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        Load {
            shared,
            stop,
            tasks,
        }
    }

    /// Waits until the window opens.
    pub async fn window_start(&self) {
        tokio::time::sleep_until(self.shared.start.into()).await;
    }

    /// Waits until the window closes.
    pub async fn window_end(&self) {
        tokio::time::sleep_until(self.shared.end.into()).await;
    }

    /// Waits (from the window's end) until every message submitted in the window has
    /// arrived at `sink`, at most [`DRAIN`]; returns early when a client has failed
    /// ([`stop`](Self::stop) then says why).
    pub async fn drain(&self, sink: &Sink) {
        self.window_end().await;
        let deadline = self.shared.end + DRAIN;
        let failed = || self.tasks.iter().any(|t| t.is_finished());
        while self.shared.past.load(Ordering::Relaxed) < self.tasks.len() {
            if failed() || Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut pending: Vec<String> = self
            .shared
            .sent
            .lock()
            .expect("window lock")
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        loop {
            sink.retain_missing(&mut pending);
            if pending.is_empty() || failed() || Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the clients (each finishes the request it is in) and hands over what was
    /// noted; the first client error, if any, fails the run.
    pub async fn stop(self) -> Result<Done, String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        let window = std::mem::take(&mut *self.shared.sent.lock().expect("window lock"));
        Ok(Done {
            window,
            accepted: self.shared.accepted.load(Ordering::Relaxed),
        })
    }
}
