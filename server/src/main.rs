//! `robot-server`: flags and environment to a [`Config`], then serve until
//! SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use robot_server::cli::{Args, Command, TOKEN_ENV};
use robot_server::{BearerToken, Config, DEFAULT_LISTEN, Error};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Exit code for flags and configuration that cannot work.
const BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Healthcheck) = args.command {
        return healthcheck(&args);
    }
    if let Err(e) = robot_logging::init(args.log_format, &args.log_filter) {
        eprintln!("robot-server: {e}");
        return ExitCode::from(BAD_CONFIG);
    }
    let settings = listen_addr(&args).and_then(|listen| Ok((listen, config(&args)?)));
    let (listen, config) = match settings {
        Ok(settings) => settings,
        Err(message) => {
            tracing::error!("{message}");
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

fn healthcheck(args: &Args) -> ExitCode {
    let probed =
        listen_addr(args).and_then(|addr| robot_api::probe::healthz(addr, Duration::from_secs(3)));
    match probed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("robot-server healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--listen`, else `0.0.0.0:$PORT`, else the default.
fn listen_addr(args: &Args) -> Result<SocketAddr, String> {
    Ok(match (args.listen, std::env::var("PORT")) {
        (Some(listen), _) => listen,
        (None, Ok(port)) => {
            let port: u16 = port
                .trim()
                .parse()
                .map_err(|_| format!("PORT={port:?} is not a port number"))?;
            SocketAddr::from(([0, 0, 0, 0], port))
        }
        (None, Err(_)) => DEFAULT_LISTEN
            .parse()
            .map_err(|e| format!("default listen address: {e}"))?,
    })
}

fn config(args: &Args) -> Result<Config, String> {
    let token_value = std::env::var(TOKEN_ENV).ok();
    let auth_token =
        BearerToken::from_sources(args.auth_token_file.as_deref(), token_value.as_deref())
            .map_err(|e| e.to_string())?;
    Ok(Config {
        auth_token,
        state_file: args.state_file.clone(),
        request_timeout: args.request_timeout,
    })
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
