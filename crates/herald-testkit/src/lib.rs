//! # herald-testkit
//!
//! Test support shared by every Herald test: loopback fakes that answer as providers do
//! ([`receiver::FakeReceiver`] scripted with [`providers`]' answers, and a real SMTP server,
//! [`smtp::SmtpSink`]) and helpers that start a real Herald, in-process
//! ([`herald::TestHerald`]) or as the real binary ([`process`]), and a browser-like client
//! of the dashboard ([`dashboard::Dashboard`]). [`mime`] parses emails and
//! `multipart/form-data` uploads back with a real MIME parser.
//!
//! All network traffic stays on 127.0.0.1.
//!
//! ```no_run
//! # async fn demo() {
//! use herald_testkit::{herald::TestHerald, receiver::{FakeReceiver, Reply}};
//! let rx = FakeReceiver::start().await;
//! rx.push(Reply::status(500));
//! let h = TestHerald::start().await;
//! h.put_destination("hook", serde_json::json!({"kind": "webhook", "url": rx.url("/hook")})).await;
//! # }
//! ```

pub mod compress;
pub mod dashboard;
pub mod faults;
pub mod herald;
pub mod mime;
pub mod postgres;
pub mod process;
pub mod providers;
pub mod receiver;
pub mod smtp;

use std::time::Duration;

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
