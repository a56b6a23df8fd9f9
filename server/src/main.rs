//! `robot-server`: flags and environment to a [`Config`](robot_server::Config),
//! bind, then serve until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::time::Duration;

use robot_server::Error;
use robot_server::cli::{Args, Command, PORT_ENV, TOKEN_ENV};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Exit code for flags and configuration that cannot work.
const BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args = robot_server::cli::parse();
    let port = std::env::var(PORT_ENV).ok();
    if let Some(Command::Healthcheck) = args.command {
        return healthcheck(&args, port.as_deref());
    }
    if let Err(e) = robot_logging::init(args.log_format, &args.log_filter) {
        eprintln!("robot-server: {e}");
        return ExitCode::from(BAD_CONFIG);
    }
    // Read once: a token given as a variable cannot change while serving.
    let token = std::env::var(TOKEN_ENV).ok();
    let settings = args
        .listen_addr(port.as_deref())
        .and_then(|listen| Ok((listen, args.config(token.as_deref())?)));
    drop(token);
    let (listen, config) = match settings {
        Ok(settings) => settings,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = match shutdown_signal() {
            Ok(shutdown) => shutdown,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM and SIGINT");
                return ExitCode::FAILURE;
            }
        };
        let served = match TcpListener::bind(listen).await {
            Ok(listener) => robot_server::serve(listener, config, shutdown).await,
            Err(source) => Err(Error::Bind {
                addr: listen,
                source,
            }),
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}

fn healthcheck(args: &Args, port: Option<&str>) -> ExitCode {
    let probed = args
        .listen_addr(port)
        .map_err(|e| e.to_string())
        .and_then(|addr| robot_api::probe::healthz(addr, Duration::from_secs(3)));
    match probed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("robot-server healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on the first SIGTERM or SIGINT. Registered before serving, so
/// a signal that arrives early is not lost.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}
