//! `cargo xtask bench <target>`: performance figures, printed for people
//! and BENCHMARKS.md, never asserted (machines differ; tests must not).

pub mod server;

use anyhow::Result;

/// What to benchmark.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Target {
    /// robot-server: throughput, latency, memory, cold start, binary size.
    Server,
}

pub fn run(target: Target) -> Result<()> {
    match target {
        Target::Server => server::bench(),
    }
}
