//! # herald-bench
//!
//! Measures a real `herald serve` (started from the binary next to this one, or `--bin`)
//! against a fast sink on 127.0.0.1, each scenario over several runs, and reports medians
//! with ranges — every figure also as a ratio of the raw ceiling (this machine's own HTTP
//! client posting straight to the sink, measured in the same run).
//!
//! ```text
//! cargo build --release -p herald -p herald-bench
//! target/release/herald-bench --json bench-results/latest.json
//! target/release/herald-bench --quick          # a short smoke run
//! target/release/herald-bench --only e2e-single,cluster \
//!     --postgres postgres://postgres@127.0.0.1:5432/test
//! target/release/herald-bench --only tenants --tenants 10000
//! ```

mod cpu;
mod delivered;
mod herald;
mod postgres;
mod report;
mod scenarios;
mod single;
mod sink;
mod tenants;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Clone)]
#[command(
    name = "herald-bench",
    about = "Measure Herald: ingest, end-to-end throughput, latency, backlog, memory, a cluster, many tenants."
)]
pub struct Args {
    /// The herald binary to start (default: `herald` next to this binary).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Runs per scenario; medians and ranges are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// A short smoke run (small counts, one run each).
    #[arg(long)]
    pub quick: bool,
    /// Seconds each throughput scenario runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Offered rate (messages/s) of the latency scenario.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// The large backlog (pending deliveries) of the backlog and memory scenarios.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// Applications (tenants) of the `tenants` scenario, with 5 endpoints each.
    #[arg(long, default_value_t = 100_000)]
    pub tenants: u64,
    /// Only these scenarios (comma-separated): ceiling, ingest, batch, e2e, e2e-single,
    /// latency, backlog, cluster, tenants.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// A Postgres server (base URL): the end-to-end scenario also runs on a fresh database
    /// there, and the cluster scenario runs (1, 2, 3 nodes on a fresh database each run).
    #[arg(long, env = "HERALD_TEST_POSTGRES_URL")]
    pub postgres: Option<String>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Args {
    pub fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(unknown) = args
        .only
        .iter()
        .find(|s| !scenarios::SCENARIOS.contains(&s.as_str()))
    {
        eprintln!(
            "herald-bench: no scenario {unknown:?} (there are: {})",
            scenarios::SCENARIOS.join(", ")
        );
        return ExitCode::FAILURE;
    }
    if args.quick {
        args.runs = 1;
        args.seconds = 2;
        args.backlog = args.backlog.min(20_000);
        args.tenants = args.tenants.min(200);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(scenarios::run_all(&args)) {
        Ok(results) => {
            report::print(&results);
            if let Some(path) = &args.json
                && let Err(e) = report::write_json(&results, path)
            {
                eprintln!("herald-bench: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
