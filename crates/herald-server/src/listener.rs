//! The HTTP listener: hyper's HTTP/1 under Herald's own limits, so slow and idle clients
//! cannot starve everyone else.
//!
//! * **A cap on open connections** (`[http] max_connections`): beyond it a new connection
//!   is closed at once and counted (`herald_http_connections_rejected_total`).
//! * **Header timeout** (`[http] header_timeout`): a request's headers must all arrive
//!   within it, counted from the connection's start for the first request and from the
//!   first byte for the next ones — a client trickling a header byte by byte (slowloris)
//!   is closed.
//! * **Idle timeout** (`[http] idle_timeout`): a kept-alive connection with no request in
//!   progress and no bytes either way for this long is closed. A request being handled is
//!   never cut.
//! * Accept errors (such as running out of file descriptors) are logged, at most every few
//!   seconds, and the loop pauses briefly instead of spinning; the soft `RLIMIT_NOFILE` is
//!   raised to the hard limit at start-up ([`raise_nofile_limit`]).
//!
//! hyper's own `header_read_timeout` also runs while a kept-alive connection waits for its
//! next request, which would make the idle timeout the header timeout; so both are kept
//! here, by a watchdog per connection that reads the connection's activity.

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// The listener's limits (`[http]`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// How long a graceful shutdown waits for open connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(10);
/// At most one log line per this long about rejected connections or accept errors.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` turns true, then stops accepting, lets requests
/// in progress finish (up to [`DRAIN`]) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(AtomicUsize::new(0));
    let mut rejected = Quiet::new("connections over the cap closed at once");
    let mut accept_errors = Quiet::new("accepting a connection failed");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: wait for descriptors to be freed rather than spin.
                accept_errors.note(Some(&e));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!("herald_http_connections_rejected_total").increment(1);
            rejected.note(None);
            drop(stream);
            continue;
        };
        let (app, limits, stop, open) = (app.clone(), limits.clone(), stop.clone(), open.clone());
        open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("herald_http_connections_open").increment(1.0);
        tokio::spawn(async move {
            serve_connection(stream, app, &limits, stop).await;
            drop(permit);
            open.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("herald_http_connections_open").decrement(1.0);
        });
    }
    drop(listener);
    let deadline = Instant::now() + DRAIN;
    while open.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One connection: HTTP/1 with keep-alive, watched for the header and idle timeouts, and
/// shut down gracefully when the server stops.
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let app = app.clone();
        let seen = seen.clone();
        seen.request_started();
        async move {
            let resp = tower::ServiceExt::oneshot(app, req).await;
            seen.request_finished();
            resp
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            why = watchdog(&activity, limits) => {
                tracing::debug!(reason = why, "closing a connection");
                metrics::counter!("herald_http_connections_timed_out_total", "reason" => why).increment(1);
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves when the connection has broken a limit, naming which.
async fn watchdog(activity: &Activity, limits: &Limits) -> &'static str {
    loop {
        let now = activity.elapsed_ms();
        let (deadline, why) = match activity.state() {
            // A request is being handled: only its own work decides; look again later.
            State::Busy => (now + limits.idle_timeout.as_millis() as u64, None),
            State::Headers { since } => (
                since + limits.header_timeout.as_millis() as u64,
                Some("header_timeout"),
            ),
            State::Idle { since } => (
                since + limits.idle_timeout.as_millis() as u64,
                Some("idle_timeout"),
            ),
        };
        if let Some(why) = why
            && now >= deadline
        {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now).max(10))).await;
    }
}

/// What one connection is doing, as its IO and its requests report it.
struct Activity {
    started: Instant,
    /// Requests being handled now.
    busy: AtomicUsize,
    /// When the last byte went either way (ms since `started`).
    last_io_ms: AtomicU64,
    /// When the first byte of the next request arrived (ms since `started`, plus one; 0:
    /// none yet). The first request is timed from the connection's start.
    head_since_ms: AtomicU64,
    /// Requests served so far.
    served: AtomicU64,
}

enum State {
    Busy,
    /// Waiting for (the rest of) a request's headers since `since` (ms).
    Headers {
        since: u64,
    },
    /// Kept alive between requests, silent since `since` (ms).
    Idle {
        since: u64,
    },
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            busy: AtomicUsize::new(0),
            last_io_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
            served: AtomicU64::new(0),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn state(&self) -> State {
        if self.busy.load(Ordering::Acquire) > 0 {
            return State::Busy;
        }
        if self.served.load(Ordering::Acquire) == 0 {
            return State::Headers { since: 0 };
        }
        match self.head_since_ms.load(Ordering::Acquire) {
            0 => State::Idle {
                since: self.last_io_ms.load(Ordering::Acquire),
            },
            t => State::Headers { since: t - 1 },
        }
    }

    fn read(&self) {
        let now = self.elapsed_ms();
        self.last_io_ms.store(now, Ordering::Release);
        if self.busy.load(Ordering::Acquire) == 0 {
            // The first byte of a request after the last one: its headers are timed.
            let _ = self.head_since_ms.compare_exchange(
                0,
                now + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    fn wrote(&self) {
        self.last_io_ms.store(self.elapsed_ms(), Ordering::Release);
    }

    fn request_started(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_since_ms.store(0, Ordering::Release);
    }

    fn request_finished(&self) {
        self.served.fetch_add(1, Ordering::AcqRel);
        self.last_io_ms.store(self.elapsed_ms(), Ordering::Release);
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream that tells its [`Activity`] when bytes move.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A warning logged at most every [`LOG_EVERY`], with how often it happened meanwhile.
struct Quiet {
    what: &'static str,
    last: Option<Instant>,
    since_last: u64,
}

impl Quiet {
    fn new(what: &'static str) -> Self {
        Quiet {
            what,
            last: None,
            since_last: 0,
        }
    }

    fn note(&mut self, error: Option<&std::io::Error>) {
        self.since_last += 1;
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return;
        }
        match error {
            Some(e) => tracing::warn!(count = self.since_last, error = %e, "{}", self.what),
            None => tracing::warn!(count = self.since_last, "{}", self.what),
        }
        self.last = Some(Instant::now());
        self.since_last = 0;
    }
}

/// Raises the soft limit on open files to the hard limit (a server holding thousands of
/// connections needs more than the usual 1 024) and logs both.
#[cfg(unix)]
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed, which is a
    // properly sized, initialised `rlimit`.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            tracing::warn!("cannot read the open-files limit");
            return;
        }
        let soft = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    soft,
                    hard = lim.rlim_max,
                    "cannot raise the open-files limit"
                );
                return;
            }
        }
        tracing::info!(
            was = soft,
            now = lim.rlim_cur,
            hard = lim.rlim_max,
            "open-files limit"
        );
    }
}

#[cfg(not(unix))]
pub fn raise_nofile_limit() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_timed_for_headers_then_idle_then_headers_again() {
        let a = Activity::new();
        assert!(
            matches!(a.state(), State::Headers { since: 0 }),
            "first request"
        );
        a.read();
        a.request_started();
        assert!(matches!(a.state(), State::Busy));
        a.request_finished();
        assert!(matches!(a.state(), State::Idle { .. }), "kept alive");
        a.read();
        assert!(
            matches!(a.state(), State::Headers { .. }),
            "the next request"
        );
        a.request_started();
        a.request_finished();
        assert!(matches!(a.state(), State::Idle { .. }));
    }

    #[test]
    fn a_warning_is_logged_once_per_period_with_the_count() {
        let mut q = Quiet::new("x");
        q.note(None);
        assert_eq!(q.since_last, 0, "the first is logged");
        q.note(None);
        q.note(None);
        assert_eq!(
            q.since_last, 2,
            "the next ones are counted for the next line"
        );
    }
}
