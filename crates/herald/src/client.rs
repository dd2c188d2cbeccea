//! A small client for Herald's API, with messages a person can act on.

use crate::cli::Remote;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(remote: &Remote) -> Result<Self, String> {
        herald_server::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("herald-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Api {
            base: remote.url.trim_end_matches('/').to_string(),
            token: remote.token.clone(),
            http,
        })
    }

    /// Calls the API; a non-2xx answer becomes an error naming the problem.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                format!(
                    "cannot reach Herald at {}: {} (is `herald serve` running there? set HERALD_URL or --url)",
                    self.base,
                    root_cause(&e)
                )
            } else {
                format!("request to {url} failed: {}", root_cause(&e))
            }
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok((status, value));
        }
        let detail = value
            .get("detail")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        let mut msg = match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => format!(
                "401 Unauthorized: no token given; set HERALD_TOKEN or pass --token ({detail})"
            ),
            StatusCode::UNAUTHORIZED => format!(
                "401 Unauthorized: the token was refused: {detail} (wrong, revoked, or for another Herald; set HERALD_TOKEN or --token)"
            ),
            StatusCode::FORBIDDEN => format!(
                "403 Forbidden: the token is valid but not allowed to do this: {detail} (create one with the needed scope: `herald tokens create NAME --scopes admin`)"
            ),
            _ => format!(
                "{} {}: {detail}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
        };
        if let Some(errors) = value.get("errors").and_then(Value::as_array) {
            for e in errors {
                msg.push_str(&format!(
                    "\n  {}: {}",
                    crate::table::cell(e, "field"),
                    crate::table::cell(e, "message")
                ));
            }
        }
        Err(msg)
    }
}

/// The innermost cause of an error ("Connection refused (os error 111)"), which is what a
/// person can act on.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
