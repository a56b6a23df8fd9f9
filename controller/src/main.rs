use std::process::ExitCode;

use clap::Parser;
use robot_controller::cli::{Cli, Command};
use robot_controller::{crd, kinds, runtime};

/// Set by AWS Lambda (and its emulators) in every function's environment.
const LAMBDA_RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";

#[tokio::main]
async fn main() -> ExitCode {
    // One TLS provider for the whole process: kube, reqwest and the cloud
    // SDKs would otherwise disagree and rustls would panic at first use.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let args = match &cli.command {
        Some(Command::Crds(c)) => return print_crds(c),
        Some(Command::Healthcheck(a)) => return healthcheck(a),
        Some(Command::Run(a) | Command::Once(a) | Command::Lambda(a)) => a.clone(),
        None => cli.run.clone(),
    };
    if let Err(e) = robot_logging::init(args.log_format, &args.log_filter) {
        eprintln!("robot-controller: {e}");
        return ExitCode::from(runtime::EXIT_CONFIG);
    }
    match cli.command {
        Some(Command::Once(_)) => runtime::once(args, kinds::ALL).await,
        Some(Command::Lambda(_)) => runtime::lambda(args, kinds::ALL).await,
        // Lambda starts the package's `bootstrap` with no arguments: without
        // a subcommand, the Lambda environment itself selects `lambda`. An
        // explicit subcommand always wins.
        None if lambda_environment() => runtime::lambda(args, kinds::ALL).await,
        _ => runtime::run(args, kinds::ALL).await,
    }
}

fn healthcheck(args: &robot_controller::cli::RunArgs) -> ExitCode {
    match robot_api::probe::healthz(args.health_addr(), std::time::Duration::from_secs(3)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("robot-controller healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

fn lambda_environment() -> bool {
    std::env::var_os(LAMBDA_RUNTIME_API).is_some_and(|v| !v.is_empty())
}

fn print_crds(args: &robot_controller::cli::CrdsArgs) -> ExitCode {
    let all = args
        .generation
        .generations()
        .iter()
        .flat_map(|g| crd::crds(kinds::ALL, args.api_group, *g));
    for c in all {
        let yaml = match crd::to_yaml(&c) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("robot-controller: cannot render CRD: {e}");
                return ExitCode::FAILURE;
            }
        };
        match &args.out_dir {
            Some(dir) => {
                let path = dir.join(crd::file_name(&c));
                if let Err(e) =
                    std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, yaml))
                {
                    eprintln!("robot-controller: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            None => print!("{yaml}"),
        }
    }
    ExitCode::SUCCESS
}
