//! The scenarios. Each starts a fresh Herald, runs, and returns one number per run.

use crate::Args;
use crate::cpu;
use crate::delivered::Delivered;
use crate::herald::{MASTER_KEY, Node, binary};
use crate::postgres::{Probe, drop_database};
use crate::report::{Figure, Results};
use crate::single::{DRAIN, Load, Requests};
use crate::sink::Sink;
use crate::tenants::{self, ENDPOINTS, Side};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every scenario, by the name `--only` takes.
pub const SCENARIOS: [&str; 9] = [
    "ceiling",
    "ingest",
    "batch",
    "e2e",
    "e2e-single",
    "latency",
    "backlog",
    "cluster",
    "tenants",
];

const BATCH: usize = 100;
/// Concurrent batch submitters in the end-to-end and backlog scenarios.
const LOADERS: usize = 8;
/// Client counts of the `e2e-single` scenario, one figure each.
const SINGLE_CLIENTS: [usize; 2] = [32, 64];
/// Node counts of the `cluster` scenario.
const CLUSTER_NODES: [usize; 3] = [1, 2, 3];

pub async fn run_all(args: &Args) -> Result<Results, String> {
    herald_server::install_crypto_provider();
    let bin = binary(args.bin.as_deref())?;
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let runs = args.runs.max(1);
    let mut ceiling = None;
    if args.wants("ceiling") {
        let mut v = Vec::new();
        for _ in 0..runs {
            v.push(raw_ceiling(args.concurrency, args.seconds).await?);
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
    if args.wants("e2e-single") {
        for clients in SINGLE_CLIENTS {
            let mut r = Vec::with_capacity(runs);
            for run in 1..=runs {
                let x = end_to_end_single(&bin, args, clients).await?;
                note_undelivered(
                    &mut notes,
                    &format!("e2e-single, {clients} clients, run {run}"),
                    &x.delivered,
                );
                r.push(x);
            }
            single_figures(
                &mut figures,
                &format!("e2e-single, {clients} clients"),
                Some("≥ 25 % of ceiling"),
                r.iter().map(|x| (x.ceiling, &x.delivered)),
            );
        }
    }
    if args.wants("tenants") {
        let mut r = Vec::with_capacity(runs);
        for run in 1..=runs {
            let x = tenants_run(&bin, args).await?;
            for side in [&x.one, &x.many] {
                note_undelivered(
                    &mut notes,
                    &format!("{}, run {run}", tenants_label(side)),
                    &side.delivered,
                );
            }
            r.push(x);
        }
        tenants_figures(&mut figures, &r);
    }
    if args.wants("cluster") {
        match args.postgres.as_deref().filter(|u| !u.is_empty()) {
            None if args.only.iter().any(|s| s == "cluster") => {
                return Err("the cluster scenario needs --postgres URL".into());
            }
            None => notes.push("cluster: not run (it needs --postgres URL)".into()),
            Some(pg) => {
                for nodes in CLUSTER_NODES {
                    let mut r = Vec::with_capacity(runs);
                    for run in 1..=runs {
                        let x = cluster(&bin, args, pg, nodes).await?;
                        note_undelivered(
                            &mut notes,
                            &format!("cluster of {nodes}, run {run}"),
                            &x.delivered,
                        );
                        r.push(x);
                    }
                    cluster_figures(&mut figures, &mut notes, nodes, &r);
                }
            }
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
        notes,
    })
}

/// The figures of single-request runs: the ceiling each run measured, delivered msgs/s as
/// a share of it, and submitted → delivered.
fn single_figures<'a>(
    figures: &mut Vec<Figure>,
    label: &str,
    target: Option<&str>,
    runs: impl Iterator<Item = (f64, &'a Delivered)> + Clone,
) {
    figures.push(Figure::new(
        &format!("{label}: raw ceiling"),
        "req/s",
        runs.clone().map(|(c, _)| c).collect(),
        None,
    ));
    delivered_figures(figures, label, target, runs);
}

/// Delivered msgs/s as a share of each run's own ceiling, and submitted → delivered.
fn delivered_figures<'a>(
    figures: &mut Vec<Figure>,
    label: &str,
    target: Option<&str>,
    runs: impl Iterator<Item = (f64, &'a Delivered)> + Clone,
) {
    let ceilings: Vec<f64> = runs.clone().map(|(c, _)| c).collect();
    figures.push(Figure::against_own_ceiling(
        &format!("{label}: delivered"),
        "msgs/s",
        runs.clone().map(|(_, d)| d.rate()).collect(),
        &ceilings,
        target,
    ));
    for (i, q) in ["p50", "p99", "p99.9"].iter().enumerate() {
        figures.push(Figure::new(
            &format!("{label}: submitted → delivered {q}"),
            "ms",
            runs.clone().map(|(_, d)| d.quantiles_ms()[i]).collect(),
            None,
        ));
    }
}

fn cluster_figures(
    figures: &mut Vec<Figure>,
    notes: &mut Vec<String>,
    nodes: usize,
    r: &[ClusterRun],
) {
    let label = if nodes == 1 {
        "cluster, 1 node".to_string()
    } else {
        format!("cluster, {nodes} nodes")
    };
    single_figures(
        figures,
        &label,
        (nodes == 1).then_some("≥ 10 % of ceiling"),
        r.iter().map(|x| (x.ceiling, &x.delivered)),
    );
    let mut per = |name: &str, unit: &str, v: Vec<Option<f64>>| {
        if v.iter().any(Option::is_some) {
            figures.push(Figure::new(
                &format!("{label}: {name}"),
                unit,
                v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect(),
                None,
            ));
        }
    };
    per(
        "Postgres CPU",
        "% of a core",
        r.iter()
            .map(|x| x.postgres_cores.map(|c| c * 100.0))
            .collect(),
    );
    per(
        "Postgres CPU per message",
        "µs",
        r.iter()
            .map(|x| x.postgres_cores.map(|c| c / x.delivered.rate() * 1e6))
            .collect(),
    );
    per(
        "Herald CPU, all nodes",
        "% of a core",
        r.iter().map(|x| Some(x.herald_cores * 100.0)).collect(),
    );
    per(
        "machine CPU busy",
        "% of all",
        r.iter()
            .map(|x| x.machine_busy.map(|b| b * 100.0))
            .collect(),
    );
    per(
        "Postgres commits per message",
        "commits",
        r.iter().map(|x| Some(x.commits)).collect(),
    );
    per(
        "rows written per message",
        "rows",
        r.iter().map(|x| Some(x.rows)).collect(),
    );
    per(
        "statements per message",
        "statements",
        r.iter().map(|x| x.statements).collect(),
    );
    for x in r {
        for why in [&x.statements_unavailable, &x.cpu_unavailable]
            .into_iter()
            .flatten()
        {
            if !notes.contains(why) {
                notes.push(why.clone());
            }
        }
    }
}

/// One run of `tenants`: the raw ceiling, then one application, then `--tenants`, each
/// on a fresh Herald.
struct TenantsRun {
    ceiling: f64,
    one: Side,
    many: Side,
}

impl TenantsRun {
    fn side(&self, many: bool) -> &Side {
        if many { &self.many } else { &self.one }
    }
}

async fn tenants_run(bin: &Path, args: &Args) -> Result<TenantsRun, String> {
    let ceiling = raw_ceiling(args.concurrency, args.seconds).await?;
    let one = tenants::run(bin, 1, args.concurrency, args.seconds).await?;
    let many = tenants::run(bin, args.tenants.max(1), args.concurrency, args.seconds).await?;
    Ok(TenantsRun { ceiling, one, many })
}

fn tenants_label(side: &Side) -> String {
    format!("tenants {}×{ENDPOINTS}", side.tenants)
}

/// The figures of `tenants`: per side, set-up, memory, accepted and delivered msgs/s with
/// Herald's CPU; then many against one.
fn tenants_figures(figures: &mut Vec<Figure>, r: &[TenantsRun]) {
    let Some(first) = r.first() else {
        return;
    };
    let ceilings: Vec<f64> = r.iter().map(|x| x.ceiling).collect();
    figures.push(Figure::new(
        "tenants: raw ceiling",
        "req/s",
        ceilings.clone(),
        None,
    ));
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for many in [false, true] {
        let side = |x| TenantsRun::side(x, many);
        let label = &tenants_label(side(first));
        let of = |f: &dyn Fn(&Side) -> f64| r.iter().map(|x| f(side(x))).collect::<Vec<f64>>();
        figures.push(Figure::new(
            &format!("{label}: set-up"),
            "s",
            of(&|s| s.setup.as_secs_f64()),
            None,
        ));
        if side(first).setup_rates.is_some() {
            let rate = |last: bool| {
                of(&|s| {
                    s.setup_rates
                        .map_or(f64::NAN, |(a, b)| if last { b } else { a })
                })
            };
            figures.push(Figure::new(
                &format!("{label}: set-up, first tenth"),
                "endpoints/s",
                rate(false),
                None,
            ));
            figures.push(Figure::new(
                &format!("{label}: set-up, last tenth"),
                "endpoints/s",
                rate(true),
                None,
            ));
        }
        figures.push(Figure::new(
            &format!("{label}: Herald CPU, set-up"),
            "% of a core",
            of(&|s| s.setup_cores * 100.0),
            None,
        ));
        figures.push(Figure::new(
            &format!("{label}: RSS after start"),
            "MiB",
            of(&|s| mib(s.rss_start)),
            None,
        ));
        figures.push(Figure::new(
            &format!("{label}: RSS after set-up"),
            "MiB",
            of(&|s| mib(s.rss_setup)),
            None,
        ));
        figures.push(Figure::against_own_ceiling(
            &format!("{label}: accepted"),
            "msgs/s",
            of(&|s| s.accepted),
            &ceilings,
            None,
        ));
        delivered_figures(
            figures,
            label,
            None,
            r.iter().map(|x| (x.ceiling, &side(x).delivered)),
        );
        figures.push(Figure::new(
            &format!("{label}: Herald CPU, load"),
            "% of a core",
            of(&|s| s.herald_cores * 100.0),
            None,
        ));
        figures.push(Figure::new(
            &format!("{label}: machine CPU busy, load"),
            "% of all",
            of(&|s| s.machine_busy.map_or(f64::NAN, |b| b * 100.0)),
            None,
        ));
        figures.push(Figure::new(
            &format!("{label}: peak RSS"),
            "MiB",
            of(&|s| mib(s.peak_rss)),
            None,
        ));
    }
    let many = tenants_label(&first.many);
    let ratio = |f: &dyn Fn(&Side) -> f64| -> Vec<f64> {
        r.iter().map(|x| f(&x.many) / f(&x.one)).collect()
    };
    figures.push(Figure::new(
        &format!("{many} vs 1×{ENDPOINTS}: accepted"),
        "ratio",
        ratio(&|s| s.accepted),
        Some("≥ 0.80"),
    ));
    figures.push(Figure::new(
        &format!("{many} vs 1×{ENDPOINTS}: delivered"),
        "ratio",
        ratio(&|s| s.delivered.rate()),
        Some("≥ 0.80"),
    ));
    // What the endpoints (with their applications) add to Herald's memory: RSS after the
    // set-up against the one application's, in the same run.
    figures.push(Figure::new(
        &format!("{many}: RSS per 1000 endpoints"),
        "KiB",
        r.iter()
            .map(|x| {
                let grown = x.many.rss_setup as f64 - x.one.rss_setup as f64;
                let more = x.many.endpoints() as f64 - x.one.endpoints() as f64;
                grown / 1024.0 / more * 1000.0
            })
            .collect(),
        None,
    ));
}

/// Says so when some messages of a window were not delivered within the drain bound.
fn note_undelivered(notes: &mut Vec<String>, run: &str, d: &Delivered) {
    if d.delivered < d.submitted {
        notes.push(format!(
            "{run}: {} of {} messages submitted in the window not delivered within {} s of its end \
             (left out of the latency; the rate counts those that arrived)",
            d.submitted - d.delivered,
            d.submitted,
            DRAIN.as_secs()
        ));
    }
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

async fn raw_ceiling(concurrency: usize, seconds: u64) -> Result<f64, String> {
    let sink = Sink::start().await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .map_err(|e| e.to_string())?;
    let url = sink.url();
    let body = json!({"type": "bench", "data": {"n": 1}, "text": "hello"}).to_string();
    drive(concurrency, seconds, move || {
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

/// Single messages to destination `to` through the native API.
fn native(to: &'static str) -> Requests {
    Arc::new(move |i| ("/api/v1/messages".to_string(), message(i, to)))
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

/// One run of `e2e-single`.
struct SingleRun {
    /// The raw ceiling at the same client count, measured just before.
    ceiling: f64,
    /// The window's messages at the sink.
    delivered: Delivered,
}

/// Single requests from `clients` clients to one node on SQLite, delivery live to a signed
/// webhook: the raw ceiling with as many clients first, then a fresh node and the window
/// (see [`crate::single`]).
async fn end_to_end_single(bin: &Path, args: &Args, clients: usize) -> Result<SingleRun, String> {
    let ceiling = raw_ceiling(clients, args.seconds).await?;
    let sink = Sink::start().await?;
    let node = Arc::new(Node::start(bin).await?);
    node.webhook("hook", &sink.url(), true).await?;
    sink.track();
    let load = Load::start(&[node], clients, args.seconds, native("hook"));
    load.drain(&sink).await;
    let done = load.stop().await?;
    Ok(SingleRun {
        ceiling,
        delivered: Delivered::of(&done.window, &sink.arrivals())?,
    })
}

/// One run of `cluster`.
struct ClusterRun {
    ceiling: f64,
    delivered: Delivered,
    /// Per message accepted, from before the first request to after the nodes stopped.
    commits: f64,
    rows: f64,
    statements: Option<f64>,
    /// CPU during the window, in cores (1.0 = one core busy).
    postgres_cores: Option<f64>,
    herald_cores: f64,
    /// Share of the whole machine busy during the window.
    machine_busy: Option<f64>,
    statements_unavailable: Option<String>,
    cpu_unavailable: Option<String>,
}

/// `nodes` Herald nodes on one fresh database of the Postgres server at `base`, single
/// requests from `--concurrency` clients spread over them in turn, delivery live; the
/// database is dropped afterwards.
async fn cluster(bin: &Path, args: &Args, base: &str, nodes: usize) -> Result<ClusterRun, String> {
    let ceiling = raw_ceiling(args.concurrency, args.seconds).await?;
    let db = herald_testkit::postgres::create_database(base, "bench").await?;
    let run = cluster_on(bin, args, &db, nodes, ceiling).await;
    if let Err(e) = drop_database(base, &db).await {
        eprintln!("herald-bench: {e}");
    }
    run
}

async fn cluster_on(
    bin: &Path,
    args: &Args,
    db: &str,
    nodes: usize,
    ceiling: f64,
) -> Result<ClusterRun, String> {
    let sink = Sink::start().await?;
    let mut started = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        started.push(Arc::new(
            Node::spawn(bin, Some(db), Some(MASTER_KEY)).await?,
        ));
    }
    started[0].webhook("hook", &sink.url(), true).await?;
    let pids: Vec<u32> = started.iter().map(|n| n.pid()).collect();
    let mut probe = Probe::connect(db).await?;
    // Let the start-up's counts (migrations, the destination) reach pg_stat_database.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = probe.counters().await?;
    sink.track();
    let load = Load::start(&started, args.concurrency, args.seconds, native("hook"));
    load.window_start().await;
    let (pg0, herald0, machine0) = (
        probe.server_cpu().await?,
        cpu::Sample::of(pids.clone()),
        cpu::machine(),
    );
    load.window_end().await;
    let (pg1, herald1, machine1) = (
        probe.server_cpu().await?,
        cpu::Sample::of(pids),
        cpu::machine(),
    );
    load.drain(&sink).await;
    let done = load.stop().await?;
    let delivered = Delivered::of(&done.window, &sink.arrivals())?;
    // Every accepted message delivered and recorded, then the nodes stopped: their
    // backends publish what they counted as they exit.
    let deadline = Instant::now() + DRAIN;
    while sink.count() < done.accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in started {
        Arc::try_unwrap(node)
            .map_err(|_| "a node is still in use after the load".to_string())?
            .stop()
            .await?;
    }
    probe.wait_alone(Duration::from_secs(10)).await?;
    let after = probe.counters().await?;
    let per = |a: i64, b: i64| (a - b) as f64 / done.accepted.max(1) as f64;
    let run = ClusterRun {
        ceiling,
        delivered,
        commits: per(after.commits, before.commits),
        rows: per(after.rows, before.rows),
        statements: after
            .statements
            .zip(before.statements)
            .map(|(a, b)| per(a, b)),
        postgres_cores: pg1.zip(pg0).map(|(a, b)| a.cores_since(&b)),
        herald_cores: herald1.cores_since(&herald0),
        machine_busy: machine0.zip(machine1).map(|(a, b)| cpu::busy_between(a, b)),
        statements_unavailable: probe
            .statements_unavailable()
            .map(|why| format!("statements per message not measured: pg_stat_statements: {why}")),
        cpu_unavailable: probe
            .cpu_unavailable()
            .map(|why| format!("Postgres CPU not measured: {why}")),
    };
    probe.close().await;
    Ok(run)
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
            let id = node.submit(&message(i, "hook")).await?;
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
    let delivered = Delivered::of(&sent.lock().expect("latency lock"), &sink.arrivals())?;
    let metrics = node.metrics().await?;
    Ok(Latency {
        first_attempt_p99_ms: histogram_quantile(
            &metrics,
            "herald_first_attempt_delay_seconds",
            0.99,
        ) * 1000.0,
        delivered: delivered.quantiles_ms(),
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
