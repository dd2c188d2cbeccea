//! Many tenants: a fresh Herald gets `T` Svix applications × [`ENDPOINTS`] endpoints each
//! through the Svix-compatible API (`POST /api/v1/app`, `POST /api/v1/app/{app}/endpoint`,
//! from [`SETUP_CLIENTS`] concurrent clients), every endpoint a webhook to the sink with a
//! path of its own (`/t/<tenant>/<endpoint>`). Then single requests with delivery live
//! (see [`crate::single`]): each `POST /api/v1/app/{app}/msg` to an application picked at
//! random, so every message goes to that application's endpoints and arrives at the sink
//! [`ENDPOINTS`] times.

use crate::cpu;
use crate::delivered::Delivered;
use crate::herald::Node;
use crate::single::{Load, Requests};
use crate::sink::Sink;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Endpoints per application.
pub const ENDPOINTS: usize = 5;
/// Concurrent clients making the applications and their endpoints.
const SETUP_CLIENTS: usize = 32;
/// From this many applications on, the set-up's progress is printed (standard error) at
/// every tenth.
const PROGRESS_FROM: u64 = 1000;

/// One Herald with `tenants` applications, set up and then loaded.
pub struct Side {
    pub tenants: u64,
    /// From the first request of the set-up to the last answer.
    pub setup: Duration,
    /// Endpoints made per second in the first and in the last tenth of the applications
    /// (`None` under 10 applications).
    pub setup_rates: Option<(f64, f64)>,
    /// Herald's CPU during the set-up, in cores (1.0 = one core busy).
    pub setup_cores: f64,
    /// Resident memory (VmRSS) just after start and just after the set-up, bytes.
    pub rss_start: u64,
    pub rss_setup: u64,
    /// Peak resident memory (VmHWM) after the load, bytes.
    pub peak_rss: u64,
    /// Messages accepted per second in the window.
    pub accepted: f64,
    /// The window's messages at the sink (a message has arrived with its last copy).
    pub delivered: Delivered,
    /// Herald's CPU during the window, in cores.
    pub herald_cores: f64,
    /// Share of the whole machine busy during the window.
    pub machine_busy: Option<f64>,
}

impl Side {
    /// Endpoints in this Herald.
    pub fn endpoints(&self) -> u64 {
        self.tenants * ENDPOINTS as u64
    }
}

/// Starts a Herald on SQLite, sets up `tenants` applications and loads them with
/// `clients` single-request clients for `seconds`.
pub async fn run(bin: &Path, tenants: u64, clients: usize, seconds: u64) -> Result<Side, String> {
    let sink = Sink::start().await?;
    let node = Arc::new(Node::start(bin).await?);
    let rss_start = node.rss().unwrap_or(0);
    let cpu0 = cpu::Sample::of([node.pid()]);
    let t0 = Instant::now();
    let (apps, marks) = set_up(&node, &sink, tenants).await?;
    let setup = t0.elapsed();
    let setup_cores = cpu::Sample::of([node.pid()]).cores_since(&cpu0);
    let setup_rates = (tenants >= 10 && marks.len() >= 2).then(|| {
        let tenth = (tenants / 10 * ENDPOINTS as u64) as f64;
        let n = marks.len();
        let first = tenth / marks[0].saturating_duration_since(t0).as_secs_f64();
        let last = tenth
            / marks[n - 1]
                .saturating_duration_since(marks[n - 2])
                .as_secs_f64();
        (first, last)
    });
    let rss_setup = node.rss().unwrap_or(0);
    sink.track_copies(ENDPOINTS as u32);
    let load = Load::start(
        std::slice::from_ref(&node),
        clients,
        seconds,
        to_random_app(apps),
    );
    load.window_start().await;
    let (herald0, machine0) = (cpu::Sample::of([node.pid()]), cpu::machine());
    load.window_end().await;
    let (herald1, machine1) = (cpu::Sample::of([node.pid()]), cpu::machine());
    load.drain(&sink).await;
    let done = load.stop().await?;
    let delivered = Delivered::of(&done.window, &sink.arrivals())?;
    let peak_rss = node.peak_rss().unwrap_or(0);
    Arc::try_unwrap(node)
        .map_err(|_| "the node is still in use after the load".to_string())?
        .stop()
        .await?;
    Ok(Side {
        tenants,
        setup,
        setup_rates,
        setup_cores,
        rss_start,
        rss_setup,
        peak_rss,
        accepted: done.window.len() as f64 / seconds as f64,
        delivered,
        herald_cores: herald1.cores_since(&herald0),
        machine_busy: machine0.zip(machine1).map(|(a, b)| cpu::busy_between(a, b)),
    })
}

/// Makes `tenants` applications with [`ENDPOINTS`] endpoints each; returns their ids and
/// the instants at which each tenth of them was done.
async fn set_up(
    node: &Arc<Node>,
    sink: &Sink,
    tenants: u64,
) -> Result<(Vec<String>, Vec<Instant>), String> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let marks = Arc::new(Mutex::new(Vec::new()));
    let tenth = (tenants / 10).max(1);
    let t0 = Instant::now();
    let clients: Vec<_> = (0..SETUP_CLIENTS.min(tenants as usize).max(1))
        .map(|_| {
            let (node, next, done, marks) =
                (node.clone(), next.clone(), done.clone(), marks.clone());
            let sink = sink.addr;
            tokio::spawn(async move {
                let mut apps = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= tenants {
                        return Ok::<_, String>(apps);
                    }
                    apps.push(make_app(&node, i, |k| format!("http://{sink}/t/{i}/{k}")).await?);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n % tenth == 0 {
                        marks.lock().expect("marks lock").push(Instant::now());
                        if tenants >= PROGRESS_FROM {
                            eprintln!(
                                "tenants: {n} of {tenants} set up in {:.0} s, RSS {:.0} MiB",
                                t0.elapsed().as_secs_f64(),
                                node.rss().unwrap_or(0) as f64 / (1024.0 * 1024.0)
                            );
                        }
                    }
                }
            })
        })
        .collect();
    let mut apps = Vec::with_capacity(tenants as usize);
    for c in clients {
        apps.extend(c.await.map_err(|e| e.to_string())??);
    }
    let mut marks = std::mem::take(&mut *marks.lock().expect("marks lock"));
    marks.sort();
    Ok((apps, marks))
}

/// Application `i` (uid `bench-<i>`) with [`ENDPOINTS`] endpoints at `url(k)`; its id.
async fn make_app(node: &Node, i: u64, url: impl Fn(usize) -> String) -> Result<String, String> {
    let post = reqwest::Method::POST;
    let app = node
        .call(
            post.clone(),
            "/api/v1/app",
            Some(json!({"name": format!("bench tenant {i}"), "uid": format!("bench-{i}")})),
        )
        .await?;
    let id = app["id"]
        .as_str()
        .ok_or_else(|| format!("no id in the application made: {app}"))?
        .to_string();
    for k in 0..ENDPOINTS {
        node.call(
            post.clone(),
            &format!("/api/v1/app/{id}/endpoint"),
            Some(json!({"url": url(k)})),
        )
        .await?;
    }
    Ok(id)
}

/// Request `i` goes to an application picked at random (a fixed hash of `i`).
fn to_random_app(apps: Vec<String>) -> Requests {
    let paths: Vec<String> = apps
        .iter()
        .map(|id| format!("/api/v1/app/{id}/msg"))
        .collect();
    Arc::new(move |i| {
        let path = paths[(mix(i) % paths.len() as u64) as usize].clone();
        (path, svix_message(i))
    })
}

fn svix_message(i: u64) -> Value {
    json!({"eventType": "bench.tick", "payload": {"i": i, "text": format!("message {i}")}})
}

/// splitmix64's finalizer: a well-spread hash of a counter.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_spread_over_every_application() {
        let apps: Vec<String> = (0..100).map(|a| format!("app_{a}")).collect();
        let requests = to_random_app(apps);
        let mut hits = std::collections::HashMap::new();
        for i in 0..100_000 {
            let (path, body) = requests(i);
            assert_eq!(body["payload"]["i"], i);
            *hits.entry(path).or_insert(0u32) += 1;
        }
        assert_eq!(hits.len(), 100);
        // 1 000 expected per application; a fair spread stays well inside ±20 %.
        assert!(hits.values().all(|n| (800..1200).contains(n)), "{hits:?}");
        assert!(hits.contains_key("/api/v1/app/app_7/msg"));
    }
}
