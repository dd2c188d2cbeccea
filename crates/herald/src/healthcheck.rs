//! `herald healthcheck`: is a Herald ready (`GET /readyz` answers 200)? For a container's
//! `HEALTHCHECK` and the systemd unit's `ExecStartPost`, so neither needs curl.

use crate::cli::ServeArgs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between tries with `--wait`.
const RETRY_EVERY: Duration = Duration::from_millis(250);

pub async fn run(
    server: ServeArgs,
    url: Option<String>,
    wait: Option<Duration>,
) -> Result<ExitCode, String> {
    let base = match url {
        Some(u) => crate::profile::normalize_url(&u).map_err(|e| format!("--url: {e}"))?,
        None => {
            let config = crate::commands::server_config(server)?;
            format!("http://{}", local_address(&config.listen))
        }
    };
    let readyz = format!("{base}/readyz");
    herald_server::install_crypto_provider();
    let http = reqwest::Client::builder()
        .user_agent(concat!("herald-healthcheck/", env!("CARGO_PKG_VERSION")))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let deadline = Instant::now() + wait.unwrap_or_default();
    loop {
        let why = match ask(&http, &readyz).await {
            Ok(()) => {
                println!("ready: {readyz}");
                return Ok(ExitCode::SUCCESS);
            }
            Err(why) => why,
        };
        if Instant::now() + RETRY_EVERY > deadline {
            let waited = wait.map(|w| format!(" (waited {w:?})")).unwrap_or_default();
            eprintln!("herald: not ready{waited}: {why}");
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// One `GET /readyz`: `Ok` on 200, else what was wrong.
async fn ask(http: &reqwest::Client, readyz: &str) -> Result<(), String> {
    let resp = http
        .get(readyz)
        .send()
        .await
        .map_err(|e| format!("{readyz}: {}", crate::client::root_cause(&e)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::OK {
        return Ok(());
    }
    // A Herald that is not ready says why: {"ready": false, "reason": …}.
    let body = resp.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    Err(format!("{readyz} answered {status}: {reason}"))
}

/// Where a client on this machine reaches a listener bound to `listen`: an unspecified
/// address (`0.0.0.0`, `[::]`) is asked on loopback; a host name is kept.
pub fn local_address(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip = match a.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            SocketAddr::new(ip, a.port()).to_string()
        }
        Ok(a) => a.to_string(),
        Err(_) => listen.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::local_address;

    #[test]
    fn a_wildcard_listener_is_asked_on_loopback() {
        assert_eq!(local_address("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(local_address("[::]:9000"), "[::1]:9000");
        assert_eq!(local_address("192.0.2.7:8080"), "192.0.2.7:8080");
        assert_eq!(local_address("localhost:8080"), "localhost:8080");
    }
}
