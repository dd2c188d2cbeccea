//! A `herald serve` process for one scenario: fresh data directory, loopback exempt from
//! the SSRF guard, default durability (`synchronous=FULL`).

use herald_testkit::process::HeraldProcess;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub const TOKEN: &str = "hrld_benchadmin00_0123456789abcdefABCDEF0123456789";
/// The master key the nodes of a bench cluster share (base64 of 32 bytes).
pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

pub struct Node {
    pub process: HeraldProcess,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The herald binary: `--bin`, or `herald` next to this executable.
pub fn binary(configured: Option<&Path>) -> Result<PathBuf, String> {
    let path = match configured {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("herald"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no herald binary at {} (build it: cargo build --release -p herald, or pass --bin)",
            path.display()
        ))
    }
}

impl Node {
    /// A node on embedded SQLite in a fresh data directory.
    pub async fn start(bin: &Path) -> Result<Self, String> {
        Self::start_on(bin, None).await
    }

    /// A node on a fresh database of the Postgres server at `postgres` (a base URL), or on
    /// SQLite when `None`.
    pub async fn start_on(bin: &Path, postgres: Option<&str>) -> Result<Self, String> {
        let database = match postgres {
            Some(base) => Some(herald_testkit::postgres::create_database(base, "bench").await?),
            None => None,
        };
        Self::spawn(bin, database.as_deref(), None).await
    }

    /// A node on the database at `database` (`None`: embedded SQLite in its own fresh data
    /// directory), sealing secrets with `master_key` when several nodes share it.
    pub async fn spawn(
        bin: &Path,
        database: Option<&str>,
        master_key: Option<&str>,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut env = vec![
            ("HERALD_ADMIN_TOKEN", TOKEN.to_string()),
            ("HERALD_ALLOW_NETWORKS", "127.0.0.0/8".to_string()),
            ("HERALD_CONCURRENCY", "512".to_string()),
        ];
        if let Some(url) = database {
            env.push(("HERALD_DATABASE_URL", url.to_string()));
        }
        if let Some(key) = master_key {
            env.push(("HERALD_MASTER_KEY", key.to_string()));
        }
        let bin = bin.to_path_buf();
        let data = dir.path().to_path_buf();
        let process = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            HeraldProcess::spawn(&bin, &data, &env)
        })
        .await
        .map_err(|e| format!("starting herald: {e}"))?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Node {
            process,
            http,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.base)
    }

    /// Posts one message (`POST /api/v1/messages`) and returns its id from the 202.
    pub async fn submit(&self, message: &Value) -> Result<String, String> {
        self.submit_to("/api/v1/messages", message).await
    }

    /// Posts one message to `path` (the native API's or an application's
    /// `/api/v1/app/{app}/msg`) and returns its id from the 202.
    pub async fn submit_to(&self, path: &str, message: &Value) -> Result<String, String> {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(message)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        if status.as_u16() != 202 {
            return Err(format!("{path}: {status}"));
        }
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "no id in the answer".to_string())
    }

    /// The herald process's id.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// SIGTERM and wait for the clean exit (attempts in flight are recorded, its database
    /// connections closed).
    pub async fn stop(self) -> Result<(), String> {
        tokio::task::spawn_blocking(move || {
            let Node { process, _dir, .. } = self;
            process.terminate();
        })
        .await
        .map_err(|e| format!("stopping herald: {e}"))
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{path}: {status} {v}"));
        }
        Ok(v)
    }

    /// A signed webhook destination to the sink, optionally created disabled (its
    /// deliveries then wait: ingest measured alone, or a backlog built up).
    pub async fn webhook(&self, name: &str, url: &str, enabled: bool) -> Result<(), String> {
        let spec = json!({"kind": "webhook", "url": url, "enabled": enabled, "max_in_flight": 128, "circuit_breaker": false});
        self.call(
            reqwest::Method::PUT,
            &format!("/api/v1/destinations/{name}"),
            Some(spec),
        )
        .await
        .map(|_| ())
    }

    pub async fn enable(&self, name: &str) -> Result<(), String> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/destinations/{name}/enable"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Peak resident memory (VmHWM) of the herald process, in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        self.status_bytes("VmHWM:")
    }

    /// Resident memory (VmRSS) of the herald process now, in bytes.
    pub fn rss(&self) -> Option<u64> {
        self.status_bytes("VmRSS:")
    }

    /// A size field (kB) of `/proc/<pid>/status`, in bytes.
    fn status_bytes(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> Result<String, String> {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    }
}
