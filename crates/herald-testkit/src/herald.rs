//! An in-process Herald on a random loopback port with a fresh data directory, and an API
//! client bound to it.

use herald_server::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// A retry schedule short enough for tests: three more attempts, 100 ms apart.
pub fn fast_retry() -> Value {
    serde_json::json!({"schedule": ["100ms", "100ms", "100ms"], "jitter": false})
}

pub const ADMIN_TOKEN: &str = "hrld_testadmintok_0123456789abcdefABCDEF0123456789";

pub struct TestHerald {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    pub herald: Option<herald_server::Herald>,
    pub dir: tempfile::TempDir,
}

impl TestHerald {
    /// Loopback exempt from the SSRF guard (the receivers are local fakes).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the default test configuration, adjusted by `f`.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            admin_token: Some(ADMIN_TOKEN.into()),
            allow_networks: "127.0.0.0/8,::1/128".into(),
            sqlite_synchronous: "normal".into(),
            ..Config::default()
        };
        f(&mut config);
        Self::start_config(config, dir).await
    }

    /// Starts on a given configuration and data directory (e.g. to restart on the same data).
    pub async fn start_config(config: Config, dir: tempfile::TempDir) -> Self {
        herald_server::install_crypto_provider();
        let herald = herald_server::start(config).await.expect("herald starts");
        TestHerald {
            base: format!("http://{}", herald.addr),
            token: ADMIN_TOKEN.into(),
            http: reqwest::Client::new(),
            herald: Some(herald),
            dir,
        }
    }

    /// Stops gracefully and returns the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(h) = self.herald.take() {
            h.shutdown().await;
        }
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `len` bytes of `{` over a raw connection and returns the answer's status. The
    /// body is written from another task while the answer is read, so a server that answers
    /// (413) and closes before reading it all is still heard: an HTTP client that finishes
    /// writing first would fail on the closed socket instead.
    pub async fn post_oversized(&self, path: &str, headers: &[(&str, String)], len: usize) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut read, mut write) = stream.into_split();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {len}\r\nconnection: close\r\n"
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let writer = tokio::spawn(async move {
            let _ = write.write_all(head.as_bytes()).await;
            let chunk = vec![b'{'; 64 << 10];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len());
                if write.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
        });
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        writer.abort();
        let line = String::from_utf8_lossy(&answer);
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer: {line:?}"))
    }

    /// Calls the API with the admin token; returns the status and the JSON body (or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(&self.token.clone(), method, path, body).await
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("herald answers");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn put_destination(&self, name: &str, spec: Value) -> Value {
        let (status, body) = self
            .call(
                Method::PUT,
                &format!("/api/v1/destinations/{name}"),
                Some(spec),
            )
            .await;
        assert!(
            status.is_success(),
            "PUT destination {name}: {status} {body}"
        );
        body
    }

    /// Submits a message and returns the 202 body.
    pub async fn send(&self, msg: Value) -> Value {
        let (status, body) = self.call(Method::POST, "/api/v1/messages", Some(msg)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "POST /messages: {body}");
        body
    }

    pub async fn delivery(&self, id: &str) -> Value {
        let (status, body) = self
            .call(Method::GET, &format!("/api/v1/deliveries/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "GET delivery {id}: {body}");
        body
    }

    /// Waits until a delivery reaches `status`, returning its view with attempts.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        crate::eventually(
            timeout,
            &format!("delivery {id} to be {status}"),
            || async {
                let d = self.delivery(id).await;
                (d["status"] == status).then_some(d)
            },
        )
        .await
    }

    /// Submits a message and returns the id of its first delivery.
    pub async fn send_one(&self, msg: Value) -> String {
        Self::first_delivery(&self.send(msg).await)
    }

    /// `GET /api/v1/destinations/{name}` (secrets masked).
    pub async fn destination(&self, name: &str) -> Value {
        let (status, body) = self
            .call(Method::GET, &format!("/api/v1/destinations/{name}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "GET destination {name}: {body}");
        body
    }

    /// `GET /api/v1/destinations/{name}/health`.
    pub async fn health(&self, name: &str) -> Value {
        let (status, body) = self
            .call(
                Method::GET,
                &format!("/api/v1/destinations/{name}/health"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "GET health {name}: {body}");
        body
    }

    /// Waits until the destination is paused (a Retry-After was recorded); returns its health.
    pub async fn wait_paused(&self, name: &str, timeout: Duration) -> Value {
        crate::eventually(timeout, &format!("{name} to be paused"), || async {
            let h = self.health(name).await;
            h["paused_until"].is_string().then_some(h)
        })
        .await
    }

    /// `GET /api/openapi.json`.
    pub async fn openapi(&self) -> Value {
        let resp = self
            .http
            .get(self.url("/api/openapi.json"))
            .send()
            .await
            .expect("herald answers");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.expect("the document is JSON")
    }

    /// Creates an API token with these scopes; returns the secret.
    pub async fn token(&self, name: &str, scopes: &[&str]) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(serde_json::json!({"name": name, "scopes": scopes})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "POST /tokens: {body}");
        body["token"].as_str().expect("a token").to_string()
    }

    /// Reports an error (`POST /api/v1/errors`); returns the 202 body.
    pub async fn report_error(&self, report: Value) -> Value {
        let (status, body) = self
            .call(Method::POST, "/api/v1/errors", Some(report))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "POST /errors: {body}");
        body
    }

    /// The id of the first delivery of a 202 body.
    pub fn first_delivery(accepted: &Value) -> String {
        accepted["deliveries"][0]["id"]
            .as_str()
            .expect("a delivery id")
            .to_string()
    }
}
