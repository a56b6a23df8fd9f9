//! Dev tasks for the workspace, run as `cargo xtask <task>`.

mod checks;
mod ci;
mod dev;
mod tools;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Dev tasks for robot-byoc")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Every check of the project: installs missing tools, then fmt,
    /// clippy, build and all tests; ends with a one-line summary.
    Ci {
        /// Run only these steps (by name).
        #[arg(long = "only", value_name = "STEP")]
        only: Vec<String>,
    },
    /// Install the tools the checks need, without running them.
    Tools,
    /// Performance figures (printed, never asserted): runs the
    /// robot-bench crate, built with optimizations; `--help` after the
    /// target lists its options.
    Bench {
        /// The target and its options, as `robot-bench` takes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Start a control plane, robot server and controller in the
    /// background; writes target/dev/kubeconfig and target/dev/env.
    Up(dev::UpArgs),
    /// Stop what `up` started and clean up (logs stay in target/dev/logs).
    Down,
    /// `up`, then the guide's workflow with kubectl, then `down`.
    Demo(dev::DemoArgs),
    /// Regenerate README.md's option tables from the binaries' --help.
    Readme,
    /// The background process of `up` (internal).
    #[command(hide = true)]
    DevSupervisor(dev::SupervisorArgs),
}

/// The command line, for checks that read its help.
fn command() -> clap::Command {
    Cli::command()
}

fn main() -> Result<()> {
    let root = project_root();
    std::env::set_current_dir(&root)?;
    match Cli::parse().task {
        Task::Ci { only } => ci::run(&only),
        Task::Bench { args } => {
            // The load generator of the server benches.
            tools::apt(&[("wrk", "wrk")])?;
            tools::run(
                std::process::Command::new(
                    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
                )
                .args([
                    "run",
                    "--quiet",
                    "--release",
                    "--locked",
                    "-p",
                    "robot-bench",
                    "--",
                ])
                .args(&args),
            )
        }
        Task::Up(args) => dev::up(&args).map(drop),
        Task::Down => dev::down(),
        Task::Demo(args) => dev::demo(&args),
        Task::Readme => checks::readme::regenerate(),
        Task::DevSupervisor(args) => dev::supervise(&args),
        Task::Tools => {
            for t in [
                tools::python::SCHEMATHESIS,
                tools::python::AWS,
                tools::python::GCP,
                tools::python::LINT,
                tools::python::CHECKOV,
                tools::python::CARGO_LAMBDA,
            ] {
                println!("{}: {}", t.name, t.ensure()?.display());
            }
            for t in tools::CARGO_TOOLS {
                println!("{}: {}", t.krate, t.ensure()?.display());
            }
            // testenv's private networks: namespaces, veth, firewall.
            tools::apt(dev::NETNS_PACKAGES)?;
            let bins = testenv::binaries::ensure()?;
            println!("control plane: {}", bins.dir.display());
            Ok(())
        }
    }
}

fn project_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
