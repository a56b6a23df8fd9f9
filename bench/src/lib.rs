//! Benchmarks (`cargo xtask bench <target>`, or `robot-bench <target>`):
//! performance figures, printed for people and BENCHMARKS.md, never
//! asserted (machines differ; tests must not). A crate of its own, apart
//! from the dev tasks.

pub mod controller;
mod host;
pub mod server;
pub mod soak;
mod stack;

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs a command, failing with its command line when it fails.
pub(crate) fn run_command(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// What to benchmark.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Target {
    /// robot-server: throughput, latency, memory, cold start, binary size.
    Server,
    /// robot-controller: convergence time, control-plane and robot-server
    /// requests, memory and CPU at steady state, start to first reconcile.
    Controller,
    /// robot-controller at 10 000 Robots: time to Ready, requests by verb,
    /// peak RSS, then a long steady state (calls per poll interval, CPU).
    Scale,
    /// robot-server under many checking clients for 10 minutes: errors,
    /// RSS over time.
    ServerSoak,
    /// The controller SIGKILL chaos test with many runs.
    Chaos,
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
    /// scale: Robots applied at once.
    #[arg(long, default_value_t = 10_000)]
    pub scale_robots: usize,
    /// scale: length of the steady-state window.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub scale_steady: std::time::Duration,
    /// server-soak: how long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub soak: std::time::Duration,
    /// server-soak: concurrent keep-alive clients.
    #[arg(long, default_value_t = 128)]
    pub clients: usize,
    /// chaos: runs of four SIGKILLs each.
    #[arg(long, default_value_t = 100)]
    pub chaos_runs: usize,
    /// chaos: the schedule's seed (default: the test's).
    #[arg(long)]
    pub chaos_seed: Option<u64>,
}

pub fn run(target: Target, options: &Options) -> Result<()> {
    match target {
        Target::Server => server::bench(),
        Target::Controller => controller::bench(&options.sizes, options.steady),
        Target::Scale => soak::scale(options.scale_robots, options.scale_steady),
        Target::ServerSoak => soak::server_soak(options.soak, options.clients),
        Target::Chaos => soak::chaos(options.chaos_runs, options.chaos_seed),
    }
}
