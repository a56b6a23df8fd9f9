//! `robot-bench <target>` (also `cargo xtask bench <target>`): performance
//! figures, printed for people and BENCHMARKS.md.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "robot-bench",
    about = "Performance figures (printed, never asserted)"
)]
struct Cli {
    #[arg(value_enum)]
    target: robot_bench::Target,
    #[command(flatten)]
    options: robot_bench::Options,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Paths (infra/, target/) are the workspace's.
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(manifest.parent().unwrap_or(manifest))?;
    robot_bench::run(cli.target, &cli.options)
}
