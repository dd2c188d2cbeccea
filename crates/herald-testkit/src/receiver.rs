//! A programmable HTTP receiver on 127.0.0.1: answers from a script of replies (then a
//! default), records every request, and can be slow on purpose.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn ok() -> Self {
        Reply {
            body: b"ok".to_vec(),
            ..Self::status(200)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into().into_bytes();
        self
    }

    /// A binary body, e.g. a file served for a `url` attachment.
    pub fn bytes(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body with `content-type: application/json`.
    pub fn json(self, v: serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Computes an answer from the request, as a stateful fake provider does.
pub type Responder = Arc<dyn Fn(&Received) -> Option<Reply> + Send + Sync>;

#[derive(Default)]
struct Inner {
    script: Mutex<VecDeque<Reply>>,
    /// Answers for the next request to a path ending so, before anything else.
    targeted: Mutex<Vec<(String, Reply)>>,
    responder: Mutex<Option<Responder>>,
    default: Mutex<Option<Reply>>,
    received: Mutex<Vec<Received>>,
}

/// The fake receiver; dropped, it stops serving.
#[derive(Clone)]
pub struct FakeReceiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    _shutdown: Arc<tokio::sync::oneshot::Sender<()>>,
}

impl FakeReceiver {
    /// Starts on a random port of 127.0.0.1, answering 200 `ok` unless scripted otherwise.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Inner::default());
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        FakeReceiver {
            addr,
            inner,
            _shutdown: Arc::new(tx),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues one answer (answers are used in order, then the default).
    pub fn push(&self, reply: Reply) {
        self.inner.script.lock().unwrap().push_back(reply);
    }

    /// Answers the next request whose path ends with `suffix` (e.g. `/sendDocument`) with
    /// `reply`, ahead of the script: a failure injected into one step of a flow.
    pub fn push_for(&self, suffix: &str, reply: Reply) {
        self.inner
            .targeted
            .lock()
            .unwrap()
            .push((suffix.into(), reply));
    }

    /// Answers by `f` when the script is exhausted (a `None` falls through to the default).
    pub fn respond_with(&self, f: impl Fn(&Received) -> Option<Reply> + Send + Sync + 'static) {
        *self.inner.responder.lock().unwrap() = Some(Arc::new(f));
    }

    /// Sets the answer used once the script is exhausted.
    pub fn set_default(&self, reply: Reply) {
        *self.inner.default.lock().unwrap() = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.inner.received.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        crate::eventually(
            timeout,
            &format!("{n} requests at the receiver"),
            || async {
                let r = self.received();
                (r.len() >= n).then_some(r)
            },
        )
        .await
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        method,
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body,
        at: Instant::now(),
    };
    inner.received.lock().unwrap().push(received.clone());
    let targeted = {
        let mut t = inner.targeted.lock().unwrap();
        t.iter()
            .position(|(suffix, _)| received.path.ends_with(suffix.as_str()))
            .map(|i| t.remove(i).1)
    };
    let scripted = targeted.or_else(|| inner.script.lock().unwrap().pop_front());
    let responder = inner.responder.lock().unwrap().clone();
    let reply = scripted
        .or_else(|| responder.and_then(|f| f(&received)))
        .or_else(|| inner.default.lock().unwrap().clone())
        .unwrap_or_else(Reply::ok);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
        .into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}
