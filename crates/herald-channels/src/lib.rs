//! # herald-channels
//!
//! One module per destination kind — [`webhook`], [`http`], [`slack`], [`teams`],
//! [`discord`], [`telegram`], [`email`], [`sms`]. Each turns a message into the provider's
//! request, sends it through the SSRF-guarded client ([`client::GuardedClient`]; SMTP checks
//! the same policy) and classifies the answer into a [`SendReport`]: delivered, retry (maybe
//! not before a given time, maybe pausing the whole destination) or permanent (maybe
//! disabling the destination). [`render`] holds what the human-facing kinds share:
//! truncation with a visible marker, escaping, overrides and templates; [`files`] what they
//! share about attachments (decoding, multipart bodies, notes, progress across retries).
//!
//! ```no_run
//! # async fn demo(message: herald_core::message::Message, spec: herald_core::destination::DestinationSpec) {
//! use herald_channels::{Channels, Attempt};
//! use herald_core::{destination::SecretPolicy, netpolicy::NetPolicy};
//!
//! let channels = Channels::new(NetPolicy::strict(), SecretPolicy::default()).unwrap();
//! let report = channels.send(&Attempt { message: &message, destination: "ops", spec: &spec, number: 1 }).await;
//! println!("{:?}", report.verdict);
//! # }
//! ```

pub mod client;
pub mod discord;
pub mod email;
pub mod files;
pub mod http;
pub mod render;
pub mod response;
pub mod secrets;
pub mod slack;
pub mod sms;
pub mod teams;
pub mod telegram;
pub mod webhook;

use herald_core::delivery::{ErrorClass, HttpExchange, SendReport, Verdict};
use herald_core::destination::{DestinationSpec, KindSpec};
use herald_core::message::Message;
use herald_core::netpolicy::NetPolicy;
use herald_core::template::TemplateEngine;
use std::sync::Arc;

pub use client::GuardedClient;

/// What an attempt may take beyond the destination's timeout, in all its requests.
pub const ATTEMPT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// `user-agent` of every outbound request.
pub const USER_AGENT: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));

/// One attempt to deliver a message to a destination.
pub struct Attempt<'a> {
    pub message: &'a Message,
    pub destination: &'a str,
    pub spec: &'a DestinationSpec,
    /// 1-based attempt number.
    pub number: u32,
}

/// Everything channels share: the guarded HTTP client, the template engine and the pooled
/// SMTP transports.
#[derive(Clone)]
pub struct Channels {
    pub http: GuardedClient,
    pub templates: Arc<TemplateEngine>,
    pub smtp: Arc<email::SmtpPools>,
    /// Steps of several-request attempts already done, so a retry does not repeat them.
    pub progress: Arc<files::Progress>,
    /// What `${env:…}`/`${file:…}` references may read.
    pub secrets: Arc<herald_core::destination::SecretPolicy>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

impl Channels {
    pub fn new(
        policy: NetPolicy,
        secrets: herald_core::destination::SecretPolicy,
    ) -> Result<Self, ChannelError> {
        Ok(Channels {
            http: GuardedClient::new(policy)?,
            templates: Arc::new(TemplateEngine::new()),
            smtp: Arc::new(email::SmtpPools::default()),
            progress: Arc::new(files::Progress::default()),
            secrets: Arc::new(secrets),
        })
    }

    /// Sends one attempt. Never panics and never returns an error: every failure is a
    /// classified [`SendReport`]. What the attempt sent that could be secret (header values,
    /// URL credentials) is masked in the report's error and excerpt, so a receiver that
    /// echoes its request cannot put them where `read` tokens see them.
    pub async fn send(&self, a: &Attempt<'_>) -> SendReport {
        let (mut report, sent, exchange) = SENT
            .scope(std::cell::RefCell::new(Vec::new()), async {
                EXCHANGE
                    .scope(std::cell::RefCell::new(None), async {
                        let report = self.send_unredacted(a).await;
                        (report, SENT.with(|s| s.take()), EXCHANGE.with(|x| x.take()))
                    })
                    .await
            })
            .await;
        let redact = |s: &str| herald_core::redact::redact(s, &sent);
        report.error = report.error.map(|e| redact(&e));
        report.response_excerpt = redact(&report.response_excerpt);
        // Only a failed attempt keeps its exchange: masking it costs more than the whole
        // rest of a delivered attempt's bookkeeping.
        let exchange = exchange.filter(|_| report.verdict != Verdict::Delivered);
        report.exchange = exchange.map(|x| {
            Box::new(HttpExchange {
                method: x.method,
                url: redact(&x.url),
                request_headers: x
                    .request_headers
                    .into_iter()
                    .map(|(k, v)| (k, redact(&v)))
                    .collect(),
                request_body: redact(&x.request_body),
                status: x.status,
                response_headers: x
                    .response_headers
                    .into_iter()
                    .map(|(k, v)| (k, redact(&v)))
                    .collect(),
            })
        });
        report
    }

    async fn send_unredacted(&self, a: &Attempt<'_>) -> SendReport {
        let kind = match secrets::resolve_kind(&a.spec.kind, &self.secrets) {
            Ok(k) => k,
            // The operator can fix a missing variable or file; keep the message meanwhile.
            Err(e) => return SendReport::failed(Verdict::retry(), ErrorClass::SecretRef, e),
        };
        // An attempt of several requests (files) gets the destination's timeout in all, so
        // it always ends inside its lease (the timeout + 10 s).
        let budget = a.spec.timeout() + ATTEMPT_GRACE;
        let report = match tokio::time::timeout(budget, self.send_kind(&kind, a)).await {
            Ok(r) => r,
            Err(_) => SendReport::failed(
                Verdict::retry(),
                ErrorClass::Timeout,
                format!(
                    "the attempt's requests did not finish within {budget:?} (the destination's timeout + {ATTEMPT_GRACE:?}); raise `timeout` for large files — requests already done are not repeated by the retry"
                ),
            ),
        };
        // A failed attempt keeps its progress: the retry, or a replay from the DLQ, sends
        // only what is left.
        if report.verdict == Verdict::Delivered {
            self.progress.clear(a.message, a.destination);
        }
        report
    }

    async fn send_kind(&self, kind: &KindSpec, a: &Attempt<'_>) -> SendReport {
        match kind {
            KindSpec::Webhook(w) => webhook::send(self, w, a).await,
            KindSpec::Http(h) => http::send(self, h, a).await,
            KindSpec::Slack(s) => slack::send(self, s, a).await,
            KindSpec::Teams(t) => teams::send(self, t, a).await,
            KindSpec::Discord(d) => discord::send(self, d, a).await,
            KindSpec::Telegram(t) => telegram::send(self, t, a).await,
            KindSpec::Email(e) => email::send(self, e, a).await,
            KindSpec::Sms(s) => sms::send(self, s, a).await,
        }
    }
}

tokio::task_local! {
    /// Values the current attempt sent that may be secret; see [`Channels::send`].
    static SENT: std::cell::RefCell<Vec<String>>;
    /// The current attempt's last HTTP request and answer; see [`Channels::send`].
    static EXCHANGE: std::cell::RefCell<Option<HttpExchange>>;
}

/// Keeps `x` as the current attempt's last exchange (outside an attempt, nothing happens).
pub(crate) fn note_exchange(x: HttpExchange) {
    let _ = EXCHANGE.try_with(|e| *e.borrow_mut() = Some(x));
}

/// Adds the answer's status (and, unless it is a success, its headers) to the exchange
/// noted last.
pub(crate) fn note_answer(status: u16, headers: &reqwest::header::HeaderMap) {
    let _ = EXCHANGE.try_with(|e| {
        if let Some(x) = e.borrow_mut().as_mut() {
            x.status = Some(status);
            if (200..300).contains(&status) {
                return;
            }
            x.response_headers = headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
        }
    });
}

/// Notes values the current attempt sends (outside an attempt, nothing happens).
pub(crate) fn note_sent(values: impl IntoIterator<Item = String>) {
    let _ = SENT.try_with(|s| s.borrow_mut().extend(values));
}
