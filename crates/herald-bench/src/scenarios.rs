//! The scenarios. Each starts a fresh Herald, runs, and returns one number per run.

use crate::Args;
use crate::herald::{Node, binary};
use crate::report::{Figure, Results};
use crate::sink::Sink;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BATCH: usize = 100;
/// Concurrent batch submitters in the end-to-end and backlog scenarios.
const LOADERS: usize = 8;

pub async fn run_all(args: &Args) -> Result<Results, String> {
    herald_server::install_crypto_provider();
    let bin = binary(args.bin.as_deref())?;
    let mut figures = Vec::new();
    let runs = args.runs.max(1);
    let mut ceiling = None;
    if args.wants("ceiling") {
        let mut v = Vec::new();
        for _ in 0..runs {
            v.push(raw_ceiling(args).await?);
        }
        let f = Figure::new("raw ceiling: client → sink", "req/s", v, None);
        ceiling = Some(f.median);
        figures.push(f);
    }
    let throughput = |name: &str, v: Vec<f64>, target: Option<&str>, figures: &mut Vec<Figure>| {
        let mut f = Figure::new(name, "msgs/s", v, target);
        f.of_ceiling = ceiling.map(|c| f.median / c);
        figures.push(f);
    };
    if args.wants("ingest") {
        let v = repeat(runs, || ingest(&bin, args, false)).await?;
        throughput("ingest, single requests", v, Some("≥ 10000"), &mut figures);
    }
    if args.wants("batch") {
        let v = repeat(runs, || ingest(&bin, args, true)).await?;
        throughput("ingest, batches of 100", v, Some("≥ 25000"), &mut figures);
    }
    if args.wants("e2e") {
        let v = repeat(runs, || end_to_end(&bin, args, None)).await?;
        throughput(
            "end to end, signed webhook",
            v,
            Some("≥ 10000"),
            &mut figures,
        );
        if let Some(pg) = args.postgres.as_deref().filter(|u| !u.is_empty()) {
            let v = repeat(runs, || end_to_end(&bin, args, Some(pg))).await?;
            throughput(
                "end to end, signed webhook, Postgres",
                v,
                Some("≥ 3000"),
                &mut figures,
            );
        }
    }
    if args.wants("latency") {
        let mut first = Vec::new();
        let (mut p50, mut p99, mut p999) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let l = latency(&bin, args).await?;
            first.push(l.first_attempt_p99_ms);
            p50.push(l.delivered[0]);
            p99.push(l.delivered[1]);
            p999.push(l.delivered[2]);
        }
        let rate = args.rate;
        figures.push(Figure::new(
            &format!("accepted → first attempt p99 @{rate}/s"),
            "ms",
            first,
            Some("≤ 10"),
        ));
        figures.push(Figure::new(
            &format!("submitted → delivered p50 @{rate}/s"),
            "ms",
            p50,
            None,
        ));
        figures.push(Figure::new(
            &format!("submitted → delivered p99 @{rate}/s"),
            "ms",
            p99,
            None,
        ));
        figures.push(Figure::new(
            &format!("submitted → delivered p99.9 @{rate}/s"),
            "ms",
            p999,
            None,
        ));
    }
    if args.wants("backlog") {
        let small = 10_000u64.min(args.backlog);
        let (mut rate_small, mut rate_large, mut rss) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            rate_small.push(backlog(&bin, small).await?.0);
            let (r, peak) = backlog(&bin, args.backlog).await?;
            rate_large.push(r);
            rss.push(peak as f64 / (1024.0 * 1024.0));
        }
        let ratio: Vec<f64> = rate_large
            .iter()
            .zip(&rate_small)
            .map(|(l, s)| l / s)
            .collect();
        throughput(
            &format!("drain a backlog of {small}"),
            rate_small,
            None,
            &mut figures,
        );
        throughput(
            &format!("drain a backlog of {}", args.backlog),
            rate_large,
            None,
            &mut figures,
        );
        figures.push(Figure::new(
            &format!("backlog {} vs {small} throughput", args.backlog),
            "ratio",
            ratio,
            Some("≥ 0.80"),
        ));
        figures.push(Figure::new(
            &format!("peak RSS with {} pending", args.backlog),
            "MiB",
            rss,
            Some("≤ 100"),
        ));
    }
    Ok(Results {
        machine: machine(),
        figures,
    })
}

async fn repeat<F, Fut>(runs: usize, mut f: F) -> Result<Vec<f64>, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<f64, String>>,
{
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        v.push(f().await?);
    }
    Ok(v)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs ({model}), {}", std::env::consts::OS)
}

/// Runs `workers` loops until `seconds` pass; each loop iteration returns how many units it
/// completed. Returns units per second.
async fn drive<F, Fut>(workers: usize, seconds: u64, f: F) -> Result<f64, String>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u64, String>> + Send,
{
    let f = Arc::new(f);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (f, done, stop) = (f.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = f().await?;
                done.fetch_add(n, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64())
}

async fn raw_ceiling(args: &Args) -> Result<f64, String> {
    let sink = Sink::start().await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .map_err(|e| e.to_string())?;
    let url = sink.url();
    let body = json!({"type": "bench", "data": {"n": 1}, "text": "hello"}).to_string();
    drive(args.concurrency, args.seconds, move || {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            r.bytes().await.map_err(|e| e.to_string())?;
            Ok(1)
        }
    })
    .await
}

fn message(i: u64, to: &str) -> Value {
    json!({"event_type": "bench.tick", "text": format!("message {i}"), "payload": {"i": i}, "to": [to]})
}

async fn post_ok(node: &Node, path: &str, body: &Value) -> Result<(), String> {
    let r = node
        .http
        .post(node.url(path))
        .bearer_auth(crate::herald::TOKEN)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().as_u16() != 202 {
        return Err(format!("{path}: {}", r.status()));
    }
    r.bytes().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Acknowledged messages/s to a disabled destination (deliveries wait: ingest alone).
async fn ingest(bin: &Path, args: &Args, batch: bool) -> Result<f64, String> {
    let sink = Sink::start().await?;
    let node = Arc::new(Node::start(bin).await?);
    node.webhook("parked", &sink.url(), false).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let workers = if batch {
        (args.concurrency / 4).max(1)
    } else {
        args.concurrency
    };
    let n = node.clone();
    drive(workers, args.seconds, move || {
        let (node, counter) = (n.clone(), counter.clone());
        async move {
            let i = counter.fetch_add(1, Ordering::Relaxed);
            if batch {
                let msgs: Vec<Value> = (0..BATCH as u64)
                    .map(|k| message(i * BATCH as u64 + k, "parked"))
                    .collect();
                post_ok(&node, "/api/v1/messages/batch", &json!({"messages": msgs})).await?;
                Ok(BATCH as u64)
            } else {
                post_ok(&node, "/api/v1/messages", &message(i, "parked")).await?;
                Ok(1)
            }
        }
    })
    .await
}

/// Delivered messages/s at the sink while clients keep submitting (batches, so the
/// dispatcher rather than the request rate is what is measured).
async fn end_to_end(bin: &Path, args: &Args, postgres: Option<&str>) -> Result<f64, String> {
    let sink = Sink::start().await?;
    let node = Arc::new(Node::start_on(bin, postgres).await?);
    node.webhook("hook", &sink.url(), true).await?;
    let (next, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut loaders = Vec::new();
    for _ in 0..LOADERS {
        let (node, next, stop) = (node.clone(), next.clone(), stop.clone());
        loaders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let b = next.fetch_add(1, Ordering::Relaxed);
                let msgs: Vec<Value> = (0..BATCH as u64)
                    .map(|k| message(b * BATCH as u64 + k, "hook"))
                    .collect();
                post_ok(&node, "/api/v1/messages/batch", &json!({"messages": msgs})).await?;
            }
            Ok::<(), String>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    let (c0, t0) = (sink.count(), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let rate = (sink.count() - c0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.await.map_err(|e| e.to_string())??;
    }
    Ok(rate)
}

pub struct Latency {
    pub first_attempt_p99_ms: f64,
    /// p50, p99, p99.9 of submitted → delivered, ms.
    pub delivered: [f64; 3],
}

/// Single messages at a fixed offered rate; submitted → arrival at the sink from the
/// client's clock, and accepted → first attempt from Herald's own histogram.
async fn latency(bin: &Path, args: &Args) -> Result<Latency, String> {
    let sink = Sink::start().await?;
    let node = Arc::new(Node::start(bin).await?);
    node.webhook("hook", &sink.url(), true).await?;
    sink.track();
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let sent = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        ticker.tick().await;
        let (node, sent) = (node.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = node
                .http
                .post(node.url("/api/v1/messages"))
                .bearer_auth(crate::herald::TOKEN)
                .json(&message(i, "hook"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            let id = v["id"].as_str().ok_or("no id in the answer")?.to_string();
            sent.lock().expect("latency lock").push((id, t));
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.count() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrivals = sink.arrivals();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    for (id, t) in sent.lock().expect("latency lock").iter() {
        if let Some(a) = arrivals.get(id) {
            h.record(a.saturating_duration_since(*t).as_micros().max(1) as u64)
                .map_err(|e| e.to_string())?;
        }
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let metrics = node.metrics().await?;
    Ok(Latency {
        first_attempt_p99_ms: histogram_quantile(
            &metrics,
            "herald_first_attempt_delay_seconds",
            0.99,
        ) * 1000.0,
        delivered: [ms(0.5), ms(0.99), ms(0.999)],
    })
}

/// The upper bound of the bucket holding quantile `q` of a Prometheus histogram.
fn histogram_quantile(text: &str, name: &str, q: f64) -> f64 {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
        .unwrap_or(f64::NAN)
}

/// Builds a backlog of `n` pending deliveries behind a disabled destination, enables it and
/// times the drain. Returns (delivered/s, peak RSS bytes).
async fn backlog(bin: &Path, n: u64) -> Result<(f64, u64), String> {
    let sink = Sink::start().await?;
    let node = Arc::new(Node::start(bin).await?);
    node.webhook("hook", &sink.url(), false).await?;
    let batches = n.div_ceil(BATCH as u64);
    let next = Arc::new(AtomicU64::new(0));
    let mut loaders = Vec::new();
    for _ in 0..LOADERS {
        let (node, next) = (node.clone(), next.clone());
        loaders.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<(), String>(());
                }
                let msgs: Vec<Value> = (0..BATCH as u64)
                    .map(|k| message(b * BATCH as u64 + k, "hook"))
                    .collect();
                post_ok(&node, "/api/v1/messages/batch", &json!({"messages": msgs})).await?;
            }
        }));
    }
    for l in loaders {
        l.await.map_err(|e| e.to_string())??;
    }
    let total = batches * BATCH as u64;
    let t0 = Instant::now();
    node.enable("hook").await?;
    let deadline = t0 + Duration::from_secs(3600);
    while sink.count() < total {
        if Instant::now() > deadline {
            return Err(format!(
                "backlog of {n}: only {} of {total} delivered within an hour",
                sink.count()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    Ok((rate, node.peak_rss().unwrap_or(0)))
}
