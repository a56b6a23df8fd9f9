//! `cargo xtask bench <target>`: performance figures, printed for people
//! and BENCHMARKS.md, never asserted (machines differ; tests must not).

pub mod controller;
pub mod server;

use anyhow::Result;

/// What to benchmark.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Target {
    /// robot-server: throughput, latency, memory, cold start, binary size.
    Server,
    /// robot-controller: convergence time, control-plane and robot-server
    /// requests, memory and CPU at steady state, start to first reconcile.
    Controller,
}

/// Knobs of the longer benchmarks.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// controller: how many Robots to apply at once, per run.
    #[arg(long, value_delimiter = ',', default_values_t = controller::SIZES.to_vec())]
    pub sizes: Vec<usize>,
    /// controller: length of the steady-state window after convergence.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub steady: std::time::Duration,
}

pub fn run(target: Target, options: &Options) -> Result<()> {
    match target {
        Target::Server => server::bench(),
        Target::Controller => controller::bench(&options.sizes, options.steady),
    }
}
