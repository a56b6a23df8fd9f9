//! Benchmarks (`cargo xtask bench <target>`, or `robot-bench <target>`):
//! performance figures, printed for people and BENCHMARKS.md, never
//! asserted (machines differ; tests must not). A crate of its own, apart
//! from the dev tasks.

pub mod controller;
pub mod host;
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
    /// robot-controller's cost curve (1 000 and 10 000 Robots by default):
    /// time to Ready, control-plane writes and requests, robot-server calls,
    /// CPU and peak memory of the controller, kube-apiserver and etcd, one
    /// steady-state window; with --reference, the same for a second binary.
    Controller,
    /// robot-server under many checking clients for 10 minutes: errors,
    /// RSS over time.
    ServerSoak,
    /// The controller SIGKILL chaos test with many runs.
    Chaos,
}

/// Knobs of the longer benchmarks.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// controller: how many Robots to apply at once, per run (e.g.
    /// 1000,10000,100000 for the whole curve).
    #[arg(long, value_delimiter = ',', default_values_t = controller::SIZES.to_vec())]
    pub sizes: Vec<usize>,
    /// controller: which Robots to create.
    #[arg(long, value_enum, default_value = "legacy")]
    pub generation: host::Generation,
    /// controller: length of the steady-state window after convergence
    /// (0s: none). The default is one default poll interval.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub steady: std::time::Duration,
    /// controller: extra flags for robot-controller, whitespace-separated
    /// (e.g. "--no-normal-events").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub controller_args: String,
    /// controller: a second controller binary to run each size against too
    /// (side by side), with KUBECONFIG set to the same controller user.
    #[arg(long, value_name = "PATH")]
    pub reference: Option<std::path::PathBuf>,
    /// controller: the reference binary's arguments, whitespace-separated.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub reference_args: String,
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
        Target::Controller => controller::bench(&controller::Plan {
            sizes: options.sizes.clone(),
            generation: options.generation,
            steady: options.steady,
            args: words(&options.controller_args),
            reference: options.reference.clone().map(|path| controller::Reference {
                path,
                args: words(&options.reference_args),
            }),
        }),
        Target::ServerSoak => soak::server_soak(options.soak, options.clients),
        Target::Chaos => soak::chaos(options.chaos_runs, options.chaos_seed),
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}
