//! The HTTP client every channel uses, guarded against SSRF.
//!
//! * Every address a host name resolves to is checked against the [`NetPolicy`] by the
//!   client's own resolver, at connect time, so a DNS answer that changes between check and
//!   use (rebinding) cannot slip through.
//! * IP-literal hosts never reach a resolver, so they are checked before the request.
//! * No proxies (a proxy would connect on our behalf), no redirects (a 3xx is an answer).

use crate::ChannelError;
use herald_core::netpolicy::NetPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

/// An address refused by the SSRF policy.
#[derive(Debug, thiserror::Error)]
#[error(
    "blocked by the SSRF policy: {host} is a {reason} (exempt networks with HERALD_ALLOW_NETWORKS)"
)]
pub struct SsrfBlocked {
    pub host: String,
    pub reason: &'static str,
}

struct GuardedResolver {
    policy: Arc<NetPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut allowed = Vec::with_capacity(addrs.len());
            let mut reason = "address without public route";
            for a in addrs {
                match policy.check(a.ip()) {
                    Ok(()) => allowed.push(a),
                    Err(r) => reason = r,
                }
            }
            if allowed.is_empty() {
                return Err(Box::new(SsrfBlocked { host, reason })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A `reqwest::Client` that only connects where the policy allows.
#[derive(Clone)]
pub struct GuardedClient {
    client: reqwest::Client,
    policy: Arc<NetPolicy>,
    /// URLs already parsed, by their text: a destination's attempts all go to the same
    /// URL, and parsing it again (with IDNA) cost more than signing the request.
    parsed: Arc<Mutex<HashMap<String, reqwest::Url>>>,
}

/// URLs kept parsed; past this the cache starts over (URLs that vary per message).
const PARSED_URLS: usize = 1024;

static CRYPTO: Once = Once::new();

/// Installs rustls' ring provider as the process default (once; idempotent). reqwest is
/// built without one, so every client in the process needs this first.
pub fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        // Another component may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl GuardedClient {
    pub fn new(policy: NetPolicy) -> Result<Self, ChannelError> {
        install_crypto_provider();
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .dns_resolver(GuardedResolver {
                policy: policy.clone(),
            })
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            // As many as a destination may have in flight (`max_in_flight` ≤ 1000): a
            // connection beyond the idle limit is closed after its answer, and the next
            // attempt pays a new handshake.
            .pool_max_idle_per_host(1000)
            .tcp_nodelay(true)
            .user_agent(crate::USER_AGENT)
            .build()
            .map_err(|e| ChannelError::Client(e.to_string()))?;
        Ok(GuardedClient {
            client,
            policy,
            parsed: Arc::default(),
        })
    }

    /// Checks a URL before a request: scheme, and the host if it is an IP literal.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, UrlProblem> {
        let u = self.parse(url)?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(UrlProblem::Invalid(
                "only http and https URLs are allowed".into(),
            ));
        }
        let ip: Option<IpAddr> = match u.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(UrlProblem::Invalid("the URL has no host".into())),
        };
        if let Some(ip) = ip {
            self.policy.check(ip).map_err(|reason| {
                UrlProblem::Blocked(SsrfBlocked {
                    host: ip.to_string(),
                    reason,
                })
            })?;
        }
        Ok(u)
    }

    /// Why the guard would refuse `url` when it is sent to, as far as can be told without
    /// a DNS lookup: literal addresses, and `localhost` names (taken as 127.0.0.1). `None`
    /// for other names (they are checked at each connection) and for `${…}` references.
    pub fn would_block(&self, url: &str) -> Option<String> {
        if herald_core::destination::has_reference(url) {
            return None;
        }
        let u = url::Url::parse(url).ok()?;
        let ip: IpAddr = match u.host()? {
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
            // Non-web schemes (`smtp://`) keep even a literal address as a name.
            url::Host::Domain(d) => match d.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    let d = d.trim_end_matches('.').to_ascii_lowercase();
                    if d != "localhost" && !d.ends_with(".localhost") {
                        return None;
                    }
                    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                }
            },
        };
        let reason = self.policy.check(ip).err()?;
        Some(format!(
            "{} is a {reason}, which the SSRF guard blocks: deliveries will fail unless allow_networks exempts it",
            u.host_str().unwrap_or_default()
        ))
    }

    fn parse(&self, url: &str) -> Result<reqwest::Url, UrlProblem> {
        let known = self.parsed.lock().ok().and_then(|m| m.get(url).cloned());
        if let Some(u) = known {
            return Ok(u);
        }
        let u = reqwest::Url::parse(url)
            .map_err(|e| UrlProblem::Invalid(format!("invalid URL: {e}")))?;
        if let Ok(mut m) = self.parsed.lock() {
            if m.len() >= PARSED_URLS {
                m.clear();
            }
            m.insert(url.to_string(), u.clone());
        }
        Ok(u)
    }

    /// `GET url` through the guard, reading at most `max_bytes` of a 2xx body: how `url`
    /// attachments are fetched once, at acceptance. The error says what went wrong in
    /// words a client can act on (and never carries the URL's query string).
    pub async fn fetch(
        &self,
        url: &str,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let u = self.check_url(url).map_err(|p| match p {
            UrlProblem::Invalid(e) => e,
            UrlProblem::Blocked(b) => b.to_string(),
        })?;
        let fetch = async {
            let mut resp =
                self.client.get(u).send().await.map_err(|e| {
                    ssrf_cause(&e).map_or_else(|| fetch_error(&e), ToString::to_string)
                })?;
            let status = resp.status();
            if !status.is_success() {
                let hint = if status.is_redirection() {
                    " (redirects are not followed; give the final URL)"
                } else {
                    ""
                };
                return Err(format!(
                    "the server answered HTTP {}{hint}",
                    status.as_u16()
                ));
            }
            if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
                return Err(format!("the file is over the limit of {max_bytes} bytes"));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_error(&e))? {
                if body.len() + chunk.len() > max_bytes {
                    return Err(format!("the file is over the limit of {max_bytes} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout(timeout, fetch)
            .await
            .unwrap_or_else(|_| Err(format!("no complete answer within {timeout:?}")))
    }

    /// The SSRF policy, for connections made outside HTTP (SMTP).
    pub fn policy(&self) -> &NetPolicy {
        &self.policy
    }

    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }
}

#[derive(Debug)]
pub enum UrlProblem {
    Invalid(String),
    Blocked(SsrfBlocked),
}

fn fetch_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        format!("the download {kind}")
    } else {
        format!("the download {kind}: {cause}")
    }
}

/// Whether a reqwest error was caused by the SSRF policy.
pub fn ssrf_cause(err: &reqwest::Error) -> Option<&SsrfBlocked> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(b) = e.downcast_ref::<SsrfBlocked>() {
            return Some(b);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(r: Result<reqwest::Url, UrlProblem>) -> bool {
        matches!(r, Err(UrlProblem::Blocked(_)))
    }

    #[test]
    fn a_url_parsed_once_is_still_checked_against_the_policy_every_time() {
        let strict = GuardedClient::new(NetPolicy::strict()).expect("client");
        for _ in 0..3 {
            assert!(blocked(strict.check_url("http://127.0.0.1:9/hook")));
        }
        let open = GuardedClient::new(NetPolicy::with_allowed("127.0.0.0/8").expect("policy"))
            .expect("client");
        let first = open
            .check_url("http://127.0.0.1:9/hook?a=1")
            .expect("allowed");
        let again = open
            .check_url("http://127.0.0.1:9/hook?a=1")
            .expect("allowed");
        assert_eq!(first, again);
        assert_eq!(again.query(), Some("a=1"));
        assert!(matches!(
            open.check_url("ftp://127.0.0.1/x"),
            Err(UrlProblem::Invalid(_))
        ));
    }

    #[test]
    fn bad_urls_are_refused_every_time_and_the_cache_stays_bounded() {
        let c = GuardedClient::new(NetPolicy::with_allowed("127.0.0.0/8").expect("policy"))
            .expect("client");
        for _ in 0..2 {
            assert!(matches!(
                c.check_url("not a url"),
                Err(UrlProblem::Invalid(_))
            ));
        }
        for i in 0..PARSED_URLS + 10 {
            c.check_url(&format!("http://127.0.0.1:9/m/{i}"))
                .expect("allowed");
        }
        let kept = c.parsed.lock().expect("cache").len();
        assert!(kept <= PARSED_URLS, "{kept} URLs kept");
        assert!(!c.parsed.lock().expect("cache").contains_key("not a url"));
    }
}
