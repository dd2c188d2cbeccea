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
    /// A client for the Herald that flags, environment or the CLI configuration file name.
    pub fn new(remote: &Remote) -> Result<Self, String> {
        let target = crate::profile::resolve(remote)?;
        herald_server::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("herald-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Api {
            base: target.url,
            token: target.token,
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
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?;
        let parsed = if text.is_empty() {
            Some(Value::Null)
        } else {
            serde_json::from_str::<Value>(&text).ok()
        };
        if status.is_success() {
            return match parsed {
                Some(value) => Ok((status, value)),
                None => Err(foreign(status, &url, &content_type, &text)),
            };
        }
        match parsed.filter(is_problem) {
            Some(problem) => Err(self.explain(status, &problem)),
            None => Err(foreign(status, &url, &content_type, &text)),
        }
    }

    /// A problem document in words: one line, or a headline and one line per field error.
    fn explain(&self, status: StatusCode, problem: &Value) -> String {
        let detail = problem["detail"].as_str().unwrap_or_default();
        let head = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let errors: Vec<String> = problem["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}: {}",
                    crate::table::cell(e, "field"),
                    crate::table::cell(e, "message")
                )
            })
            .collect();
        match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => format!(
                "{head}: no token given; set HERALD_TOKEN, pass --token, or put `token_file` in \
                 ~/.config/herald/cli.toml ({detail})"
            ),
            StatusCode::UNAUTHORIZED => format!(
                "{head}: the token was refused: {detail} (wrong, revoked, or for another Herald; \
                 set HERALD_TOKEN or --token)"
            ),
            StatusCode::FORBIDDEN => match missing_scope(detail) {
                Some(scope) => format!(
                    "{head}: this token lacks the `{scope}` scope, so it may not do this. Use a \
                     token with it (an admin makes one: herald tokens create NAME --scopes {scope})"
                ),
                None => format!("{head}: {detail}"),
            },
            // The detail repeats the field errors joined on one line: each is shown once.
            _ if errors.len() == 1 => format!("{head}: {}", errors[0]),
            _ if !errors.is_empty() => {
                let mut msg = format!("{head}: {} problems", errors.len());
                for e in &errors {
                    msg.push_str("\n  ");
                    msg.push_str(e);
                }
                msg
            }
            _ => format!("{head}: {detail}"),
        }
    }
}

/// Whether an answer is an RFC 9457 problem document, as Herald sends on every error.
fn is_problem(v: &Value) -> bool {
    v["status"].is_u64() && v["title"].is_string() && v["detail"].is_string()
}

/// The scope a 403 names: "this token lacks the `admin` scope".
fn missing_scope(detail: &str) -> Option<&str> {
    let rest = detail.split_once("lacks the `")?.1;
    Some(rest.split_once('`')?.0).filter(|s| !s.is_empty())
}

/// An answer that is not Herald's, in one line: its status, what it was, and a hint.
fn foreign(status: StatusCode, url: &str, content_type: &str, text: &str) -> String {
    let what = if text.trim().is_empty() {
        "an empty body".to_string()
    } else if content_type.contains("html") || text.trim_start().starts_with('<') {
        match html_title(text) {
            Some(t) => format!("an HTML page titled {:?}", shorten(&t, 60)),
            None => "an HTML page".to_string(),
        }
    } else {
        let first = text.lines().map(str::trim).find(|l| !l.is_empty());
        let kind = if content_type.is_empty() {
            "a body".to_string()
        } else {
            format!(
                "{} text",
                content_type.split(';').next().unwrap_or(content_type)
            )
        };
        format!("{kind} starting {:?}", shorten(first.unwrap_or(""), 60))
    };
    format!(
        "{} {} from {url}, which is not an answer from Herald ({what}); is --url/HERALD_URL \
         pointing at Herald?",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = start + lower[start..].find('>')? + 1;
    let close = open_end + lower[open_end..].find("</title")?;
    let t = html
        .get(open_end..close)?
        .split_whitespace()
        .collect::<Vec<_>>();
    (!t.is_empty()).then(|| t.join(" "))
}

/// At most `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forbidden_answer_names_the_missing_scope() {
        assert_eq!(
            missing_scope("this token lacks the `admin` scope"),
            Some("admin")
        );
        assert_eq!(missing_scope("no"), None);
    }

    #[test]
    fn a_foreign_answer_is_one_line() {
        let page = "<!DOCTYPE html>\n<html><head><title>404 Not\n Found</title></head><body>\n<h1>Not Found</h1>\n</body></html>";
        let m = foreign(
            StatusCode::NOT_FOUND,
            "http://127.0.0.1:1/api/v1/x",
            "text/html; charset=utf-8",
            page,
        );
        assert_eq!(
            m,
            "404 Not Found from http://127.0.0.1:1/api/v1/x, which is not an answer from Herald \
             (an HTML page titled \"404 Not Found\"); is --url/HERALD_URL pointing at Herald?"
        );
        let long = "x".repeat(500) + "\nsecond line";
        let m = foreign(StatusCode::OK, "http://h/", "text/plain", &long);
        assert!(
            !m.contains('\n') && m.contains("text/plain text starting"),
            "{m}"
        );
        assert!(m.chars().count() < 250, "{m}");
        let m = foreign(StatusCode::BAD_GATEWAY, "http://h/", "", "");
        assert!(
            m.starts_with("502 Bad Gateway") && m.contains("an empty body"),
            "{m}"
        );
    }
}
