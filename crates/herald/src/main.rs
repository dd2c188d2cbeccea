//! The `herald` command: `serve` runs Herald; every other command talks to a running Herald
//! over its API (`HERALD_URL`, `HERALD_TOKEN`).

mod cli;
mod client;
mod commands;
mod healthcheck;
mod logging;
mod profile;
mod progress;
mod storage;
mod table;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc (v2): Herald allocates and frees many small buffers per message on every
/// thread (request bodies, rows, JSON values), where glibc's allocator took about a fifth
/// of the instructions. v3 kept about 40 % more memory with a million pending deliveries.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald: {e}");
            ExitCode::FAILURE
        }
    }
}
