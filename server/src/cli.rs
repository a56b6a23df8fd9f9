//! The command line: flags and environment variables of `robot-server`.
//! In the library so that other tools read the options from the one
//! definition (README tables, the Terraform env contract) instead of
//! parsing `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use robot_logging::LogFormat;

/// The bearer token itself, for platforms that inject secrets as env.
pub const TOKEN_ENV: &str = "ROBOT_SERVER_AUTH_TOKEN";

/// Flags and environment variables of `robot-server`.
#[derive(Parser)]
#[command(
    name = "robot-server",
    version,
    about = "A robot store with provider-dummy's /robots API",
    after_help = "Environment only:\n  \
        ROBOT_SERVER_AUTH_TOKEN  the bearer token itself (instead of --auth-token-file)\n  \
        PORT                     listen on 0.0.0.0:$PORT when --listen is not given (Cloud Run)\n\n\
        Exit codes: 0 after a graceful shutdown, 2 bad flags or configuration, 1 other failures."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on [default: 0.0.0.0:9090, or 0.0.0.0:$PORT]
    #[arg(long, env = "ROBOT_SERVER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// File holding the bearer token /robots and /v1/robots require
    #[arg(long, env = "ROBOT_SERVER_AUTH_TOKEN_FILE", value_name = "PATH")]
    pub auth_token_file: Option<PathBuf>,

    /// Keep robots across restarts in this file (default: in memory only)
    #[arg(long, env = "ROBOT_SERVER_STATE_FILE", value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Longest time one request may take, e.g. 10s or 500ms
    #[arg(
        long,
        env = "ROBOT_SERVER_REQUEST_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub request_timeout: Duration,

    /// Log line format; auto is JSON unless stdout is a terminal
    #[arg(
        long,
        env = "ROBOT_SERVER_LOG_FORMAT",
        value_enum,
        default_value = "auto"
    )]
    pub log_format: LogFormat,

    /// Which logs to write (tracing EnvFilter syntax); per-request lines
    /// come with `info,robot_server::access=debug`
    #[arg(
        long,
        env = "ROBOT_SERVER_LOG",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_filter: String,
}

/// Subcommands (none: serve).
#[derive(clap::Subcommand)]
pub enum Command {
    /// Probe the /healthz of the server these flags and variables describe
    /// (a container health check for images without a shell): exit 0 when
    /// it answers 200, 1 otherwise.
    Healthcheck,
}

/// The command line as clap sees it: for tools that render or check the
/// options.
pub fn command() -> clap::Command {
    Args::command()
}
